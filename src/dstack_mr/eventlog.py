"""Event logs of a dstack CVM: the guest agent's JSON log, the raw CCEL, and attestation shapes.

Both log formats are reduced to one :class:`Event` list whose digests replay, per RTMR, to the
values in the quote. Nothing here trusts the input: every binary read goes through the bounded
reader and every JSON field is type-checked, so a hostile log fails with
:class:`EventLogError` instead of producing a plausible but wrong replay.
"""

from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._binary import from_hex, take, u16, u32, u64, uint
from .config import parse_json
from .digest import DIGEST_LEN, replay, sha384
from .errors import EventLogError, EvidenceError, QuoteError
from .quote import TdxQuote, parse_quote
from .registry import EFI_GLOBAL_VARIABLE, SMBIOS3_TABLE, SMBIOS_TABLE
from .registry import U32_MAX as _U32_MAX

__all__ = [
    "DSTACK_RUNTIME_EVENT_TYPE",
    "EVENT_TYPE_NAMES",
    "EV_NO_ACTION",
    "FW_CFG_EVENT_PREFIX",
    "SMBIOS3_TABLE_GUID",
    "SMBIOS_TABLE_GUID",
    "Attestation",
    "Event",
    "describe_payload",
    "event_type_name",
    "parse_attestation",
    "parse_ccel",
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

_NUM_RTMRS = 4


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
    if not 0 <= imr < _NUM_RTMRS:
        raise EventLogError(f"imr {imr} is out of range (RTMR indices are 0..3)")
    return replay(e.digest for e in events if e.imr == imr)


def replay_all(events: Iterable[Event]) -> tuple[bytes, bytes, bytes, bytes]:
    evs = tuple(events)
    return (replay_imr(evs, 0), replay_imr(evs, 1), replay_imr(evs, 2), replay_imr(evs, 3))


# --- JSON event log --------------------------------------------------------------------------


def _strict_int(value: object, lo: int, hi: int, where: str) -> int:
    # bool is an int subclass; JSON `true` must not pass as imr 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise EventLogError(f"{where}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise EventLogError(f"{where}: {value} is out of range {lo}..{hi}")
    return value


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
    imr = _strict_int(entry["imr"], 0, _NUM_RTMRS - 1, f"{where} field 'imr'")
    event_type = _strict_int(entry["event_type"], 0, _U32_MAX, f"{where} field 'event_type'")
    name = entry.get("event", "")
    if not isinstance(name, str):
        raise EventLogError(f"{where} field 'event': expected a string, got {type(name).__name__}")
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
    version = _strict_int(entry.get("version", 1), 1, 2, f"{where} field 'version'")
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


# --- CCEL (TCG2 crypto-agile binary log) -----------------------------------------------------

_ALG_SHA384 = 0x000C
_KNOWN_DIGEST_SIZES = {0x0004: 20, 0x000B: 32, 0x000C: 48, 0x000D: 64, 0x0012: 32}
_SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
# A handful of hash algorithms exist; more entries than this is corruption, not a platform.
_MAX_ALGORITHMS = 16
_MAX_DIGEST_SIZE = 128


def _spec_id_algorithms(data: bytes) -> dict[int, int]:
    """Algorithm id -> digest size from the header's TCG_EfiSpecIdEvent."""
    what = "CCEL spec-ID event"
    if u32(data, 4, f"{what} type", EventLogError) != EV_NO_ACTION:
        raise EventLogError(f"{what}: first event is not EV_NO_ACTION; not a crypto-agile log")
    size = u32(data, 28, f"{what} size", EventLogError)
    body = take(data, 32, size, f"{what} data", EventLogError)
    sig = take(body, 0, 16, f"{what} signature", EventLogError)
    if sig != _SPEC_ID_SIGNATURE:
        raise EventLogError(f"{what}: signature {sig!r} is not 'Spec ID Event03'")
    count = u32(body, 24, f"{what} numberOfAlgorithms", EventLogError)
    if not 1 <= count <= _MAX_ALGORITHMS:
        raise EventLogError(f"{what}: implausible numberOfAlgorithms {count}")
    algs: dict[int, int] = {}
    for k in range(count):
        off = 28 + 4 * k
        alg = u16(body, off, f"{what} algorithm {k} id", EventLogError)
        dsize = u16(body, off + 2, f"{what} algorithm {k} digest size", EventLogError)
        expected = _KNOWN_DIGEST_SIZES.get(alg)
        if alg in algs or (expected is not None and dsize != expected):
            raise EventLogError(f"{what}: bad entry {k} (algorithm {alg:#06x} size {dsize})")
        if not 0 < dsize <= _MAX_DIGEST_SIZE:
            raise EventLogError(f"{what}: algorithm {alg:#06x} has digest size {dsize}")
        algs[alg] = dsize
    vendor = uint(body, 28 + 4 * count, 1, f"{what} vendorInfoSize", EventLogError)
    take(body, 28 + 4 * count + 1, vendor, f"{what} vendorInfo", EventLogError)
    if _ALG_SHA384 not in algs:
        raise EventLogError(f"{what}: the log carries no SHA-384 digests (algorithms {algs})")
    return algs


def _is_end(data: bytes, off: int) -> bool:
    if len(data) - off < 8:
        # Too short for another record header: fine only if it is padding.
        rest = data[off:]
        return rest.strip(b"\0") == b"" or rest.strip(b"\xff") == b""
    mr_index, event_type = struct.unpack_from("<II", data, off)
    return mr_index == _U32_MAX or (mr_index == 0 and event_type in (0, _U32_MAX))


def parse_ccel(data: bytes) -> tuple[Event, ...]:
    """Parse a raw CCEL / TCG2 crypto-agile event log (as read from the ACPI CCEL table).

    CCEL's MR index is 1-based for RTMRs (1 = RTMR0 .. 4 = RTMR3; 0 would be MRTD); events
    get ``imr = index - 1``. EV_NO_ACTION records are skipped because they are never
    extended. Parsing stops at the 0xFF or zero padding after the last record.
    """
    data = bytes(data)
    algs = _spec_id_algorithms(data)
    off = 32 + u32(data, 28, "CCEL spec-ID event size", EventLogError)
    events: list[Event] = []
    n = 0
    while off < len(data) and not _is_end(data, off):
        where = f"CCEL record {n} at offset {off:#x}"
        mr_index = u32(data, off, f"{where} MR index", EventLogError)
        event_type = u32(data, off + 4, f"{where} event type", EventLogError)
        count = u32(data, off + 8, f"{where} digest count", EventLogError)
        if not 1 <= count <= len(algs):
            raise EventLogError(
                f"{where}: digest count {count} (the spec-ID event lists {len(algs)} algorithms)"
            )
        p = off + 12
        sha384_digest: bytes | None = None
        seen: set[int] = set()
        for k in range(count):
            alg = u16(data, p, f"{where} digest {k} algorithm", EventLogError)
            if alg not in algs or alg in seen:
                raise EventLogError(
                    f"{where}: digest {k} algorithm {alg:#06x} is "
                    + ("repeated" if alg in seen else "not in the spec-ID algorithm table")
                )
            seen.add(alg)
            digest = take(data, p + 2, algs[alg], f"{where} digest {k}", EventLogError)
            if alg == _ALG_SHA384:
                sha384_digest = digest
            p += 2 + algs[alg]
        size = u32(data, p, f"{where} event size", EventLogError)
        payload = take(data, p + 4, size, f"{where} event data", EventLogError)
        off = p + 4 + size
        n += 1
        if event_type == EV_NO_ACTION:
            continue
        if sha384_digest is None:
            raise EventLogError(f"{where}: no SHA-384 digest")
        if not 1 <= mr_index <= _NUM_RTMRS:
            raise EventLogError(
                f"{where}: MR index {mr_index} is not an RTMR (CCEL uses 1..4 for RTMR0..3; "
                "0 is MRTD, which no event extends)"
            )
        events.append(
            Event(mr_index - 1, event_type, sha384_digest, event_type_name(event_type), payload)
        )
    return tuple(events)


# --- payload descriptions --------------------------------------------------------------------


class _Undecodable(EventLogError):
    """Internal: a payload does not have the structure its event type promises."""


_EFI_GLOBAL_VARIABLE = EFI_GLOBAL_VARIABLE
#: Configuration-table GUIDs of the SMBIOS 3.x and 2.x entry points (edk2's
#: SmbiosMeasurementDxe logs one of them in the stable202505 RTMR0 handoff-tables event).
SMBIOS3_TABLE_GUID = SMBIOS3_TABLE
SMBIOS_TABLE_GUID = SMBIOS_TABLE
_TABLE_NAMES = {SMBIOS3_TABLE_GUID: "SMBIOS3 table", SMBIOS_TABLE_GUID: "SMBIOS table"}
#: OVMF's fw_cfg measurements: this ASCII tag, then the item's NUL-padded file name.
FW_CFG_EVENT_PREFIX = b"QEMU FW CFG\0"
_LOAD_OPTION_RE = re.compile(r"(Boot|Driver|SysPrep|PlatformRecovery)[0-9A-Fa-f]{4}")
_ORDER_VARS = {"BootOrder": "Boot", "DriverOrder": "Driver", "SysPrepOrder": "SysPrep"}
_LINUX_TAGS = {0x8F3B22EC: "Linux initrd", 0x8F3B22ED: "Linux load options"}
_HASH_LIKE_RE = re.compile(r".*(-id|-hash|-digest|hash|digest)$")
_MAX_TEXT = 200
_MAX_HEX = 64
_MAX_NODES = 32


def _guid(b: bytes) -> str:
    return str(uuid.UUID(bytes_le=b))


def _clean(s: str) -> str:
    """Make untrusted text safe to show on one line (no control or bidi characters)."""
    out = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in s)
    return out if len(out) <= _MAX_TEXT else out[:_MAX_TEXT] + "…"


