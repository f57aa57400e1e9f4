"""The DSDT of a q35 machine: QEMU's ``build_dsdt`` (hw/i386/acpi-build.c) and its helpers.

Function names follow QEMU's; :class:`Flavour` carries the few switches by which the QEMU
builds the model covers differ (see ``docs/acpi-model.md``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs

from . import aml
from .aml import Aml, append
from .config import MachineConfig
from .tables import (
    GPE0_LEN,
    GPE0_OFFSET,
    MCFG_BASE,
    MCFG_SIZE,
    PM_IO_BASE,
    madt_cpu_entry,
    table,
)
from .topology import Bus, Topology

ICH9_CPU_HOTPLUG_IO_BASE = 0x0CD8
ACPI_CPU_HOTPLUG_REG_LEN = 12
ACPI_PCIHP_ADDR_ICH9 = 0x0CC0
ACPI_PCIHP_SIZE = 0x18
ACPI_PCIHP_SEJ_BASE = 0x8
ACPI_PCIHP_BNMR_BASE = 0x10
FW_CFG_IO_BASE = 0x510
FW_CFG_IO_SIZE = 12  # control + data rounded to 4, plus the 8-byte DMA address register
HOLE64_BASE = 0x380000000000  # where the dumper (and the oracle) place the 64-bit window
PCI_HOLE_END = 0xFEC00000  # IO_APIC_DEFAULT_ADDRESS


@attrs.frozen
class Flavour:
    """How one QEMU build's ACPI code differs from stock QEMU 7.2."""

    name: str
    #: pci_hole64 as the fork's DUMP_ACPI_TABLES fixes it ([base, base + size]) instead of
    #: QEMU's q35 rounding over the programmed BARs
    dumper_hole64: bool = False
    madt_rev: int = 1
    madt_pcat_from_pic: bool = False
    madt_all_edge_overrides: bool = False
    link_irq_edge: bool = False
    #: pc_memory_init moves RAM above 4 GiB to 1 TiB for AMD vCPUs (qemu64 is one) when the
    #: highest guest address would reach the HyperTransport hole
    amd_1tb_hole: bool = True
    #: QEMU >= 8 layout (dstack's fork is 9.2.1): PCI0 without _ADR but with EDSM, the
    #: device walk split from the hotplug slots (build_append_pcihp_slots), bridges
    #: described by their own AML, PCNT built by build_append_notfication_callback
    qemu9: bool = False
    #: the fork's QEMU_ACPI_COMPAT_VER < 9.2 branch of aml_pci_pdsm (acpi_dump_compat_9_1)
    pdsm_compat_9_1: bool = False


def pci_holes(cfg: MachineConfig, flavour: Flavour) -> tuple[int, int, int, int]:
    """(hole lo, hole hi, hole64 lo, hole64 hi) inclusive, hole64 hi < lo when empty."""
    below_4g = below_4g_mem_size(cfg)
    size = cfg.pci_hole64_size if cfg.pci_hole64_size is not None else 1 << 35
    if flavour.dumper_hole64:  # range_set_bounds1(hole64, base, base + size)
        lo, hi_excl = HOLE64_BASE, HOLE64_BASE + size
    else:
        # q35_host_get_pci_hole64_{start,end}: the programmed BAR (virtio's 16 KiB) or the
        # window rounded up to 1 GiB, whichever ends later
        lo = HOLE64_BASE
        hi_excl = max(lo + 0x4000, (lo + size + (1 << 30) - 1) & ~((1 << 30) - 1))
    return below_4g, PCI_HOLE_END - 1, lo, hi_excl - 1


def below_4g_mem_size(cfg: MachineConfig) -> int:
    """q35's RAM below 4 GiB: all of it under 2.75 GiB, else 2 GiB (pc_q35_init)."""
    ram = cfg.memory_size
    return ram if ram < 0xB0000000 else 0x80000000


AMD_HT_START = 0xFD00000000
AMD_ABOVE_1TB_START = 0x10000000000


def above_4g_mem_start(cfg: MachineConfig, flavour: Flavour) -> int:
    """x86ms->above_4g_mem_start (pc_memory_init, pc_max_used_gpa, pc_pci_hole64_start)."""
    if not flavour.amd_1tb_hole:
        return 1 << 32
    above = cfg.memory_size - below_4g_mem_size(cfg)
    hole64_start = ((1 << 32) + above + (1 << 30) - 1) & ~((1 << 30) - 1)
    size = cfg.pci_hole64_size if cfg.pci_hole64_size is not None else 1 << 35
    if hole64_start + size - 1 >= AMD_HT_START:
        return AMD_ABOVE_1TB_START
    return 1 << 32


# --- helpers that do not depend on the machine (built once) -------------------------------


@functools.cache
def build_dbg_aml() -> bytes:
    scope = aml.scope("\\")
    append(scope, aml.operation_region("DBG", aml.SYSTEM_IO, aml.int_(0x0402), 0x01))
    field = aml.field("DBG", aml.BYTE_ACC, aml.NOLOCK, aml.PRESERVE)
    append(field, aml.named_field("DBGB", 8))
    append(scope, field)
    buf, length, idx = aml.local(0), aml.local(1), aml.local(2)
    method = aml.method("DBUG", 1)
    append(method, aml.to_hexstring(aml.arg(0), buf))
    append(method, aml.to_buffer(buf, buf))
    append(method, aml.subtract(aml.sizeof(buf), aml.int_(1), length))
    append(method, aml.store(aml.int_(0), idx))
    loop = aml.while_(aml.lless(idx, length))
    append(loop, aml.store(aml.derefof(aml.index(buf, idx)), aml.name("DBGB")))
    append(loop, aml.increment(idx))
    append(method, loop)
    append(method, aml.store(aml.int_(0x0A), aml.name("DBGB")))
    append(scope, method)
    return aml.encode(scope)


