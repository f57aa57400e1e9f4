"""The RTMR0 events OVMF measures from UEFI variables, boot options and firmware constants.

Two OVMF generations measure different event sequences; both are described here once, as
ordered tables of (label, what the event varies with, how its digest is made).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import attrs

from .config import OvmfVariant
from .digest import sha384, utf16le

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")

#: Digest of the dstack OVMF's configuration firmware volume (variable store) blob.
CFV_DIGEST = bytes.fromhex(
    "344bc51c980ba621aaa00da3ed7436f7d6e549197dfe699515dfa2c6583d95e6"
    "412af21c097d473155875ffd561d6790"
)
#: Boot0000 (UiApp) of pre-202505 OVMF, captured from real firmware.
PRE202505_BOOT0000_DIGEST = bytes.fromhex(
    "23ada07f5261f12f34a0bd8e46760962d6b4d576a416f1fea1c64bc656b1d28e"
    "acf7047ae6e967c58fd2a98bfa74c298"
)
#: The reference's constant for event 13 of the stable202505 layout (its "variable_authority").
#: The event is really EV_EFI_HANDOFF_TABLES for the SMBIOS table (see ``smbios``), and this is
#: its digest for exactly one configuration: 2 GiB, QEMU 8.2.2, host CPU Emerald Rapids
#: stepping 2 and dstack's SMBIOS strings (any vCPU count).
STABLE202505_VARIABLE_AUTHORITY_DIGEST = bytes.fromhex(
    "fb66919801f1dfc9c4c273b6a739380790cb0fd3cb706a42f6ac050510ebc861"
    "8e7fba53a1564522f5c6f0dc9e1f41a6"
)

OVMF_FV = uuid.UUID("7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1")
UIAPP_FILE = uuid.UUID("eec25bdc-67f2-4d95-b1d5-f81b2039d11d")
FRONTPAGE_FILE = uuid.UUID("462caa21-7614-4503-836e-8ab6f4662331")
LINUXBOOT_BOOTORDER = b"/rom@genroms/linuxboot_dma.bin\0"

SEPARATOR = bytes(4)
SEPARATOR_DIGEST = sha384(SEPARATOR)


def efi_variable_digest(vendor: uuid.UUID, name: str) -> bytes:
    """Digest of an empty variable's UEFI_VARIABLE_DATA (GUID, name length, data length 0)."""
    # The reference counts the name in bytes; all names measured here are ASCII.
    data = vendor.bytes_le + len(name).to_bytes(8, "little") + bytes(8) + utf16le(name)
    return sha384(data)


def device_path_node(kind: int, subtype: int, data: bytes) -> bytes:
    return bytes([kind, subtype]) + (4 + len(data)).to_bytes(2, "little") + data


END_OF_DEVICE_PATH = device_path_node(0x7F, 0xFF, b"")


def fv_file_path(fv: uuid.UUID, file: uuid.UUID) -> bytes:
    """MEDIA_FV(fv) / MEDIA_FV_FILE(file) / end: how OVMF points at an app in its own FV."""
    return (
        device_path_node(0x04, 0x07, fv.bytes_le)
        + device_path_node(0x04, 0x06, file.bytes_le)
        + END_OF_DEVICE_PATH
    )


def load_option(
    attributes: int, description: str, file_path: bytes, optional: bytes = b""
) -> bytes:
    """An EFI_LOAD_OPTION: the data of a Boot#### variable."""
    return (
        attributes.to_bytes(4, "little")
        + len(file_path).to_bytes(2, "little")
        + utf16le(description)
        + b"\0\0"
        + file_path
        + optional
    )


def boot_order(entries: Sequence[int]) -> bytes:
    return b"".join(e.to_bytes(2, "little") for e in entries)


@attrs.frozen
class EventSpec:
    """One RTMR event of a layout: its label and what its digest depends on."""

    label: str
    varies_with: str
    #: The digest when the event is a constant; None for events computed per machine.
    digest: bytes | None = None

    @property
    def fixed(self) -> bool:
        return self.digest is not None


