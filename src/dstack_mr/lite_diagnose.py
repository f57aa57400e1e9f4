"""``diagnose`` in lite mode: a VM judged by its own measurement document, without its image.

Used when the evidence's ``vm_config`` carries ``tdx_measurement`` and no image directory is
given. The document must first pass its integrity chain (``sha256sum.txt`` against
``os_image_hash``, the document against its line), or the diagnosis stops with that error:
a tampered document is never a MATCH. Expected values then come from
:func:`dstack_mr.lite.measure_from_document`, with the three ACPI digests taken from the
event log (reported as such: equal by construction, so not verified).

Upstream's guest agent sends lite event logs: RTMR0 holds only the three ACPI events and
RTMR1/RTMR2 none. Such a log cannot be lined up event by event or replayed to the quote;
those registers are then compared by value only, and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from .acpi_log import AcpiDigests, acpi_digests_from_log
from .acpi_source import AcpiChoice
from .config import VmConfig
from .diagnose import (
    REGISTERS,
    DiagnoseReport,
    EventCheck,
    RegisterCheck,
    align,
    replay_checks,
)
from .errors import ConfigError, DstackMrError, EvidenceError
from .eventlog import EV_PLATFORM_CONFIG_FLAGS, Event
from .events import ACPI_LABELS
from .evidence import Evidence
from .explain import Finding
from .lite import builtin_acpi_tables, measure_from_document, vm_machine
from .machine import AcpiDigestsLike
from .measurement_doc import verify_material

__all__ = ["diagnose_lite", "is_lite_event_log"]

_LITE_SOURCE = "measurement.tdx.cbor tdvf.ovmf (lite mode)"


def is_lite_event_log(events: Sequence[Event]) -> bool:
    """True for a log stripped as upstream's guest strips it: no RTMR1/RTMR2 events and only
    the three ``ACPI DATA`` events in RTMR0."""
    rtmr0 = [e for e in events if e.imr == 0]
    return (
        not any(e.imr in (1, 2) for e in events)
        and len(rtmr0) == len(ACPI_LABELS)
        and all(e.event_type == EV_PLATFORM_CONFIG_FLAGS for e in rtmr0)
    )


def _acpi_finding(vm: VmConfig, events: Sequence[Event] | None) -> Finding | None:
    """With built-in ACPI tables and the VM's three logged ACPI digests: the configuration
    whose tables reproduce all three (recomputed, so proven), or None."""
    from .acpi_model.search import explain_acpi_mismatch

    try:
        claimed = vm_machine(vm)
        match, _tried = explain_acpi_mismatch(claimed, acpi_digests_from_log(events or ()))
    except DstackMrError:
        return None
    if match is None or not match.changes:
        return None
    said = ", ".join(f"{k}={getattr(claimed, k)!r}" for k, _ in match.changes)
    name, value = match.changes[0]
    return Finding(
        "acpi",
        f"acpi: the VM's ACPI tables are those of {match.describe()} (vm_config says {said}): "
        "the built-in model reproduces all three of its logged ACPI digests with it",
        "proven",
        name,
        repr(value) if len(match.changes) == 1 else match.describe(),
        "RTMR0",
    )


def _findings(
    report_registers: Sequence[RegisterCheck],
    doc_mrtds: tuple[bytes, bytes],
    rtmr0: Finding | None = None,
) -> list[Finding]:
    findings: list[Finding] = []
    for r in report_registers:
        if r.status != "mismatch" or r.actual is None:
            continue
        if r.name == "RTMR0" and rtmr0 is not None:
            findings.append(rtmr0)
            continue
        if r.name == "MRTD":
            single, two = doc_mrtds
            other = two if r.expected == single else single
            if r.actual == other:
                findings.append(
                    Finding(
                        "mrtd",
                        "mrtd: the actual MRTD is the document's other page-add order "
                        "(qemu_version / qemu_single_pass_add_pages say otherwise)",
                        "proven",
                        "two_pass_add_pages",
                        str(other == two).lower(),
                        "MRTD",
                    )
                )
            else:
                findings.append(
                    Finding(
                        "mrtd",
                        "mrtd: neither of the document's MRTD candidates: the VM booted other "
                        "firmware than its declared image's",
                        "proven",
                        register="MRTD",
                    )
                )
        else:
            findings.append(
                Finding(
                    r.name.lower(),
                    f"{r.name.lower()}: differs from the value the VM's own measurement "
                    "document gives; compare the events, or diagnose with the image "
                    "directory for a search of the inputs",
                    register=r.name,
                )
            )
    return findings


def diagnose_lite(vm: VmConfig, evidence: Evidence, acpi: str = "log") -> DiagnoseReport:
    """Lite-mode diagnosis of ``vm`` (with ``tdx_measurement``) against ``evidence``.

    ``acpi``: ``"log"`` (upstream's lite mode: the three ACPI digests from the event log,
    which must then be given; not verified) or ``"builtin"`` (the tables the built-in model
    of dstack's QEMU computes for ``vm``: RTMR0's ACPI events are then verified too)."""
    if acpi not in ("log", "builtin"):
        raise ConfigError(f"lite mode takes the ACPI tables from 'log' or 'builtin', not {acpi!r}")
    if vm.tdx_measurement is None:
        raise ConfigError(
            "lite mode needs a vm_config carrying tdx_measurement; otherwise give the image "
            "directory (--image-dir or --image-base-dir)"
        )
    if evidence.events is None and acpi == "log":
        raise EvidenceError(
            "lite mode takes RTMR0's ACPI digests from the VM's event log: give it "
            "(--attestation or --event-log), or the image directory"
        )
    doc = verify_material(vm.tdx_measurement, vm.os_image_hash)
    if acpi == "builtin":
        tables: AcpiDigestsLike = builtin_acpi_tables(vm)
        choice = AcpiChoice(
            "builtin",
            "ACPI tables from the built-in model of dstack's QEMU (verified: computed for this "
            "vm_config, not taken from the log)",
        )
    else:
        assert evidence.events is not None  # checked above
        choice = attrs.evolve(
            AcpiChoice.from_log(evidence.events),
            description="ACPI digests taken from the event log, not verified "
            "(lite mode: no image, no QEMU)",
        )
        assert isinstance(choice.source, AcpiDigests)  # from_log's digests
        tables = choice.source
    expected = measure_from_document(doc, vm, tables)
    m = expected.measurements

    registers = []
    for name in REGISTERS:
        found = evidence.actual(name)
        registers.append(
            RegisterCheck(
                name.upper(),
                getattr(m, name),
                None if found is None else found[0],
                None if found is None else found[1],
            )
        )

    notes = list(evidence.notes)
    lite_log = evidence.events is not None and is_lite_event_log(evidence.events)
    replay = replay_checks(evidence)
    events: list[EventCheck] = []
    if evidence.events is None:
        pass  # registers only (possible with builtin ACPI): nothing to line up
    elif lite_log:
        replay = [r for r in replay if r.imr >= 3]
        notes.append(
            "the event log is a lite log (RTMR0 holds only the three ACPI events, RTMR1 and "
            "RTMR2 none): MRTD and RTMR0-2 are compared by value, not event by event"
        )
    else:
        for log in expected.rtmr_logs:
            actual = [e for e in evidence.events if e.imr == log.rtmr]
            events.extend(align(log.rtmr, log.events, actual, acpi_from_log=expected.acpi_from_log))

    # No image directory to compare: the chain's outcome is a note, not an image check.
    notes.insert(
        0,
        "lite mode: vm_config.tdx_measurement checks out (sha256 of its sha256sum.txt is "
        f"os_image_hash {vm.os_image_hash.hex()}, and it lists the measurement document's "
        "sha256); expected values come from that document",
    )
    return DiagnoseReport(
        vm_config=vm,
        image_dir="(none: lite mode)",
        ovmf_variant=expected.ovmf_variant,
        variant_source=_LITE_SOURCE,
        expected=expected,
        registers=tuple(registers),
        replay=tuple(replay),
        events=tuple(events),
        findings=tuple(
            _findings(
                registers,
                (doc.mrtd_single_pass, doc.mrtd_two_pass),
                _acpi_finding(vm, evidence.events)
                if acpi == "builtin"
                and any(r.name == "RTMR0" and r.status == "mismatch" for r in registers)
                else None,
            )
        ),
        evidence_sources=evidence.sources,
        acpi=choice,
        evidence_notes=tuple(notes),
        warnings=(*expected.warnings, *evidence.warnings),
        signed=evidence.quote is not None,
    )