def build_q35_osc_method(enable_native_pcie_hotplug: bool) -> Aml:
    cdw1, ctrl = aml.name("CDW1"), aml.local(0)
    method = aml.method("_OSC", 4)
    append(method, aml.create_dword_field(aml.arg(3), aml.int_(0), "CDW1"))
    if_ctx = aml.if_(aml.equal(aml.arg(0), aml.touuid("33DB4D5B-1FF7-401C-9657-7441C03DD766")))
    append(if_ctx, aml.create_dword_field(aml.arg(3), aml.int_(4), "CDW2"))
    append(if_ctx, aml.create_dword_field(aml.arg(3), aml.int_(8), "CDW3"))
    append(if_ctx, aml.store(aml.name("CDW3"), ctrl))
    # native PME, AER, SHPC always; native PCIe hotplug only without ACPI PCI hotplug
    mask = 0x1E | (0x1 if enable_native_pcie_hotplug else 0)
    append(if_ctx, aml.and_(ctrl, aml.int_(mask), ctrl))
    if2 = aml.if_(aml.lnot(aml.equal(aml.arg(1), aml.int_(1))))
    append(if2, aml.or_(cdw1, aml.int_(0x08), cdw1))
    append(if_ctx, if2)
    if2 = aml.if_(aml.lnot(aml.equal(aml.name("CDW3"), ctrl)))
    append(if2, aml.or_(cdw1, aml.int_(0x10), cdw1))
    append(if_ctx, if2)
    append(if_ctx, aml.store(ctrl, aml.name("CDW3")))
    append(method, if_ctx)
    else_ctx = aml.else_()
    append(else_ctx, aml.or_(cdw1, aml.int_(4), cdw1))
    append(method, else_ctx)
    append(method, aml.return_(aml.arg(3)))
    return method


def build_q35_dram_controller() -> Aml:
    dev = aml.device("DRAC")
    append(dev, aml.name_decl("_HID", aml.string("PNP0C01")))
    crs = aml.resource_template()
    append(
        crs,
        aml.dword_memory(
            aml.POS_DECODE, aml.MIN_FIXED, aml.MAX_FIXED, aml.NON_CACHEABLE, aml.READ_WRITE,
            0, MCFG_BASE, MCFG_BASE + MCFG_SIZE - 1, 0, MCFG_SIZE,
        ),
    )  # fmt: skip
    append(dev, aml.name_decl("_CRS", crs))
    return dev


def _dsm_func0_common(ctx: Aml, ret: Aml) -> None:
    """build_append_pci_dsm_func0_common (QEMU >= 8)."""
    append(ctx, aml.store(aml.buffer(b"\x00"), ret))
    if1 = aml.if_(aml.lnot(aml.equal(aml.arg(0), aml.touuid(PCI_DSM_UUID))))
    append(if1, aml.return_(ret))
    append(ctx, if1)
    if1 = aml.if_(aml.lless(aml.arg(1), aml.int_(2)))
    append(if1, aml.return_(ret))
    append(ctx, if1)


PCI_DSM_UUID = "E5C937D0-3553-4D7A-9117-EA4D19C3434D"


def aml_pci_edsm() -> Aml:
    """EDSM (QEMU >= 8): _DSM helper for devices with a static acpi-index."""
    zero, func, ret, aidx, params = aml.int_(0), aml.arg(2), aml.local(0), aml.local(1), aml.arg(4)
    method = aml.method("EDSM", 5, serialized=True)
    ifctx = aml.if_(aml.equal(func, zero))
    _dsm_func0_common(ifctx, ret)
    append(ifctx, aml.store(aml.int_(1 | 1 << 7), aml.index(ret, zero)))
    append(ifctx, aml.return_(ret))
    append(method, ifctx)
    ifctx = aml.if_(aml.equal(func, aml.int_(7)))
    pkg = aml.package(2)
    append(pkg, zero, aml.string(""))
    append(ifctx, aml.store(pkg, ret))
    append(ifctx, aml.store(aml.derefof(aml.index(params, aml.int_(0))), aidx))
    append(ifctx, aml.store(aidx, aml.index(ret, zero)))
    append(ifctx, aml.return_(ret))
    append(method, ifctx)
    return method


def aml_pci_pdsm_qemu9(compat_9_1: bool) -> Aml:
    """PDSM of dstack's 9.2.1 fork: function 0 via the common helper; function 7 as QEMU 9.2
    writes it, or (QEMU_ACPI_COMPAT_VER < 9.2) the older pre-filled package."""
    ret, caps, acpi_index = aml.local(0), aml.local(1), aml.local(2)
    zero, one, not_supp = aml.int_(0), aml.int_(1), aml.int_(0xFFFFFFFF)
    func, params = aml.arg(2), aml.arg(4)

    def aidx() -> Aml:
        bnum = aml.derefof(aml.index(params, aml.int_(0)))
        sunum = aml.derefof(aml.index(params, aml.int_(1)))
        return aml.call("AIDX", bnum, sunum)

    method = aml.method("PDSM", 5, serialized=True)
    ifctx = aml.if_(aml.equal(func, zero))
    _dsm_func0_common(ifctx, ret)
    append(ifctx, aml.store(zero, caps))
    append(ifctx, aml.store(aidx(), acpi_index))
    if1 = aml.if_(aml.lnot(aml.or_(aml.equal(acpi_index, zero), aml.equal(acpi_index, not_supp))))
    append(if1, aml.or_(caps, one, caps))
    append(if1, aml.or_(caps, aml.shiftleft(one, aml.int_(7)), caps))
    append(ifctx, if1)
    append(ifctx, aml.store(caps, aml.index(ret, zero)))
    append(ifctx, aml.return_(ret))
    append(method, ifctx)

    ifctx = aml.if_(aml.equal(func, aml.int_(7)))
    pkg = aml.package(2)
    if compat_9_1:
        append(pkg, zero, aml.string(""))
        append(ifctx, aml.store(pkg, ret))
        append(ifctx, aml.store(aidx(), acpi_index))
        append(ifctx, aml.store(acpi_index, aml.index(ret, zero)))
        append(ifctx, aml.return_(ret))
    else:
        append(ifctx, aml.store(aidx(), acpi_index))
        append(ifctx, aml.store(pkg, ret))
        if1 = aml.if_(
            aml.lnot(aml.lor(aml.equal(acpi_index, zero), aml.equal(acpi_index, not_supp)))
        )
        append(if1, aml.store(acpi_index, aml.index(ret, zero)))
        append(if1, aml.store(aml.string(""), aml.index(ret, one)))
        append(ifctx, if1)
        append(ifctx, aml.return_(ret))
    append(method, ifctx)
    return method


