"""The one bounds-checked binary reader every parser in this package uses.

Python slicing silently truncates where the reference (Rust) would panic or fail, and a
truncated read can turn into a plausible but wrong digest. Every read therefore goes through
these helpers, which raise the caller's error type with the offset and what was being read.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from .errors import DstackMrError

Buffer = bytes | bytearray | memoryview

_FORMATS = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


def take(data: Buffer, offset: int, length: int, what: str, error: type[DstackMrError]) -> bytes:
    """Return exactly ``length`` bytes at ``offset`` or raise ``error``."""
    if offset < 0 or length < 0 or offset + length > len(data):
        raise error(
            f"{what}: need {length} bytes at offset {offset:#x}, "
            f"but the data is only {len(data)} bytes long (truncated or corrupt)"
        )
    return bytes(data[offset : offset + length])


def uint(data: Buffer, offset: int, size: int, what: str, error: type[DstackMrError]) -> int:
    """Read a little-endian unsigned integer of ``size`` bytes (1, 2, 4 or 8)."""
    if offset < 0 or offset + size > len(data):
        raise error(
            f"{what}: need a {size}-byte integer at offset {offset:#x}, "
            f"but the data is only {len(data)} bytes long (truncated or corrupt)"
        )
    value: int = struct.unpack_from(_FORMATS[size], data, offset)[0]
    return value


def unpack(
    layout: struct.Struct, data: Buffer, offset: int, what: str, error: type[DstackMrError]
) -> tuple[Any, ...]:
    """The fields of a declared layout at ``offset``, or ``error`` if the data is too short."""
    if offset < 0 or offset + layout.size > len(data):
        raise error(
            f"{what}: need {layout.size} bytes at offset {offset:#x}, "
            f"but the data is only {len(data)} bytes long (truncated or corrupt)"
        )
    return layout.unpack_from(data, offset)


def u16(data: Buffer, offset: int, what: str, error: type[DstackMrError]) -> int:
    return uint(data, offset, 2, what, error)


def u32(data: Buffer, offset: int, what: str, error: type[DstackMrError]) -> int:
    return uint(data, offset, 4, what, error)


def u64(data: Buffer, offset: int, what: str, error: type[DstackMrError]) -> int:
    return uint(data, offset, 8, what, error)


_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def from_hex(text: str) -> bytes | None:
    """Even-length ASCII hex and nothing else, or None (``bytes.fromhex`` alone would skip
    whitespace, which no encoder this package reads ever writes)."""
    return bytes.fromhex(text) if _HEX.fullmatch(text) else None


class Cursor:
    """A forward-only read position over one buffer, for formats read front to back (SCALE,
    CBOR). Every read is bounds-checked and raises ``error`` naming ``what`` and the offset."""

    __slots__ = ("_data", "_error", "offset")

    def __init__(self, data: Buffer, error: type[DstackMrError]) -> None:
        self._data = bytes(data)
        self._error = error
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.offset

    def fail(self, message: str, at: int | None = None) -> DstackMrError:
        """The caller's error type for a problem found at ``at`` (default: the current offset;
        a reader that has already consumed the bad value names where the value started)."""
        return self._error(f"{message} (at offset {self.offset if at is None else at:#x})")

    def take(self, length: int, what: str) -> bytes:
        out = take(self._data, self.offset, length, what, self._error)
        self.offset += length
        return out

    def unpack(self, layout: struct.Struct, what: str) -> tuple[Any, ...]:
        """The fields of a declared layout at the current offset, which then moves past it."""
        out = self.peek(layout, what)
        self.offset += layout.size
        return out

    def peek(self, layout: struct.Struct, what: str) -> tuple[Any, ...]:
        """The fields of a declared layout at the current offset, without moving."""
        return unpack(layout, self._data, self.offset, what, self._error)

    def uint(self, size: int, what: str) -> int:
        """A little-endian unsigned integer of ``size`` bytes (1, 2, 4 or 8)."""
        value = uint(self._data, self.offset, size, what, self._error)
        self.offset += size
        return value

    def uint_be(self, size: int, what: str) -> int:
        """A big-endian unsigned integer of ``size`` bytes (CBOR's byte order)."""
        return int.from_bytes(self.take(size, what), "big")

    def expect_end(self, what: str) -> None:
        """Fail unless every byte was consumed: trailing bytes are never silently ignored."""
        if self.remaining:
            raise self._error(
                f"{what}: {self.remaining} unexpected trailing byte(s) at offset {self.offset:#x}"
            )


def der_header(
    data: Buffer, offset: int, what: str, error: type[DstackMrError]
) -> tuple[int, int, int]:
    """One DER tag-length header at ``offset``: (tag byte, content offset, content length).

    Only what X.509 certificates and CRLs use: single-byte tags and definite lengths of at
    most four length bytes; the content must lie inside ``data``.
    """
    tag = uint(data, offset, 1, f"{what} DER tag", error)
    first = uint(data, offset + 1, 1, f"{what} DER length", error)
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if not 1 <= n <= 4:
            raise error(f"{what}: unsupported DER length form {first:#04x} at offset {offset:#x}")
        length = int.from_bytes(take(data, start, n, f"{what} DER length", error), "big")
        start += n
    take(data, start, length, f"{what} DER content", error)
    return tag, start, length


def der_children(
    data: Buffer, offset: int, length: int, what: str, error: type[DstackMrError]
) -> list[tuple[int, int, int]]:
    """The (tag, content offset, content length) of each element inside a DER container."""
    out = []
    end = offset + length
    while offset < end:
        tag, start, n = der_header(data, offset, what, error)
        if start + n > end:
            raise error(f"{what}: DER element at offset {offset:#x} runs past its container")
        out.append((tag, start, n))
        offset = start + n
    return out
