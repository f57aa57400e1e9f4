"""Intel DCAP quote collateral: reading the shapes it is published in, and its validity window.

Collateral is what a verifier needs besides the quote: the signed TCB info and QE identity
(with their signatures and issuer chains) and the root-CA and PCK CRLs. It circulates in
several shapes, all read here into one :class:`Collateral`:

- dcap-qvl's ``QuoteCollateralV3`` (the object, or its ``to_json()``): snake_case keys, byte
  fields as hex strings;
- the same keys with byte fields as integer arrays (serde's ``Vec<u8>``), as newer
  publications store them, or CRLs as PEM;
- Intel PCCS naming (camelCase keys such as ``tcbInfo``/``qeIdentityIssuerChain``), where
  ``tcbInfo``/``qeIdentity`` may be the whole PCCS response body ``{"tcbInfo": {...},
  "signature": "..."}`` and issuer chains may be URL-encoded (as in PCCS response headers);
- wrappers: ``{"collateral": ...}`` next to a quote (NEAR-style public data, also under
  ``tee_participant_info.Dstack``) and ``{"quote_collateral": ...}``.

Text fields lose the trailing NUL bytes C-string collateral carries. The signed TCB info and
QE identity are kept as the exact text that was signed; when only a parsed object is given,
its compact re-serialisation is used (Intel's own form), and a wrong guess fails the
signature check rather than passing silently.

A ``pck_certificate_chain`` field is kept separately and never used for verification: the
quote carries its own PCK chain, and the verifier requires the two to be the same
certificates (see :func:`dstack_mr.verify.verify`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs

from ._binary import der_children, der_header, from_hex
from .config import parse_json
from .errors import CollateralError

__all__ = [
    "Collateral",
    "CollateralItem",
    "ValidityWindow",
    "find_collateral",
    "parse_collateral",
    "pem_certificates",
]

_TEXT_FIELDS = (
    "pck_crl_issuer_chain",
    "tcb_info_issuer_chain",
    "qe_identity_issuer_chain",
)
_BYTE_FIELDS = ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature")
_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
#: Intel PCCS / QPL names of the same fields.
_CAMEL = {
    "pckCrlIssuerChain": "pck_crl_issuer_chain",
    "rootCaCrl": "root_ca_crl",
    "pckCrl": "pck_crl",
    "tcbInfoIssuerChain": "tcb_info_issuer_chain",
    "tcbInfo": "tcb_info",
    "tcbInfoSignature": "tcb_info_signature",
    "qeIdentityIssuerChain": "qe_identity_issuer_chain",
    "qeIdentity": "qe_identity",
    "qeIdentitySignature": "qe_identity_signature",
    "pckCertificateChain": "pck_certificate_chain",
    "pckCertChain": "pck_certificate_chain",
}
_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\s*([A-Za-z0-9+/=\s]*?)\s*-----END \1-----", re.DOTALL
)
# Collateral is tens of kilobytes; a CRL of more than a few MiB is not one.
_MAX_FIELD = 4 << 20


@attrs.frozen
class CollateralItem:
    """One dated part of the collateral and when it is valid."""

    name: str
    not_before: dt.datetime
    not_after: dt.datetime


@attrs.frozen
class ValidityWindow:
    """When the collateral as a whole is valid: the latest start and earliest end of its
    dated parts (TCB info and QE identity issue/next-update dates, CRL this/next update,
    issuer certificates' validity)."""

    not_before: dt.datetime
    not_after: dt.datetime
    items: tuple[CollateralItem, ...] = attrs.field(repr=False)

    def contains(self, at: dt.datetime) -> bool:
        return self.not_before <= at <= self.not_after

    def limiting(self, at: dt.datetime) -> CollateralItem | None:
        """The part that makes ``at`` fall outside the window (None when inside)."""
        late = [i for i in self.items if at > i.not_after]
        if late:
            return min(late, key=lambda i: i.not_after)
        early = [i for i in self.items if at < i.not_before]
        return max(early, key=lambda i: i.not_before) if early else None


@attrs.frozen
class Collateral:
    """Quote collateral in dcap-qvl's ``QuoteCollateralV3`` layout, as exact bytes/text."""

    pck_crl_issuer_chain: str = attrs.field(repr=False)
    root_ca_crl: bytes = attrs.field(repr=False)
    pck_crl: bytes = attrs.field(repr=False)
    tcb_info_issuer_chain: str = attrs.field(repr=False)
    tcb_info: str = attrs.field(repr=False)
    tcb_info_signature: bytes = attrs.field(repr=False)
    qe_identity_issuer_chain: str = attrs.field(repr=False)
    qe_identity: str = attrs.field(repr=False)
    qe_identity_signature: bytes = attrs.field(repr=False)
    #: A PCK chain that came with the collateral. Never used to verify; compared with the
    #: quote's own chain.
    pck_certificate_chain: str | None = attrs.field(default=None, repr=False)
    #: Which shape the collateral was read from.
    source: str = ""

    def _signed_json(self, field: str) -> dict[str, Any]:
        value = parse_json(getattr(self, field), f"collateral {field}", CollateralError)
        if not isinstance(value, dict):
            raise CollateralError(f"collateral {field}: expected a JSON object")
        return value

    @property
    def fmspc(self) -> str | None:
        """The platform (FMSPC, upper-case hex) the TCB info is for."""
        value = self._signed_json("tcb_info").get("fmspc")
        return value.upper() if isinstance(value, str) else None

    @property
    def tcb_evaluation_data_number(self) -> int | None:
        value = self._signed_json("tcb_info").get("tcbEvaluationDataNumber")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def tee_type(self) -> str | None:
        value = self._signed_json("tcb_info").get("id")
        return value if isinstance(value, str) else None

    def validity(self) -> ValidityWindow:
        """The window in which every dated part of this collateral is valid."""
        items: list[CollateralItem] = []
        for field in ("tcb_info", "qe_identity"):
            doc = self._signed_json(field)
            items.append(
                CollateralItem(
                    field,
                    _iso(doc.get("issueDate"), f"{field}.issueDate"),
                    _iso(doc.get("nextUpdate"), f"{field}.nextUpdate"),
                )
            )
        for field in ("root_ca_crl", "pck_crl"):
            this, nxt = _crl_times(getattr(self, field), field)
            items.append(CollateralItem(field, this, nxt))
        for field in _TEXT_FIELDS:
            for k, der in enumerate(pem_certificates(getattr(self, field), field)):
                start, end = _cert_times(der, f"{field} certificate {k}")
                items.append(CollateralItem(f"{field}[{k}]", start, end))
        return ValidityWindow(
            max(i.not_before for i in items), min(i.not_after for i in items), tuple(items)
        )

    def without_pck_chain(self) -> Collateral:
        return attrs.evolve(self, pck_certificate_chain=None)

    def to_dict(self) -> dict[str, Any]:
        """dcap-qvl's JSON form (byte fields as hex)."""
        out: dict[str, Any] = {}
        for field in _FIELDS:
            value = getattr(self, field)
            out[field] = value.hex() if isinstance(value, bytes) else value
        if self.pck_certificate_chain is not None:
            out["pck_certificate_chain"] = self.pck_certificate_chain
        return out


def _iso(value: object, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise CollateralError(f"collateral {what}: expected an ISO 8601 date string")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CollateralError(f"collateral {what}: {value!r} is not an ISO 8601 date") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _der_time(data: bytes, tag: int, start: int, length: int, what: str) -> dt.datetime:
    text = data[start : start + length].decode("ascii", errors="replace")
    formats = {0x17: "%y%m%d%H%M%SZ", 0x18: "%Y%m%d%H%M%SZ"}
    if tag not in formats:
        raise CollateralError(f"collateral {what}: expected a UTCTime or GeneralizedTime")
    try:
        when = dt.datetime.strptime(text, formats[tag])
    except ValueError:
        raise CollateralError(f"collateral {what}: bad time {text!r}") from None
    return when.replace(tzinfo=dt.timezone.utc)


def _tbs(der: bytes, what: str) -> list[tuple[int, int, int]]:
    """The elements of the to-be-signed part of a certificate or CRL."""
    tag, start, length = der_header(der, 0, what, CollateralError)
    if tag != 0x30:
        raise CollateralError(f"collateral {what}: not a DER SEQUENCE")
    outer = der_children(der, start, length, what, CollateralError)
    if not outer or outer[0][0] != 0x30:
        raise CollateralError(f"collateral {what}: no to-be-signed SEQUENCE")
    return der_children(der, outer[0][1], outer[0][2], what, CollateralError)


def _crl_times(der: bytes, what: str) -> tuple[dt.datetime, dt.datetime]:
    # TBSCertList: version INTEGER OPTIONAL, signature, issuer, thisUpdate, nextUpdate, ...
    fields = _tbs(der, what)
    i = 1 if fields and fields[0][0] == 0x02 else 0
    if len(fields) < i + 4:
        raise CollateralError(f"collateral {what}: CRL has no nextUpdate")
    this = _der_time(der, *fields[i + 2], f"{what} thisUpdate")
    nxt = _der_time(der, *fields[i + 3], f"{what} nextUpdate")
    return this, nxt


def _cert_times(der: bytes, what: str) -> tuple[dt.datetime, dt.datetime]:
    # TBSCertificate: [0] version OPTIONAL, serial, signature, issuer, validity, ...
    fields = _tbs(der, what)
    i = 1 if fields and fields[0][0] == 0xA0 else 0
    if len(fields) < i + 4 or fields[i + 3][0] != 0x30:
        raise CollateralError(f"collateral {what}: certificate has no validity")
    validity = der_children(der, fields[i + 3][1], fields[i + 3][2], what, CollateralError)
    if len(validity) != 2:
        raise CollateralError(f"collateral {what}: malformed certificate validity")
    return (
        _der_time(der, *validity[0], f"{what} notBefore"),
        _der_time(der, *validity[1], f"{what} notAfter"),
    )


def pem_certificates(text: str | bytes, what: str = "certificate chain") -> tuple[bytes, ...]:
    """The DER certificates of a PEM chain, in order (whitespace and NULs ignored)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    out = []
    for label, body in _PEM_BLOCK.findall(text):
        if label != "CERTIFICATE":
            continue
        try:
            out.append(base64.b64decode("".join(body.split()), validate=True))
        except binascii.Error:
            raise CollateralError(f"{what}: a PEM certificate is not valid base64") from None
    if not out:
        raise CollateralError(f"{what}: no PEM certificate found")
    return tuple(out)


def _text(value: object, field: str) -> str:
    if isinstance(value, list):
        value = bytes(_int_array(value, field))
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise CollateralError(f"collateral field {field!r}: not UTF-8 text") from None
    if not isinstance(value, str):
        raise CollateralError(
            f"collateral field {field!r}: expected text, got {type(value).__name__}"
        )
    value = value.rstrip("\0")
    if "%" in value:
        # PCCS sends issuer chains URL-encoded in headers; PEM itself never holds a '%'.
        value = urllib.parse.unquote(value)
    if len(value) > _MAX_FIELD:
        raise CollateralError(f"collateral field {field!r} is larger than {_MAX_FIELD} bytes")
    return value


def _int_array(value: list[Any], field: str) -> bytes:
    if len(value) > _MAX_FIELD:
        raise CollateralError(f"collateral field {field!r} is larger than {_MAX_FIELD} bytes")
    for k, b in enumerate(value):
        if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b <= 255:
            raise CollateralError(
                f"collateral field {field!r}: element {k} ({b!r}) is not a byte (0..255)"
            )
    return bytes(value)


def _bytes(value: object, field: str) -> bytes:
    """A byte field: hex text (optional 0x), an integer array, or a PEM block (CRLs)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, list):
        return _int_array(value, field)
    if not isinstance(value, str):
        raise CollateralError(
            f"collateral field {field!r}: expected hex text or an array of bytes, got "
            f"{type(value).__name__}"
        )
    text = value.rstrip("\0").strip()
    if "%" in text:
        text = urllib.parse.unquote(text)
    pem = _PEM_BLOCK.search(text)
    if pem is not None:
        try:
            return base64.b64decode("".join(pem.group(2).split()), validate=True)
        except binascii.Error:
            raise CollateralError(f"collateral field {field!r}: PEM is not valid base64") from None
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    data = from_hex(text)
    if data is None:
        raise CollateralError(
            f"collateral field {field!r}: not hex, an array of bytes or PEM: {text[:40]!r}"
        )
    return data


def _raw_member(body: str, key: str) -> str | None:
    """The exact source text of a top-level member's value in a JSON object text.

    The TCB info signature covers the bytes of the ``tcbInfo`` value as Intel sent them, so
    the value is cut out of the body instead of being parsed and re-serialised.
    """
    decoder = json.JSONDecoder()
    i = len(body) - len(body.lstrip())
    if body[i : i + 1] != "{":
        return None
    i += 1
    ws = re.compile(r"[ \t\n\r]*")

    def skip(pos: int) -> int:
        m = ws.match(body, pos)
        return m.end() if m else pos

    while True:
        i = skip(i)
        if body[i : i + 1] == "}":
            return None
        try:
            name, i = decoder.raw_decode(body, i)
            i = skip(i)
            if body[i : i + 1] != ":":
                return None
            start = skip(i + 1)
            _, end = decoder.raw_decode(body, start)
        except ValueError:
            return None
        if name == key:
            return body[start:end]
        i = skip(end)
        if body[i : i + 1] == ",":
            i += 1
        else:
            return None


def _signed(value: object, field: str, inner: str) -> tuple[str, bytes | None]:
    """TCB info / QE identity: the signed JSON text, plus the signature when ``value`` is
    the whole PCCS response body (``{"tcbInfo": {...}, "signature": "..."}``)."""
    if isinstance(value, Mapping):
        if inner in value and "signature" in value:
            text = _compact(value[inner])
            return text, _bytes(value["signature"], f"{field}.signature")
        return _compact(value), None
    text = _text(value, field)
    doc = parse_json(text, f"collateral {field}", CollateralError)
    if not isinstance(doc, Mapping):
        raise CollateralError(f"collateral {field}: expected a JSON object")
    if inner in doc and "signature" in doc:
        raw = _raw_member(text, inner)
        if raw is None:
            raise CollateralError(f"collateral {field}: cannot locate its {inner!r} member")
        return raw, _bytes(doc["signature"], f"{field}.signature")
    return text, None


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def find_collateral(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], object, str]:
    """The collateral object inside a document, the quote found next to it (or None), and
    the shape's name."""
    inner = obj.get("tee_participant_info")
    if isinstance(inner, Mapping) and isinstance(inner.get("Dstack"), Mapping):
        node = inner["Dstack"]
        if isinstance(node.get("collateral"), Mapping):
            return node["collateral"], node.get("quote"), "public data (tee_participant_info)"
    for key in ("collateral", "quote_collateral"):
        if isinstance(obj.get(key), Mapping):
            return obj[key], obj.get("quote"), f"{{{key!r}: ...}} next to a quote"
    return obj, None, "collateral object"


