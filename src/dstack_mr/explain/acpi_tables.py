"""RTMR0's ACPI events: the QEMU configuration whose tables reproduce them; their source."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import events
from ..errors import DstackMrError
from ..event_identity import is_acpi_label
from .context import ExplainContext
from .finding import Finding

if TYPE_CHECKING:
    from ..diagnose import EventCheck


def acpi_event_finding(ctx: ExplainContext, ev: EventCheck) -> Finding | None:
    """One finding for the differing ACPI events (at the first of them; None at the others)."""
    differing = [
        e.label for e in ctx.events if e.rtmr == 0 and is_acpi_label(e.label)
        and e.status == "mismatch"
    ]  # fmt: skip
    if ev.label != differing[0]:
        return None  # one finding for the three
    layout = (
        "; the loader and RSDP match, so the table layout (sizes and offsets) is right and "
        "some table content differs"
        if differing == [events.ACPI_TABLES]
        else ""
    )
    proven = acpi_search(ctx, differing)
    if proven is not None:
        return proven
    return Finding(
        "acpi",
        f"{', '.join(differing)}: QEMU generated other ACPI tables than "
        f"{ctx.acpi.description.removeprefix('ACPI tables from ')}{layout}; they follow "
        "cpu_count, pic, smm, hotplug_off, pci_hole64_size, host_share_mode, GPUs and "
        "NVSwitches, hugepages and the QEMU version",
        register="RTMR0",
        settle="the VM's real settings and the host's dstack-acpi-tables (the dumper of "
        "that QEMU build), or --acpi-source log to take the VM's own ACPI digests",
    )


def acpi_search(ctx: ExplainContext, differing: list[str]) -> Finding | None:
    """Recompute the tables with the built-in model for the inputs they follow; a
    configuration reproducing all three of the VM's ACPI digests is a proven cause."""
    from ..acpi_log import acpi_digests_from_log
    from ..acpi_model.search import explain_acpi_mismatch

    try:
        actual = acpi_digests_from_log(ctx.evidence.events or ())
        claimed = ctx.image.machine(ctx.vm)
        match, _tried = explain_acpi_mismatch(claimed, actual)
    except DstackMrError:
        return None
    if match is None:
        return None
    if not match.changes:
        source = ctx.acpi.description.removeprefix("ACPI tables from ")
        return Finding(
            "acpi",
            f"{', '.join(differing)}: the built-in model of dstack's QEMU reproduces all "
            "three of the VM's ACPI digests with the configuration as given, so the "
            f"expected tables ({source}) are not the ones this VM's QEMU built",
            "proven",
            "acpi_source",
            "builtin",
            "RTMR0",
        )
    # The claimed Machine, not the VmConfig: some inputs (root_verity) are no VmConfig field.
    said = ", ".join(f"{k}={getattr(claimed, k)!r}" for k, _ in match.changes)
    name, value = match.changes[0]
    return Finding(
        "acpi",
        f"{', '.join(differing)}: the VM's ACPI tables are those of {match.describe()} "
        f"(config says {said}): the built-in model reproduces all three ACPI digests with it",
        "proven",
        name,
        repr(value) if len(match.changes) == 1 else match.describe(),
        "RTMR0",
    )


def acpi_note(ctx: ExplainContext) -> Finding | None:
    """A side note when RTMR0's ACPI digests were taken unverified from the log, or when
    RTMR0 could not be judged for want of ACPI tables."""
    if ctx.acpi.kind == "log":
        return Finding(
            "acpi",
            "acpi: the three ACPI digests were taken from the VM's own event log, not "
            "verified: RTMR0's other events are judged, its ACPI events are not",
            "proven",
            register="RTMR0",
            settle="the ACPI tables of the VM's configuration (the dstack-acpi-tables "
            "dumper, or --acpi-tables FILE)",
            lead=False,
        )
    if not ctx.acpi.judged:
        return Finding(
            "acpi",
            "acpi: RTMR0 is not judged: " + ctx.acpi.description.removeprefix("ACPI not judged: "),
            "proven",
            register="RTMR0",
            settle="the dstack-acpi-tables dumper, --acpi-tables FILE, or the VM's event "
            "log (its three ACPI digests)",
            lead=False,
        )
    return None
