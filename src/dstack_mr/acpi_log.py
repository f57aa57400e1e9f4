"""RTMR0's three ACPI digests as a VM's event log states them.

Without QEMU's tables (no dumper, no tables file) the ACPI events cannot be *predicted*, but
an event log still says what the firmware measured: three ``EV_PLATFORM_CONFIG_FLAGS`` events
with the payload ``ACPI DATA`` in RTMR0 (the table loader, the RSDP and the tables, in that
order; dstack's JSON log also names them ``acpi-loader`` / ``acpi-rsdp`` / ``acpi-tables``).
Digests taken from there are the VM's own claim: anything computed with them says so ("taken
from the log, not verified").

:func:`acpi_digests_from_log` is the extraction the diagnosis uses; the "lite" verification
uses its own stricter one (``lite.lite_acpi_digests_from_log``: the events chosen by name, as
upstream's verifier does).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from .errors import EvidenceError

if TYPE_CHECKING:  # AcpiDigests is on the measure path; the event-log parser is not
    from .eventlog import Event

__all__ = ["ACPI_EVENT_NAMES", "AcpiDigests", "acpi_digests_from_log"]

#: The names dstack's JSON log gives the three events, in measurement order.
ACPI_EVENT_NAMES = ("acpi-loader", "acpi-rsdp", "acpi-tables")


@attrs.frozen
class AcpiDigests:
    """The three RTMR0 ACPI digests, without the tables behind them.

    Has the ``loader_digest`` / ``rsdp_digest`` / ``tables_digest`` of
    :class:`~dstack_mr.acpi.AcpiTables`, so either can build an RTMR0 log.
    """

    loader_digest: bytes = attrs.field(repr=bytes.hex)
    rsdp_digest: bytes = attrs.field(repr=bytes.hex)
    tables_digest: bytes = attrs.field(repr=bytes.hex)
    #: Where the digests came from (``log``: the VM's own event log, not verified).
    source: str = attrs.field(default="log", kw_only=True)


def _is_acpi(event: Event) -> bool:
    from .eventlog import EV_PLATFORM_CONFIG_FLAGS

    return (
        event.imr == 0
        and event.event_type == EV_PLATFORM_CONFIG_FLAGS
        and (event.event_payload.rstrip(b"\0") == b"ACPI DATA" or event.event in ACPI_EVENT_NAMES)
    )


def acpi_digests_from_log(events: Iterable[Event]) -> AcpiDigests:
    """The loader, RSDP and tables digests of an event log's RTMR0 ``ACPI DATA`` events.

    Raises :class:`EvidenceError` unless there are exactly three (a log with its payloads
    stripped and no event names cannot show which events are the ACPI ones). When the log
    names them, the names decide the order; otherwise log order does.
    """
    found = [e for e in events if _is_acpi(e)]
    if len(found) != 3:
        raise EvidenceError(
            f"the event log has {len(found)} RTMR0 'ACPI DATA' events, expected 3 (table "
            "loader, RSDP, tables); the ACPI digests cannot be taken from it"
        )
    names = [e.event for e in found]
    if all(n in ACPI_EVENT_NAMES for n in names) and len(set(names)) == 3:
        found.sort(key=lambda e: ACPI_EVENT_NAMES.index(e.event))
    loader, rsdp, tables = (e.digest for e in found)
    return AcpiDigests(loader, rsdp, tables)
