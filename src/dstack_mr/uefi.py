"""What OVMF measures from UEFI: empty variables, boot options, firmware constants, cmdline.

The structures here are the bytes behind the RTMR events; :mod:`dstack_mr.events` orders them
into each register's layout.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from .digest import sha384, utf16le

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

#: (memory, QEMU version) the reference's constant above holds for (any vCPU count).
SMBIOS_SEED_CONFIGURATION = (2 * 1024**3, (8, 2, 2))
#: ``smbios.SmbiosInputs(...).describe()`` of that configuration, spelled out so a measure
#: that keeps the constant never imports ``smbios`` (a test checks the two agree).
SMBIOS_SEED_DESCRIPTION = (
    "host CPU Emerald Rapids stepping 2 (CPUID.1 EAX=0x000c06f2 EDX=0x2fabfbff), dstack SMBIOS "
    "strings (manufacturer=dstack, product=dstack), memory 2 GiB, QEMU 8.2.2 (pc-q35-8.2)"
)
#: What a pre-202505 result says when it was asked to compute the SMBIOS event.
NO_SMBIOS_EVENT_NOTE = (
    "the SMBIOS options have no effect: pre-202505 OVMF measures no SMBIOS event (only the "
    "17-event stable202505 layout has one)"
)


def format_size(n: int) -> str:
    """``n`` bytes in the largest of TiB, GiB, MiB that divides it, else in bytes."""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def smbios_seed_note(memory_size: int, qemu_version: tuple[int, int, int]) -> str:
    """What a stable202505 result says when event 13 is the reference's constant."""
    note = (
        "RTMR0 event 13 ('variable_authority') is the SMBIOS handoff-table event "
        "(EV_EFI_HANDOFF_TABLES: SHA-384 of the filtered SMBIOS table), not a firmware "
        "constant. Its expected digest here is the reference's constant, which holds only for "
        f"{SMBIOS_SEED_DESCRIPTION} (any vCPU count)"
    )
    if (memory_size, qemu_version) == SMBIOS_SEED_CONFIGURATION:
        return note + "; this machine has that memory and QEMU version."
    return (
        note + f"; this machine has {format_size(memory_size)} on QEMU "
        f"{'.'.join(map(str, qemu_version))}, so it will not match. Compute the event instead: "
        "`measure --smbios-computed` (library: Machine(..., smbios=SmbiosOptions()))."
    )


LINUXBOOT_BOOTORDER = b"/rom@genroms/linuxboot_dma.bin\0"

SEPARATOR = bytes(4)
SEPARATOR_DIGEST = sha384(SEPARATOR)

# EV_EFI_ACTION strings OVMF measures into RTMR1 around starting the kernel.
BOOT_ATTEMPT_ACTION = b"Calling EFI Application from Boot Option"
EXIT_BOOT_SERVICES_ACTION = b"Exit Boot Services Invocation"
EXIT_BOOT_SERVICES_OK_ACTION = b"Exit Boot Services Returned with Success"


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


def cmdline_digest(cmdline: str) -> bytes:
    """What OVMF measures for the kernel command line: UTF-16LE, NUL-terminated."""
    return sha384(utf16le(cmdline) + b"\0\0")
