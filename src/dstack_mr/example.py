"""A small, synthetic dstack OS image that the library can measure end to end.

Real images are hundreds of megabytes and cannot ship with the package, yet documentation,
demos and tests need firmware, a kernel, an initrd and ACPI tables whose *structure* is
exactly what the parsers meet in the wild. Every builder here therefore mirrors the layout
of a real artefact (Debian's TDX OVMF, a Debian EFI-stub bzImage, QEMU's ``etc/acpi/tables``)
at a fraction of the size, filled with a SHA-256 counter stream so that any byte a
measurement reads changes its digest.

Everything is computed from constants: no clock, no randomness, no compressor (whose output
differs between zlib builds), so two builds on any machine are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
import uuid
import zlib
from typing import NamedTuple

from .registry import OVMF_TABLE_FOOTER, SEV_ES_RESET_BLOCK, SEV_HASH_TABLE_RV, TDVF_METADATA_OFFSET

__all__ = [
    "METADATA",
    "build_acpi_tables",
    "build_firmware",
    "build_initrd",
    "build_kernel",
    "write_example_image",
]

#: The image's metadata.json. The version is below 0.5.10 so the default ("pre202505") OVMF
#: event layout applies without an ``ovmf_variant`` key.
METADATA: dict[str, str] = {
    "bios": "ovmf.fd",
    "kernel": "bzImage",
    "initrd": "initramfs.cpio.gz",
    "cmdline": "console=ttyS0 init=/init panic=1 net.ifnames=0 dstack.example=1",
    "version": "0.5.4",
}

#: Not part of metadata.json: dstack images do not ship ACPI tables, but without QEMU the
#: library cannot dump them, so the example provides a pre-dumped blob next to the image.
ACPI_TABLES_FILE = "acpi-tables.bin"

_PAGE = 0x1000


def _stream(label: str, size: int) -> bytes:
    """``size`` bytes of SHA-256(label ‖ counter): incompressible and reproducible anywhere."""
    seed = label.encode()
    blocks = (
        hashlib.sha256(seed + i.to_bytes(4, "little")).digest() for i in range(size // 32 + 1)
    )
    return b"".join(blocks)[:size]


def _guid(text: str) -> bytes:
    # EFI stores GUIDs mixed-endian: the first three fields little-endian.
    return uuid.UUID(text).bytes_le


# --------------------------------------------------------------------------------------------
# Firmware (TDVF / OVMF)
# --------------------------------------------------------------------------------------------

FIRMWARE_SIZE = 0x40000
#: Like OVMF's flash layout: the variable store (CFV) first, the boot volume (BFV) to the end,
#: and the whole image mapped so that its last byte sits just below 4 GiB.
_CFV_OFFSET, _CFV_SIZE = 0x0, 0x10000
_BFV_OFFSET, _BFV_SIZE = 0x10000, FIRMWARE_SIZE - 0x10000
_FLASH_BASE = 0x1_0000_0000 - FIRMWARE_SIZE
#: Where Debian's OVMF 2022.11 keeps its descriptor, counted back from the end of the file.
_DESCRIPTOR_BACK = 0x840

_FOOTER_GUID = OVMF_TABLE_FOOTER.bytes_le
_TDX_METADATA_OFFSET_GUID = TDVF_METADATA_OFFSET.bytes_le
_TDX_METADATA_GUID = _guid("e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae")
# Two of the SEV entries every OVMF table carries after the TDX one: the parser has to walk
# past them (backwards) before it reaches the entry it wants.
_SEV_HASH_TABLE_GUID = SEV_HASH_TABLE_RV.bytes_le
_SEV_ES_RESET_BLOCK_GUID = SEV_ES_RESET_BLOCK.bytes_le
_NV_DATA_FV_GUID = _guid("fff12b8d-7696-4c8b-a985-2747075b4f50")
_FFS2_FV_GUID = _guid("8c8ce578-8a3d-4f1c-9935-896185c32dd3")

SECTION_BFV, SECTION_CFV, SECTION_TD_HOB, SECTION_TEMP_MEM = 0, 1, 2, 3
ATTR_MR_EXTEND = 0x1


class TdvfSectionSpec(NamedTuple):
    data_offset: int
    raw_data_size: int
    memory_address: int
    memory_data_size: int
    section_type: int
    attributes: int


#: The descriptor's sections, in Debian OVMF's order (metadata order is MRTD's hash order):
#: the two flash volumes, then the RAM the TDX module adds for SEC (dstack's addresses).
FIRMWARE_SECTIONS: tuple[TdvfSectionSpec, ...] = (
    TdvfSectionSpec(
        _BFV_OFFSET, _BFV_SIZE, _FLASH_BASE + _BFV_OFFSET, _BFV_SIZE, SECTION_BFV, ATTR_MR_EXTEND
    ),
    TdvfSectionSpec(_CFV_OFFSET, _CFV_SIZE, _FLASH_BASE + _CFV_OFFSET, _CFV_SIZE, SECTION_CFV, 0),
    TdvfSectionSpec(0, 0, 0x810000, 0x10000, SECTION_TEMP_MEM, 0),
    TdvfSectionSpec(0, 0, 0x80B000, 0x2000, SECTION_TEMP_MEM, 0),
    TdvfSectionSpec(0, 0, 0x809000, 0x2000, SECTION_TD_HOB, 0),
    TdvfSectionSpec(0, 0, 0x800000, 0x6000, SECTION_TEMP_MEM, 0),
)


def _fv_header(fs_guid: bytes, length: int) -> bytes:
    """An EFI_FIRMWARE_VOLUME_HEADER with one block-map run of 4 KiB blocks."""
    attributes = 0x0004FEFF  # what both of OVMF's volumes declare
    header_len = 0x48
    head = bytearray(
        bytes(16)
        + fs_guid
        + struct.pack("<Q4sIHHHBB", length, b"_FVH", attributes, header_len, 0, 0, 0, 2)
        + struct.pack("<IIII", length // _PAGE, _PAGE, 0, 0)
    )
    # The header checksum makes the 16-bit words of the header sum to zero.
    words = sum(struct.unpack(f"<{header_len // 2}H", head))
    struct.pack_into("<H", head, 0x32, (-words) & 0xFFFF)
    return bytes(head)


def _table_entry(guid: bytes, data: bytes) -> bytes:
    return data + struct.pack("<H", len(data) + 18) + guid


def build_firmware() -> bytes:
    """A 256 KiB TDVF image: OVMF's footer table, TDVF descriptor and volume layout."""
    fw = bytearray(FIRMWARE_SIZE)
    fw[_CFV_OFFSET : _CFV_OFFSET + _CFV_SIZE] = _stream("dstack-mr example CFV", _CFV_SIZE)
    fw[_BFV_OFFSET : _BFV_OFFSET + _BFV_SIZE] = _stream("dstack-mr example BFV", _BFV_SIZE)
    fw[_CFV_OFFSET : _CFV_OFFSET + 0x48] = _fv_header(_NV_DATA_FV_GUID, _CFV_SIZE)
    fw[_BFV_OFFSET : _BFV_OFFSET + 0x48] = _fv_header(_FFS2_FV_GUID, _BFV_SIZE)

    count = len(FIRMWARE_SECTIONS)
    descriptor = b"TDVF" + struct.pack("<III", 16 + 32 * count, 1, count)
    descriptor += b"".join(struct.pack("<IIQQII", *s) for s in FIRMWARE_SECTIONS)
    # OVMF precedes the descriptor with the TDX metadata GUID; the offset points past it.
    at = FIRMWARE_SIZE - _DESCRIPTOR_BACK
    fw[at - 16 : at + len(descriptor)] = _TDX_METADATA_GUID + descriptor

    entries = (
        _table_entry(_TDX_METADATA_OFFSET_GUID, struct.pack("<I", _DESCRIPTOR_BACK))
        + _table_entry(_SEV_HASH_TABLE_GUID, bytes(8))  # zero: no SEV hash table
        + _table_entry(_SEV_ES_RESET_BLOCK_GUID, struct.pack("<I", 0x80B004))
    )
    # As in OVMF, the footer's length covers the footer entry itself (its u16 and GUID), so
    # the region a parser slices starts 18 bytes before the first entry.
    footer = entries + struct.pack("<H", len(entries) + 18) + _FOOTER_GUID
    # The last 32 bytes are the reset-vector page tail parsers skip: OVMF's "VTF" signature
    # and, at 0xFFFFFFF0, an entry point (here a `hlt; jmp $-1` loop, never executed).
    reset_tail = bytes(12) + b"VTF\x00" + b"\xf4\xeb\xfd" + b"\x90" * 13
    fw[FIRMWARE_SIZE - 32 - len(footer) :] = footer + reset_tail
    assert len(fw) == FIRMWARE_SIZE
    return bytes(fw)


