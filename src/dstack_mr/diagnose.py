"""Why does a quote not match? Expected and actual measurements compared, causes proven.

:func:`diagnose` computes what a ``VmConfig`` on an image should measure, compares it with
whatever evidence the operator holds (a quote, a JSON or CCEL event log, a guest-agent
response, or bare register values), checks the evidence against itself (does the log replay
to the quote?), lines up expected and actual events of RTMR0-2 by what they are, and explains
each difference.

An explanation is *proven* only when recomputing the expected value with one changed input
reproduces the actual digest: the event's digest when there is an event log, the whole
register otherwise. Everything else is a *hypothesis*, and says so (:mod:`dstack_mr.explain`).
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from . import explain as _explain
from .acpi import AcpiSource
from .acpi_log import AcpiDigests
from .acpi_source import AcpiChoice
from .config import OvmfVariant, VmConfig
from .dcap import QuoteVerdict
from .declarations import (
    DeclaredMeasurement,
    ImageHashCheck,
    check_declared_measurement,
    check_os_image_hash,
)
from .digest import DIGEST_LEN, replay
from .errors import ConfigError, DumperNotFoundError
from .event_identity import (
    EventIdentity,
    actual_identity,
    expected_identity,
    is_acpi_label,
    same_event,
    tag_positional,
)
from .event_payload import describe_payload
from .eventlog import Event, event_type_name
from .evidence import Evidence
from .explain import Finding
from .image import Image, ovmf_variant_with_source
from .machine import MeasuredEvent, MeasurementDetails

SCHEMA_VERSION = 2
REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2")

#: Placeholder digests when ACPI is not judged; never reported (RTMR0 is then not judged).
_UNJUDGED_ACPI = AcpiDigests(bytes(DIGEST_LEN), bytes(DIGEST_LEN), bytes(DIGEST_LEN))


# --- comparisons -------------------------------------------------------------------------------


@attrs.frozen
class RegisterCheck:
    name: str
    expected: bytes | None
    actual: bytes | None
    source: str | None

    @property
    def status(self) -> str:
        """``match`` / ``mismatch``; ``not-compared`` (no actual value) or ``not-judged`` (no
        expected value: RTMR0 without any ACPI source)."""
        if self.actual is None:
            return "not-compared"
        if self.expected is None:
            return "not-judged"
        return "match" if self.actual == self.expected else "mismatch"


@attrs.frozen
class ReplayCheck:
    """Does the event log replay to the register the quote (or tcb_info) states?"""

    imr: int
    events: int
    replayed: bytes
    reference: bytes
    reference_source: str
    derived_digests: int
    #: Runtime events whose stated digest is not that of their payload.
    inconsistent_payloads: int = 0

    @property
    def matches(self) -> bool:
        return self.replayed == self.reference

    @property
    def message(self) -> str:
        text = self._replay_message()
        if self.inconsistent_payloads:
            text += (
                f"; {self.inconsistent_payloads} runtime event(s) carry a digest that is not "
                "that of their payload (the payload shown is not what was measured)"
            )
        return text

    def _replay_message(self) -> str:
        name = f"RTMR{self.imr}"
        src = self.reference_source
        if self.matches and not self.derived_digests:
            return f"{name}: the event log ({self.events} events) replays to the {src} value"
        if self.matches:
            return (
                f"{name}: the log carries no digest for {self.derived_digests} of its "
                f"{self.events} events; recomputed from their payloads, it replays to the {src} "
                "value"
            )
        if self.events == 0:
            return f"{name}: the event log has no events for this register"
        return (
            f"{name}: the event log ({self.events} events) does NOT replay to the {src} value: "
            "the evidence is inconsistent (trimmed or altered log), not necessarily the image"
        )


@attrs.frozen
class EventCheck:
    """One expected event lined up with the actual one (either may be missing).

    ``identity`` names what the event is (from the expected label, else from the actual
    event); ``actual_identity`` what the VM's event is, from its type and payload.
    """

    rtmr: int
    index: int | None
    actual_index: int | None
    label: str
    varies_with: str
    expected: bytes | None
    actual: bytes | None
    actual_type: int | None = None
    actual_description: str | None = None
    identity: str = ""
    actual_identity: str | None = None
    #: The expected digest was taken from the evidence (ACPI from the log): equal by
    #: construction, so the event is not verified.
    from_log: bool = False

    @property
    def status(self) -> str:
        if self.expected is None:
            return "extra"
        if self.actual is None:
            return "missing"
        if self.from_log:
            return "unverified"
        return "match" if self.expected == self.actual else "mismatch"

    @property
    def differs(self) -> bool:
        """The digest differs, or the event is missing from / extra in the VM's log."""
        return self.status in ("mismatch", "missing", "extra")

    def to_dict(self) -> dict[str, Any]:
        """This event as the report's JSON shows it (``events``)."""
        out: dict[str, Any] = _JSON.unstructure(self)
        return out