def parse_collateral(obj: object) -> Collateral:
    """Read collateral from any of the shapes in the module docstring.

    ``obj`` may be JSON text/bytes, a parsed mapping, or a dcap-qvl ``QuoteCollateralV3``.
    Raises :class:`CollateralError` naming the missing or malformed field.
    """
    source = "collateral object"
    if hasattr(obj, "to_json") and not isinstance(obj, (str, bytes, Mapping)):
        obj = obj.to_json()
        source = "dcap-qvl QuoteCollateralV3"
    if isinstance(obj, (str, bytes)):
        obj = parse_json(obj, "collateral", CollateralError)
    if not isinstance(obj, Mapping):
        raise CollateralError(f"collateral: expected a JSON object, got {type(obj).__name__}")
    found, _quote, shape = find_collateral(obj)
    if source == "collateral object":
        source = shape
    fields: dict[str, Any] = {}
    for key, value in found.items():
        name = _CAMEL.get(str(key), str(key))
        if name in fields:
            raise CollateralError(f"collateral: field {name!r} is given twice")
        fields[name] = value
    missing = [f for f in _FIELDS if fields.get(f) in (None, "")]
    # A PCCS body carries its signature inside, so the separate field may be absent.
    for name, body in (
        ("tcb_info_signature", "tcb_info"),
        ("qe_identity_signature", "qe_identity"),
    ):
        if name in missing and body not in missing:
            missing.remove(name)
    if missing:
        found_keys = sorted(str(k) for k in found)
        raise CollateralError(
            f"collateral: missing {', '.join(missing)} (fields found: {found_keys})"
        )
    tcb_info, tcb_sig = _signed(fields["tcb_info"], "tcb_info", "tcbInfo")
    qe_identity, qe_sig = _signed(fields["qe_identity"], "qe_identity", "enclaveIdentity")
    values: dict[str, Any] = {"tcb_info": tcb_info, "qe_identity": qe_identity}
    for name, embedded in (("tcb_info_signature", tcb_sig), ("qe_identity_signature", qe_sig)):
        if embedded is None:
            if fields.get(name) in (None, ""):
                raise CollateralError(f"collateral: missing {name}")
            continue
        if fields.get(name) not in (None, "") and _bytes(fields[name], name) != embedded:
            raise CollateralError(
                f"collateral: {name} differs from the signature inside "
                f"{name.removesuffix('_signature')}"
            )
        values[name] = embedded
    for name in _TEXT_FIELDS:
        values[name] = _text(fields[name], name)
    for name in _BYTE_FIELDS:
        if name not in values:
            values[name] = _bytes(fields[name], name)
    chain = fields.get("pck_certificate_chain")
    if chain not in (None, ""):
        values["pck_certificate_chain"] = _text(chain, "pck_certificate_chain")
    return Collateral(**values, source=source)
