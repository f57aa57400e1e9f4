"""A small AML encoder mirroring QEMU's ``hw/acpi/aml-build.c``.

Each function here has the name of its QEMU counterpart without the ``aml_`` prefix (``int_``
where the name is a Python keyword) and produces the same bytes: an :class:`Aml` node holds its
encoded body and, for block terms, the opcode and the kind of wrapper (PkgLength package,
ExtOp package, Buffer, ResourceTemplate) that :func:`append` adds when the node is appended to
its parent. References: ACPI 6.x section 20 (AML encoding) and section 6.4 (resource data).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable


class Block(enum.Enum):
    """How a node is wrapped when appended (QEMU's ``AmlBlockFlags``)."""

    NONE = 0  # raw bytes (names, integers, calls, resource descriptors)
    OPCODE = 1  # opcode byte then the body
    PACKAGE = 2  # opcode, PkgLength, body
    EXT_PACKAGE = 3  # 0x5B, opcode, PkgLength, body
    BUFFER = 4  # opcode, PkgLength, BufferSize integer, body
    RES_TEMPLATE = 5  # as BUFFER, body followed by an EndTag


class Aml:
    """One AML term under construction."""

    __slots__ = ("block", "buf", "op")

    def __init__(self, block: Block = Block.NONE, op: int = 0, buf: bytes = b"") -> None:
        self.block = block
        self.op = op
        self.buf = bytearray(buf)

    def __repr__(self) -> str:
        return f"Aml({self.block.name}, op={self.op:#x}, {len(self.buf)} bytes)"


# --- encodings (ACPI 20.2) ----------------------------------------------------------------


def pkg_length(length: int, incl_self: bool = True) -> bytes:
    """PkgLength of ``length`` body bytes (plus its own size when ``incl_self``).

    QEMU picks the encoding size from the body length alone, then adds its own size; the
    thresholds below are QEMU's (build_prepend_package_length), which the result must match.
    """
    if length + 1 < 1 << 6:
        n = 1
    elif length + 2 < 1 << 12:
        n = 2
    elif length + 3 < 1 << 20:
        n = 3
    else:
        n = 4
    if incl_self:
        length += n
    if n == 1:
        return bytes([length])
    out = [((n - 1) << 6) | (length & 0xF)]
    rest = length >> 4
    for _ in range(n - 1):
        out.append(rest & 0xFF)
        rest >>= 8
    return bytes(out)


def int_bytes(value: int) -> bytes:
    """An integer term with the smallest prefix (Zero/One/Byte/Word/DWord/QWord)."""
    if value == 0:
        return b"\x00"
    if value == 1:
        return b"\x01"
    if value <= 0xFF:
        return b"\x0a" + value.to_bytes(1, "little")
    if value <= 0xFFFF:
        return b"\x0b" + value.to_bytes(2, "little")
    if value <= 0xFFFFFFFF:
        return b"\x0c" + value.to_bytes(4, "little")
    return b"\x0e" + (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def nameseg(seg: str) -> bytes:
    if len(seg) > 4:
        raise ValueError(f"AML name segment {seg!r} is longer than 4 characters")
    return (seg + "____"[len(seg) :]).encode("ascii")


@functools.lru_cache(maxsize=4096)
def namestring(name: str) -> bytes:
    """NameString: root/parent prefixes, then one, two (DualName) or more (MultiName) segs."""
    segs = name.split(".")
    first = segs[0]
    prefix = bytearray()
    i = 0
    while i < len(first) and first[i] in "\\^":
        prefix.append(ord(first[i]))
        i += 1
    segs[0] = first[i:]
    if len(segs) == 1:
        return bytes(prefix) + (nameseg(segs[0]) if segs[0] else b"\x00")
    if len(segs) == 2:
        return bytes(prefix) + b"\x2e" + nameseg(segs[0]) + nameseg(segs[1])
    return bytes(prefix) + b"\x2f" + bytes([len(segs)]) + b"".join(nameseg(s) for s in segs)


def encode(child: Aml) -> bytes:
    """The bytes ``child`` contributes to its parent (QEMU's aml_append wrapping)."""
    body = bytes(child.buf)
    block = child.block
    if block is Block.NONE:
        return body
    if block is Block.OPCODE:
        return bytes([child.op]) + body
    if block is Block.PACKAGE:
        return bytes([child.op]) + pkg_length(len(body)) + body
    if block is Block.EXT_PACKAGE:
        return b"\x5b" + bytes([child.op]) + pkg_length(len(body)) + body
    if block is Block.RES_TEMPLATE:
        body += b"\x79\x00"  # EndTag, checksum 0 ("treated as succeeded")
    sized = int_bytes(len(body)) + body
    return bytes([child.op]) + pkg_length(len(sized)) + sized


def append(parent: Aml, *children: Aml) -> Aml:
    for child in children:
        parent.buf += encode(child)
    return parent


def raw(data: bytes) -> Aml:
    """Pre-encoded bytes (used to reuse constant subtrees)."""
    return Aml(Block.NONE, 0, data)


# --- data objects -------------------------------------------------------------------------


def int_(value: int) -> Aml:
    return Aml(Block.NONE, 0, int_bytes(value))


def name(n: str) -> Aml:
    return Aml(Block.NONE, 0, namestring(n))


def string(s: str) -> Aml:
    return Aml(Block.OPCODE, 0x0D, s.encode("ascii") + b"\x00")


def eisaid(s: str) -> Aml:
    """EISAID("PNP0A03"): compressed 3-letter vendor + 4 hex digits, big-endian dword."""
    if len(s) != 7:
        raise ValueError(f"EISA id {s!r} must have 7 characters")
    v = (
        (ord(s[0]) - 0x40) << 26
        | (ord(s[1]) - 0x40) << 21
        | (ord(s[2]) - 0x40) << 16
        | int(s[3:], 16)
    )
    return Aml(Block.NONE, 0, b"\x0c" + v.to_bytes(4, "big"))


def buffer(data: bytes) -> Aml:
    return Aml(Block.BUFFER, 0x11, data)


def touuid(uuid: str) -> Aml:
    """ToUUID: the first three groups little-endian, the rest as written."""
    h = uuid.replace("-", "")
    b = bytes.fromhex(h)
    return buffer(b[3::-1] + b[5:3:-1] + b[7:5:-1] + b[8:])


def unicode(s: str) -> Aml:
    return buffer(s.encode("utf-16-le") + b"\x00\x00")


def package(num_elements: int) -> Aml:
    return Aml(Block.PACKAGE, 0x12, bytes([num_elements]))


def varpackage(num_elements: int) -> Aml:
    return Aml(Block.PACKAGE, 0x13, int_bytes(num_elements))


def local(n: int) -> Aml:
    return Aml(Block.OPCODE, 0x60 + n)


def arg(n: int) -> Aml:
    return Aml(Block.OPCODE, 0x68 + n)


# --- namespace and control ----------------------------------------------------------------


def scope(n: str) -> Aml:
    return Aml(Block.PACKAGE, 0x10, namestring(n))


def device(n: str) -> Aml:
    return Aml(Block.EXT_PACKAGE, 0x82, namestring(n))


def method(n: str, arg_count: int, serialized: bool = False) -> Aml:
    return Aml(Block.PACKAGE, 0x14, namestring(n) + bytes([arg_count | (serialized << 3)]))


def processor(proc_id: int, pblk_addr: int, pblk_len: int, n: str) -> Aml:
    body = namestring(n) + bytes([proc_id]) + pblk_addr.to_bytes(4, "little") + bytes([pblk_len])
    return Aml(Block.EXT_PACKAGE, 0x83, body)


def name_decl(n: str, value: Aml) -> Aml:
    return append(Aml(Block.OPCODE, 0x08, namestring(n)), value)


def if_(predicate: Aml) -> Aml:
    return append(Aml(Block.PACKAGE, 0xA0), predicate)


def else_() -> Aml:
    return Aml(Block.PACKAGE, 0xA1)


def while_(predicate: Aml) -> Aml:
    return append(Aml(Block.PACKAGE, 0xA2), predicate)


def return_(value: Aml) -> Aml:
    return append(Aml(Block.OPCODE, 0xA4), value)


def break_() -> Aml:
    return Aml(Block.OPCODE, 0xA5)


def call(method_name: str, *args: Aml) -> Aml:
    return append(Aml(Block.NONE, 0, namestring(method_name)), *args)


def _op(op: int, *args: Aml) -> Aml:
    return append(Aml(Block.OPCODE, op), *args)


def _op_dst(op: int, a: Aml, b: Aml, dst: Aml | None) -> Aml:
    var = _op(op, a, b)
    if dst is None:
        var.buf.append(0x00)  # NullName target
    else:
        append(var, dst)
    return var


def store(value: Aml, target: Aml) -> Aml:
    return _op(0x70, value, target)


def and_(a: Aml, b: Aml, dst: Aml | None = None) -> Aml:
    return _op_dst(0x7B, a, b, dst)


def or_(a: Aml, b: Aml, dst: Aml | None = None) -> Aml:
    return _op_dst(0x7D, a, b, dst)


def add(a: Aml, b: Aml, dst: Aml | None = None) -> Aml:
    return _op_dst(0x72, a, b, dst)


def subtract(a: Aml, b: Aml, dst: Aml | None = None) -> Aml:
    return _op_dst(0x74, a, b, dst)


def shiftleft(a: Aml, count: Aml) -> Aml:
    return _op_dst(0x79, a, count, None)


def shiftright(a: Aml, count: Aml, dst: Aml | None = None) -> Aml:
    return _op_dst(0x7A, a, count, dst)


def index(a: Aml, idx: Aml) -> Aml:
    return _op_dst(0x88, a, idx, None)


def concatenate(a: Aml, b: Aml, dst: Aml | None = None) -> Aml:
    return _op_dst(0x73, a, b, dst)


def to_hexstring(src: Aml, dst: Aml | None = None) -> Aml:
    var = _op(0x98, src)
    return append(var, dst) if dst is not None else _null_target(var)


def to_buffer(src: Aml, dst: Aml | None = None) -> Aml:
    var = _op(0x96, src)
    return append(var, dst) if dst is not None else _null_target(var)


def to_integer(src: Aml) -> Aml:
    return _null_target(_op(0x99, src))


def _null_target(var: Aml) -> Aml:
    var.buf.append(0x00)
    return var


def land(a: Aml, b: Aml) -> Aml:
    return _op(0x90, a, b)


def lor(a: Aml, b: Aml) -> Aml:
    return _op(0x91, a, b)


def lnot(a: Aml) -> Aml:
    return _op(0x92, a)


def equal(a: Aml, b: Aml) -> Aml:
    return _op(0x93, a, b)


def lgreater(a: Aml, b: Aml) -> Aml:
    return _op(0x94, a, b)


def lless(a: Aml, b: Aml) -> Aml:
    return _op(0x95, a, b)


def lgreater_equal(a: Aml, b: Aml) -> Aml:
    var = Aml(Block.OPCODE, 0x92, b"\x95")  # LNot LLess
    return append(var, a, b)


def increment(a: Aml) -> Aml:
    return _op(0x75, a)


def decrement(a: Aml) -> Aml:
    return _op(0x76, a)


def notify(obj: Aml, value: Aml) -> Aml:
    return _op(0x86, obj, value)


def derefof(a: Aml) -> Aml:
    return _op(0x83, a)


def refof(a: Aml) -> Aml:
    return _op(0x71, a)


def sizeof(a: Aml) -> Aml:
    return _op(0x87, a)


def object_type(a: Aml) -> Aml:
    return _op(0x8E, a)


def debug() -> Aml:
    return raw(b"\x5b\x31")


def sleep(msec: int) -> Aml:
    return append(raw(b"\x5b\x22"), int_(msec))


def mutex(n: str, sync_level: int) -> Aml:
    return raw(b"\x5b\x01" + namestring(n) + bytes([sync_level]))


def acquire(mtx: Aml, timeout: int) -> Aml:
    var = append(raw(b"\x5b\x23"), mtx)
    var.buf += timeout.to_bytes(2, "little")
    return var


def release(mtx: Aml) -> Aml:
    return append(raw(b"\x5b\x27"), mtx)


def alias(source: str, alias_name: str) -> Aml:
    return _op(0x06, name(source), name(alias_name))


# --- operation regions and fields ---------------------------------------------------------

SYSTEM_MEMORY = 0x00
SYSTEM_IO = 0x01
PCI_CONFIG = 0x02

ANY_ACC, BYTE_ACC, WORD_ACC, DWORD_ACC, QWORD_ACC, BUFFER_ACC = 0, 1, 2, 3, 4, 5
NOLOCK, LOCK = 0, 1
PRESERVE, WRITE_AS_ONES, WRITE_AS_ZEROS = 0, 1, 2


def operation_region(n: str, space: int, offset: Aml, length: int) -> Aml:
    var = raw(b"\x5b\x80" + namestring(n) + bytes([space]))
    append(var, offset)
    var.buf += int_bytes(length)
    return var


def field(region: str, access: int, lock: int, update: int) -> Aml:
    flags = update << 5 | lock << 4 | access
    return Aml(Block.EXT_PACKAGE, 0x81, namestring(region) + bytes([flags]))


def named_field(n: str, bits: int) -> Aml:
    return raw(nameseg(n) + pkg_length(bits, incl_self=False))


def reserved_field(bits: int) -> Aml:
    return raw(b"\x00" + pkg_length(bits, incl_self=False))


def create_dword_field(src: Aml, idx: Aml, n: str) -> Aml:
    var = _op(0x8A, src, idx)
    var.buf += namestring(n)
    return var


def create_qword_field(src: Aml, idx: Aml, n: str) -> Aml:
    var = _op(0x8F, src, idx)
    var.buf += namestring(n)
    return var


def create_field(src: Aml, bit_index: Aml, num_bits: Aml, n: str) -> Aml:
    var = append(raw(b"\x5b\x13"), src, bit_index, num_bits)
    var.buf += namestring(n)
    return var


# --- resource templates (ACPI 6.4) --------------------------------------------------------

CONSUMER_PRODUCER, CONSUMER = 0, 1
LEVEL, EDGE = 0, 1
ACTIVE_HIGH, ACTIVE_LOW = 0, 1
EXCLUSIVE, SHARED = 0, 1
DECODE10, DECODE16 = 0, 1
READ_ONLY, READ_WRITE = 0, 1
NON_CACHEABLE, CACHEABLE = 0, 1
POS_DECODE = 0
MIN_FIXED = 1 << 2
MAX_FIXED = 1 << 3
ENTIRE_RANGE = 3
MEMORY_RANGE, IO_RANGE, BUS_NUMBER_RANGE = 0, 1, 2


def resource_template() -> Aml:
    return Aml(Block.RES_TEMPLATE, 0x11)


def interrupt(consumer: int, edge: int, polarity: int, shared: int, irqs: Iterable[int]) -> Aml:
    irq_list = list(irqs)
    flags = consumer | edge << 1 | polarity << 2 | shared << 3
    length = 2 + 4 * len(irq_list)
    body = bytes([0x89, length & 0xFF, length >> 8, flags, len(irq_list)])
    return raw(body + b"".join(i.to_bytes(4, "little") for i in irq_list))


def io(decode: int, min_base: int, max_base: int, align: int, length: int) -> Aml:
    return raw(
        bytes([0x47, decode]) + min_base.to_bytes(2, "little") + max_base.to_bytes(2, "little")
        + bytes([align, length])
    )  # fmt: skip


def irq_no_flags(irq: int) -> Aml:
    return raw(b"\x22" + (1 << irq).to_bytes(2, "little"))


def memory32_fixed(addr: int, size: int, rw: int) -> Aml:
    return raw(
        b"\x86\x09\x00" + bytes([rw]) + addr.to_bytes(4, "little") + size.to_bytes(4, "little")
    )


def dma(typ: int, bus_master: int, size: int, channel: int) -> Aml:
    return raw(bytes([0x2A, 1 << channel, size | bus_master << 2 | typ << 5]))


def _addr_space(
    tag: int, width: int, rtype: int, flags: int, type_flags: int, values: tuple[int, ...]
) -> Aml:
    desc_len = {2: 0x0D, 4: 23, 8: 0x2B}[width]
    body = bytes([tag, desc_len, 0, rtype, flags, type_flags])
    return raw(body + b"".join(v.to_bytes(width, "little") for v in values))


def word_bus_number(
    min_fixed: int, max_fixed: int, dec: int, gran: int, lo: int, hi: int, trans: int, length: int
) -> Aml:
    flags = max_fixed | min_fixed | dec
    return _addr_space(0x88, 2, BUS_NUMBER_RANGE, flags, 0, (gran, lo, hi, trans, length))


def word_io(
    min_fixed: int,
    max_fixed: int,
    dec: int,
    isa_ranges: int,
    gran: int,
    lo: int,
    hi: int,
    trans: int,
    length: int,
) -> Aml:
    flags = max_fixed | min_fixed | dec
    return _addr_space(0x88, 2, IO_RANGE, flags, isa_ranges, (gran, lo, hi, trans, length))


def dword_memory(
    dec: int,
    min_fixed: int,
    max_fixed: int,
    cacheable: int,
    rw: int,
    gran: int,
    lo: int,
    hi: int,
    trans: int,
    length: int,
) -> Aml:
    flags = max_fixed | min_fixed | dec
    return _addr_space(
        0x87, 4, MEMORY_RANGE, flags, rw | cacheable << 1, (gran, lo, hi, trans, length)
    )


def qword_memory(
    dec: int,
    min_fixed: int,
    max_fixed: int,
    cacheable: int,
    rw: int,
    gran: int,
    lo: int,
    hi: int,
    trans: int,
    length: int,
) -> Aml:
    flags = max_fixed | min_fixed | dec
    values = tuple(v & 0xFFFFFFFFFFFFFFFF for v in (gran, lo, hi, trans, length))
    return _addr_space(0x8A, 8, MEMORY_RANGE, flags, rw | cacheable << 1, values)
