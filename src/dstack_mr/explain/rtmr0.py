"""RTMR0 without an event log: the whole register recomputed with one input changed.

The inputs tried, in order: the TD HOB's memory size, the other OVMF layout, the SMBIOS inputs.
"""

from __future__ import annotations

from .. import events
from ..reproduce import MEMORY_TRIED
from .context import ExplainContext
from .finding import Finding
from .memory import td_hob_search
from .ovmf_layout import layout_register_finding, other_variant
from .proof import register_proof, replays_to
from .smbios_event import smbios_found, smbios_search


def rtmr0_finding(ctx: ExplainContext) -> Finding:
    """The first single change that reproduces RTMR0, proven; else what was tried."""
    log = ctx.expected.rtmr_logs[0]
    labels = [e.label for e in log.events]
    base = log.digests
    hob = labels.index(events.TD_HOB)
    found = td_hob_search(ctx, "RTMR0", replays_to(ctx, 0, events.TD_HOB))
    if found is not None:
        return register_proof(0, events.TD_HOB, found, labels)
    layout = layout_register_finding(ctx, base[hob])
    if layout is not None:
        return layout
    smbios_tried: tuple[str, ...] = ()
    if events.SMBIOS_HANDOFF in labels:
        tables = smbios_search(ctx, replays_to(ctx, 0, events.SMBIOS_HANDOFF))
        if tables is not None and tables.match is not None:
            proof = smbios_found(ctx, tables)
            return register_proof(0, events.SMBIOS_HANDOFF, proof, labels)
        smbios_tried = (tables.describe(),) if tables is not None else ()
    return Finding(
        "rtmr0",
        "rtmr0: RTMR0 differs, and no single change tried reproduces it; without the "
        "event log the differing event cannot be identified",
        register="RTMR0",
        tried=(
            f"{MEMORY_TRIED} (TD HOB)",
            f"the {other_variant(ctx.expected.ovmf_variant).value} OVMF layout",
            f"ACPI as given ({ctx.acpi.description})",
            *smbios_tried,
        ),
        settle="the VM's event log (the GetQuote response's event_log, or the CCEL "
        "table) identifies the differing event",
    )
