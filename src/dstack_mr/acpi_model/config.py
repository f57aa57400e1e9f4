"""The machine the model builds tables for, read from the dumper's QEMU command line.

The model takes exactly what :func:`dstack_mr.acpi.dumper_invocation` gives the dumper (argv
and ``QEMU_ACPI_COMPAT_VER``), so any AcpiSource sees the same input. Only the options that
command line uses are understood; anything else is refused rather than guessed.
"""

from __future__ import annotations

import re

import attrs

from ..errors import ConfigError

#: Endpoint devices the dumper adds; none of them carries AML of its own and all are
#: hot-pluggable, so only their slot matters to the tables.
ENDPOINTS = frozenset(
    {"virtio-blk-pci", "virtio-net-pci", "vhost-vsock-pci", "virtio-9p-pci", "vfio-pci",
     "virtio-rng-pci"}
)  # fmt: skip
MAX_CPUS = 255  # q35 with xAPIC ids below 255 (x2APIC/_UID devices are not modelled)
MIB = 1 << 20


@attrs.frozen
class PciDevice:
    """One -device on a PCI bus, in command-line order."""

    driver: str
    bus: str  # "pcie.0", "pcie.node0" or a root port id
    id: str = ""
    addr: int | None = None  # explicit slot
    bus_nr: int | None = None  # pxb-pcie only


@attrs.frozen
class MachineConfig:
    """What the ACPI tables depend on."""

    cpu_count: int
    memory_mb: int
    smm: bool
    pic: bool
    numa: bool  # -numa node (hugepages): SRAT, _PXM
    hotplug: bool  # ICH9-LPC.acpi-pci-hotplug-with-bridge-support
    pci_hole64_size: int | None
    devices: tuple[PciDevice, ...]
    compat_version: tuple[int, int, int] | None = None

    @property
    def memory_size(self) -> int:
        return self.memory_mb * MIB


_KV = re.compile(r"([^,=]+)(?:=([^,]*))?")


def _options(value: str) -> tuple[str, dict[str, str]]:
    first, _, rest = value.partition(",")
    opts = {m.group(1): m.group(2) or "" for m in _KV.finditer(rest)} if rest else {}
    return first, opts


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ConfigError(f"dumper argv: {what} {text!r} is not an integer") from None


def _pci_slot(text: str) -> int:
    """QEMU's PCI ``addr`` property: ``slot[.function]`` in hex (function 0 only here)."""
    slot, _, func = text.partition(".")
    try:
        value = int(slot, 16)
    except ValueError:
        raise ConfigError(f"dumper argv: PCI addr {text!r} is not hex") from None
    if func not in ("", "0") or not 0 <= value < 32:
        raise ConfigError(f"dumper argv: PCI addr {text!r} is not a slot 0-0x1f, function 0")
    return value


def parse_compat(text: str) -> tuple[int, int, int] | None:
    """QEMU_ACPI_COMPAT_VER as the fork parses it (three non-negative decimal parts)."""
    if not text:
        return None
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"QEMU_ACPI_COMPAT_VER {text!r} is not X.Y.Z")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def from_argv(argv: tuple[str, ...] | list[str], compat_ver: str = "") -> MachineConfig:
    """Read the machine from the dumper argv; refuse options the model does not know."""
    cpu = mem = None
    smm = pic = numa = False
    hotplug = True
    hole64: int | None = None
    devices: list[PciDevice] = []
    machine_seen = False
    i = 0
    args = list(argv)

    def value() -> str:
        if i + 1 >= len(args):
            raise ConfigError(f"dumper argv: {args[i]} has no value")
        return args[i + 1]

    while i < len(args):
        opt = args[i]
        if opt in ("-nographic", "-nodefaults"):
            i += 1
            continue
        v = value()
        if opt == "-smp":
            cpu = _int(v, "-smp")
        elif opt == "-m":
            if not v.endswith("M"):
                raise ConfigError(f"dumper argv: -m {v!r} is not in MiB")
            mem = _int(v[:-1], "-m")
        elif opt == "-machine":
            kind, o = _options(v)
            if kind != "q35":
                raise ConfigError(f"dumper argv: machine {kind!r} is not q35")
            smm = o.get("smm") == "on"
            pic = o.get("pic", "on") == "on"
            if o.get("hpet", "on") != "off":
                raise ConfigError("dumper argv: the model covers hpet=off only")
            machine_seen = True
        elif opt == "-numa":
            numa = True
        elif opt == "-device":
            driver, o = _options(v)
            bus = o.get("bus", "pcie.0")
            addr = _pci_slot(o["addr"]) if "addr" in o else None
            if driver == "pxb-pcie":
                bus_nr = _int(o.get("bus_nr", ""), "pxb-pcie bus_nr")
                if not 1 <= bus_nr <= 255:
                    raise ConfigError(f"dumper argv: pxb-pcie bus_nr {bus_nr} is not 1-255")
                devices.append(PciDevice(driver, bus, o.get("id", ""), addr, bus_nr))
            elif driver == "pcie-root-port" or driver in ENDPOINTS:
                devices.append(PciDevice(driver, bus, o.get("id", ""), addr))
            else:
                raise ConfigError(f"dumper argv: device {driver!r} is not modelled")
        elif opt == "-virtfs":
            devices.append(PciDevice("virtio-9p-pci", "pcie.0"))
        elif opt == "-global":
            if v == "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off":
                hotplug = False
            elif v.startswith("q35-pcihost.pci-hole64-size="):
                hole64 = _int(v.split("=", 1)[1], "pci-hole64-size")
            else:
                raise ConfigError(f"dumper argv: -global {v!r} is not modelled")
        elif opt in (
            "-cpu", "-serial", "-bios", "-kernel", "-initrd", "-drive", "-netdev", "-object",
            "-cdrom",
        ):  # fmt: skip
            pass  # no table depends on these (the -cdrom disk hangs off the built-in AHCI)
        else:
            raise ConfigError(f"dumper argv: option {opt!r} is not modelled")
        i += 2
    if cpu is None or mem is None or not machine_seen:
        raise ConfigError("dumper argv lacks -smp, -m or -machine")
    return MachineConfig(
        cpu_count=cpu,
        memory_mb=mem,
        smm=smm,
        pic=pic,
        numa=numa,
        hotplug=hotplug,
        pci_hole64_size=hole64,
        devices=tuple(devices),
        compat_version=parse_compat(compat_ver),
    )