def replay_checks(evidence: Evidence) -> list[ReplayCheck]:
    """For each RTMR with a reference value (the quote's, else the stated tcb_info's): does
    the evidence's event log replay to it? Empty without an event log."""
    if evidence.events is None:
        return []
    checks = []
    for imr in range(4):
        name = f"rtmr{imr}"
        if evidence.quote is not None:
            reference, source = getattr(evidence.quote, name), "quote"
        elif name in evidence.stated_registers:
            reference, source = evidence.stated_registers[name], "tcb_info"
        else:
            continue
        mine = [e for e in evidence.events if e.imr == imr]
        checks.append(
            ReplayCheck(
                imr=imr,
                events=len(mine),
                replayed=replay(e.digest for e in mine),
                reference=reference,
                reference_source=source,
                derived_digests=sum(e.digest_derived for e in mine),
                inconsistent_payloads=sum(e.payload_consistent is False for e in mine),
            )
        )
    return checks


def _identities(rtmr: int, actual: Sequence[Event]) -> list[EventIdentity]:
    out = [actual_identity(e) for e in actual]
    tagged = [i for i, ident in enumerate(out) if ident.kind == "tagged"]
    for pos, i in enumerate(tagged):
        out[i] = tag_positional(rtmr, pos, out[i])
    return out


def _check(
    rtmr: int,
    spec: MeasuredEvent | None,
    i: int | None,
    j: int | None,
    actual: Event | None,
    actual_ident: EventIdentity | None,
    from_log: bool,
) -> EventCheck:
    ident = (
        expected_identity(rtmr, spec.label)
        if spec is not None
        else actual_ident or EventIdentity("?", None, "(unexpected event)")
    )
    return EventCheck(
        rtmr=rtmr,
        index=i,
        actual_index=j,
        label=spec.label if spec is not None else "(unexpected event)",
        varies_with=spec.varies_with if spec is not None else "",
        expected=spec.digest if spec is not None else None,
        actual=None if actual is None else actual.digest,
        actual_type=None if actual is None else actual.event_type,
        actual_description=None if actual is None else describe_payload(actual),
        identity=ident.name,
        actual_identity=None if actual_ident is None else actual_ident.name,
        from_log=from_log and spec is not None and is_acpi_label(spec.label),
    )


