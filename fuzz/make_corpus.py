#!/usr/bin/env python3
"""Write a small seed corpus for ``atheris_harness.py``, generated from ../shared at run time.

Nothing here is committed: the seeds are slices of the real artefacts (the first bytes of a
kernel, the footer/descriptor tail of an OVMF image, the non-padding part of an ACPI blob) plus
tiny synthetic images, each prefixed with the harness's target-selector byte.

    python fuzz/make_corpus.py [OUT_DIR]      # default: $TMPDIR/dstack-mr-corpus
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SHARED = Path(os.environ.get("DSTACK_MR_SHARED", "../shared"))
SHARED = _SHARED if _SHARED.is_absolute() else (ROOT / _SHARED).resolve()

# Must match targets.TARGETS (tests/test_fuzz_targets.py checks).
TDVF, KERNEL, ACPI, QUOTE, CCEL, JSON_LOG, VMCONFIG, SNP_ATTESTATION, SNP_CBOR, SEV_OVMF = range(10)

_FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
_METADATA_OFFSET_GUID = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le


def tiny_tdvf() -> bytes:
    """A 12 KiB TDVF image that parses and measures: descriptor at 0, one 4 KiB BFV page."""
    size = 0x3000
    sections = [
        (0x1000, 0x1000, 0xFFFF_F000, 0x1000, 0, 1),  # BFV, MR_EXTEND
        (0, 0, 0x80_9000, 0x2000, 2, 0),  # TD_HOB
        (0, 0, 0x80_0000, 0x6000, 3, 0),  # TEMP_MEM
    ]
    fw = bytearray(size)
    desc = b"TDVF" + struct.pack("<III", 16 + 32 * len(sections), 1, len(sections))
    desc += b"".join(struct.pack("<IIQQII", *s) for s in sections)
    fw[: len(desc)] = desc
    fw[0x1000:0x2000] = bytes(range(256)) * 16
    entry = struct.pack("<I", size) + struct.pack("<H", 4 + 18) + _METADATA_OFFSET_GUID
    footer = entry + struct.pack("<H", len(entry) + 18) + _FOOTER_GUID
    fw[size - 32 - len(footer) : size - 32] = footer
    return bytes(fw)


def tiny_sev_ovmf() -> bytes:
    """An 8 KiB SEV OVMF image: SEV metadata (zero pages, secrets, CPUID, kernel hashes) and
    the footer entries for the hash table, the SEV-ES reset block and the metadata."""
    size, meta_at = 0x2000, 0x200
    sections = [(0x80_0000, 0x2000, 1), (0x80_2000, 0x1000, 2), (0x80_3000, 0x1000, 3)]
    sections.append((0x80_4000, 0x1000, 0x10))
    fw = bytearray(size)
    meta = b"ASEV" + struct.pack("<III", 16 + 12 * len(sections), 1, len(sections))
    meta += b"".join(struct.pack("<III", *s) for s in sections)
    fw[meta_at : meta_at + len(meta)] = meta

    def entry(value: int, guid: str) -> bytes:
        return struct.pack("<I", value) + struct.pack("<H", 4 + 18) + uuid.UUID(guid).bytes_le

    table = entry(0x80_4C00, "7255371f-3a3b-4b04-927b-1da6efa8d454")
    table += entry(0x80_1004, "00f771de-1a7e-4fcb-890e-68c77e2fb44e")
    table += entry(size - meta_at, "dc886566-984a-4798-a75e-5585a7bf67cc")
    footer = table + struct.pack("<H", len(table) + 18) + _FOOTER_GUID
    fw[size - 32 - len(footer) : size - 32] = footer
    return bytes(fw)


def _strip(blob: bytes, pad: bytes = b"\0") -> bytes:
    return blob.rstrip(pad) or blob[:64]


def _acpi_used(blob: bytes) -> bytes:
    """The tables of a QEMU ``etc/acpi/tables`` blob without its zero padding."""
    off = 0
    while off + 8 <= len(blob):
        length = struct.unpack_from("<I", blob, off + 4)[0]
        if length == 0:
            break
        off += length
    return blob[: min(off, len(blob))]


def seeds() -> dict[str, bytes]:
    inputs, real = SHARED / "inputs", SHARED / "real"
    out: dict[str, bytes] = {"tdvf-tiny": bytes([TDVF]) + tiny_tdvf()}
    for name in ("ovmf-2022.11-deb12.fd", "ovmf-2025.02-deb13.fd"):
        fw = (inputs / name).read_bytes()
        # The footer table and the descriptor both count back from the end: keep 4 KiB of tail.
        out[f"tdvf-tail-{name}"] = bytes([TDVF]) + fw[-0x1000:]
    for name in ("vmlinuz-6.1.0-56-amd64", "vmlinuz-6.12.117-deb13-rt-amd64"):
        k = (inputs / name).read_bytes()
        # Headers end at 0x1000; a little section data after them is a valid (odd) input.
        out[f"kernel-head-{name}"] = bytes([KERNEL]) + k[:0x1100]
    k = (inputs / "vmlinuz-6.1.0-56-amd64").read_bytes()
    out["kernel-64k"] = bytes([KERNEL]) + k[:0x10000]
    for name in ("acpi-q35.bin", "acpi-q35-hpet.bin", "acpi-dstack-0.6.0-layout.bin"):
        out[f"acpi-{name}"] = bytes([ACPI]) + _acpi_used((inputs / name).read_bytes())
    from dstack_mr import example

    out["tdvf-example-tail"] = bytes([TDVF]) + example.build_firmware()[-0x1000:]
    out["kernel-example-head"] = bytes([KERNEL]) + example.build_kernel()[:0x1100]
    out["acpi-example"] = bytes([ACPI]) + _acpi_used(example.build_acpi_tables())
    for path in sorted(real.glob("*-getquote.json")):
        doc = json.loads(path.read_text())
        out[f"quote-{path.stem}"] = bytes([QUOTE]) + bytes.fromhex(doc["quote"])
        out[f"jsonlog-{path.stem}"] = bytes([JSON_LOG]) + doc["event_log"].encode()
        if "vm_config" in doc:
            out[f"vmconfig-{path.stem}"] = bytes([VMCONFIG]) + doc["vm_config"].encode()
    snp_capture = json.loads((real / "dstack-snp-0.6.0-attestation.json").read_text())
    scale = bytes.fromhex(snp_capture["attestation"])
    out["snp-attestation"] = bytes([SNP_ATTESTATION]) + scale
    from dstack_mr.snp_attestation import parse_snp_attestation

    att = parse_snp_attestation(scale)
    assert att is not None and att.vm_config is not None
    out["snp-cbor"] = bytes([SNP_CBOR]) + att.vm_config.measurement_document().measurement
    out["sev-ovmf-tiny"] = bytes([SEV_OVMF]) + tiny_sev_ovmf()
    ccel = (real / "dstack-ccel-sample.bin").read_bytes()
    out["ccel-sample"] = bytes([CCEL]) + _strip(_strip(ccel, b"\xff"))
    return out


def build(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (directory / name).write_bytes(data)
    return directory


def main() -> int:
    if not (SHARED / "inputs").is_dir():
        print(f"shared test data not found at {SHARED} (set DSTACK_MR_SHARED)", file=sys.stderr)
        return 2
    default = Path(tempfile.gettempdir()) / "dstack-mr-corpus"
    out = build(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
    files = sorted(out.iterdir())
    print(f"{len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
