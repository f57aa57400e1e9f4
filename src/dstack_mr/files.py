"""Reading the image's files: size caps, chunked hashing, one wording for unreadable paths."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import DstackMrError, ImageError

#: Real OVMF images are 2-4 MiB and kernels ~10-15 MiB; refuse to slurp absurd files.
MAX_FIRMWARE_SIZE = 256 << 20
MAX_KERNEL_SIZE = 1 << 30
_READ_CHUNK = 1 << 20


def unusable_path_reason(exc: OSError | ValueError) -> str:
    """Why ``exc`` stopped a file operation, worded the same on every Python version."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, UnicodeError):
        return "the path cannot be encoded for the file system (a lone surrogate?)"
    # os functions refuse a NUL in a path; Python 3.13 words it differently from 3.10-3.12.
    if "null" in str(exc):
        return "the path contains a null byte"
    return str(exc)


@contextmanager
def reading(
    path: str | os.PathLike[str], what: str, error: type[DstackMrError] = ImageError
) -> Iterator[None]:
    """Turn an OSError (or the ValueError of a NUL byte in a path) into ``error``."""
    try:
        yield
    except (OSError, ValueError) as exc:
        raise error(
            f"cannot read {what} {os.fspath(path)!r}: {unusable_path_reason(exc)}"
        ) from None


def read_file(
    path: str | os.PathLike[str], what: str, limit: int, error: type[DstackMrError] = ImageError
) -> bytes:
    """The whole file, refusing files over ``limit`` bytes before reading them."""
    with reading(path, what, error), open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise error(f"{what} {os.fspath(path)} is {size} bytes, more than the {limit} allowed")
        # read(n) reserves n bytes up front: ask for what fstat saw (+1 to notice growth).
        data = f.read(size + 1)
        if len(data) > size:
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise error(f"{what} {os.fspath(path)} is more than the {limit} bytes allowed")
    return data


def file_size(path: str, what: str) -> int:
    with reading(path, what):
        return os.stat(path).st_size


def hash_file(path: str, what: str) -> tuple[int, bytes]:
    """(size, SHA-384) of a file, read in chunks so a huge initrd never sits in memory."""
    h = hashlib.sha384()
    size = 0
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    with reading(path, what), open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return size, h.digest()
