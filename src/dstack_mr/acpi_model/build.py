"""acpi_build (hw/i386/acpi-build.c): the tables blob, in QEMU's order, padded to 128 KiB."""

from __future__ import annotations

from ..errors import ConfigError
from . import tables as t
from .config import MAX_CPUS, MachineConfig
from .dsdt import Flavour, above_4g_mem_start, below_4g_mem_size, build_dsdt
from .topology import build_topology

#: ACPI_BUILD_TABLE_SIZE: QEMU pads the tables blob to this size (legacy sizing off)
TABLES_SIZE = 0x20000


def check(cfg: MachineConfig) -> None:
    if not 1 <= cfg.cpu_count <= MAX_CPUS - 1:
        raise ConfigError(
            f"cpu_count {cfg.cpu_count} is outside what the ACPI model covers (1-{MAX_CPUS - 1}:"
            " xAPIC ids; larger machines need x2APIC structures it does not write)"
        )
    if cfg.memory_mb < 1:
        raise ConfigError(f"memory {cfg.memory_mb} MiB is not a machine QEMU starts")
    if cfg.pci_hole64_size is not None and not 0 <= cfg.pci_hole64_size < 1 << 64:
        raise ConfigError(f"pci_hole64_size {cfg.pci_hole64_size:#x} is not a u64")


def build_tables(cfg: MachineConfig, flavour: Flavour) -> bytes:
    check(cfg)
    topo = build_topology(cfg)
    blob = bytearray(t.build_facs())
    facs = 0
    dsdt = len(blob)
    blob += build_dsdt(cfg, topo, flavour)
    offsets = [len(blob)]
    blob += t.build_fadt(facs=facs, dsdt=dsdt, smm=cfg.smm, cpu_count=cfg.cpu_count)
    offsets.append(len(blob))
    blob += t.build_madt(
        cpu_count=cfg.cpu_count,
        rev=flavour.madt_rev,
        pcat_compat=cfg.pic if flavour.madt_pcat_from_pic else True,
        all_edge_overrides=flavour.madt_all_edge_overrides,
    )
    if cfg.numa:
        offsets.append(len(blob))
        blob += t.build_srat(
            cpu_count=cfg.cpu_count,
            memory_size=cfg.memory_size,
            below_4g=below_4g_mem_size(cfg),
            above_4g_start=above_4g_mem_start(cfg, flavour),
        )
    offsets.append(len(blob))
    blob += t.build_mcfg()
    offsets.append(len(blob))
    blob += t.build_waet()
    blob += t.build_rsdt(offsets)
    if len(blob) > TABLES_SIZE:
        raise ConfigError(
            f"the ACPI tables of this machine take {len(blob)} bytes, more than QEMU's "
            f"{TABLES_SIZE}-byte table area"
        )
    return bytes(blob.ljust(TABLES_SIZE, b"\0"))