def _hex_summary(b: bytes) -> str:
    if len(b) <= _MAX_HEX:
        return b.hex()
    return f"{b[:_MAX_HEX].hex()}… ({len(b)} bytes)"


def _ascii_text(b: bytes) -> str | None:
    s = b.rstrip(b"\0")
    if s and all(0x20 <= c < 0x7F or c in b"\t\r\n" for c in s):
        return _clean(s.decode("ascii"))
    return None


def _utf8_text(b: bytes) -> str | None:
    try:
        s = b.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        return None
    if s and all(c.isprintable() or c in "\t\r\n" for c in s):
        return _clean(s)
    return None


def _utf16_text(b: bytes) -> str | None:
    if len(b) < 4 or len(b) % 2:
        return None
    try:
        s = b.decode("utf-16-le").rstrip("\0")
    except UnicodeDecodeError:
        return None
    if s and all(c.isprintable() or c in "\t\r\n" for c in s):
        return _clean(s)
    return None


def _utf16_cstring(b: bytes, off: int, what: str) -> tuple[str, int]:
    """A NUL-terminated UTF-16LE string at ``off``; returns it and the offset after the NUL."""
    end = off
    while u16(b, end, what, _Undecodable) != 0:
        end += 2
    return b[off:end].decode("utf-16-le", errors="replace"), end + 2


