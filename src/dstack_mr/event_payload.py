"""One-line human readings of measured event payloads (UEFI variables, images, tables, tags).

:func:`describe_payload` is for people reading a log: it decodes what an event's type
promises (a UEFI variable and its boot option, an image's device path, handoff tables, a
Linux tagged event, a dstack runtime event) and falls back to text or a hex summary when the
payload does not have that structure. It never raises, and untrusted text is made safe to
show on one line.
"""

from __future__ import annotations

import re
import struct
import uuid

from ._binary import take, u16, u32, u64, uint
from .errors import EventLogError
from .eventlog import (
    DSTACK_RUNTIME_EVENT_TYPE,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_BOOT_SERVICES_DRIVER,
    EV_EFI_HANDOFF_TABLES,
    EV_EFI_HANDOFF_TABLES2,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EV_EFI_RUNTIME_SERVICES_DRIVER,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_BOOT2,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EVENT_TAG,
    EV_IPL,
    EV_SEPARATOR,
    FW_CFG_EVENT_PREFIX,
    Event,
)
from .registry import EFI_GLOBAL_VARIABLE, SMBIOS3_TABLE, SMBIOS_TABLE

__all__ = ["describe_payload"]


class _Undecodable(EventLogError):
    """Internal: a payload does not have the structure its event type promises."""


_TABLE_NAMES = {SMBIOS3_TABLE: "SMBIOS3 table", SMBIOS_TABLE: "SMBIOS table"}
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
    if vendor != EFI_GLOBAL_VARIABLE or not data:
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