def align(
    rtmr: int,
    expected: Sequence[MeasuredEvent],
    actual: Sequence[Event],
    *,
    acpi_from_log: bool = False,
) -> list[EventCheck]:
    """Pair expected and actual events by identity.

    Equal digests anchor the alignment (same digest, same content). Between anchors, events
    pair up in order when they are the same kind of event (an EFI variable with an EFI
    variable, named alike when both names are known); an expected event with no counterpart
    of its kind is missing, an actual one extra.
    """
    want = [e.digest for e in expected]
    got = [e.digest for e in actual]
    ids_got = _identities(rtmr, actual)
    ids_want = [expected_identity(rtmr, e.label) for e in expected]
    out: list[EventCheck] = []

    def emit(i: int | None, j: int | None) -> None:
        out.append(
            _check(
                rtmr,
                expected[i] if i is not None else None,
                i,
                j,
                actual[j] if j is not None else None,
                ids_got[j] if j is not None else None,
                acpi_from_log,
            )
        )

    matcher = difflib.SequenceMatcher(a=want, b=got, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for k in range(i2 - i1):
                emit(i1 + k, j1 + k)
            continue
        # Within a differing stretch, pair by kind (in order), not by position alone.
        kinds = difflib.SequenceMatcher(
            a=[ids_want[i].kind for i in range(i1, i2)],
            b=[ids_got[j].kind for j in range(j1, j2)],
            autojunk=False,
        )
        for op2, a1, a2, b1, b2 in kinds.get_opcodes():
            if op2 == "equal":
                for k in range(a2 - a1):
                    i, j = i1 + a1 + k, j1 + b1 + k
                    if same_event(ids_want[i], ids_got[j]):
                        emit(i, j)
                    else:
                        emit(i, None)
                        emit(None, j)
                continue
            for i in range(i1 + a1, i1 + a2):
                emit(i, None)
            for j in range(j1 + b1, j1 + b2):
                emit(None, j)
    return out


# --- the report --------------------------------------------------------------------------------


@attrs.frozen
class DiagnoseReport:
    vm_config: VmConfig = attrs.field(repr=False)
    image_dir: str
    ovmf_variant: OvmfVariant
    variant_source: str
    expected: MeasurementDetails = attrs.field(repr=False)
    registers: tuple[RegisterCheck, ...] = attrs.field(repr=False)
    replay: tuple[ReplayCheck, ...] = attrs.field(repr=False)
    events: tuple[EventCheck, ...] = attrs.field(repr=False)
    findings: tuple[Finding, ...] = attrs.field(repr=False)
    evidence_sources: tuple[str, ...] = ()
    acpi: AcpiChoice = attrs.field(factory=lambda: AcpiChoice("file", "ACPI tables"), repr=False)
    image_hash: ImageHashCheck = attrs.field(
        factory=lambda: ImageHashCheck(None, None, None), repr=False
    )
    declared_measurement: DeclaredMeasurement | None = attrs.field(default=None, repr=False)
    image_files: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    evidence_notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    signed: bool = False
    #: The quote's signature and TCB status checked with collateral
    #: (:func:`dstack_mr.dcap.verify_quote`); None when not checked.
    quote_signature: QuoteVerdict | None = attrs.field(default=None, repr=False)

    @property
    def compared(self) -> bool:
        return any(r.status in ("match", "mismatch") for r in self.registers) or bool(self.events)

    @property
    def result(self) -> str:
        """``match``, ``mismatch`` or ``not-compared`` (no evidence to compare with)."""
        if not self.compared:
            return "not-compared"
        if any(r.status == "mismatch" for r in self.registers):
            return "mismatch"
        if any(e.differs for e in self.events):
            return "mismatch"
        if not all(r.matches for r in self.replay if r.imr < 3):
            return "mismatch"
        return "match"

    @property
    def ok(self) -> bool:
        """Something was compared and nothing differs (nothing compared is not ok)."""
        return self.result == "match"

    @property
    def exit_code(self) -> int:
        """1 on a mismatch or a quote whose signature check failed; 0 otherwise (also when
        nothing was compared)."""
        if self.quote_signature is not None and not self.quote_signature.verified:
            return 1
        return 1 if self.result == "mismatch" else 0

    def differing_events(self) -> list[EventCheck]:
        return [e for e in self.events if e.differs]

    def differing_registers(self) -> list[RegisterCheck]:
        return [r for r in self.registers if r.status == "mismatch"]

    def first_divergent(self, rtmr: int) -> EventCheck | None:
        """The first event of RTMR ``rtmr`` whose digest differs (or is missing/extra)."""
        for e in self.events:
            if e.rtmr == rtmr and e.differs:
                return e
        return None

    def lead(self) -> Finding | None:
        """The finding the verdict line names: the first proven cause, else the first cause,
        else the first finding (causes come before observations and notes)."""
        for f in self.findings:
            if f.status == "proven" and f.lead:
                return f
        for f in self.findings:
            if f.lead:
                return f
        return self.findings[0] if self.findings else None

    def headline(self) -> str:
        """The verdict in one line, with the proven cause when there is one."""
        result = self.result
        if result == "not-compared":
            return (
                "NOT COMPARED: no evidence was given (use --attestation, --quote, --event-log, "
                "--ccel or --actual-*); the expected measurements follow"
            )
        compared = [r for r in self.registers if r.status in ("match", "mismatch")]
        names = ", ".join(r.name for r in compared)
        if result == "match":
            sources = sorted({r.source or "" for r in compared})
            where = f" ({', '.join(sources)})" if sources else ""
            text = f"MATCH: {names or 'every compared event'} equal the expected values{where}"
            if self.acpi.kind == "log":
                text += "; the ACPI digests were taken from the log, not verified"
            return text
        differing = [r.name for r in self.differing_registers()]
        what = ", ".join(differing)
        unsigned = sorted({r.source or "" for r in self.differing_registers()} - {"quote"})
        if differing and unsigned:
            what += f" (unsigned: {', '.join(unsigned)})"
        if not differing:
            bad = [f"RTMR{r.imr}" for r in self.replay if r.imr < 3 and not r.matches]
            what = (
                f"the event log does not replay to the quote ({', '.join(bad)})"
                if bad
                else "event log"
            )
        lead = self.lead()
        if not self.acpi.judged and any(r.status == "not-judged" for r in self.registers):
            what += "; RTMR0 not judged (no ACPI source)"
        if lead is None:
            return f"MISMATCH: {what}"
        return f"MISMATCH: {what} — {lead.message} [{lead.status}]"

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (schema: docs/diagnose.schema.json)."""
        m = self.expected.measurements
        logs = self.expected.rtmr_logs
        judged = self.acpi.judged

        def digest(rtmr: int, e: MeasuredEvent) -> str | None:
            if rtmr == 0 and not judged and is_acpi_label(e.label):
                return None
            return e.digest.hex()

        return {
            "schema_version": SCHEMA_VERSION,
            "result": self.result,
            "headline": self.headline(),
            "ovmf_variant": self.ovmf_variant.rust_name,
            "ovmf_variant_source": self.variant_source,
            "mrtd": m.mrtd.hex(),
            "rtmr0": m.rtmr0.hex() if judged else None,
            "rtmr1": m.rtmr1.hex(),
            "rtmr2": m.rtmr2.hex(),
            "rtmr0_log": [
                {
                    "index": e.index,
                    "label": e.label,
                    "digest": digest(0, e),
                    "note": e.varies_with,
                    "identity": expected_identity(0, e.label).name,
                }
                for e in logs[0].events
            ],
            "expected_logs": [
                [
                    {"index": e.index, "label": e.label, "digest": digest(log.rtmr, e)}
                    for e in log.events
                ]
                for log in logs
            ],
            "inputs": {
                "vm_config": self.vm_config.to_dict(),
                "image_dir": self.image_dir,
                "image_files": dict(self.image_files),
                "qemu_version": self.expected.options.version_str,
                "pic": self.expected.options.pic,
                "two_pass_add_pages": self.expected.options.two_pass_add_pages,
                "acpi_dumper_argv": None
                if self.expected.invocation is None
                else list(self.expected.invocation.argv),
            },
            "acpi_source": {
                "kind": self.acpi.kind,
                "description": self.acpi.description,
                "verified": self.acpi.verified,
            },
            "image_hash": self.image_hash.to_dict(),
            "declared_measurement": None
            if self.declared_measurement is None
            else self.declared_measurement.to_dict(),
            "evidence": list(self.evidence_sources),
            "evidence_notes": list(self.evidence_notes),
            "signed": self.signed,
            "quote_signature": _JSON.unstructure(self.quote_signature, QuoteVerdict | None),
            "warnings": list(self.warnings),
            "comparison": _JSON.unstructure(self.registers, list[RegisterCheck]),
            "first_divergent": [
                {key: event[key] for key in _FIRST_DIVERGENT_KEYS}
                for rtmr in range(3)
                if (e := self.first_divergent(rtmr)) is not None
                for event in (e.to_dict(),)
            ],
            "replay": _JSON.unstructure(self.replay, list[ReplayCheck]),
            "events": _JSON.unstructure(self.events, list[EventCheck]),
            "findings": [f.to_dict() for f in self.findings],
            "ok": self.ok if self.compared else None,
        }

    def _repr_html_(self) -> str:
        from .render import report_html

        return report_html(self)


def _image_files(image: Image) -> dict[str, str]:
    return {
        "firmware": os.path.basename(image.files.firmware),
        "kernel": os.path.basename(image.files.kernel),
        "initrd": os.path.basename(image.files.initrd),
    }


def _measure(image: Image, vm: VmConfig, variant: OvmfVariant, acpi: AcpiChoice) -> Any:
    machine = image.machine(vm, variant)
    source = acpi.source if acpi.judged else _UNJUDGED_ACPI
    return image.measure_machine(machine, source)


def diagnose(
    vm: VmConfig,
    image: Image,
    evidence: Evidence | None = None,
    acpi: AcpiChoice | AcpiSource | AcpiDigests | None = None,
    *,
    explain: bool = True,
) -> DiagnoseReport:
    """Expected measurements of ``vm`` on ``image``, compared with ``evidence``.

    ``acpi`` says where RTMR0's ACPI digests come from: an :class:`AcpiChoice` (see
    :func:`resolve_acpi`), a table source, the digests themselves, or None for the image's
    own source — falling back to the evidence's log digests when no dumper is found, and to
    "ACPI not judged" without a log.
    """
    evidence = evidence or Evidence()
    choice = _acpi_choice(acpi, image, evidence)
    variant, variant_source = ovmf_variant_with_source(vm, image.info)
    try:
        expected = _measure(image, vm, variant, choice)
    except DumperNotFoundError:
        if acpi is not None:
            raise
        choice = AcpiChoice.log_or_none(evidence.events, "no dumper was found")
        expected = _measure(image, vm, variant, choice)
    except ConfigError:
        # The built-in model refuses QEMU versions no real CVM proves it for.
        if choice.fallback is None:
            raise
        choice = choice.fallback
        expected = _measure(image, vm, variant, choice)
    m = expected.measurements

    registers = []
    for name in REGISTERS:
        found = evidence.actual(name)
        value = getattr(m, name)
        registers.append(
            RegisterCheck(
                name.upper(),
                None if name == "rtmr0" and not choice.judged else value,
                None if found is None else found[0],
                None if found is None else found[1],
            )
        )

    replayed = replay_checks(evidence)
    events: list[EventCheck] = []
    if evidence.events is not None:
        for log in expected.rtmr_logs:
            if log.rtmr == 0 and not choice.judged:
                continue
            actual = [e for e in evidence.events if e.imr == log.rtmr]
            events.extend(align(log.rtmr, log.events, actual, acpi_from_log=choice.kind == "log"))

    by_vm_hash = evidence.declared_image_hash()
    by_vm = bool(by_vm_hash)
    declared = by_vm_hash or vm.os_image_hash
    image_hash = check_os_image_hash(
        declared, image.files.directory, "the VM" if by_vm else "the given VmConfig"
    )
    values = {r.name.lower(): r.actual for r in registers if r.actual is not None}
    own = evidence.vm_config is not None and evidence.vm_config.tdx_measurement is not None
    document = check_declared_measurement(
        evidence.vm_config if own else vm, values, image, from_evidence=own
    )
    findings: list[Finding] = []
    if explain:
        findings = _explain.explain(
            vm=vm,
            image=image,
            evidence=evidence,
            expected=expected,
            registers=registers,
            events=events,
            replay=replayed,
            acpi=choice,
            image_hash=image_hash,
            declared=document,
        )
    notes = list(evidence.notes)
    signed = evidence.quote is not None
    # The expected side's first (e.g. a truncated kernel, as measure reports it), then the
    # evidence's.
    warnings = [*expected.warnings, *evidence.warnings]
    return DiagnoseReport(
        vm_config=vm,
        image_dir=image.files.directory,
        ovmf_variant=variant,
        variant_source=variant_source,
        expected=expected,
        registers=tuple(registers),
        replay=tuple(replayed),
        events=tuple(events),
        findings=tuple(findings),
        evidence_sources=evidence.sources,
        acpi=choice,
        image_hash=image_hash,
        declared_measurement=document,
        image_files=_image_files(image),
        evidence_notes=tuple(notes),
        warnings=tuple(warnings),
        signed=signed,
    )


# --- the report's JSON ------------------------------------------------------------------------

#: The records of the ``--json`` document. Each is one JSON object whose keys, in this order,
#: are the record's attributes (through the converter: bytes as hex) or properties; the
#: document itself is :meth:`DiagnoseReport.to_dict`.
_JSON = cattrs.Converter()
_JSON.register_unstructure_hook(bytes, bytes.hex)
_JSON.register_unstructure_hook(dt.datetime, lambda t: t.isoformat().replace("+00:00", "Z"))


def _json_object(cls: type, keys: tuple[str, ...], **fields: Any) -> None:
    """Unstructure ``cls`` to ``keys``: its attributes (``fields``: cattrs overrides, e.g.
    a rename), else its properties."""
    attributes: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(cls, _JSON, **fields)

    def hook(obj: Any) -> dict[str, Any]:
        known = attributes(obj)
        return {k: known[k] if k in known else _JSON.unstructure(getattr(obj, k)) for k in keys}

    _JSON.register_unstructure_hook(cls, hook)


_json_object(
    RegisterCheck,
    ("register", "status", "expected", "actual", "source"),
    name=override(rename="register"),
)
_json_object(
    ReplayCheck,
    ("imr", "events", "replayed", "reference", "reference_source", "derived_digests",
     "inconsistent_payloads", "matches", "message"),
)  # fmt: skip
_json_object(
    EventCheck,
    ("rtmr", "index", "actual_index", "label", "identity", "actual_identity", "status",
     "expected", "actual", "actual_type", "actual_description", "varies_with"),
    actual_type=override(unstruct_hook=lambda t: None if t is None else event_type_name(t)),
)  # fmt: skip
#: ``first_divergent`` shows these keys of an event.
_FIRST_DIVERGENT_KEYS = (
    "rtmr", "index", "actual_index", "label", "identity", "expected", "actual",
)  # fmt: skip
_json_object(
    QuoteVerdict,
    ("verified", "error", "tcb_status", "advisory_ids", "fmspc", "verified_at",
     "collateral_valid_until"),
    status=override(rename="tcb_status"),
    advisory_ids=override(unstruct_hook=list),
    at=override(rename="verified_at"),
    window=override(
        rename="collateral_valid_until",
        unstruct_hook=lambda w: None if w is None else _JSON.unstructure(w.not_after),
    ),
)  # fmt: skip


def _acpi_choice(
    acpi: AcpiChoice | AcpiSource | AcpiDigests | None, image: Image, evidence: Evidence
) -> AcpiChoice:
    if isinstance(acpi, AcpiChoice):
        return acpi
    if isinstance(acpi, AcpiDigests):
        return AcpiChoice(
            "given", "ACPI digests given by the caller, not verified", acpi, verified=False
        )
    if acpi is not None:
        return AcpiChoice.from_source(acpi)
    # The image's own source (its dumper or tables file, cached); a missing dumper falls
    # back to the log in diagnose().
    return AcpiChoice("image", "ACPI tables from the image's source", image.acpi)


__all__ = [
    "DiagnoseReport",
    "EventCheck",
    "Finding",
    "RegisterCheck",
    "ReplayCheck",
    "align",
    "diagnose",
    "replay_checks",
]
