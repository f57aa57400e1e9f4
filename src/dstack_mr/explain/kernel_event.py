"""RTMR1's kernel event: the memory size QEMU placed the initrd by, or another kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import events
from ..errors import DstackMrError
from ..event_identity import actual_identity, kernel_image_length
from ..reproduce import MEMORY_TRIED, kernel_memory_candidates
from .context import ExplainContext
from .finding import Finding
from .memory import candidates, memory_finding
from .proof import register_proof, replays_to

if TYPE_CHECKING:
    from ..diagnose import EventCheck


def kernel_memory(
    ctx: ExplainContext, reproduces: Callable[[bytes], bool], register: str
) -> Finding | None:
    """The memory size whose patched kernel reproduces, proven; None when none does."""
    return memory_finding(
        ctx,
        register,
        events.KERNEL_AUTHENTICODE,
        kernel_memory_candidates(candidates(ctx)),
        ctx.image.kernel_digest,
        reproduces,
        "; QEMU places the initrd by memory size",
        otherwise=None,
    )


def kernel_event_finding(ctx: ExplainContext, ev: EventCheck, register: str) -> Finding:
    """A differing kernel event: the memory size that reproduces it, else what the log's
    recorded image length says."""
    found = kernel_memory(ctx, lambda d: d == ev.actual, register)
    if found is not None:
        return found
    size = len(ctx.image.kernel)
    length = logged_kernel_length(ctx)
    tried = (f"{MEMORY_TRIED} below 2.75G (initrd placement)",)
    if length is not None and length != size:
        message = (
            f"kernel_authenticode: the VM booted another kernel: its log records a "
            f"{length}-byte image, {ctx.kernel} is {size} bytes (the recorded length is "
            "not covered by the digest)"
        )
    elif length is not None:
        message = (
            f"kernel_authenticode: no memory size reproduces it; the VM's kernel has the "
            f"size of {ctx.kernel} ({size} bytes), so the initrd size most likely differs "
            f"(QEMU writes it into the kernel's header; {ctx.initrd} is "
            f"{ctx.image.initrd_size} bytes) or the kernel was rebuilt"
        )
    else:
        message = (
            f"kernel_authenticode: no memory size reproduces it: the VM booted another "
            f"kernel than {ctx.kernel}, or an initrd of another size than {ctx.initrd} "
            f"({ctx.image.initrd_size} bytes; QEMU writes the size into the kernel's header)"
        )
    return Finding(
        events.KERNEL_AUTHENTICODE,
        message,
        register=register,
        tried=tried,
        settle=f"the VM's kernel and initrd files (compare with {ctx.kernel}, {ctx.initrd})",
    )


def logged_kernel_length(ctx: ExplainContext) -> int | None:
    """The kernel image length the VM's log records (not covered by the digest)."""
    for e in ctx.evidence.events or ():
        if e.imr == 1 and actual_identity(e).kind == "kernel":
            try:
                return kernel_image_length(e)
            except DstackMrError:
                return None
    return None


def rtmr1_finding(ctx: ExplainContext) -> Finding:
    """A differing RTMR1 without a log: the memory size that reproduces the register."""
    labels = [e.label for e in ctx.expected.rtmr_logs[1].events]
    found = kernel_memory(ctx, replays_to(ctx, 1, events.KERNEL_AUTHENTICODE), "RTMR1")
    if found is not None:
        return register_proof(1, events.KERNEL_AUTHENTICODE, found, labels)
    return Finding(
        "rtmr1",
        "rtmr1: RTMR1 differs and no memory size reproduces it; its only event that "
        f"depends on the image is the kernel's, so most likely the VM booted another "
        f"kernel than {ctx.kernel}, or an initrd of another size than {ctx.initrd} "
        f"({ctx.image.initrd_size} bytes; QEMU writes the size into the kernel's header)",
        register="RTMR1",
        tried=(f"{MEMORY_TRIED} below 2.75G (initrd placement)",),
        settle="the VM's event log (its kernel event records the image length)",
    )
