"""TDVF (TDX OVMF) metadata, MRTD and the TD HOB event of RTMR0.

The firmware carries a descriptor of the sections the TDX module loads before the guest runs;
MRTD is a SHA-384 over the TDH.MEM.PAGE.ADD / TDH.MR.EXTEND records of those sections, and the
TD HOB that OVMF measures first into RTMR0 is derived from the same sections and the guest's
memory size.
"""

from __future__ import annotations

import array
import enum
import hashlib
import itertools
import struct
import sys

import attrs

from ._binary import take, u16, u32, unpack
from .digest import sha384
from .errors import ConfigError, FirmwareError
from .registry import OVMF_TABLE_FOOTER, TDVF_METADATA_OFFSET, U64_MAX

PAGE_SIZE = 0x1000
MR_EXTEND_CHUNK = 0x100
#: Default TD HOB base when the firmware has no TD_HOB section (what OVMF uses).
DEFAULT_TD_HOB_BASE = 0x809000
#: At or above this guest memory size, QEMU splits RAM at 2 GiB and maps the rest at 4 GiB.
HIGH_MEMORY_THRESHOLD = 0xB000_0000
#: More MEM.PAGE.ADD records than 4 GiB of pages means a corrupt or hostile descriptor; the
#: cap keeps a bogus memory_data_size from turning MRTD into a near-endless loop.
MAX_ADDED_PAGES = 1 << 20

_FOOTER_GUID = OVMF_TABLE_FOOTER.bytes_le
_METADATA_OFFSET_GUID = TDVF_METADATA_OFFSET.bytes_le
_BYTES_AFTER_FOOTER = 32

# --- binary layouts (Intel TDX Virtual Firmware Design Guide §11.2, "TDVF metadata") -------
#: TDVF_DESCRIPTOR: Signature "TDVF", Length, Version (1), NumberOfSectionEntry.
TDVF_DESCRIPTOR = struct.Struct("<4sIII")
#: TDVF_SECTION: DataOffset, RawDataSize, MemoryAddress, MemoryDataSize, Type, Attributes
#: (the field order of :class:`TdvfSection`).
TDVF_SECTION = struct.Struct("<IIQQII")

ATTR_MR_EXTEND = 0x1
ATTR_PAGE_AUG = 0x2

# --- TD HOB records (UEFI PI spec vol. 3, "HOB Code Definitions") ---------------------------
#: EFI_HOB_HANDOFF_INFO_TABLE: header (HobType, HobLength, Reserved), Version, BootMode,
#: EfiMemoryTop, EfiMemoryBottom, EfiFreeMemoryTop, EfiFreeMemoryBottom, EfiEndOfHobList.
HOB_HANDOFF = struct.Struct("<HHIII5Q")
#: EFI_HOB_RESOURCE_DESCRIPTOR: header, Owner GUID, ResourceType, ResourceAttribute,
#: PhysicalStart, ResourceLength.
HOB_RESOURCE = struct.Struct("<HHI16sIIQQ")
HOB_TYPE_HANDOFF = 0x0001
HOB_TYPE_RESOURCE_DESCRIPTOR = 0x0003
#: EFI_HOB_HANDOFF_TABLE_VERSION as OVMF's TD HOB carries it.
HOB_HANDOFF_VERSION = 9
#: Byte offset of EfiEndOfHobList in the handoff record (patched once the list is built).
_HOB_END_OF_LIST = HOB_HANDOFF.size - 8
RESOURCE_SYSTEM_MEMORY = 0x00
RESOURCE_MEMORY_UNACCEPTED = 0x07
#: PRESENT | INITIALIZED | TESTED.
RESOURCE_ATTRIBUTES = 0x07


class SectionType(enum.IntEnum):
    BFV = 0
    CFV = 1
    TD_HOB = 2
    TEMP_MEM = 3


@attrs.frozen
class TdvfSection:
    data_offset: int
    raw_data_size: int
    memory_address: int
    memory_data_size: int
    section_type: int
    attributes: int

    @property
    def pages(self) -> int:
        return self.memory_data_size // PAGE_SIZE

    @property
    def type_name(self) -> str:
        try:
            return SectionType(self.section_type).name
        except ValueError:
            return f"type {self.section_type}"


