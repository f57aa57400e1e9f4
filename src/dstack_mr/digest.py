"""SHA-384 helpers shared by every measured register."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ._binary import Buffer

DIGEST_LEN = 48
ZERO_MR = bytes(DIGEST_LEN)


def sha384(data: Buffer) -> bytes:
    return hashlib.sha384(data).digest()


def extend(mr: bytes, digest: bytes) -> bytes:
    """One RTMR extend: ``mr' = SHA384(mr || digest)``."""
    return hashlib.sha384(mr + digest).digest()


def replay(digests: Iterable[bytes]) -> bytes:
    """Fold event digests into a register value, starting from 48 zero bytes."""
    mr = ZERO_MR
    for d in digests:
        mr = extend(mr, d)
    return mr


def utf16le(text: str) -> bytes:
    """UTF-16LE without BOM, as the reference encodes EFI strings and the cmdline."""
    return text.encode("utf-16-le")


def short_hex(digest: bytes | None) -> str:
    """``abcd1234…89ef``: enough to tell digests apart in a repr (``None`` when absent)."""
    if digest is None:
        return "None"
    h = digest.hex()
    return f"{h[:8]}…{h[-4:]}"
