"""The firmware: MRTD (its pages and their add order) and RTMR0's per-build constant events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .context import ExplainContext
from .finding import Finding

if TYPE_CHECKING:
    from ..diagnose import EventCheck


def mrtd_finding(ctx: ExplainContext) -> Finding | None:
    """A differing MRTD: the other page-add order, else other firmware."""
    reg = ctx.registers["mrtd"]
    if reg.status != "mismatch":
        return None
    opts = ctx.expected.options
    other = not opts.two_pass_add_pages
    said = "two-pass" if opts.two_pass_add_pages else "single-pass"
    if ctx.image.mrtd(other) == reg.actual:
        found = "two-pass" if other else "single-pass"
        return Finding(
            "mrtd",
            f"mrtd: the VM's QEMU added pages {found} (config gives {said}: QEMU "
            f"{opts.version_str}, qemu_single_pass_add_pages="
            f"{_opt(ctx.vm.qemu_single_pass_add_pages)}, passed unchanged as "
            "two_pass_add_pages like the dstack verifier)",
            "proven",
            "two_pass_add_pages",
            str(other).lower(),
            "MRTD",
        )
    return Finding(
        "mrtd",
        f"mrtd: neither page-add order of {ctx.fw} reproduces the actual MRTD; MRTD "
        f"depends only on the firmware and that order, so the VM most likely booted "
        f"other firmware than {ctx.fw}",
        register="MRTD",
        tried=("single-pass page add", "two-pass page add"),
        settle=f"the VM's firmware file (compare it with {ctx.fw})",
    )


def constant_event_finding(ctx: ExplainContext, ev: EventCheck, register: str) -> Finding:
    """A differing event that every dstack OVMF of the layout measures the same."""
    return Finding(
        ev.label,
        f"{ev.label}: {ev.identity} differs from the constant every dstack OVMF of the "
        f"{ctx.expected.ovmf_variant.value} layout measures: the VM's firmware is another "
        "build",
        register=register,
        settle=f"the VM's firmware (compare it with {ctx.fw})",
    )


def _opt(value: object) -> str:
    return "unset" if value is None else str(value).lower()