def aml_pci_pdsm() -> Aml:
    """PDSM as QEMU 7.2 writes it (function 7 package filled only with an acpi-index)."""
    ret, caps, acpi_index = aml.local(0), aml.local(1), aml.local(2)
    zero, one, not_supp = aml.int_(0), aml.int_(1), aml.int_(0xFFFFFFFF)
    func, rev, params = aml.arg(2), aml.arg(1), aml.arg(4)

    def bnum() -> Aml:
        return aml.derefof(aml.index(params, aml.int_(0)))

    def sunum() -> Aml:
        return aml.derefof(aml.index(params, aml.int_(1)))

    method = aml.method("PDSM", 5, serialized=True)
    ifctx = aml.if_(aml.equal(func, zero))
    append(ifctx, aml.store(aml.buffer(b"\x00"), ret))
    append(ifctx, aml.store(zero, caps))
    if1 = aml.if_(aml.lnot(aml.equal(aml.arg(0), aml.touuid(PCI_DSM_UUID))))
    append(if1, aml.return_(ret))
    append(ifctx, if1)
    if1 = aml.if_(aml.lless(rev, aml.int_(2)))
    append(if1, aml.return_(ret))
    append(ifctx, if1)
    append(ifctx, aml.store(aml.call("AIDX", bnum(), sunum()), acpi_index))
    if1 = aml.if_(aml.lnot(aml.or_(aml.equal(acpi_index, zero), aml.equal(acpi_index, not_supp))))
    append(if1, aml.or_(caps, one, caps))
    append(if1, aml.or_(caps, aml.shiftleft(one, aml.int_(7)), caps))
    append(ifctx, if1)
    append(ifctx, aml.store(caps, aml.index(ret, zero)))
    append(ifctx, aml.return_(ret))
    append(method, ifctx)

    ifctx = aml.if_(aml.equal(func, aml.int_(7)))
    append(ifctx, aml.store(aml.call("AIDX", bnum(), sunum()), acpi_index))
    append(ifctx, aml.store(aml.package(2), ret))
    if1 = aml.if_(aml.lnot(aml.lor(aml.equal(acpi_index, zero), aml.equal(acpi_index, not_supp))))
    append(if1, aml.store(acpi_index, aml.index(ret, zero)))
    append(if1, aml.store(aml.string(""), aml.index(ret, one)))
    append(ifctx, if1)
    append(ifctx, aml.return_(ret))
    append(method, ifctx)
    return method


def build_x86_acpi_pci_hotplug(pdsm: Aml) -> Aml:
    base = ACPI_PCIHP_ADDR_ICH9
    scope = aml.scope("_SB.PCI0")
    append(scope, aml.operation_region("PCST", aml.SYSTEM_IO, aml.int_(base), 0x08))
    field = aml.field("PCST", aml.DWORD_ACC, aml.NOLOCK, aml.WRITE_AS_ZEROS)
    append(field, aml.named_field("PCIU", 32), aml.named_field("PCID", 32))
    append(scope, field)
    append(
        scope,
        aml.operation_region("SEJ", aml.SYSTEM_IO, aml.int_(base + ACPI_PCIHP_SEJ_BASE), 0x04),
    )
    field = aml.field("SEJ", aml.DWORD_ACC, aml.NOLOCK, aml.WRITE_AS_ZEROS)
    append(field, aml.named_field("B0EJ", 32))
    append(scope, field)
    append(
        scope,
        aml.operation_region("BNMR", aml.SYSTEM_IO, aml.int_(base + ACPI_PCIHP_BNMR_BASE), 0x08),
    )
    field = aml.field("BNMR", aml.DWORD_ACC, aml.NOLOCK, aml.WRITE_AS_ZEROS)
    append(field, aml.named_field("BNUM", 32), aml.named_field("PIDX", 32))
    append(scope, field)
    append(scope, aml.mutex("BLCK", 0))

    method = aml.method("PCEJ", 2)
    append(method, aml.acquire(aml.name("BLCK"), 0xFFFF))
    append(method, aml.store(aml.arg(0), aml.name("BNUM")))
    append(method, aml.store(aml.shiftleft(aml.int_(1), aml.arg(1)), aml.name("B0EJ")))
    append(method, aml.release(aml.name("BLCK")))
    append(method, aml.return_(aml.int_(0)))
    append(scope, method)

    method = aml.method("AIDX", 2)
    append(method, aml.acquire(aml.name("BLCK"), 0xFFFF))
    append(method, aml.store(aml.arg(0), aml.name("BNUM")))
    append(method, aml.store(aml.shiftleft(aml.int_(1), aml.arg(1)), aml.name("PIDX")))
    append(method, aml.store(aml.name("PIDX"), aml.local(0)))
    append(method, aml.release(aml.name("BLCK")))
    append(method, aml.return_(aml.local(0)))
    append(scope, method)

    append(scope, pdsm)
    return scope


@functools.cache
def _pci_hotplug_bytes(qemu9: bool, compat_9_1: bool) -> bytes:
    pdsm = aml_pci_pdsm_qemu9(compat_9_1) if qemu9 else aml_pci_pdsm()
    return aml.encode(build_x86_acpi_pci_hotplug(pdsm))


def _append_q35_prt_entry(ctx: Aml, nr: int, name: str) -> None:
    base = "A" if name[3] < "E" else "E"
    head = ord(name[3]) - ord(base)
    for i in range(4):
        if head + i > 3:
            head = -i
        pkg = aml.package(4)
        append(pkg, aml.int_((nr << 16) | 0xFFFF), aml.int_(i))
        append(pkg, aml.name(name[:3] + chr(ord(base) + head + i)), aml.int_(0))
        append(ctx, pkg)


def build_q35_routing_table(prefix: str) -> Aml:
    pkg = aml.package(128)
    for i in range(0x18):
        _append_q35_prt_entry(pkg, i, prefix + "EFGH"[i & 3])
    _append_q35_prt_entry(pkg, 0x18, prefix + "E")
    for i in range(0x19, 0x1E):  # INTA -> PIRQA for slots 25-29 (D<N>IR defaults)
        _append_q35_prt_entry(pkg, i, prefix + "A")
    _append_q35_prt_entry(pkg, 0x1E, prefix + "E")  # PCIe->PCI bridge: PIRQ[E-H]
    _append_q35_prt_entry(pkg, 0x1F, prefix + "A")
    return pkg


def build_irq_status_method() -> Aml:
    method = aml.method("IQST", 1)
    if_ctx = aml.if_(aml.and_(aml.int_(0x80), aml.arg(0)))
    append(if_ctx, aml.return_(aml.int_(0x09)))
    append(method, if_ctx)
    append(method, aml.return_(aml.int_(0x0B)))
    return method


def build_iqcr_method(trigger: int) -> Aml:
    method = aml.method("IQCR", 1, serialized=True)
    crs = aml.resource_template()
    append(crs, aml.interrupt(aml.CONSUMER, trigger, aml.ACTIVE_HIGH, aml.SHARED, [0]))
    append(method, aml.name_decl("PRR0", crs))
    append(method, aml.create_dword_field(aml.name("PRR0"), aml.int_(5), "PRRI"))
    append(method, aml.store(aml.and_(aml.arg(0), aml.int_(0xF)), aml.name("PRRI")))
    append(method, aml.return_(aml.name("PRR0")))
    return method


