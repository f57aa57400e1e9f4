"""What an RTMR event *is*, read from its type and payload, so events can be matched by identity.

A position in a log says little: an OVMF of another generation inserts events, a trimmed log
drops some. An event's type and payload name it (the TD HOB handoff table, an EFI variable by
name and GUID, a boot option, a fw_cfg item, ``ACPI DATA``, the SMBIOS handoff table, the
kernel image, the command line). This module reduces both sides to such identities:

- :func:`expected_identity` for an expected event (from its label in the layout tables);
- :func:`actual_identity` for an event of the VM's log (from its type and payload; logs whose
  payloads were stripped still give the event's *kind* from its type).

Two identities are the same event when their ``kind`` is equal and, where both are known,
their ``key`` is equal.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import attrs

from . import events
from ._binary import take, u32, u64, unpack
from .errors import EventLogError
from .event_payload import (
    CONFIGURATION_TABLE,
    TABLE_COUNT,
    VARIABLE_DATA,
    describe_payload,
)
from .eventlog import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_HANDOFF_TABLES,
    EV_EFI_HANDOFF_TABLES2,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_BOOT2,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EVENT_TAG,
    EV_PLATFORM_CONFIG_FLAGS,
    EV_SEPARATOR,
    FW_CFG_EVENT_PREFIX,
    Event,
)
from .registry import SMBIOS3_TABLE, SMBIOS_TABLE
from .uefi import BOOT_ATTEMPT_ACTION, EXIT_BOOT_SERVICES_ACTION, EXIT_BOOT_SERVICES_OK_ACTION

if TYPE_CHECKING:
    from .machine import MeasurementDetails

__all__ = [
    "EventIdentity",
    "actual_identity",
    "expected_identity",
    "handoff_table_address",
    "is_acpi_label",
    "same_event",
    "simulated_event",
    "simulated_log",
]

#: Linux's EFI stub tags for the command line and the initrd (EV_EVENT_TAG).
_TAG_INITRD = 0x8F3B22EC
_TAG_LOAD_OPTIONS = 0x8F3B22ED


@attrs.frozen
class EventIdentity:
    """What an event is: ``kind`` (always known) and ``key`` (the specific item, if known).

    ``name`` is how a report names it, e.g. ``EFI variable SecureBoot`` or ``SMBIOS handoff
    tables``.
    """

    kind: str
    key: str | None
    name: str


def same_event(a: EventIdentity, b: EventIdentity) -> bool:
    """Same kind, and the same item when both sides say which."""
    if a.kind != b.kind:
        return False
    return a.key is None or b.key is None or a.key == b.key


# --- expected events, by the label of the layout tables ------------------------------------------

_ACTIONS = {
    events.BOOT_ATTEMPT: BOOT_ATTEMPT_ACTION.decode("ascii"),
    events.EXIT_BOOT_SERVICES: EXIT_BOOT_SERVICES_ACTION.decode("ascii"),
    events.EXIT_BOOT_SERVICES_OK: EXIT_BOOT_SERVICES_OK_ACTION.decode("ascii"),
}

#: The seed's label for index 13 of the stable202505 layout. That event is the SMBIOS
#: handoff-tables event (SPEC-UPSTREAM §2), whatever a layout calls it.
SMBIOS_LABELS = frozenset({events.VARIABLE_AUTHORITY})

_EFI_PREFIX = events.efi_variable_label("")
_FW_CFG = {events.FWCFG_BOOT_MENU: "BootMenu", events.FWCFG_BOOTORDER: "bootorder"}
_ACPI_PARTS = {
    events.ACPI_LOADER: "table loader",
    events.ACPI_RSDP: "RSDP",
    events.ACPI_TABLES: "tables",
}
_BOOT_OPTIONS = (events.BOOT0000, events.BOOT0001)

#: Events identified by label alone, per RTMR.
_BY_LABEL: dict[tuple[int, str], EventIdentity] = {
    (0, events.TD_HOB): EventIdentity("td-hob", None, "TD HOB"),
    (0, events.CFV_IMAGE): EventIdentity("cfv", None, "OVMF variable store (CFV)"),
    (0, events.SEPARATOR): EventIdentity("separator", None, "separator"),
    (0, events.BOOT_ORDER): EventIdentity("boot-variable", "BootOrder", "EFI variable BootOrder"),
    (0, events.BOOT_ORDER_VAR): EventIdentity(
        "boot-variable", "BootOrder", "EFI variable BootOrder"
    ),
    **{
        (0, label): EventIdentity("boot-variable", label, f"boot option {label}")
        for label in _BOOT_OPTIONS
    },
    **{
        (0, label): EventIdentity("acpi", None, f"ACPI DATA ({part})")
        for label, part in _ACPI_PARTS.items()
    },
    **{
        (0, label): EventIdentity("fw-cfg", item, f"fw_cfg item {item}")
        for label, item in _FW_CFG.items()
    },
    **{
        (0, label): EventIdentity("smbios", None, "SMBIOS handoff tables")
        for label in SMBIOS_LABELS
    },
    (1, events.KERNEL_AUTHENTICODE): EventIdentity("kernel", None, "kernel image (Authenticode)"),
    (1, events.SEPARATOR): EventIdentity("separator", None, "separator"),
    **{(1, label): EventIdentity("action", text, f'"{text}"') for label, text in _ACTIONS.items()},
    (2, events.CMDLINE): EventIdentity("cmdline", None, "kernel command line"),
    (2, events.INITRD): EventIdentity("initrd", None, "initrd"),
}


def expected_identity(rtmr: int, label: str) -> EventIdentity:
    """The identity of an expected event of RTMR ``rtmr`` with layout label ``label``."""
    known = _BY_LABEL.get((rtmr, label))
    if known is not None:
        return known
    if rtmr == 0 and label.startswith(_EFI_PREFIX):
        name = label[len(_EFI_PREFIX) :]
        return EventIdentity("efi-variable", name, f"EFI variable {name}")
    return EventIdentity(f"label:{label}", None, label)


def is_acpi_label(label: str) -> bool:
    """One of RTMR0's three ACPI events."""
    return label in events.ACPI_LABELS


