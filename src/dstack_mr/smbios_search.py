"""The search for the SMBIOS inputs (QEMU version, memory, host CPU, strings) behind a digest.

Each candidate is a recomputation of the SMBIOS event with :mod:`dstack_mr.smbios`, so a
match is a proven fact about those inputs; no match says exactly what was tried.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence

import attrs

from .digest import sha384
from .host_cpu import KNOWN_TDX_HOST_CPUS, HostCpu, describe_cpus
from .smbios import (
    DSTACK_MANUFACTURER,
    DSTACK_PRODUCT,
    GIB,
    SmbiosInputs,
    build_event,
    format_size,
    parse_qemu_version,
    structures,
)

__all__ = [
    "KNOWN_DSTACK_QEMU_VERSIONS",
    "KNOWN_SMBIOS_STRINGS",
    "MAX_NEARBY_SIZES",
    "SmbiosSearch",
    "digests_by_cpu",
    "nearby_memory_sizes",
    "search",
]

#: ``-smbios type=1`` strings a dstack host plausibly passes: dstack's VMM default, and none.
KNOWN_SMBIOS_STRINGS: tuple[tuple[str | None, str | None], ...] = (
    (DSTACK_MANUFACTURER, DSTACK_PRODUCT),
    (None, None),
)
#: Nearby memory sizes are tried in whole GiB up to twice the configured size, at most this many.
MAX_NEARBY_SIZES = 256


def nearby_memory_sizes(memory_size: int) -> list[int]:
    """Whole-GiB sizes from 1 GiB to twice ``memory_size`` (capped), closest first."""
    top = min(max(2 * memory_size // GIB, 4), MAX_NEARBY_SIZES)
    sizes = [k * GIB for k in range(1, top + 1) if k * GIB != memory_size]
    return sorted(sizes, key=lambda s: (abs(s - memory_size), s))


#: QEMU versions dstack hosts have run: the configured version is tried first, these next.
KNOWN_DSTACK_QEMU_VERSIONS: tuple[tuple[int, int, int], ...] = ((8, 2, 2), (9, 1, 0), (9, 2, 1))


def _describe_strings(pair: tuple[str | None, str | None]) -> str:
    manufacturer, product = pair
    return "none (QEMU defaults)" if pair == (None, None) else f"{manufacturer}/{product}"


@attrs.frozen
class SmbiosSearch:
    """The outcome of :func:`search`: the inputs that reproduce the digest, or what was tried."""

    #: The event digest found (or sought); None for a failed search by predicate.
    actual: bytes | None = attrs.field(repr=lambda d: d.hex()[:16] + "…" if d else "None")
    match: SmbiosInputs | None
    qemu_versions: tuple[tuple[int, int, int], ...]
    memory_sizes: tuple[int, ...]
    host_cpus: tuple[HostCpu, ...] = attrs.field(repr=False)
    strings: tuple[tuple[str | None, str | None], ...] = attrs.field(repr=False)
    tried: int

    @property
    def found(self) -> bool:
        return self.match is not None

    def describe(self) -> str:
        if self.match is not None:
            return f"SMBIOS event reproduced (proven) by {self.match.describe()}"
        sizes = ", ".join(format_size(m) for m in self.memory_sizes[:6])
        if len(self.memory_sizes) > 6:
            sizes += f" and {len(self.memory_sizes) - 6} more whole-GiB sizes"
        versions = ", ".join(".".join(map(str, v)) for v in self.qemu_versions)
        target = f"{self.actual.hex()[:16]}…" if self.actual else "the actual value"
        return (
            f"no SMBIOS table reproduces {target}: tried {self.tried} "
            f"combinations of QEMU {versions}; memory {sizes}; host CPUs "
            f"{describe_cpus(self.host_cpus)} (EDX as TDX QEMU 8.2.2 stores it); "
            f"SMBIOS strings {'; '.join(map(_describe_strings, self.strings))}"
        )


def digests_by_cpu(inputs: SmbiosInputs, host_cpus: Sequence[HostCpu]) -> Iterator[bytes]:
    """``event_digest`` of ``inputs`` with each host CPU's CPUID words, built once: the
    processor ID (Type 4 bytes 8-15) is the only place they appear and no filter touches it."""
    measured = bytearray(build_event(inputs).measured)
    type4 = next(s for s in structures(bytes(measured)) if s.kind == 4)
    for cpu in host_cpus:
        struct.pack_into("<II", measured, type4.offset + 8, cpu.eax, cpu.edx)
        yield sha384(measured)


def search(
    actual: bytes | Callable[[bytes], bool],
    memory_size: int,
    qemu_version: str | tuple[int, int, int],
    *,
    host_cpus: Sequence[HostCpu] = KNOWN_TDX_HOST_CPUS,
    strings: Sequence[tuple[str | None, str | None]] = KNOWN_SMBIOS_STRINGS,
    other_qemu_versions: bool = True,
    nearby_memory: bool = True,
) -> SmbiosSearch:
    """Find the SMBIOS inputs whose event digest is ``actual`` (or satisfies it, when it is a
    predicate: e.g. "the register replays to the quote's value with this digest").

    Tried in order, each with every host CPU and string pair: the configured memory and QEMU
    version; the configured memory with :data:`KNOWN_DSTACK_QEMU_VERSIONS` (if
    ``other_qemu_versions``); the configured version with :func:`nearby_memory_sizes` (if
    ``nearby_memory``). A match is a recomputation that reproduces the digest, so it is a
    proven fact about those inputs.
    """
    reproduces = actual if callable(actual) else actual.__eq__
    version = parse_qemu_version(qemu_version)
    versions = [version] + (
        [v for v in KNOWN_DSTACK_QEMU_VERSIONS if v != version] if other_qemu_versions else []
    )
    nearby = nearby_memory_sizes(memory_size) if nearby_memory else []
    plan = [(v, memory_size) for v in versions] + [(version, m) for m in nearby]
    tried = 0
    for v, size in plan:
        for manufacturer, product in strings:
            base = SmbiosInputs(v, size, manufacturer, product)
            for cpu, digest in zip(host_cpus, digests_by_cpu(base, host_cpus), strict=True):
                tried += 1
                if reproduces(digest):
                    inputs = attrs.evolve(base, cpuid_eax=cpu.eax, cpuid_edx=cpu.edx)
                    return SmbiosSearch(
                        digest,
                        inputs,
                        tuple(versions),
                        (memory_size, *nearby),
                        tuple(host_cpus),
                        tuple(strings),
                        tried,
                    )
    return SmbiosSearch(
        None if callable(actual) else actual,
        None,
        tuple(versions),
        (memory_size, *nearby),
        tuple(host_cpus),
        tuple(strings),
        tried,
    )
