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
from typing import Any

import attrs

from ._binary import from_hex
from .machine import reading

__all__ = [
    "CHECKSUM_FILE",
    "DIGEST_FILE",
    "ImageHashCheck",
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
    return None if len(data) > _MAX_SIZE else data


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
        }


def check_os_image_hash(declared: bytes, directory: str | os.PathLike[str]) -> ImageHashCheck:
    """Compare the declared ``os_image_hash`` with the image directory's hash."""
    found = image_dir_hash(directory)
    return ImageHashCheck(
        declared=declared or None,
        image_hash=None if found is None else found[0],
        image_hash_source=None if found is None else found[1],
    )
