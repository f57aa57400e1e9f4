"""QEMU's setup-header patches for every boot-protocol generation, computed by hand.

Real dstack kernels all speak protocol 2.15, so the golden vectors never reach the older
branches of QEMU's loader; here each branch gets a kernel whose header says that version.
The expected bytes follow QEMU's x86 ``-kernel`` loader and Linux's boot protocol document.
"""

from __future__ import annotations

import re
import struct

import pytest

from dstack_mr import example, kernel
from dstack_mr.errors import KernelError

GIB = 1 << 30
INITRD = 0x12345


def with_header(protocol: int, loadflags: int = 0x01, initrd_max: int = 0x7FFF_FFFF,
                xloadflags: int = 0x7F) -> bytes:  # fmt: skip
    k = bytearray(example.build_kernel())
    struct.pack_into("<H", k, 0x206, protocol)
    k[0x211] = loadflags
    struct.pack_into("<I", k, 0x22C, initrd_max)
    struct.pack_into("<H", k, 0x236, xloadflags)
    return bytes(k)


def fields(k: bytes | bytearray) -> dict[str, int]:
    return {
        "type_of_loader": k[0x210],
        "loadflags": k[0x211],
        "heap_end_ptr": struct.unpack_from("<H", k, 0x224)[0],
        "cmd_line_ptr": struct.unpack_from("<I", k, 0x228)[0],
        "cl_magic": struct.unpack_from("<H", k, 0x20)[0],
        "cl_offset": struct.unpack_from("<H", k, 0x22)[0],
        "ramdisk_image": struct.unpack_from("<I", k, 0x218)[0],
        "ramdisk_size": struct.unpack_from("<I", k, 0x21C)[0],
    }


# (protocol, loadflags) -> what QEMU writes. Below 2.00 or without LOADED_HIGH the setup
# goes to 0x90000 and the command line to 0x9A000, else to 0x10000 / 0x20000; 2.00 sets the
# loader type, 2.01 CAN_USE_HEAP and heap_end = cmdline - setup - 0x200, 2.02 the 32-bit
# cmd_line_ptr (older ones get the 0xA33F magic and a 16-bit offset at 0x20).
CASES = [
    (0x01FF, 0x01, {"type_of_loader": 0, "loadflags": 0x01, "heap_end_ptr": 0x3E00,
                    "cmd_line_ptr": 0, "cl_magic": 0xA33F, "cl_offset": 0xA000}),
    (0x0200, 0x00, {"type_of_loader": 0xB0, "loadflags": 0x00, "heap_end_ptr": 0x3E00,
                    "cmd_line_ptr": 0, "cl_magic": 0xA33F, "cl_offset": 0xA000}),
    (0x0201, 0x01, {"type_of_loader": 0xB0, "loadflags": 0x81, "heap_end_ptr": 0xFE00,
                    "cmd_line_ptr": 0, "cl_magic": 0xA33F, "cl_offset": 0x0000}),
    (0x0201, 0x00, {"type_of_loader": 0xB0, "loadflags": 0x80, "heap_end_ptr": 0x9E00,
                    "cmd_line_ptr": 0, "cl_magic": 0xA33F, "cl_offset": 0xA000}),
    (0x0202, 0x00, {"type_of_loader": 0xB0, "loadflags": 0x80, "heap_end_ptr": 0x9E00,
                    "cmd_line_ptr": 0x9A000}),
    (0x020F, 0x01, {"type_of_loader": 0xB0, "loadflags": 0x81, "heap_end_ptr": 0xFE00,
                    "cmd_line_ptr": 0x20000}),
]  # fmt: skip


@pytest.mark.parametrize(("protocol", "loadflags", "want"), CASES)
def test_setup_header_patches(protocol: int, loadflags: int, want: dict[str, int]) -> None:
    k = with_header(protocol, loadflags)
    before = fields(k)
    patched = kernel.patch(k, 0, 2 * GIB)  # no initrd: nothing about it is written
    got = fields(patched)
    expected = {**before, **want, "ramdisk_image": 0, "ramdisk_size": 0}
    assert got == expected
    assert len(patched) == len(k) and k == with_header(protocol, loadflags)  # input untouched


@pytest.mark.parametrize(
    ("protocol", "initrd_max", "xloadflags", "memory", "limit"),
    [
        # < 2.03: no initrd_addr_max field; QEMU assumes 0x37FFFFFF.
        (0x0202, 0x7FFF_FFFF, 0x7F, 2 * GIB, 0x37FF_FFFF),
        # 2.03-2.11: initrd_addr_max, capped by the RAM below 4 GiB less ACPI data, minus 1.
        (0x0203, 0x7FFF_FFFF, 0x7F, 2 * GIB, 0x8000_0000 - 0x28000 - 1),
        (0x020B, 0x1000_0000, 0x7F, 2 * GIB, 0x1000_0000),
        (0x0203, 0, 0x7F, 2 * GIB, 0x37FF_FFFF),  # 0 means the default
        # 2.12+: XLF_CAN_BE_LOADED_ABOVE_4G (bit 6 in the reference) lifts it to 4 GiB.
        (0x020C, 0x1000_0000, 0x40, 2 * GIB, 0x8000_0000 - 0x28000 - 1),
        (0x020C, 0x1000_0000, 0x3F, 2 * GIB, 0x37FF_FFFF),
        (0x020C, 0x1000_0000, 0x40, 1 * GIB, 0x4000_0000 - 0x28000 - 1),
    ],
)
def test_initrd_limit(protocol: int, initrd_max: int, xloadflags: int, memory: int,
                      limit: int) -> None:  # fmt: skip
    k = with_header(protocol, 0x01, initrd_max, xloadflags)
    want = (limit - INITRD) & ~0xFFF
    assert kernel.initrd_address(k, INITRD, memory) == want
    got = fields(kernel.patch(k, INITRD, memory))
    assert (got["ramdisk_image"], got["ramdisk_size"]) == (want, INITRD)