@attrs.frozen
class Tdvf:
    """Parsed TDVF metadata plus the firmware bytes MR.EXTEND reads from."""

    firmware: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    sections: tuple[TdvfSection, ...]

    def mrtd(self, two_pass: bool) -> bytes:
        """MRTD for QEMU's page-add order: two-pass (QEMU 8.x) or single-pass (9.0+)."""
        h = hashlib.sha384()
        fw = memoryview(self.firmware)
        for s in self.sections:
            add = not s.attributes & ATTR_PAGE_AUG
            ext = bool(s.attributes & ATTR_MR_EXTEND)
            if not add and not ext:
                # Nothing recorded; don't walk a PAGE_AUG section's (unbounded) page count.
                continue
            if ext and s.pages and s.data_offset + s.pages * PAGE_SIZE > len(fw):
                raise FirmwareError(
                    f"TDVF section at {s.memory_address:#x}: MR.EXTEND data runs past the end "
                    f"of the firmware ({len(fw):#x} bytes)"
                )
            # Records are built a batch of pages at a time (a few hundred KiB), in C-level
            # bulk operations rather than one Python call per 256-byte chunk.
            for do_add, do_ext in ((add, False), (False, ext)) if two_pass else ((add, ext),):
                for first in range(0, s.pages if do_add or do_ext else 0, _BATCH_PAGES):
                    pages = min(_BATCH_PAGES, s.pages - first)
                    gpa = s.memory_address + first * PAGE_SIZE
                    off = s.data_offset + first * PAGE_SIZE
                    if do_add and do_ext:
                        adds = memoryview(_page_adds(gpa, pages))
                        exts = memoryview(_page_extends(fw[off : off + pages * PAGE_SIZE], gpa))
                        for p in range(pages):
                            h.update(adds[p * _RECORD_SIZE : (p + 1) * _RECORD_SIZE])
                            h.update(
                                exts[p * _EXTENDS_PER_PAGE_SIZE : (p + 1) * _EXTENDS_PER_PAGE_SIZE]
                            )
                    elif do_add:
                        h.update(_page_adds(gpa, pages))
                    else:
                        h.update(_page_extends(fw[off : off + pages * PAGE_SIZE], gpa))
        return h.digest()

    @property
    def td_hob_base(self) -> int:
        base = DEFAULT_TD_HOB_BASE
        for s in self.sections:
            if s.section_type == SectionType.TD_HOB:
                base = s.memory_address
        return base

    def td_hob(self, memory_size: int) -> bytes:
        """The TD HOB list OVMF measures as RTMR0 event 0, for ``memory_size`` bytes of RAM."""
        return build_td_hob(self.sections, memory_size, self.td_hob_base)

    def td_hob_digest(self, memory_size: int) -> bytes:
        return sha384(self.td_hob(memory_size))