def _device_node(t: int, st: int, body: bytes) -> str:
    if t == 4 and st in (6, 7) and len(body) == 16:
        return f"{'FvFile' if st == 6 else 'Fv'}({_guid(body)})"
    if t == 4 and st == 3 and len(body) >= 16:
        extra = f",{body[16:].hex()}" if len(body) > 16 else ""
        return f"VenMedia({_guid(body[:16])}{extra})"
    if t == 4 and st == 4:
        return _clean(body.decode("utf-16-le", errors="replace").rstrip("\0"))
    if t == 1 and st == 1 and len(body) == 2:
        return f"Pci({body[1]:#x},{body[0]:#x})"
    if t in (1, 3) and st in (4, 10) and len(body) >= 16:
        return f"{'VenHw' if t == 1 else 'VenMsg'}({_guid(body[:16])})"
    if t == 2 and st == 1 and len(body) == 8:
        hid, uid = struct.unpack("<II", body)
        if hid & 0xFFFF == 0x41D0:
            return f"Acpi(PNP{hid >> 16:04X},{uid:#x})"
        return f"Acpi({hid:#x},{uid:#x})"
    data = f",{_hex_summary(body)}" if body else ""
    return f"Path({t},{st}{data})"


def _device_path(b: bytes) -> str:
    parts: list[str] = []
    off = 0
    while off < len(b) and len(parts) < _MAX_NODES:
        head = u16(b, off, "device path node type", _Undecodable)
        t, st = head & 0xFF, head >> 8
        length = u16(b, off + 2, "device path node length", _Undecodable)
        if length < 4 or off + length > len(b):
            parts.append(f"<bad node length {length}>")
            break
        if t == 0x7F:
            if st == 0xFF:
                break
            parts.append(",")
        else:
            parts.append(_device_node(t, st, b[off + 4 : off + length]))
        off += length
    return "/".join(parts).replace("/,/", ",") or "<empty>"


