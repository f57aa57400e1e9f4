"""The SMBIOS handoff-table event of edk2-stable202505 OVMF (RTMR0 event 13 of 17).

In the 17-event stable202505 layout the event at index 13 is ``EV_EFI_HANDOFF_TABLES`` logged by
edk2's SmbiosMeasurementDxe at ReadyToBoot. Its payload names the SMBIOS table; its digest is
SHA-384 over the SMBIOS structure table after a privacy filter. That table is made in three
steps, each a pure function here so the intermediate tables can be printed and compared:

1. :func:`qemu_tables` — the structures QEMU hands OVMF in fw_cfg ``etc/smbios/smbios-tables``
   (QEMU hw/smbios/smbios.c, hw/i386/fw_cfg.c, hw/i386/pc_q35.c), and :func:`qemu_anchor`, its
   entry point in ``etc/smbios/smbios-anchor``;
2. :func:`ovmf_install` — what OVMF's SmbiosPlatformDxe and SmbiosDxe publish from them
   (edk2 OvmfPkg/SmbiosPlatformDxe, MdeModulePkg/Universal/SmbiosDxe);
3. :func:`measured_table` — SmbiosMeasurementDxe's copy and filter
   (edk2 MdeModulePkg/Universal/SmbiosMeasurementDxe at edk2-stable202505),

and :func:`event_digest` hashes the result. The inputs are a :class:`SmbiosInputs`: QEMU version
(which fixes the machine type ``pc-q35-X.Y``), memory size, the ``-smbios type=1`` strings and
the host CPU's CPUID leaf 1 (``-cpu host``). The vCPU count is not an input of the digest: the
counts it changes are filtered.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Iterator, Sequence

import attrs

from . import _binary, validate
from .config import parse_version_triple
from .digest import sha384
from .errors import ConfigError, SmbiosError
from .host_cpu import DEFAULT_HOST_CPU, HostCpu, host_cpu_for
from .registry import SMBIOS3_TABLE, SMBIOS_TABLE

# The notes on the reference's constant live in uefi, so a measure keeping it needs no smbios.
from .uefi import NO_SMBIOS_EVENT_NOTE as NO_SMBIOS_EVENT_NOTE
from .uefi import format_size as format_size

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40

#: dstack's VMM passes ``-smbios type=1,manufacturer=dstack,product=dstack`` by default.
DSTACK_MANUFACTURER = "dstack"
DSTACK_PRODUCT = "dstack"
#: QEMU's own Type 1 defaults for q35 when no ``-smbios type=1`` string is given.
QEMU_MANUFACTURER = "QEMU"
Q35_PRODUCT = "Standard PC (Q35 + ICH9, 2009)"

#: The QEMU versions whose SMBIOS rules are modelled (machine types pc-q35-7.2 .. pc-q35-9.2).
MIN_QEMU_VERSION = (7, 2, 0)
MAX_QEMU_MINOR = (9, 2)


class EntryPoint(str, enum.Enum):
    """The SMBIOS entry point QEMU offers, which decides the table OVMF publishes."""

    #: 32-bit ``_SM_`` anchor (SMBIOS 2.8): published under the SMBIOS GUID.
    V2 = "2.8"
    #: 64-bit ``_SM3_`` anchor (SMBIOS 3.0): published under the SMBIOS3 GUID.
    V3 = "3.0"

    @property
    def guid(self) -> uuid.UUID:
        """The configuration-table GUID EFI_HANDOFF_TABLE_POINTERS names for this entry point."""
        return SMBIOS3_TABLE if self is EntryPoint.V3 else SMBIOS_TABLE

    def __str__(self) -> str:
        return self.value


# --- inputs ------------------------------------------------------------------------------


def parse_qemu_version(value: object) -> tuple[int, int, int]:
    """A QEMU version as ``(major, minor, micro)``, from ``'X.Y.Z'`` or such a tuple."""
    if isinstance(value, str):
        try:
            return parse_version_triple(value)
        except ConfigError as exc:
            raise ConfigError(f"invalid qemu_version: {exc}") from None
    if (
        isinstance(value, tuple)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return (value[0], value[1], value[2])
    raise ConfigError(f"qemu_version must be 'X.Y.Z' or a tuple of 3 integers, got {value!r}")


def _check_version(_inst: object, _attr: object, v: tuple[int, int, int]) -> None:
    if v < MIN_QEMU_VERSION or v[:2] > MAX_QEMU_MINOR:
        raise ConfigError(
            "QEMU {}.{}.{}: the SMBIOS tables are modelled for QEMU 7.2 to {}.{} "
            "(machine types pc-q35-7.2 .. pc-q35-{}.{})".format(
                *v, *MAX_QEMU_MINOR, *MAX_QEMU_MINOR
            )
        )


#: QEMU asserts Type 17 sizes below 2 PiB; far above any real guest.
MAX_MEMORY_SIZE = 1 << 50


def _smbios_string(value: object) -> str | None:
    # QEMU copies the -smbios text into a NUL-terminated string set.
    problem = validate.string(value)
    if problem is None and "\0" in str(value):
        return f"must not contain NUL characters, got {value!r}"
    if problem is None:
        try:
            str(value).encode("utf-8")
        except UnicodeEncodeError:
            return f"is not valid UTF-8 text: {value!r}"
    return problem


def _one_of(*allowed: object) -> validate.Check:
    return lambda value: None if value in allowed else f"must be one of {allowed}, got {value!r}"


_V = validate.attrs_validator


@attrs.frozen
class SmbiosInputs:
    """Everything QEMU's q35 SMBIOS tables depend on, for dstack's ``-smp N -m M`` machines.

    ``manufacturer``/``product`` are the ``-smbios type=1`` strings (``None``: not given, so
    QEMU's defaults). ``cpuid_eax``/``cpuid_edx`` are the guest's CPUID leaf 1 — the host's with
    ``-cpu host``. ``cpu_count`` only changes counts the measurement filters out.
    ``entry_point`` overrides the machine type's ``smbios-entry-point-type``.
    """

    qemu_version: tuple[int, int, int] = attrs.field(
        converter=parse_qemu_version, validator=_check_version
    )
    memory_size: int = attrs.field(
        validator=_V(validate.int_range(1, MAX_MEMORY_SIZE, "bytes"), "memory_size")
    )
    manufacturer: str | None = attrs.field(
        default=DSTACK_MANUFACTURER, validator=_V(validate.optional(_smbios_string), "manufacturer")
    )
    product: str | None = attrs.field(
        default=DSTACK_PRODUCT, validator=_V(validate.optional(_smbios_string), "product")
    )
    cpuid_eax: int = attrs.field(
        default=DEFAULT_HOST_CPU.eax, validator=_V(validate.u32, "cpuid_eax")
    )
    cpuid_edx: int = attrs.field(
        default=DEFAULT_HOST_CPU.edx, validator=_V(validate.u32, "cpuid_edx")
    )
    cpu_count: int = attrs.field(
        default=1, validator=_V(validate.int_range(1, 0xFFFF, "vCPUs"), "cpu_count")
    )
    entry_point: str | None = attrs.field(
        default=None, validator=_V(_one_of(None, "32", "64", "auto"), "entry_point")
    )

    @property
    def machine_type(self) -> str:
        """``-machine q35`` resolves to the newest machine type of the QEMU binary."""
        return "pc-q35-{}.{}".format(*self.qemu_version[:2])

    @property
    def host_cpu(self) -> HostCpu:
        return host_cpu_for(self.cpuid_eax, self.cpuid_edx)

    def describe(self) -> str:
        """The inputs in one line, as a report states its assumptions."""
        if (self.manufacturer, self.product) == (DSTACK_MANUFACTURER, DSTACK_PRODUCT):
            strings = "dstack SMBIOS strings (manufacturer=dstack, product=dstack)"
        elif self.manufacturer is None and self.product is None:
            strings = "QEMU's default SMBIOS strings (no -smbios type=1)"
        else:
            strings = f"SMBIOS strings manufacturer={self.manufacturer!r}, product={self.product!r}"
        return (
            f"host CPU {self.host_cpu}, {strings}, memory {format_size(self.memory_size)}, "
            f"QEMU {'.'.join(map(str, self.qemu_version))} ({self.machine_type})"
        )


# --- 1. QEMU's structures ------------------------------------------------------------------
# hw/smbios/smbios.c builds each structure as a packed formatted area followed by its strings;
# SMBIOS_TABLE_SET_STR numbers the non-empty strings in call order, and a structure without
# strings ends in two NULs. Handles are T<type>_BASE + instance.

T1_BASE, T3_BASE, T4_BASE = 0x100, 0x300, 0x400
T16_BASE, T17_BASE, T19_BASE, T32_BASE, T127_BASE = 0x1000, 0x1100, 0x1300, 0x2000, 0x7F00
DEFAULT_CPU_SPEED = 2000  # MHz: smbios.c type4.max_speed/current_speed defaults


def _strings(values: Sequence[str | None]) -> tuple[list[int], bytes]:
    """(each string field's index, the string-set bytes), as SMBIOS_TABLE_SET_STR assigns them:
    non-empty strings numbered from 1 in call order, NULL and "" left 0."""
    indices: list[int] = []
    out = bytearray()
    count = 0
    for value in values:
        if value:
            count += 1
            indices.append(count)
            out += value.encode("utf-8") + b"\0"
        else:
            indices.append(0)
    # SMBIOS_BUILD_TABLE_POST: one more NUL, two when the structure has no string at all.
    return indices, bytes(out) + (b"\0" if count else b"\0\0")


def _header(kind: int, length: int, handle: int) -> bytes:
    return struct.pack("<BBH", kind, length, handle)


def _default(value: str | None, default: str) -> str:
    # smbios_set_defaults() only fills fields the command line left NULL.
    return default if value is None else value


def type1(inputs: SmbiosInputs) -> bytes:
    """System Information (smbios_build_type_1_table): version = machine type, UUID zero as
    without ``-uuid`` (the filter blanks it either way), wake-up type 06 (power switch)."""
    (manufacturer, product, version, serial), strings = _strings(
        [
            _default(inputs.manufacturer, QEMU_MANUFACTURER),
            _default(inputs.product, Q35_PRODUCT),
            inputs.machine_type,
            None,
        ]
    )
    body = struct.pack("<BBBB16sBBB", manufacturer, product, version, serial, bytes(16), 0x06, 0, 0)
    return _header(1, 4 + len(body), T1_BASE) + body + strings


def type3(inputs: SmbiosInputs) -> bytes:
    """System Enclosure (smbios_build_type_3_table): type Other, states Safe, security Unknown."""
    (manufacturer, version, serial, asset, sku), strings = _strings(
        [QEMU_MANUFACTURER, inputs.machine_type, None, None, None]
    )
    body = struct.pack(
        "<BBBBBBBBBIBBBBB",
        manufacturer,
        0x01,
        version,
        serial,
        asset,
        0x03,
        0x03,
        0x03,
        0x02,
        0,
        0,
        0,
        0,
        0,
        sku,
    )
    return _header(3, 4 + len(body), T3_BASE) + body + strings


def type4(inputs: SmbiosInputs, entry_point: EntryPoint, socket: int = 0) -> bytes:
    """Processor Information (smbios_build_type_4_table), one per socket; ``-smp N`` is one
    socket of N cores on machine types >= 6.2.

    The length is SMBIOS_TYPE_4_LEN_V30 (0x30) when building for a 3.0 entry point, else
    SMBIOS_TYPE_4_LEN_V28 (0x2A). From QEMU 9.0 the family byte is 0xFE ("see family 2").
    The processor ID is the guest's CPUID leaf 1 EAX and EDX.
    """
    cpus = inputs.cpu_count
    (sock, manufacturer, version, serial, asset, part), strings = _strings(
        [f"CPU{socket:2x}", QEMU_MANUFACTURER, inputs.machine_type, None, None, None]
    )
    family = 0xFE if inputs.qemu_version >= (9, 0, 0) else 0x01
    body = struct.pack(
        "<BBBBIIBBHHHBBHHHBBBBBBHH",
        sock,
        0x03,  # central processor
        family,
        manufacturer,
        inputs.cpuid_eax,
        inputs.cpuid_edx,
        version,
        0,  # voltage
        0,  # external clock: unknown
        DEFAULT_CPU_SPEED,
        DEFAULT_CPU_SPEED,
        0x41,  # socket populated, CPU enabled
        0x01,  # upgrade: other
        0xFFFF,
        0xFFFF,
        0xFFFF,
        serial,
        asset,
        part,
        min(cpus, 0xFF),  # cores per socket
        min(cpus, 0xFF),  # enabled cores
        min(cpus, 0xFF),  # threads per socket (QEMU 8.1+, and Debian's 7.2 stable builds)
        0x02,  # characteristics: unknown
        0x01,  # family 2: other
    )
    if entry_point is EntryPoint.V3:
        body += struct.pack("<HHH", cpus, cpus, cpus)
    return _header(4, 4 + len(body), T4_BASE + socket) + body + strings


def _dimm_size(inputs: SmbiosInputs) -> int:
    # MachineClass.smbios_memory_device_size: 2047 TiB from machine type 9.1 (one "DIMM"),
    # pc_compat_9_0 keeps 16 GiB.
    return 16 * GIB if inputs.qemu_version[:2] <= (9, 0) else 2047 * TIB


def dimm_sizes(inputs: SmbiosInputs) -> list[int]:
    """Bytes of each Type 17 device: full DIMMs, the last one holding the remainder."""
    size, ram = _dimm_size(inputs), inputs.memory_size
    count = -(-ram // size)
    return [size] * (count - 1) + [(ram - 1) % size + 1]


def type16(inputs: SmbiosInputs, devices: int) -> bytes:
    """Physical Memory Array (smbios_build_type_16_table): capacity in KiB below 2 TiB, else
    0x80000000 and the extended capacity in bytes."""
    size_kb = -(-inputs.memory_size // KIB)
    if size_kb < 0x8000_0000:
        capacity, extended = size_kb, 0
    else:
        capacity, extended = 0x8000_0000, inputs.memory_size
    body = struct.pack("<BBBIHHQ", 0x01, 0x03, 0x06, capacity, 0xFFFE, devices, extended)
    return _header(16, 4 + len(body), T16_BASE) + body + b"\0\0"


def type17(inputs: SmbiosInputs, instance: int, size: int) -> bytes:
    """Memory Device (smbios_build_type_17_table): size in MiB below 0x7FFF, else 0x7FFF and
    the extended size; locator "DIMM <n>", manufacturer QEMU, speed unknown."""
    size_mb = -(-size // MIB)
    std, extended = (size_mb, 0) if size_mb < 0x7FFF else (0x7FFF, size_mb)
    (locator, bank, manufacturer, serial, asset, part), strings = _strings(
        [f"DIMM {instance}", None, QEMU_MANUFACTURER, None, None, None]
    )
    body = struct.pack(
        "<HHHHHBBBBBHHBBBBBIHHHH",
        T16_BASE,
        0xFFFE,
        0xFFFF,
        0xFFFF,
        std,
        0x09,  # form factor: DIMM
        0,
        locator,
        bank,
        0x07,  # type: RAM
        0x0002,  # detail: other
        0,  # speed
        manufacturer,
        serial,
        asset,
        part,
        0,
        extended,
        0,
        0,
        0,
        0,
    )
    return _header(17, 4 + len(body), T17_BASE + instance) + body + strings


def ram_areas(inputs: SmbiosInputs) -> list[tuple[int, int]]:
    """The e820 RAM entries of q35 (pc_q35_init, pc_memory_init): below 4 GiB up to 2 GiB once
    RAM reaches 0xB0000000 (2.75 GiB), else all of it; the rest from 4 GiB."""
    ram = inputs.memory_size
    lowmem = 0x8000_0000 if ram >= 0xB000_0000 else 0xB000_0000
    below = min(ram, lowmem)
    areas = [(0, below)]
    if ram > below:
        areas.append((1 << 32, ram - below))
    return areas


def type19(instance: int, handle_offset: int, start: int, size: int) -> bytes:
    """Memory Array Mapped Address (smbios_build_type_19_table): KiB bounds, or 0xFFFFFFFF
    and the extended byte addresses when they do not fit."""
    end = start + size - 1
    start_kb, end_kb = start // KIB, end // KIB
    if start_kb < 0xFFFF_FFFF and end_kb < 0xFFFF_FFFF:
        fields = (start_kb, end_kb, T16_BASE, 1, 0, 0)
    else:
        fields = (0xFFFF_FFFF, 0xFFFF_FFFF, T16_BASE, 1, start, end)
    body = struct.pack("<IIHBQQ", *fields)
    return _header(19, 4 + len(body), T19_BASE + handle_offset + instance) + body + b"\0\0"


def type32() -> bytes:
    """System Boot Information (smbios_build_type_32_table): no errors detected."""
    body = bytes(6) + b"\0"
    return _header(32, 4 + len(body), T32_BASE) + body + b"\0\0"


def type127() -> bytes:
    """End-of-table (smbios_build_type_127_table)."""
    return _header(127, 4, T127_BASE) + b"\0\0"


def _structures_for(inputs: SmbiosInputs, entry_point: EntryPoint) -> list[bytes]:
    # smbios_get_tables(): types 0 and 2 only with -smbios type=0/2 (dstack gives none).
    dimms = dimm_sizes(inputs)
    areas = ram_areas(inputs)
    # Type 19 handles move up past Type 17's when there are more DIMMs than the gap holds.
    offset = max(0, len(dimms) - (T19_BASE - T17_BASE))
    if len(areas) + offset >= T32_BASE - T19_BASE:
        raise ConfigError(f"memory_size {inputs.memory_size}: too many SMBIOS memory devices")
    return [
        type1(inputs),
        type3(inputs),
        type4(inputs, entry_point),
        type16(inputs, len(dimms)),
        *(type17(inputs, i, size) for i, size in enumerate(dimms)),
        *(type19(i, offset, start, size) for i, (start, size) in enumerate(areas)),
        type32(),
        type127(),
    ]


def _requested_entry_point(inputs: SmbiosInputs) -> str:
    # hw/i386/pc.c: pc_compat_8_0 sets "32", machine types 8.1 .. 9.0 default to "64", and
    # from 9.1 "auto" (smbios_get_tables tries a 2.x table first).
    if inputs.entry_point is not None:
        if inputs.entry_point == "auto" and inputs.qemu_version[:2] < (9, 1):
            raise ConfigError(
                f"smbios-entry-point-type=auto needs QEMU 9.1 or later, not {inputs.machine_type}"
            )
        return inputs.entry_point
    minor = inputs.qemu_version[:2]
    return "32" if minor <= (8, 0) else "64" if minor <= (9, 0) else "auto"


#: A 2.1 entry point counts the table in 16 bits (SMBIOS 2.1 table length/count limits).
SMBIOS_21_MAX = 0xFFFF


def qemu_structures(inputs: SmbiosInputs) -> tuple[EntryPoint, list[bytes]]:
    """The entry point QEMU builds for and its structures, in order, each with its strings."""
    requested = _requested_entry_point(inputs)
    if requested == "64":
        return EntryPoint.V3, _structures_for(inputs, EntryPoint.V3)
    structures = _structures_for(inputs, EntryPoint.V2)
    fits = sum(map(len, structures)) <= SMBIOS_21_MAX and len(structures) <= SMBIOS_21_MAX
    if requested == "auto" and not fits:
        return EntryPoint.V3, _structures_for(inputs, EntryPoint.V3)
    if not fits:
        raise ConfigError(f"{inputs.describe()}: the SMBIOS table does not fit a 2.1 entry point")
    return EntryPoint.V2, structures


def qemu_tables(inputs: SmbiosInputs) -> bytes:
    """fw_cfg ``etc/smbios/smbios-tables``: every structure, ending with Type 127."""
    return b"".join(qemu_structures(inputs)[1])


def qemu_anchor(inputs: SmbiosInputs) -> bytes:
    """fw_cfg ``etc/smbios/smbios-anchor`` (smbios_entry_point_setup): the firmware fills in
    the address and checksums, so QEMU leaves them 0."""
    entry_point, structures = qemu_structures(inputs)
    length = sum(map(len, structures))
    if entry_point is EntryPoint.V3:
        return struct.pack("<5sBBBBBBBIQ", b"_SM3_", 0, 0x18, 3, 0, 0, 1, 0, length, 0)
    return struct.pack(
        "<4sBBBBHB5s5sBHIHB",
        b"_SM_",
        0,
        0x1F,
        2,
        8,
        max(map(len, structures)),
        0,
        bytes(5),
        b"_DMI_",
        0,
        length,
        0,
        len(structures),
        0x28,
    )


# --- walking a table ---------------------------------------------------------------------

#: SmbiosMeasurementDxe's mMaxLen per SMBIOS version (SMBIOS_TABLE_MAX_LENGTH and
#: SMBIOS_3_0_TABLE_MAX_LENGTH): the longest string it will walk.
MAX_STRING_V2 = 0xFFFF
MAX_STRING_V3 = 0xFFFF_FFFF


def _byte(table: bytes, offset: int) -> int:
    return _binary.uint(table, offset, 1, "SMBIOS table", SmbiosError)


def structure_strings(
    table: bytes, offset: int, max_len: int = MAX_STRING_V3
) -> tuple[int, list[tuple[int, int]]] | None:
    """(total size, [(start, length) of each string]) of the structure at ``offset``, walked
    as edk2's GetSmbiosStructureSize walks it: the size ends at the first double NUL after
    the formatted area. None where edk2 gives up (a string of ``max_len`` characters)."""
    length = _byte(table, offset + 1)
    pos = offset + length
    size = length
    strings: list[tuple[int, int]] = []
    while _byte(table, pos) != 0 or _byte(table, pos + 1) != 0:
        if table[pos] == 0:
            size += 1
            pos += 1
        n = 0
        while n < max_len and _byte(table, pos + n) != 0:
            n += 1
        if n == max_len:
            return None
        strings.append((pos, n))
        pos += n
        size += n
    return size + 2, strings


@attrs.frozen
class Structure:
    """One structure of a table: where it is, its header fields and strings."""

    offset: int
    kind: int
    length: int
    handle: int
    size: int
    strings: tuple[bytes, ...]

    @property
    def name(self) -> str:
        return STRUCTURE_NAMES.get(self.kind, f"Type {self.kind}")


STRUCTURE_NAMES = {
    0: "BIOS Information",
    1: "System Information",
    2: "Baseboard Information",
    3: "System Enclosure",
    4: "Processor Information",
    16: "Physical Memory Array",
    17: "Memory Device",
    19: "Memory Array Mapped Address",
    32: "System Boot Information",
    127: "End-of-Table",
}


def structures(table: bytes, max_len: int = MAX_STRING_V3) -> Iterator[Structure]:
    """Every structure of a table, through the first Type 127."""
    offset = 0
    while offset < len(table):
        walked = structure_strings(table, offset, max_len)
        if walked is None:
            raise SmbiosError(f"SMBIOS structure at {offset:#x}: a string has no end")
        size, strings = walked
        kind = table[offset]
        handle = _binary.u16(table, offset + 2, "SMBIOS structure handle", SmbiosError)
        yield Structure(
            offset,
            kind,
            table[offset + 1],
            handle,
            size,
            tuple(table[s : s + n] for s, n in strings),
        )
        offset += size
        if kind == 127:
            return


# --- 2. OVMF installs them ---------------------------------------------------------------

#: OvmfPkg/SmbiosPlatformDxe mOvmfDefaultType0 (BIOS segment 0xE800, characteristics "not
#: supported", extension byte 2 = VM | UEFI | target content distribution, EC release FF.FF)
#: with the strings of PcdFirmwareVendor ("EDK II") and, for the empty version and date PCDs
#: of dstack's build, the fallbacks "unknown" and "02/02/2022".
OVMF_TYPE0_BODY = struct.pack(
    "<BBHBBQ2sBBBBH", 1, 2, 0xE800, 3, 0, 0x08, b"\x00\x1c", 0, 0, 0xFF, 0xFF, 0
)
OVMF_TYPE0_STRINGS = (b"EDK II", b"unknown", b"02/02/2022")
#: SmbiosDxe's end-of-table record: handle = GetMaxSmbiosHandle() (0xFEFF after SMBIOS 2.0).
END_OF_TABLE = _header(127, 4, 0xFEFF) + b"\0\0"
MAX_HANDLE = 0xFEFF


def ovmf_type0(handle: int) -> bytes:
    """OVMF's own BIOS Information structure."""
    return (
        _header(0, 4 + len(OVMF_TYPE0_BODY), handle)
        + OVMF_TYPE0_BODY
        + b"".join(s + b"\0" for s in OVMF_TYPE0_STRINGS)
        + b"\0"
    )


def ovmf_install(qemu_table: bytes) -> bytes:
    """The table SmbiosDxe publishes from QEMU's structures.

    InstallAllStructures (SmbiosPlatformDxe.c) adds every QEMU structure before the first
    Type 127, in order, keeping its handle; when QEMU gave no Type 0 it adds its own at the
    lowest free handle (GetAvailableSmbiosHandle). SmbiosDxe lists records in the order
    added and appends its end-of-table record (SmbiosCreate64BitTable / SmbiosCreateTable).
    """
    records: list[bytes] = []
    handles: set[int] = set()
    have_type0 = False
    ended = False
    for s in structures(qemu_table):
        if s.kind == 127:
            ended = True
            break
        if s.handle in handles or s.handle > MAX_HANDLE:
            raise SmbiosError(f"SMBIOS handle {s.handle:#06x} is used twice or reserved")
        handles.add(s.handle)
        have_type0 = have_type0 or s.kind == 0
        records.append(qemu_table[s.offset : s.offset + s.size])
    if not ended:
        raise SmbiosError("QEMU's SMBIOS table has no Type 127 end record")
    if not have_type0:
        free = next(h for h in range(MAX_HANDLE) if h not in handles)
        records.append(ovmf_type0(free))
    return b"".join(records) + END_OF_TABLE


# --- 3. SmbiosMeasurementDxe filters and hashes --------------------------------------------

_STRING = True
#: mSmbiosFilterStandardTableBlackList of edk2-stable202505: (offset, size, is a string) per
#: type; None zeroes everything after the header (as do types >= 128).
MEASUREMENT_FILTER: dict[int, tuple[tuple[int, int, bool], ...] | None] = {
    1: ((0x07, 1, _STRING), (0x08, 16, False), (0x18, 1, False)),
    2: ((0x07, 1, _STRING), (0x0A, 1, _STRING)),
    3: ((0x07, 1, _STRING), (0x08, 1, _STRING)),
    4: (
        (0x20, 1, _STRING),  # serial number
        (0x21, 1, _STRING),  # asset tag
        (0x22, 1, _STRING),  # part number
        (0x23, 1, False),  # core count
        (0x24, 1, False),  # enabled cores
        (0x25, 1, False),  # thread count
        (0x2A, 2, False),  # core count 2
        (0x2C, 2, False),  # enabled cores 2
        (0x2E, 2, False),  # thread count 2
        (0x11, 1, False),  # voltage
        (0x16, 2, False),  # current speed
    ),
    11: None,
    15: None,
    17: ((0x18, 1, _STRING), (0x19, 1, _STRING), (0x1A, 1, _STRING)),
    18: None,
    22: ((0x07, 1, _STRING), (0x10, 2, False), (0x12, 2, False)),
    23: ((0x05, 2, False),),
    27: ((0x0C, 2, False),),
    31: None,
    33: None,
    39: ((0x08, 1, _STRING), (0x09, 1, _STRING), (0x0A, 1, _STRING)),
}


def measured_length(table: bytes, max_len: int = MAX_STRING_V3) -> int:
    """GetSmbiosTableLength: the bytes through the first Type 127 (SmbiosDxe's end record)."""
    offset = 0
    while offset < len(table):
        walked = structure_strings(table, offset, max_len)
        if walked is None:
            break
        offset += walked[0]
        if table[offset - walked[0]] == 127:
            break
    return offset


def _filter_structure(buf: bytearray, offset: int, size: int, max_len: int) -> None:
    """FilterSmbiosEntry on the structure at ``offset`` (``size`` bytes with its strings)."""
    kind, length = buf[offset], buf[offset + 1]
    fields = MEASUREMENT_FILTER.get(kind, ()) if kind < 128 else None
    if fields is None:
        buf[offset + 4 : offset + size] = bytes(max(0, size - 4))
        return
    for field_offset, field_size, is_string in fields:
        if length < field_offset + field_size:
            continue  # "the field is present in the SMBIOS entry" check
        if is_string and buf[offset + field_offset]:
            string_id = buf[offset + field_offset]
            walked = structure_strings(bytes(buf), offset, max_len)
            strings = walked[1] if walked else []
            if not strings:
                raise SmbiosError(
                    f"SMBIOS Type {kind} at {offset:#x} names string {string_id} but has none"
                )
            # GetSmbiosStringById stops at the id-th string, or returns the last one.
            start, n = strings[min(string_id, len(strings)) - 1]
            buf[start : start + n] = b" " * n
        buf[offset + field_offset : offset + field_offset + field_size] = bytes(field_size)


def measured_table(table: bytes, max_len: int = MAX_STRING_V3) -> bytes:
    """What SmbiosMeasurementDxe hashes: the table through Type 127, filtered
    (MeasureSmbiosTable → FilterSmbiosTable). String fields it filters keep their length but
    become spaces, and their index byte becomes 0."""
    length = measured_length(table, max_len)
    buf = bytearray(table[:length])
    offset = 0
    while offset < length:
        walked = structure_strings(bytes(buf), offset, max_len)
        if walked is None:
            break
        size = walked[0]
        _filter_structure(buf, offset, size, max_len)
        offset += size
    return bytes(buf)


def max_string_length(entry_point: EntryPoint) -> int:
    return MAX_STRING_V3 if entry_point is EntryPoint.V3 else MAX_STRING_V2


# --- the event ---------------------------------------------------------------------------


@attrs.frozen
class SmbiosEvent:
    """The event and every table behind it, for printing and comparison."""

    inputs: SmbiosInputs
    entry_point: EntryPoint
    qemu_tables: bytes = attrs.field(repr=False)
    installed: bytes = attrs.field(repr=False)
    measured: bytes = attrs.field(repr=False)

    @property
    def digest(self) -> bytes:
        return sha384(self.measured)

    @property
    def table_guid(self) -> uuid.UUID:
        """The GUID the event's EFI_HANDOFF_TABLE_POINTERS payload names."""
        return self.entry_point.guid


def build_event(inputs: SmbiosInputs) -> SmbiosEvent:
    entry_point, parts = qemu_structures(inputs)
    qemu = b"".join(parts)
    installed = ovmf_install(qemu)
    return SmbiosEvent(
        inputs,
        entry_point,
        qemu,
        installed,
        measured_table(installed, max_string_length(entry_point)),
    )


def event_digest(inputs: SmbiosInputs) -> bytes:
    """SHA-384 of the filtered SMBIOS table: the event's RTMR0 digest."""
    return build_event(inputs).digest


def annotated_hex(table: bytes) -> str:
    """A hex dump of a table, one block per structure, each headed by what it is."""
    lines: list[str] = []
    for s in structures(table):
        strings = ", ".join(repr(x.decode("latin-1")) for x in s.strings) or "no strings"
        lines.append(
            f"# Type {s.kind} {s.name}, handle {s.handle:#06x}, formatted {s.length} bytes, "
            f"{strings}"
        )
        raw = table[s.offset : s.offset + s.size]
        for row in range(0, len(raw), 16):
            chunk = raw[row : row + 16]
            text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
            lines.append(f"{s.offset + row:04x}  {chunk.hex(' '):<47}  {text}")
    return "\n".join(lines)


# --- measuring a machine -----------------------------------------------------------------


def _host_cpu(value: object) -> str | None:
    if isinstance(value, HostCpu):
        return None
    return f"must be a HostCpu (see host_cpu.find_host_cpu), got {value!r}"


@attrs.frozen
class SmbiosOptions:
    """What computing a machine's SMBIOS event assumes beyond the machine itself (which gives
    memory, QEMU version and vCPUs): the host CPU and the ``-smbios type=1`` strings."""

    host_cpu: HostCpu = attrs.field(default=DEFAULT_HOST_CPU, validator=_V(_host_cpu, "host_cpu"))
    manufacturer: str | None = attrs.field(
        default=DSTACK_MANUFACTURER, validator=_V(validate.optional(_smbios_string), "manufacturer")
    )
    product: str | None = attrs.field(
        default=DSTACK_PRODUCT, validator=_V(validate.optional(_smbios_string), "product")
    )

    def inputs(
        self, memory_size: int, qemu_version: tuple[int, int, int], cpu_count: int = 1
    ) -> SmbiosInputs:
        return SmbiosInputs(
            qemu_version=qemu_version,
            memory_size=memory_size,
            manufacturer=self.manufacturer,
            product=self.product,
            cpuid_eax=self.host_cpu.eax,
            cpuid_edx=self.host_cpu.edx,
            cpu_count=max(1, min(cpu_count, 0xFFFF)),
        )


def computed_note(inputs: SmbiosInputs) -> str:
    return (
        "RTMR0 event 13 ('variable_authority') is the SMBIOS handoff-table event, computed "
        f"from QEMU's SMBIOS tables assuming {inputs.describe()}."
    )