_ADD_PREFIX = b"MEM.PAGE.ADD".ljust(16, b"\0")
_EXTEND_PREFIX = b"MR.EXTEND".ljust(16, b"\0")
_RECORD_TAIL = bytes(128 - 24)
#: A MEM.PAGE.ADD / MR.EXTEND record: 16-byte operation name, 8-byte GPA, zeros.
_RECORD_SIZE = 128
_GPA_WORD = 2  # the GPA's index among the record's 8-byte words
_ADD_RECORD = _ADD_PREFIX + bytes(8) + _RECORD_TAIL
_EXTEND_RECORD = _EXTEND_PREFIX + bytes(8) + _RECORD_TAIL
_EXTENDS_PER_PAGE_SIZE = (PAGE_SIZE // MR_EXTEND_CHUNK) * (_RECORD_SIZE + MR_EXTEND_CHUNK)
_CHUNKS = struct.Struct(f"{MR_EXTEND_CHUNK}s")
_BATCH_PAGES = 64


def _set_gpas(records: bytearray, record_size: int, gpa: int, step: int) -> None:
    """Write ``gpa``, ``gpa + step``, ... (u64 LE) into consecutive records, in one copy."""
    gpas = array.array("Q", range(gpa, gpa + len(records) // record_size * step, step))
    if sys.byteorder != "little":
        gpas.byteswap()
    memoryview(records).cast("Q")[_GPA_WORD :: record_size // 8] = memoryview(gpas)


def _page_adds(gpa: int, pages: int) -> bytearray:
    """MEM.PAGE.ADD records for ``pages`` pages from ``gpa``."""
    records = bytearray(_ADD_RECORD * pages)
    _set_gpas(records, _RECORD_SIZE, gpa, PAGE_SIZE)
    return records


def _page_extends(data: memoryview, gpa: int) -> bytearray:
    """MR.EXTEND records, each followed by its 256 bytes of ``data``, for pages from ``gpa``."""
    parts: list[bytes] = [b""]  # join puts a record before every chunk, including the first
    parts += itertools.chain.from_iterable(_CHUNKS.iter_unpack(data))
    records = bytearray(_EXTEND_RECORD).join(parts)  # a bytearray, to set the GPAs in place
    _set_gpas(records, _RECORD_SIZE + MR_EXTEND_CHUNK, gpa, MR_EXTEND_CHUNK)
    return records


def parse(firmware: bytes) -> Tdvf:
    """Parse the TDVF metadata of an OVMF image; raise FirmwareError if it is malformed."""
    fw = firmware
    if len(fw) < _BYTES_AFTER_FOOTER + 18:
        raise FirmwareError(
            f"firmware is {len(fw)} bytes: too small to hold the OVMF GUID-ed table footer"
        )
    end = len(fw) - _BYTES_AFTER_FOOTER
    if fw[end - 16 : end] != _FOOTER_GUID:
        raise FirmwareError(
            f"no OVMF table footer GUID {OVMF_TABLE_FOOTER} at offset "
            f"{end - 16:#x}: not a TDX-capable OVMF (TDVF) image"
        )
    tables_len = u16(fw, end - 18, "OVMF GUID-ed table length", FirmwareError)
    if tables_len == 0 or tables_len > end - 18:
        raise FirmwareError(
            f"OVMF GUID-ed table length {tables_len} at offset {end - 18:#x} is out of range"
        )
    tables = fw[end - 18 - tables_len : end - 18]

    # Walk entries from the end: [data][u16 length][GUID]; length covers all three.
    off = len(tables)
    entry: bytes | None = None
    while off >= 18:
        entry_len = u16(tables, off - 18, "OVMF GUID-ed table entry length", FirmwareError)
        if entry_len > off - 18:
            raise FirmwareError(
                f"OVMF GUID-ed table entry ending at table offset {off:#x} claims "
                f"{entry_len} bytes, more than the table holds"
            )
        if tables[off - 16 : off] == _METADATA_OFFSET_GUID:
            entry = tables[off - 18 - entry_len : off - 18]
            break
        if entry_len == 0:
            # The reference would loop forever here; no valid table has an empty entry.
            raise FirmwareError(
                f"OVMF GUID-ed table entry ending at table offset {off:#x} has length 0"
            )
        off -= entry_len
    if entry is None:
        raise FirmwareError(
            "OVMF GUID-ed table has no TDX metadata offset entry "
            f"(GUID {TDVF_METADATA_OFFSET}): firmware is not built for TDX"
        )
    if len(entry) < 4:
        raise FirmwareError("TDX metadata offset entry is shorter than 4 bytes")
    back = u32(entry, len(entry) - 4, "TDVF metadata offset", FirmwareError)
    if back > len(fw):
        raise FirmwareError(
            f"TDVF metadata offset {back:#x} is larger than the firmware ({len(fw):#x} bytes)"
        )
    desc = len(fw) - back
    signature, _length, version, count = unpack(
        TDVF_DESCRIPTOR, fw, desc, "TDVF descriptor", FirmwareError
    )
    if signature != b"TDVF":
        raise FirmwareError(
            f"no TDVF descriptor signature at offset {desc:#x} (found {signature!r})"
        )
    if version != 1:
        raise FirmwareError(f"unsupported TDVF descriptor version {version} (expected 1)")
    table = desc + TDVF_DESCRIPTOR.size
    # Check the whole table fits before reading it, so a hostile count allocates nothing.
    section_table = take(
        fw, table, TDVF_SECTION.size * count, f"TDVF section table ({count} sections)",
        FirmwareError,
    )  # fmt: skip

    sections = []
    added_pages = 0
    extended_pages = 0
    for i, fields in enumerate(TDVF_SECTION.iter_unpack(section_table)):
        s = TdvfSection(*fields)
        where = f"TDVF section {i} ({s.type_name} at {s.memory_address:#x})"
        if s.memory_address % PAGE_SIZE:
            raise FirmwareError(f"{where}: memory address is not 4 KiB aligned")
        if s.memory_data_size < s.raw_data_size:
            raise FirmwareError(f"{where}: memory_data_size is smaller than raw_data_size")
        if s.memory_data_size % PAGE_SIZE:
            raise FirmwareError(f"{where}: memory_data_size is not 4 KiB aligned")
        # Page GPAs stay below 2**64 when the section ends at 2**64 at the latest; the TD HOB
        # computes the end itself, which the reference's u64 arithmetic cannot represent.
        in_hob = s.section_type in (SectionType.TD_HOB, SectionType.TEMP_MEM)
        if s.memory_address + s.memory_data_size > U64_MAX + (0 if in_hob else 1):
            raise FirmwareError(f"{where}: section runs past the end of the address space")
        if s.attributes & ATTR_MR_EXTEND and s.pages:
            # MR.EXTEND hashes memory_data_size bytes of file data, page by page.
            take_end = s.data_offset + s.memory_data_size
            if take_end > len(fw):
                raise FirmwareError(
                    f"{where}: MR.EXTEND data [{s.data_offset:#x}, {take_end:#x}) runs past "
                    f"the end of the firmware ({len(fw):#x} bytes): truncated image?"
                )
            # Each section's data fits the file, but many sections may cover it all again.
            extended_pages += s.pages
            if extended_pages > MAX_ADDED_PAGES:
                raise FirmwareError(
                    f"{where}: sections MR.EXTEND more than {MAX_ADDED_PAGES} pages; "
                    "the descriptor is corrupt"
                )
        if not s.attributes & ATTR_PAGE_AUG:
            added_pages += s.pages
            if added_pages > MAX_ADDED_PAGES:
                raise FirmwareError(
                    f"{where}: sections add more than {MAX_ADDED_PAGES} pages; "
                    "the descriptor is corrupt"
                )
        sections.append(s)
    return Tdvf(firmware=bytes(fw), sections=tuple(sections))


def build_td_hob(sections: tuple[TdvfSection, ...], memory_size: int, hob_base: int) -> bytes:
    """PHIT HOB + resource-descriptor HOBs for [0, memory_size), as OVMF builds it."""
    if not 0 < memory_size <= U64_MAX:
        raise ConfigError(f"memory_size {memory_size} is out of range for the TD HOB")
    ranges = _memory_ranges(sections, memory_size)

    # Memory fields of the handoff record stay zero; EfiEndOfHobList is set at the end.
    hob = bytearray(
        HOB_HANDOFF.pack(
            HOB_TYPE_HANDOFF, HOB_HANDOFF.size, 0, HOB_HANDOFF_VERSION, 0, 0, 0, 0, 0, 0
        )
    )

    def resource(kind: int, start: int, length: int) -> None:
        hob.extend(
            HOB_RESOURCE.pack(
                HOB_TYPE_RESOURCE_DESCRIPTOR,
                HOB_RESOURCE.size,
                0,
                bytes(16),
                kind,
                RESOURCE_ATTRIBUTES,
                start,
                length,
            )
        )

    *body, (_, last_start, last_end) = ranges
    for accepted, start, end in body:
        if end < start:
            raise FirmwareError("TDVF sections produce an inverted memory range")
        resource(
            RESOURCE_SYSTEM_MEMORY if accepted else RESOURCE_MEMORY_UNACCEPTED, start, end - start
        )
    if last_end < last_start:
        raise FirmwareError("TDVF sections produce an inverted memory range")
    if memory_size >= HIGH_MEMORY_THRESHOLD:
        if last_start < 0x8000_0000:
            resource(RESOURCE_MEMORY_UNACCEPTED, last_start, 0x8000_0000 - last_start)
        if last_end > 0x8000_0000:
            resource(RESOURCE_MEMORY_UNACCEPTED, 0x1_0000_0000, last_end - 0x8000_0000)
    else:
        resource(RESOURCE_MEMORY_UNACCEPTED, last_start, last_end - last_start)

    # OVMF counts the 8-byte end-of-list HOB that follows the records.
    end_of_hob_list = hob_base + len(hob) + 8
    struct.pack_into("<Q", hob, _HOB_END_OF_LIST, end_of_hob_list & U64_MAX)
    return bytes(hob)


def _memory_ranges(
    sections: tuple[TdvfSection, ...], memory_size: int
) -> list[tuple[bool, int, int]]:
    """(accepted, start, end) ranges of [0, memory_size) as OVMF lists them, sorted by start.

    Equivalent to starting from one unaccepted range and, for each TD_HOB / TEMP_MEM section
    in metadata order, splitting the unaccepted ranges around it, appending it as accepted and
    stable-sorting by start (the reference's algorithm) -- but O(n log n) rather than
    O(n^2 log n), so a descriptor with tens of thousands of sections cannot stall the TD HOB.
    The unaccepted ranges are then exactly the gaps of [0, memory_size) not covered by any
    accepted range, and no gap starts where an accepted range does.
    """
    accepted = [
        (s.memory_address, s.memory_address + s.memory_data_size)
        for s in sections
        if s.section_type in (SectionType.TD_HOB, SectionType.TEMP_MEM) and s.memory_data_size > 0
    ]
    gaps: list[tuple[bool, int, int]] = []
    cursor = 0
    for start, end in sorted(accepted):
        if cursor >= memory_size:
            break
        if start > cursor:
            gaps.append((False, cursor, min(start, memory_size)))
        cursor = max(cursor, end)
    if cursor < memory_size:
        gaps.append((False, cursor, memory_size))
    ranges = [(True, start, end) for start, end in accepted] + gaps
    ranges.sort(key=lambda r: r[1])  # stable: accepted ranges with equal starts keep order
    return ranges
