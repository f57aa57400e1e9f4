"""An image directory's SEV-SNP material: its ``measurement.snp.cbor`` and/or its files.

A dstack image directory may ship ``measurement.snp.cbor`` (listed in ``sha256sum.txt``)
and, for SNP, an SEV firmware named by ``metadata.json``'s ``bios-sev`` (else ``bios``)
beside the kernel and initrd. From the files, the same document is computed as upstream's
build step does: the OVMF's GCTX digest and SEV metadata, SHA-256 of kernel and initrd, the
cmdline trimmed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .config import parse_json
from .errors import ConfigError, ImageError, SnpError
from .files import MAX_FIRMWARE_SIZE, read_file, reading
from .image import MAX_METADATA_SIZE, METADATA, resolve_inside
from .snp import SnpOvmf, measured_cmdline, rootfs_hash_from_cmdline
from .snp_document import (
    SNP_MEASUREMENT_FILENAME,
    IntegrityCheck,
    SnpImageMeasurement,
    integrity_checks,
)

if TYPE_CHECKING:
    from .snp import SnpMeasurement
    from .snp_document import SnpVmConfig

__all__ = [
    "SnpImage",
    "SnpImageLaunch",
    "build_snp_document",
    "load_snp_image",
    "measure_snp_image",
    "snp_image_dir",
]

#: measurement.snp.cbor and sha256sum.txt are small; refuse to slurp anything else.
MAX_SMALL_FILE = 1 << 20
_CHUNK = 1 << 20


def _sha256_file(path: str, what: str) -> bytes:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with reading(path, what), open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest()


def _text_field(meta: Mapping[str, Any], key: str, path: str) -> str | None:
    value = meta.get(key)
    if value is not None and not isinstance(value, str):
        raise ImageError(f"{path}: field {key!r} must be a string")
    return value


@attrs.frozen
class SnpImage:
    """What an image directory says about its SNP launch.

    ``document`` is its ``measurement.snp.cbor`` (when shipped), ``computed`` the same
    document recomputed from its SEV firmware, kernel, initrd and cmdline (when those are
    there), and ``checksum_file`` its ``sha256sum.txt``.
    """

    directory: str
    document: SnpImageMeasurement | None
    computed: SnpImageMeasurement | None
    checksum_file: bytes | None = attrs.field(repr=False)
    firmware: str | None = None

    @property
    def material(self) -> SnpImageMeasurement:
        """The shipped document, else the one computed from the files."""
        found = self.document or self.computed
        if found is None:
            raise ImageError(
                f"{self.directory}: neither {SNP_MEASUREMENT_FILENAME} nor an SEV firmware, "
                "kernel and initrd to compute it from"
            )
        return found

    @property
    def os_image_hash(self) -> bytes | None:
        """sha256(sha256sum.txt): the image identity a vm_config names."""
        return None if self.checksum_file is None else hashlib.sha256(self.checksum_file).digest()

    def integrity(self) -> tuple[IntegrityCheck, ...]:
        """The shipped document's line in sha256sum.txt (when both are there)."""
        if self.document is None or self.checksum_file is None:
            return ()
        return integrity_checks(self.os_image_hash, self.checksum_file, self.document.raw)

    def differences(self) -> list[str]:
        """Fields where the shipped document and the files disagree."""
        if self.document is None or self.computed is None:
            return []
        a, b = self.document.to_dict(), self.computed.to_dict()
        return [k for k in a if a[k] != b[k]]


def _compute(directory: str, meta: Mapping[str, Any], path: str) -> tuple[SnpImageMeasurement, str]:
    bios = _text_field(meta, "bios-sev", path) or _text_field(meta, "bios", path)
    cmdline = _text_field(meta, "cmdline", path)
    kernel = _text_field(meta, "kernel", path)
    initrd = _text_field(meta, "initrd", path)
    if not bios or kernel is None or initrd is None or cmdline is None:
        raise ImageError(f"{path}: bios-sev/bios, kernel, initrd and cmdline are required")
    firmware = resolve_inside(directory, bios, "metadata 'bios-sev'")
    try:
        ovmf = SnpOvmf.parse(read_file(firmware, "SEV firmware", MAX_FIRMWARE_SIZE))
        rootfs_hash_from_cmdline(cmdline)
    except SnpError as exc:
        raise SnpError(
            f"{directory}: its files cannot be measured for SEV-SNP ({firmware}): {exc}"
        ) from None
    doc = SnpImageMeasurement(
        cmdline=measured_cmdline(cmdline),
        ovmf_hash=ovmf.ovmf_hash,
        kernel_hash=_sha256_file(resolve_inside(directory, kernel, "metadata 'kernel'"), "kernel"),
        initrd_hash=_sha256_file(resolve_inside(directory, initrd, "metadata 'initrd'"), "initrd"),
        hashes_table_gpa=ovmf.hashes_table_gpa,
        reset_eip=ovmf.reset_eip,
        ovmf_sections=ovmf.sections,
        raw=b"",
    )
    return attrs.evolve(doc, raw=doc.to_cbor()), firmware


