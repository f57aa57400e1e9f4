"""Synthetic SEV-SNP material for the tests: an SEV-capable OVMF image built byte by byte."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence

FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
HASH_TABLE_RV_GUID = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454").bytes_le
SEV_ES_RESET_GUID = uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e").bytes_le
SEV_METADATA_GUID = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc").bytes_le

#: (gpa, size, type) in the stored order dstack's OVMF uses: zero pages, secrets, CPUID,
#: SVSM CAA, more zero pages, then the kernel-hashes page.
SECTIONS: tuple[tuple[int, int, int], ...] = (
    (0x800000, 0x9000, 1),
    (0x80A000, 0x3000, 1),
    (0x80D000, 0x1000, 2),
    (0x80E000, 0x1000, 3),
    (0x80F000, 0x1000, 4),
    (0x811000, 0xF000, 1),
    (0x810000, 0x1000, 0x10),
)
HASHES_TABLE_GPA = 0x810C00
RESET_EIP = 0x80B004


def footer_entry(data: bytes, guid: bytes) -> bytes:
    return data + struct.pack("<H", len(data) + 18) + guid


def sev_ovmf(
    size: int = 0x10000,
    sections: Sequence[tuple[int, int, int]] = SECTIONS,
    hashes_gpa: int = HASHES_TABLE_GPA,
    reset_eip: int = RESET_EIP,
    fill: int = 0x5A,
    meta_at: int = 0x200,
    meta_size: int | None = None,
) -> bytes:
    """An OVMF image (all ``fill`` bytes) with an SEV metadata block and a footer table."""
    fw = bytearray([fill]) * size
    declared = 16 + 12 * len(sections) if meta_size is None else meta_size
    meta = b"ASEV" + struct.pack("<III", declared, 1, len(sections))
    meta += b"".join(struct.pack("<III", *s) for s in sections)
    fw[meta_at : meta_at + len(meta)] = meta
    table = (
        footer_entry(struct.pack("<I", hashes_gpa), HASH_TABLE_RV_GUID)
        + footer_entry(struct.pack("<I", reset_eip), SEV_ES_RESET_GUID)
        + footer_entry(struct.pack("<I", size - meta_at), SEV_METADATA_GUID)
    )
    footer_off = size - 32 - 18
    fw[footer_off - len(table) : footer_off] = table
    fw[footer_off : footer_off + 18] = struct.pack("<H", len(table) + 18) + FOOTER_GUID
    return bytes(fw)


def upstream_synthetic_ovmf() -> bytes:
    """upstream sev.rs's ``synthetic_snp_ovmf`` (4 KiB, four sections, metadata at 512)."""
    return sev_ovmf(
        size=4096,
        sections=(
            (0x1000, 0x1000, 1),
            (0x2000, 0x1000, 2),
            (0x3000, 0x1000, 3),
            (0x4000, 0x1000, 0x10),
        ),
        hashes_gpa=0x4000,
        reset_eip=0xFFFF_FFF0,
        fill=0,
        meta_at=512,
        meta_size=0,  # upstream's test leaves the header's size field at zero
    )


# --- SCALE VersionedAttestation V0 with an SNP quote, for synthetic evidence -------------------


def compact(n: int) -> bytes:
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return struct.pack("<H", n << 2 | 1)
    if n < 1 << 30:
        return struct.pack("<I", n << 2 | 2)
    return b"\x03" + struct.pack("<I", n)


def vec(data: bytes) -> bytes:
    return compact(len(data)) + data


def snp_attestation_bytes(
    report: bytes,
    mr_config: str,
    config: str,
    report_data: bytes = bytes(64),
    certs: Sequence[bytes] = (),
    events: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    out = b"\x00\x03" + vec(report) + compact(len(certs)) + b"".join(vec(c) for c in certs)
    out += vec(mr_config.encode()) + compact(len(events))
    out += b"".join(vec(name.encode()) + vec(payload) for name, payload in events)
    return out + report_data + vec(config.encode())


def snp_report(
    measurement: bytes, host_data: bytes, report_data: bytes = bytes(64), version: int = 3
) -> bytes:
    """A (unsigned) report with the given MEASUREMENT / HOST_DATA / REPORT_DATA."""
    r = bytearray(1184)
    struct.pack_into("<IIQ", r, 0, version, 0, 0x30000)
    r[0x50:0x90] = report_data
    r[0x90:0xC0] = measurement
    r[0xC0:0xE0] = host_data
    r[0x188:0x18B] = b"\x19\x01\x01"
    return bytes(r)
