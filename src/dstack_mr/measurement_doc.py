"""``measurement.tdx.cbor``: an image's TDX measurements in a few hundred bytes.

Upstream dstack ships, beside each OS image, a small CBOR document with everything about the
image that TDX measures: both MRTD candidates, the patched kernel's Authenticode digest (for
the high-memory placement), the cmdline and initrd digests and a compact *witness* of the
firmware's TD HOB / TEMP_MEM sections. A VM's ``vm_config.tdx_measurement`` carries it with
the image's ``sha256sum.txt``, so a verifier can check a VM without the image ("lite" mode):

- ``sha256(sha256sum.txt)`` must be ``vm_config.os_image_hash`` (the image identity), and
- ``sha256sum.txt``'s line for ``measurement.tdx.cbor`` must be ``sha256(document)``.

:func:`verify_material` checks that chain and decodes the document (version 3 only);
:func:`build_document` computes it from an image directory. The witness is unsigned LEB128:
``base_page``, ``td_hob_page - base_page``, ``n``, then ``n`` pairs (``start - base_page``,
``page_count``), pages of 4 KiB, sorted by start.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs

from . import cbor
from . import kernel as kernel_mod
from ._binary import from_hex
from .config import OvmfVariant, TdxMeasurementMaterial, rust_lines, rust_split_whitespace
from .errors import CborError, MeasurementDocumentError
from .registry import U64_MAX
from .tdvf import PAGE_SIZE, SectionType, Tdvf, TdvfSection, build_td_hob

__all__ = [
    "COMPAT_2G_MEMORY",
    "DOCUMENT_VERSION",
    "TDX_MEASUREMENT_FILENAME",
    "BuiltDocument",
    "MeasurementDocument",
    "TdHobWitness",
    "build_document",
    "build_document_with_warnings",
    "lite_memory_supported",
    "sha256sum_entry",
    "verify_material",
]

TDX_MEASUREMENT_FILENAME = "measurement.tdx.cbor"
#: QEMU places the initrd for exactly 2 GiB as it does from 0xB0000000 up, so the document's
#: kernel digest (computed for that placement) holds for these sizes only.
COMPAT_2G_MEMORY = 0x8000_0000


def lite_memory_supported(memory_size: int) -> bool:
    """Whether the document's kernel digest applies to a VM of ``memory_size`` bytes."""
    return memory_size == COMPAT_2G_MEMORY or memory_size >= kernel_mod.STABLE_MIN_MEMORY


DOCUMENT_VERSION = 3
DIGEST_LEN = 48
#: Real witnesses are ~12 bytes; real documents ~400.
MAX_WITNESS_SIZE = 4096
MAX_DOCUMENT_SIZE = 16 * 1024
MAX_CHECKSUM_FILE_SIZE = 1 << 20


def _hex(b: bytes) -> str:
    return b.hex()


# --- the TD HOB witness ---------------------------------------------------------------------


def _leb128(data: bytes, offset: int, what: str) -> tuple[int, int]:
    value = shift = 0
    start = offset
    while True:
        if offset >= len(data):
            raise MeasurementDocumentError(f"TD HOB witness: {what} is truncated")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 64:
            raise MeasurementDocumentError(f"TD HOB witness: {what} does not fit 64 bits")
    # A zero final byte after a continuation is a longer spelling of the same number; the
    # upstream writer never produces one, so it marks a document not written by it.
    if offset - start > 1 and byte == 0:
        raise MeasurementDocumentError(f"TD HOB witness: {what} is not minimally encoded")
    if value > U64_MAX:
        raise MeasurementDocumentError(f"TD HOB witness: {what} does not fit 64 bits")
    return value, offset