def _describe_load_option(data: bytes) -> str:
    fp_len = u16(data, 4, "load option file path length", _Undecodable)
    desc, off = _utf16_cstring(data, 6, "load option description")
    path = take(data, off, fp_len, "load option file path", _Undecodable)
    rest = len(data) - off - fp_len
    extra = f" (+{rest} bytes optional data)" if rest else ""
    return f'"{_clean(desc)}" {_device_path(path)}{extra}'


def _describe_variable(p: bytes) -> str:
    guid = take(p, 0, 16, "variable GUID", _Undecodable)
    name_len = u64(p, 16, "variable name length", _Undecodable)
    data_len = u64(p, 24, "variable data length", _Undecodable)
    name_raw = take(p, 32, 2 * name_len, "variable name", _Undecodable)
    data = take(p, 32 + 2 * name_len, data_len, "variable data", _Undecodable)
    name = _clean(name_raw.decode("utf-16-le", errors="replace").rstrip("\0"))
    vendor = uuid.UUID(bytes_le=guid)
    text = f"efi variable {name} {{{vendor}}} (data {data_len} byte{'s' if data_len != 1 else ''})"
    if vendor != _EFI_GLOBAL_VARIABLE or not data:
        return text
    if name in _ORDER_VARS and len(data) % 2 == 0:
        prefix = _ORDER_VARS[name]
        entries = struct.unpack(f"<{len(data) // 2}H", data)
        return f"{text}: " + ", ".join(f"{prefix}{e:04X}" for e in entries)
    if _LOAD_OPTION_RE.fullmatch(name):
        return f"{text}: {_describe_load_option(data)}"
    return text


def _describe_image(p: bytes, kind: str) -> str:
    base = u64(p, 0, "image location", _Undecodable)
    length = u64(p, 8, "image length", _Undecodable)
    dp_len = u64(p, 24, "image device path length", _Undecodable)
    path = take(p, 32, dp_len, "image device path", _Undecodable)
    where = f": {_device_path(path)}" if path else ""
    return f"{kind}, {length} bytes at {base:#x}{where}"


def _describe_blob2(p: bytes) -> str:
    n = uint(p, 0, 1, "blob description size", _Undecodable)
    desc = take(p, 1, n, "blob description", _Undecodable)
    base = u64(p, 1 + n, "blob base", _Undecodable)
    length = u64(p, 9 + n, "blob length", _Undecodable)
    name = _ascii_text(desc) or desc.hex()
    return f'firmware blob "{name}" at {base:#x}, {length:#x} bytes'


def _tables(p: bytes, off: int, label: str) -> str:
    count = u64(p, off, "number of tables", _Undecodable)
    if count * 24 > len(p) - off - 8:
        raise _Undecodable(f"{count} tables do not fit")
    items = []
    for k in range(count):
        guid = take(p, off + 8 + 24 * k, 16, "table GUID", _Undecodable)
        ptr = u64(p, off + 24 + 24 * k, "table pointer", _Undecodable)
        known = _TABLE_NAMES.get(uuid.UUID(bytes_le=guid))
        name = f"{known} {{{_guid(guid)}}}" if known else f"{{{_guid(guid)}}}"
        items.append(f"{name} at {ptr:#x}")
    return f"{label}: " + (", ".join(items) if items else "none")


def _describe_handoff2(p: bytes) -> str:
    n = uint(p, 0, 1, "table description size", _Undecodable)
    desc = take(p, 1, n, "table description", _Undecodable)
    name = _ascii_text(desc) or desc.hex()
    label = f'handoff tables "{name}"' + (" (TD HOB)" if name == "TdxTable" else "")
    return _tables(p, 1 + n, label)


