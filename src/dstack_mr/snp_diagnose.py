"""Does an SEV-SNP attestation match the launch it claims? MEASUREMENT and HOST_DATA, judged.

:func:`diagnose_snp` recomputes the expected launch MEASUREMENT from the measurement
material the VM's ``vm_config`` carries (after walking its integrity chain to
``os_image_hash``) and the expected HOST_DATA from its MrConfigV3 document, compares both
with the report, and when the MEASUREMENT differs searches the inputs it depends on —
vCPU count, vCPU model, guest features, cmdline, and an image directory's files — for values
that reproduce the report's. A finding is a fact only when such a recomputation reproduces
the actual digest; otherwise it is labelled a hypothesis.

The report's signature (ARK → ASK → VCEK) is NOT verified: a match here says the evidence
is self-consistent and describes this launch, not that AMD hardware signed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from .digest import short_hex
from .errors import SnpError, SnpEvidenceError
from .snp import (
    MAX_VCPUS,
    VCPU_MODEL_NAMES,
    SnpLaunchInputs,
    SnpMeasurement,
    measured_cmdline,
    rootfs_hash_from_cmdline,
    vmsa_chain,
)
from .snp_attestation import SnpAttestation
from .snp_document import (
    IntegrityCheck,
    MrConfigV3,
    SnpMeasurementDocument,
    SnpVmConfig,
    snp_host_data,
)
from .snp_image import SnpImage

__all__ = ["SNP_SCHEMA_VERSION", "SnpCheck", "SnpDiagnoseReport", "SnpFinding", "diagnose_snp"]

SNP_SCHEMA_VERSION = 1
#: Guest-feature values tried: every combination of the SEV_FEATURES bits KVM guests use
#: (0 SNPActive .. 9 SecureTSC) that keeps SNPActive, and every single-bit flip of the
#: stated value.
_FEATURE_BITS = 10


def _feature_candidates(stated: int) -> list[int]:
    combos = range(1, 1 << _FEATURE_BITS, 2)
    flips = (stated ^ (1 << bit) for bit in range(64))
    return [f for f in dict.fromkeys([*combos, *flips]) if f and f != stated]


@attrs.frozen
class SnpCheck:
    """One compared value of the report."""

    name: str
    expected: bytes | None = attrs.field(repr=short_hex)
    actual: bytes = attrs.field(repr=short_hex)
    source: str = ""

    @property
    def status(self) -> str:
        if self.expected is None:
            return "not-compared"
        return "match" if self.expected == self.actual else "mismatch"


@attrs.frozen
class SnpFinding:
    """An explanation: which input value reproduces an actual value, or why none does."""

    subject: str
    message: str
    parameter: str | None = None
    value: str | None = None
    reproduced: bool = False


@attrs.frozen
class SnpDiagnoseReport:
    """The judgement of one SNP attestation. ``ok`` = MATCH: MEASUREMENT and HOST_DATA
    recomputed equal, the integrity chain holds and nothing upstream's verifier would
    refuse was found. The signature was not checked (``signature_checked`` is False)."""

    attestation: SnpAttestation = attrs.field(repr=False)
    document: SnpMeasurementDocument = attrs.field(repr=False)
    expected: SnpMeasurement = attrs.field(repr=False)
    integrity: tuple[IntegrityCheck, ...]
    checks: tuple[SnpCheck, ...]
    mr_config: MrConfigV3 | None = attrs.field(repr=False)
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    findings: tuple[SnpFinding, ...]
    sources: tuple[str, ...] = ()
    signature_checked: bool = False

    @property
    def inputs(self) -> SnpLaunchInputs:
        return self.expected.inputs

    @property
    def ok(self) -> bool:
        return (
            all(c.status == "match" for c in self.checks)
            and all(i.ok for i in self.integrity)
            and not self.problems
        )

    @property
    def verdict(self) -> str:
        return "MATCH" if self.ok else "MISMATCH"

    @property
    def headline(self) -> str:
        """The report's first line: the verdict, what differs and the lead cause — a
        reproduced (proven) finding first, else the first explanation or problem."""
        unsigned = "report signature not checked"
        if self.ok:
            names = ", ".join(c.name for c in self.checks)
            return f"MATCH: {names} equal the expected values (AMD SEV-SNP; {unsigned})"
        wrong = [c.name for c in self.checks if c.status == "mismatch"]
        wrong += [f"integrity chain ({i.name})" for i in self.integrity if not i.ok]
        lead = next((f for f in self.findings if f.reproduced), None)
        if lead is not None:
            cause = f"{lead.message} [proven]"
        elif self.findings:
            cause = f"{self.findings[0].message} [hypothesis]"
        elif self.problems:
            cause = self.problems[0]
        else:
            cause = "no explanation found"
        what = ", ".join(wrong) if wrong else "refused"
        return f"MISMATCH: {what} — {cause} ({unsigned})"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document of an SNP diagnosis."""
        return {
            "schema_version": SNP_SCHEMA_VERSION,
            "platform": "amd-sev-snp",
            "verdict": self.verdict,
            "ok": self.ok,
            "signature_checked": self.signature_checked,
            "evidence": list(self.sources),
            "expected": self.expected.to_dict(),
            "comparison": [
                {
                    "name": c.name,
                    "status": c.status,
                    "expected": None if c.expected is None else c.expected.hex(),
                    "actual": c.actual.hex(),
                    "source": c.source,
                }
                for c in self.checks
            ],
            "integrity": [
                {
                    "name": i.name,
                    "ok": i.ok,
                    "expected": None if i.expected is None else i.expected.hex(),
                    "actual": None if i.actual is None else i.actual.hex(),
                    "message": i.message,
                }
                for i in self.integrity
            ],
            "mr_config": None if self.mr_config is None else self.mr_config.to_dict(),
            "report": self.attestation.report.to_dict(),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "findings": [
                {
                    "subject": f.subject,
                    "message": f.message,
                    "parameter": f.parameter,
                    "value": f.value,
                    "reproduced": f.reproduced,
                }
                for f in self.findings
            ],
        }

    def _repr_html_(self) -> str:
        from .snp_render import report_html

        return report_html(self)