def load_snp_image(directory: str | os.PathLike[str], *, compute: bool = True) -> SnpImage:
    """Read an image directory's SNP material. With ``compute``, also recompute the document
    from the SEV firmware, kernel and initrd when ``metadata.json`` names them and they are
    SEV-capable; a directory that has neither a document nor such files is an ImageError."""
    base = os.fspath(directory)
    if not os.path.isdir(base):
        raise ImageError(f"image directory {base!r} does not exist or is not a directory")
    doc_path = os.path.join(base, SNP_MEASUREMENT_FILENAME)
    document = None
    if os.path.exists(doc_path):
        document = SnpImageMeasurement.from_cbor(
            read_file(doc_path, SNP_MEASUREMENT_FILENAME, MAX_SMALL_FILE)
        )
    sums_path = os.path.join(base, "sha256sum.txt")
    checksum_file = None
    if os.path.exists(sums_path):
        checksum_file = read_file(sums_path, "sha256sum.txt", MAX_SMALL_FILE)
    computed, firmware = None, None
    meta_path = os.path.join(base, METADATA)
    if compute and os.path.exists(meta_path):
        meta = parse_json(
            read_file(meta_path, "image metadata", MAX_METADATA_SIZE), meta_path, ImageError
        )
        if not isinstance(meta, Mapping):
            raise ImageError(f"{meta_path}: expected a JSON object")
        try:
            computed, firmware = _compute(base, meta, meta_path)
        except SnpError:
            # A TDX-only image (TDVF firmware without SEV metadata) has no SNP material;
            # that is only an error when there is no document either.
            if document is None:
                raise
    if document is None and computed is None:
        raise ImageError(
            f"{base}: no {SNP_MEASUREMENT_FILENAME} and no metadata.json naming an SEV "
            "firmware, kernel and initrd"
        )
    return SnpImage(base, document, computed, checksum_file, firmware)


def build_snp_document(directory: str | os.PathLike[str]) -> SnpImageMeasurement:
    """Compute ``measurement.snp.cbor`` for an image directory from its SEV firmware, kernel,
    initrd and cmdline, as upstream's build does (any shipped document is ignored)."""
    base = os.fspath(directory)
    meta_path = os.path.join(base, METADATA)
    meta = parse_json(
        read_file(meta_path, "image metadata", MAX_METADATA_SIZE), meta_path, ImageError
    )
    if not isinstance(meta, Mapping):
        raise ImageError(f"{meta_path}: expected a JSON object")
    return _compute(base, meta, meta_path)[0]


def snp_image_dir(
    vm_config: SnpVmConfig | None,
    image_dir: str | os.PathLike[str] | None = None,
    image_base_dir: str | os.PathLike[str] | None = None,
) -> str | None:
    """The image directory to judge an SNP attestation by: ``image_dir``, else the one
    ``vm_config.image`` names inside ``image_base_dir`` (as for TDX); None without either."""
    if image_dir is not None:
        return os.fspath(image_dir)
    if image_base_dir is None:
        return None
    name = None if vm_config is None else vm_config.fields.get("image")
    if not isinstance(name, str) or not name:
        raise ConfigError("vm_config.image is empty; pass the image directory with --image-dir")
    return resolve_inside(image_base_dir, name, "vm_config.image")


@attrs.frozen
class SnpImageLaunch:
    """The expected SNP MEASUREMENT of an image for one deployment, what it was computed from
    (``basis``), the image's ``os_image_hash`` and what is odd about the image (``notes``)."""

    measurement: SnpMeasurement
    vcpus: int
    vcpu_type: str
    guest_features: int
    basis: str
    os_image_hash: bytes | None
    notes: tuple[str, ...]


def measure_snp_image(
    image: str | os.PathLike[str], vcpus: int, vcpu_type: str, guest_features: int
) -> SnpImageLaunch:
    """Measure an image directory (or the directory of its ``metadata.json``) for SEV-SNP:
    from its shipped ``measurement.snp.cbor``, else from its files."""
    path = os.fspath(image)
    if not os.path.exists(path):
        raise ImageError(f"{path} does not exist (give the image directory or its metadata.json)")
    # The TDX form names metadata.json; an image directory is accepted too.
    snp = load_snp_image(path if os.path.isdir(path) else os.path.dirname(path) or ".")
    m = snp.material.launch_inputs(vcpus, vcpu_type, guest_features).measure()
    basis = SNP_MEASUREMENT_FILENAME if snp.document is not None else f"files ({snp.firmware}, ...)"
    notes = [f"image directory: {c.message}" for c in snp.integrity() if not c.ok]
    differences = snp.differences()
    if differences:
        notes.append(
            f"{SNP_MEASUREMENT_FILENAME} and the image files disagree on " + ", ".join(differences)
        )
    return SnpImageLaunch(
        m, vcpus, vcpu_type, guest_features, basis, snp.os_image_hash, tuple(notes)
    )