def _put_leb128(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


@attrs.frozen
class TdHobWitness:
    """The accepted memory ranges the TD HOB is built from, in 4 KiB pages.

    ``ranges`` are (start_page, page_count), sorted, non-empty, not overlapping; the TD HOB
    itself lives at ``td_hob_page``, the start of one of them.
    """

    base_page: int
    td_hob_page: int
    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def decode(cls, data: bytes) -> TdHobWitness:
        """Parse and check a witness; every inconsistency is a MeasurementDocumentError."""
        if len(data) > MAX_WITNESS_SIZE:
            raise MeasurementDocumentError(
                f"TD HOB witness is {len(data)} bytes, more than {MAX_WITNESS_SIZE}"
            )
        base, off = _leb128(data, 0, "base_page")
        hob_delta, off = _leb128(data, off, "td_hob_page delta")
        count, off = _leb128(data, off, "range count")
        if count == 0:
            raise MeasurementDocumentError("TD HOB witness has no ranges")
        if count * 2 > len(data) - off:
            raise MeasurementDocumentError(
                f"TD HOB witness announces {count} ranges but only {len(data) - off} bytes remain"
            )
        ranges: list[tuple[int, int]] = []
        for i in range(count):
            delta, off = _leb128(data, off, f"range {i} start")
            pages, off = _leb128(data, off, f"range {i} page count")
            ranges.append((base + delta, pages))
        if off != len(data):
            raise MeasurementDocumentError(f"TD HOB witness has {len(data) - off} trailing byte(s)")
        witness = cls(base, base + hob_delta, tuple(ranges))
        witness.check()
        return witness

    def check(self) -> None:
        """The invariants the upstream writer guarantees; a witness breaking one is corrupt."""
        if not self.ranges:
            raise MeasurementDocumentError("TD HOB witness has no ranges")
        if self.ranges[0][0] != self.base_page:
            raise MeasurementDocumentError(
                "TD HOB witness: base_page is not the start of the first range"
            )
        prev_end: int | None = None
        for i, (start, pages) in enumerate(self.ranges):
            if pages == 0:
                raise MeasurementDocumentError(f"TD HOB witness: range {i} is empty")
            if (start + pages) * PAGE_SIZE > U64_MAX:
                raise MeasurementDocumentError(
                    f"TD HOB witness: range {i} ends beyond the 64-bit address space"
                )
            if prev_end is not None and start < prev_end:
                raise MeasurementDocumentError(
                    f"TD HOB witness: range {i} (page {start:#x}) overlaps or precedes the one "
                    f"before it (which ends at page {prev_end:#x}); ranges must be sorted and "
                    "disjoint"
                )
            prev_end = start + pages
        if self.td_hob_page not in {start for start, _ in self.ranges}:
            raise MeasurementDocumentError(
                f"TD HOB witness: the TD HOB page {self.td_hob_page:#x} is not the start of "
                "any range"
            )

    def encode(self) -> bytes:
        out = bytearray()
        _put_leb128(self.base_page, out)
        _put_leb128(self.td_hob_page - self.base_page, out)
        _put_leb128(len(self.ranges), out)
        for start, pages in self.ranges:
            _put_leb128(start - self.base_page, out)
            _put_leb128(pages, out)
        return bytes(out)

    @classmethod
    def from_tdvf(cls, tdvf: Tdvf) -> TdHobWitness:
        """The witness of a firmware's TD_HOB and TEMP_MEM sections (upstream's builder)."""
        ranges: list[tuple[int, int]] = []
        hob_pages = []
        for s in tdvf.sections:
            if s.section_type in (SectionType.TD_HOB, SectionType.TEMP_MEM):
                if s.memory_data_size // PAGE_SIZE == 0:
                    raise MeasurementDocumentError(
                        f"TDVF section at {s.memory_address:#x} is empty; it cannot be a "
                        "witness range"
                    )
                ranges.append((s.memory_address // PAGE_SIZE, s.memory_data_size // PAGE_SIZE))
            if s.section_type == SectionType.TD_HOB:
                hob_pages.append(s.memory_address // PAGE_SIZE)
        if len(hob_pages) != 1:
            raise MeasurementDocumentError(
                f"the firmware has {len(hob_pages)} TD_HOB sections; a witness needs exactly one"
            )
        ranges.sort()
        witness = cls(ranges[0][0], hob_pages[0], tuple(ranges))
        witness.check()
        return witness

    def sections(self) -> tuple[TdvfSection, ...]:
        return tuple(
            TdvfSection(
                data_offset=0,
                raw_data_size=0,
                memory_address=start * PAGE_SIZE,
                memory_data_size=pages * PAGE_SIZE,
                section_type=SectionType.TD_HOB
                if start == self.td_hob_page
                else SectionType.TEMP_MEM,
                attributes=0,
            )
            for start, pages in self.ranges
        )

    def td_hob(self, memory_size: int) -> bytes:
        """The TD HOB list OVMF measures (RTMR0 event 0), as from the firmware's sections."""
        return build_td_hob(self.sections(), memory_size, self.td_hob_page * PAGE_SIZE)

    def td_hob_digest(self, memory_size: int) -> bytes:
        return hashlib.sha384(self.td_hob(memory_size)).digest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "td_hob_address": f"{self.td_hob_page * PAGE_SIZE:#x}",
            "ranges": [
                {"start": f"{start * PAGE_SIZE:#x}", "size": f"{pages * PAGE_SIZE:#x}"}
                for start, pages in self.ranges
            ],
        }


# --- the document ---------------------------------------------------------------------------


@attrs.frozen
class MeasurementDocument:
    """A decoded ``measurement.tdx.cbor`` (version 3)."""

    cmdline_sha384: bytes = attrs.field(repr=_hex)
    kernel_authenticode: bytes = attrs.field(repr=_hex)
    initrd_sha384: bytes = attrs.field(repr=_hex)
    ovmf_variant: OvmfVariant
    mrtd_single_pass: bytes = attrs.field(repr=_hex)
    mrtd_two_pass: bytes = attrs.field(repr=_hex)
    td_hob_witness: bytes = attrs.field(repr=_hex)

    @property
    def witness(self) -> TdHobWitness:
        return TdHobWitness.decode(self.td_hob_witness)

    def mrtd(self, two_pass: bool) -> bytes:
        return self.mrtd_two_pass if two_pass else self.mrtd_single_pass

    def to_cbor(self) -> bytes:
        """The document's bytes, keys in the order upstream writes them."""
        return cbor.encode(
            {
                "version": DOCUMENT_VERSION,
                "image": {
                    "cmdline_sha384": self.cmdline_sha384,
                    "kernel_authenticode": self.kernel_authenticode,
                    "initrd_sha384": self.initrd_sha384,
                },
                "tdvf": {
                    "ovmf": self.ovmf_variant.value,
                    "mrtd": {"single_pass": self.mrtd_single_pass, "two_pass": self.mrtd_two_pass},
                    "td_hob": self.td_hob_witness,
                },
            }
        )

    @classmethod
    def from_cbor(cls, data: bytes) -> MeasurementDocument:
        """Decode and check a document: version 3, every digest 48 bytes, a valid witness,
        no unknown or missing field."""
        where = TDX_MEASUREMENT_FILENAME
        try:
            root = cbor.decode(data, max_size=MAX_DOCUMENT_SIZE)
            top = cbor.expect_fields(root, where, ["version", "image", "tdvf"])
            version = cbor.get_uint(top, "version", where)
            if version != DOCUMENT_VERSION:
                raise MeasurementDocumentError(
                    f"{where}: unsupported version {version}; only version {DOCUMENT_VERSION} "
                    "documents are understood"
                )
            image = cbor.expect_fields(
                top["image"],
                f"{where}.image",
                ["cmdline_sha384", "kernel_authenticode", "initrd_sha384"],
            )
            tdvf = cbor.expect_fields(top["tdvf"], f"{where}.tdvf", ["ovmf", "mrtd", "td_hob"])
            mrtd = cbor.expect_fields(
                tdvf["mrtd"], f"{where}.tdvf.mrtd", ["single_pass", "two_pass"]
            )
            ovmf = cbor.get_text(tdvf, "ovmf", f"{where}.tdvf")

            def digest(m: dict[str, cbor.CborValue], key: str, at: str) -> bytes:
                return cbor.get_bytes(m, key, at, length=DIGEST_LEN)

            doc = cls(
                cmdline_sha384=digest(image, "cmdline_sha384", f"{where}.image"),
                kernel_authenticode=digest(image, "kernel_authenticode", f"{where}.image"),
                initrd_sha384=digest(image, "initrd_sha384", f"{where}.image"),
                ovmf_variant=_document_variant(ovmf),
                mrtd_single_pass=digest(mrtd, "single_pass", f"{where}.tdvf.mrtd"),
                mrtd_two_pass=digest(mrtd, "two_pass", f"{where}.tdvf.mrtd"),
                td_hob_witness=cbor.get_bytes(tdvf, "td_hob", f"{where}.tdvf"),
            )
        except CborError as exc:
            raise MeasurementDocumentError(f"{where}: {exc}") from None
        doc.witness  # noqa: B018 -- decoding checks it; a bad witness fails here, not later
        return doc

    def to_dict(self) -> dict[str, Any]:
        """Upstream's ``inspect-measurement`` JSON layout (bytes as hex), plus the witness
        decoded into addresses under ``td_hob_witness``."""
        return {
            "version": DOCUMENT_VERSION,
            "image": {
                "cmdline_sha384": self.cmdline_sha384.hex(),
                "kernel_authenticode": self.kernel_authenticode.hex(),
                "initrd_sha384": self.initrd_sha384.hex(),
            },
            "tdvf": {
                "ovmf": self.ovmf_variant.value,
                "mrtd": {
                    "single_pass": self.mrtd_single_pass.hex(),
                    "two_pass": self.mrtd_two_pass.hex(),
                },
                "td_hob": self.td_hob_witness.hex(),
            },
            "td_hob_witness": self.witness.to_dict(),
        }


def _document_variant(name: str) -> OvmfVariant:
    # Upstream removed the stable202505 layout: its documents can only say pre202505.
    if name != OvmfVariant.PRE202505.value:
        raise MeasurementDocumentError(
            f"{TDX_MEASUREMENT_FILENAME}: tdvf.ovmf is {name!r}; measurement documents describe "
            "only the 'pre202505' layout"
        )
    return OvmfVariant.PRE202505


# --- the integrity chain --------------------------------------------------------------------


def sha256sum_entry(checksum_file: bytes, filename: str) -> bytes:
    """The SHA-256 ``sha256sum.txt`` lists for exactly ``filename`` (upstream's reading:
    lines trimmed, blank lines skipped, ``HASH NAME``; the name must match exactly and occur
    once)."""
    try:
        text = checksum_file.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MeasurementDocumentError(f"sha256sum.txt is not UTF-8 ({e.reason})") from None
    found: bytes | None = None
    for number, line in enumerate(rust_lines(text), 1):
        parts = rust_split_whitespace(line)
        if not parts:
            continue
        if len(parts) < 2:
            raise MeasurementDocumentError(f"sha256sum.txt line {number} has no file name")
        if parts[1] != filename:
            continue
        if found is not None:
            raise MeasurementDocumentError(f"sha256sum.txt lists {filename} more than once")
        digest = from_hex(parts[0])
        if digest is None or len(digest) != 32:
            raise MeasurementDocumentError(
                f"sha256sum.txt line {number}: {parts[0][:80]!r} is not a SHA-256 in hex"
            )
        found = digest
    if found is None:
        raise MeasurementDocumentError(f"sha256sum.txt has no line for {filename}")
    return found


def verify_material(material: TdxMeasurementMaterial, os_image_hash: bytes) -> MeasurementDocument:
    """Check ``vm_config.tdx_measurement`` against ``os_image_hash``, then decode it.

    Nothing from the document is trusted before both links of the chain hold.
    """
    if len(material.checksum_file) > MAX_CHECKSUM_FILE_SIZE:
        raise MeasurementDocumentError(
            f"tdx_measurement.checksum_file is {len(material.checksum_file)} bytes, more than "
            f"{MAX_CHECKSUM_FILE_SIZE}"
        )
    if not os_image_hash:
        raise MeasurementDocumentError(
            "vm_config.os_image_hash is empty: the measurement document cannot be bound to an image"
        )
    listed = hashlib.sha256(material.checksum_file).digest()
    if listed != os_image_hash:
        raise MeasurementDocumentError(
            "tdx_measurement.checksum_file does not belong to this image: "
            f"sha256(sha256sum.txt) = {listed.hex()}, vm_config.os_image_hash = "
            f"{os_image_hash.hex()}"
        )
    expected = sha256sum_entry(material.checksum_file, TDX_MEASUREMENT_FILENAME)
    actual = hashlib.sha256(material.measurement).digest()
    if expected != actual:
        raise MeasurementDocumentError(
            f"tdx_measurement.measurement is not the image's {TDX_MEASUREMENT_FILENAME}: "
            f"sha256sum.txt lists {expected.hex()}, the document hashes to {actual.hex()}"
        )
    return MeasurementDocument.from_cbor(material.measurement)


# --- the build side -------------------------------------------------------------------------


@attrs.frozen
class BuiltDocument:
    """A built document and the warnings about the image it came from (e.g. a truncated
    kernel, which still gets the reference's digest); the document itself never carries
    them."""

    document: MeasurementDocument
    warnings: tuple[str, ...] = ()


def build_document(image_dir: str) -> MeasurementDocument:
    """Compute ``measurement.tdx.cbor`` for an image directory, as upstream's build does.

    :func:`build_document_with_warnings` also says what is suspect in the image.
    """
    return build_document_with_warnings(image_dir).document


def build_document_with_warnings(image_dir: str) -> BuiltDocument:
    """The document of :func:`build_document`, with the warnings about the image.

    The kernel digest is for QEMU's high-memory placement (memory >= 0xB0000000, which the
    exact 2 GiB placement equals); the cmdline is the image's plus `` initrd=initrd``. The
    layout is pre202505 (the only one documents carry): an image whose metadata.json says
    otherwise is refused.
    """
    from .image import Image, ImageFiles

    files = ImageFiles.from_dir(image_dir)
    if not files.info.cmdline.strip():
        raise MeasurementDocumentError(
            f"{image_dir}: metadata.json has no cmdline; a measurement document needs one"
        )
    if files.info.ovmf_variant not in (None, OvmfVariant.PRE202505):
        raise MeasurementDocumentError(
            f"{image_dir}: metadata.json ovmf_variant is {files.info.ovmf_variant.value!r}; "
            "measurement documents describe only the 'pre202505' layout"
        )
    if files.info.version:
        from .config import parse_os_version

        parse_os_version(files.info.version)  # upstream validates it, then ignores it
    image = Image(files)
    document = MeasurementDocument(
        cmdline_sha384=image.cmdline_digest,
        kernel_authenticode=kernel_mod.patched_kernel_digest(
            image.kernel, image.initrd_size, kernel_mod.STABLE_MIN_MEMORY
        ),
        initrd_sha384=image.initrd_digest,
        ovmf_variant=OvmfVariant.PRE202505,
        mrtd_single_pass=image.mrtd(False),
        mrtd_two_pass=image.mrtd(True),
        td_hob_witness=TdHobWitness.from_tdvf(image.tdvf).encode(),
    )
    return BuiltDocument(document, image.kernel_warnings)
