"""What a VM declares about itself, checked against what the operator holds.

A dstack ``vm_config`` names the image it was launched from (``os_image_hash``: the SHA-256 of
the image's ``sha256sum.txt``), and newer ones carry ``tdx_measurement`` (the image's own
measurement document). Before blaming firmware, kernel, command line and initrd one by one, a
diagnosis must ask the simpler question: is the image directory at hand the image this VM
declares?
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._binary import from_hex
from .digest import replay
from .errors import DstackMrError, ImageError
from .machine import reading

if TYPE_CHECKING:
    from .config import VmConfig
    from .image import Image

__all__ = [
    "CHECKSUM_FILE",
    "DIGEST_FILE",
    "DeclaredMeasurement",
    "ImageHashCheck",
    "check_declared_measurement",
    "check_os_image_hash",
    "image_dir_hash",
]

#: The image's list of file checksums; its SHA-256 is the image's ``os_image_hash``.
CHECKSUM_FILE = "sha256sum.txt"
#: Holds that same hash as hex, in images that ship it.
DIGEST_FILE = "digest.txt"
#: Both files are a few hundred bytes.
_MAX_SIZE = 1 << 20


def _read_small(path: str, what: str) -> bytes | None:
    if not os.path.isfile(path):
        return None
    with reading(path, what), open(path, "rb") as f:
        data = f.read(_MAX_SIZE + 1)
    if len(data) > _MAX_SIZE:
        # Present but unusable is not "absent": treating it so would skip the hash check.
        raise ImageError(
            f"{what} {path} is more than {_MAX_SIZE} bytes: no image's {os.path.basename(path)} "
            "is; the image directory is damaged or not an image"
        )
    return data


def image_dir_hash(directory: str | os.PathLike[str]) -> tuple[bytes, str] | None:
    """The image's own hash and the file it comes from, or None when it names none.

    ``sha256sum.txt`` decides (its SHA-256 is the hash); ``digest.txt`` is used only
    without it.
    """
    base = os.fspath(directory)
    sums = _read_small(os.path.join(base, CHECKSUM_FILE), "image checksum file")
    if sums is not None:
        return hashlib.sha256(sums).digest(), f"sha256 of {CHECKSUM_FILE}"
    digest = _read_small(os.path.join(base, DIGEST_FILE), "image digest file")
    if digest is not None:
        try:
            value = from_hex(digest.decode("ascii").strip())
        except UnicodeDecodeError:
            value = None
        if value is not None and len(value) == hashlib.sha256().digest_size:
            return value, DIGEST_FILE
    return None


@attrs.frozen
class ImageHashCheck:
    """``vm_config.os_image_hash`` against the image directory's own hash."""

    declared: bytes | None
    image_hash: bytes | None
    image_hash_source: str | None
    #: Who declares it: the VM's own vm_config, or a VmConfig the operator gave.
    declared_by: str = "the VM"

    @property
    def status(self) -> str:
        """``match``, ``mismatch``, or ``not-compared`` (one side unknown)."""
        if not self.declared or self.image_hash is None:
            return "not-compared"
        return "match" if self.declared == self.image_hash else "mismatch"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "declared": self.declared.hex() if self.declared else None,
            "image_dir": self.image_hash.hex() if self.image_hash is not None else None,
            "image_dir_source": self.image_hash_source,
            "declared_by": self.declared_by,
        }


def check_os_image_hash(
    declared: bytes, directory: str | os.PathLike[str], declared_by: str = "the VM"
) -> ImageHashCheck:
    """Compare the declared ``os_image_hash`` with the image directory's hash."""
    found = image_dir_hash(directory)
    return ImageHashCheck(
        declared=declared or None,
        image_hash=None if found is None else found[0],
        image_hash_source=None if found is None else found[1],
        declared_by=declared_by,
    )


# --- the measurement document the VM carries (vm_config.tdx_measurement) ----------------------