def build_link_dev(name: str, uid: int, reg: str, trigger: int) -> Aml:
    dev = aml.device(name)
    append(dev, aml.name_decl("_HID", aml.eisaid("PNP0C0F")))
    append(dev, aml.name_decl("_UID", aml.int_(uid)))
    crs = aml.resource_template()
    append(crs, aml.interrupt(aml.CONSUMER, trigger, aml.ACTIVE_HIGH, aml.SHARED, [5, 10, 11]))
    append(dev, aml.name_decl("_PRS", crs))
    method = aml.method("_STA", 0)
    append(method, aml.return_(aml.call("IQST", aml.name(reg))))
    append(dev, method)
    method = aml.method("_DIS", 0)
    append(method, aml.or_(aml.name(reg), aml.int_(0x80), aml.name(reg)))
    append(dev, method)
    method = aml.method("_CRS", 0)
    append(method, aml.return_(aml.call("IQCR", aml.name(reg))))
    append(dev, method)
    method = aml.method("_SRS", 1)
    append(method, aml.create_dword_field(aml.arg(0), aml.int_(5), "PRRI"))
    append(method, aml.store(aml.name("PRRI"), aml.name(reg)))
    append(dev, method)
    return dev


def build_gsi_link_dev(name: str, uid: int, gsi: int, trigger: int = aml.LEVEL) -> Aml:
    dev = aml.device(name)
    append(dev, aml.name_decl("_HID", aml.eisaid("PNP0C0F")))
    append(dev, aml.name_decl("_UID", aml.int_(uid)))
    crs = aml.resource_template()
    append(crs, aml.interrupt(aml.CONSUMER, trigger, aml.ACTIVE_HIGH, aml.SHARED, [gsi]))
    append(dev, aml.name_decl("_PRS", crs))
    append(dev, aml.name_decl("_CRS", crs))
    append(dev, aml.method("_DIS", 0))  # the GSI cannot be disabled: no-ops
    append(dev, aml.method("_SRS", 1))
    return dev


@functools.cache
def build_q35_pci0_int(link_trigger: int, gsi_trigger: int) -> bytes:
    out = bytearray()
    out += aml.encode(aml.name_decl("PICF", aml.int_(0)))  # 0: PIC mode, 1: APIC mode
    method = aml.method("_PIC", 1)
    append(method, aml.store(aml.arg(0), aml.name("PICF")))
    out += aml.encode(method)

    sb = aml.scope("_SB")
    pci0 = aml.scope("PCI0")
    append(pci0, aml.name_decl("PRTP", build_q35_routing_table("LNK")))
    append(pci0, aml.name_decl("PRTA", build_q35_routing_table("GSI")))
    method = aml.method("_PRT", 0)
    if_ctx = aml.if_(aml.equal(aml.name("PICF"), aml.int_(0)))
    append(if_ctx, aml.return_(aml.name("PRTP")))
    append(method, if_ctx)
    else_ctx = aml.else_()
    append(else_ctx, aml.return_(aml.name("PRTA")))
    append(method, else_ctx)
    append(pci0, method)
    append(sb, pci0)
    append(sb, build_irq_status_method(), build_iqcr_method(link_trigger))
    for i, letter in enumerate("ABCDEFGH"):
        append(sb, build_link_dev("LNK" + letter, i, "PRQ" + letter, link_trigger))
    for i, letter in enumerate("ABCDEFGH"):
        append(sb, build_gsi_link_dev("GSI" + letter, 0x10 + i, 0x10 + i, gsi_trigger))
    out += aml.encode(sb)
    return bytes(out)


def build_prt(is_pci0_prt: bool) -> Aml:
    """The computed _PRT of expander buses (while loop over 128 pins)."""
    method = aml.method("_PRT", 0)
    res, pin = aml.local(0), aml.local(1)
    append(method, aml.store(aml.package(128), res))
    append(method, aml.store(aml.int_(0), pin))
    loop = aml.while_(aml.lless(pin, aml.int_(128)))
    slot, lnk_idx, route = aml.local(2), aml.local(3), aml.local(4)
    append(loop, aml.store(aml.shiftright(pin, aml.int_(2)), slot))
    append(loop, aml.store(aml.and_(aml.add(pin, slot), aml.int_(3)), lnk_idx))

    def entry(link: str) -> Aml:
        pkg = aml.package(4)
        return append(pkg, aml.int_(0), aml.int_(0), aml.name(link), aml.int_(0))

    def route_if(link: str, idx: int) -> Aml:
        if_ctx = aml.if_(aml.equal(lnk_idx, aml.int_(idx)))
        return append(if_ctx, aml.store(entry(link), route))

    append(loop, route_if("LNKD", 0))
    if is_pci0_prt:
        if1 = aml.if_(aml.equal(lnk_idx, aml.int_(1)))
        if4 = aml.if_(aml.equal(pin, aml.int_(4)))
        append(if4, aml.store(entry("LNKS"), route))
        append(if1, if4)
        else4 = aml.else_()
        append(else4, aml.store(entry("LNKA"), route))
        append(if1, else4)
        append(loop, if1)
    else:
        append(loop, route_if("LNKA", 1))
    append(loop, route_if("LNKB", 2), route_if("LNKC", 3))
    append(
        loop,
        aml.store(
            aml.or_(aml.shiftleft(slot, aml.int_(16)), aml.int_(0xFFFF)),
            aml.index(route, aml.int_(0)),
        ),
    )
    append(loop, aml.store(aml.and_(pin, aml.int_(3)), aml.index(route, aml.int_(1))))
    append(loop, aml.store(route, aml.index(res, pin)))
    append(loop, aml.increment(pin))
    append(method, loop)
    append(method, aml.return_(res))
    return method


# --- CPU hotplug (hw/acpi/cpu.c build_cpus_aml) -------------------------------------------


def build_cpus_aml(cpu_count: int, numa: bool) -> bytes:
    """build_cpus_aml: the PRES register block, \\_SB.CPUS with its methods and one
    Processor object per possible CPU, and the \\_GPE._E02 handler."""
    sb = aml.scope("_SB")
    append(sb, aml.raw(_cpu_ctrl_dev()))
    cpus = aml.device("\\_SB.CPUS")
    append(cpus, aml.name_decl("_HID", aml.string("ACPI0010")))
    append(cpus, aml.name_decl("_CID", aml.eisaid("PNP0A05")))
    method = aml.method("CTFY", 2)
    method.buf += b"".join(_ctfy_entry(i) for i in range(cpu_count))
    append(cpus, method)
    append(cpus, aml.raw(_cpus_fixed_methods()[0]))
    append(cpus, _cscn_method(cpu_count, _pres))
    append(cpus, aml.raw(_cpus_fixed_methods()[1]))
    cpus.buf += b"".join(_processor(i, numa) for i in range(cpu_count))
    append(sb, cpus)
    method = aml.method("\\_GPE._E02", 0)
    append(method, aml.call("\\_SB.CPUS.CSCN"))
    return aml.encode(sb) + aml.encode(method)


