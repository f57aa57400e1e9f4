"""The PCI tree QEMU builds from the command line (buses, bridges, hotplug selectors).

Which slot each device gets is :func:`dstack_mr.pci_slots.assign_slots`'s answer (the one
home of q35's slot accounting, which ``Machine`` also checks its device counts with). A
pcie-root-port or pxb-pcie creates a bus the later -devices may name. QEMU links child
buses at the head of their parent's list, so walking ``children`` gives the newest bus
first, as QEMU's QLIST_FOREACH does.
"""

from __future__ import annotations

import attrs

from ..pci_slots import CHIPSET, EXPANDER, ROOT_BUS, ROOT_PORT, assign_slots
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

    def place(self, dev: Dev) -> None:
        # pci_slots.assign_slots gave each device a free slot (it raises where QEMU would)
        assert dev.devfn not in self.devices, (self.name, dev.devfn)
        self.devices[dev.devfn] = dev


@attrs.define
class Topology:
    root: Bus
    buses: dict[str, Bus]

    def expander_buses(self) -> list[Bus]:
        return [b for b in self.root.children if b.is_root]


def build_topology(cfg: MachineConfig) -> Topology:
    root = Bus(ROOT_BUS, 0, is_root=True)
    for driver, devfn, has_aml in CHIPSET:
        root.place(Dev(driver, devfn, hotpluggable=False, has_aml=has_aml))
    buses = {ROOT_BUS: root}
    for d, slot in zip(cfg.devices, assign_slots(cfg.devices), strict=True):
        bus = buses[d.bus]
        devfn = slot << 3
        dev = Dev(d.driver, devfn, hotpluggable=d.driver != EXPANDER)
        bus.place(dev)
        if d.driver == ROOT_PORT:
            sec = Bus(d.id, parent_devfn=devfn)
            dev.secondary = sec
            bus.children.insert(0, sec)
            buses[d.id] = sec
        elif d.driver == EXPANDER:
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
