"""Hostile and broken inputs: a typed error every time, never a wrong digest, never a traceback.

Every public input path must be total: valid input gives the reference's digest, anything else
raises exactly one :class:`dstack_mr.DstackMrError` subclass. Python slicing silently truncates
where the Rust reference panics, so the truncation tests below check that a cut file can never
come back with a plausible digest, and the hypothesis tests mutate the real artefacts'
structural fields to shake out any other exception type (or a hang: each call runs under an
alarm).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import signal
import stat
import struct
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import load_vectors, shared_path
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dstack_mr import (
    AcpiDumper,
    AcpiError,
    AcpiTablesBlob,
    ConfigError,
    DstackMrError,
    DumperFailedError,
    DumperNotFoundError,
    DumperOutputError,
    DumperTimeoutError,
    FirmwareError,
    ImageError,
    KernelError,
    Machine,
    VmConfig,
    acpi,
    example,
    kernel,
    tdvf,
)
from dstack_mr.files import hash_file

T = TypeVar("T")

FIRMWARES = ("ovmf-2022.11-deb12.fd", "ovmf-2025.02-deb13.fd")
KERNELS = ("vmlinuz-6.1.0-56-amd64", "vmlinuz-6.12.117-deb13-rt-amd64")
ACPI_BLOBS = ("acpi-q35.bin", "acpi-dstack-0.6.0-layout.bin")
MIB = 1 << 20
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
METADATA_OFFSET_GUID = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
#: Any single call taking longer than this is a hang as far as these tests are concerned.
CALL_LIMIT_S = 20


class Hang(Exception):
    """Raised by the alarm; deliberately not a DstackMrError, so it fails the test."""


@contextmanager
def no_hang(seconds: int = CALL_LIMIT_S) -> Iterator[None]:
    def on_alarm(_sig: int, _frame: object) -> None:
        raise Hang(f"call did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def typed(fn: Callable[[], T]) -> T | DstackMrError:
    """Run ``fn``; return its result or the DstackMrError it raised. Anything else escapes."""
    with no_hang():
        try:
            return fn()
        except DstackMrError as exc:
            assert str(exc).strip(), f"{type(exc).__name__} without a message"
            return exc


@functools.cache
def read_input(name: str) -> bytes:
    return shared_path("inputs", name).read_bytes()


@pytest.fixture(scope="module")
def inputs() -> Path:
    return shared_path("inputs")


# --------------------------------------------------------------------------------------------
# Structural offsets of the real artefacts
# --------------------------------------------------------------------------------------------


@functools.cache
def fw_layout(fw: bytes) -> dict[str, Any]:
    """Where the footer, GUID-ed table, descriptor and section table of a TDVF image live."""
    end = len(fw) - 32
    assert fw[end - 16 : end] == FOOTER_GUID
    tables_len = struct.unpack_from("<H", fw, end - 18)[0]
    table_start = end - 18 - tables_len
    entries: list[tuple[int, int]] = []  # (absolute offset of the entry's u16 length, length)
    off = end - 18
    meta_u32 = None
    while off - 18 >= table_start:
        length = struct.unpack_from("<H", fw, off - 18)[0]
        entries.append((off - 18, length))
        if fw[off - 16 : off] == METADATA_OFFSET_GUID:
            meta_u32 = off - 18 - 4
            break
        off -= length
    assert meta_u32 is not None
    desc = len(fw) - struct.unpack_from("<I", fw, meta_u32)[0]
    parsed = tdvf.parse(fw)
    return {
        "end": end,
        "table_start": table_start,
        "entries": entries,
        "meta_u32": meta_u32,
        "desc": desc,
        "sections": parsed.sections,
    }


def fw_fields(fw: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every integer field the TDVF parser reads."""
    lay = fw_layout(fw)
    fields = [(lay["end"] - 18, 2), (lay["meta_u32"], 4)]
    fields += [(off, 2) for off, _ in lay["entries"]]
    desc = lay["desc"]
    fields += [(desc + 4, 4), (desc + 8, 4), (desc + 12, 4)]
    for i in range(len(lay["sections"])):
        base = desc + 16 + 32 * i
        fields += [(base, 4), (base + 4, 4), (base + 8, 8), (base + 16, 8)]
        fields += [(base + 24, 4), (base + 28, 4)]
    return fields


@functools.cache
def pe_layout(k: bytes) -> dict[str, int]:
    pe = struct.unpack_from("<I", k, 0x3C)[0]
    coff = pe + 4
    nsec, opt_size = (
        struct.unpack_from("<H", k, coff + 2)[0],
        struct.unpack_from("<H", k, coff + 16)[0],
    )
    opt = coff + 20
    pe32_plus = struct.unpack_from("<H", k, opt)[0] == 0x20B
    cert_dir = opt + (112 if pe32_plus else 96) + 32
    return {
        "pe": pe,
        "coff": coff,
        "nsec": nsec,
        "opt": opt,
        "checksum": opt + 64,
        "cert_dir": cert_dir,
        "headers_end": struct.unpack_from("<I", k, opt + 60)[0],
        "table": opt + opt_size,
    }


def pe_sections(k: bytes) -> list[tuple[int, int]]:
    lay = pe_layout(k)
    out = []
    for i in range(lay["nsec"]):
        raw_size, raw_ptr = struct.unpack_from("<II", k, lay["table"] + 40 * i + 16)
        out.append((raw_ptr, raw_size))
    return sorted(out)


def kernel_fields(k: bytes) -> list[tuple[int, int]]:
    lay = pe_layout(k)
    fields = [(0x3C, 4), (0x206, 2), (0x211, 1), (0x22C, 4), (0x236, 2), (lay["pe"], 4)]
    fields += [(lay["coff"] + 2, 2), (lay["coff"] + 16, 2), (lay["opt"], 2), (lay["opt"] + 60, 4)]
    fields += [(lay["cert_dir"], 4), (lay["cert_dir"] + 4, 4)]
    for i in range(lay["nsec"]):
        fields += [(lay["table"] + 40 * i + 16, 4), (lay["table"] + 40 * i + 20, 4)]
    return fields


def acpi_fields(blob: bytes) -> list[tuple[int, int]]:
    """(offset, size) of each table header's signature and length, walking from 0."""
    fields: list[tuple[int, int]] = []
    off = 0
    while off + 8 <= len(blob):
        length = struct.unpack_from("<I", blob, off + 4)[0]
        if length == 0:
            break
        fields += [(off, 4), (off + 4, 4)]
        off += length
    return fields