# --------------------------------------------------------------------------------------------
# Kernel (bzImage with an EFI stub, i.e. also a PE/COFF image)
# --------------------------------------------------------------------------------------------


class PeSectionSpec(NamedTuple):
    name: bytes
    virtual_size: int
    virtual_address: int
    raw_size: int
    raw_offset: int
    characteristics: int


_PE_OFFSET = 0x40  # e_lfanew, as in every x86 EFI-stub kernel
_PE_SIZE_OF_HEADERS = 0x1000
_PE_DATA_DIRECTORIES = 16
#: Real EFI-stub kernels declare only 6 data directories so that the section table ends
#: before the setup header at 0x1f1. We use the full 16 (the PE default) to exercise parsers
#: that must not assume a 160-byte optional header; 4 section headers still fit below 0x1f1.
_PE_OPTIONAL_HEADER_SIZE = 112 + 8 * _PE_DATA_DIRECTORIES

#: The table lists .data before .text although .text comes first in the file: Authenticode
#: hashes sections in file order, so a parser that keeps table order gets a different digest.
KERNEL_SECTIONS: tuple[PeSectionSpec, ...] = (
    PeSectionSpec(b".setup", 0x2000, 0x1000, 0x2000, 0x1000, 0x42000040),
    PeSectionSpec(b".compat", 0x1000, 0x3000, 0x1000, 0x3000, 0x42000040),
    PeSectionSpec(b".data", 0x8000, 0x16000, 0xA00, 0x16000, 0xC0000040),
    PeSectionSpec(b".text", 0x12000, 0x4000, 0x12000, 0x4000, 0x60000020),
)
_SECTIONS_END = max(s.raw_offset + s.raw_size for s in KERNEL_SECTIONS)
#: Real-mode setup = headers + .setup + .compat; the protected-mode kernel starts at .text.
_SETUP_SIZE = 0x4000
_SETUP_SECTS = _SETUP_SIZE // 512 - 1
#: Bytes between the last section and the certificate table. Authenticode hashes them; real
#: kernels have none, so this is the only input that exercises that step.
_UNSIGNED_TRAILER = 16
KERNEL_CERT_OFFSET = _SECTIONS_END + _UNSIGNED_TRAILER
#: One WIN_CERTIFICATE whose length is *not* a multiple of 8. sbsign pads the last entry so
#: real signed kernels are 8-byte aligned and OVMF's "pad the file size to 8" quirk adds
#: nothing; leaving the padding out makes that quirk contribute 4 zero bytes to the digest.
KERNEL_CERT_SIZE = 0x1FC
KERNEL_SIZE = KERNEL_CERT_OFFSET + KERNEL_CERT_SIZE
_KERNEL_VERSION_AT = 0xE00
_KERNEL_VERSION = b"6.1.0-dstack-example (dstack-mr synthetic kernel) #1 SMP\x00"

