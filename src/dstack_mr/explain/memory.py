"""The memory size: its candidates, the search over them, and the TD HOB event it decides."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import events
from ..config import format_memory_size
from ..event_identity import actual_identity, handoff_table_address
from ..reproduce import MEMORY_TRIED, first_reproducing, memory_candidates
from ..tdvf import SectionType
from .context import ExplainContext
from .finding import Finding

if TYPE_CHECKING:
    from ..diagnose import EventCheck


def candidates(ctx: ExplainContext) -> list[tuple[str, int]]:
    """The memory sizes to try: the config's and the evidence's first (reproduce.py)."""
    ev_vm = ctx.evidence.vm_config
    claimed = None if ev_vm is None else ev_vm.memory_size
    return memory_candidates(ctx.vm.memory_size, claimed)


def memory_finding(
    ctx: ExplainContext,
    register: str,
    label: str,
    candidates: list[tuple[str, int]],
    digest_for: Callable[[int], bytes],
    reproduces: Callable[[bytes], bool],
    why: str,
    *,
    otherwise: str | None,
    settle: str | None = None,
) -> Finding | None:
    """The first memory size whose ``digest_for`` reproduces, as a proven finding; else the
    hypothesis ``otherwise`` (None: no finding)."""
    said = format_memory_size(ctx.vm.memory_size)
    found = first_reproducing(candidates, digest_for, reproduces)
    if found is not None:
        return Finding(
            label,
            f"{label}: the VM ran with memory_size={found[0]} (config says {said}{why})",
            "proven",
            "memory_size",
            found[0],
            register,
        )
    if otherwise is None:
        return None
    return Finding(label, otherwise, register=register, tried=(MEMORY_TRIED,), settle=settle)


def td_hob_search(
    ctx: ExplainContext, register: str, reproduces: Callable[[bytes], bool]
) -> Finding | None:
    """The memory size whose TD HOB reproduces, proven; None when none does."""
    return memory_finding(
        ctx, register, events.TD_HOB, candidates(ctx), ctx.image.tdvf.td_hob_digest,
        reproduces, "", otherwise=None,
    )  # fmt: skip


def td_hob_event_finding(ctx: ExplainContext, ev: EventCheck, register: str) -> Finding | None:
    """A differing TD HOB event: the memory size that reproduces it, else why none does."""
    return memory_finding(
        ctx, register, events.TD_HOB, candidates(ctx), ctx.image.tdvf.td_hob_digest,
        lambda d: d == ev.actual, "", otherwise=td_hob_miss(ctx),
        settle=f"the VM's firmware (compare its TDVF metadata with {ctx.fw}) and its "
        "real memory size",
    )  # fmt: skip


def td_hob_miss(ctx: ExplainContext) -> str:
    """Why no memory size reproduced the TD HOB, using where the VM's log says its TD HOB
    is (the handoff table's address: not covered by the digest, but telling)."""
    fw = ctx.fw
    base = (
        f"td_hob: no memory size reproduces it; the TD HOB depends only on the memory size "
        f"and the TDVF section layout of {fw}"
    )
    ours = next(
        (s.memory_address for s in ctx.image.tdvf.sections if s.section_type == SectionType.TD_HOB),
        None,
    )
    logged = None
    for e in ctx.evidence.events or ():
        if e.imr == 0 and actual_identity(e).kind == "td-hob":
            logged = handoff_table_address(e)
            break
    if logged is not None and ours is not None and logged != ours:
        return (
            f"{base}; the VM's log places its TD HOB at {logged:#x}, {fw} at "
            f"{ours:#x}, so the VM's firmware has another TDVF section layout"
        )
    if logged is not None and logged == ours:
        return (
            f"{base}; the VM's log places its TD HOB at {logged:#x}, as {fw} does, so "
            "most likely the VM's memory size is one not tried (not a multiple of 256 MiB) "
            "or its firmware's other TDVF sections differ"
        )
    return (
        f"{base}, so the VM's firmware most likely has another section layout (or its "
        "memory size is not a multiple of 256 MiB)"
    )
