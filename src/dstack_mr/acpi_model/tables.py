"""Fixed-layout tables: header, FACS, FADT, MADT, MCFG, WAET, RSDT, SRAT.

Each builder mirrors the QEMU function named in its docstring. QEMU leaves every checksum
byte 0 and writes pointer fields as offsets into the blob; the firmware's table loader patches
both, so the blob itself holds exactly these bytes.
"""

from __future__ import annotations

OEM_ID = b"BOCHS "  # ACPI_BUILD_APPNAME6
OEM_TABLE_ID = b"BXPC    "  # ACPI_BUILD_APPNAME8
CREATOR_ID = b"BXPC"

APIC_DEFAULT_ADDRESS = 0xFEE00000
IO_APIC_DEFAULT_ADDRESS = 0xFEC00000
PM_IO_BASE = 0x600  # the dumper's (and OVMF's) ICH9 PMBASE
SCI_INT = 9
ACPI_PORT_SMI_CMD = 0xB2
ICH9_APM_ACPI_ENABLE, ICH9_APM_ACPI_DISABLE = 0x02, 0x03
GPE0_OFFSET, GPE0_LEN = 0x20, 16
RTC_CENTURY = 0x32
ICH9_RST_CNT_IOPORT = 0xCF9
MCFG_BASE, MCFG_SIZE = 0xE0000000, 0x10000000  # PCIEXBAR as OVMF programs it
#: IRQs routed to PCI on q35 (ACPI_BUILD_PCI_IRQS): level-triggered overrides in the MADT
PCI_IRQ_MASK = (1 << 5) | (1 << 9) | (1 << 10) | (1 << 11)


def le(value: int, size: int) -> bytes:
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def header(sig: bytes, length: int, rev: int) -> bytes:
    """acpi_table_begin/acpi_table_end: the 36-byte header, checksum left 0 for the loader."""
    return (
        sig + le(length, 4) + bytes([rev, 0]) + OEM_ID + OEM_TABLE_ID + le(1, 4)
        + CREATOR_ID + le(1, 4)
    )  # fmt: skip


def table(sig: bytes, rev: int, body: bytes) -> bytes:
    return header(sig, 36 + len(body), rev) + body


def build_facs() -> bytes:
    """build_facs (acpi-build.c): 64 bytes, all zero but signature and length."""
    return b"FACS" + le(64, 4) + bytes(56)


def gas(space: int, bit_width: int, address: int, bit_offset: int = 0, access: int = 0) -> bytes:
    return bytes([space, bit_width, bit_offset, access]) + le(address, 8)


def build_fadt(*, facs: int, dsdt: int, smm: bool, cpu_count: int) -> bytes:
    """build_fadt (aml-build.c) with init_common_fadt_data + acpi_get_pm_info (ICH9), rev 3."""
    io = PM_IO_BASE
    flags = (
        1 << 0  # WBINVD
        | 1 << 2  # PROC_C1
        | 1 << 5  # SLP_BUTTON
        | 1 << 7  # RTC_S4
        | 1 << 10  # RESET_REG_SUP
        | 1 << 15  # USE_PLATFORM_CLOCK
        | ((1 << 18) if cpu_count > 8 else 0)  # FORCE_APIC_CLUSTER_MODEL
    )
    gpe0 = io + GPE0_OFFSET
    body = b"".join(
        [
            le(facs, 4),  # FIRMWARE_CTRL (patched by the loader)
            le(dsdt, 4),  # DSDT
            bytes([1, 0]),  # INT_MODEL: multiple APIC; Preferred_PM_Profile
            le(SCI_INT, 2),
            le(ACPI_PORT_SMI_CMD if smm else 0, 4),
            bytes([ICH9_APM_ACPI_ENABLE if smm else 0, ICH9_APM_ACPI_DISABLE if smm else 0]),
            bytes([0, 0]),  # S4BIOS_REQ, PSTATE_CNT
            le(io, 4), le(0, 4), le(io + 4, 4), le(0, 4), le(0, 4),  # PM1a/b EVT, CNT, PM2
            le(io + 8, 4), le(gpe0, 4), le(0, 4),  # PM_TMR, GPE0, GPE1
            bytes([4, 2, 0, 4, GPE0_LEN, 0, 0, 0]),  # lengths, GPE1_BASE, CST_CNT
            le(0xFFF, 2), le(0xFFF, 2),  # P_LVL2/3_LAT: C2/C3 unsupported
            le(0, 2), le(0, 2), bytes([0, 0, 0, 0, RTC_CENTURY]),
            le(0x0002, 2),  # IAPC_BOOT_ARCH: 8042 present
            b"\x00",
            le(flags, 4),
            gas(1, 8, ICH9_RST_CNT_IOPORT), b"\x0f",  # RESET_REG, RESET_VALUE
            bytes(3),
            le(0, 8),  # X_FIRMWARE_CTRL
            le(dsdt, 8),  # X_DSDT
            gas(1, 32, io), gas(0, 0, 0), gas(1, 16, io + 4), gas(0, 0, 0), gas(0, 0, 0),
            gas(1, 32, io + 8), gas(1, GPE0_LEN * 8, gpe0), gas(0, 0, 0),
        ]
    )  # fmt: skip
    return table(b"FACP", 3, body)