CPU_RES = "\\_SB.PCI0.PRES"


def _pres(n: str) -> Aml:
    return aml.name(f"{CPU_RES}.{n}")


@functools.cache
def _cpu_ctrl_dev() -> bytes:
    io_base = ICH9_CPU_HOTPLUG_IO_BASE
    ctrl = aml.device(CPU_RES)
    append(ctrl, aml.name_decl("_HID", aml.eisaid("PNP0A06")))
    append(ctrl, aml.name_decl("_UID", aml.string("CPU Hotplug resources")))
    append(ctrl, aml.mutex("CPLK", 0))
    crs = aml.resource_template()
    append(crs, aml.io(aml.DECODE16, io_base, io_base, 1, ACPI_CPU_HOTPLUG_REG_LEN))
    append(ctrl, aml.name_decl("_CRS", crs))
    append(
        ctrl,
        aml.operation_region("PRST", aml.SYSTEM_IO, aml.int_(io_base), ACPI_CPU_HOTPLUG_REG_LEN),
    )
    field = aml.field("PRST", aml.BYTE_ACC, aml.NOLOCK, aml.WRITE_AS_ZEROS)
    append(field, aml.reserved_field(4 * 8))
    for n in ("CPEN", "CINS", "CRMV", "CEJ0", "CEJF"):
        append(field, aml.named_field(n, 1))
    append(field, aml.reserved_field(3), aml.named_field("CCMD", 8))
    append(ctrl, field)
    field = aml.field("PRST", aml.DWORD_ACC, aml.NOLOCK, aml.PRESERVE)
    append(field, aml.named_field("CSEL", 32), aml.reserved_field(4 * 8))
    append(field, aml.named_field("CDAT", 32))
    append(ctrl, field)
    method = aml.method("_INI", 0, serialized=True)
    append(method, aml.store(aml.int_(0), aml.name("CSEL")))
    append(ctrl, method)
    return aml.encode(ctrl)


@functools.lru_cache(maxsize=1024)
def _ctfy_entry(i: int) -> bytes:
    if_ctx = aml.if_(aml.equal(aml.arg(0), aml.int_(i)))
    append(if_ctx, aml.notify(aml.name(f"C{i:03X}"), aml.arg(1)))
    return aml.encode(if_ctx)


@functools.cache
def _cpus_fixed_methods() -> tuple[bytes, bytes]:
    """(CSTA + CEJ0, COST): the CPUS methods that do not depend on the CPU count."""
    zero, one, r = aml.int_(0), aml.int_(1), _pres
    csta = aml.method("CSTA", 1, serialized=True)
    append(csta, aml.acquire(r("CPLK"), 0xFFFF))
    append(csta, aml.store(aml.arg(0), r("CSEL")))
    append(csta, aml.store(zero, aml.local(0)))
    if_ctx = aml.if_(aml.equal(r("CPEN"), one))
    append(if_ctx, aml.store(aml.int_(0xF), aml.local(0)))
    append(csta, if_ctx)
    append(csta, aml.release(r("CPLK")))
    append(csta, aml.return_(aml.local(0)))
    cej0 = aml.method("CEJ0", 1, serialized=True)
    append(cej0, aml.acquire(r("CPLK"), 0xFFFF))
    append(cej0, aml.store(aml.arg(0), r("CSEL")))
    append(cej0, aml.store(one, r("CEJ0")))
    append(cej0, aml.release(r("CPLK")))
    cost = aml.method("COST", 4, serialized=True)
    append(cost, aml.acquire(r("CPLK"), 0xFFFF))
    append(cost, aml.store(aml.arg(0), r("CSEL")))
    append(cost, aml.store(aml.int_(1), r("CCMD")))
    append(cost, aml.store(aml.arg(1), r("CDAT")))
    append(cost, aml.store(aml.int_(2), r("CCMD")))
    append(cost, aml.store(aml.arg(2), r("CDAT")))
    append(cost, aml.release(r("CPLK")))
    return aml.encode(csta) + aml.encode(cej0), aml.encode(cost)


@functools.lru_cache(maxsize=1024)
def _processor(i: int, numa: bool) -> bytes:
    uid = aml.int_(i)
    dev = aml.processor(i, 0, 0, f"C{i:03X}")
    method = aml.method("_STA", 0, serialized=True)
    append(method, aml.return_(aml.call("CSTA", uid)))
    append(dev, method)
    append(dev, aml.name_decl("_MAT", aml.buffer(madt_cpu_entry(i, i, True))))
    if i != 0:
        method = aml.method("_EJ0", 1)
        append(method, aml.call("CEJ0", uid))
        append(dev, method)
    method = aml.method("_OST", 3, serialized=True)
    append(method, aml.call("COST", uid, aml.arg(0), aml.arg(1), aml.arg(2)))
    append(dev, method)
    if numa:
        append(dev, aml.name_decl("_PXM", aml.int_(0)))
    return aml.encode(dev)


def _cscn_method(cpu_count: int, r: Callable[[str], Aml]) -> Aml:
    zero, one = aml.int_(0), aml.int_(1)
    has_event, num_added, cpu_idx, uid, has_job = (aml.local(n) for n in range(5))
    method = aml.method("CSCN", 0, serialized=True)
    append(method, aml.acquire(r("CPLK"), 0xFFFF))
    append(method, aml.name_decl("CNEW", aml.package(255)))
    append(method, aml.store(zero, uid))
    append(method, aml.store(one, has_job))
    outer = aml.while_(aml.equal(has_job, one))
    append(outer, aml.store(zero, has_job))
    append(outer, aml.store(one, has_event))
    append(outer, aml.store(zero, num_added))
    inner = aml.while_(aml.land(aml.equal(has_event, one), aml.lless(uid, aml.int_(cpu_count))))
    append(inner, aml.store(zero, has_event))
    append(inner, aml.store(uid, r("CSEL")))
    append(inner, aml.store(aml.int_(0), r("CCMD")))  # get next CPU with event
    if_ctx = aml.if_(aml.lless(r("CDAT"), uid))
    append(if_ctx, aml.break_())
    append(inner, if_ctx)
    if_ctx = aml.if_(aml.equal(num_added, aml.int_(255)))
    append(if_ctx, aml.store(one, has_job), aml.break_())
    append(inner, if_ctx)
    append(inner, aml.store(r("CDAT"), uid))
    if_ctx = aml.if_(aml.equal(r("CINS"), one))
    append(if_ctx, aml.store(uid, aml.index(aml.name("CNEW"), num_added)))
    append(if_ctx, aml.increment(num_added))
    append(if_ctx, aml.store(one, has_event))
    append(inner, if_ctx)
    else_ctx = aml.else_()
    if_ctx = aml.if_(aml.equal(r("CRMV"), one))
    append(if_ctx, aml.call("CTFY", uid, aml.int_(3)))
    append(if_ctx, aml.store(one, r("CRMV")))
    append(if_ctx, aml.store(one, has_event))
    append(else_ctx, if_ctx)
    append(inner, else_ctx)
    append(inner, aml.increment(uid))
    append(outer, inner)
    append(outer, aml.store(zero, cpu_idx))
    inner = aml.while_(aml.lless(cpu_idx, num_added))
    append(inner, aml.store(aml.derefof(aml.index(aml.name("CNEW"), cpu_idx)), uid))
    append(inner, aml.call("CTFY", uid, aml.int_(1)))
    append(inner, aml.store(uid, aml.debug()))
    append(inner, aml.store(uid, r("CSEL")))
    append(inner, aml.store(one, r("CINS")))
    append(inner, aml.increment(cpu_idx))
    append(outer, inner)
    append(method, outer)
    append(method, aml.release(r("CPLK")))
    return method


