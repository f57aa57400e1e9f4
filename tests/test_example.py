"""The synthetic example image: deterministic, and structurally what the real parsers expect.

The parsers here are written from SPEC.md independently of the library's own, so a mistake in
``dstack_mr.example`` is not hidden by the same mistake in ``dstack_mr.tdvf`` or ``.kernel``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_model import spec_mrtd

from dstack_mr import example, kernel, tdvf

FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
TDX_OFFSET_GUID = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
FOUR_GIB = 0x1_0000_0000

#: (data_offset, raw_data_size, memory_address, memory_data_size, type, attributes)
EXPECTED_SECTIONS = [
    (0x10000, 0x30000, 0xFFFD0000, 0x30000, 0, 1),  # BFV, MR_EXTEND
    (0x00000, 0x10000, 0xFFFC0000, 0x10000, 1, 0),  # CFV
    (0, 0, 0x810000, 0x10000, 3, 0),
    (0, 0, 0x80B000, 0x2000, 3, 0),
    (0, 0, 0x809000, 0x2000, 2, 0),
    (0, 0, 0x800000, 0x6000, 3, 0),
]

#: SHA-256 of each artefact. These pin "same bytes on every machine": a change here must be
#: deliberate, because measurements published for the example image would change with it.
PINNED_SHA256 = {
    "build_firmware": "5f58f3a1b19a0e3344121575a3fcf3d2f6cdd6fde46e5ec5ec9c26e858f92146",
    "build_kernel": "fb77bf8ed013815124421b2b8e73617fdd0ed84029b131dfa8f952daebdbda9a",
    "build_initrd": "2982d9c4f82903429ba99a36d8c8eb7ce0ada647103e30e56087fe24551c5f7a",
    "build_acpi_tables": "cff3fb73c3eb4f3f13feed4d1f0c50664244225abbf1dbd7a9bdcafd903aecb6",
}

BUILDERS = {
    "build_firmware": example.build_firmware,
    "build_kernel": example.build_kernel,
    "build_initrd": example.build_initrd,
    "build_acpi_tables": example.build_acpi_tables,
}


# --- determinism and sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builders_are_deterministic_and_pinned(name: str) -> None:
    first, second = BUILDERS[name](), BUILDERS[name]()
    assert first == second
    assert hashlib.sha256(first).hexdigest() == PINNED_SHA256[name]


def test_sizes() -> None:
    assert 256 << 10 <= len(example.build_firmware()) <= 1 << 20
    kernel = example.build_kernel()
    assert 64 << 10 <= len(kernel) <= 128 << 10
    assert len(kernel) >= 0x1000
    assert 48 << 10 <= len(example.build_initrd()) <= 80 << 10
    assert len(example.build_acpi_tables()) == 0x20000


def test_write_example_image_is_deterministic(tmp_path: Path) -> None:
    a = example.write_example_image(tmp_path / "a" / "nested")
    b = example.write_example_image(tmp_path / "b")
    assert a == tmp_path / "a" / "nested" / "metadata.json"
    names = sorted(p.name for p in a.parent.iterdir())
    assert names == sorted(
        ["ovmf.fd", "bzImage", "initramfs.cpio.gz", "acpi-tables.bin", "metadata.json"]
    )
    for name in names:
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), name
    # Writing again over an existing image is allowed and changes nothing.
    before = {n: (a.parent / n).read_bytes() for n in names}
    example.write_example_image(a.parent)
    assert {n: (a.parent / n).read_bytes() for n in names} == before


def test_metadata_json(tmp_path: Path) -> None:
    meta = json.loads(example.write_example_image(tmp_path).read_text())
    assert meta == example.METADATA
    assert meta == {
        "bios": "ovmf.fd",
        "kernel": "bzImage",
        "initrd": "initramfs.cpio.gz",
        "cmdline": "console=ttyS0 init=/init panic=1 net.ifnames=0 dstack.example=1",
        "version": "0.5.4",
    }
    # Below 0.5.10 the pre-202505 OVMF layout is the default; no variant key is needed.
    assert tuple(int(x) for x in meta["version"].split(".")) < (0, 5, 10)
    assert "ovmf_variant" not in meta
    assert (tmp_path / meta["bios"]).read_bytes() == example.build_firmware()
    assert (tmp_path / meta["kernel"]).read_bytes() == example.build_kernel()
    assert (tmp_path / meta["initrd"]).read_bytes() == example.build_initrd()


# --- firmware: an independent SPEC.md parser ----------------------------------------------------


def _u16(b: bytes, o: int) -> int:
    return int(struct.unpack_from("<H", b, o)[0])


def _u32(b: bytes, o: int) -> int:
    return int(struct.unpack_from("<I", b, o)[0])


def _guid_table(fw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """SPEC steps 1-2: the table length and its (guid, data) entries, last entry first."""
    end = len(fw) - 32
    assert fw[end - 16 : end] == FOOTER_GUID
    length = _u16(fw, end - 18)
    region = fw[end - 18 - length : end - 18]
    entries = []
    off = len(region)
    while off >= 18:
        guid, entry_len = region[off - 16 : off], _u16(region, off - 18)
        assert 18 <= entry_len <= off, f"bad entry length {entry_len} at {off:#x}"
        entries.append((guid, region[off - entry_len : off - 18]))
        if guid == TDX_OFFSET_GUID:
            break
        off -= entry_len
    return length, entries


def _descriptor(fw: bytes) -> tuple[int, list[tuple[int, ...]]]:
    _, entries = _guid_table(fw)
    guid, data = entries[-1]
    assert guid == TDX_OFFSET_GUID
    at = len(fw) - _u32(data, len(data) - 4)
    assert fw[at : at + 4] == b"TDVF"
    length, version, count = struct.unpack_from("<III", fw, at + 4)
    assert version == 1
    assert length == 16 + 32 * count
    return at, [struct.unpack_from("<IIQQII", fw, at + 16 + 32 * i) for i in range(count)]


def test_firmware_footer_mirrors_real_ovmf() -> None:
    fw = example.build_firmware()
    length, entries = _guid_table(fw)
    # The TDX entry is the first in the table, so the walk skips the two SEV entries.
    assert [g for g, _ in entries][-1] == TDX_OFFSET_GUID
    assert len(entries) == 3
    for _, data in entries:
        assert data  # every entry has data
    # As in OVMF, the length includes the footer entry (u16 + GUID) itself.
    assert length == sum(len(d) + 18 for _, d in entries) + 18


def test_firmware_descriptor_sections() -> None:
    fw = example.build_firmware()
    at, sections = _descriptor(fw)
    assert sections == EXPECTED_SECTIONS
    assert fw[at - 16 : at] == uuid.UUID("e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae").bytes_le
    for data_offset, raw, addr, size, kind, attrs in sections:
        assert addr % 0x1000 == 0 and size % 0x1000 == 0
        assert size >= raw
        if kind in (0, 1):  # flash volumes: file data mapped 1:1 below 4 GiB
            assert size == raw
            assert addr == FOUR_GIB - len(fw) + data_offset
            assert data_offset + raw <= len(fw)
            assert fw[data_offset + 40 : data_offset + 44] == b"_FVH"
            header = fw[data_offset : data_offset + 0x48]
            assert sum(struct.unpack("<36H", header)) % 0x10000 == 0
        else:
            assert raw == 0 and data_offset == 0 and attrs == 0
    bfv = sections[0]
    assert bfv[2] + bfv[3] == FOUR_GIB  # BFV ends at 4 GiB, holding the reset vector
    assert fw[-20:-16] == b"VTF\x00"


def test_firmware_content_is_not_trivial() -> None:
    fw = example.build_firmware()
    # Every 256-byte MR.EXTEND chunk of the BFV is distinct, so no two chunks can be swapped
    # without changing MRTD.
    chunks = {fw[i : i + 256] for i in range(0x10000, len(fw), 256)}
    assert len(chunks) == 0x30000 // 256


def test_firmware_with_library_parser() -> None:
    # Cross-check against the library's own parser (dstack_mr.tdvf).
    parsed = tdvf.parse(example.build_firmware())
    got = [
        (
            s.data_offset,
            s.raw_data_size,
            s.memory_address,
            s.memory_data_size,
            s.section_type,
            s.attributes,
        )
        for s in parsed.sections
    ]
    assert got == EXPECTED_SECTIONS
    assert parsed.td_hob_base == 0x809000
    fw = example.build_firmware()
    assert parsed.mrtd(two_pass=False) == spec_mrtd(fw, two_pass=False)
    assert parsed.mrtd(two_pass=True) == spec_mrtd(fw, two_pass=True)


# --- kernel -------------------------------------------------------------------------------------


def _pe(kernel: bytes) -> dict[str, int]:
    pe = _u32(kernel, 0x3C)
    coff = pe + 4
    opt = coff + 20
    return {
        "pe": pe,
        "sections": _u16(kernel, coff + 2),
        "opt_size": _u16(kernel, coff + 16),
        "opt": opt,
        "headers": _u32(kernel, opt + 60),
        "checksum": _u32(kernel, opt + 64),
        "ndirs": _u32(kernel, opt + 108),
        "cert_dir": opt + 112 + 8 * 4,
    }


def _section_table(kernel: bytes) -> list[tuple[bytes, int, int, int, int]]:
    h = _pe(kernel)
    table = h["opt"] + h["opt_size"]
    out = []
    for i in range(h["sections"]):
        name, vsize, va, raw_size, raw_ptr = struct.unpack_from("<8sIIII", kernel, table + 40 * i)
        out.append((name.rstrip(b"\x00"), vsize, va, raw_size, raw_ptr))
    return out


def test_kernel_pe_headers() -> None:
    k = example.build_kernel()
    h = _pe(k)
    assert k[:2] == b"MZ"
    assert k[h["pe"] : h["pe"] + 4] == b"PE\x00\x00"
    assert _u16(k, h["pe"] + 4) == 0x8664
    assert _u16(k, h["opt"]) == 0x20B
    assert h["ndirs"] == 16 and h["opt_size"] == 112 + 8 * 16
    assert h["sections"] >= 3
    table_end = h["opt"] + h["opt_size"] + 40 * h["sections"]
    assert table_end <= 0x1F1 <= h["headers"]
    # Sections tile the file from SizeOfHeaders on, but the table is not in file order.
    table = _section_table(k)
    offsets = [s[4] for s in table]
    assert offsets != sorted(offsets)
    pos = h["headers"]
    for _, _, va, raw_size, raw_ptr in sorted(table, key=lambda s: s[4]):
        assert raw_ptr == pos and raw_ptr % 0x200 == 0 and va % 0x1000 == 0
        pos += raw_size
    size_of_image = _u32(k, h["opt"] + 56)
    assert size_of_image == max(va + vsize for _, vsize, va, _, _ in table)


def test_kernel_certificate_directory() -> None:
    k = example.build_kernel()
    h = _pe(k)
    addr, size = struct.unpack_from("<II", k, h["cert_dir"])
    assert addr % 8 == 0
    assert addr + size == len(k)  # the certificate table ends the file
    last_section = max(s[4] + s[3] for s in _section_table(k))
    assert addr > last_section  # with some unsigned data in between
    dw_length, revision, cert_type = struct.unpack_from("<IHH", k, addr)
    assert (dw_length, revision, cert_type) == (size, 0x0200, 0x0002)
    assert k[addr + 8] == 0x30  # a DER SEQUENCE
    assert int.from_bytes(k[addr + 10 : addr + 12], "big") == size - 12
    # Unlike the real 8-aligned kernels, this one makes OVMF's pad-to-8 step matter.
    assert len(k) % 8 != 0


def test_kernel_pe_checksum() -> None:
    k = example.build_kernel()
    at = _pe(k)["opt"] + 64
    data = k[:at] + bytes(4) + k[at + 4 :] + b"\x00" * (len(k) % 2)
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] | data[i + 1] << 8
        total = (total & 0xFFFF) + (total >> 16)
    assert _u32(k, at) == total + len(k)


def test_kernel_setup_header() -> None:
    k = example.build_kernel()
    assert k[0x202:0x206] == b"HdrS"
    assert _u16(k, 0x1FE) == 0xAA55
    assert _u16(k, 0x206) == 0x020F
    assert k[0x211] & 0x01  # LOADED_HIGH
    assert k[0x210] == 0 and _u32(k, 0x218) == 0 and _u32(k, 0x21C) == 0  # QEMU fills these
    assert _u32(k, 0x22C) == 0x7FFFFFFF
    assert _u16(k, 0x236) & 0x42 == 0x42  # above-4G initrd: QEMU's bit and the reference's
    setup_size = (k[0x1F1] + 1) * 512
    text = next(s for s in _section_table(k) if s[0] == b".text")
    assert setup_size == text[4]  # the protected-mode kernel starts at .text
    assert _u32(k, 0x1F4) * 16 == max(s[4] + s[3] for s in _section_table(k)) - setup_size
    version_at = _u16(k, 0x20E) + 0x200
    assert k[version_at:].startswith(b"6.1.0-dstack-example")


def _authenticode(k: bytes) -> bytes:
    """SPEC RTMR1 step 1 without QEMU's patches, from the PE/COFF spec."""
    h = _pe(k)
    hasher = hashlib.sha384()
    checksum, cert_dir = h["opt"] + 64, h["cert_dir"]
    hasher.update(k[:checksum] + k[checksum + 4 : cert_dir] + k[cert_dir + 8 : h["headers"]])
    last = h["headers"]
    for _, _, _, raw_size, raw_ptr in sorted(_section_table(k), key=lambda s: s[4]):
        hasher.update(k[raw_ptr : raw_ptr + raw_size])
        last = raw_ptr + raw_size
    cert_addr = _u32(k, cert_dir)
    hasher.update(k[last:cert_addr])
    hasher.update(bytes(-len(k) % 8))
    return hasher.digest()


