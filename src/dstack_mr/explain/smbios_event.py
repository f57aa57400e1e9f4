"""RTMR0's SMBIOS handoff-tables event: the QEMU SMBIOS inputs whose tables reproduce it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ..config import format_memory_size
from ..errors import DstackMrError
from ..smbios_search import SmbiosSearch, search
from .context import ExplainContext
from .finding import Finding
from .proof import replays_to

if TYPE_CHECKING:
    from ..diagnose import EventCheck


def smbios_event_finding(ctx: ExplainContext, ev: EventCheck) -> Finding:
    """A differing SMBIOS event: the inputs that reproduce it, else a side note."""
    assert ev.actual is not None
    found = smbios_search(ctx, ev.actual)
    if found is not None and found.match is not None:
        finding = smbios_found(ctx, found)
        if replays_to(ctx, 0, ev.label)(ev.actual):
            finding = attrs.evolve(
                finding,
                message=finding.message + "; with it the expected RTMR0 equals the actual",
            )
        return finding
    return Finding(
        "smbios",
        "smbios: the SMBIOS handoff-tables event (EV_EFI_HANDOFF_TABLES) differs and no "
        "modelled SMBIOS table reproduces it; its digest follows QEMU's SMBIOS tables "
        "(memory size, host CPU, -smbios strings, QEMU machine type), and the expected "
        "value is the constant of one 2 GiB configuration — this is not a sign of another "
        "OVMF build",
        register="RTMR0",
        tried=(found.describe(),) if found is not None else (),
        settle="the host's CPU (CPUID leaf 1), its VMM's -smbios type=1 strings and QEMU "
        "version (dstack-mr measure --smbios-computed --host-cpu ...)",
        lead=False,
    )


def smbios_search(
    ctx: ExplainContext, actual: bytes | Callable[[bytes], bool]
) -> SmbiosSearch | None:
    """The SMBIOS inputs behind ``actual``, at the memory size the TD HOB proved (if it
    did) or the config's; None when the model cannot take this VM's inputs."""
    memory = ctx.proven_memory_size()
    try:
        return search(actual, memory, ctx.expected.options.version)
    except DstackMrError:
        return None


def smbios_found(ctx: ExplainContext, found: SmbiosSearch) -> Finding:
    """The proven finding for the SMBIOS inputs ``found`` matched, with how they differ from
    the config's."""
    match = found.match
    assert match is not None
    differs = []
    if match.memory_size != ctx.vm.memory_size:
        differs.append(
            f"memory {format_memory_size(match.memory_size)}, config says "
            f"{format_memory_size(ctx.vm.memory_size)}"
        )
    if match.qemu_version != ctx.expected.options.version:
        differs.append(
            f"QEMU {'.'.join(map(str, match.qemu_version))}, config resolves "
            f"{ctx.expected.options.version_str}"
        )
    return Finding(
        "smbios",
        f"smbios: the SMBIOS handoff-tables event is the SMBIOS table of {match.describe()}: "
        "recomputing QEMU's tables with these inputs reproduces the VM's digest (the "
        "expected value was the reference's constant, right for 2 GiB on QEMU 8.2.2 only)"
        + "".join(f"; {d}" for d in differs),
        "proven",
        "smbios",
        match.describe(),
        "RTMR0",
    )