def _describe_tagged(p: bytes) -> str:
    tag = u32(p, 0, "event tag id", _Undecodable)
    size = u32(p, 4, "event tag data size", _Undecodable)
    data = take(p, 8, size, "event tag data", _Undecodable)
    known = _LINUX_TAGS.get(tag)
    label = f"tagged event {tag:#010x}" + (f" ({known})" if known else "")
    ascii_ = _ascii_text(data)
    if ascii_ is not None:
        return f"{label}: {ascii_}"
    wide = _utf16_text(data)
    if wide is not None:
        what = "kernel command line" if tag == 0x8F3B22ED else "UTF-16LE text"
        return f"{label}: {what}: {wide}"
    return f"{label}: {_hex_summary(data)}" if data else label


def _describe_runtime(event: Event) -> str:
    name = _clean(event.event) or "(unnamed)"
    p = event.event_payload
    if not p:
        return f"dstack runtime event {name} (no payload)"
    text = None if _HASH_LIKE_RE.fullmatch(event.event) else _utf8_text(p)
    return f"dstack runtime event {name}: {text if text is not None else _hex_summary(p)}"


def _describe_separator(p: bytes) -> str:
    if p == b"\xff\xff\xff\xff":
        return "separator (firmware error)"
    return "separator" if p == bytes(4) else f"separator {_hex_summary(p)}"


def _describe_fw_cfg(p: bytes) -> str:
    # ASCII, not UTF-16: the tag and the name are CHAR8 arrays.
    name = p[len(FW_CFG_EVENT_PREFIX) :].split(b"\0", 1)[0]
    text = _ascii_text(name)
    return f"fw_cfg item {text if text is not None else _hex_summary(name)}"


def _describe_typed(event: Event) -> str | None:
    t, p = event.event_type, event.event_payload
    if t == DSTACK_RUNTIME_EVENT_TYPE:
        return _describe_runtime(event)
    if not p:
        return None
    if p.startswith(FW_CFG_EVENT_PREFIX):
        return _describe_fw_cfg(p)
    if t in (
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        EV_EFI_VARIABLE_BOOT,
        EV_EFI_VARIABLE_BOOT2,
        EV_EFI_VARIABLE_AUTHORITY,
    ):
        return _describe_variable(p)
    if t == EV_EFI_BOOT_SERVICES_APPLICATION:
        return _describe_image(p, "EFI boot services application")
    if t == EV_EFI_BOOT_SERVICES_DRIVER:
        return _describe_image(p, "EFI boot services driver")
    if t == EV_EFI_RUNTIME_SERVICES_DRIVER:
        return _describe_image(p, "EFI runtime services driver")
    if t == EV_EFI_PLATFORM_FIRMWARE_BLOB2:
        return _describe_blob2(p)
    if t == EV_EFI_PLATFORM_FIRMWARE_BLOB:
        base = u64(p, 0, "blob base", _Undecodable)
        length = u64(p, 8, "blob length", _Undecodable)
        return f"firmware blob at {base:#x}, {length:#x} bytes"
    if t == EV_EFI_HANDOFF_TABLES2:
        return _describe_handoff2(p)
    if t == EV_EFI_HANDOFF_TABLES:
        return _tables(p, 0, "handoff tables")
    if t == EV_SEPARATOR:
        return _describe_separator(p)
    if t == EV_EVENT_TAG:
        return _describe_tagged(p)
    if t == EV_IPL:
        wide = _utf16_text(p)
        if wide is not None and _ascii_text(p) is None:
            return f"kernel command line (UTF-16LE): {wide}"
    return None


def describe_payload(event: Event) -> str | None:
    """A one-line human reading of an event's payload, or None when there is nothing to read.

    Never raises: a payload that does not have the structure its type promises falls back to
    text (ASCII or UTF-16LE) or a hex summary.
    """
    try:
        text = _describe_typed(event)
    except _Undecodable:
        text = None
    if text is not None:
        return text
    p = event.event_payload
    if not p:
        return None
    ascii_ = _ascii_text(p)
    if ascii_ is not None:
        return ascii_
    wide = _utf16_text(p)
    if wide is not None:
        return f"UTF-16LE text: {wide}"
    return f"{len(p)} bytes: {_hex_summary(p)}"


# --- attestation shapes ----------------------------------------------------------------------

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
