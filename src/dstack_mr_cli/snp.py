"""The AMD SEV-SNP side of the CLI: ``diagnose`` on an SNP attestation, ``measure --snp``.

``diagnose`` hands its ``--attestation`` bytes here first; an SNP attestation is judged here,
anything else goes back to the TDX path unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from dstack_mr.snp_diagnose import SnpDiagnoseReport


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


def diagnose_attestation(
    data: bytes,
    source: str,
    *,
    vm_config_text: bytes | None,
    image_dir: Path | None,
    image_base_dir: Path | None = None,
    explain: bool,
    json_out: bool,
    color: str,
    tdx_evidence: Sequence[str] = (),
) -> int | None:
    """Judge ``data`` if it is an SNP attestation and return the exit code; ``None`` when it
    is not one (the caller goes on with the TDX path)."""
    from dstack_mr.snp_attestation import parse_snp_attestation
    from dstack_mr.snp_diagnose import diagnose_snp
    from dstack_mr.snp_document import SnpVmConfig
    from dstack_mr.snp_image import load_snp_image

    att = parse_snp_attestation(data, source)
    if att is None:
        return None
    if tdx_evidence:
        from dstack_mr.errors import ConfigError

        raise ConfigError(
            f"{', '.join(tdx_evidence)}: TDX evidence cannot be combined with an AMD SEV-SNP "
            "attestation, which is judged on its own"
        )
    vm = None
    if vm_config_text is not None:
        vm = SnpVmConfig.from_json(vm_config_text)
    directory: str | None = None if image_dir is None else str(image_dir)
    if directory is None and image_base_dir is not None:
        # As for TDX: the image named by vm_config.image, inside the base directory.
        from dstack_mr.errors import ConfigError
        from dstack_mr.image import resolve_inside

        name = (vm or att.vm_config or SnpVmConfig.from_dict({})).fields.get("image")
        if not isinstance(name, str) or not name:
            raise ConfigError("vm_config.image is empty; pass the image directory with --image-dir")
        directory = resolve_inside(image_base_dir, name, "vm_config.image")
    image = load_snp_image(directory) if directory is not None else None
    report = diagnose_snp(att, vm_config=vm, image=image, explain=explain)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        use_color = color == "always" or (
            color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        )
        typer.echo(render_snp(report, use_color))
    return report.exit_code


def parse_features(text: str) -> int:
    """``--guest-features``: decimal or 0x-hex, a u64."""
    try:
        value = int(text, 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value < 1 << 64 or not text.strip() == text:
        raise typer.BadParameter(f"--guest-features: {text!r} is not a number (0x1, 33, ...)")
    return value


def measure_snp(
    image: Path, vcpus: int, vcpu_type: str, guest_features: int, steps: bool, json_out: bool
) -> None:
    """Print the expected SNP MEASUREMENT of an image directory (or of its metadata.json's
    directory) for one deployment."""
    from dstack_mr.snp_image import load_snp_image

    # The TDX form names metadata.json; an image directory is accepted too.
    directory = image if image.is_dir() else image.parent
    if not image.exists():
        from dstack_mr.errors import ImageError

        raise ImageError(f"{image} does not exist (give the image directory or its metadata.json)")
    snp = load_snp_image(directory)
    material = snp.material
    m = material.launch_inputs(vcpus, vcpu_type, guest_features).measure()
    basis = "measurement.snp.cbor" if snp.document is not None else f"files ({snp.firmware}, ...)"
    notes = [f"image directory: {c.message}" for c in snp.integrity() if not c.ok]
    if snp.differences():
        notes.append(
            "measurement.snp.cbor and the image files disagree on " + ", ".join(snp.differences())
        )
    if json_out:
        out = m.to_dict()
        out["basis"] = basis
        out["os_image_hash"] = None if snp.os_image_hash is None else snp.os_image_hash.hex()
        out["notes"] = notes
        if not steps:
            del out["steps"]
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo("SEV-SNP launch measurement:")
    typer.echo(f"MEASUREMENT: {m.measurement.hex()}")
    typer.echo(
        f"  from {basis}; vcpus={vcpus} vcpu_type={vcpu_type} guest_features={guest_features:#x}"
    )
    if snp.os_image_hash is not None:
        typer.echo(f"  os_image_hash: {snp.os_image_hash.hex()}")
    for note in notes:
        typer.echo(f"  note: {note}")
    if steps:
        typer.echo(f"\nstages ({len(m.steps)}):")
        for s in m.steps:
            gpa = "-" if s.gpa is None else f"{s.gpa:#x}"
            typer.echo(f"  {s.label:<36} {gpa:>18} {s.pages:>5}  {s.digest.hex()}")


def document_cbor(image_dir: Path, json_out: bool) -> bytes | None:
    """``measurement-doc --snp``: the image's measurement.snp.cbor computed from its files.
    Prints it as JSON (and returns None), or returns the CBOR for the caller to write."""
    from dstack_mr.snp_image import build_snp_document

    doc = build_snp_document(image_dir)
    if json_out:
        typer.echo(json.dumps(doc.to_dict(), indent=2))
        return None
    return doc.to_cbor()


def inspect_document(data: bytes) -> dict[str, object] | None:
    """``inspect-measurement`` on SNP material: a measurement.snp.cbor, or a vm_config (or
    sev_snp_measurement) JSON whose chain is then checked. ``None`` when ``data`` is not SNP
    material, so the TDX reader gets it."""
    from dstack_mr import cbor
    from dstack_mr.config import parse_json
    from dstack_mr.errors import CborError, SnpEvidenceError
    from dstack_mr.snp_document import SnpImageMeasurement, SnpMeasurementDocument, SnpVmConfig

    if data.lstrip()[:1] == b"{":
        obj = parse_json(data, "measurement document", SnpEvidenceError)
        if not isinstance(obj, dict):
            return None
        if "checksum_file" in obj and "vcpus" in obj:
            doc = SnpMeasurementDocument.from_json(data)
            image_hash = None
        elif "sev_snp_measurement" in obj or "vm_config" in obj:
            vm = SnpVmConfig.from_dict(obj)
            if vm.sev_snp_measurement is None:
                return None
            doc = vm.measurement_document()
            image_hash = vm.os_image_hash
        else:
            return None
        checks = doc.integrity(image_hash)
        return {
            "integrity": {c.name: {"ok": c.ok, "message": c.message} for c in checks},
            "vcpus": doc.vcpus,
            "vcpu_type": doc.vcpu_type,
            "guest_features": doc.guest_features,
            **doc.image.to_dict(),
        }
    try:
        value = cbor.decode(data)
    except CborError:
        return None
    if not isinstance(value, dict) or "ovmf_sections" not in value:
        return None
    return SnpImageMeasurement.from_cbor(data).to_dict()
