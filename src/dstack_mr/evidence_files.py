"""Evidence read from files: bounded reads, and what each file turns out to be.

An operator holds some mix of a guest-agent response, a quote, a JSON or CCEL event log, a
VmConfig and register values typed by hand. :class:`EvidenceFiles` reads them once, tells an
AMD SEV-SNP attestation from TDX evidence, refuses a whole attestation given where only one
of its parts belongs, and merges the TDX parts into one :class:`~dstack_mr.evidence.Evidence`.
:func:`verify_evidence` does the same for ``verify``'s evidence (a quote may also sit next to
the collateral); :func:`verify_inputs` reads everything else ``verify`` is given. Every error
is an :class:`~dstack_mr.errors.EvidenceError` (or a :class:`~dstack_mr.errors.ConfigError`
for the VmConfig) naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

import attrs

from .errors import ConfigError, EvidenceError
from .files import unusable_path_reason

if TYPE_CHECKING:
    from .acpi import AcpiSource
    from .attestation import Attestation
    from .collateral import Collateral
    from .config import VmConfig
    from .evidence import Evidence
    from .image import Image
    from .measurement_doc import MeasurementDocument
    from .snp_attestation import SnpAttestation
    from .snp_document import SnpVmConfig

StrPath = Union[str, "os.PathLike[str]"]

#: Quotes, logs and configs are kilobytes; refuse to slurp anything huge.
MAX_EVIDENCE_SIZE = 16 << 20

#: The register options, in the order they are reported.
REGISTER_OPTIONS = ("mrtd", "rtmr0", "rtmr1", "rtmr2")


def read_evidence(path: StrPath, what: str) -> bytes:
    """The file's bytes, refusing one larger than :data:`MAX_EVIDENCE_SIZE`."""
    limit = MAX_EVIDENCE_SIZE  # read at call time: tests lower it
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except (OSError, ValueError) as exc:
        raise EvidenceError(
            f"cannot read {what} {os.fspath(path)}: {unusable_path_reason(exc)}"
        ) from None
    if len(data) > limit:
        raise EvidenceError(f"{what} {os.fspath(path)} is larger than {limit} bytes")
    return data


def read_json(path: StrPath, what: str) -> Any:
    """A JSON file, read as strictly as serde_json reads it."""
    from .config import parse_json

    return parse_json(read_evidence(path, what), f"{what} {os.fspath(path)}", EvidenceError)


def _quote_evidence(path: StrPath) -> Evidence:
    """The quote in file ``path``, refused when the file is a whole attestation."""
    from .evidence import Evidence, reject_attestation
    from .quote import parse_quote

    where = os.fspath(path)
    data = read_evidence(path, "quote")
    reject_attestation(data, f"--quote {where}")
    return Evidence(quote=parse_quote(data), sources=(f"quote {where}",))


@attrs.frozen
class SnpEvidence:
    """An AMD SEV-SNP attestation, judged on its own, and the VmConfig given beside it."""

    attestation: SnpAttestation
    vm_config: SnpVmConfig | None = None


@attrs.frozen
class TdxEvidence:
    """The merged TDX evidence and the VmConfig to judge it by (given, else the VM's own)."""

    evidence: Evidence
    vm_config: VmConfig


