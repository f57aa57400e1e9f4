"""An independent model of what the reference measures, written from SPEC.md's wording.

The tests compare the library with these functions on the synthetic inputs of
:mod:`dstack_mr.example`, so a bug in the library is not mirrored by the expectation (as it
would be if a test derived its expected values from the library's own output). They are
deliberately naive (one record, one page at a time) and only as general as the example
image needs.
"""

from __future__ import annotations

import hashlib
import struct
import uuid

from dstack_mr import example

SPLIT = 0xB000_0000  # 2.75 GiB: TD HOB split and QEMU's fixed low-memory layout
H = hashlib.sha384


def spec_mrtd(firmware: bytes, two_pass: bool) -> bytes:
    """MRTD as SPEC.md words it: 128-byte MEM.PAGE.ADD / MR.EXTEND records, 256-byte chunks."""

    def record(op: bytes, gpa: int) -> bytes:
        return op.ljust(16, b"\0") + struct.pack("<Q", gpa) + bytes(104)

    def page(op: str, gpa: int, data_at: int) -> bytes:
        if op == "add":
            return record(b"MEM.PAGE.ADD", gpa)
        return b"".join(
            record(b"MR.EXTEND", gpa + c * 256) + firmware[data_at + c * 256 :][:256]
            for c in range(16)
        )

    h = H()
    for s in example.FIRMWARE_SECTIONS:
        ops = [op for op, on in (("add", not s.attributes & 2), ("ext", s.attributes & 1)) if on]
        pages = [(s.memory_address + p * 0x1000, s.data_offset + p * 0x1000)
                 for p in range(s.memory_data_size // 0x1000)]  # fmt: skip
        if two_pass:  # per section: every ADD, then every EXTEND
            for op in ops:
                for gpa, at in pages:
                    h.update(page(op, gpa, at))
        else:  # per page: its ADD, then its EXTENDs
            for gpa, at in pages:
                for op in ops:
                    h.update(page(op, gpa, at))
    return h.digest()


def spec_td_hob(memory_size: int) -> bytes:
    """The TD HOB of the example firmware, range by range as SPEC.md lists them."""
    accepted = sorted(
        (s.memory_address, s.memory_address + s.memory_data_size)
        for s in example.FIRMWARE_SECTIONS
        if s.section_type in (example.SECTION_TD_HOB, example.SECTION_TEMP_MEM)
    )
    # The example's accepted ranges, by hand: 0x800000+0x6000, 0x809000+0x2000 (TD_HOB),
    # 0x80B000+0x2000, 0x810000+0x10000. The gaps between them are unaccepted.
    assert accepted == [
        (0x800000, 0x806000),
        (0x809000, 0x80B000),
        (0x80B000, 0x80D000),
        (0x810000, 0x820000),
    ]
    ranges = [
        (7, 0, 0x800000),
        (0, 0x800000, 0x6000),
        (7, 0x806000, 0x3000),
        (0, 0x809000, 0x2000),
        (0, 0x80B000, 0x2000),
        (7, 0x80D000, 0x3000),
        (0, 0x810000, 0x10000),
    ]
    last = 0x820000
    if memory_size >= SPLIT:
        ranges += [(7, last, 0x8000_0000 - last), (7, 0x1_0000_0000, memory_size - 0x8000_0000)]
    else:
        ranges += [(7, last, memory_size - last)]
    body = b"".join(
        struct.pack("<HHI16sBxxxIQQ", 3, 48, 0, bytes(16), kind, 7, start, length)
        for kind, start, length in ranges
    )
    end_of_hob_list = 0x809000 + 56 + len(body) + 8
    phit = struct.pack("<HHIII", 1, 56, 0, 9, 0) + bytes(4 * 8) + struct.pack("<Q", end_of_hob_list)
    assert len(phit) == 56
    return phit + body


def spec_initrd_address(initrd_size: int, memory_size: int) -> int:
    """QEMU's ramdisk_image for the example kernel (protocol 2.15, xloadflags bit 6 set, so
    the initrd may go up to 4 GiB): the top of low RAM minus 0x28000 of ACPI data, minus 1,
    minus the initrd, rounded down to 4 KiB. Low RAM ends at memory_size below 2.75 GiB and
    at 2 GiB from 2.75 GiB up (QEMU's q35 lowmem split)."""
    below_4g = memory_size if memory_size < SPLIT else 0x8000_0000
    return (below_4g - 0x28000 - 1 - initrd_size) & ~0xFFF


def spec_authenticode(image: bytes) -> bytes:
    """PE Authenticode SHA-384 (the PE/COFF spec's steps) plus OVMF's pad to 8 bytes."""
    pe = struct.unpack_from("<I", image, 0x3C)[0]
    nsec = struct.unpack_from("<H", image, pe + 6)[0]
    opt_size = struct.unpack_from("<H", image, pe + 20)[0]
    opt = pe + 24
    assert struct.unpack_from("<H", image, opt)[0] == 0x20B  # the example kernel is PE32+
    checksum, cert_dir = opt + 64, opt + 112 + 8 * 4
    headers = struct.unpack_from("<I", image, opt + 60)[0]
    cert_size = struct.unpack_from("<I", image, cert_dir + 4)[0]
    h = H(image[:checksum] + image[checksum + 4 : cert_dir] + image[cert_dir + 8 : headers])
    table = opt + opt_size
    # (PointerToRawData, SizeOfRawData) of each section, hashed in file order.
    sections = sorted(
        struct.unpack_from("<II", image, table + 40 * i + 16)[::-1] for i in range(nsec)
    )
    hashed = headers
    for ptr, size in sections:
        h.update(image[ptr : ptr + size])
        hashed += size
    h.update(image[hashed : len(image) - cert_size])
    h.update(bytes(-len(image) % 8))
    return h.digest()


def sha384(data: bytes) -> bytes:
    return H(data).digest()


def spec_replay(digests: list[bytes]) -> bytes:
    mr = bytes(48)
    for d in digests:
        mr = sha384(mr + d)
    return mr


def spec_efi_variable(guid: str, name: str) -> bytes:
    data = uuid.UUID(guid).bytes_le + struct.pack("<QQ", len(name), 0) + name.encode("utf-16-le")
    return sha384(data)


def spec_acpi(blob: bytes) -> tuple[bytes, bytes]:
    """(loader, RSDP) for a tables blob, following SPEC.md's ACPI section command by command."""
    found: dict[bytes, tuple[int, int]] = {}
    off = 0
    while off + 8 <= len(blob) and b"RSDT" not in found:  # QEMU writes the RSDT last
        sig, length = blob[off : off + 4], struct.unpack_from("<I", blob, off + 4)[0]
        found.setdefault(sig, (off, length))
        off += length
    tables, rsdp = b"etc/acpi/tables".ljust(56, b"\0"), b"etc/acpi/rsdp".ljust(56, b"\0")

    def allocate(name: bytes, align: int, zone: int) -> bytes:
        return struct.pack("<I", 1) + name + struct.pack("<IB", align, zone)

    def pointer(src: bytes, dst: bytes, offset: int, size: int) -> bytes:
        return struct.pack("<I", 2) + src + dst + struct.pack("<IB", offset, size)

    def checksum(name: bytes, result: int, start: int, length: int) -> bytes:
        return struct.pack("<I", 3) + name + struct.pack("<III", result, start, length)

    def table_checksum(sig: bytes) -> bytes:
        at, length = found[sig]
        return checksum(tables, at + 9, at, length)

    facp, rsdt = found[b"FACP"][0], found[b"RSDT"][0]
    commands = [
        allocate(rsdp, 16, 2),
        allocate(tables, 64, 1),
        table_checksum(b"DSDT"),
        pointer(tables, tables, facp + 36, 4),
        pointer(tables, tables, facp + 40, 4),
        pointer(tables, tables, facp + 140, 8),
        table_checksum(b"FACP"),
        table_checksum(b"APIC"),
        table_checksum(b"MCFG"),
        table_checksum(b"WAET"),
        pointer(tables, tables, rsdt + 36, 4),
        pointer(tables, tables, rsdt + 40, 4),
        pointer(tables, tables, rsdt + 44, 4),
        pointer(tables, tables, rsdt + 48, 4),
        table_checksum(b"RSDT"),
        pointer(rsdp, tables, 16, 4),
        checksum(rsdp, 8, 0, 20),
    ]
    loader = b"".join(c + bytes(128 - len(c)) for c in commands)
    loader += bytes(4096 - len(loader))
    rsdp_blob = b"RSD PTR " + b"\0" + b"BOCHS " + b"\0" + struct.pack("<I", rsdt)
    return loader, rsdp_blob


GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SECURITY_DB = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
CFV = bytes.fromhex(
    "344bc51c980ba621aaa00da3ed7436f7d6e549197dfe699515dfa2c6583d95e6"
    "412af21c097d473155875ffd561d6790"
)
BOOT0000_PRE202505 = bytes.fromhex(
    "23ada07f5261f12f34a0bd8e46760962d6b4d576a416f1fea1c64bc656b1d28e"
    "acf7047ae6e967c58fd2a98bfa74c298"
)


#: The stable202505 variable_authority event, as the reference's vectors record it.
VARIABLE_AUTHORITY = bytes.fromhex(
    "fb66919801f1dfc9c4c273b6a739380790cb0fd3cb706a42f6ac050510ebc861"
    "8e7fba53a1564522f5c6f0dc9e1f41a6"
)
OVMF_FV = "7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1"


def spec_load_option(attributes: int, description: str, file_guid: str) -> bytes:
    """EFI_LOAD_OPTION: attributes, device-path length, description + NUL, MEDIA_FV /
    MEDIA_FV_FILE / end nodes (SPEC.md, stable-202505 layout)."""
    path = (
        bytes([4, 7, 20, 0]) + uuid.UUID(OVMF_FV).bytes_le
        + bytes([4, 6, 20, 0]) + uuid.UUID(file_guid).bytes_le
        + bytes([0x7F, 0xFF, 4, 0])
    )  # fmt: skip
    head = struct.pack("<IH", attributes, len(path))
    return head + description.encode("utf-16-le") + b"\0\0" + path


def spec_events(memory_size: int = 2 << 30, variant: str = "pre202505") -> list[list[bytes]]:
    """The example image's RTMR0-2 event digests (default QEMU), one list per register, from
    SPEC.md's RTMR0 lists and the fixed RTMR1/RTMR2 events."""
    blob = example.build_acpi_tables()
    loader, rsdp = spec_acpi(blob)
    variables = [
        spec_efi_variable(GLOBAL, "SecureBoot"),
        spec_efi_variable(GLOBAL, "PK"),
        spec_efi_variable(GLOBAL, "KEK"),
        spec_efi_variable(SECURITY_DB, "db"),
        spec_efi_variable(SECURITY_DB, "dbx"),
        sha384(bytes(4)),
        sha384(loader),
        sha384(rsdp),
        sha384(blob),
    ]
    head = [sha384(spec_td_hob(memory_size)), CFV]
    if variant == "pre202505":
        rtmr0 = [*head, *variables, sha384(bytes(2)), BOOT0000_PRE202505]
    else:
        fwcfg = [sha384(bytes(2)), sha384(b"/rom@genroms/linuxboot_dma.bin\0")]
        tail = [
            VARIABLE_AUTHORITY,
            sha384(bytes([0, 0, 1, 0])),
            sha384(spec_load_option(0x109, "BootManagerMenuApp",
                                    "eec25bdc-67f2-4d95-b1d5-f81b2039d11d")),
            sha384(spec_load_option(0x101, "EFI Firmware Setup",
                                    "462caa21-7614-4503-836e-8ab6f4662331")),
        ]  # fmt: skip
        rtmr0 = [*head, *fwcfg, *variables, *tail]
    initrd = example.build_initrd()
    kd = bytearray(example.build_kernel())
    kd[0x210] = 0xB0
    kd[0x211] |= 0x80
    kd[0x224:0x228] = (0xFE00).to_bytes(4, "little")
    kd[0x228:0x22C] = (0x20000).to_bytes(4, "little")
    kd[0x218:0x220] = struct.pack("<II", spec_initrd_address(len(initrd), memory_size), len(initrd))
    rtmr1 = [
        spec_authenticode(bytes(kd)),
        sha384(b"Calling EFI Application from Boot Option"),
        sha384(bytes(4)),
        sha384(b"Exit Boot Services Invocation"),
        sha384(b"Exit Boot Services Returned with Success"),
    ]
    cmdline = example.METADATA["cmdline"] + " initrd=initrd"
    rtmr2 = [sha384(cmdline.encode("utf-16-le") + b"\0\0"), sha384(initrd)]
    return [rtmr0, rtmr1, rtmr2]


def spec_registers(memory_size: int = 2 << 30, two_pass: bool = False) -> dict[str, bytes]:
    """MRTD and RTMR0-2 of the example image on a default-QEMU machine of ``memory_size``."""
    logs = spec_events(memory_size)
    return {
        "mrtd": spec_mrtd(example.build_firmware(), two_pass),
        **{f"rtmr{i}": spec_replay(log) for i, log in enumerate(logs)},
    }
