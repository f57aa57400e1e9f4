"""dstack's SCALE-encoded ``VersionedAttestation`` (version 0), read strictly.

This is what dstack's KMS, guest agent and verifier exchange as ``{"attestation": hex}``. Its
layout (parity-scale-codec, all integers little-endian, lengths as SCALE compact integers):

- ``0x00`` (the V0 variant), then one ``Attestation``:
- ``quote``: an enum, one index byte, then the variant:
  0 TDX (quote bytes, event log), 1 GCP TDX (a TDX quote and a TPM quote),
  2 Nitro Enclave (NSM document), 3 AMD SEV-SNP (report, certificate blobs, MrConfig text),
  4 AWS NitroTPM (attestation document);
- ``runtime_events`` (name, payload) pairs, ``report_data`` (64 bytes), ``config`` (the
  VmConfig as JSON text) and an empty verified-report slot.

A first byte that opens a MessagePack map is the newer V1 format, not read here. Every length
is checked against what is left before anything is allocated; any byte left over, invalid
UTF-8, a non-canonical compact integer or an unknown enum index is a
:class:`~dstack_mr.errors.ScaleError` naming the field and offset.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import attrs

from ._binary import Buffer, Cursor
from .errors import ScaleError

__all__ = [
    "MAX_ATTESTATION_BYTES",
    "Attestation",
    "AttestationQuote",
    "AwsNitroTpmQuote",
    "GcpTdxQuote",
    "NitroEnclaveQuote",
    "PcrValue",
    "RuntimeEvent",
    "ScaleReader",
    "SnpQuote",
    "TdxEvent",
    "TdxQuote",
    "TpmEvent",
    "TpmQuote",
    "decode_versioned_attestation",
    "looks_like_versioned_attestation",
]

#: Upstream's own bound on an encoded attestation (it refuses anything larger).
MAX_ATTESTATION_BYTES = 10 * 1024 * 1024

_T = TypeVar("_T")


#: The fixed-size SCALE encodings this format uses, declared once (SCALE integers are
#: little-endian and unpadded; ``[u8; N]`` arrays are their N bytes).
_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
#: A compact integer's four modes, picked by the low two bits of its first byte: the layout
#: it occupies and the smallest value that needs it (anything smaller has a shorter form).
#: Mode 3 is a length byte (here only ``0b000000_11``: four bytes follow) and a u32.
_COMPACT_MODES: dict[int, tuple[struct.Struct, int]] = {
    0: (_U8, 0),
    1: (struct.Struct("<H"), 1 << 6),
    2: (_U32, 1 << 14),
    3: (struct.Struct("<BI"), 1 << 30),
}


class ScaleReader:
    """SCALE primitives over a bounds-checked :class:`~dstack_mr._binary.Cursor`."""

    def __init__(self, data: Buffer) -> None:
        self.cur = Cursor(data, ScaleError)

    def fields(self, layout: struct.Struct, what: str) -> tuple[Any, ...]:
        """The fixed-size fields of a declared layout, in order."""
        return self.cur.unpack(layout, what)

    def u8(self, what: str) -> int:
        value: int = self.cur.unpack(_U8, what)[0]
        return value

    def u32(self, what: str) -> int:
        value: int = self.cur.unpack(_U32, what)[0]
        return value

    def compact_u32(self, what: str) -> int:
        """A compact integer that must fit u32 and use its shortest mode, as Rust's
        ``Compact<u32>`` (used for every length) insists."""
        start = self.cur.offset
        (first,) = self.cur.peek(_U8, what)
        mode = first & 0b11
        if mode == 3 and first >> 2 != 0:
            raise self.cur.fail(f"{what}: compact integer wider than 32 bits")
        layout, lower = _COMPACT_MODES[mode]
        encoded: int = self.cur.unpack(layout, what)[-1]
        value = encoded if mode == 3 else encoded >> 2
        if value < lower:
            raise self.cur.fail(
                f"{what}: compact integer {value} not in its shortest form", at=start
            )
        return value

    def byte_vec(self, what: str) -> bytes:
        length = self.compact_u32(f"{what} length")
        return self.cur.take(length, what)

    def string(self, what: str) -> str:
        start = self.cur.offset
        raw = self.byte_vec(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.cur.fail(f"{what}: not valid UTF-8 ({e.reason})", at=start) from None

    def array(self, layout: struct.Struct, what: str) -> bytes:
        """A ``[u8; N]`` declared as ``struct.Struct("<Ns")``."""
        value: bytes = self.cur.unpack(layout, what)[0]
        return value

    def seq(
        self, item: Callable[[ScaleReader, str], _T], min_size: int, what: str
    ) -> tuple[_T, ...]:
        """A ``Vec<T>`` whose items each take at least ``min_size`` bytes."""
        start = self.cur.offset
        count = self.compact_u32(f"{what} count")
        if count * min_size > self.cur.remaining:
            raise self.cur.fail(
                f"{what}: announces {count} items but only {self.cur.remaining} bytes remain",
                at=start,
            )
        return tuple(item(self, f"{what}[{i}]") for i in range(count))

    def variant(self, names: tuple[str, ...], what: str) -> int:
        start = self.cur.offset
        index = self.u8(what)
        if index >= len(names):
            raise self.cur.fail(
                f"{what}: unknown variant index {index} (known: "
                + ", ".join(f"{i} {n}" for i, n in enumerate(names))
                + ")",
                at=start,
            )
        return index


@attrs.frozen
class TdxEvent:
    """One event of the TDX event log as dstack carries it (IMR index zero-based; boot-time
    events are usually stripped of their payload, runtime events of their digest)."""

    imr: int
    event_type: int
    digest: bytes
    event: str
    event_payload: bytes


@attrs.frozen
class TdxQuote:
    quote: bytes
    event_log: tuple[TdxEvent, ...]


@attrs.frozen
class PcrValue:
    index: int
    algorithm: str
    value: bytes


@attrs.frozen
class TpmEvent:
    pcr_index: int
    digest: bytes


@attrs.frozen
class TpmQuote:
    message: bytes
    signature: bytes
    pcr_values: tuple[PcrValue, ...]
    ak_cert: bytes
    platform: str
    event_log: tuple[TpmEvent, ...]


@attrs.frozen
class GcpTdxQuote:
    tdx_quote: TdxQuote
    tpm_quote: TpmQuote


@attrs.frozen
class NitroEnclaveQuote:
    nsm_quote: bytes


@attrs.frozen
class SnpQuote:
    """An AMD SEV-SNP report (1184 bytes when well formed; not checked here), the certificate
    blobs the host exposed, and the MrConfigV3 document bound by the report's HOST_DATA."""

    report: bytes
    cert_chain: tuple[bytes, ...]
    mr_config: str