_ACPI_VARIES = (
    "varies-with: cpu_count, pic, smm, hpet, hotplug_off, pci_hole64, root_verity, "
    "host_share_mode, num_gpus, num_nvswitches, hugepages, qemu_version"
)


def _efi(name: str, vendor: uuid.UUID) -> EventSpec:
    return EventSpec(f"efi:{name}", "fixed: empty EFI variable", efi_variable_digest(vendor, name))


_HEAD = [
    EventSpec("td_hob", "varies-with: memory_size, firmware section layout"),
    EventSpec("cfv_image", "fixed: dstack OVMF variable-store constant", CFV_DIGEST),
]
_VARS = [
    _efi("SecureBoot", EFI_GLOBAL_VARIABLE),
    _efi("PK", EFI_GLOBAL_VARIABLE),
    _efi("KEK", EFI_GLOBAL_VARIABLE),
    _efi("db", EFI_IMAGE_SECURITY_DATABASE),
    _efi("dbx", EFI_IMAGE_SECURITY_DATABASE),
    EventSpec("separator", "fixed: sha384(00000000)", SEPARATOR_DIGEST),
]
_ACPI = [
    EventSpec("acpi_loader", _ACPI_VARIES),
    EventSpec("acpi_rsdp", "varies-with: same inputs as acpi_loader"),
    EventSpec("acpi_tables", "varies-with: same inputs as acpi_loader"),
]

_PRE202505_TAIL = (
    EventSpec("boot_order", "fixed: sha384(0000), raw BootOrder of legacy OVMF", sha384(b"\0\0")),
    EventSpec("Boot0000", "fixed: legacy OVMF UiApp constant", PRE202505_BOOT0000_DIGEST),
)
_FWCFG = (
    EventSpec(
        "fwcfg:BootMenu", "fixed: sha384(0000), dstack never enables the boot menu", sha384(b"\0\0")
    ),
    EventSpec(
        "fwcfg:bootorder",
        "fixed: sha384 of /rom@genroms/linuxboot_dma.bin (q35 with -kernel)",
        sha384(LINUXBOOT_BOOTORDER),
    ),
)
_STABLE202505_TAIL = (
    EventSpec(
        "variable_authority",
        "varies-with: memory_size, qemu_version, host CPU, SMBIOS strings (the SMBIOS "
        "handoff-table event; by default the constant of 2 GiB on QEMU 8.2.2)",
        STABLE202505_VARIABLE_AUTHORITY_DIGEST,
    ),
    EventSpec(
        "boot_order_var",
        "fixed: sha384 of BootOrder data [Boot0000, Boot0001]",
        sha384(boot_order([0, 1])),
    ),
    EventSpec(
        "Boot0000",
        "fixed: BootManagerMenuApp load option (OVMF FV)",
        sha384(load_option(0x109, "BootManagerMenuApp", fv_file_path(OVMF_FV, UIAPP_FILE))),
    ),
    EventSpec(
        "Boot0001",
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
    EventSpec(
        "kernel_authenticode",
        "varies-with: kernel, initrd size, memory_size (QEMU patches the setup header)",
    ),
    EventSpec(
        "boot_attempt",
        'fixed: sha384("Calling EFI Application from Boot Option")',
        sha384(b"Calling EFI Application from Boot Option"),
    ),
    EventSpec("separator", "fixed: sha384(00000000)", SEPARATOR_DIGEST),
    EventSpec(
        "exit_boot_services",
        'fixed: sha384("Exit Boot Services Invocation")',
        sha384(b"Exit Boot Services Invocation"),
    ),
    EventSpec(
        "exit_boot_services_ok",
        'fixed: sha384("Exit Boot Services Returned with Success")',
        sha384(b"Exit Boot Services Returned with Success"),
    ),
)

RTMR2_LAYOUT: tuple[EventSpec, ...] = (
    EventSpec("cmdline", "varies-with: kernel command line (UTF-16LE, NUL-terminated)"),
    EventSpec("initrd", "varies-with: initrd file contents"),
)


def cmdline_digest(cmdline: str) -> bytes:
    return sha384(utf16le(cmdline) + b"\0\0")