# --- the search for explanations -------------------------------------------------------------


def _vcpu_findings(inputs: SnpLaunchInputs, pre_vmsa: bytes, actual: bytes) -> list[SnpFinding]:
    doc_sig = inputs.vcpu_sig
    names = VCPU_MODEL_NAMES
    # vCPU count, then vCPU model (with any count): one hash per candidate.
    for sig in [doc_sig, *(s for s in names if s != doc_sig)]:
        chain = vmsa_chain(pre_vmsa, inputs.reset_eip, sig, inputs.guest_features, MAX_VCPUS)
        for n, digest in chain:
            if digest != actual:
                continue
            found = []
            if n != inputs.vcpus:
                found.append(
                    SnpFinding(
                        "MEASUREMENT",
                        f"the actual MEASUREMENT is reproduced with vcpus={n} "
                        f"(sev_snp_measurement says {inputs.vcpus})",
                        "vcpus",
                        str(n),
                        True,
                    )
                )
            if sig != doc_sig:
                found.append(
                    SnpFinding(
                        "MEASUREMENT",
                        f"the actual MEASUREMENT is reproduced with vcpu_type={names[sig]} "
                        f"(CPUID signature {sig:#x}; sev_snp_measurement says "
                        f"{inputs.vcpu_type!r}, {doc_sig:#x})",
                        "vcpu_type",
                        names[sig],
                        True,
                    )
                )
            return found
    return []


def _feature_findings(inputs: SnpLaunchInputs, pre_vmsa: bytes, actual: bytes) -> list[SnpFinding]:
    sig = inputs.vcpu_sig
    for features in _feature_candidates(inputs.guest_features):
        chain = vmsa_chain(pre_vmsa, inputs.reset_eip, sig, features, inputs.vcpus)
        if list(chain)[-1][1] == actual:
            return [
                SnpFinding(
                    "MEASUREMENT",
                    f"the actual MEASUREMENT is reproduced with guest_features={features:#x} "
                    f"(sev_snp_measurement says {inputs.guest_features:#x})",
                    "guest_features",
                    f"{features:#x}",
                    True,
                )
            ]
    return []


@attrs.frozen
class _Candidate:
    parameter: str
    value: str
    message: str
    inputs: SnpLaunchInputs