@attrs.frozen
class EvidenceFiles:
    """The evidence files ``diagnose`` takes; ``actual`` maps ``mrtd``/``rtmr0``.. to hex text.

    Every part is optional. :meth:`load` reads each file once (at most
    :data:`MAX_EVIDENCE_SIZE` bytes) and says what it found.
    """

    attestation: StrPath | None = None
    quote: StrPath | None = None
    event_log: StrPath | None = None
    ccel: StrPath | None = None
    vm_config: StrPath | None = None
    actual: Mapping[str, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        unknown = sorted(set(self.actual) - set(REGISTER_OPTIONS))
        if unknown:
            raise ConfigError(f"actual registers: unknown {unknown}; expected {REGISTER_OPTIONS}")

    def tdx_parts(self) -> list[str]:
        """The options given that only TDX evidence can fill."""
        named = [("--quote", self.quote), ("--event-log", self.event_log), ("--ccel", self.ccel)]
        named += [(f"--actual-{r}", self.actual.get(r)) for r in REGISTER_OPTIONS]
        return [name for name, value in named if value is not None]

    def load(self) -> TdxEvidence | SnpEvidence:
        """An SNP attestation (with nothing TDX beside it), or the TDX evidence and its VmConfig.

        Raises :class:`ConfigError` when no VmConfig is given or carried by the attestation.
        """
        from .evidence import Evidence, reject_attestation

        evidence = Evidence()
        vm_text: bytes | None = None
        if self.attestation is not None:
            raw = read_evidence(self.attestation, "attestation")
            if self.vm_config is not None:
                vm_text = read_evidence(self.vm_config, "vm_config")
            snp = self._snp(raw, vm_text)
            if snp is not None:
                return snp
            from .attestation import parse_attestation

            evidence = Evidence.from_attestation(parse_attestation(raw))
        evidence = evidence.merge(self._tdx_parts())
        if self.vm_config is not None:
            from .config import parse_json
            from .evidence import load_vm_config

            where = os.fspath(self.vm_config)
            data = vm_text if vm_text is not None else read_evidence(self.vm_config, "VmConfig")
            reject_attestation(data, f"--vm-config {where}")
            vm, warnings = load_vm_config(
                parse_json(data, f"VmConfig {where}", ConfigError), f"--vm-config {where}"
            )
            return TdxEvidence(evidence.merge(Evidence(warnings=tuple(warnings))), vm)
        if evidence.vm_config is not None:
            return TdxEvidence(evidence, evidence.vm_config)
        raise ConfigError("no VmConfig: pass --vm-config, or an --attestation carrying one")

    def _snp(self, raw: bytes, vm_text: bytes | None) -> SnpEvidence | None:
        from .snp_attestation import parse_snp_attestation

        assert self.attestation is not None
        att = parse_snp_attestation(raw, f"attestation {os.fspath(self.attestation)}")
        if att is None:
            return None
        tdx = self.tdx_parts()
        if tdx:
            raise ConfigError(
                f"{', '.join(tdx)}: TDX evidence cannot be combined with an AMD SEV-SNP "
                "attestation, which is judged on its own"
            )
        if vm_text is None:
            return SnpEvidence(att)
        from .snp_document import SnpVmConfig

        return SnpEvidence(att, SnpVmConfig.from_json(vm_text))

    def _tdx_parts(self) -> Evidence:
        """The quote, event logs and typed registers, each refused when it is a whole
        attestation."""
        from .ccel import parse_ccel
        from .eventlog import parse_json_event_log
        from .evidence import Evidence, parse_register_hex, reject_attestation

        evidence = Evidence()
        if self.quote is not None:
            evidence = evidence.merge(_quote_evidence(self.quote))
        if self.event_log is not None:
            where = os.fspath(self.event_log)
            data = read_evidence(self.event_log, "event log")
            reject_attestation(data, f"--event-log {where}")
            events = parse_json_event_log(data)
            evidence = evidence.merge(Evidence(events=events, sources=(f"event log {where}",)))
        if self.ccel is not None:
            events = parse_ccel(read_evidence(self.ccel, "CCEL event log"))
            evidence = evidence.merge(
                Evidence(events=events, sources=(f"CCEL {os.fspath(self.ccel)}",))
            )
        typed = {
            name: parse_register_hex(self.actual[name], f"--actual-{name}")
            for name in REGISTER_OPTIONS
            if self.actual.get(name) is not None
        }
        if typed:
            evidence = evidence.merge(Evidence(registers=typed, sources=("command line",)))
        return evidence


def read_attestation(path: StrPath) -> Attestation:
    """An attestation file of any shape :func:`~dstack_mr.attestation.parse_attestation` reads
    (GetQuote/Info/tcb_info responses, dstack's SCALE attestation raw or as
    ``{"attestation": hex}``), or NEAR-style public data around a quote and tcb_info."""
    from .attestation import parse_attestation
    from .config import parse_json

    data = read_evidence(path, "attestation")
    if data[:1] == b"\0":  # a SCALE VersionedAttestation V0; JSON never starts with NUL
        return parse_attestation(data)
    doc = parse_json(data, f"attestation {os.fspath(path)}", EvidenceError)
    node = doc.get("tee_participant_info") if isinstance(doc, dict) else None
    if isinstance(node, dict) and isinstance(node.get("Dstack"), dict):
        inner = node["Dstack"]
        quote = inner.get("quote")
        if isinstance(quote, list):
            if not all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in quote
            ):
                raise EvidenceError(
                    f"{os.fspath(path)}: tee_participant_info.Dstack.quote is not bytes"
                )
            quote = bytes(quote).hex()
        doc = {"quote": quote, "tcb_info": inner.get("tcb_info")}
    return parse_attestation(doc)