@attrs.frozen
class DeclaredMeasurement:
    """The VM's own measurement document against its registers and against the image dir.

    ``vm_equal`` / ``vm_differ`` name the registers (MRTD, RTMR1, RTMR2) whose actual value
    does / does not equal what the document gives; ``image_equal`` / ``image_differ`` name
    the parts of the image directory (firmware, kernel, cmdline, initrd) whose digest does /
    does not equal the document's. ``error`` says why the document could not be used.
    """

    error: str | None = None
    vm_equal: tuple[str, ...] = ()
    vm_differ: tuple[str, ...] = ()
    image_equal: tuple[str, ...] = ()
    image_differ: tuple[str, ...] = ()
    #: True when the document came with the evidence (the VM's own vm_config), False when
    #: from a VmConfig the operator gave.
    from_evidence: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_evidence": self.from_evidence,
            "error": self.error,
            "vm_equal": list(self.vm_equal),
            "vm_differ": list(self.vm_differ),
            "image_equal": list(self.image_equal),
            "image_differ": list(self.image_differ),
        }


def check_declared_measurement(
    vm_config: VmConfig | None,
    actual: Mapping[str, bytes],
    image: Image,
    *,
    from_evidence: bool = True,
) -> DeclaredMeasurement | None:
    """Compare the VM's ``tdx_measurement`` (once bound to its ``os_image_hash``) with the
    actual registers in ``actual`` (keys ``mrtd``, ``rtmr1``, ``rtmr2``) and with ``image``.

    None when the VM declares no measurement document.
    """
    if vm_config is None or vm_config.tdx_measurement is None:
        return None
    from . import events
    from .measurement_doc import COMPAT_2G_MEMORY, lite_memory_supported, verify_material

    try:
        doc = verify_material(vm_config.tdx_measurement, vm_config.os_image_hash)
        doc.witness.check()
    except DstackMrError as exc:
        return DeclaredMeasurement(error=str(exc), from_evidence=from_evidence)
    vm_equal: list[str] = []
    vm_differ: list[str] = []
    mrtd = actual.get("mrtd")
    if mrtd is not None:
        (vm_equal if mrtd in (doc.mrtd_single_pass, doc.mrtd_two_pass) else vm_differ).append(
            "MRTD"
        )
    rtmr1 = actual.get("rtmr1")
    # The document's kernel digest is the VM's only at the memory sizes lite mode accepts
    # (the initrd placement it was computed for).
    if rtmr1 is not None and lite_memory_supported(vm_config.memory_size):
        layout = events.layout_digests(
            events.RTMR1_LAYOUT, {events.KERNEL_AUTHENTICODE: doc.kernel_authenticode}
        )
        ok = replay(layout) == rtmr1
        (vm_equal if ok else vm_differ).append("RTMR1")
    rtmr2 = actual.get("rtmr2")
    if rtmr2 is not None:
        layout = events.layout_digests(
            events.RTMR2_LAYOUT,
            {events.CMDLINE: doc.cmdline_sha384, events.INITRD: doc.initrd_sha384},
        )
        ok = replay(layout) == rtmr2
        (vm_equal if ok else vm_differ).append("RTMR2")

    image_equal: list[str] = []
    image_differ: list[str] = []
    firmware = image.mrtd(False) == doc.mrtd_single_pass and image.mrtd(True) == doc.mrtd_two_pass
    kernel = image.kernel_digest(COMPAT_2G_MEMORY) == doc.kernel_authenticode
    parts = (
        ("firmware", firmware),
        ("kernel", kernel),
        ("cmdline", image.cmdline_digest == doc.cmdline_sha384),
        ("initrd", image.initrd_digest == doc.initrd_sha384),
    )
    for name, same in parts:
        (image_equal if same else image_differ).append(name)
    return DeclaredMeasurement(
        None,
        tuple(vm_equal),
        tuple(vm_differ),
        tuple(image_equal),
        tuple(image_differ),
        from_evidence,
    )
