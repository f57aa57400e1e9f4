"""A small, strict CBOR (RFC 8949) codec for the subset dstack's measurement documents use.

dstack writes ``measurement.tdx.cbor`` and ``measurement.snp.cbor`` with ciborium from serde
structs: maps with text keys (in field order), byte strings, text strings, unsigned integers
and (SNP's ``ovmf_sections``) arrays. That is all this module reads. Everything else — negative
integers, floats, tags, booleans, null, indefinite lengths, non-shortest integer heads,
duplicate map keys, non-text map keys, invalid UTF-8, trailing bytes, inputs above a size
limit, nesting deeper than a limit — is a :class:`~dstack_mr.errors.CborError`, so one
document has exactly one encoding and ``encode(decode(b)) == b`` for every accepted ``b``.

A dependency (cbor2) would accept far more than the documents need, and its leniencies are
exactly what a verifier must refuse; the subset is small enough to read here in full.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias, TypeVar

from ._binary import Buffer, Cursor
from .errors import CborError
from .registry import U64_MAX

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "CborValue",
    "decode",
    "encode",
    "expect_fields",
    "get_array",
    "get_bytes",
    "get_map",
    "get_text",
    "get_uint",
]

CborValue: TypeAlias = "int | bytes | str | list[CborValue] | dict[str, CborValue]"

#: Measurement documents are a few hundred bytes; anything near this is not one.
DEFAULT_MAX_SIZE = 64 * 1024
DEFAULT_MAX_DEPTH = 8

_UINT, _BYTES, _TEXT, _ARRAY, _MAP = 0, 2, 3, 4, 5
_MAJOR_NAMES = {
    1: "a negative integer",
    6: "a tagged item",
    7: "a float/simple value (true, false, null, float)",
}
_UINT64_MAX = U64_MAX


def _head(cur: Cursor) -> tuple[int, int]:
    """Read one item head: (major type, argument). Only definite, shortest-form heads."""
    initial = cur.uint(1, "CBOR item head")
    major, info = initial >> 5, initial & 0x1F
    if major in _MAJOR_NAMES:
        raise cur.fail(f"CBOR: {_MAJOR_NAMES[major]} is not allowed in a measurement document")
    if info < 24:
        return major, info
    if info > 27:
        raise cur.fail(
            f"CBOR: additional information {info} (indefinite length or reserved) is not allowed"
        )
    size = 1 << (info - 24)
    value = cur.uint_be(size, "CBOR integer argument")
    # Shortest form only: a longer head for a small value is a second encoding of the same
    # document, which would make the document's digest ambiguous.
    if value < (24 if size == 1 else 1 << (4 * size)):
        raise cur.fail(f"CBOR: value {value} is not encoded in its shortest form")
    return major, value


def _item(cur: Cursor, depth: int, max_depth: int) -> CborValue:
    major, arg = _head(cur)
    if major == _UINT:
        return arg
    if major in (_BYTES, _TEXT):
        raw = cur.take(arg, "CBOR string")
        if major == _BYTES:
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise cur.fail(f"CBOR: text string is not valid UTF-8 ({e.reason})") from None
    if depth >= max_depth:
        raise cur.fail(f"CBOR: nesting deeper than {max_depth} levels")
    # Every item is at least one byte: a count above what is left is a lie, refused before
    # any allocation or loop.
    needed = arg * 2 if major == _MAP else arg
    if needed > cur.remaining:
        raise cur.fail(
            f"CBOR: container announces {arg} entries but only {cur.remaining} bytes remain"
        )
    if major == _ARRAY:
        return [_item(cur, depth + 1, max_depth) for _ in range(arg)]
    out: dict[str, CborValue] = {}
    for _ in range(arg):
        key_at = cur.offset
        key = _item(cur, depth + 1, max_depth)
        if not isinstance(key, str):
            raise cur.fail(f"CBOR: map key must be a text string, got {_kind(key)}", at=key_at)
        if key in out:
            raise cur.fail(f"CBOR: duplicate map key {key!r}", at=key_at)
        out[key] = _item(cur, depth + 1, max_depth)
    return out


def decode(
    data: Buffer, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> CborValue:
    """Decode exactly one CBOR item that fills ``data``; raise :class:`CborError` otherwise."""
    if len(data) > max_size:
        raise CborError(
            f"CBOR: input of {len(data)} bytes exceeds the limit of {max_size} bytes "
            "(not a measurement document)"
        )
    if not data:
        raise CborError("CBOR: input is empty")
    cur = Cursor(data, CborError)
    value = _item(cur, 0, max_depth)
    cur.expect_end("CBOR")
    return value


def _encode_head(major: int, value: int, out: bytearray) -> None:
    if value < 24:
        out.append(major << 5 | value)
        return
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            out.append(major << 5 | info)
            out += value.to_bytes(size, "big")
            return
    raise CborError(f"CBOR: integer {value} does not fit in 64 bits")


def _encode(value: object, out: bytearray, depth: int) -> None:
    if depth > DEFAULT_MAX_DEPTH:
        raise CborError(f"CBOR: nesting deeper than {DEFAULT_MAX_DEPTH} levels")
    # bool is an int subclass; CBOR has its own true/false, which the subset excludes.
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= _UINT64_MAX:
            raise CborError(f"CBOR: only unsigned 64-bit integers are encodable, got {value}")
        _encode_head(_UINT, value, out)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        _encode_head(_BYTES, len(raw), out)
        out += raw
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        _encode_head(_TEXT, len(raw), out)
        out += raw
    elif isinstance(value, Mapping):
        _encode_head(_MAP, len(value), out)
        for key, item in value.items():
            if not isinstance(key, str):
                raise CborError(f"CBOR: map keys must be text, got {_kind(key)}")
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    elif isinstance(value, list | tuple):
        _encode_head(_ARRAY, len(value), out)
        for item in value:
            _encode(item, out, depth + 1)
    else:
        raise CborError(f"CBOR: cannot encode {_kind(value)}")


def encode(value: CborValue | Mapping[str, object] | Sequence[object]) -> bytes:
    """Encode ``value`` in the same subset, shortest form, map keys in the given order (the
    order ciborium writes serde struct fields in)."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


