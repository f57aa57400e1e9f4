"""Attestation shapes: GetQuote/Info responses, tcb_info and SCALE attestations as one record.

Whatever a dstack CVM handed out (the guest agent's GetQuote or Info response, a bare
tcb_info, or the SCALE ``VersionedAttestation`` its KMS and verifier exchange) becomes one
:class:`Attestation`: the quote, the event list, the VmConfig and any stated registers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._binary import from_hex
from .config import parse_json
from .digest import DIGEST_LEN
from .errors import EventLogError, EvidenceError, QuoteError
from .eventlog import Event, parse_json_event_log
from .quote import TdxQuote, parse_quote

__all__ = ["Attestation", "parse_attestation"]

_REGISTER_KEYS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")


@attrs.frozen
class Attestation:
    """Evidence from a dstack CVM, whatever shape it arrived in.

    ``registers`` holds MRTD/RTMR values stated outside a quote (Info / tcb_info responses);
    a verifier must not trust them like a quote, but they let the log be checked for
    self-consistency.
    """

    quote: TdxQuote | None
    events: tuple[Event, ...]
    vm_config: dict[str, Any] | None
    source: str
    registers: dict[str, bytes] = attrs.field(factory=dict)
    #: From a SCALE ``VersionedAttestation``: the quote's report_data and the attestation's
    #: separate runtime events (name, payload); TDX keeps its runtime events in ``events``.
    report_data: bytes | None = None
    runtime_events: tuple[tuple[str, bytes], ...] = ()


def _obj_from_json(value: object, what: str) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, (str, bytes)):
        value = parse_json(value, what, EvidenceError)
    if not isinstance(value, dict):
        raise EvidenceError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _registers(tcb: Mapping[str, Any], what: str) -> dict[str, bytes]:
    regs: dict[str, bytes] = {}
    for key in _REGISTER_KEYS:
        value = tcb.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise EvidenceError(f"{what} field {key!r}: expected a hex string")
        data = from_hex(value[2:] if value[:2] in ("0x", "0X") else value)
        if data is None or len(data) != DIGEST_LEN:
            raise EvidenceError(f"{what} field {key!r}: not {DIGEST_LEN} bytes of hex")
        regs[key] = data
    return regs


def _quote_field(value: object) -> TdxQuote | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise QuoteError(f"field 'quote': expected a hex string, got {type(value).__name__}")
    return parse_quote(value)


def _event_log_field(value: object, what: str) -> tuple[Event, ...]:
    if not isinstance(value, (str, bytes, list)):
        raise EventLogError(f"{what}: expected a JSON string or array, got {type(value).__name__}")
    return parse_json_event_log(value)


def _from_versioned_attestation(raw: bytes, source: str) -> Attestation:
    """A SCALE ``VersionedAttestation`` V0 holding a TDX quote (:mod:`dstack_mr.scale`)."""
    from .scale import GcpTdxQuote, TdxQuote, decode_versioned_attestation

    att = decode_versioned_attestation(raw)
    quote = att.quote.tdx_quote if isinstance(att.quote, GcpTdxQuote) else att.quote
    if not isinstance(quote, TdxQuote):
        raise EvidenceError(
            f"{source}: a {att.platform} attestation, not a TDX one; it has no TDX quote or "
            "event log to compare"
        )
    # Through the JSON reader, so SCALE events get the same checks: boot events arrive with
    # their payloads stripped (empty), runtime events with their digests stripped (derived
    # from name and payload, and marked so).
    entries = [
        {
            "imr": e.imr,
            "event_type": e.event_type,
            "digest": e.digest.hex(),
            "event": e.event,
            "event_payload": e.event_payload.hex(),
        }
        for e in quote.event_log
    ]
    return Attestation(
        quote=parse_quote(quote.quote),
        events=parse_json_event_log(entries),
        vm_config=_obj_from_json(att.config, "attestation config"),
        source=f"{source} (SCALE VersionedAttestation V0, {att.platform})",
        report_data=att.report_data,
        runtime_events=tuple((e.event, e.payload) for e in att.runtime_events),
    )


def parse_attestation(obj: Mapping[str, Any] | str | bytes) -> Attestation:
    """Recognise and parse a guest-agent GetQuote or Info response, or a bare tcb_info, or
    dstack's SCALE ``VersionedAttestation`` (raw bytes, or ``{"attestation": hex}`` as its
    KMS and verifier exchange it).

    Accepts the parsed JSON object or its text. Raises :class:`EvidenceError` (or its
    :class:`QuoteError` / :class:`EventLogError` subclasses) naming what was wrong.
    """
    data: Any = obj
    # A JSON document never starts with NUL; a V0 attestation always does.
    if isinstance(obj, bytes) and obj[:1] == b"\0":
        return _from_versioned_attestation(obj, "attestation")
    if isinstance(obj, (str, bytes)):
        data = parse_json(obj, "attestation", EvidenceError)
    if isinstance(data, list):
        return Attestation(None, parse_json_event_log(data), None, "JSON event log")
    if not isinstance(data, Mapping):
        raise EvidenceError(f"attestation: expected a JSON object, got {type(data).__name__}")
    keys = sorted(str(k) for k in data)

    if "attestation" in data and "quote" not in data:
        value = data["attestation"]
        raw = from_hex(value) if isinstance(value, str) else None
        if raw is None:
            raise EvidenceError(
                "field 'attestation': expected the SCALE VersionedAttestation as an "
                "even-length hex string"
            )
        return _from_versioned_attestation(raw, "field 'attestation'")
    if "quote" in data and "event_log" in data:
        return Attestation(
            quote=_quote_field(data["quote"]),
            events=_event_log_field(data["event_log"], "field 'event_log'"),
            vm_config=_obj_from_json(data.get("vm_config"), "field 'vm_config'"),
            source="guest-agent GetQuote response",
        )
    if "tcb_info" in data:
        tcb = _obj_from_json(data["tcb_info"], "field 'tcb_info'")
        if tcb is None or "event_log" not in tcb:
            found = sorted(tcb) if tcb else []
            raise EvidenceError(f"field 'tcb_info' has no 'event_log' (keys found: {found})")
        vm_config = data.get("vm_config") or tcb.get("vm_config")
        return Attestation(
            quote=_quote_field(data.get("quote")),
            events=_event_log_field(tcb["event_log"], "field 'tcb_info.event_log'"),
            vm_config=_obj_from_json(vm_config, "field 'vm_config'"),
            source="guest-agent Info response",
            registers=_registers(tcb, "field 'tcb_info'"),
        )
    if "event_log" in data:
        return Attestation(
            quote=None,
            events=_event_log_field(data["event_log"], "field 'event_log'"),
            vm_config=_obj_from_json(data.get("vm_config"), "field 'vm_config'"),
            source="tcb_info",
            registers=_registers(data, "tcb_info"),
        )
    raise EvidenceError(
        f"attestation: unrecognised shape (keys found: {keys}); expected a GetQuote response "
        "('quote' and 'event_log'), an Info response ('tcb_info'), a tcb_info ('event_log' "
        "with 'mrtd'/'rtmr0'..'rtmr3') or a dstack verifier input ('attestation': hex)"
    )