def _image_candidates(inputs: SnpLaunchInputs, image: SnpImage) -> Iterator[_Candidate]:
    """Launch inputs with the document's image fields replaced by the image directory's,
    one field at a time, then all at once."""
    sources = [("image directory's files", image.computed)]
    if image.document is not None:
        sources.append(("image directory's measurement.snp.cbor", image.document))
    for where, material in sources:
        if material is None:
            continue
        fields: dict[str, dict[str, Any]] = {
            "cmdline": {"cmdline": material.cmdline},
            "kernel_hash": {"kernel_hash": material.kernel_hash},
            "initrd_hash": {"initrd_hash": material.initrd_hash},
            "ovmf": {
                "ovmf_hash": material.ovmf_hash,
                "ovmf_sections": material.ovmf_sections,
                "hashes_table_gpa": material.hashes_table_gpa,
                "reset_eip": material.reset_eip,
            },
        }
        fields["image"] = {k: v for change in fields.values() for k, v in change.items()}
        for name, change in fields.items():
            if all(getattr(inputs, k) == v for k, v in change.items()):
                continue
            what = {
                "ovmf": "OVMF (ovmf_hash, sections, hashes_table_gpa, reset_eip)",
                "image": "cmdline, kernel, initrd and OVMF together",
            }.get(name, name)
            yield _Candidate(
                name,
                where,
                f"the actual MEASUREMENT is reproduced with the {where} {what}: the VM booted "
                "that, not what sev_snp_measurement describes",
                inputs.evolve(**change),
            )


def _cmdline_candidates(inputs: SnpLaunchInputs) -> Iterator[_Candidate]:
    """Cmdlines a launch plausibly used instead of the document's: TDX's `` initrd=initrd``
    suffix added or dropped (dstack's TDX path measures it, SNP's does not)."""
    base = measured_cmdline(inputs.cmdline)
    suffix = " initrd=initrd"
    other = base[: -len(suffix)] if base.endswith(suffix) else base + suffix
    yield _Candidate(
        "cmdline",
        other,
        f"the actual MEASUREMENT is reproduced with cmdline {other!r}: it differs from "
        "sev_snp_measurement's only in the ' initrd=initrd' suffix",
        inputs.evolve(cmdline=other),
    )


def _input_findings(
    inputs: SnpLaunchInputs, image: SnpImage | None, actual: bytes
) -> list[SnpFinding]:
    candidates = list(_cmdline_candidates(inputs))
    if image is not None:
        candidates.extend(_image_candidates(inputs, image))
    for c in candidates:
        try:
            digest = c.inputs.measure().measurement
        except SnpError:
            continue
        if digest == actual:
            return [SnpFinding("MEASUREMENT", c.message, c.parameter, c.value, True)]
    return []


def _explain_measurement(
    expected: SnpMeasurement, actual: bytes, image: SnpImage | None
) -> list[SnpFinding]:
    inputs = expected.inputs
    pre = expected.pre_vmsa_digest
    found = _vcpu_findings(inputs, pre, actual)
    found = found or _feature_findings(inputs, pre, actual)
    found = found or _input_findings(inputs, image, actual)
    if found:
        return found
    searched = (
        f"vcpus 1..{MAX_VCPUS} with each known vCPU model, guest_features "
        f"(bits 0-{_FEATURE_BITS - 1} in any combination with SNPActive, or any one bit flipped), "
        "the cmdline with or without ' initrd=initrd'"
    )
    if image is not None:
        searched += ", and the image directory's cmdline, kernel, initrd and OVMF"
    return [
        SnpFinding(
            "MEASUREMENT",
            f"hypothesis (not reproduced): no single change among {searched} gives the actual "
            "MEASUREMENT. The VM most likely booted different image material (OVMF, kernel, "
            "initrd or cmdline) than measurement.snp.cbor describes"
            + ("" if image is not None else " — pass --image-dir to compare with an image")
            + ", or the report is not from this launch.",
        )
    ]


