"""The PCI tree QEMU builds from the command line (slot assignment, buses, bridges).

q35 places its chipset at fixed functions (MCH 00.0, ICH9 LPC 1f.0, AHCI 1f.2, SMBus 1f.3);
every other -device takes the first free slot of its bus in command-line order unless it
names one (``addr=``). A pcie-root-port or pxb-pcie creates a bus the later -devices may name.
QEMU links child buses at the head of their parent's list, so walking ``children`` gives the
newest bus first, as QEMU's QLIST_FOREACH does.
"""

from __future__ import annotations

import attrs

from ..errors import ConfigError
from .config import MachineConfig


@attrs.define
class Dev:
    driver: str
    devfn: int
    hotpluggable: bool = True
    has_aml: bool = False  # the device contributes AML of its own (call_dev_aml_func)
    secondary: Bus | None = None  # bridges only

    @property
    def is_bridge(self) -> bool:
        return self.driver == "pcie-root-port"

    @property
    def slot(self) -> int:
        return self.devfn >> 3

    @property
    def func(self) -> int:
        return self.devfn & 7


@attrs.define
class Bus:
    name: str
    number: int = 0
    is_root: bool = False
    parent_devfn: int | None = None  # devfn of the bridge that owns it
    devices: dict[int, Dev] = attrs.Factory(dict)
    children: list[Bus] = attrs.Factory(list)
    bsel: int | None = None
    one_slot: bool = False  # a root port's secondary bus: slot 0 only

    def place(self, dev: Dev) -> None:
        if dev.devfn in self.devices:
            raise ConfigError(
                f"PCI address {dev.devfn >> 3:#x}.{dev.devfn & 7} on {self.name} is taken"
            )
        self.devices[dev.devfn] = dev

    def first_free_devfn(self) -> int:
        for devfn in range(0, 256 if not self.one_slot else 8, 8):
            if devfn not in self.devices:
                return devfn
        raise ConfigError(
            f"no free PCI slot left on {self.name}: QEMU cannot start this machine "
            "(too many devices, GPUs or NVSwitches)"
        )


@attrs.define
class Topology:
    root: Bus
    buses: dict[str, Bus]

    def expander_buses(self) -> list[Bus]:
        return [b for b in self.root.children if b.is_root]


def build_topology(cfg: MachineConfig) -> Topology:
    root = Bus("pcie.0", 0, is_root=True)
    root.place(Dev("mch", 0x00, hotpluggable=False))
    root.place(Dev("ICH9-LPC", 0xF8, hotpluggable=False, has_aml=True))
    root.place(Dev("ich9-ahci", 0xFA, hotpluggable=False))
    root.place(Dev("ICH9-SMB", 0xFB, hotpluggable=False, has_aml=True))
    buses = {"pcie.0": root}
    for d in cfg.devices:
        bus = buses.get(d.bus)
        if bus is None:
            raise ConfigError(f"dumper argv: -device {d.driver} names unknown bus {d.bus!r}")
        devfn = d.addr << 3 if d.addr is not None else bus.first_free_devfn()
        if bus.one_slot and devfn >= 8:
            raise ConfigError(f"PCIe port bus {bus.name} has a single slot")
        dev = Dev(d.driver, devfn, hotpluggable=d.driver != "pxb-pcie")
        bus.place(dev)
        if d.driver == "pcie-root-port":
            sec = Bus(d.id, parent_devfn=devfn, one_slot=True)
            dev.secondary = sec
            bus.children.insert(0, sec)
            buses[d.id] = sec
        elif d.driver == "pxb-pcie":
            assert d.bus_nr is not None
            sec = Bus(d.id, d.bus_nr, is_root=True, parent_devfn=devfn)
            bus.children.insert(0, sec)
            buses[d.id] = sec
    if cfg.hotplug:
        # acpi_set_bsel over the tree depth first; only bridge buses accept hotplug (the
        # q35 root and expander buses have no ACPI hotplug handler)
        counter = [0]

        def assign(bus: Bus) -> None:
            if not bus.is_root:
                bus.bsel = counter[0]
                counter[0] += 1
            for child in bus.children:
                assign(child)

        assign(root)
    return Topology(root, buses)