# --------------------------------------------------------------------------------------------
# Firmware truncation
# --------------------------------------------------------------------------------------------


def fw_cut_offsets(fw: bytes) -> list[int]:
    lay = fw_layout(fw)
    bfv = next(s for s in lay["sections"] if s.attributes & tdvf.ATTR_MR_EXTEND)
    cuts = [
        bfv.data_offset + 1,
        bfv.data_offset + 0x1000,
        bfv.data_offset + bfv.raw_data_size // 2,
        bfv.data_offset + bfv.raw_data_size // 2 + 0x100,
        lay["desc"] - 1,
        lay["desc"] + 2,
        lay["desc"] + 16,
        lay["desc"] + 16 + 32 * len(lay["sections"]) - 5,
        lay["table_start"] + 3,
        lay["meta_u32"] + 2,
        lay["end"] - 18,
        lay["end"] - 8,
        len(fw) - 32,
        len(fw) - 1,
    ]
    assert all(0 < c < len(fw) for c in cuts)
    return cuts


@pytest.mark.parametrize("name", FIRMWARES)
def test_firmware_cut_inside_measured_regions_raises(name: str) -> None:
    fw = read_input(name)
    for cut in fw_cut_offsets(fw):
        with pytest.raises(FirmwareError) as info:
            tdvf.parse(fw[:cut])
        assert "offset" in str(info.value) or "bytes" in str(info.value), cut


@pytest.mark.parametrize("name", FIRMWARES)
def test_firmware_zero_filled_tail_errors_or_changes_mrtd(name: str) -> None:
    """Zeroing from a cut to EOF keeps the size. It wipes the footer (error) unless only the
    last 32 bytes are hit: those are skipped by the parser but measured as BFV data."""
    fw = read_input(name)
    want = tdvf.parse(fw).mrtd(False)
    outcomes = set()
    for cut in fw_cut_offsets(fw):
        result = typed(lambda c=cut: tdvf.parse(fw[:c] + bytes(len(fw) - c)).mrtd(False))
        assert isinstance(result, FirmwareError) or result != want, f"cut {cut:#x}"
        outcomes.add(type(result).__name__)
    assert outcomes == {"FirmwareError", "bytes"}


@pytest.mark.parametrize("name", FIRMWARES)
def test_firmware_cut_start_never_gives_the_same_digest(name: str) -> None:
    """Cutting the start keeps the footer (offsets count back from the end), so the parser gets
    far; the MR.EXTEND data must then be found missing, or the MRTD must differ."""
    fw = read_input(name)
    want = {tp: tdvf.parse(fw).mrtd(tp) for tp in (True, False)}
    lay = fw_layout(fw)
    bfv = next(s for s in lay["sections"] if s.attributes & tdvf.ATTR_MR_EXTEND)
    for cut in (1, 0x100, 0x1000, bfv.data_offset, bfv.data_offset + 0x1000, lay["desc"] - 16):
        result = typed(lambda c=cut: tdvf.parse(fw[c:]))
        if isinstance(result, DstackMrError):
            assert isinstance(result, FirmwareError)
            continue
        for tp in (True, False):
            assert result.mrtd(tp) != want[tp], f"cut {cut:#x} kept the MRTD"


@pytest.mark.parametrize("name", FIRMWARES)
def test_firmware_cut_middle_keeping_footer(name: str) -> None:
    """A file that lost bytes in the middle but kept its last 4 KiB (footer and descriptor)."""
    fw = read_input(name)
    want = tdvf.parse(fw).mrtd(False)
    lay = fw_layout(fw)
    tail = fw[lay["desc"] - 0x100 :]
    for keep in (0, 0x1000, len(fw) // 2, len(fw) - len(tail) - 0x1000):
        result = typed(lambda k=keep: tdvf.parse(fw[:k] + tail).mrtd(False))
        assert isinstance(result, FirmwareError) or result != want


@pytest.mark.parametrize("name", FIRMWARES)
def test_firmware_zeroed_bfv_page_changes_mrtd(name: str) -> None:
    fw = read_input(name)
    bfv = next(s for s in fw_layout(fw)["sections"] if s.attributes & tdvf.ATTR_MR_EXTEND)
    at = bfv.data_offset + 0x2000
    zeroed = fw[:at] + bytes(0x1000) + fw[at + 0x1000 :]
    assert zeroed != fw
    for tp in (True, False):
        assert tdvf.parse(zeroed).mrtd(tp) != tdvf.parse(fw).mrtd(tp)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(FIRMWARES), frac=st.floats(0, 1, exclude_max=True))
def test_firmware_any_truncation_raises(name: str, frac: float) -> None:
    fw = read_input(name)
    cut = int(len(fw) * frac)
    with pytest.raises(FirmwareError):
        tdvf.parse(fw[:cut])


# --------------------------------------------------------------------------------------------
# Kernel truncation
# --------------------------------------------------------------------------------------------

#: What QEMU and the vectors use: a small initrd in a 2 GiB guest.
INITRD_SIZE, MEMORY = 1234567, 2 << 30


def kernel_header_cuts(k: bytes) -> list[int]:
    lay = pe_layout(k)
    return [
        0x3C,
        0x3E,
        lay["pe"] + 2,
        lay["coff"] + 3,
        lay["coff"] + 17,
        lay["opt"] + 1,
        lay["opt"] + 62,
        lay["checksum"] + 2,
        lay["cert_dir"] - 8,
        lay["cert_dir"] + 6,
        lay["table"] + 10,
        lay["table"] + 40 * lay["nsec"] - 1,
        lay["headers_end"] - 1,
    ]


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_cut_inside_headers_raises(name: str) -> None:
    k = read_input(name)
    for cut in kernel_header_cuts(k):
        with pytest.raises(KernelError):
            kernel.patched_kernel_digest(k[:cut], INITRD_SIZE, MEMORY)
        # Also below the patcher's minimum-length check: the PE walker itself must refuse.
        with pytest.raises(KernelError):
            kernel.authenticode_sha384(k[:cut])


