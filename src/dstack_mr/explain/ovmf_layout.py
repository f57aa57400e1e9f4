"""RTMR0's event sequence: whether the VM's OVMF measured the other layout (variant)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import OvmfVariant
from ..digest import replay
from ..event_identity import actual_identity, expected_identity
from ..events import RTMR0_LAYOUTS
from ..machine import rtmr0_digests
from .context import ExplainContext
from .finding import Finding

if TYPE_CHECKING:
    from ..diagnose import EventCheck


def other_variant(variant: OvmfVariant) -> OvmfVariant:
    """The OVMF layout that is not ``variant``."""
    if variant is OvmfVariant.PRE202505:
        return OvmfVariant.STABLE202505
    return OvmfVariant.PRE202505


def expected_source(ctx: ExplainContext) -> str:
    """Where the config's OVMF variant came from, as the findings name it."""
    from ..image import ovmf_variant_with_source

    return ovmf_variant_with_source(ctx.vm, ctx.image.info)[1]


def layout_finding(ctx: ExplainContext, mine: Sequence[EventCheck]) -> Finding:
    """A finding about the RTMR0 event sequence when events are missing or extra; proven
    when the VM's log is the other OVMF layout, event kind by event kind."""
    ours = ctx.expected.ovmf_variant
    other = other_variant(ours)
    n_ours, n_other = len(RTMR0_LAYOUTS[ours]), len(RTMR0_LAYOUTS[other])
    actual = [e for e in (ctx.evidence.events or ()) if e.imr == 0]
    kinds = [actual_identity(e).kind for e in actual]
    want = [expected_identity(0, s.label).kind for s in RTMR0_LAYOUTS[other]]
    source = expected_source(ctx)
    if kinds == want:
        return Finding(
            "ovmf_variant",
            f"ovmf_variant: the VM's OVMF measured the {other.value} layout ({n_other} "
            f"RTMR0 events, identified by type and payload); the config resolved "
            f"{ours.value} ({n_ours} events, from {source})",
            "proven",
            "ovmf_variant",
            other.value,
            "RTMR0",
        )
    extra = [e.actual_identity or e.label for e in mine if e.status == "extra"]
    missing = [e.identity for e in mine if e.status == "missing"]
    parts = []
    if extra:
        parts.append(f"the VM measured {len(extra)} event(s) not expected: {', '.join(extra)}")
    if missing:
        parts.append(f"{len(missing)} expected event(s) are absent: {', '.join(missing)}")
    return Finding(
        "ovmf_variant",
        f"RTMR0 layout: {'; '.join(parts)}; the log has {len(actual)} events, the "
        f"{ours.value} layout {n_ours} and {other.value} {n_other}: the VM's firmware "
        "measures another event sequence",
        register="RTMR0",
        settle=f"the VM's firmware (compare it with {ctx.fw})",
    )


def layout_register_finding(ctx: ExplainContext, td_hob: bytes) -> Finding | None:
    """Without a log: RTMR0 recomputed with the other layout (same TD HOB and ACPI digests)
    reproducing the actual value, proven; None when it does not."""
    reg = ctx.registers["rtmr0"]
    ours = ctx.expected.ovmf_variant
    other = other_variant(ours)
    alt = rtmr0_digests(other, td_hob, ctx.expected.acpi_tables)
    if replay(alt) != reg.actual:
        return None
    return Finding(
        "ovmf_variant",
        f"ovmf_variant: the VM's OVMF measured the {other.value} layout (config "
        f"resolved {ours.value}, from {expected_source(ctx)}): RTMR0 recomputed "
        "with it reproduces the actual value, which proves every event of that "
        "layout equal",
        "proven",
        "ovmf_variant",
        other.value,
        "RTMR0",
        proves_equal=tuple(s.label for s in RTMR0_LAYOUTS[other]),
    )