@attrs.frozen
class AwsNitroTpmQuote:
    attestation_doc: bytes


AttestationQuote: TypeAlias = (
    "TdxQuote | GcpTdxQuote | NitroEnclaveQuote | SnpQuote | AwsNitroTpmQuote"
)


@attrs.frozen
class RuntimeEvent:
    event: str
    payload: bytes


@attrs.frozen
class Attestation:
    """A decoded V0 ``VersionedAttestation``. ``platform`` names the quote variant
    (``dstack-tdx``, ``dstack-gcp-tdx``, ``dstack-nitro-enclave``, ``dstack-amd-sev-snp``,
    ``dstack-aws-nitro-tpm``); ``config`` is the VmConfig JSON text, unparsed."""

    platform: str
    quote: AttestationQuote
    runtime_events: tuple[RuntimeEvent, ...]
    report_data: bytes
    config: str


# --- field readers, in upstream declaration order ---------------------------------------------

_QUOTE_VARIANTS = (
    "dstack-tdx",
    "dstack-gcp-tdx",
    "dstack-nitro-enclave",
    "dstack-amd-sev-snp",
    "dstack-aws-nitro-tpm",
)
_TPM_PLATFORMS = ("dstack", "gcp", "nitro-enclave", "aws-ec2")
#: TdxEvent's fixed-size head: imr, event_type (then digest, event and payload, each a
#: compact length and its bytes).
_TDX_EVENT_HEAD = struct.Struct("<II")
#: The attestation's ``report_data: [u8; 64]``.
_REPORT_DATA = struct.Struct("<64s")
# Smallest encodings, so a count can be checked against the bytes left before looping: the
# fixed fields, plus one byte for each empty Vec/String (a compact length of 0).
_MIN_TDX_EVENT = _TDX_EVENT_HEAD.size + 3
_MIN_PCR_VALUE = _U32.size + 2
_MIN_TPM_EVENT = _U32.size + 1


def _tdx_event(r: ScaleReader, what: str) -> TdxEvent:
    imr, event_type = r.fields(_TDX_EVENT_HEAD, f"{what} (imr, event_type)")
    return TdxEvent(
        imr=imr,
        event_type=event_type,
        digest=r.byte_vec(f"{what}.digest"),
        event=r.string(f"{what}.event"),
        event_payload=r.byte_vec(f"{what}.event_payload"),
    )