def reference_truncated_digest(patched: bytes, cut: int) -> bytes:
    """What the reference computes for a kernel cut inside section data: the headers (minus the
    checksum and certificate-directory entry), the section bytes up to EOF (sections are
    contiguous after the headers in these kernels), no trailing data because the full section
    sizes are counted as hashed, and OVMF's zero padding of the size to 8."""
    lay = pe_layout(patched)
    data = patched[:cut]
    h = hashlib.sha384()
    h.update(data[: lay["checksum"]])
    h.update(data[lay["checksum"] + 4 : lay["cert_dir"]])
    h.update(data[lay["cert_dir"] + 8 : lay["headers_end"]])
    h.update(data[lay["headers_end"] :])
    if cut % 8:
        h.update(bytes(8 - cut % 8))
    return h.digest()


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_cut_inside_section_data_gives_a_different_digest(name: str) -> None:
    """An odd but well-defined input: the reference hashes a section that runs past EOF up to
    EOF and still counts its full size. We return that digest (bit-exact), and it can never
    equal the untruncated kernel's, so a truncated kernel cannot pass as the real one."""
    k = read_input(name)
    full = kernel.patched_kernel_digest(k, INITRD_SIZE, MEMORY)
    patched = bytes(kernel.patch(k, INITRD_SIZE, MEMORY))
    sections = pe_sections(k)
    assert sections[0][0] == pe_layout(k)["headers_end"]
    cuts = []
    for ptr, size in sections:
        cuts += [ptr + 1, ptr + size // 2, ptr + size - 8, ptr + size - 1]
    for cut in cuts:
        got = kernel.patched_kernel_digest(k[:cut], INITRD_SIZE, MEMORY)
        assert got != full, f"cut at {cut:#x} kept the kernel digest"
        assert got == reference_truncated_digest(patched, cut), f"cut at {cut:#x}"


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_cut_inside_certificate_table_is_not_measured(name: str) -> None:
    """Documented, by design of Authenticode: the signature (certificate table) after the last
    section is not measured, so losing part of it while keeping the size a multiple of 8 keeps
    the digest. Cutting anywhere before it (measured bytes) changes the digest."""
    k = read_input(name)
    cert_addr, cert_size = struct.unpack_from("<II", k, pe_layout(k)["cert_dir"])
    assert cert_addr + cert_size == len(k) and len(k) % 8 == 0
    full = kernel.patched_kernel_digest(k, INITRD_SIZE, MEMORY)
    assert kernel.patched_kernel_digest(k[: cert_addr + 8], INITRD_SIZE, MEMORY) == full
    assert kernel.patched_kernel_digest(k[: cert_addr + 5], INITRD_SIZE, MEMORY) != full
    assert kernel.patched_kernel_digest(k[: cert_addr - 8], INITRD_SIZE, MEMORY) != full


# --------------------------------------------------------------------------------------------
# Mutation fuzzing
# --------------------------------------------------------------------------------------------


def interesting(size: int, original: int, file_len: int) -> st.SearchStrategy[int]:
    top = (1 << (8 * size)) - 1
    specials = [0, 1, 2, 0xFF, 0xFFF, 0x1000, 0x1001, top, top - 1, top - 0xFFF, top >> 1]
    specials += [1 << (8 * size - 1), file_len, file_len + 1, file_len - 1, file_len - 0x1000]
    specials += [original + d for d in (-0x1000, -1, 1, 0x1000)]
    return st.one_of(st.sampled_from([v & top for v in specials]), st.integers(0, top))


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, fields: list[tuple[int, int]]) -> bytes:
    """The seed with 1-4 mutations: structural field overwrites, byte patches, truncations."""
    buf = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["field", "field", "field", "patch", "truncate", "zero"]))
        if kind == "field" and fields:
            off, size = draw(st.sampled_from(fields))
            if off + size > len(buf):
                continue
            original = int.from_bytes(buf[off : off + size], "little")
            value = draw(interesting(size, original, len(buf)))
            buf[off : off + size] = value.to_bytes(size, "little")
        elif kind == "patch" and buf:
            # Bias patches towards the ends, where the headers and footers live.
            region = draw(st.sampled_from(["head", "tail", "any"]))
            lo, hi = {"head": (0, 0x1000), "tail": (len(buf) - 0x1000, len(buf))}.get(
                region, (0, len(buf))
            )
            off = draw(st.integers(max(lo, 0), max(min(hi, len(buf)) - 1, 0)))
            patch = draw(st.binary(min_size=1, max_size=16))
            buf[off : off + len(patch)] = patch
        elif kind == "truncate":
            cut = draw(st.integers(0, len(buf)))
            if draw(st.booleans()):
                del buf[cut:]
            else:
                del buf[:cut]
        elif kind == "zero" and buf:
            off = draw(st.integers(0, len(buf) - 1))
            n = draw(st.integers(1, 0x2000))
            buf[off : off + n] = bytes(len(buf[off : off + n]))
    return bytes(buf)


def check_firmware(fw: bytes) -> None:
    parsed = typed(lambda: tdvf.parse(fw))
    event(f"parse: {type(parsed).__name__}")
    if isinstance(parsed, DstackMrError):
        assert isinstance(parsed, FirmwareError)
        return
    for tp in (True, False):
        digest = typed(lambda t=tp: parsed.mrtd(t))
        assert isinstance(digest, bytes) and len(digest) == 48
    for memory in (2 << 30, 0xB000_0000, 1):
        hob = typed(lambda m=memory: parsed.td_hob(m))
        if isinstance(hob, DstackMrError):
            assert isinstance(hob, FirmwareError)  # the memory sizes are all in range
            continue
        # A PHIT HOB (type 1, 56 bytes, version 9), then 48-byte resource descriptors, the
        # PHIT's EfiEndOfHobList pointing 8 bytes past their end.
        assert hob[:4] == b"\x01\x00\x38\x00" and hob[8:12] == b"\x09\x00\x00\x00"
        assert len(hob) > 56 and (len(hob) - 56) % 48 == 0
        assert all(hob[i : i + 4] == b"\x03\x00\x30\x00" for i in range(56, len(hob), 48))
        end = int.from_bytes(hob[48:56], "little")
        assert end == (parsed.td_hob_base + len(hob) + 8) % (1 << 64)


