"""Event logs as a VM would write them, built from expected measurements (for tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dstack_mr.event_identity import simulated_event as vm_event
from dstack_mr.event_identity import simulated_log as events_of
from dstack_mr.eventlog import Event
from dstack_mr.events import SMBIOS_HANDOFF
from dstack_mr.registry import SMBIOS3_TABLE

if TYPE_CHECKING:
    from dstack_mr import VmConfig
    from dstack_mr.image import Image

__all__ = ["events_of", "smbios_swapped_log", "vm_event"]


def smbios_swapped_log(
    image: Image, vm: VmConfig, smbios_digest: bytes, table_address: int
) -> tuple[Event, ...]:
    """The log of ``image`` booted with ``vm``, its SMBIOS handoff event carrying
    ``smbios_digest`` and a real payload shape: one table, the SMBIOS 3 GUID, the table at
    ``table_address``."""
    payload = (
        (1).to_bytes(8, "little") + SMBIOS3_TABLE.bytes_le + table_address.to_bytes(8, "little")
    )
    out = []
    for log in image.measure(vm).rtmr_logs:
        for e in log.events:
            if e.label == SMBIOS_HANDOFF:
                out.append(Event(0, 0x80000009, smbios_digest, "", payload))
            else:
                out.append(vm_event(log.rtmr, e.label, e.digest))
    return tuple(out)