# --- PCI devices ----------------------------------------------------------------------------


def aml_pci_device_dsm() -> Aml:
    method = aml.method("_DSM", 4, serialized=True)
    params = aml.local(0)
    pkg = aml.package(2)
    append(pkg, aml.name("BSEL"), aml.name("ASUN"))
    append(method, aml.store(pkg, params))
    append(
        method,
        aml.return_(aml.call("PDSM", aml.arg(0), aml.arg(1), aml.arg(2), aml.arg(3), params)),
    )
    return method


def aml_pci_device_dsm_qemu9() -> Aml:
    method = aml.method("_DSM", 4, serialized=True)
    params = aml.local(0)
    pkg = aml.package(2)
    append(pkg, aml.int_(0), aml.int_(0))
    append(method, aml.store(pkg, params))
    append(method, aml.store(aml.name("BSEL"), aml.index(params, aml.int_(0))))
    append(method, aml.store(aml.name("ASUN"), aml.index(params, aml.int_(1))))
    append(
        method,
        aml.return_(aml.call("PDSM", aml.arg(0), aml.arg(1), aml.arg(2), aml.arg(3), params)),
    )
    return method


def build_append_pci_bus_devices_qemu9(parent: Aml, bus: Bus) -> None:
    """QEMU >= 8: one Device per present function; bridges add their own AML
    (build_pci_bridge_aml: the secondary bus, then its hotplug slots)."""
    for devfn in sorted(bus.devices):
        pdev = bus.devices[devfn]
        dev = aml.device(f"S{devfn:02X}")
        append(dev, aml.name_decl("_ADR", aml.int_(pdev.slot << 16 | pdev.func)))
        if pdev.driver == "ICH9-LPC":
            build_ich9_isa_aml(dev)
        elif pdev.is_bridge:
            assert pdev.secondary is not None
            build_append_pci_bus_devices_qemu9(dev, pdev.secondary)
            if pdev.secondary.bsel is not None:
                build_append_pcihp_slots(dev, pdev.secondary)
        append(parent, dev)


def build_append_pcihp_slots(parent: Aml, bus: Bus) -> None:
    assert bus.bsel is not None
    append(parent, aml.name_decl("BSEL", aml.int_(bus.bsel)))
    notify = aml.method("DVNT", 2)
    # empty functions and slots above 0 are never hotplug slots on a PCIe bus
    for devfn in sorted({0, *bus.devices}):
        pdev = bus.devices.get(devfn)
        slot = devfn >> 3
        if pdev is not None:
            if not pdev.hotpluggable or pdev.is_bridge:
                continue
            dev = aml.scope(f"S{devfn:02X}")
        else:
            if devfn & 7 or slot > 0:  # PCIe: slot 0 only; functions are not hotplugged
                continue
            dev = aml.device(f"S{devfn:02X}")
            append(dev, aml.name_decl("_ADR", aml.int_(slot << 16)))
        append(dev, aml.name_decl("ASUN", aml.int_(slot)))
        append(dev, aml_pci_device_dsm_qemu9())
        append(dev, aml.name_decl("_SUN", aml.int_(slot)))
        method = aml.method("_EJ0", 1)
        append(method, aml.call("PCEJ", aml.name("BSEL"), aml.name("_SUN")))
        append(dev, method)
        if_ctx = aml.if_(aml.and_(aml.arg(0), aml.int_(1 << slot)))
        append(if_ctx, aml.notify(aml.name(f"S{slot << 3:02X}"), aml.arg(1)))
        append(notify, if_ctx)
        append(parent, dev)
    append(parent, notify)


def build_append_notification_callback(parent: Aml, bus: Bus) -> bool:
    """build_append_notfication_callback: PCNT per bus, calling its children's."""
    nr = 0
    queue = []
    for sec in bus.children:
        br_scope = aml.scope(f"S{sec.parent_devfn:02X}")
        if sec.is_root:
            continue
        nr += build_append_notification_callback(br_scope, sec)
        if nr:  # QEMU tests the running total, not this child's count
            queue.append(sec)
            append(parent, br_scope)
    method = aml.method("PCNT", 0)
    if bus.bsel is not None:
        append(method, aml.store(aml.int_(bus.bsel), aml.name("BNUM")))
        append(method, aml.call("DVNT", aml.name("PCIU"), aml.int_(1)))
        append(method, aml.call("DVNT", aml.name("PCID"), aml.int_(3)))
        nr += 1
    for sec in queue:
        append(method, aml.name(f"^S{sec.parent_devfn:02X}.PCNT"))
    append(parent, method)
    return nr > 0


def build_ich9_isa_aml(dev: Aml) -> None:
    """build_ich9_isa_aml (lpc_ich9.c) and the AML of the ISA devices on its bus."""
    append(dev, aml.raw(_ich9_isa_body()))