@st.composite
def real_firmware(draw: st.DrawFn) -> bytes:
    fw = read_input(draw(st.sampled_from(FIRMWARES)))
    return draw(mutated(fw, fw_fields(fw)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fw=real_firmware())
def test_fuzz_real_firmware(fw: bytes) -> None:
    check_firmware(fw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_example_firmware(data: st.DataObject) -> None:
    seed = example_firmware()
    check_firmware(data.draw(mutated(seed, fw_fields(seed))))


@functools.cache
def example_firmware() -> bytes:
    return bytes(example.build_firmware())


@functools.cache
def example_kernel() -> bytes:
    return bytes(example.build_kernel())


@functools.cache
def example_acpi() -> bytes:
    return bytes(example.build_acpi_tables())


def check_kernel(k: bytes, initrd_size: int, memory: int) -> None:
    got = typed(lambda: kernel.patched_kernel_digest(k, initrd_size, memory))
    event(f"kernel: {type(got).__name__}")
    if isinstance(got, DstackMrError):
        assert isinstance(got, KernelError)
    else:
        assert len(got) == 48


INITRD_SIZES = st.one_of(
    st.just(INITRD_SIZE),
    st.integers(0, 1 << 28),
    st.sampled_from([0, 1, 3, 0x37FF_FFFF, U32_MAX, U32_MAX + 1, -1]),
    st.integers(-(1 << 40), 1 << 40),
)
MEMORY_SIZES = st.one_of(
    st.just(MEMORY),
    st.integers(1, 1 << 16).map(lambda m: m * MIB),
    st.sampled_from([0, 1, MIB, 0xB000_0000, 0xAFFF_FFFF, 0x2_8000, U64_MAX, -1]),
    st.integers(-(1 << 70), 1 << 70),
)


@st.composite
def kernel_seed(draw: st.DrawFn) -> bytes:
    """The example kernel, or a real kernel's first 64 KiB (sections then run past EOF)."""
    choice = draw(st.sampled_from(["example", *KERNELS]))
    if choice == "example":
        return example_kernel()
    return read_input(choice)[:0x10000]


@settings(max_examples=500, deadline=None)
@given(data=st.data(), initrd_size=INITRD_SIZES, memory=MEMORY_SIZES)
def test_fuzz_kernel(data: st.DataObject, initrd_size: int, memory: int) -> None:
    seed = data.draw(kernel_seed())
    k = data.draw(mutated(seed, kernel_fields(seed)))
    check_kernel(k, initrd_size, memory)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), initrd_size=INITRD_SIZES, memory=MEMORY_SIZES)
def test_fuzz_kernel_digest_is_authenticode_of_the_patched_copy(
    data: st.DataObject, initrd_size: int, memory: int
) -> None:
    """Definition check for any shortcut in patched_kernel_digest: same digest (or the same
    error type) as patching a full copy and hashing that."""
    seed = data.draw(st.sampled_from([example_kernel(), read_input(KERNELS[0])[:0x20000]]))
    k = data.draw(mutated(seed, kernel_fields(seed)))

    def slow() -> bytes:
        return kernel.authenticode_sha384(bytes(kernel.patch(k, initrd_size, memory)))

    fast = typed(lambda: kernel.patched_kernel_digest(k, initrd_size, memory))
    want = typed(slow)
    if isinstance(want, DstackMrError):
        assert type(fast) is type(want)
    else:
        assert fast == want


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(KERNELS), initrd_size=INITRD_SIZES, memory=MEMORY_SIZES)
def test_fuzz_real_kernel_sizes(name: str, initrd_size: int, memory: int) -> None:
    check_kernel(read_input(name), initrd_size, memory)


def check_acpi(blob: bytes) -> None:
    got = typed(lambda: acpi.build_tables(blob))
    event(f"acpi: {type(got).__name__}")
    if isinstance(got, DstackMrError):
        assert isinstance(got, AcpiError)
    else:
        assert len(got.loader) == 4096 and len(got.rsdp) == 20 and got.tables == blob


@st.composite
def acpi_seed(draw: st.DrawFn) -> bytes:
    choice = draw(st.sampled_from(["example", *ACPI_BLOBS]))
    return example_acpi() if choice == "example" else read_input(choice)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_fuzz_acpi(data: st.DataObject) -> None:
    seed = data.draw(acpi_seed())
    check_acpi(data.draw(mutated(seed, acpi_fields(seed))))


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=512))
def test_fuzz_acpi_random_bytes(blob: bytes) -> None:
    check_acpi(blob)


# --------------------------------------------------------------------------------------------
# Hand-made hostile descriptors (hangs the fuzzer cannot be expected to find)
# --------------------------------------------------------------------------------------------


def make_tdvf(sections: list[tuple[int, int, int, int, int, int]], size: int) -> bytes:
    """A minimal TDVF image: descriptor at offset 0, footer table at the end."""
    fw = bytearray(size)
    desc = b"TDVF" + struct.pack("<III", 16 + 32 * len(sections), 1, len(sections))
    desc += b"".join(struct.pack("<IIQQII", *s) for s in sections)
    fw[: len(desc)] = desc
    entry = struct.pack("<I", size) + struct.pack("<H", 4 + 18) + METADATA_OFFSET_GUID
    footer = entry + struct.pack("<H", len(entry) + 18) + FOOTER_GUID
    fw[size - 32 - len(footer) : size - 32] = footer
    return bytes(fw)


def test_page_aug_section_with_huge_size_does_not_hang() -> None:
    """Regression: single-pass MRTD walked every page of a PAGE_AUG section even though it
    records nothing for it -- 2**51 iterations for this descriptor."""
    fw = make_tdvf([(0, 0, 0x1000, 1 << 63, 3, tdvf.ATTR_PAGE_AUG)], 0x2000)
    parsed = tdvf.parse(fw)
    empty = hashlib.sha384().digest()
    with no_hang(5):
        assert parsed.mrtd(False) == empty
        assert parsed.mrtd(True) == empty


def test_many_sections_td_hob_is_fast() -> None:
    """Regression: the TD HOB range split was quadratic (16k sections took ~30 s)."""
    n = 40_000
    sections = [(0, 0, 0x2000 * i + 0x1000, 0x1000, 3, 0) for i in range(n)]
    parsed = tdvf.parse(make_tdvf(sections, 32 * n + 0x1000))
    with no_hang(10):
        hob = parsed.td_hob(2 << 30)
    # PHIT + n accepted + n gaps below + the rest of memory.
    assert len(hob) == 56 + 48 * (2 * n + 1)


