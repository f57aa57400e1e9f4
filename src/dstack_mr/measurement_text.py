"""What ``measure`` prints: the registers as the reference prints them, or its JSON.

Without ``events`` both are exactly the reference CLI's output; ``events`` adds where the
ACPI tables came from and every labelled event of RTMR0-2. Strings and JSON-ready dicts
only: the caller prints them (notes and warnings go to stderr, beside this; the JSON
also carries any warnings, since a JSON reader never sees stderr).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .machine import MeasurementDetails


def events_json(details: MeasurementDetails) -> list[list[dict[str, object]]]:
    """Every RTMR0-2 event as ``{"index", "label", "digest"}``, one list per register."""
    return [
        [{"index": e.index, "label": e.label, "digest": e.digest.hex()} for e in log.events]
        for log in details.rtmr_logs
    ]


def measurement_json(details: MeasurementDetails, events: bool = False) -> dict[str, object]:
    """``{"mrtd", "rtmr0", "rtmr1", "rtmr2"}`` in hex; with ``events`` also
    ``acpi_source`` and ``rtmr_logs`` (:func:`events_json`). ``warnings`` (e.g. a truncated
    kernel) is added only when there are some, so a normal result keeps the reference's
    exact shape."""
    out: dict[str, object] = dict(details.measurements.to_dict())
    if events:
        out["acpi_source"] = details.acpi_tables.source
        out["rtmr_logs"] = events_json(details)
    if details.warnings:
        out["warnings"] = list(details.warnings)
    return out


def measurement_text(details: MeasurementDetails, events: bool = False) -> str:
    """The reference's "Machine measurements:" block; with ``events`` every labelled event."""
    m = details.measurements
    out = [
        "Machine measurements:",
        f"MRTD: {m.mrtd.hex()}",
        f"RTMR0: {m.rtmr0.hex()}",
        f"RTMR1: {m.rtmr1.hex()}",
        f"RTMR2: {m.rtmr2.hex()}",
    ]
    if events:
        out.append(f"ACPI tables from: {details.acpi_tables.source}")
        for log in details.rtmr_logs:
            out.append(f"\nRTMR{log.rtmr} events ({len(log.events)}):")
            out += [f"  [{e.index:>2}] {e.label:<22} {e.digest.hex()}" for e in log.events]
    return "\n".join(out)
