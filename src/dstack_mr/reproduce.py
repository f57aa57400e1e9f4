"""One-input searches: the values a diagnosis tries, and the first that reproduces a digest.

A cause is proven only when recomputing with one changed input reproduces the actual digest
(:mod:`dstack_mr.explain` words the findings). These are the candidates for the memory size
(the TD HOB, the kernel's initrd placement) and the kernel command line; the ACPI and SMBIOS
searches live beside their models (:mod:`dstack_mr.acpi_model.search`,
:mod:`dstack_mr.smbios_search`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from . import kernel as kernel_mod
from .config import format_memory_size
from .errors import DstackMrError

__all__ = [
    "MEMORY_LIMIT",
    "MEMORY_STEP",
    "MEMORY_TRIED",
    "cmdline_variants",
    "first_reproducing",
    "kernel_memory_candidates",
    "memory_candidates",
]

GIB = 1 << 30
#: The memory-size search: every 256 MiB step up to 2 TiB (so every whole GiB too).
MEMORY_STEP = 256 << 20
MEMORY_LIMIT = 2 << 40
#: How a finding names what the memory-size search tried.
MEMORY_TRIED = "memory_size 256M to 2T in 256 MiB steps"

_T = TypeVar("_T")


def memory_candidates(
    configured: int, claimed: int | None = None, limit: int = MEMORY_LIMIT
) -> list[tuple[str, int]]:
    """Memory sizes to try, each with its QEMU ``-m`` spelling: the size the VM's own
    configuration claims (if it gives one), then every :data:`MEMORY_STEP` up to ``limit``;
    never the ``configured`` size, never one twice."""
    sizes: list[int] = []
    if claimed:
        sizes.append(claimed)
    sizes += range(MEMORY_STEP, limit + 1, MEMORY_STEP)
    seen: set[int] = set()
    out = []
    for s in sizes:
        if s not in seen and s != configured:
            seen.add(s)
            out.append((format_memory_size(s), s))
    return out


def kernel_memory_candidates(candidates: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """The sizes that can change the patched kernel's digest: it varies with memory only
    below 0xB0000000 (where QEMU places the initrd); 3G stands for every size above."""
    out = [c for c in candidates if c[1] < kernel_mod.STABLE_MIN_MEMORY]
    out.append(("3G", 3 * GIB))
    return out


def cmdline_variants(base: str) -> list[tuple[str, str]]:
    """Spellings of an image's kernel command line a VM plausibly measured instead, named."""
    return [
        ("cmdline without ' initrd=initrd'", base),
        ("cmdline + ' initrd=initrd '", base + " initrd=initrd "),
        ("cmdline + ' ' + ' initrd=initrd'", base + "  initrd=initrd"),
        ("cmdline.strip() + ' initrd=initrd'", base.strip() + " initrd=initrd"),
        ("cmdline.rstrip()", base.rstrip()),
        ("cmdline + ' '", base + " "),
        ("'initrd=initrd ' + cmdline", "initrd=initrd " + base),
    ]


def first_reproducing(
    candidates: Iterable[tuple[str, _T]],
    digest_for: Callable[[_T], bytes],
    reproduces: Callable[[bytes], bool],
) -> tuple[str, _T] | None:
    """The first ``(name, value)`` whose recomputed digest ``reproduces`` accepts. A value
    the recomputation refuses (a DstackMrError: e.g. a size the firmware cannot hold) is
    skipped, not fatal."""
    for name, value in candidates:
        try:
            if reproduces(digest_for(value)):
                return name, value
        except DstackMrError:
            continue
    return None
