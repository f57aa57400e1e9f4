"""QEMU's ACPI tables computed in Python: an :class:`~dstack_mr.acpi.AcpiSource` without QEMU.

The package mirrors QEMU's own structure: :mod:`.aml` (hw/acpi/aml-build.c), :mod:`.tables`
(the fixed-layout tables), :mod:`.dsdt` (build_dsdt and its helpers in hw/i386/acpi-build.c,
hw/acpi/cpu.c, hw/isa/lpc_ich9.c), :mod:`.topology` (how QEMU lays out the PCI devices of the
command line) and :mod:`.build` (acpi_build). The input is the dumper invocation itself, read
by :mod:`.config`, so the model answers for exactly what the dumper would have been asked.

Which QEMU build is modelled is a :class:`~dstack_mr.acpi_model.dsdt.Flavour`. Covered:

- ``stock-7.2``: Debian's QEMU 7.2 (the development oracle, byte-exact on the recorded
  configurations under ``tests/data/acpi``).

Anything else is refused with a :class:`~dstack_mr.errors.ConfigError`, never approximated.
"""

from __future__ import annotations

import attrs

from ..acpi import DumperInvocation
from ..errors import ConfigError
from .build import TABLES_SIZE, build_tables
from .config import MachineConfig, from_argv
from .dsdt import Flavour

__all__ = [
    "FLAVOURS",
    "TABLES_SIZE",
    "MachineConfig",
    "QemuAcpiModel",
    "build_tables",
    "from_argv",
    "tables_for",
]

STOCK_7_2 = Flavour("stock-7.2")

FLAVOURS: dict[str, Flavour] = {STOCK_7_2.name: STOCK_7_2}


def flavour_for(qemu: str, compat: tuple[int, int, int] | None) -> Flavour:
    if qemu != "dstack":
        found = FLAVOURS.get(qemu)
        if found is None:
            raise ConfigError(
                f"the ACPI model does not cover QEMU build {qemu!r} "
                f"(covered: dstack, {', '.join(sorted(FLAVOURS))})"
            )
        return found
    version = "unset" if compat is None else "{}.{}.{}".format(*compat)
    raise ConfigError(
        f"the built-in ACPI model does not reproduce dstack's QEMU for QEMU_ACPI_COMPAT_VER="
        f"{version} yet; use the dumper (dstack-acpi-tables) or --acpi-tables FILE"
    )


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

    def acpi_tables(self, invocation: DumperInvocation) -> bytes:
        return tables_for(invocation, self.qemu)