def _host_data(
    att: SnpAttestation, vm: SnpVmConfig
) -> tuple[list[SnpCheck], list[SnpFinding], MrConfigV3 | None, list[str]]:
    actual = att.report.host_data
    checks: list[SnpCheck] = []
    findings: list[SnpFinding] = []
    problems: list[str] = []
    documents: list[tuple[str, str]] = []
    if vm.mr_config is not None:
        same = att.mr_config == vm.mr_config
        documents.append(
            ("vm_config.mr_config" + (" (= attestation mr_config)" if same else ""), vm.mr_config)
        )
    if att.mr_config and att.mr_config != vm.mr_config:
        documents.append(("attestation mr_config", att.mr_config))
    if not documents:
        problems.append("no MrConfigV3 document (vm_config.mr_config) to bind HOST_DATA to")
        checks.append(SnpCheck("HOST_DATA", None, actual, "no mr_config"))
        return checks, findings, None, problems
    parsed: MrConfigV3 | None = None
    for source, document in documents:
        checks.append(SnpCheck("HOST_DATA", snp_host_data(document), actual, source))
        try:
            mc = MrConfigV3.from_document(document)
        except SnpEvidenceError as exc:
            problems.append(f"{source} is not a valid MrConfigV3 document: {exc}")
            continue
        parsed = parsed or mc
        if mc.host_data != actual:
            canonical = mc.canonical_document()
            if canonical != document and snp_host_data(canonical) == actual:
                findings.append(
                    SnpFinding(
                        "HOST_DATA",
                        f"HOST_DATA is reproduced by the canonical (JCS) form of {source}: the "
                        "document was re-serialised after launch (same content, other bytes)",
                        "mr_config",
                        "canonical JSON",
                        True,
                    )
                )
    if len(checks) == 2 and (checks[0].status == "match") != (checks[1].status == "match"):
        good, bad = (checks[0], checks[1]) if checks[0].status == "match" else checks[::-1]
        findings.append(
            SnpFinding(
                "HOST_DATA",
                f"HOST_DATA is reproduced by the {good.source}, not by the {bad.source}: the "
                "two documents differ and only the first is what the VM bound",
                "mr_config",
                good.source,
                True,
            )
        )
    return checks, findings, parsed, problems


def diagnose_snp(
    attestation: SnpAttestation,
    *,
    vm_config: SnpVmConfig | None = None,
    image: SnpImage | None = None,
    explain: bool = True,
) -> SnpDiagnoseReport:
    """Judge an SNP attestation against the launch inputs its vm_config carries.

    ``vm_config`` replaces the attestation's own config (e.g. a VMM's record); ``image`` is
    an image directory to compare with. Raises :class:`~dstack_mr.errors.SnpEvidenceError`
    when there is no measurement document to recompute from, and
    :class:`~dstack_mr.errors.SnpError` when its launch inputs are invalid.
    """
    vm = vm_config or attestation.vm_config
    sources = [attestation.source]
    if vm is None:
        raise SnpEvidenceError(
            "the attestation carries no vm_config; pass --vm-config with the VM's config"
        )
    if vm_config is not None:
        sources.append("vm_config given separately")
    document = vm.measurement_document()
    expected = document.launch_inputs().measure()
    report = attestation.report
    problems: list[str] = []
    warnings: list[str] = []
    try:
        rootfs_hash_from_cmdline(measured_cmdline(document.image.cmdline))
    except SnpError as exc:
        problems.append(str(exc))
    checks = [
        SnpCheck("MEASUREMENT", expected.measurement, report.measurement, "sev_snp_measurement")
    ]
    host_checks, findings, mr_config, host_problems = _host_data(attestation, vm)
    checks += host_checks
    problems += host_problems
    if attestation.report_data != report.report_data:
        problems.append(
            "the attestation's report_data is not the report's REPORT_DATA: the wrapper and the "
            "signed report disagree"
        )
    if report.policy.debug:
        warnings.append(
            "the guest policy allows debugging: the host can read and change this VM's memory, "
            "so it is not confidential"
        )
    if report.vmpl != 0:
        warnings.append(f"the report was requested at VMPL {report.vmpl}, not 0")
    if image is not None:
        for check in image.integrity():
            if not check.ok:
                warnings.append(f"image directory: {check.message}")
        differs = image.differences()
        if differs:
            warnings.append(
                "image directory: its measurement.snp.cbor and its files disagree on "
                + ", ".join(differs)
            )
        if image.os_image_hash is not None and vm.os_image_hash not in (None, image.os_image_hash):
            warnings.append(
                "image directory: its sha256sum.txt is not the image vm_config.os_image_hash names"
            )
    if explain and report.measurement != expected.measurement:
        findings = _explain_measurement(expected, report.measurement, image) + findings
    return SnpDiagnoseReport(
        attestation=attestation,
        document=document,
        expected=expected,
        integrity=document.integrity(vm.os_image_hash),
        checks=tuple(checks),
        mr_config=mr_config,
        problems=tuple(problems),
        warnings=tuple(warnings),
        findings=tuple(findings),
        sources=tuple(sources),
    )
