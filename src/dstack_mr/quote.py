"""Parsing of Intel TDX quotes (v4 and v5) down to the measurement registers.

Only the fields a measurement comparison needs are decoded; the signature data is located and
length-checked (so a truncated quote is rejected) but not verified: that is a DCAP verifier's
job, and comparing measurements of an unverified quote is still useful for diagnosis.
"""

from __future__ import annotations

import struct

import attrs

from ._binary import from_hex, take, u16, u32, unpack
from .errors import QuoteError

__all__ = [
    "QUOTE_HEADER",
    "TD10_BODY",
    "TD15_BODY",
    "TDX_TEE_TYPE",
    "V5_BODY_DESCRIPTOR",
    "QuoteSignature",
    "TdxQuote",
    "parse_quote",
    "parse_quote_signature",
]

TDX_TEE_TYPE = 0x81

# --- binary layouts (Intel TDX DCAP "Quote Format": header, TD report body, v5 descriptor) ----
#: Quote header: Version, AttestationKeyType, TeeType, QeSvn, PceSvn, QeVendorId, UserData.
QUOTE_HEADER = struct.Struct("<HHIHH16s20s")
#: TD report body 1.0 (TDX 1.0 quotes; v4 or v5 body type 2): the TEE_TCB_INFO and TDINFO
#: subset a quote carries, in this field order.
TD10_BODY = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
TD10_FIELDS = (
    "tee_tcb_svn", "mrseam", "mrsignerseam", "seam_attributes", "td_attributes", "xfam",
    "mrtd", "mr_config_id", "mr_owner", "mr_owner_config",
    "rtmr0", "rtmr1", "rtmr2", "rtmr3", "report_data",
)  # fmt: skip
#: TD report body 1.5 (v5 body type 3): the 1.0 body, then TEE_TCB_SVN2 and MRSERVICETD.
TD15_BODY = struct.Struct(TD10_BODY.format + "16s48s")
TD15_FIELDS = (*TD10_FIELDS, "tee_tcb_svn2", "mr_servicetd")
#: v5 only, between header and body: body type, body size.
V5_BODY_DESCRIPTOR = struct.Struct("<HI")
#: After the body: the signature data's length, then the data.
SIGNATURE_LENGTH = struct.Struct("<I")

# v5 body types; 1 is an SGX enclave report, which cannot carry TD measurements.
_V5_BODY_TYPES = {2: ("td10", TD10_BODY, TD10_FIELDS), 3: ("td15", TD15_BODY, TD15_FIELDS)}

_HEX_TEXT_BYTES = frozenset(b"0123456789abcdefABCDEFxX \t\r\n")


@attrs.frozen
class TdxQuote:
    """The decoded header and TD report body of a TDX quote.

    ``raw`` is the whole input as bytes (hex already decoded), including any zero padding
    after the signature data; ``signed_length`` is where the quote proper ends.
    """

    version: int
    att_key_type: int
    tee_type: int
    qe_vendor_id: bytes
    body_type: str
    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mrtd: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None
    mr_servicetd: bytes | None
    signature_data: bytes = attrs.field(eq=False, repr=False)
    signed_length: int = attrs.field(eq=False)
    raw: bytes = attrs.field(eq=False, repr=False)

    @property
    def rtmr0(self) -> bytes:
        return self.rtmr[0]

    @property
    def rtmr1(self) -> bytes:
        return self.rtmr[1]

    @property
    def rtmr2(self) -> bytes:
        return self.rtmr[2]

    @property
    def rtmr3(self) -> bytes:
        return self.rtmr[3]


def _decode_hex(text: str) -> bytes:
    s = "".join(text.split())
    if s[:2] in ("0x", "0X"):
        s = s[2:]
    if not s:
        raise QuoteError("quote: the hex text is empty")
    if len(s) % 2:
        raise QuoteError(f"quote: hex text has an odd number of digits ({len(s)})")
    data = from_hex(s)
    if data is None:
        bad = next(i for i, c in enumerate(s) if c not in "0123456789abcdefABCDEF")
        raise QuoteError(f"quote: invalid hex character {s[bad]!r} at position {bad}")
    return data


def _looks_like_hex_text(data: bytes) -> bool:
    # A binary quote starts with its u16 version (04 00 / 05 00), never an ASCII hex digit,
    # so "every byte is a hex digit or whitespace" cleanly separates the two encodings.
    return bool(data.strip()) and all(b in _HEX_TEXT_BYTES for b in data)


def _to_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, str):
        return _decode_hex(data)
    raw = bytes(data)
    if _looks_like_hex_text(raw):
        return _decode_hex(raw.decode("ascii"))
    return raw