#: Linux setup-header fields (offset, struct format, value), protocol 2.15 as in Debian's
#: 6.1 and 6.12 kernels. QEMU rewrites type_of_loader, loadflags bit 7, heap_end_ptr,
#: cmd_line_ptr and the ramdisk fields before OVMF measures the image.
_SETUP_HEADER: tuple[tuple[int, str, int | bytes], ...] = (
    (0x1F1, "B", _SETUP_SECTS),
    (0x1F2, "H", 1),  # root_flags: mount root read-only
    (0x1F4, "I", (_SECTIONS_END - _SETUP_SIZE) // 16),  # syssize, in 16-byte paragraphs
    (0x1F8, "H", 0),  # ram_size
    (0x1FA, "H", 0xFFFF),  # vid_mode: normal
    (0x1FC, "H", 0),  # root_dev
    (0x1FE, "H", 0xAA55),  # boot_flag
    (0x200, "2s", b"\xeb\x6a"),  # jmp to 0x26c, just past the 2.15 header
    (0x202, "4s", b"HdrS"),
    (0x206, "H", 0x020F),  # boot protocol 2.15
    (0x208, "I", 0),  # realmode_swtch
    (0x20C, "H", 0x1000),  # start_sys_seg
    (0x20E, "H", _KERNEL_VERSION_AT - 0x200),  # kernel_version string, relative to 0x200
    (0x210, "B", 0),  # type_of_loader: none until QEMU sets it
    (0x211, "B", 0x01),  # loadflags: LOADED_HIGH
    (0x212, "H", 0x8000),  # setup_move_size
    (0x214, "I", 0x100000),  # code32_start
    (0x218, "I", 0),  # ramdisk_image
    (0x21C, "I", 0),  # ramdisk_size
    (0x220, "I", 0),  # bootsect_kludge
    (0x224, "H", 0x3E00),  # heap_end_ptr
    (0x228, "I", 0),  # cmd_line_ptr
    (0x22C, "I", 0x7FFFFFFF),  # initrd_addr_max, Linux's 2 GiB bootloader-bug workaround
    (0x230, "I", 0x200000),  # kernel_alignment
    (0x234, "B", 1),  # relocatable_kernel
    (0x235, "B", 21),  # min_alignment: 2 MiB
    # xloadflags 0x7f as in Debian's kernels. QEMU raises the initrd limit to 4 GiB on bit 1
    # (CAN_BE_LOADED_ABOVE_4G), the reference implementation on bit 6; with both set they
    # agree, so the example's RTMR1 is what a real QEMU would produce.
    (0x236, "H", 0x7F),
    (0x238, "I", 0x7FF),  # cmdline_size
    (0x23C, "I", 0),  # hardware_subarch
    (0x240, "Q", 0),  # hardware_subarch_data
    (0x248, "I", 0x2CC),  # payload_offset
    (0x24C, "I", 0x11000),  # payload_length
    (0x250, "Q", 0),  # setup_data
    (0x258, "Q", 0x1000000),  # pref_address
    (0x260, "I", 0x2000000),  # init_size
    (0x264, "I", 0x11190),  # handover_offset
    (0x268, "I", 0),  # kernel_info_offset: none
)


def _pe_checksum(image: bytes | bytearray, checksum_at: int) -> int:
    """The PE CheckSum: a folded 16-bit sum of the file (field itself as 0) plus its size."""
    data = bytes(image[:checksum_at]) + bytes(4) + bytes(image[checksum_at + 4 :])
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("<H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (total + len(image)) & 0xFFFFFFFF


def build_kernel() -> bytes:
    """A ~91 KiB signed-looking x86-64 EFI-stub bzImage (Linux boot protocol 2.15)."""
    k = bytearray(_stream("dstack-mr example kernel", KERNEL_SIZE))
    k[:_PE_SIZE_OF_HEADERS] = bytes(_PE_SIZE_OF_HEADERS)
    # Setup code follows the header; only the 16-bit boot path would ever run it.
    k[0x26C:_PE_SIZE_OF_HEADERS] = _stream("dstack-mr example setup", _PE_SIZE_OF_HEADERS - 0x26C)

    k[0:2] = b"MZ"
    struct.pack_into("<I", k, 0x3C, _PE_OFFSET)
    coff = _PE_OFFSET + 4
    k[_PE_OFFSET:coff] = b"PE\x00\x00"
    # Machine x86-64; one (empty) symbol as the kernel's build emits; characteristics
    # EXECUTABLE_IMAGE | LINE_NUMS_STRIPPED | DEBUG_STRIPPED.
    struct.pack_into(
        "<HHIIIHH", k, coff, 0x8664, len(KERNEL_SECTIONS), 0, 0, 1, _PE_OPTIONAL_HEADER_SIZE, 0x206
    )

    text = next(s for s in KERNEL_SECTIONS if s.name == b".text")
    data = next(s for s in KERNEL_SECTIONS if s.name == b".data")
    size_of_image = max(s.virtual_address + s.virtual_size for s in KERNEL_SECTIONS)
    opt = coff + 20
    struct.pack_into(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        k,
        opt,
        0x20B,  # PE32+
        0x02,
        0x14,  # linker version 2.20, as the kernel's build writes it
        text.virtual_size,  # SizeOfCode
        data.virtual_size,  # SizeOfInitializedData
        0,  # SizeOfUninitializedData
        text.virtual_address + 0x10F30,  # AddressOfEntryPoint (efi_pe_entry)
        text.virtual_address,  # BaseOfCode
        0,  # ImageBase: the stub relocates itself
        _PAGE,  # SectionAlignment
        0x200,  # FileAlignment
        0,
        0,  # OS version
        1,
        0,  # image version (the stub's "LINUX_EFISTUB_MAJOR_VERSION")
        0,
        0,  # subsystem version
        0,  # Win32VersionValue
        size_of_image,
        _PE_SIZE_OF_HEADERS,
        0,  # CheckSum, filled in last
        10,  # Subsystem: EFI application
        0x100,  # DllCharacteristics: NX_COMPAT
        0,
        0,
        0,
        0,  # stack/heap reserve and commit
        0,  # LoaderFlags
        _PE_DATA_DIRECTORIES,
    )
    # Data directory 4 (security) holds a *file offset*, not an RVA, unlike all the others.
    struct.pack_into("<II", k, opt + 112 + 8 * 4, KERNEL_CERT_OFFSET, KERNEL_CERT_SIZE)

    table = opt + _PE_OPTIONAL_HEADER_SIZE
    for i, s in enumerate(KERNEL_SECTIONS):
        struct.pack_into(
            "<8sIIIIIIHHI",
            k,
            table + 40 * i,
            s.name,
            s.virtual_size,
            s.virtual_address,
            s.raw_size,
            s.raw_offset,
            0,
            0,
            0,
            0,
            s.characteristics,
        )
    table_end = table + 40 * len(KERNEL_SECTIONS)
    assert table_end <= 0x1F1, "PE section table would overlap the Linux setup header"
    # Real kernels leave 0xff between the PE headers and the setup header.
    k[table_end:0x1F1] = b"\xff" * (0x1F1 - table_end)
    for offset, fmt, value in _SETUP_HEADER:
        struct.pack_into("<" + fmt, k, offset, value)
    k[_KERNEL_VERSION_AT : _KERNEL_VERSION_AT + len(_KERNEL_VERSION)] = _KERNEL_VERSION

    # WIN_CERTIFICATE: dwLength, revision 2.0, type PKCS_SIGNED_DATA, then a DER SEQUENCE
    # standing in for the Authenticode signature (its contents are never parsed).
    body_len = KERNEL_CERT_SIZE - 8 - 4
    cert = struct.pack("<IHH", KERNEL_CERT_SIZE, 0x0200, 0x0002)
    cert += b"\x30\x82" + body_len.to_bytes(2, "big") + _stream("dstack-mr example cert", body_len)
    k[KERNEL_CERT_OFFSET:] = cert

    struct.pack_into("<I", k, opt + 64, _pe_checksum(k, opt + 64))
    assert len(k) == KERNEL_SIZE
    return bytes(k)


# --------------------------------------------------------------------------------------------
# Initrd (gzip-wrapped cpio "newc" archive)
# --------------------------------------------------------------------------------------------

_INIT_SCRIPT = b"""#!/bin/sh
# dstack-mr example initrd: built to be measured, not booted.
echo "dstack-mr example image"
exec /bin/sh
"""
_INITRD_PAYLOAD = 60 * 1024


def _cpio_entry(ino: int, name: str, mode: int, data: bytes = b"", rdev: int = 0) -> bytes:
    nlink = 2 if mode & 0o170000 == 0o040000 else 1
    encoded = name.encode() + b"\x00"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    entry = header + encoded
    entry += bytes(-len(entry) % 4)  # name padded so the data starts 4-byte aligned
    return entry + data + bytes(-len(data) % 4)


def _gzip_stored(data: bytes) -> bytes:
    """gzip with uncompressed deflate blocks: valid for the kernel's unpacker, and unlike
    ``gzip.compress`` identical on every zlib (zlib-ng compresses differently)."""
    out = bytearray(b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff")  # mtime 0, OS unknown
    chunks = [data[i : i + 0xFFFF] for i in range(0, len(data), 0xFFFF)] or [b""]
    for i, chunk in enumerate(chunks):
        final = 1 if i == len(chunks) - 1 else 0
        out += bytes([final]) + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk
    out += struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return bytes(out)


def build_initrd() -> bytes:
    """A ~62 KiB initramfs: /init, /dev/console and an opaque 60 KiB file, gzip-wrapped."""
    archive = b"".join(
        (
            _cpio_entry(1, ".", 0o040755),
            _cpio_entry(2, "dev", 0o040755),
            _cpio_entry(3, "dev/console", 0o020600, rdev=(5 << 8) | 1),
            _cpio_entry(4, "init", 0o100755, _INIT_SCRIPT),
            _cpio_entry(
                5, "example.bin", 0o100644, _stream("dstack-mr example initrd", _INITRD_PAYLOAD)
            ),
            _cpio_entry(0, "TRAILER!!!", 0),
        )
    )
    archive += bytes(-len(archive) % 512)  # GNU cpio pads archives to 512-byte blocks
    return _gzip_stored(archive)


# --------------------------------------------------------------------------------------------
# ACPI tables (QEMU's etc/acpi/tables blob)
# --------------------------------------------------------------------------------------------

ACPI_BLOB_SIZE = 0x20000


def _acpi_table(signature: bytes, revision: int, body: bytes) -> bytes:
    """Standard 36-byte header with QEMU's OEM fields, checksum making the table sum to 0."""
    length = 36 + len(body)
    table = bytearray(
        struct.pack(
            "<4sIBB6s8sI4sI", signature, length, revision, 0, b"BOCHS ", b"BXPC    ", 1, b"BXPC", 1
        )
        + body
    )
    table[9] = (-sum(table)) & 0xFF
    return bytes(table)


def _pkg_length(payload: int) -> bytes:
    """AML PkgLength for ``payload`` bytes; the encoded length includes its own bytes."""
    if payload + 1 < 0x40:
        return bytes([payload + 1])
    for extra in (1, 2, 3):
        total = payload + 1 + extra
        if total < 1 << (4 + 8 * extra):
            rest = (total >> 4).to_bytes(extra, "little")
            return bytes([(extra << 6) | (total & 0xF)]) + rest
    raise ValueError(f"AML package of {payload} bytes is too large")


def _aml_package(opcode: bytes, body: bytes) -> bytes:
    return opcode + _pkg_length(len(body)) + body


def _aml_name(seg: bytes, value: bytes) -> bytes:
    return b"\x08" + seg + value


def _aml_eisaid(text: str) -> bytes:
    """EisaId("PNP0A03"): three 5-bit letters and four hex digits, stored big-endian."""
    letters = [(ord(c) - 0x40) & 0x1F for c in text[:3]]
    value = (letters[0] << 26) | (letters[1] << 21) | (letters[2] << 16) | int(text[3:], 16)
    return b"\x0c" + value.to_bytes(4, "big")


_AML_ZERO, _AML_ONE = b"\x00", b"\x01"


def _dsdt_aml() -> bytes:
    """Scope(\\_SB) { PCI0 host bridge, COM1 } and \\_S5 — a tiny but parseable DSDT."""
    pci0 = _aml_package(
        b"\x5b\x82",
        b"PCI0"
        + _aml_name(b"_HID", _aml_eisaid("PNP0A08"))
        + _aml_name(b"_CID", _aml_eisaid("PNP0A03"))
        + _aml_name(b"_ADR", _AML_ZERO)
        + _aml_name(b"_UID", _AML_ZERO),
    )
    com1 = _aml_package(
        b"\x5b\x82",
        b"COM1" + _aml_name(b"_HID", _aml_eisaid("PNP0501")) + _aml_name(b"_UID", _AML_ONE),
    )
    scope = _aml_package(b"\x10", b"\\_SB_" + pci0 + com1)
    s5 = _aml_name(b"_S5_", _aml_package(b"\x12", b"\x04" + _AML_ZERO * 4))
    return scope + s5


def _gas(space: int, bit_width: int, address: int) -> bytes:
    """Generic Address Structure (12 bytes), byte access size left 0 as QEMU does."""
    return struct.pack("<BBBBQ", space, bit_width, 0, 0, address)


def _facp_body(facs_at: int, dsdt_at: int) -> bytes:
    """FADT revision 3 for QEMU's q35 (ICH9 PM at 0x600), minus SMM like a TDX guest."""
    io = 1  # GAS address space: system I/O
    body = struct.pack("<II", facs_at, dsdt_at)  # FIRMWARE_CTRL, DSDT
    body += struct.pack("<BBHIBBBB", 1, 0, 9, 0, 0, 0, 0, 0)  # INT_MODEL .. PSTATE_CNT; SCI 9
    body += struct.pack("<IIIIIIII", 0x600, 0, 0x604, 0, 0, 0x608, 0x620, 0)  # PM blocks
    body += struct.pack("<BBBBBBBB", 4, 2, 0, 4, 0x10, 0, 0, 0)  # block lengths, GPE1, CST
    body += struct.pack("<HHHH", 0x0FFF, 0x0FFF, 0, 0)  # C2/C3 latency (unsupported), flush
    body += struct.pack("<BBBBB", 0, 0, 0, 0, 0x32)  # duty cycle, RTC alarms, CENTURY
    body += struct.pack("<HBI", 0x0002, 0, 0x000084A5)  # IAPC_BOOT_ARCH: 8042; flags
    body += _gas(io, 8, 0xCF9) + struct.pack("<BHB", 0x0F, 0, 0)  # RESET_REG/VALUE, ARM, minor
    body += struct.pack("<QQ", 0, dsdt_at)  # X_FIRMWARE_CTRL (unused), X_DSDT
    body += _gas(io, 32, 0x600) + _gas(0, 0, 0)  # X_PM1a/b_EVT_BLK
    body += _gas(io, 16, 0x604) + _gas(0, 0, 0)  # X_PM1a/b_CNT_BLK
    body += _gas(0, 0, 0) + _gas(io, 32, 0x608)  # X_PM2_CNT_BLK, X_PM_TMR_BLK
    body += _gas(io, 128, 0x620) + _gas(0, 0, 0)  # X_GPE0/1_BLK
    return body


def _apic_body(cpus: int) -> bytes:
    body = struct.pack("<II", 0xFEE00000, 1)  # local APIC address, PCAT_COMPAT
    for cpu in range(cpus):
        body += struct.pack("<BBBBI", 0, 8, cpu, cpu, 1)  # processor local APIC, enabled
    body += struct.pack("<BBBBII", 1, 12, 0, 0, 0xFEC00000, 0)  # I/O APIC
    # IRQ0 -> GSI 2, and the PCI link IRQs level-triggered active-high, as QEMU emits them.
    body += struct.pack("<BBBBIH", 2, 10, 0, 0, 2, 0)
    for irq in (5, 9, 10, 11):
        body += struct.pack("<BBBBIH", 2, 10, 0, irq, irq, 0x000D)
    body += struct.pack("<BBBHB", 4, 6, 0xFF, 0, 1)  # local APIC NMI on LINT1, all CPUs
    return body


def build_acpi_tables() -> bytes:
    """QEMU-style ``etc/acpi/tables``: FACS, DSDT, FACP, APIC, MCFG, WAET, RSDT, 128 KiB."""
    facs = b"FACS" + struct.pack("<I", 64) + bytes(56)  # no checksum field in the FACS
    facs_at = 0
    dsdt_at = facs_at + len(facs)
    dsdt = _acpi_table(b"DSDT", 1, _dsdt_aml())
    facp_at = dsdt_at + len(dsdt)
    # QEMU's linker writes each pointer's target offset into the blob (the guest's loader
    # then adds the allocation base), so the offsets below are what a real blob holds.
    facp = _acpi_table(b"FACP", 3, _facp_body(facs_at, dsdt_at))
    apic_at = facp_at + len(facp)
    apic = _acpi_table(b"APIC", 3, _apic_body(2))
    mcfg_at = apic_at + len(apic)
    # One ECAM window at 0xb0000000 for segment 0, buses 0-255 (q35's default).
    mcfg = _acpi_table(b"MCFG", 1, bytes(8) + struct.pack("<QHBBI", 0xB0000000, 0, 0, 0xFF, 0))
    waet_at = mcfg_at + len(mcfg)
    waet = _acpi_table(b"WAET", 1, struct.pack("<I", 2))  # PM timer reads are reliable
    rsdt_at = waet_at + len(waet)
    rsdt = _acpi_table(b"RSDT", 1, struct.pack("<IIII", facp_at, apic_at, mcfg_at, waet_at))
    blob = facs + dsdt + facp + apic + mcfg + waet + rsdt
    assert len(blob) == rsdt_at + len(rsdt)
    return blob + bytes(ACPI_BLOB_SIZE - len(blob))


# --------------------------------------------------------------------------------------------
# Image directory
# --------------------------------------------------------------------------------------------


def write_example_image(directory: str | os.PathLike[str]) -> pathlib.Path:
    """Write the example image into ``directory`` (created if needed); return metadata.json."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / METADATA["bios"]).write_bytes(build_firmware())
    (directory / METADATA["kernel"]).write_bytes(build_kernel())
    (directory / METADATA["initrd"]).write_bytes(build_initrd())
    (directory / ACPI_TABLES_FILE).write_bytes(build_acpi_tables())
    metadata = directory / "metadata.json"
    metadata.write_text(json.dumps(METADATA, indent=2) + "\n", encoding="utf-8")
    return metadata