def _tdx_quote(r: ScaleReader, what: str) -> TdxQuote:
    return TdxQuote(
        quote=r.byte_vec(f"{what}.quote"),
        event_log=r.seq(_tdx_event, _MIN_TDX_EVENT, f"{what}.event_log"),
    )


def _pcr_value(r: ScaleReader, what: str) -> PcrValue:
    return PcrValue(
        index=r.u32(f"{what}.index"),
        algorithm=r.string(f"{what}.algorithm"),
        value=r.byte_vec(f"{what}.value"),
    )


def _tpm_event(r: ScaleReader, what: str) -> TpmEvent:
    return TpmEvent(pcr_index=r.u32(f"{what}.pcr_index"), digest=r.byte_vec(f"{what}.digest"))


def _tpm_quote(r: ScaleReader, what: str) -> TpmQuote:
    return TpmQuote(
        message=r.byte_vec(f"{what}.message"),
        signature=r.byte_vec(f"{what}.signature"),
        pcr_values=r.seq(_pcr_value, _MIN_PCR_VALUE, f"{what}.pcr_values"),
        ak_cert=r.byte_vec(f"{what}.ak_cert"),
        platform=_TPM_PLATFORMS[r.variant(_TPM_PLATFORMS, f"{what}.platform")],
        event_log=r.seq(_tpm_event, _MIN_TPM_EVENT, f"{what}.event_log"),
    )


def _quote(r: ScaleReader, index: int) -> AttestationQuote:
    what = f"quote ({_QUOTE_VARIANTS[index]})"
    if index == 0:
        return _tdx_quote(r, what)
    if index == 1:
        return GcpTdxQuote(
            tdx_quote=_tdx_quote(r, f"{what}.tdx_quote"),
            tpm_quote=_tpm_quote(r, f"{what}.tpm_quote"),
        )
    if index == 2:
        return NitroEnclaveQuote(nsm_quote=r.byte_vec(f"{what}.nsm_quote"))
    if index == 3:
        return SnpQuote(
            report=r.byte_vec(f"{what}.report"),
            cert_chain=r.seq(lambda rr, w: rr.byte_vec(w), 1, f"{what}.cert_chain"),
            mr_config=r.string(f"{what}.mr_config"),
        )
    return AwsNitroTpmQuote(attestation_doc=r.byte_vec(f"{what}.attestation_doc"))


def _runtime_event(r: ScaleReader, what: str) -> RuntimeEvent:
    return RuntimeEvent(event=r.string(f"{what}.event"), payload=r.byte_vec(f"{what}.payload"))


def looks_like_versioned_attestation(data: Buffer) -> bool:
    """True when ``data`` starts like a V0 attestation (its first byte is the V0 index 0 and
    the quote index is known). A cheap shape test for input sniffing, not a validation."""
    return len(data) >= 2 and data[0] == 0 and data[1] < len(_QUOTE_VARIANTS)


def decode_versioned_attestation(data: Buffer) -> Attestation:
    """Decode a whole SCALE ``VersionedAttestation`` V0; raise :class:`ScaleError` otherwise."""
    if len(data) > MAX_ATTESTATION_BYTES:
        raise ScaleError(
            f"attestation: {len(data)} bytes exceeds the limit of {MAX_ATTESTATION_BYTES} bytes"
        )
    if not data:
        raise ScaleError("attestation: input is empty")
    first = data[0]
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        raise ScaleError(
            "attestation: this is a V1 (MessagePack) attestation; only the SCALE V0 format "
            "is supported"
        )
    if first != 0:
        raise ScaleError(
            f"attestation: first byte {first:#04x} is not a known VersionedAttestation "
            "version (expected 0x00 for the SCALE V0 format)"
        )
    r = ScaleReader(data)
    r.u8("version")
    index = r.variant(_QUOTE_VARIANTS, "quote variant")
    quote = _quote(r, index)
    runtime_events = r.seq(_runtime_event, 2, "runtime_events")
    report_data = r.array(_REPORT_DATA, "report_data")
    config = r.string("config")
    # The verified-report slot is `()` in an unverified attestation: zero bytes.
    r.cur.expect_end("attestation")
    return Attestation(
        platform=_QUOTE_VARIANTS[index],
        quote=quote,
        runtime_events=runtime_events,
        report_data=report_data,
        config=config,
    )