def madt_cpu_entry(uid: int, apic_id: int, enabled: bool = True) -> bytes:
    """pc_madt_cpu_entry: a Processor Local APIC structure (xAPIC ids only)."""
    return bytes([0, 8, uid, apic_id]) + le(1 if enabled else 0, 4)


def _xrupt_override(src: int, gsi: int, flags: int) -> bytes:
    return bytes([2, 10, 0, src]) + le(gsi, 4) + le(flags, 2)


def build_madt(*, cpu_count: int, rev: int, pcat_compat: bool, all_edge_overrides: bool) -> bytes:
    """acpi_build_madt (acpi-common.c).

    ``all_edge_overrides``: the dstack fork before 9.2 writes 16 edge-triggered overrides
    (0->2, then 1..15 identity); stock QEMU writes 0->2 plus level overrides for PCI IRQs.
    """
    body = bytearray(le(APIC_DEFAULT_ADDRESS, 4) + le(1 if pcat_compat else 0, 4))
    for i in range(cpu_count):
        body += madt_cpu_entry(i, i)
    body += bytes([1, 12, 0, 0]) + le(IO_APIC_DEFAULT_ADDRESS, 4) + le(0, 4)
    if all_edge_overrides:
        body += _xrupt_override(0, 2, 0x5)
        for i in range(1, 16):
            body += _xrupt_override(i, i, 0x5)
    else:
        body += _xrupt_override(0, 2, 0)
        for i in range(1, 16):
            if PCI_IRQ_MASK & (1 << i):
                body += _xrupt_override(i, i, 0xD)
    body += bytes([4, 6, 0xFF, 0, 0, 1])  # Local APIC NMI, all processors, LINT1
    return table(b"APIC", rev, bytes(body))


def build_mcfg() -> bytes:
    """build_mcfg (hw/acpi/pci.c): one segment, buses 0..255 at PCIEXBAR."""
    last_bus = (MCFG_SIZE - 1) >> 20
    body = bytes(8) + le(MCFG_BASE, 8) + le(0, 2) + bytes([0, last_bus & 0xFF]) + bytes(4)
    return table(b"MCFG", 1, body)


def build_waet() -> bytes:
    """build_waet: the "ACPI PM timer good" flag."""
    return table(b"WAET", 1, le(1 << 1, 4))


def build_rsdt(offsets: list[int]) -> bytes:
    """build_rsdt (aml-build.c): one 32-bit entry per table, holding its blob offset."""
    return table(b"RSDT", 1, b"".join(le(o, 4) for o in offsets))


HOLE_640K_START, HOLE_640K_END = 640 * 1024, 1024 * 1024


def _srat_memory(base: int, length: int, node: int, flags: int) -> bytes:
    return (
        bytes([1, 40]) + le(node, 4) + bytes(2) + le(base, 8) + le(length, 8) + bytes(4)
        + le(flags, 4) + bytes(8)
    )  # fmt: skip


def build_srat(*, cpu_count: int, memory_size: int, below_4g: int, above_4g_start: int) -> bytes:
    """build_srat (acpi-build.c) for one NUMA node holding every CPU and all RAM."""
    body = bytearray(le(1, 4) + bytes(8))
    for i in range(cpu_count):
        body += bytes([0, 16, 0, i]) + le(1, 4) + bytes([0]) + bytes(3) + bytes(4)
    mem_start = len(body)
    enabled = 1
    base, length = 0, memory_size
    nxt = base + length
    done = False
    if base <= HOLE_640K_START < nxt:
        length -= nxt - HOLE_640K_START
        if length > 0:
            body += _srat_memory(base, length, 0, enabled)
        if nxt <= HOLE_640K_END:
            done = True
        base, length = HOLE_640K_END, nxt - HOLE_640K_END
    if not done:
        if base <= below_4g < nxt:
            length -= nxt - below_4g
            if length > 0:
                body += _srat_memory(base, length, 0, enabled)
            base = above_4g_start
            length = nxt - below_4g
        if length > 0:
            body += _srat_memory(base, length, 0, enabled)
    slots = (len(body) - mem_start) // 40
    while slots < 1 + 2:
        body += _srat_memory(0, 0, 0, 0)
        slots += 1
    return table(b"SRAT", 1, bytes(body))