# --- typed field access: one message style for every document reader ------------------------


_KIND_NAMES: dict[type, str] = {
    bool: "a boolean",
    int: "an unsigned integer",
    bytes: "a byte string",
    str: "a text string",
    list: "an array",
    dict: "a map",
}


def _kind(value: object) -> str:
    return _KIND_NAMES.get(type(value), type(value).__name__)


_T = TypeVar("_T")


def _typed(value: object, kind: type[_T], where: str) -> _T:
    if type(value) is not kind:
        raise CborError(f"{where}: expected {_KIND_NAMES[kind]}, got {_kind(value)}")
    return value


def expect_fields(
    value: CborValue, where: str, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, CborValue]:
    """``value`` as a map holding every ``required`` key and nothing outside ``required`` +
    ``optional`` (an unknown key means a document this reader does not understand)."""
    mapping = _typed(value, dict, where)
    missing = [k for k in required if k not in mapping]
    if missing:
        raise CborError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = [k for k in mapping if k not in required and k not in optional]
    if unknown:
        raise CborError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return mapping


def get_map(mapping: Mapping[str, CborValue], key: str, where: str) -> dict[str, CborValue]:
    return _typed(mapping[key], dict, f"{where}.{key}")


def get_array(mapping: Mapping[str, CborValue], key: str, where: str) -> list[CborValue]:
    return _typed(mapping[key], list, f"{where}.{key}")


def get_text(mapping: Mapping[str, CborValue], key: str, where: str) -> str:
    return _typed(mapping[key], str, f"{where}.{key}")


def get_uint(
    mapping: Mapping[str, CborValue], key: str, where: str, *, max_value: int = _UINT64_MAX
) -> int:
    value = _typed(mapping[key], int, f"{where}.{key}")
    if value > max_value:
        raise CborError(f"{where}.{key}: {value} exceeds the maximum {max_value}")
    return value


def get_bytes(
    mapping: Mapping[str, CborValue], key: str, where: str, *, length: int | None = None
) -> bytes:
    value = _typed(mapping[key], bytes, f"{where}.{key}")
    if length is not None and len(value) != length:
        raise CborError(f"{where}.{key}: expected {length} bytes, got {len(value)}")
    return value
