"""RTMR2's events: the kernel command line (the spellings tried) and the initrd."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import events
from ..machine import checked_cmdline_digest
from ..reproduce import cmdline_variants, first_reproducing
from .context import ExplainContext
from .finding import Finding
from .proof import register_proof, replays_to

if TYPE_CHECKING:
    from ..diagnose import EventCheck


def cmdline_finding(
    ctx: ExplainContext,
    register: str,
    reproduces: Callable[[bytes], bool],
    ev: EventCheck | None,
    variants: list[tuple[str, str]] | None = None,
) -> Finding | None:
    """The spelling of the command line (of ``variants``, by default this image's
    :func:`cmdline_variants`) that reproduces, proven; without one, for a log event ``ev``,
    that the command line differs (None without a log)."""
    if variants is None:
        variants = cmdline_variants(ctx.image.info.cmdline)
    found = first_reproducing(variants, checked_cmdline_digest, reproduces)
    if found is not None:
        name, text = found
        return Finding(
            "cmdline",
            f"cmdline: the VM measured {name}: {text!r}",
            "proven",
            "kernel_cmdline",
            text,
            register,
        )
    if ev is None:
        return None
    return Finding(
        "cmdline",
        f"cmdline: the VM's kernel command line is not this image's "
        f"{ctx.image.files.cmdline!r}: its digest differs (no spelling of it tried "
        "reproduces the VM's)",
        "proven",
        register=register,
        tried=(f"{len(variants)} spellings of the command line",),
        settle="the VM's kernel command line (/proc/cmdline inside the VM)",
        lead=False,
    )


def initrd_event_finding(ctx: ExplainContext, register: str) -> Finding:
    """A differing initrd event: the file is another (its digest is its SHA-384)."""
    return Finding(
        "initrd",
        f"initrd: the VM's initrd is not {ctx.initrd} ({ctx.image.initrd_size} "
        "bytes): its SHA-384 differs",
        "proven",
        register=register,
        lead=False,
    )


def rtmr2_finding(ctx: ExplainContext) -> Finding:
    """A differing RTMR2 without a log: the command line spelling that reproduces it."""
    variants = cmdline_variants(ctx.image.info.cmdline)
    found = cmdline_finding(ctx, "RTMR2", replays_to(ctx, 2, events.CMDLINE), None, variants)
    if found is not None and found.proven:
        return register_proof(2, events.CMDLINE, found, [events.CMDLINE, events.INITRD])
    return Finding(
        "rtmr2",
        "rtmr2: RTMR2 differs; without the event log it cannot be told whether the "
        f"kernel command line or the initrd ({ctx.initrd}) differs",
        register="RTMR2",
        tried=(f"{len(variants)} spellings of the command line",),
        settle="the VM's event log (its RTMR2 events are the command line and the initrd)",
    )