def test_overlapping_mr_extend_sections_are_capped() -> None:
    """Many MR.EXTEND sections each covering the whole file would hash without bound."""
    size = 0x40_0000
    n = (tdvf.MAX_ADDED_PAGES // (size // 0x1000)) + 1
    sections = [(0, size, 0, size, 0, tdvf.ATTR_MR_EXTEND | tdvf.ATTR_PAGE_AUG)] * n
    with pytest.raises(FirmwareError, match=r"MR\.EXTEND more than"):
        tdvf.parse(make_tdvf(sections, size))


def test_overlapping_pe_sections_are_capped() -> None:
    """65535 sections each spanning the whole kernel would mean ~800 GB of hashing."""
    k = example_kernel()
    lay = pe_layout(k)
    n = (kernel.MAX_HASHED_SECTION_BYTES // len(k)) + 2
    assert n < 0x10000
    table = lay["table"]
    padded = bytearray(k + bytes(40 * n))  # room for the long section table
    struct.pack_into("<H", padded, lay["coff"] + 2, n)
    struct.pack_into("<I", padded, lay["opt"] + 60, len(padded))  # SizeOfHeaders: whole file
    for i in range(n):
        struct.pack_into("<II", padded, table + 40 * i + 16, len(padded), 0)
    with no_hang(10), pytest.raises(KernelError, match="overlap"):
        kernel.authenticode_sha384(bytes(padded))


def old_memory_ranges(
    sections: tuple[tdvf.TdvfSection, ...], memory_size: int
) -> list[tuple[bool, int, int]]:
    """The reference's algorithm, transcribed: split unaccepted ranges per section, resort."""
    ranges: list[tuple[bool, int, int]] = [(False, 0, memory_size)]
    for s in sections:
        if s.section_type not in (tdvf.SectionType.TD_HOB, tdvf.SectionType.TEMP_MEM):
            continue
        start, end = s.memory_address, s.memory_address + s.memory_data_size
        if start >= end:
            continue
        out: list[tuple[bool, int, int]] = []
        for accepted, r_start, r_end in ranges:
            if accepted or r_end <= start or r_start >= end:
                out.append((accepted, r_start, r_end))
                continue
            if r_start < start:
                out.append((False, r_start, start))
            if r_end > end:
                out.append((False, end, r_end))
        out.append((True, start, end))
        out.sort(key=lambda r: r[1])
        ranges = out
    return ranges


SECTION = st.builds(
    tdvf.TdvfSection,
    data_offset=st.just(0),
    raw_data_size=st.just(0),
    memory_address=st.integers(0, 64).map(lambda p: p * 0x1000),
    memory_data_size=st.integers(0, 16).map(lambda p: p * 0x1000),
    section_type=st.integers(0, 4),
    attributes=st.just(0),
)


@settings(max_examples=300, deadline=None)
@given(
    sections=st.lists(SECTION, max_size=8).map(tuple),
    memory=st.one_of(st.integers(1, 80).map(lambda p: p * 0x1000), st.integers(1, 1 << 20)),
)
def test_td_hob_ranges_match_the_reference_algorithm(
    sections: tuple[tdvf.TdvfSection, ...], memory: int
) -> None:
    assert tdvf._memory_ranges(sections, memory) == old_memory_ranges(sections, memory)


# --------------------------------------------------------------------------------------------
# Machine and VmConfig
# --------------------------------------------------------------------------------------------

WEIRD_VERSIONS = [
    "9.1.0.1",
    "+9.1.0",
    "9.-1.0",
    "٩.1.0",
    "9.1",
    "9..1",
    "",
    " 9.1.0",
    "9.1.0 ",
    "7.2.0",
    "8.0.0",
    "8.2.2",
    "4294967295.0.0",
    "4294967296.0.0",
    "0009.0001.0000",
    "9.1.0" + "x" * 10_000,
    "1" * 4000 + ".1.0",
    ".".join(["9"] * 5000),
]


#: Valid values for every setting the fuzz varies.
MACHINE_VALID: dict[str, st.SearchStrategy[Any]] = {
    "cpu_count": st.integers(1, 64),
    "memory_size": st.one_of(
        st.sampled_from([MIB * 512, 2 << 30, 0xB000_0000, 64 << 30]),
        st.integers(512, 1 << 16).map(lambda m: m * MIB),
    ),
    "num_gpus": st.integers(0, 8),
    "num_nvswitches": st.integers(0, 4),
    "pci_hole64_size": st.one_of(st.none(), st.integers(0, 1 << 40)),
    "qemu_version": st.sampled_from([None, "8.0.0", "8.2.2", "9.0.0", "9.1.0", "10.0.0"]),
    "kernel_cmdline": st.text(max_size=64),
    "two_pass_add_pages": st.one_of(st.none(), st.booleans()),
    "pic": st.one_of(st.none(), st.booleans()),
    "smm": st.booleans(),
    "hugepages": st.booleans(),
    "hotplug_off": st.booleans(),
    "root_verity": st.booleans(),
    "host_share_mode": st.sampled_from(acpi.SHARE_MODES),
    "ovmf_variant": st.sampled_from(["pre202505", "stable202505"]),
}


def ints(bits: int) -> st.SearchStrategy[Any]:
    top = (1 << bits) - 1
    return st.one_of(
        st.sampled_from([0, top, top + 1, -1, 1 << 64, U64_MAX, True, False]),
        st.integers(-(1 << 70), 1 << 70),
    )


#: Hostile values for the same settings (ints out of range, bools where ints go, odd strings).
MACHINE_HOSTILE: dict[str, st.SearchStrategy[Any]] = {
    "cpu_count": ints(32),
    "memory_size": st.one_of(
        st.sampled_from([U64_MAX, U64_MAX - MIB + 1, 1 << 64, MIB - 1, 3 * MIB + 1, 0, -MIB]),
        st.sampled_from([True, MIB, 0xB000_0000 - MIB, 0x2_8000]),
        st.integers(-1, U64_MAX + 2),
    ),
    "num_gpus": ints(32),
    "num_nvswitches": ints(32),
    "pci_hole64_size": ints(64),
    "qemu_version": st.one_of(
        st.sampled_from(WEIRD_VERSIONS), st.text(alphabet="0123456789.+-٩ x", max_size=16)
    ),
    "kernel_cmdline": st.one_of(
        st.text(max_size=8).map(lambda s: s + "\ud800" + s),
        st.text(max_size=8).map(lambda s: "\udfff" + s),
        st.just("x" * 100_000),
    ),
    "host_share_mode": st.sampled_from(["bogus", "9P", " 9p", "VHD"]),
    "smm": st.sampled_from([1, 0, "yes", "", None]),
    "pic": st.sampled_from([1, "no", 0.0]),
    "ovmf_variant": st.sampled_from(["bogus", "Pre202505", "", 3]),
}


@st.composite
def machine_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid machine with 0-3 of its settings replaced by hostile values."""
    kwargs = {k: draw(v) for k, v in MACHINE_VALID.items()}
    for key in draw(st.lists(st.sampled_from(sorted(MACHINE_HOSTILE)), max_size=3)):
        kwargs[key] = draw(MACHINE_HOSTILE[key])
    return kwargs


def real_files(inputs: Path) -> dict[str, str]:
    return {
        "firmware": str(inputs / FIRMWARES[0]),
        "kernel": str(inputs / KERNELS[0]),
        "initrd": str(inputs / "initrd-3bytes.img"),
    }


def test_machine_baseline(inputs: Path) -> None:
    """The fuzz below starts from a machine that measures fine."""
    m = Machine(cpu_count=2, memory_size=2 << 30, kernel_cmdline="x", **real_files(inputs))
    details = m.measure_with_logs(acpi=AcpiTablesBlob(read_input("acpi-q35.bin")))
    # MRTD and RTMR0 do not depend on the kernel, initrd or cmdline: the golden vector's.
    vector = next(v for v in load_vectors() if v["name"] == "default-2cpu-2g")
    assert vector["inputs"]["firmware"] == FIRMWARES[0]
    assert vector["inputs"]["acpi_tables"] == "acpi-q35.bin"
    assert details.measurements.mrtd.hex() == vector["expected"]["mrtd"]
    assert details.measurements.rtmr0.hex() == vector["expected"]["rtmr0"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kwargs=machine_kwargs())
def test_fuzz_machine(inputs: Path, kwargs: dict[str, Any]) -> None:
    blob = AcpiTablesBlob(read_input("acpi-q35.bin"))

    def run() -> Any:
        return Machine(**kwargs, **real_files(inputs)).measure_with_logs(acpi=blob)

    got = typed(run)
    event(f"machine: {type(got).__name__}")
    if isinstance(got, DstackMrError):
        return
    # Whatever succeeded must have been a valid configuration.
    mem = kwargs["memory_size"]
    assert isinstance(mem, int) and not isinstance(mem, bool)
    assert mem >= MIB and mem % MIB == 0
    assert 0 < kwargs["cpu_count"] <= U32_MAX
    kwargs["kernel_cmdline"].encode("utf-16-le")  # no lone surrogate got through
    assert kwargs["host_share_mode"] in acpi.SHARE_MODES
    assert isinstance(kwargs["smm"], bool)
    assert kwargs["pic"] is None or isinstance(kwargs["pic"], bool)
    assert got.options.version >= (8, 0, 0)
    assert all(len(v) == 48 for v in (got.measurements.mrtd, got.measurements.rtmr2))


@pytest.mark.parametrize("version", WEIRD_VERSIONS)
def test_weird_qemu_versions(inputs: Path, version: str) -> None:
    def machine() -> Machine:
        return Machine(
            cpu_count=1, memory_size=2 << 30, kernel_cmdline="", qemu_version=version,
            **real_files(inputs),
        )  # fmt: skip

    # "+9.1.0" is what Rust's str::parse::<u32> accepts (a leading plus), so the reference does too.
    ok = version in ("+9.1.0", "8.0.0", "8.2.2", "0009.0001.0000", "4294967295.0.0")
    if ok:
        assert machine().versioned_options().version >= (8, 0, 0)
    else:  # refused when the Machine is made, not later when it is measured
        with pytest.raises(ConfigError, match="version"):
            machine()


def test_too_many_passthrough_devices_is_a_config_error(inputs: Path) -> None:
    """Regression: num_gpus = u32::MAX built a 17-billion-element argv (MemoryError / hang)."""
    with no_hang(5), pytest.raises(ConfigError, match="num_gpus"):
        Machine(
            cpu_count=1, memory_size=2 << 30, kernel_cmdline="", num_gpus=U32_MAX,
            **real_files(inputs),
        ).dumper_invocation()  # fmt: skip
    ok = Machine(
        cpu_count=1, memory_size=2 << 30, kernel_cmdline="", num_gpus=12, num_nvswitches=13,
        **real_files(inputs),
    )  # fmt: skip
    assert ok.dumper_invocation().argv.count("-device") == 4 + 2 * 25  # hd1, net0, vsock, hd0


WRONG_TYPES = [
    pytest.param({"qemu_version": 9}, "qemu_version must be a string, got int",
                 id="qemu_version-int"),
    pytest.param({"qemu_version": b"9.1.0"}, "qemu_version must be a string, got bytes",
                 id="qemu_version-bytes"),
    pytest.param({"ovmf_variant": "bogus"}, "ovmf_variant must be 'pre202505' or 'stable202505'",
                 id="ovmf_variant-bogus"),
    pytest.param({"ovmf_variant": 3}, "ovmf_variant must be 'pre202505' or 'stable202505'",
                 id="ovmf_variant-int"),
    pytest.param({"kernel_cmdline": None}, "kernel_cmdline must be a string, got NoneType",
                 id="cmdline-None"),
    pytest.param({"kernel_cmdline": b"x"}, "kernel_cmdline must be a string, got bytes",
                 id="cmdline-bytes"),
    pytest.param({"firmware": None}, "expected a file path, got NoneType", id="path-None"),
    pytest.param({"firmware": 5}, "expected a file path, got int", id="path-int"),
    pytest.param({"pic": "no"}, "pic must be true or false, got 'no'", id="pic-str"),
    pytest.param({"smm": 1}, "smm must be true or false, got 1", id="smm-int"),
    pytest.param({"host_share_mode": []}, "host_share_mode must be a string, got list",
                 id="share-list"),
    pytest.param({"memory_size": 2.0 * (1 << 30)}, "memory_size must be an integer",
                 id="memory-float"),
]  # fmt: skip


def measure_with(inputs: Path, override: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {"cpu_count": 1, "memory_size": 2 << 30, "kernel_cmdline": ""}
    kwargs.update(real_files(inputs))
    kwargs.update(override)
    blob = AcpiTablesBlob(read_input("acpi-q35.bin"))
    with no_hang():
        return Machine(**kwargs).measure_with_logs(acpi=blob)


@pytest.mark.parametrize(("override", "message"), WRONG_TYPES)
def test_machine_wrong_types_are_typed_errors(
    inputs: Path, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        measure_with(inputs, override)


#: Inputs that once escaped as ValueError (open() with a NUL byte; int() of a >4300-digit
#: version component).
FORMER_GAPS = [
    pytest.param({"firmware": "/tmp/x\0y"}, ImageError, "cannot read firmware '/tmp/x\\x00y'",
                 id="firmware-path-with-NUL"),
    pytest.param({"initrd": "/tmp/x\0y"}, ImageError, "cannot read initrd '/tmp/x\\x00y'",
                 id="initrd-path-with-NUL"),
    pytest.param({"qemu_version": "9" * 5000 + ".1.0"}, ConfigError, "invalid qemu_version",
                 id="qemu_version-5000-digits"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "error", "message"), FORMER_GAPS)
def test_machine_former_gaps(
    inputs: Path, override: dict[str, Any], error: type[DstackMrError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        measure_with(inputs, override)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
VMCONFIG_KEYS = [a.name for a in VmConfig.__attrs_attrs__]


@settings(max_examples=400, deadline=None)
@given(
    doc=st.one_of(
        JSON,
        st.dictionaries(st.sampled_from(VMCONFIG_KEYS), JSON, max_size=len(VMCONFIG_KEYS)),
    )
)
def test_fuzz_vmconfig_from_json(doc: Any) -> None:
    got = typed(lambda: VmConfig.from_json(json.dumps(doc)))
    event(f"vmconfig: {type(got).__name__}")
    assert isinstance(got, (VmConfig, ConfigError))


@settings(max_examples=200, deadline=None)
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64)))
def test_fuzz_vmconfig_raw_text(raw: bytes | str) -> None:
    got = typed(lambda: VmConfig.from_json(raw))
    assert isinstance(got, (VmConfig, ConfigError))


# --------------------------------------------------------------------------------------------
# ACPI blob checks
# --------------------------------------------------------------------------------------------


def table(sig: bytes, length: int = 36) -> bytes:
    return sig + struct.pack("<I", length) + bytes(max(length - 8, 0))


def full_blob(order: list[bytes], pad: int = 0x100) -> bytes:
    return b"".join(table(s) for s in order) + bytes(pad)


REQUIRED = [s.encode() for s in acpi.REQUIRED_TABLES]


def test_acpi_valid_synthetic_blob() -> None:
    blob = full_blob([b"FACS", *REQUIRED])
    assert acpi.build_tables(blob).tables == blob


def test_acpi_empty_blob() -> None:
    with pytest.raises(AcpiError, match="empty"):
        acpi.build_tables(b"")


@pytest.mark.parametrize("size", [1, 7, 8, 4096, 0x20000])
def test_acpi_padding_only(size: int) -> None:
    with pytest.raises(AcpiError, match="DSDT"):
        acpi.build_tables(bytes(size))


@pytest.mark.parametrize("missing", REQUIRED, ids=[s.decode() for s in REQUIRED])
def test_acpi_missing_required_table(missing: bytes) -> None:
    blob = full_blob([b"FACS", *(s for s in REQUIRED if s != missing)])
    with pytest.raises(AcpiError, match=missing.decode()):
        acpi.build_tables(blob)


@pytest.mark.parametrize("before", REQUIRED, ids=[s.decode() for s in REQUIRED])
def test_acpi_zero_length_table_before_a_required_one(before: bytes) -> None:
    i = REQUIRED.index(before)
    order = [*REQUIRED[:i], b"ZERO", *REQUIRED[i:]]
    blob = b"".join(table(s, 0 if s == b"ZERO" else 36) for s in order) + bytes(64)
    with pytest.raises(AcpiError, match=f"length 0.*{before.decode()}"):
        acpi.build_tables(blob)


@pytest.mark.parametrize("last", REQUIRED, ids=[s.decode() for s in REQUIRED])
def test_acpi_required_table_runs_past_the_blob(last: bytes) -> None:
    order = [s for s in REQUIRED if s != last]
    blob = full_blob(order, pad=0) + last + struct.pack("<I", 0x1000) + bytes(28)
    with pytest.raises(AcpiError, match=f"{last.decode()}.*past the end"):
        acpi.build_tables(blob)


@pytest.mark.parametrize("name", ACPI_BLOBS)
def test_acpi_real_blob_truncated(name: str) -> None:
    blob = read_input(name)
    ends = [off + struct.unpack_from("<I", blob, off + 4)[0] for off, _ in acpi_fields(blob)[::2]]
    last_required = max(acpi.find_table(blob, s)[0] for s in acpi.REQUIRED_TABLES)
    for cut in (4, 8, ends[0] - 1, last_required + 4, last_required + 10):
        with pytest.raises(AcpiError):
            acpi.build_tables(blob[:cut])


# --------------------------------------------------------------------------------------------
# The dumper: real programs, no shell, no leftovers
# --------------------------------------------------------------------------------------------


def script(path: Path, body: str) -> str:
    path.write_text(f"#!/usr/bin/env python3\nimport os, sys, time, json, subprocess\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def invocation(firmware: str = "/fw.fd", kernel_path: str = "/bzImage") -> Any:
    m = Machine(
        cpu_count=2, memory_size=2 << 30, firmware=firmware, kernel=kernel_path,
        initrd="/initrd", kernel_cmdline="",
    )  # fmt: skip
    return m.dumper_invocation()


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for init to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def assert_no_zombies() -> None:
    with suppress(ChildProcessError):
        assert os.waitpid(-1, os.WNOHANG) == (0, 0)


def test_dumper_timeout_kills_process_and_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    prog = script(
        tmp_path / "slow",
        "child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(300)",
    )
    start = time.monotonic()
    with pytest.raises(DumperTimeoutError, match="did not finish within 1 s"):
        AcpiDumper(program=prog, timeout=1).acpi_tables(invocation())
    assert time.monotonic() - start < 10
    me, child = map(int, pids.read_text().split())
    assert wait_gone(me) and wait_gone(child)
    assert_no_zombies()


def test_dumper_exits_but_child_holds_stdout(tmp_path: Path) -> None:
    """The dumper exits 0 but leaves a child with its stdout open: a timeout, child killed."""
    pids = tmp_path / "pids"
    prog = script(
        tmp_path / "leaky",
        "child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pids)!r}, 'w').write(str(child.pid))\n"
        "sys.stdout.write('RSDT'); sys.stdout.flush()",
    )
    with pytest.raises(DumperTimeoutError):
        AcpiDumper(program=prog, timeout=1).acpi_tables(invocation())
    assert wait_gone(int(pids.read_text()))
    assert_no_zombies()


def test_dumper_failure_reports_status_and_stderr(tmp_path: Path) -> None:
    prog = script(tmp_path / "fails", "sys.stderr.write('qemu: no TDX here\\n'); sys.exit(3)")
    with pytest.raises(DumperFailedError) as info:
        AcpiDumper(program=prog, timeout=10).acpi_tables(invocation())
    assert "status 3" in str(info.value) and "qemu: no TDX here" in str(info.value)
    assert_no_zombies()


def test_dumper_prints_nothing(tmp_path: Path) -> None:
    prog = script(tmp_path / "silent", "pass")
    with pytest.raises(DumperOutputError, match="printed nothing"):
        AcpiDumper(program=prog, timeout=10).acpi_tables(invocation())
    assert_no_zombies()


def test_dumper_prints_too_much(tmp_path: Path) -> None:
    prog = script(tmp_path / "chatty", "sys.stdout.write('A' * 5000)")
    with pytest.raises(DumperOutputError, match="more than 100 bytes"):
        AcpiDumper(program=prog, timeout=10, max_output=100).acpi_tables(invocation())
    assert_no_zombies()


def test_dumper_endless_output_is_cut_off(tmp_path: Path) -> None:
    pids = tmp_path / "pid"
    prog = script(
        tmp_path / "endless",
        f"open({str(pids)!r}, 'w').write(str(os.getpid()))\n"
        "while True: sys.stdout.buffer.write(b'x' * 65536)",
    )
    with no_hang(10), pytest.raises(DumperOutputError):
        AcpiDumper(program=prog, timeout=30, max_output=1 << 20).acpi_tables(invocation())
    assert wait_gone(int(pids.read_text()))
    assert_no_zombies()


def test_dumper_not_found_names_path_and_remedy(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-dumper")
    with pytest.raises(DumperNotFoundError) as info:
        AcpiDumper(program=missing).acpi_tables(invocation())
    msg = str(info.value)
    assert missing in msg and "dstack" in msg and "--acpi-tables" in msg


def test_dumper_not_executable(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(DumperNotFoundError, match="plain"):
        AcpiDumper(program=str(path)).acpi_tables(invocation())


def test_dumper_bad_interpreter(tmp_path: Path) -> None:
    path = tmp_path / "badinterp"
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    with pytest.raises(DumperNotFoundError, match="badinterp"):
        AcpiDumper(program=str(path)).acpi_tables(invocation())
    assert_no_zombies()


RECORDER = (
    "record = os.environ['REC']\n"
    "json.dump({'argv': sys.argv[1:], 'compat': os.environ.get('QEMU_ACPI_COMPAT_VER')},"
    " open(record, 'w'))\n"
    "sys.stdout.write('TABLES')"
)


def test_dumper_env_var_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = tmp_path / "rec.json"
    prog = script(tmp_path / "from-env", RECORDER)
    monkeypatch.setenv("REC", str(rec))
    monkeypatch.setenv("DSTACK_MR_ACPI_DUMPER", prog)
    assert AcpiDumper(timeout=10).acpi_tables(invocation()) == b"TABLES"
    assert json.loads(rec.read_text())["compat"] == "9.1.0"
    monkeypatch.setenv("DSTACK_MR_ACPI_DUMPER", str(tmp_path / "missing"))
    with pytest.raises(DumperNotFoundError, match="DSTACK_MR_ACPI_DUMPER"):
        AcpiDumper(timeout=10).acpi_tables(invocation())


def test_dumper_gets_argv_literally_no_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = tmp_path / "rec.json"
    marker = tmp_path / "pwned"
    prog = script(tmp_path / "recorder", RECORDER)
    monkeypatch.setenv("REC", str(rec))
    hostile_fw = f"/fw $(touch {marker}) `touch {marker}`; touch {marker} | x > {marker}"
    hostile_kernel = f"{tmp_path}/*"  # a glob a shell would expand
    inv = invocation(hostile_fw, hostile_kernel)
    assert AcpiDumper(program=prog, timeout=10).acpi_tables(inv) == b"TABLES"
    argv = json.loads(rec.read_text())["argv"]
    assert argv == list(inv.argv)
    assert hostile_fw in argv and hostile_kernel in argv
    assert not marker.exists()
    assert_no_zombies()


def test_tables_file_with_unusable_path_is_an_acpi_error() -> None:
    """Regression: a NUL byte in the path escaped as ValueError from Path.stat()."""
    with pytest.raises(AcpiError, match="null byte"):
        acpi.AcpiTablesFile("/tmp/x\0y").acpi_tables(invocation())


@pytest.mark.parametrize("bad_path", ["/fw\0.fd", "/fw\ud800.fd"], ids=["NUL", "lone-surrogate"])
def test_dumper_argument_that_cannot_reach_exec(tmp_path: Path, bad_path: str) -> None:
    """Regression: a firmware path with a NUL byte or a lone surrogate made Popen raise
    ValueError / UnicodeEncodeError; now it is a ConfigError naming the argument."""
    prog = script(tmp_path / "ok", "sys.stdout.write('TABLES')")
    with pytest.raises(ConfigError, match="argument"):
        AcpiDumper(program=prog, timeout=10).acpi_tables(invocation(firmware=bad_path))
    assert_no_zombies()


def test_dumper_timeout_values(tmp_path: Path) -> None:
    """Regression: timeout=inf overflowed select() (OverflowError), nan raised ValueError --
    both reachable from the CLI's --acpi-timeout. inf now means "no limit"."""
    prog = script(tmp_path / "ok", "sys.stdout.write('TABLES')")
    assert AcpiDumper(program=prog, timeout=float("inf")).acpi_tables(invocation()) == b"TABLES"
    for bad in (float("nan"), "5", None):
        with pytest.raises(ConfigError, match="timeout"):
            AcpiDumper(program=prog, timeout=bad).acpi_tables(invocation())  # type: ignore[arg-type]
    assert_no_zombies()


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def test_hash_file_reads_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "sparse.img"
    size = 64 * MIB
    with open(path, "wb") as f:
        f.truncate(size)
    tracemalloc.start()
    try:
        got_size, digest = hash_file(str(path), "initrd")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"peak {peak} bytes"
    zeros = bytes(MIB)
    h = hashlib.sha384()
    for _ in range(size // MIB):
        h.update(zeros)
    assert (got_size, digest) == (size, h.digest())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_initrd_changing_size_while_hashed_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The kernel patch uses the initrd's stat size while the initrd hashes on another thread;
    a file that grows or shrinks meanwhile must not yield a digest for a mixed state."""
    from dstack_mr import AcpiTablesFile, ImageError, Machine
    from dstack_mr import machine as machine_mod
    from dstack_mr.example import write_example_image

    meta = write_example_image(tmp_path / "img")
    d = meta.parent
    m = Machine(cpu_count=2, memory_size=2 << 30, firmware=d / "ovmf.fd", kernel=d / "bzImage",
                initrd=d / "initramfs.cpio.gz", kernel_cmdline="x")  # fmt: skip
    real_size = machine_mod.file_size
    monkeypatch.setattr(machine_mod, "file_size", lambda p, w: real_size(p, w) + 1)
    with pytest.raises(ImageError, match="changed size while being read"):
        m.measure_with_logs(AcpiTablesFile(d / "acpi-tables.bin"))