# --- actual events, by type and payload ----------------------------------------------------------


class _Bad(EventLogError):
    """Internal: the payload does not have its type's structure."""


def _variable_name(p: bytes) -> str | None:
    try:
        _guid, name_len, _data_len = unpack(VARIABLE_DATA, p, 0, "UEFI_VARIABLE_DATA", _Bad)
        raw = take(p, VARIABLE_DATA.size, 2 * name_len, "variable name", _Bad)
    except _Bad:
        return None
    return raw.decode("utf-16-le", errors="replace").rstrip("\0") or None


def _handoff_guids(p: bytes) -> list[uuid.UUID]:
    try:
        (count,) = unpack(TABLE_COUNT, p, 0, "number of tables", _Bad)
        if count > 64:
            return []
        # Only each entry's VendorGuid is needed, not the address after it.
        at = [TABLE_COUNT.size + CONFIGURATION_TABLE.size * k for k in range(count)]
        return [uuid.UUID(bytes_le=take(p, a, 16, "table GUID", _Bad)) for a in at]
    except _Bad:
        return []


def _tag(p: bytes) -> int | None:
    # TCG_PCClientTaggedEvent's first field alone: the tag names the event even when the
    # payload is cut before its size field.
    try:
        return u32(p, 0, "event tag id", _Bad)
    except _Bad:
        return None


def fw_cfg_item_name(payload: bytes) -> str | None:
    """The item name of an OVMF fw_cfg measurement (``QEMU FW CFG\\0`` + NUL-padded name)."""
    if not payload.startswith(FW_CFG_EVENT_PREFIX):
        return None
    name = payload[len(FW_CFG_EVENT_PREFIX) :].split(b"\0", 1)[0]
    try:
        return name.decode("ascii") or None
    except UnicodeDecodeError:
        return None


def handoff_table_address(event: Event) -> int | None:
    """The table address an ``EV_EFI_HANDOFF_TABLES2`` event (the TD HOB) records, if any."""
    if event.event_type != EV_EFI_HANDOFF_TABLES2 or not event.event_payload:
        return None
    p = event.event_payload
    try:
        n = p[0]
        (count,) = unpack(TABLE_COUNT, p, 1 + n, "number of tables", _Bad)
        if count < 1:
            return None
        at = 1 + n + TABLE_COUNT.size
        _guid, address = unpack(CONFIGURATION_TABLE, p, at, "configuration table", _Bad)
        return int(address)
    except _Bad:
        return None


def kernel_image_length(event: Event) -> int | None:
    """The image length the firmware recorded for an EFI application (the kernel), if any."""
    if event.event_type != EV_EFI_BOOT_SERVICES_APPLICATION or len(event.event_payload) < 16:
        return None
    return u64(event.event_payload, 8, "image length", _Bad)