@functools.cache
def _ich9_isa_body() -> bytes:
    dev = aml.Aml()
    append(dev, aml.operation_region("PIRQ", aml.PCI_CONFIG, aml.int_(0x60), 0x0C))
    sb = aml.scope("\\_SB")
    field = aml.field("PCI0.SF8.PIRQ", aml.BYTE_ACC, aml.NOLOCK, aml.PRESERVE)
    for n in ("PRQA", "PRQB", "PRQC", "PRQD"):
        append(field, aml.named_field(n, 8))
    append(field, aml.reserved_field(0x20))
    for n in ("PRQE", "PRQF", "PRQG", "PRQH"):
        append(field, aml.named_field(n, 8))
    append(sb, field)
    append(dev, sb)
    # ISA bus children, newest first: i8042, COM1 (isa-serial), RTC
    crs = aml.resource_template()
    append(crs, aml.io(aml.DECODE16, 0x60, 0x60, 1, 1), aml.io(aml.DECODE16, 0x64, 0x64, 1, 1))
    append(crs, aml.irq_no_flags(1))
    kbd = aml.device("KBD")
    append(kbd, aml.name_decl("_HID", aml.eisaid("PNP0303")))
    append(kbd, aml.name_decl("_STA", aml.int_(0xF)), aml.name_decl("_CRS", crs))
    crs = aml.resource_template()
    append(crs, aml.irq_no_flags(12))
    mou = aml.device("MOU")
    append(mou, aml.name_decl("_HID", aml.eisaid("PNP0F13")))
    append(mou, aml.name_decl("_STA", aml.int_(0xF)), aml.name_decl("_CRS", crs))
    append(dev, kbd, mou)
    crs = aml.resource_template()
    append(crs, aml.io(aml.DECODE16, 0x3F8, 0x3F8, 0x00, 0x08), aml.irq_no_flags(4))
    com = aml.device("COM1")
    append(com, aml.name_decl("_HID", aml.eisaid("PNP0501")), aml.name_decl("_UID", aml.int_(1)))
    append(com, aml.name_decl("_STA", aml.int_(0xF)), aml.name_decl("_CRS", crs))
    append(dev, com)
    crs = aml.resource_template()
    append(crs, aml.io(aml.DECODE16, 0x70, 0x70, 0x01, 0x08), aml.irq_no_flags(8))
    rtc = aml.device("RTC")
    append(rtc, aml.name_decl("_HID", aml.eisaid("PNP0B00")), aml.name_decl("_CRS", crs))
    append(dev, rtc)
    return bytes(dev.buf)


def build_append_pci_bus_devices(parent: Aml, bus: Bus, pcihp_bridge_en: bool) -> None:
    """QEMU 7.2's single-pass walk: device descriptions, hotplug slots, DVNT and PCNT."""
    bsel = bus.bsel
    notify = None
    if bsel is not None:
        append(parent, aml.name_decl("BSEL", aml.int_(bsel)))
        notify = aml.method("DVNT", 2)
    for devfn in range(256):
        pdev = bus.devices.get(devfn)
        slot, func = devfn >> 3, devfn & 7
        hotpluggable_slot = False
        bridge_in_acpi = False
        if pdev is not None:
            cold_plugged_bridge = pdev.is_bridge
            bridge_in_acpi = cold_plugged_bridge and pcihp_bridge_en
            hotpluggable_slot = bsel is not None and pdev.hotpluggable and not cold_plugged_bridge
            if func and not bridge_in_acpi and not pdev.has_aml:
                continue
        else:
            if bsel is not None and not func:
                if slot > 0:  # PCIe buses have a single slot
                    break
                hotpluggable_slot = True
            else:
                continue
        dev = aml.device(f"S{devfn:02X}")
        append(dev, aml.name_decl("_ADR", aml.int_(slot << 16 | func)))
        if bsel is not None:
            append(dev, aml.name_decl("ASUN", aml.int_(slot)))
            append(dev, aml_pci_device_dsm())
        if pdev is not None and pdev.driver == "ICH9-LPC":
            build_ich9_isa_aml(dev)
        if bridge_in_acpi:
            assert pdev is not None and pdev.secondary is not None
            build_append_pci_bus_devices(dev, pdev.secondary, pcihp_bridge_en)
        if hotpluggable_slot:
            assert notify is not None
            append(dev, aml.name_decl("_SUN", aml.int_(slot)))
            method = aml.method("_EJ0", 1)
            append(method, aml.call("PCEJ", aml.name("BSEL"), aml.name("_SUN")))
            append(dev, method)
            if_ctx = aml.if_(aml.and_(aml.arg(0), aml.int_(1 << slot)))
            append(if_ctx, aml.notify(aml.name(f"S{slot << 3:02X}"), aml.arg(1)))
            append(notify, if_ctx)
        append(parent, dev)
    if notify is not None:
        append(parent, notify)
    if bsel is not None or pcihp_bridge_en:
        method = aml.method("PCNT", 0)
        if bsel is not None:
            append(method, aml.store(aml.int_(bsel), aml.name("BNUM")))
            append(method, aml.call("DVNT", aml.name("PCIU"), aml.int_(1)))
            append(method, aml.call("DVNT", aml.name("PCID"), aml.int_(3)))
        if pcihp_bridge_en:
            for child in bus.children:
                if child.is_root:
                    continue
                append(method, aml.name(f"^S{child.parent_devfn:02X}.PCNT"))
        append(parent, method)


# --- the table ------------------------------------------------------------------------------