def test_initrd_exactly_at_the_limit() -> None:
    k = with_header(0x0202)
    assert kernel.initrd_address(k, 0x37FF_FFFE, 2 * GIB) == 0
    with pytest.raises(
        KernelError, match="initrd of 939524095 bytes does not fit below 0x37ffffff"
    ):
        kernel.initrd_address(k, 0x37FF_FFFF, 2 * GIB)


def test_acpi_data_must_fit() -> None:
    k = with_header(0x020F)
    assert kernel.initrd_address(k, 1, 0x28000 + 0x2000) == 0x1000
    with pytest.raises(KernelError, match="memory_size 0x27fff leaves no room below 4 GiB"):
        kernel.initrd_address(k, 1, 0x27FFF)
    # Exactly the ACPI data: available is 0, so the limit clamps to 0 and nothing fits.
    with pytest.raises(KernelError, match="does not fit below 0x0"):
        kernel.initrd_address(k, 1, 0x28000)


@pytest.mark.parametrize("protocol", [0x0100, 0x01FF])
def test_protocol_below_2_cannot_take_an_initrd(protocol: int) -> None:
    with pytest.raises(
        KernelError, match=rf"kernel boot protocol {protocol:#x} is older than 2.00"
    ):
        kernel.patch(with_header(protocol), 1, 2 * GIB)


def test_patch_rejects_short_kernel_and_huge_initrd() -> None:
    k = example.build_kernel()
    with pytest.raises(KernelError, match="kernel image is 4095 bytes; a bzImage is at least"):
        kernel.patch(k[:0xFFF], 0, 2 * GIB)
    assert len(kernel.patch(k[:0x1000], 0, 2 * GIB)) == 0x1000
    with pytest.raises(KernelError, match="initrd of 4294967296 bytes is too large"):
        kernel.patch(k, 1 << 32, 2 * GIB)
    with pytest.raises(KernelError, match="initrd of -1 bytes is too large"):
        kernel.patch(k, -1, 2 * GIB)


def test_fast_path_equals_full_copy_for_every_protocol() -> None:
    for protocol, loadflags, _ in CASES:
        k = with_header(protocol, loadflags)
        initrd = 0 if protocol < 0x200 else INITRD
        full = kernel.authenticode_sha384(kernel.patch(k, initrd, 2 * GIB))
        assert kernel.patched_kernel_digest(k, initrd, 2 * GIB) == full


# --- Authenticode: which header field is missing, and the two code paths -----------------------


def pe_offsets(k: bytes) -> dict[str, int]:
    pe = struct.unpack_from("<I", k, 0x3C)[0]
    opt = pe + 24
    return {"pe": pe, "opt": opt, "cert_dir": opt + 112 + 32,
            "table": opt + struct.unpack_from("<H", k, pe + 20)[0],
            "headers": struct.unpack_from("<I", k, opt + 60)[0]}  # fmt: skip


def test_header_field_past_the_end_is_named() -> None:
    k = bytes(example.build_kernel())
    o = pe_offsets(k)
    cases = [
        (k[:0x3C] + struct.pack("<I", len(k)) + k[0x40:], "PE signature: need a 4-byte integer"),
        (k[: o["opt"] + 1], "optional header magic: need a 2-byte integer"),
        (k[: o["opt"] + 62], "SizeOfHeaders: need a 4-byte integer"),
        (k[: o["cert_dir"] + 2], "certificate table address: need a 4-byte integer"),
        (k[: o["cert_dir"] + 6], "certificate table size: need a 4-byte integer"),
    ]
    for data, what in cases:
        with pytest.raises(KernelError, match=re.escape(what)):
            kernel.authenticode_sha384(data)


def test_section_table_past_the_end_is_named() -> None:
    k = bytearray(example.build_kernel())
    o = pe_offsets(bytes(k))
    # Enough section entries that entry i's PointerToRawData straddles the end of the data.
    i = -(-(o["headers"] - o["table"] - 22) // 40)
    struct.pack_into("<H", k, o["pe"] + 6, i + 1)
    size = o["table"] + 40 * i + 22
    with pytest.raises(KernelError, match=re.escape("PointerToRawData: need a 4-byte integer")):
        kernel.authenticode_sha384(bytes(k[:size]))
    with pytest.raises(KernelError, match=re.escape("SizeOfRawData: need a 4-byte integer")):
        kernel.authenticode_sha384(bytes(k[: size - 4]))


def test_small_kernel_takes_the_full_copy_path() -> None:
    k = bytes(example.build_kernel())[:0x10000]  # sections cut short: counted in full
    from spec_model import spec_authenticode

    want = spec_authenticode(bytes(kernel.patch(k, INITRD, 2 * GIB)))
    assert kernel.patched_kernel_digest(k, INITRD, 2 * GIB) == want


def test_headers_beyond_64k_fall_back_to_the_full_copy() -> None:
    k = bytearray(0x20000)  # no PE header where the 64 KiB head would find it
    with pytest.raises(KernelError, match=re.escape("no PE signature at offset 0x0")):
        kernel.patched_kernel_digest(bytes(k), 0, 2 * GIB)
    struct.pack_into("<H", k, 0x206, 0x020F)
    with pytest.raises(KernelError, match=re.escape("no PE signature at offset 0x0")):
        kernel.patched_kernel_digest(bytes(k), INITRD, 2 * GIB)
