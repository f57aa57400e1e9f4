"""Measured events: TCG event types, the Event record, its replay and dstack's JSON event log.

Every log format (this JSON log, the binary CCEL in :mod:`dstack_mr.ccel`, the attestation
shapes in :mod:`dstack_mr.attestation`) is reduced to one :class:`Event` list whose digests
replay, per RTMR, to the values in the quote. Every JSON field is type-checked, so a hostile
log fails with :class:`EventLogError` instead of producing a plausible but wrong replay.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from . import validate
from ._binary import from_hex
from .config import parse_json
from .digest import DIGEST_LEN, replay, sha384
from .errors import EventLogError

__all__ = [
    "DSTACK_RUNTIME_EVENT_TYPE",
    "EVENT_TYPE_NAMES",
    "EV_NO_ACTION",
    "FW_CFG_EVENT_PREFIX",
    "RTMR_COUNT",
    "Event",
    "event_type_name",
    "parse_json_event_log",
    "replay_all",
    "replay_imr",
    "runtime_event_digest",
]

# --- event types -----------------------------------------------------------------------------

EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_EVENT_TAG = 0x6
EV_PLATFORM_CONFIG_FLAGS = 0xA
EV_IPL = 0xD
_EFI = 0x8000_0000
EV_EFI_VARIABLE_DRIVER_CONFIG = _EFI + 0x1
EV_EFI_VARIABLE_BOOT = _EFI + 0x2
EV_EFI_BOOT_SERVICES_APPLICATION = _EFI + 0x3
EV_EFI_BOOT_SERVICES_DRIVER = _EFI + 0x4
EV_EFI_RUNTIME_SERVICES_DRIVER = _EFI + 0x5
EV_EFI_ACTION = _EFI + 0x7
EV_EFI_PLATFORM_FIRMWARE_BLOB = _EFI + 0x8
EV_EFI_HANDOFF_TABLES = _EFI + 0x9
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = _EFI + 0xA
EV_EFI_HANDOFF_TABLES2 = _EFI + 0xB
EV_EFI_VARIABLE_BOOT2 = _EFI + 0xC
EV_EFI_VARIABLE_AUTHORITY = _EFI + 0xE0
#: dstack's own type for RTMR3 runtime events; not a TCG-assigned value.
DSTACK_RUNTIME_EVENT_TYPE = 0x0800_0001
#: OVMF's fw_cfg measurements (EV_PLATFORM_CONFIG_FLAGS): this ASCII tag, then the item's
#: NUL-padded file name.
FW_CFG_EVENT_PREFIX = b"QEMU FW CFG\0"

#: TCG PC Client Platform Firmware Profile event type names (plus dstack's runtime type).
EVENT_TYPE_NAMES: Mapping[int, str] = {
    0x0: "EV_PREBOOT_CERT",
    0x1: "EV_POST_CODE",
    0x2: "EV_UNUSED",
    0x3: "EV_NO_ACTION",
    0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION",
    0x6: "EV_EVENT_TAG",
    0x7: "EV_S_CRTM_CONTENTS",
    0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE",
    0xA: "EV_PLATFORM_CONFIG_FLAGS",
    0xB: "EV_TABLE_OF_DEVICES",
    0xC: "EV_COMPACT_HASH",
    0xD: "EV_IPL",
    0xE: "EV_IPL_PARTITION_DATA",
    0xF: "EV_NONHOST_CODE",
    0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x13: "EV_POST_CODE2",
    _EFI + 0x1: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    _EFI + 0x2: "EV_EFI_VARIABLE_BOOT",
    _EFI + 0x3: "EV_EFI_BOOT_SERVICES_APPLICATION",
    _EFI + 0x4: "EV_EFI_BOOT_SERVICES_DRIVER",
    _EFI + 0x5: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    _EFI + 0x6: "EV_EFI_GPT_EVENT",
    _EFI + 0x7: "EV_EFI_ACTION",
    _EFI + 0x8: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    _EFI + 0x9: "EV_EFI_HANDOFF_TABLES",
    _EFI + 0xA: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    _EFI + 0xB: "EV_EFI_HANDOFF_TABLES2",
    _EFI + 0xC: "EV_EFI_VARIABLE_BOOT2",
    _EFI + 0xD: "EV_EFI_GPT_EVENT2",
    _EFI + 0x10: "EV_EFI_HCRTM_EVENT",
    _EFI + 0xE0: "EV_EFI_VARIABLE_AUTHORITY",
    _EFI + 0xE1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    _EFI + 0xE2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
    _EFI + 0xE3: "EV_EFI_SPDM_DEVICE_POLICY",
    _EFI + 0xE4: "EV_EFI_SPDM_DEVICE_AUTHORITY",
    DSTACK_RUNTIME_EVENT_TYPE: "DSTACK_RUNTIME_EVENT",
}


def event_type_name(event_type: int) -> str:
    """The TCG name of an event type, or its hex value when it has none."""
    return EVENT_TYPE_NAMES.get(event_type, f"0x{event_type:08x}")


# --- the event -------------------------------------------------------------------------------

#: RTMR0..RTMR3.
RTMR_COUNT = 4


@attrs.frozen
class Event:
    """One measured event: ``digest`` was extended into RTMR ``imr`` (0-3).

    ``digest_derived`` is True when the log carried no digest and it was recomputed from the
    payload (dstack runtime events in logs whose digests were stripped to save space).
    """

    imr: int
    event_type: int
    digest: bytes = attrs.field(repr=lambda d: d.hex())
    event: str = ""
    event_payload: bytes = attrs.field(default=b"", repr=lambda p: f"<{len(p)} bytes>")
    digest_derived: bool = attrs.field(default=False, kw_only=True)
    #: For dstack runtime events: whether the stated digest is that of the name and payload
    #: (None where there is nothing to check).
    payload_consistent: bool | None = attrs.field(default=None, kw_only=True)

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)


def runtime_event_digest(name: str, payload: bytes, version: int = 1) -> bytes:
    """Digest dstack extends into RTMR3 for a runtime event (log format version 1 or 2)."""
    if version == 1:
        preimage = DSTACK_RUNTIME_EVENT_TYPE.to_bytes(4, "little") + b":"
        preimage += name.encode("utf-8") + b":" + payload
        return sha384(preimage)
    if version == 2:
        # RFC 8785 canonical JSON; for these four keys (strings and small integers only)
        # sorted keys, no spaces and raw UTF-8 is exactly JCS.
        canonical = json.dumps(
            {
                "event": name,
                "event_type": DSTACK_RUNTIME_EVENT_TYPE,
                "payload": payload.hex(),
                "version": 2,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return sha384(canonical.encode("utf-8"))
    raise EventLogError(f"unknown dstack event log version {version} (expected 1 or 2)")


def replay_imr(events: Iterable[Event], imr: int) -> bytes:
    """Replay the digests of the events of one RTMR, in log order, from 48 zero bytes."""
    if not 0 <= imr < RTMR_COUNT:
        raise EventLogError(f"imr {imr} is out of range (RTMR indices are 0..3)")
    return replay(e.digest for e in events if e.imr == imr)


def replay_all(events: Iterable[Event]) -> tuple[bytes, bytes, bytes, bytes]:
    evs = tuple(events)
    return (replay_imr(evs, 0), replay_imr(evs, 1), replay_imr(evs, 2), replay_imr(evs, 3))


# --- JSON event log --------------------------------------------------------------------------


#: The JSON fields checked as integers: an RTMR index, a TCG event type, a log format version.
_IMR = validate.int_range(0, RTMR_COUNT - 1)
_EVENT_TYPE = validate.u32
_VERSION = validate.int_range(1, 2)


def _hex_field(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise EventLogError(f"{where}: expected a hex string, got {type(value).__name__}")
    data = from_hex(value)
    if data is None:
        raise EventLogError(f"{where}: not an even-length hex string: {value[:40]!r}")
    return data


def _json_event(entry: object, i: int) -> Event:
    where = f"event log entry {i}"
    if not isinstance(entry, dict):
        raise EventLogError(f"{where}: expected an object, got {type(entry).__name__}")
    for key in ("imr", "event_type", "digest"):
        if key not in entry:
            raise EventLogError(f"{where}: missing field {key!r}")
    imr, event_type = entry["imr"], entry["event_type"]
    validate.require(_IMR, imr, f"{where} field 'imr'", EventLogError)
    validate.require(_EVENT_TYPE, event_type, f"{where} field 'event_type'", EventLogError)
    name = entry.get("event", "")
    validate.require(validate.string, name, f"{where} field 'event'", EventLogError)
    payload = _hex_field(entry.get("event_payload", ""), f"{where} field 'event_payload'")
    digest = _hex_field(entry["digest"], f"{where} field 'digest'")

    if event_type != DSTACK_RUNTIME_EVENT_TYPE:
        if len(digest) != DIGEST_LEN:
            raise EventLogError(
                f"{where} field 'digest': {len(digest)} bytes, expected {DIGEST_LEN} (SHA-384)"
            )
        return Event(imr, event_type, digest, name, payload)

    # A runtime event's digest is a function of its name and payload, and dstack's verifier
    # recomputes it rather than trusting the log; the agent even strips it from GetQuote logs.
    version = entry.get("version", 1)
    validate.require(_VERSION, version, f"{where} field 'version'", EventLogError)
    try:
        derived = runtime_event_digest(name, payload, version)
    except UnicodeEncodeError:
        raise EventLogError(f"{where} field 'event': name is not encodable as UTF-8") from None
    if not digest:
        return Event(
            imr, event_type, derived, name, payload, digest_derived=True, payload_consistent=True
        )
    if len(digest) != DIGEST_LEN:
        raise EventLogError(
            f"{where} field 'digest': {len(digest)} bytes, expected {DIGEST_LEN} (SHA-384)"
        )
    # Logs that omit "version" may still carry v2 events; accept whichever matches. A digest
    # matching neither is kept as stated (it is what was extended, if the log replays) and
    # flagged: the payload shown for it is not what was measured.
    consistent = digest == derived or (
        "version" not in entry and digest == runtime_event_digest(name, payload, 2)
    )
    return Event(imr, event_type, digest, name, payload, payload_consistent=consistent)


def parse_json_event_log(data: str | bytes | Sequence[object]) -> tuple[Event, ...]:
    """Parse the dstack JSON event log.

    Accepts the parsed list, JSON text of the list, or JSON text of a JSON *string* holding
    the list (the guest agent's ``event_log`` field, when read from a file as a whole).
    """
    obj: Any = data
    if isinstance(data, (str, bytes)):
        obj = parse_json(data, "event log", EventLogError)
        if isinstance(obj, str):
            obj = parse_json(obj, "event log (inner JSON string)", EventLogError)
    if isinstance(obj, (str, bytes)) or not isinstance(obj, Sequence):
        raise EventLogError(f"event log: expected a JSON array, got {type(obj).__name__}")
    return tuple(_json_event(entry, i) for i, entry in enumerate(obj))