def actual_identity(event: Event) -> EventIdentity:
    """The identity of an event of the VM's log, from its type and (when present) payload."""
    t, p = event.event_type, event.event_payload
    if t == EV_EFI_HANDOFF_TABLES2:
        return EventIdentity("td-hob", None, "TD HOB")
    if t in (EV_EFI_PLATFORM_FIRMWARE_BLOB2, EV_EFI_PLATFORM_FIRMWARE_BLOB):
        return EventIdentity("cfv", None, "OVMF variable store (CFV)")
    if t == EV_EFI_HANDOFF_TABLES:
        guids = _handoff_guids(p)
        if not guids or guids[0] in (SMBIOS3_TABLE, SMBIOS_TABLE):
            return EventIdentity("smbios", None, "SMBIOS handoff tables")
        return EventIdentity("handoff-tables", str(guids[0]), f"handoff table {{{guids[0]}}}")
    if t in (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_AUTHORITY):
        name = _variable_name(p) if p else None
        return EventIdentity(
            "efi-variable", name, f"EFI variable {name}" if name else "an EFI variable"
        )
    if t in (EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2):
        name = _variable_name(p) if p else None
        if name is not None and name != "BootOrder":
            return EventIdentity("boot-variable", name, f"boot option {name}")
        return EventIdentity(
            "boot-variable", name, "EFI variable BootOrder" if name else "a boot variable"
        )
    if t == EV_SEPARATOR:
        return EventIdentity("separator", None, "separator")
    if t == EV_PLATFORM_CONFIG_FLAGS:
        item = fw_cfg_item_name(p)
        if item is not None:
            return EventIdentity("fw-cfg", item, f"fw_cfg item {item}")
        if p.rstrip(b"\0") == b"ACPI DATA" or event.event.startswith("acpi-") or not p:
            # Without a payload, an RTMR0 platform-config event whose digest is not a fw_cfg
            # constant (those anchor by digest) can only be one of the ACPI blobs.
            return EventIdentity("acpi", None, "ACPI DATA" if p or event.event else "ACPI data")
    if t == EV_EFI_BOOT_SERVICES_APPLICATION:
        return EventIdentity("kernel", None, "kernel image (Authenticode)")
    if t == EV_EFI_ACTION:
        text = p.decode("ascii", errors="replace") if p else None
        return EventIdentity("action", text, f'"{text}"' if text else "an EFI action")
    if t == EV_EVENT_TAG:
        tag = _tag(p) if p else None
        if tag == _TAG_LOAD_OPTIONS:
            return EventIdentity("cmdline", None, "kernel command line")
        if tag == _TAG_INITRD:
            return EventIdentity("initrd", None, "initrd")
        return EventIdentity("tagged", None, describe_payload(event) or "a tagged event")
    return EventIdentity(f"type:{t:#x}", None, describe_payload(event) or event.type_name)


def tag_positional(rtmr: int, index: int, identity: EventIdentity) -> EventIdentity:
    """Payload-less RTMR2 tagged events: the first is the command line, the second the initrd
    (how the Linux EFI stub measures them)."""
    if rtmr == 2 and identity.kind in ("tagged", f"type:{EV_EVENT_TAG:#x}"):
        return expected_identity(2, events.CMDLINE if index == 0 else events.INITRD)
    return identity


# --- simulated logs ------------------------------------------------------------------------------

_SIMULATED_TYPES = {
    "td-hob": EV_EFI_HANDOFF_TABLES2,
    "cfv": EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    "efi-variable": EV_EFI_VARIABLE_DRIVER_CONFIG,
    "boot-variable": EV_EFI_VARIABLE_BOOT,
    "separator": EV_SEPARATOR,
    "smbios": EV_EFI_HANDOFF_TABLES,
    "kernel": EV_EFI_BOOT_SERVICES_APPLICATION,
    "cmdline": EV_EVENT_TAG,
    "initrd": EV_EVENT_TAG,
}


def simulated_event(rtmr: int, label: str, digest: bytes) -> Event:
    """The event a VM logs for the expected event ``label``, carrying ``digest``: the type
    real firmware uses, and the payload where it is what names the event (``ACPI DATA``, a
    fw_cfg item, an EFI action string). For "what if" experiments and tests."""
    ident = expected_identity(rtmr, label)
    if ident.kind == "acpi":
        return Event(rtmr, EV_PLATFORM_CONFIG_FLAGS, digest, "", b"ACPI DATA")
    if ident.kind == "fw-cfg" and ident.key is not None:
        name = ident.key.encode("ascii").ljust(56, b"\0")
        return Event(rtmr, EV_PLATFORM_CONFIG_FLAGS, digest, "", FW_CFG_EVENT_PREFIX + name)
    if ident.kind == "action" and ident.key is not None:
        return Event(rtmr, EV_EFI_ACTION, digest, "", ident.key.encode("ascii"))
    if ident.kind not in _SIMULATED_TYPES:
        raise EventLogError(f"no simulated event for RTMR{rtmr} label {label!r}")
    return Event(rtmr, _SIMULATED_TYPES[ident.kind], digest)


def simulated_log(details: MeasurementDetails) -> tuple[Event, ...]:
    """The event log a VM with exactly these measurements would show (RTMR0-2)."""
    return tuple(
        simulated_event(log.rtmr, e.label, e.digest)
        for log in details.rtmr_logs
        for e in log.events
    )
