"""RTMR0-2 as data: each event's label, what it varies with, where its digest comes from.

A layout is an ordered tuple of :class:`EventSpec`. An event's digest is either a constant
(``digest``) or a named per-machine input (``input``, one of :data:`MACHINE_INPUTS`) that the
measurement computes from the firmware, kernel, initrd, cmdline or ACPI tables.
:func:`labelled_log` is the one place a layout and a machine's digests become a labelled
:class:`RtmrLog`. Every label is a constant here; other modules name events through them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import overload

import attrs

from .config import OvmfVariant
from .digest import replay, sha384, short_hex
from .registry import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    FRONTPAGE_FILE,
    OVMF_FV,
    UIAPP_FILE,
)
from .uefi import (
    BOOT_ATTEMPT_ACTION,
    CFV_DIGEST,
    EXIT_BOOT_SERVICES_ACTION,
    EXIT_BOOT_SERVICES_OK_ACTION,
    LINUXBOOT_BOOTORDER,
    PRE202505_BOOT0000_DIGEST,
    SEPARATOR_DIGEST,
    STABLE202505_VARIABLE_AUTHORITY_DIGEST,
    boot_order,
    efi_variable_digest,
    fv_file_path,
    load_option,
)

# --- labels -----------------------------------------------------------------------------------
# RTMR0
TD_HOB = "td_hob"
CFV_IMAGE = "cfv_image"
FWCFG_BOOT_MENU = "fwcfg:BootMenu"
FWCFG_BOOTORDER = "fwcfg:bootorder"
SEPARATOR = "separator"
ACPI_LOADER = "acpi_loader"
ACPI_RSDP = "acpi_rsdp"
ACPI_TABLES = "acpi_tables"
BOOT_ORDER = "boot_order"
VARIABLE_AUTHORITY = "variable_authority"
#: What that stable202505 event really is: the SMBIOS handoff-table event (see ``smbios``).
SMBIOS_HANDOFF = VARIABLE_AUTHORITY
BOOT_ORDER_VAR = "boot_order_var"
BOOT0000 = "Boot0000"
BOOT0001 = "Boot0001"
# RTMR1
KERNEL_AUTHENTICODE = "kernel_authenticode"
BOOT_ATTEMPT = "boot_attempt"
EXIT_BOOT_SERVICES = "exit_boot_services"
EXIT_BOOT_SERVICES_OK = "exit_boot_services_ok"
# RTMR2
CMDLINE = "cmdline"
INITRD = "initrd"

#: The three RTMR0 events whose digests come from QEMU's ACPI tables, in log order.
ACPI_LABELS = (ACPI_LOADER, ACPI_RSDP, ACPI_TABLES)

#: The per-machine digests a measurement supplies, each named after the event it fills.
MACHINE_INPUTS = (TD_HOB, *ACPI_LABELS, KERNEL_AUTHENTICODE, CMDLINE, INITRD)
#: Constants a measurement may replace with a per-machine digest of the same name: the
#: reference's SMBIOS constant, when the SMBIOS event is computed (``Machine.smbios``).
OVERRIDABLE_CONSTANTS = (SMBIOS_HANDOFF,)


def efi_variable_label(name: str) -> str:
    """The label of the event measuring the (empty) UEFI variable ``name``."""
    return f"efi:{name}"


# --- layouts ----------------------------------------------------------------------------------


@attrs.frozen
class EventSpec:
    """One RTMR event of a layout: its label, what it varies with, and its digest's source.

    Exactly one of ``digest`` (a constant) and ``input`` (the name of a per-machine digest,
    one of :data:`MACHINE_INPUTS`) is set.
    """

    label: str
    varies_with: str
    #: The digest when the event is a constant; None for events computed per machine.
    digest: bytes | None = None
    #: The per-machine digest this event takes; None for constants.
    input: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.digest is None) == (self.input is None):
            raise ValueError(f"event {self.label}: give exactly one of digest and input")
        if self.input is not None and self.input not in MACHINE_INPUTS:
            raise ValueError(f"event {self.label}: unknown per-machine input {self.input!r}")

    @property
    def fixed(self) -> bool:
        """A constant of every machine (the reference's SMBIOS constant is not one)."""
        return self.digest is not None and self.label not in OVERRIDABLE_CONSTANTS


def _measured(label: str, varies_with: str) -> EventSpec:
    """An event whose digest is the per-machine input of the same name."""
    return EventSpec(label, varies_with, input=label)


def _efi(name: str, vendor: uuid.UUID) -> EventSpec:
    return EventSpec(
        efi_variable_label(name), "fixed: empty EFI variable", efi_variable_digest(vendor, name)
    )


_SAME_AS_ACPI_LOADER = f"varies-with: same inputs as {ACPI_LOADER}"
_ACPI_VARIES = (
    "varies-with: cpu_count, pic, smm, hpet, hotplug_off, pci_hole64, root_verity, "
    "host_share_mode, num_gpus, num_nvswitches, hugepages, qemu_version"
)
_SEPARATOR = EventSpec(SEPARATOR, "fixed: sha384(00000000)", SEPARATOR_DIGEST)

_HEAD = (
    _measured(TD_HOB, "varies-with: memory_size, firmware section layout"),
    EventSpec(CFV_IMAGE, "fixed: dstack OVMF variable-store constant", CFV_DIGEST),
)
_VARS = (
    _efi("SecureBoot", EFI_GLOBAL_VARIABLE),
    _efi("PK", EFI_GLOBAL_VARIABLE),
    _efi("KEK", EFI_GLOBAL_VARIABLE),
    _efi("db", EFI_IMAGE_SECURITY_DATABASE),
    _efi("dbx", EFI_IMAGE_SECURITY_DATABASE),
    _SEPARATOR,
)
_ACPI = (
    _measured(ACPI_LOADER, _ACPI_VARIES),
    _measured(ACPI_RSDP, _SAME_AS_ACPI_LOADER),
    _measured(ACPI_TABLES, _SAME_AS_ACPI_LOADER),
)
_PRE202505_TAIL = (
    EventSpec(BOOT_ORDER, "fixed: sha384(0000), raw BootOrder of legacy OVMF", sha384(b"\0\0")),
    EventSpec(BOOT0000, "fixed: legacy OVMF UiApp constant", PRE202505_BOOT0000_DIGEST),
)
_FWCFG = (
    EventSpec(
        FWCFG_BOOT_MENU, "fixed: sha384(0000), dstack never enables the boot menu", sha384(b"\0\0")
    ),
    EventSpec(
        FWCFG_BOOTORDER,
        "fixed: sha384 of /rom@genroms/linuxboot_dma.bin (q35 with -kernel)",
        sha384(LINUXBOOT_BOOTORDER),
    ),
)
_STABLE202505_TAIL = (
    EventSpec(
        SMBIOS_HANDOFF,
        "varies-with: memory_size, qemu_version, host CPU, SMBIOS strings (the SMBIOS "
        "handoff-table event; by default the constant of 2 GiB on QEMU 8.2.2)",
        STABLE202505_VARIABLE_AUTHORITY_DIGEST,
    ),
    EventSpec(
        BOOT_ORDER_VAR,
        "fixed: sha384 of BootOrder data [Boot0000, Boot0001]",
        sha384(boot_order([0, 1])),
    ),
    EventSpec(
        BOOT0000,
        "fixed: BootManagerMenuApp load option (OVMF FV)",
        sha384(load_option(0x109, "BootManagerMenuApp", fv_file_path(OVMF_FV, UIAPP_FILE))),
    ),
    EventSpec(
        BOOT0001,
        "fixed: EFI Firmware Setup / FrontPage load option (OVMF FV)",
        sha384(load_option(0x101, "EFI Firmware Setup", fv_file_path(OVMF_FV, FRONTPAGE_FILE))),
    ),
)

#: RTMR0 event order of each OVMF generation.
RTMR0_LAYOUTS: dict[OvmfVariant, tuple[EventSpec, ...]] = {
    OvmfVariant.PRE202505: (*_HEAD, *_VARS, *_ACPI, *_PRE202505_TAIL),
    OvmfVariant.STABLE202505: (*_HEAD, *_FWCFG, *_VARS, *_ACPI, *_STABLE202505_TAIL),
}

RTMR1_LAYOUT: tuple[EventSpec, ...] = (
    _measured(
        KERNEL_AUTHENTICODE,
        "varies-with: kernel, initrd size, memory_size (QEMU patches the setup header)",
    ),
    EventSpec(
        BOOT_ATTEMPT,
        f'fixed: sha384("{BOOT_ATTEMPT_ACTION.decode()}")',
        sha384(BOOT_ATTEMPT_ACTION),
    ),
    _SEPARATOR,
    EventSpec(
        EXIT_BOOT_SERVICES,
        f'fixed: sha384("{EXIT_BOOT_SERVICES_ACTION.decode()}")',
        sha384(EXIT_BOOT_SERVICES_ACTION),
    ),
    EventSpec(
        EXIT_BOOT_SERVICES_OK,
        f'fixed: sha384("{EXIT_BOOT_SERVICES_OK_ACTION.decode()}")',
        sha384(EXIT_BOOT_SERVICES_OK_ACTION),
    ),
)

RTMR2_LAYOUT: tuple[EventSpec, ...] = (
    _measured(CMDLINE, "varies-with: kernel command line (UTF-16LE, NUL-terminated)"),
    _measured(INITRD, "varies-with: initrd file contents"),
)


def layouts(variant: OvmfVariant) -> tuple[tuple[EventSpec, ...], ...]:
    """The RTMR0, RTMR1 and RTMR2 layouts of a machine booting OVMF ``variant``."""
    return (RTMR0_LAYOUTS[variant], RTMR1_LAYOUT, RTMR2_LAYOUT)


# --- labelled logs ----------------------------------------------------------------------------


@attrs.frozen
class MeasuredEvent:
    """One expected RTMR event: position, label, what it varies with, digest."""

    index: int
    label: str
    varies_with: str = attrs.field(repr=False)
    digest: bytes = attrs.field(repr=short_hex)

    @property
    def fixed(self) -> bool:
        return self.varies_with.startswith("fixed")


@attrs.frozen
class RtmrLog(Sequence[MeasuredEvent]):
    """One register's expected events, in order: a read-only sequence of
    :class:`MeasuredEvent` (``log[0]``, ``for e in log``); ``value`` replays them."""

    rtmr: int
    events: tuple[MeasuredEvent, ...] = attrs.field(repr=lambda e: f"<{len(e)} events>")

    @property
    def value(self) -> bytes:
        return replay(e.digest for e in self.events)

    @property
    def digests(self) -> list[bytes]:
        return [e.digest for e in self.events]

    def __len__(self) -> int:
        return len(self.events)

    @overload
    def __getitem__(self, index: int) -> MeasuredEvent: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[MeasuredEvent, ...]: ...

    def __getitem__(self, index: int | slice) -> MeasuredEvent | tuple[MeasuredEvent, ...]:
        return self.events[index]

    def __iter__(self) -> Iterator[MeasuredEvent]:
        return iter(self.events)

    def _repr_html_(self) -> str:
        from .render import rtmr_log_html

        return rtmr_log_html(self)


def layout_digests(layout: Sequence[EventSpec], inputs: Mapping[str, bytes]) -> list[bytes]:
    """Each event's digest: its constant (unless ``inputs`` overrides one of
    :data:`OVERRIDABLE_CONSTANTS`), or the per-machine input it names."""
    missing = sorted({s.input for s in layout if s.input is not None} - inputs.keys())
    if missing:
        raise ValueError(f"per-machine digests missing for {', '.join(missing)}")
    return [
        inputs[s.label]
        if s.label in OVERRIDABLE_CONSTANTS and s.label in inputs
        else s.digest
        if s.digest is not None
        else inputs[s.input or ""]
        for s in layout
    ]


def labelled_log(rtmr: int, layout: Sequence[EventSpec], inputs: Mapping[str, bytes]) -> RtmrLog:
    """The labelled log of ``layout`` with the per-machine digests ``inputs`` filled in."""
    events = tuple(
        MeasuredEvent(i, spec.label, spec.varies_with, digest)
        for i, (spec, digest) in enumerate(zip(layout, layout_digests(layout, inputs), strict=True))
    )
    return RtmrLog(rtmr, events)


def labelled_logs(
    variant: OvmfVariant, inputs: Mapping[str, bytes]
) -> tuple[RtmrLog, RtmrLog, RtmrLog]:
    """RTMR0-2 of a machine booting OVMF ``variant``, from its per-machine digests."""
    rtmr0, rtmr1, rtmr2 = (
        labelled_log(i, layout, inputs) for i, layout in enumerate(layouts(variant))
    )
    return rtmr0, rtmr1, rtmr2
