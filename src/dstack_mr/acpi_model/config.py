"""The machine the model builds tables for, read from the dumper's QEMU command line.

The model takes exactly what :func:`dstack_mr.acpi.dumper_invocation` gives the dumper (argv
and ``QEMU_ACPI_COMPAT_VER``), so any AcpiSource sees the same input. Only the options that
command line uses are understood; anything else is refused rather than guessed.
"""

from __future__ import annotations

import attrs

from ..errors import ConfigError
from ..pci_slots import EXPANDER, ROOT_PORT, VIRTFS_DEVICE, device_options, parse_device
from ..pci_slots import PciDevice as PciDevice  # re-exported: the model's device type

#: Endpoint devices the dumper adds; none of them carries AML of its own and all are
#: hot-pluggable, so only their slot matters to the tables.
ENDPOINTS = frozenset(
    {"virtio-blk-pci", "virtio-net-pci", "vhost-vsock-pci", "virtio-9p-pci", "vfio-pci",
     "virtio-rng-pci"}
)  # fmt: skip
MAX_CPUS = 255  # q35 with xAPIC ids below 255 (x2APIC/_UID devices are not modelled)
MIB = 1 << 20


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


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ConfigError(f"dumper argv: {what} {text!r} is not an integer") from None


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
            kind, o = device_options(v)
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
            dev = parse_device(v)
            if dev.driver == EXPANDER:
                assert dev.bus_nr is not None
                if not 1 <= dev.bus_nr <= 255:
                    raise ConfigError(f"dumper argv: pxb-pcie bus_nr {dev.bus_nr} is not 1-255")
            elif dev.driver != ROOT_PORT and dev.driver not in ENDPOINTS:
                raise ConfigError(f"dumper argv: device {dev.driver!r} is not modelled")
            devices.append(dev)
        elif opt == "-virtfs":
            devices.append(VIRTFS_DEVICE)
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