def test_kernel_with_library_authenticode() -> None:
    # Cross-check against the library's own kernel code (dstack_mr.kernel).
    k = example.build_kernel()
    assert kernel.authenticode_sha384(k) == _authenticode(k)
    patched = kernel.patch(k, len(example.build_initrd()), 2 << 30)
    assert patched[0x210] == 0xB0 and patched[0x211] == 0x81
    assert _u32(bytes(patched), 0x21C) == len(example.build_initrd())


# --- initrd -------------------------------------------------------------------------------------


def _cpio(archive: bytes) -> dict[str, tuple[int, bytes]]:
    files: dict[str, tuple[int, bytes]] = {}
    off = 0
    while True:
        assert archive[off : off + 6] == b"070701"
        fields = [int(archive[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = archive[off + 110 : off + 110 + namesize - 1].decode()
        data_at = off + 110 + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            assert not any(archive[data_at:])
            return files
        files[name] = (mode, archive[data_at : data_at + size])
        off = data_at + size + (-size % 4)


def test_initrd_is_a_gzipped_newc_archive() -> None:
    blob = example.build_initrd()
    assert blob[:3] == b"\x1f\x8b\x08"
    assert blob[4:8] == bytes(4)  # mtime 0
    archive = gzip.decompress(blob)
    assert len(archive) % 512 == 0
    files = _cpio(archive)
    assert set(files) == {".", "dev", "dev/console", "init", "example.bin"}
    mode, init = files["init"]
    assert mode == 0o100755 and init.startswith(b"#!/bin/sh\n")
    assert files["dev/console"][0] == 0o020600


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=0, max_value=3 * 0xFFFF + 7), seed=st.binary(max_size=8))
def test_stored_gzip_round_trips(size: int, seed: bytes) -> None:
    # Sizes around the 65535-byte stored-block limit are where chunking would go wrong.
    data = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    assert gzip.decompress(example._gzip_stored(data)) == data


# --- ACPI ---------------------------------------------------------------------------------------


def _find_table(blob: bytes, signature: bytes) -> tuple[int, int]:
    """SPEC's walk from offset 0: (offset, length) of ``signature``; zero length is an error."""
    off = 0
    while off + 8 <= len(blob):
        sig, length = blob[off : off + 4], _u32(blob, off + 4)
        if length == 0:
            raise LookupError(f"{signature!r} not found before a zero length at {off:#x}")
        if sig == signature:
            return off, length
        off += length
    raise LookupError(f"{signature!r} not found")


def test_acpi_walk_finds_every_table_with_valid_checksum() -> None:
    blob = example.build_acpi_tables()
    order = [b"FACS", b"DSDT", b"FACP", b"APIC", b"MCFG", b"WAET", b"RSDT"]
    found = {sig: _find_table(blob, sig) for sig in order}
    assert [found[s][0] for s in order] == sorted(found[s][0] for s in order)
    assert found[b"FACS"] == (0, 64)
    assert found[b"FACP"][1] == 244
    assert found[b"MCFG"][1] == 60
    assert found[b"WAET"][1] == 40
    assert found[b"RSDT"][1] == 36 + 4 * 4
    for sig in order[1:]:
        off, length = found[sig]
        assert sum(blob[off : off + length]) % 256 == 0, sig
        assert blob[off + 10 : off + 16] == b"BOCHS "
        assert blob[off + 16 : off + 24] == b"BXPC    "
    end = found[b"RSDT"][0] + found[b"RSDT"][1]
    assert not any(blob[end:])
    with pytest.raises(LookupError, match="zero length"):
        _find_table(blob, b"HPET")


def test_acpi_pointers_hold_table_offsets() -> None:
    blob = example.build_acpi_tables()
    rsdt, _ = _find_table(blob, b"RSDT")
    entries = struct.unpack_from("<4I", blob, rsdt + 36)
    assert entries == tuple(_find_table(blob, s)[0] for s in (b"FACP", b"APIC", b"MCFG", b"WAET"))
    facp, _ = _find_table(blob, b"FACP")
    dsdt, _ = _find_table(blob, b"DSDT")
    assert _u32(blob, facp + 36) == 0  # FACS
    assert _u32(blob, facp + 40) == dsdt
    assert struct.unpack_from("<Q", blob, facp + 140)[0] == dsdt


def test_dsdt_aml_is_well_formed() -> None:
    blob = example.build_acpi_tables()
    off, length = _find_table(blob, b"DSDT")
    aml = blob[off + 36 : off + length]
    assert aml[0] == 0x10  # ScopeOp
    lead = aml[1]
    extra = lead >> 6
    pkg = (lead & 0x3F) if extra == 0 else (lead & 0x0F)
    for i in range(extra):
        pkg |= aml[2 + i] << (4 + 8 * i)
    assert aml[1 + pkg : 2 + pkg] == b"\x08"  # the package ends where Name(_S5_) begins
    assert aml[2 + pkg : 6 + pkg] == b"_S5_"
    assert b"\x0c\x41\xd0\x0a\x08" in aml  # EisaId("PNP0A08")