def _free_ranges(used: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """crs_replace_with_free_ranges."""
    out = []
    free_base = start
    for lo, hi in sorted(used):
        if free_base < lo:
            out.append((free_base, lo - 1))
        free_base = hi + 1
    if free_base < end:
        out.append((free_base, end))
    return out


def build_dsdt(cfg: MachineConfig, topo: Topology, flavour: Flavour) -> bytes:
    hotplug = cfg.hotplug
    trigger = aml.EDGE if flavour.link_irq_edge else aml.LEVEL
    dsdt = bytearray(build_dbg_aml())

    sb = aml.scope("_SB")
    pci0 = aml.device("PCI0")
    append(pci0, aml.name_decl("_HID", aml.eisaid("PNP0A08")))
    append(pci0, aml.name_decl("_CID", aml.eisaid("PNP0A03")))
    if not flavour.qemu9:
        append(pci0, aml.name_decl("_ADR", aml.int_(0)))
    append(pci0, aml.name_decl("_UID", aml.int_(0)))
    append(pci0, build_q35_osc_method(not hotplug))
    if flavour.qemu9:
        append(pci0, aml_pci_edsm())
    append(sb, pci0)
    append(sb, build_q35_dram_controller())
    dsdt += aml.encode(sb)
    if hotplug:
        dsdt += _pci_hotplug_bytes(flavour.qemu9, flavour.pdsm_compat_9_1)
    dsdt += build_q35_pci0_int(trigger, trigger if flavour.qemu9 else aml.LEVEL)

    gpe = aml.scope("_GPE")
    append(gpe, aml.name_decl("_HID", aml.string("ACPI0006")))
    dsdt += aml.encode(gpe)
    dsdt += build_cpus_aml(cfg.cpu_count, cfg.numa)

    # expander root buses (pxb-pcie): their own host bridge devices
    root_bus_limit = 0xFF
    for bus in topo.expander_buses():
        root_bus_limit = min(root_bus_limit, bus.number - 1)
        scope = aml.scope("\\_SB")
        dev = aml.device(f"PC{bus.number:02X}")
        append(dev, aml.name_decl("_UID", aml.int_(bus.number)))
        append(dev, aml.name_decl("_BBN", aml.int_(bus.number)))
        append(dev, aml.name_decl("_HID", aml.eisaid("PNP0A08")))
        append(dev, aml.name_decl("_CID", aml.eisaid("PNP0A03")))
        append(dev, build_q35_osc_method(True))
        if cfg.numa:
            append(dev, aml.name_decl("_PXM", aml.int_(0)))
        append(dev, build_prt(False))
        crs = aml.resource_template()  # nothing programmed below an expander: bus range only
        append(
            crs,
            aml.word_bus_number(
                aml.MIN_FIXED, aml.MAX_FIXED, aml.POS_DECODE, 0, bus.number, bus.number, 0, 1
            ),
        )
        append(dev, aml.name_decl("_CRS", crs))
        append(scope, dev)
        dsdt += aml.encode(scope)

    hole_lo, hole_hi, h64_lo, h64_hi = pci_holes(cfg, flavour)
    scope = aml.scope("\\_SB.PCI0")
    crs = aml.resource_template()
    append(
        crs,
        aml.word_bus_number(
            aml.MIN_FIXED, aml.MAX_FIXED, aml.POS_DECODE, 0, 0, root_bus_limit, 0,
            root_bus_limit + 1,
        ),
    )  # fmt: skip
    append(crs, aml.io(aml.DECODE16, 0x0CF8, 0x0CF8, 0x01, 0x08))
    fixed = (aml.MIN_FIXED, aml.MAX_FIXED, aml.POS_DECODE, aml.ENTIRE_RANGE)
    append(crs, aml.word_io(*fixed, 0, 0, 0x0CF7, 0, 0x0CF8))
    for lo, hi in _free_ranges([], 0x0D00, 0xFFFF):
        append(crs, aml.word_io(*fixed, 0, lo, hi, 0, hi - lo + 1))
    mem = (aml.POS_DECODE, aml.MIN_FIXED, aml.MAX_FIXED)
    append(
        crs,
        aml.dword_memory(*mem, aml.CACHEABLE, aml.READ_WRITE, 0, 0xA0000, 0xBFFFF, 0, 0x20000),
    )
    for lo, hi in _free_ranges([(MCFG_BASE, MCFG_BASE + MCFG_SIZE - 1)], hole_lo, hole_hi):
        append(
            crs,
            aml.dword_memory(*mem, aml.NON_CACHEABLE, aml.READ_WRITE, 0, lo, hi, 0, hi - lo + 1),
        )
    if h64_hi >= h64_lo:
        for lo, hi in _free_ranges([], h64_lo, h64_hi):
            append(
                crs,
                aml.qword_memory(*mem, aml.CACHEABLE, aml.READ_WRITE, 0, lo, hi, 0, hi - lo + 1),
            )
    append(scope, aml.name_decl("_CRS", crs))

    gpe0 = PM_IO_BASE + GPE0_OFFSET
    dev = aml.device("GPE0")
    append(dev, aml.name_decl("_HID", aml.string("PNP0A06")))
    append(dev, aml.name_decl("_UID", aml.string("GPE0 resources")))
    append(dev, aml.name_decl("_STA", aml.int_(0xB)))
    crs = aml.resource_template()
    append(crs, aml.io(aml.DECODE16, gpe0, gpe0, 1, GPE0_LEN))
    append(dev, aml.name_decl("_CRS", crs))
    append(scope, dev)
    if hotplug:
        dev = aml.device("PHPR")
        append(dev, aml.name_decl("_HID", aml.string("PNP0A06")))
        append(dev, aml.name_decl("_UID", aml.string("PCI Hotplug resources")))
        append(dev, aml.name_decl("_STA", aml.int_(0xB)))
        crs = aml.resource_template()
        append(
            crs,
            aml.io(aml.DECODE16, ACPI_PCIHP_ADDR_ICH9, ACPI_PCIHP_ADDR_ICH9, 1, ACPI_PCIHP_SIZE),
        )
        append(dev, aml.name_decl("_CRS", crs))
        append(scope, dev)
    dsdt += aml.encode(scope)

    scope = aml.scope("\\")
    for name, vals in (("_S3", (1, 1, 0, 0)), ("_S4", (2, 2, 0, 0)), ("_S5", (0, 0, 0, 0))):
        pkg = aml.package(4)
        append(pkg, *(aml.int_(v) for v in vals))
        append(scope, aml.name_decl(name, pkg))
    dsdt += aml.encode(scope)

    scope = aml.scope("\\_SB.PCI0")
    dev = aml.device("FWCF")
    append(dev, aml.name_decl("_HID", aml.string("QEMU0002")))
    append(dev, aml.name_decl("_STA", aml.int_(0xB)))
    crs = aml.resource_template()
    append(crs, aml.io(aml.DECODE16, FW_CFG_IO_BASE, FW_CFG_IO_BASE, 0x01, FW_CFG_IO_SIZE))
    append(dev, aml.name_decl("_CRS", crs))
    append(scope, dev)
    dsdt += aml.encode(scope)

    sb = aml.scope("\\_SB")
    pci0 = aml.scope("PCI0")
    if flavour.qemu9:
        build_append_pci_bus_devices_qemu9(pci0, topo.root)
    else:
        build_append_pci_bus_devices(pci0, topo.root, hotplug)
    append(sb, pci0)
    dsdt += aml.encode(sb)

    if hotplug and flavour.qemu9:
        scope = aml.scope("\\_SB.PCI0")
        has_pcnt = build_append_notification_callback(scope, topo.root)
        if has_pcnt:
            dsdt += aml.encode(scope)
        gpe = aml.scope("_GPE")
        method = aml.method("_E01", 0)
        if has_pcnt:
            append(method, aml.acquire(aml.name("\\_SB.PCI0.BLCK"), 0xFFFF))
            append(method, aml.call("\\_SB.PCI0.PCNT"))
            append(method, aml.release(aml.name("\\_SB.PCI0.BLCK")))
        append(gpe, method)
        dsdt += aml.encode(gpe)
    elif hotplug:
        gpe = aml.scope("_GPE")
        method = aml.method("_E01", 0)
        append(method, aml.acquire(aml.name("\\_SB.PCI0.BLCK"), 0xFFFF))
        append(method, aml.call("\\_SB.PCI0.PCNT"))
        append(method, aml.release(aml.name("\\_SB.PCI0.BLCK")))
        append(gpe, method)
        dsdt += aml.encode(gpe)
    return table(b"DSDT", 1, bytes(dsdt))