def read_collateral(path: StrPath) -> tuple[Collateral, object]:
    """The Intel collateral in a file, and the quote stored next to it (``None`` if none)."""
    from .collateral import find_collateral, parse_collateral

    doc = read_json(path, "collateral")
    quote = find_collateral(doc)[1] if isinstance(doc, dict) else None
    return parse_collateral(doc), quote


@attrs.frozen
class VerifyEvidence:
    """What ``verify`` judges: the merged evidence, and the attestation when it is the only
    evidence (its shape then tells what the VM stated: report_data, a stripped boot log)."""

    evidence: Evidence
    only_attestation: Attestation | None = None

    @property
    def judged(self) -> Evidence | Attestation:
        return self.only_attestation if self.only_attestation is not None else self.evidence


def verify_evidence(
    attestation: StrPath | None = None,
    quote: StrPath | None = None,
    *,
    adjacent_quote: object = None,
    collateral: StrPath | None = None,
) -> VerifyEvidence:
    """The attestation and quote files merged; without a quote in them, ``adjacent_quote``
    (the hex quote found next to the collateral in file ``collateral``). Raises
    :class:`EvidenceError` when no quote is found anywhere, or when the quote file is a whole
    attestation (naming ``--attestation``, as ``diagnose`` does)."""
    from .evidence import Evidence
    from .quote import parse_quote

    evidence = Evidence()
    att = read_attestation(attestation) if attestation is not None else None
    if att is not None:
        evidence = Evidence.from_attestation(att)
    if quote is not None:
        evidence = evidence.merge(_quote_evidence(quote))
    if evidence.quote is None and adjacent_quote is not None:
        where = "" if collateral is None else os.fspath(collateral)
        if not isinstance(adjacent_quote, str):
            raise EvidenceError(f"collateral {where}: its 'quote' is not hex text")
        evidence = evidence.merge(
            Evidence(quote=parse_quote(adjacent_quote), sources=(f"quote in {where}",))
        )
    if evidence.quote is None:
        raise EvidenceError(
            "no quote: give --quote, --attestation, or a --collateral file with a 'quote'"
        )
    only = att if att is not None and quote is None and att.quote is not None else None
    return VerifyEvidence(evidence, only)


@attrs.frozen
class VerifyInputs:
    """Everything :func:`dstack_mr.verify.verify` is given, read from files: the evidence,
    the collateral (from a file or a PCCS), and what the measurements are checked against."""

    found: VerifyEvidence
    collateral: Collateral | None = None
    vm_config: VmConfig | None = None
    document: MeasurementDocument | None = None
    image: Image | None = None


def verify_inputs(
    attestation: StrPath | None = None,
    quote: StrPath | None = None,
    *,
    collateral: StrPath | None = None,
    pccs_url: str | None = None,
    vm_config: StrPath | None = None,
    measurement_doc: StrPath | None = None,
    image_dir: StrPath | None = None,
    acpi: AcpiSource | None = None,
) -> VerifyInputs:
    """Read ``verify``'s inputs: the collateral from file ``collateral`` (a quote stored
    next to it counts as evidence, see :func:`verify_evidence`) or fetched from
    ``pccs_url`` for the evidence's quote (online; never both), a VmConfig JSON file, a
    trusted measurement.tdx.cbor, and the image in ``image_dir`` (its ACPI tables from
    ``acpi``, by default the dumper). Raises a ConfigError when both collateral sources are
    given, else the error of the first input that cannot be read, naming it."""
    if collateral is not None and pccs_url is not None:
        raise ConfigError("give either --collateral or --pccs-url, not both")
    coll, adjacent_quote = read_collateral(collateral) if collateral is not None else (None, None)
    found = verify_evidence(
        attestation, quote, adjacent_quote=adjacent_quote, collateral=collateral
    )
    if pccs_url is not None:
        from .dcap import fetch_collateral

        assert found.evidence.quote is not None  # verify_evidence raises without one
        coll = fetch_collateral(pccs_url, found.evidence.quote)
    vm = None
    if vm_config is not None:
        from .config import VmConfig
        from .evidence import reject_attestation

        data = read_evidence(vm_config, "VmConfig")
        reject_attestation(data, f"--vm-config {os.fspath(vm_config)}")
        vm = VmConfig.from_json(data)
    document = None
    if measurement_doc is not None:
        from .measurement_doc import MeasurementDocument

        document = MeasurementDocument.from_cbor(
            read_evidence(measurement_doc, "measurement document")
        )
    image = None
    if image_dir is not None:
        from .image import Image

        image = Image.load(image_dir, acpi)
    return VerifyInputs(found, coll, vm, document, image)