def parse_quote(data: bytes | bytearray | memoryview | str) -> TdxQuote:
    """Parse a TDX quote given as binary or as hex text (optional ``0x``, whitespace ignored).

    Raises :class:`QuoteError` for anything that is not a complete TDX quote v4/v5.
    """
    q = _to_bytes(data)
    if not q:
        raise QuoteError("quote: no data")
    # The kind fields first, one by one: a short or foreign (SGX) quote is named by the first
    # field that is wrong rather than by a header length it was never meant to have.
    version = u16(q, 0, "quote header version", QuoteError)
    att_key_type = u16(q, 2, "quote header attestation key type", QuoteError)
    tee_type = u32(q, 4, "quote header TEE type", QuoteError)
    if version not in (4, 5):
        raise QuoteError(
            f"quote: unsupported quote version {version} at offset 0x0 (only TDX v4 and v5)"
        )
    if tee_type != TDX_TEE_TYPE:
        kind = "SGX" if tee_type == 0 else "unknown"
        raise QuoteError(
            f"quote: TEE type {tee_type:#x} ({kind}) at offset 0x4 is not TDX ({TDX_TEE_TYPE:#x})"
        )
    qe_vendor_id = unpack(QUOTE_HEADER, q, 0, "quote header", QuoteError)[5]

    header_len = QUOTE_HEADER.size
    if version == 4:
        body_type, layout, names = _V5_BODY_TYPES[2]
        body_off = header_len
    else:
        type_id, size = unpack(V5_BODY_DESCRIPTOR, q, header_len, "quote v5 body", QuoteError)
        if type_id not in _V5_BODY_TYPES:
            raise QuoteError(
                f"quote: v5 body type {type_id} at offset {header_len:#x} is not a TD report "
                "(expected 2 = TD report 1.0 or 3 = TD report 1.5)"
            )
        body_type, layout, names = _V5_BODY_TYPES[type_id]
        if size != layout.size:
            raise QuoteError(
                f"quote: v5 body size {size} at offset {header_len + 2:#x} does not match "
                f"body type {type_id} ({body_type}, {layout.size} bytes)"
            )
        body_off = header_len + V5_BODY_DESCRIPTOR.size

    body = dict(
        zip(
            names,
            unpack(layout, q, body_off, f"quote TD report body ({body_type})", QuoteError),
            strict=True,
        )
    )
    sig_len_off = body_off + layout.size
    sig_len = u32(q, sig_len_off, "quote signature data length", QuoteError)
    signature_data = take(q, sig_len_off + 4, sig_len, "quote signature data", QuoteError)
    signed_length = sig_len_off + 4 + sig_len
    # The TDX driver hands back a fixed-size buffer, so zero padding after the quote is
    # normal; anything else there is not part of the signed quote and would be misleading.
    tail = q[signed_length:]
    if tail.strip(b"\0"):
        first = signed_length + next(i for i, b in enumerate(tail) if b)
        raise QuoteError(
            f"quote: {len(tail)} bytes after the end of the quote at offset {signed_length:#x} "
            f"are not zero padding (first non-zero byte at {first:#x})"
        )

    return TdxQuote(
        version=version,
        att_key_type=att_key_type,
        tee_type=tee_type,
        qe_vendor_id=qe_vendor_id,
        body_type=body_type,
        tee_tcb_svn=body["tee_tcb_svn"],
        mrseam=body["mrseam"],
        mrsignerseam=body["mrsignerseam"],
        seam_attributes=body["seam_attributes"],
        td_attributes=body["td_attributes"],
        xfam=body["xfam"],
        mrtd=body["mrtd"],
        mr_config_id=body["mr_config_id"],
        mr_owner=body["mr_owner"],
        mr_owner_config=body["mr_owner_config"],
        rtmr=(body["rtmr0"], body["rtmr1"], body["rtmr2"], body["rtmr3"]),
        report_data=body["report_data"],
        tee_tcb_svn2=body.get("tee_tcb_svn2"),
        mr_servicetd=body.get("mr_servicetd"),
        signature_data=signature_data,
        signed_length=signed_length,
        raw=q,
    )


# Signature data (both versions): ECDSA signature, attestation key, then certification data.
_SIG_ECDSA_LEN = 64
_SIG_KEY_LEN = 64
_CERT_TYPE_QE_REPORT = 6
_CERT_TYPE_PCK_CHAIN = 5
_QE_REPORT_LEN = 384


@attrs.frozen
class QuoteSignature:
    """The parts of a quote's signature data; offsets are into ``TdxQuote.raw``.

    ``pck_chain`` is the PEM PCK certificate chain the quote carries (certification data
    type 5 inside the QE report certification data, type 6), or None when it carries another
    certification type.
    """

    signature_offset: int
    cert_data_offset: int
    cert_type: int
    qe_report_offset: int | None
    pck_chain_offset: int | None
    pck_chain: bytes | None = attrs.field(repr=False)


def parse_quote_signature(quote: TdxQuote) -> QuoteSignature:
    """Locate the signature, QE report and PCK certificate chain in the quote's signature
    data (bounds-checked; raises :class:`QuoteError` when the data does not hold them)."""
    data = quote.signature_data
    base = quote.signed_length - len(data)
    off = _SIG_ECDSA_LEN + _SIG_KEY_LEN
    cert_type = u16(data, off, "quote certification data type", QuoteError)
    size = u32(data, off + 2, "quote certification data size", QuoteError)
    cert = take(data, off + 6, size, "quote certification data", QuoteError)
    cert_off = off + 6
    if cert_type != _CERT_TYPE_QE_REPORT:
        return QuoteSignature(base, base + cert_off, cert_type, None, None, None)
    p = _QE_REPORT_LEN + _SIG_ECDSA_LEN
    auth_len = u16(cert, p, "quote QE authentication data size", QuoteError)
    p += 2 + auth_len
    inner_type = u16(cert, p, "quote inner certification data type", QuoteError)
    inner_size = u32(cert, p + 2, "quote inner certification data size", QuoteError)
    chain = take(cert, p + 6, inner_size, "quote PCK certificate chain", QuoteError)
    if inner_type != _CERT_TYPE_PCK_CHAIN:
        return QuoteSignature(base, base + cert_off, cert_type, base + cert_off, None, None)
    return QuoteSignature(
        base, base + cert_off, cert_type, base + cert_off, base + cert_off + p + 6, chain
    )
