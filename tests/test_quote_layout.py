"""Every decoded quote field at the offset Intel's TDX DCAP quote format documents.

The body is filled with a pattern where every byte differs from its neighbours, so a field
read one byte off, or with the wrong length, does not compare equal.
"""

from __future__ import annotations

import re
import struct

import pytest

from dstack_mr.errors import QuoteError
from dstack_mr.quote import parse_quote

#: TD report body fields (offset, length) from the quote format specification.
BODY_FIELDS = {
    "tee_tcb_svn": (0, 16),
    "mrseam": (16, 48),
    "mrsignerseam": (64, 48),
    "seam_attributes": (112, 8),
    "td_attributes": (120, 8),
    "xfam": (128, 8),
    "mrtd": (136, 48),
    "mr_config_id": (184, 48),
    "mr_owner": (232, 48),
    "mr_owner_config": (280, 48),
    "rtmr0": (328, 48),
    "rtmr1": (376, 48),
    "rtmr2": (424, 48),
    "rtmr3": (472, 48),
    "report_data": (520, 64),
}
TD15_FIELDS = {"tee_tcb_svn2": (584, 16), "mr_servicetd": (600, 48)}


def pattern(n: int, seed: int) -> bytes:
    return bytes((seed + 7 * i) % 251 for i in range(n))


def header(version: int) -> bytes:
    # version, attestation key type 2 (ECDSA P-256), TEE type 0x81, QE/PCE SVN, QE vendor id,
    # user data.
    return struct.pack("<HHIHH", version, 2, 0x81, 0x1234, 0x5678) + pattern(16, 1) + bytes(20)


@pytest.mark.parametrize(("version", "body_type"), [(4, None), (5, 2), (5, 3)])
def test_every_field_at_its_documented_offset(version: int, body_type: int | None) -> None:
    td15 = body_type == 3
    body = pattern(648 if td15 else 584, 3)
    raw = header(version)
    if version == 5:
        raw += struct.pack("<HI", body_type, len(body))
    signature = pattern(100, 5)
    raw += body + struct.pack("<I", len(signature)) + signature
    q = parse_quote(raw)
    assert (q.version, q.att_key_type, q.tee_type) == (version, 2, 0x81)
    assert q.qe_vendor_id == pattern(16, 1)
    assert q.body_type == ("td15" if td15 else "td10")
    for name, (off, n) in BODY_FIELDS.items():
        value = getattr(q, name) if hasattr(q, name) else q.rtmr[int(name[-1])]
        assert value == body[off : off + n], name
    assert q.rtmr == tuple(body[328 + 48 * i : 376 + 48 * i] for i in range(4))
    for name, (off, n) in TD15_FIELDS.items():
        assert getattr(q, name) == (body[off : off + n] if td15 else None), name
    assert q.signature_data == signature
    assert q.signed_length == len(raw)
    assert q.raw == raw


@pytest.mark.parametrize(
    ("cut", "what"),
    [
        (1, "quote header version: need a 2-byte integer at offset 0x0"),
        (3, "quote header attestation key type: need a 2-byte integer at offset 0x2"),
        (6, "quote header TEE type: need a 4-byte integer at offset 0x4"),
        (47, "quote header: need 48 bytes at offset 0x0"),
        (48, "quote TD report body (td10): need 584 bytes at offset 0x30"),
        (100, "quote TD report body (td10): need 584 bytes at offset 0x30"),
        (632, "quote signature data length: need a 4-byte integer at offset 0x278"),
    ],
)
def test_truncated_quote_names_what_is_missing(cut: int, what: str) -> None:
    raw = header(4) + pattern(584, 3) + struct.pack("<I", 0)
    with pytest.raises(QuoteError, match=re.escape(what)):
        parse_quote(raw[:cut])


@pytest.mark.parametrize(
    ("cut", "what"),
    [
        # body type (u16) and body size (u32) are read as one 6-byte record at 0x30
        (48, "quote v5 body: need 6 bytes at offset 0x30, but the data is only 48 bytes"),
        (51, "quote v5 body: need 6 bytes at offset 0x30, but the data is only 51 bytes"),
        (60, "quote TD report body (td15): need 648 bytes at offset 0x36"),
    ],
)
def test_truncated_v5_quote(cut: int, what: str) -> None:
    raw = header(5) + struct.pack("<HI", 3, 648) + pattern(648, 3) + struct.pack("<I", 0)
    with pytest.raises(QuoteError, match=re.escape(what)):
        parse_quote(raw[:cut])


@pytest.mark.parametrize("tail", [b"X", b"\0X", b"\0\0\x01", b"0"])
def test_only_zero_bytes_may_follow(tail: bytes) -> None:
    raw = header(4) + pattern(584, 3) + struct.pack("<I", 0)
    with pytest.raises(QuoteError, match="are not zero padding"):
        parse_quote(raw + tail)


def test_zero_length_signature_and_exact_end() -> None:
    raw = header(4) + pattern(584, 3) + struct.pack("<I", 0)
    q = parse_quote(raw)
    assert q.signature_data == b"" and q.signed_length == len(raw) == 48 + 584 + 4
    with pytest.raises(QuoteError, match="signature data length"):
        parse_quote(raw[:-1])
    with pytest.raises(QuoteError, match=r"1 bytes after the end of the quote at offset 0x27c"):
        parse_quote(raw + b"\x07")
    assert parse_quote(raw + bytes(3)).signed_length == len(raw)


@pytest.mark.parametrize(
    ("version", "body_type", "size", "message"),
    [
        (5, 2, 648, "v5 body size 648 at offset 0x32 does not match body type 2 (td10, 584"),
        (5, 3, 584, "v5 body size 584 at offset 0x32 does not match body type 3 (td15, 648"),
        (5, 1, 584, "v5 body type 1 at offset 0x30 is not a TD report"),
        (5, 4, 584, "v5 body type 4 at offset 0x30 is not a TD report"),
    ],
)
def test_v5_body_header_checked(version: int, body_type: int, size: int, message: str) -> None:
    raw = header(version) + struct.pack("<HI", body_type, size) + pattern(648, 3)
    raw += struct.pack("<I", 0)
    with pytest.raises(QuoteError, match=message.replace("(", r"\(")):
        parse_quote(raw)


@pytest.mark.parametrize(("version", "tee", "message"), [
    (3, 0x81, "unsupported quote version 3 at offset 0x0"),
    (6, 0x81, "unsupported quote version 6"),
    (4, 0x00, r"TEE type 0x0 \(SGX\) at offset 0x4 is not TDX \(0x81\)"),
    (4, 0x80, r"TEE type 0x80 \(unknown\)"),
])  # fmt: skip
def test_header_checked(version: int, tee: int, message: str) -> None:
    raw = struct.pack("<HHI", version, 2, tee) + bytes(40) + pattern(584, 3) + bytes(4)
    with pytest.raises(QuoteError, match=message):
        parse_quote(raw)
