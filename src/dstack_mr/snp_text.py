"""Plain-text SEV-SNP output for terminals, beside :mod:`dstack_mr.snp_render` (HTML).

:func:`render_snp` is the diagnose report (verdict first, then what was compared and why);
:func:`snp_measurement_text` and :func:`snp_measurement_json` are what ``measure --snp``
prints. Strings only: the caller prints them. ``color`` adds ANSI colours to statuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .snp_diagnose import SnpDiagnoseReport
    from .snp_image import SnpImageLaunch


def _style(text: str, status: str, color: bool) -> str:
    code = {"match": "32", "mismatch": "31"}.get(status)
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def render_snp(report: SnpDiagnoseReport, color: bool = False) -> str:
    """The plain-text SNP report: verdict first, then what was compared and why."""
    r = report
    verdict_status = "match" if r.ok else "mismatch"
    out = [
        _style(r.headline, verdict_status, color),
        "",
        "=== AMD SEV-SNP attestation ===",
        f"  verdict: {_style(r.verdict, verdict_status, color)}",
        "  report signature (ARK -> ASK -> VCEK): NOT CHECKED — this compares what the "
        "report says, it does not prove AMD hardware said it",
        f"  evidence: {', '.join(r.sources)}",
        "",
        "=== compared ===",
    ]
    for c in r.checks:
        status = c.status.upper()
        out.append(f"  {c.name:<11} {_style(status, c.status, color)}  (expected from {c.source})")
        out.append(f"    expected: {'-' if c.expected is None else c.expected.hex()}")
        out.append(f"    actual:   {c.actual.hex()}")
    out += ["", "=== integrity chain ==="]
    for i in r.integrity:
        status = "ok" if i.ok else "BROKEN"
        out.append(f"  {i.name:<21} {_style(status, i.status, color)}  {i.message}")
    inputs = r.inputs
    out += [
        "",
        "=== launch inputs (sev_snp_measurement) ===",
        f"  vcpus={inputs.vcpus} vcpu_type={inputs.vcpu_type} (CPUID {inputs.vcpu_sig:#x}) "
        f"guest_features={inputs.guest_features:#x}",
        f"  cmdline: {inputs.cmdline}",
        f"  ovmf_hash:   {inputs.ovmf_hash.hex()}",
        f"  kernel_hash: {inputs.kernel_hash.hex()}",
        f"  initrd_hash: {inputs.effective_initrd_hash.hex()}",
        f"  hashes_table_gpa={inputs.hashes_table_gpa:#x} reset_eip={inputs.reset_eip:#x} "
        f"ovmf_sections={len(inputs.ovmf_sections)}",
    ]
    rep = r.attestation.report
    out += [
        "",
        "=== report ===",
        f"  version={rep.version} vmpl={rep.vmpl} policy={rep.policy} "
        f"signing_key={rep.signing_key_name}",
        f"  product={rep.product or 'unknown'} reported_tcb: {rep.reported_tcb}",
        f"  chip_id: {rep.chip_id.hex()}",
        f"  report_data: {rep.report_data.hex()}",
    ]
    if r.mr_config is not None:
        mc = r.mr_config
        out.append(
            f"  mr_config: app_id={mc.app_id.hex() if mc.app_id else '-'} "
            f"compose_hash={mc.compose_hash.hex()} key_provider={mc.key_provider}"
        )
    if r.problems or r.warnings:
        out += ["", "=== problems ==="]
        out += [f"  problem: {p}" for p in r.problems]
        out += [f"  warning: {w}" for w in r.warnings]
    if r.findings:
        out += ["", "=== explanation ==="]
        for f in r.findings:
            mark = "FACT (reproduced)" if f.reproduced else "hypothesis"
            out.append(f"  [{mark}] {f.message}")
    return "\n".join(out)


def snp_measurement_json(launch: SnpImageLaunch, steps: bool = False) -> dict[str, Any]:
    """The measurement as JSON: inputs, ``basis``, ``os_image_hash``, ``notes`` and, with
    ``steps``, every stage of the launch digest."""
    out = launch.measurement.to_dict()
    out["basis"] = launch.basis
    out["os_image_hash"] = None if launch.os_image_hash is None else launch.os_image_hash.hex()
    out["notes"] = list(launch.notes)
    if not steps:
        del out["steps"]
    return out


def snp_measurement_text(launch: SnpImageLaunch, steps: bool = False) -> str:
    """The MEASUREMENT and what it was computed from; with ``steps``, every stage."""
    m = launch.measurement
    out = [
        "SEV-SNP launch measurement:",
        f"MEASUREMENT: {m.measurement.hex()}",
        f"  from {launch.basis}; vcpus={launch.vcpus} vcpu_type={launch.vcpu_type} "
        f"guest_features={launch.guest_features:#x}",
    ]
    if launch.os_image_hash is not None:
        out.append(f"  os_image_hash: {launch.os_image_hash.hex()}")
    out += [f"  note: {note}" for note in launch.notes]
    if steps:
        out.append(f"\nstages ({len(m.steps)}):")
        for s in m.steps:
            gpa = "-" if s.gpa is None else f"{s.gpa:#x}"
            out.append(f"  {s.label:<36} {gpa:>18} {s.pages:>5}  {s.digest.hex()}")
    return "\n".join(out)
