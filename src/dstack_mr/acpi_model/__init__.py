"""QEMU's ACPI tables computed in Python: an :class:`~dstack_mr.acpi.AcpiSource` without QEMU.

The package mirrors QEMU's own structure: :mod:`.aml` (hw/acpi/aml-build.c), :mod:`.tables`
(the fixed-layout tables), :mod:`.dsdt` (build_dsdt and its helpers in hw/i386/acpi-build.c,
hw/acpi/cpu.c, hw/isa/lpc_ich9.c), :mod:`.topology` (how QEMU lays out the PCI devices of the
command line) and :mod:`.build` (acpi_build). The input is the dumper invocation itself, read
by :mod:`.config`, so the model answers for exactly what the dumper would have been asked.

Which QEMU build is modelled is a :class:`~dstack_mr.acpi_model.dsdt.Flavour`. Covered:

- ``dstack`` (default): dstack's patched QEMU (kvinwang/qemu-tdx, dstack-qemu-9.2.1) as
  the dumper runs it, for ``QEMU_ACPI_COMPAT_VER`` 8.0.0 up to (not including) 10.0.0.
  Below 9.2 it reproduces the loader, RSDP and tables digests of real CVMs
  (``ground-truth.json``); from 9.2 the RTMR0 the reference published for a 9.2.1 machine.
- ``stock-7.2``: Debian's QEMU 7.2 (the development oracle, byte-exact on the recorded
  configurations under ``tests/data/acpi``).
- ``dstack-9.2.1`` / ``dstack-9.2.1-compat-pre-9.2``: the two branches by name.

Anything else is refused with a :class:`~dstack_mr.errors.ConfigError`, never approximated.
"""

from __future__ import annotations

import attrs

from ..acpi import AcpiDumper, AcpiSource, DumperInvocation
from ..errors import ConfigError, DumperNotFoundError
from .build import TABLES_SIZE, build_tables
from .config import MachineConfig, from_argv, parse_compat
from .dsdt import Flavour

__all__ = [
    "FLAVOURS",
    "TABLES_SIZE",
    "MachineConfig",
    "QemuAcpiModel",
    "auto_source",
    "build_tables",
    "covers",
    "from_argv",
    "tables_for",
]

STOCK_7_2 = Flavour("stock-7.2")
#: dstack's QEMU (kvinwang/qemu-tdx, dstack-qemu-9.2.1) emulating QEMU < 9.2
DSTACK_PRE_9_2 = Flavour(
    "dstack-9.2.1-compat-pre-9.2",
    dumper_hole64=True,
    madt_rev=3,
    madt_pcat_from_pic=True,
    madt_all_edge_overrides=True,
    link_irq_edge=True,
    qemu9=True,
    pdsm_compat_9_1=True,
)

#: dstack's QEMU at QEMU_ACPI_COMPAT_VER >= 9.2: QEMU 9.2's own level-triggered PCI
#: interrupts and MADT overrides, and 9.2's PDSM function 7
DSTACK_9_2 = Flavour(
    "dstack-9.2.1",
    dumper_hole64=True,
    madt_rev=3,
    madt_pcat_from_pic=True,
    qemu9=True,
)

FLAVOURS: dict[str, Flavour] = {f.name: f for f in (STOCK_7_2, DSTACK_PRE_9_2, DSTACK_9_2)}


#: QEMU_ACPI_COMPAT_VER range for which "dstack" is covered. The fork's one switch
#: (acpi_dump_compat_9_1) selects the same code for every version below 9.2: that code
#: reproduces the real CVMs' loader, RSDP and tables digests (ground-truth.json, 8.2.2). At
#: 9.2 and later it takes QEMU 9.2's own branch, which reproduces the RTMR0 the reference
#: (dstack-mr with the real dumper) published for a 9.2.1 GPU machine. Later dumper builds
#: change the CPU hotplug and serial AML from 10.0 on, so 10.0 and later are refused.
COVERED_COMPAT = ((8, 0, 0), (10, 0, 0))
COMPAT_9_2 = (9, 2, 0)


def flavour_for(qemu: str, compat: tuple[int, int, int] | None) -> Flavour:
    if qemu != "dstack":
        found = FLAVOURS.get(qemu)
        if found is None:
            raise ConfigError(
                f"the ACPI model does not cover QEMU build {qemu!r} "
                f"(covered: dstack, {', '.join(sorted(FLAVOURS))})"
            )
        return found
    if compat is None:
        raise ConfigError(
            "QEMU_ACPI_COMPAT_VER is not set: the built-in ACPI model needs the QEMU version "
            "dstack's dumper would emulate"
        )
    low, high = COVERED_COMPAT
    if low <= compat < COMPAT_9_2:
        return DSTACK_PRE_9_2
    if COMPAT_9_2 <= compat < high:
        return DSTACK_9_2
    raise ConfigError(
        "the built-in ACPI model covers dstack's QEMU for versions {}.{}.{} to below "
        "{}.{}.{}, not QEMU_ACPI_COMPAT_VER={}.{}.{}: newer dumper builds change the tables "
        "from 10.0 on and no measurement proves them yet; use the dumper "
        "(dstack-acpi-tables) or --acpi-tables FILE".format(*low, *high, *compat)
    )


def covers(qemu_version: str) -> bool:
    """Whether ``QemuAcpiModel()`` reproduces dstack's dumper for this QEMU version."""
    try:
        compat = parse_compat(qemu_version)
    except ConfigError:
        return False
    return compat is not None and COVERED_COMPAT[0] <= compat < COVERED_COMPAT[1]


def tables_for(invocation: DumperInvocation, qemu: str = "dstack") -> bytes:
    """The 128 KiB ``etc/acpi/tables`` blob QEMU ``qemu`` builds for this invocation."""
    cfg = from_argv(invocation.argv, invocation.compat_ver)
    return build_tables(cfg, flavour_for(qemu, cfg.compat_version))


@attrs.frozen
class QemuAcpiModel:
    """An :class:`~dstack_mr.acpi.AcpiSource` computing the tables instead of running QEMU.

    ``qemu`` names the QEMU build to reproduce: ``"dstack"`` (dstack's patched QEMU, the
    version taken from ``QEMU_ACPI_COMPAT_VER``) or a name in :data:`FLAVOURS`.
    """

    qemu: str = "dstack"

    @property
    def source_name(self) -> str:
        return "builtin" if self.qemu == "dstack" else f"builtin ({self.qemu})"

    def acpi_tables(self, invocation: DumperInvocation) -> bytes:
        return tables_for(invocation, self.qemu)


def auto_source(dumper: AcpiDumper | None = None) -> AcpiSource:
    """The dumper when it is installed, else the built-in model (which refuses the QEMU
    versions it does not cover, naming the dumper as the way out)."""
    dumper = dumper if dumper is not None else AcpiDumper()
    try:
        dumper.resolve()
    except DumperNotFoundError:
        return QemuAcpiModel()
    return dumper
