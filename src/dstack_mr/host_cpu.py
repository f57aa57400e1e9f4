"""Host CPUs as SMBIOS Type 4 sees them: CPUID leaf 1 words, the known TDX hosts, FMSPC lookup.

With ``-cpu host`` QEMU copies the host's CPUID leaf 1 (EAX: family/model/stepping, EDX:
features) into the SMBIOS Type 4 processor ID, so the SMBIOS event's digest depends on the
host CPU. A quote's FMSPC names the family and model but not the stepping.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from .errors import ConfigError

__all__ = [
    "DEFAULT_HOST_CPU",
    "KNOWN_TDX_HOST_CPUS",
    "TDX_QEMU_8_2_EDX",
    "HostCpu",
    "cpuid_signature",
    "describe_cpus",
    "find_host_cpu",
    "host_cpu_for",
    "host_cpus_for_fmspc",
]


def cpuid_signature(family: int, model: int, stepping: int) -> int:
    """CPUID leaf 1 EAX for an Intel family/model/stepping (SDM vol. 2A, CPUID EAX=01h)."""
    base_family = min(family, 0xF)
    ext_family = family - 0xF if family >= 0xF else 0
    return (
        (ext_family << 20)
        | ((model >> 4) << 16)
        | (base_family << 8)
        | ((model & 0xF) << 4)
        | (stepping & 0xF)
    )


#: CPUID leaf 1 EDX as TDX QEMU 8.2.2 stores it (the guest view TDX's CPUID virtualisation
#: gives ``-cpu host``); with the EAX below it reproduces real dstack CVMs (SMBIOS.md).
TDX_QEMU_8_2_EDX = 0x2FABFBFF


@attrs.frozen
class HostCpu:
    """A host CPU as SMBIOS Type 4 sees it: CPUID leaf 1 EAX (signature) and EDX (features)."""

    name: str
    eax: int
    edx: int = TDX_QEMU_8_2_EDX

    @property
    def family(self) -> int:
        base = (self.eax >> 8) & 0xF
        return base + ((self.eax >> 20) & 0xFF) if base == 0xF else base

    @property
    def model(self) -> int:
        return ((self.eax >> 12) & 0xF0) | ((self.eax >> 4) & 0xF)

    @property
    def stepping(self) -> int:
        return self.eax & 0xF

    def __str__(self) -> str:
        return f"{self.name} (CPUID.1 EAX={self.eax:#010x} EDX={self.edx:#010x})"


def _host(name: str, model: int, stepping: int) -> HostCpu:
    return HostCpu(f"{name} stepping {stepping}", cpuid_signature(6, model, stepping))


#: Intel server CPUs that run TDX hosts, by stepping (family 6). The quote's PCK certificate
#: (FMSPC) gives family and model but not stepping, so a search tries every stepping.
KNOWN_TDX_HOST_CPUS: tuple[HostCpu, ...] = (
    *(_host("Emerald Rapids", 0xCF, s) for s in (2, 1)),
    *(_host("Sapphire Rapids", 0x8F, s) for s in (8, 7, 6, 5, 4, 3)),
    *(_host("Granite Rapids", 0xAD, s) for s in (1, 0, 2, 3)),
    # FMSPC 20A06F000000 of a real Phala TDX quote (../shared/real/collateral) is this model.
    *(_host("Sierra Forest", 0xAF, s) for s in (3, 2, 1, 0)),
)
#: Emerald Rapids stepping 2: the CPU of the real CVMs that pinned the recipe down.
DEFAULT_HOST_CPU = KNOWN_TDX_HOST_CPUS[0]


def find_host_cpu(name: str) -> HostCpu:
    """A known host CPU by name (``"Emerald Rapids stepping 2"``, case-insensitive), or by
    ``EAX[:EDX]`` in hex (``0xC06F2`` or ``c06f2:2fabfbff``)."""
    wanted = " ".join(name.lower().replace("-", " ").split())
    for cpu in KNOWN_TDX_HOST_CPUS:
        if cpu.name.lower() == wanted:
            return cpu
    eax_text, _, edx_text = name.partition(":")
    try:
        eax = int(eax_text, 16)
        edx = int(edx_text, 16) if edx_text else TDX_QEMU_8_2_EDX
    except ValueError:
        known = ", ".join(c.name for c in KNOWN_TDX_HOST_CPUS)
        raise ConfigError(
            f"unknown host CPU {name!r}: give one of {known}, or CPUID leaf 1 as EAX[:EDX] in hex"
        ) from None
    if not (0 <= eax <= 0xFFFF_FFFF and 0 <= edx <= 0xFFFF_FFFF):
        raise ConfigError(f"host CPU {name!r}: EAX and EDX are 32-bit values")
    return host_cpu_for(eax, edx)


def host_cpu_for(eax: int, edx: int) -> HostCpu:
    """The known host CPU with these CPUID leaf 1 words, else one named by its EAX."""
    for cpu in KNOWN_TDX_HOST_CPUS:
        if (cpu.eax, cpu.edx) == (eax, edx):
            return cpu
    return HostCpu(f"CPUID {eax:#x}", eax, edx)


def host_cpus_for_fmspc(
    fmspc: str, known: Sequence[HostCpu] = KNOWN_TDX_HOST_CPUS
) -> tuple[HostCpu, ...]:
    """The host CPUs a quote's FMSPC (its PCK certificate's platform id, 12 hex digits) allows.

    Its nibbles 2-5 are CPUID leaf 1 EAX bits 19-4 (extended model, family, model), e.g.
    ``B0C06F000000`` for Emerald Rapids; the stepping is not in it. Known CPUs of that family
    and model, else every stepping of it.
    """
    text = fmspc.strip()
    try:
        if len(text) != 12:
            raise ValueError
        signature = int(text[2:6], 16)
    except ValueError:
        raise ConfigError(f"FMSPC must be 12 hex digits, got {fmspc!r}") from None
    matches = tuple(c for c in known if (c.eax >> 4) & 0xFFFF == signature)
    if matches:
        return matches
    return tuple(
        HostCpu(f"CPUID {(signature << 4) | s:#x}", (signature << 4) | s) for s in range(16)
    )


def describe_cpus(cpus: Sequence[HostCpu]) -> str:
    """``Emerald Rapids steppings 2, 1; Sapphire Rapids stepping 8`` for a list of CPUs."""
    groups: dict[str, list[str]] = {}
    for cpu in cpus:
        family, sep, stepping = cpu.name.rpartition(" stepping ")
        if sep:
            groups.setdefault(family, []).append(stepping)
        else:
            groups.setdefault(cpu.name, [])
    return "; ".join(
        f"{name} stepping{'s' if len(st) > 1 else ''} {', '.join(st)}" if st else name
        for name, st in groups.items()
    )
