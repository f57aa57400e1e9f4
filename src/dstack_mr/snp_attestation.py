"""SEV-SNP evidence in the shapes dstack produces.

dstack's guest (``dstack-util quote-report``), KMS and verifier pass an SNP attestation as a
SCALE ``VersionedAttestation`` V0 whose quote is the SNP variant: the 1184-byte report, the
host's certificate blobs, and the MrConfigV3 document HOST_DATA binds; beside it the
attestation's REPORT_DATA and the VmConfig JSON. It arrives as ``{"attestation": "<hex>"}``,
as bare hex text, or as the raw bytes.

The report's signature chain (ARK → ASK → VCEK) is not verified here; see
:mod:`dstack_mr.snp_report`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from ._binary import from_hex
from .config import parse_json
from .errors import SnpEvidenceError

if TYPE_CHECKING:
    from .snp_document import SnpVmConfig
    from .snp_report import SnpReport

__all__ = ["SnpAttestation", "parse_snp_attestation", "versioned_attestation_bytes"]

_HEX_TEXT = frozenset(b"0123456789abcdefABCDEF \t\r\n")


@attrs.frozen
class SnpAttestation:
    """A decoded dstack SNP attestation. ``vm_config`` is ``None`` when the attestation
    carries no config; ``config`` is its text exactly as carried."""

    report: SnpReport
    cert_chain: tuple[bytes, ...] = attrs.field(repr=lambda c: f"<{len(c)} certificates>")
    mr_config: str = attrs.field(repr=False)
    report_data: bytes = attrs.field(repr=False)
    config: str = attrs.field(repr=False)
    vm_config: SnpVmConfig | None = attrs.field(repr=False)
    runtime_events: int
    source: str


def _hex(text: str, what: str) -> bytes:
    s = "".join(text.split())
    if s[:2] in ("0x", "0X"):
        s = s[2:]
    data = from_hex(s)
    if data is None or not data:
        raise SnpEvidenceError(f"{what}: not an even-length hex string")
    return data


def versioned_attestation_bytes(data: bytes) -> tuple[bytes, str] | None:
    """The SCALE bytes of a dstack ``VersionedAttestation`` in any of its shapes, with a
    name for the shape; ``None`` when ``data`` is not that kind of input at all (a TDX
    GetQuote response, say), so that a caller can try other readers."""
    stripped = data.strip()
    if stripped[:1] == b"{":
        obj = parse_json(data, "attestation", SnpEvidenceError)
        if not isinstance(obj, Mapping) or "attestation" not in obj:
            return None
        value = obj["attestation"]
        if not isinstance(value, str):
            raise SnpEvidenceError("field 'attestation': expected a hex string")
        return _hex(value, "field 'attestation'"), '{"attestation": hex}'
    if stripped and all(b in _HEX_TEXT for b in stripped):
        raw = _hex(stripped.decode("ascii"), "attestation hex")
        return (raw, "hex text") if raw[:1] == b"\0" else None
    if data[:1] == b"\0":
        return bytes(data), "SCALE bytes"
    return None


def parse_snp_attestation(data: bytes, source: str = "attestation") -> SnpAttestation | None:
    """Decode an SNP attestation; ``None`` when ``data`` is not a dstack VersionedAttestation
    or is one for another platform (TDX, GCP, Nitro). Raises :class:`SnpEvidenceError` (or
    the SCALE reader's error) when it is an SNP attestation but malformed."""
    found = versioned_attestation_bytes(data)
    if found is None:
        return None
    # Only now the decoders: TDX evidence, sniffed above, never pays for importing them.
    from .scale import SnpQuote, decode_versioned_attestation
    from .snp_document import SnpVmConfig
    from .snp_report import parse_snp_report

    raw, shape = found
    att = decode_versioned_attestation(raw)
    if not isinstance(att.quote, SnpQuote):
        return None
    vm = SnpVmConfig.from_json(att.config) if att.config.strip() else None
    return SnpAttestation(
        report=parse_snp_report(att.quote.report),
        cert_chain=att.quote.cert_chain,
        mr_config=att.quote.mr_config,
        report_data=att.report_data,
        config=att.config,
        vm_config=vm,
        runtime_events=len(att.runtime_events),
        source=f"{source} ({shape}, SCALE VersionedAttestation V0, {att.platform})",
    )
