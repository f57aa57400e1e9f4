"""Which PCI slot QEMU's q35 gives each ``-device`` of a command line (the one slot count).

q35 places its chipset at fixed functions (MCH 00.0, ICH9 LPC 1f.0, AHCI 1f.2, SMBus 1f.3);
every other -device takes the first free slot of its bus in command-line order unless it
names one (``addr=``), and QEMU refuses to start when none is left or the named one is taken.
A pcie-root-port's secondary bus has slot 0 only; a pxb-pcie creates a root bus of 32 slots.
Devices here are single-function, so a slot is used up by one device.

Light on purpose: :class:`~dstack_mr.machine.Machine` checks its device counts with it at
construction (on the ``measure`` start-up path), and the ACPI model's topology lays out its
buses with the same function.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from .errors import ConfigError

ROOT_BUS = "pcie.0"
SLOTS_PER_BUS = 32
#: q35's built-in functions on pcie.0: (driver, devfn, contributes AML of its own)
CHIPSET = (("mch", 0x00, False), ("ICH9-LPC", 0xF8, True), ("ich9-ahci", 0xFA, False),
           ("ICH9-SMB", 0xFB, True))  # fmt: skip
ROOT_PORT = "pcie-root-port"
EXPANDER = "pxb-pcie"


@attrs.frozen
class PciDevice:
    """One -device on a PCI bus, in command-line order."""

    driver: str
    bus: str  # "pcie.0", "pcie.node0" or a root port id
    id: str = ""
    addr: int | None = None  # explicit slot
    bus_nr: int | None = None  # pxb-pcie only


#: The PCI device ``-virtfs`` adds (QEMU builds a virtio-9p-pci on the root bus for it).
VIRTFS_DEVICE = PciDevice("virtio-9p-pci", ROOT_BUS)


class SlotError(ConfigError):
    """The devices do not fit the slots of ``bus``: QEMU would refuse to start.

    ``need`` devices compete for ``free`` slots of ``bus``: all devices on a full bus, or,
    when ``pinned`` (a device's ``addr=`` slot) was taken first, the devices placed before it
    for the free slots below it.
    """

    def __init__(self, message: str, bus: str, need: int, free: int, pinned: int | None) -> None:
        super().__init__(message)
        self.bus, self.need, self.free, self.pinned = bus, need, free, pinned


def _chipset_slots(bus: str) -> set[int]:
    return {devfn >> 3 for _, devfn, _ in CHIPSET} if bus == ROOT_BUS else set()


def free_slots(bus: str, below: int = SLOTS_PER_BUS, one_slot: bool = False) -> int:
    """Slots of ``bus`` below ``below`` that the chipset leaves to -devices."""
    top = 1 if one_slot else min(below, SLOTS_PER_BUS)
    return sum(1 for s in range(top) if s not in _chipset_slots(bus))


def assign_slots(devices: Sequence[PciDevice]) -> tuple[int, ...]:
    """The slot QEMU gives each device, in order; :class:`SlotError` where QEMU would refuse."""
    used: dict[str, set[int]] = {ROOT_BUS: _chipset_slots(ROOT_BUS)}
    one_slot: set[str] = set()
    slots: list[int] = []
    for i, d in enumerate(devices):
        taken = used.get(d.bus)
        if taken is None:
            raise ConfigError(f"dumper argv: -device {d.driver} names unknown bus {d.bus!r}")
        limit = 1 if d.bus in one_slot else SLOTS_PER_BUS
        if d.addr is not None:
            slot = d.addr
            if slot >= limit:
                raise ConfigError(f"PCIe port bus {d.bus} has a single slot")
            if slot in taken:
                before = [e for e in devices[:i] if e.bus == d.bus and e.addr is None]
                raise SlotError(
                    f"PCI address {slot:#x}.0 on {d.bus} is taken: {d.driver} is pinned there "
                    f"but the {len(before)} devices before it fill the slots up to it, so QEMU "
                    "cannot start this machine",
                    d.bus, len(before), free_slots(d.bus, slot), slot,
                )  # fmt: skip
        else:
            slot = next((s for s in range(limit) if s not in taken), -1)
            if slot < 0:
                on_bus = sum(1 for e in devices if e.bus == d.bus)
                free = free_slots(d.bus, one_slot=d.bus in one_slot)
                raise SlotError(
                    f"no free PCI slot left on {d.bus}: the argv puts {on_bus} devices on its "
                    f"{free} free slots, so QEMU cannot start this machine "
                    "(too many devices, GPUs or NVSwitches)",
                    d.bus, on_bus, free, None,
                )  # fmt: skip
        taken.add(slot)
        slots.append(slot)
        if d.driver in (ROOT_PORT, EXPANDER):
            used[d.id] = set()
            if d.driver == ROOT_PORT:
                one_slot.add(d.id)
    return tuple(slots)


_KV = re.compile(r"([^,=]+)(?:=([^,]*))?")


def device_options(value: str) -> tuple[str, dict[str, str]]:
    """A ``-device`` (or ``-machine``) value: its first word and its key=value options."""
    first, _, rest = value.partition(",")
    opts = {m.group(1): m.group(2) or "" for m in _KV.finditer(rest)} if rest else {}
    return first, opts


def pci_slot(text: str) -> int:
    """QEMU's PCI ``addr`` property: ``slot[.function]`` in hex (function 0 only here)."""
    slot, _, func = text.partition(".")
    try:
        value = int(slot, 16)
    except ValueError:
        raise ConfigError(f"dumper argv: PCI addr {text!r} is not hex") from None
    if func not in ("", "0") or not 0 <= value < SLOTS_PER_BUS:
        raise ConfigError(f"dumper argv: PCI addr {text!r} is not a slot 0-0x1f, function 0")
    return value


def parse_device(value: str) -> PciDevice:
    """One ``-device`` value as a PciDevice (the bus number is read for pxb-pcie only)."""
    driver, o = device_options(value)
    addr = pci_slot(o["addr"]) if "addr" in o else None
    bus_nr = None
    if driver == EXPANDER:
        text = o.get("bus_nr", "")
        try:
            bus_nr = int(text, 0)
        except ValueError:
            raise ConfigError(f"dumper argv: pxb-pcie bus_nr {text!r} is not an integer") from None
    return PciDevice(driver, o.get("bus", ROOT_BUS), o.get("id", ""), addr, bus_nr)


#: QEMU options of the dumper argv that take no value
_FLAGS = frozenset({"-nographic", "-nodefaults"})


def devices_in_argv(argv: Sequence[str]) -> tuple[PciDevice, ...]:
    """The PCI devices of a QEMU argv in order (``-device``, and ``-virtfs``'s virtio-9p-pci)."""
    out: list[PciDevice] = []
    i = 0
    while i < len(argv):
        opt = argv[i]
        if opt in _FLAGS:
            i += 1
            continue
        if opt == "-device" and i + 1 < len(argv):
            out.append(parse_device(argv[i + 1]))
        elif opt == "-virtfs":
            out.append(VIRTFS_DEVICE)
        i += 2
    return tuple(out)
