"""Device counts a Machine accepts: exactly those QEMU finds a PCI slot for (issue 11 item 3).

The dumper argv gives no ``addr=`` (but the hugepages expander's), so QEMU gives every device
the first free slot of its bus; pcie.0 has 30 beside the q35 chipset. The edges below were
found against stock QEMU, which the live test repeats when it is installed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import stock_qemu_dumper
from typer.testing import CliRunner

from dstack_mr import ConfigError, Machine, VmConfig, acpi, pci_slots
from dstack_mr.acpi_model import QemuAcpiModel, tables_for
from dstack_mr.config import OvmfVariant
from dstack_mr.example import write_example_image
from dstack_mr.image import vm_machine
from dstack_mr_cli.main import app

GIB = 1 << 30

#: (the largest machine that fits, one device more, the start of its refusal)
EDGES: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    (
        {"num_gpus": 25},
        {"num_gpus": 26},
        "num_gpus 26 + num_nics 1 need 27 PCI slots on pcie.0; 26 are free (q35 leaves 30 "
        "there beside its chipset and this machine's other devices take 4)",
    ),
    (
        {"num_gpus": 10, "num_nics": 10, "num_verity_volumes": 6},
        {"num_gpus": 10, "num_nics": 10, "num_verity_volumes": 7},
        "num_gpus 10 + num_nics 10 + num_verity_volumes 7 need 27 PCI slots on pcie.0; 26 are free",
    ),
    (
        {"num_nics": 27, "root_verity": False},  # hd0 becomes a -cdrom on the chipset's AHCI
        {"num_nics": 28, "root_verity": False},
        "num_nics 28 need 28 PCI slots on pcie.0; 27 are free",
    ),
    (
        {"num_nics": 10, "num_verity_volumes": 1, "hugepages": True, "num_gpus": 1},
        {"num_nics": 11, "num_verity_volumes": 1, "hugepages": True, "num_gpus": 1},
        "num_nics 11 + num_verity_volumes 1 need 12 PCI slots on pcie.0 below slot 0x10, where "
        "hugepages pins the GPUs' pxb-pcie expander; 11 are free (q35 leaves 15 there",
    ),
    (
        {"hugepages": True, "num_gpus": 32, "num_nvswitches": 24},
        {"hugepages": True, "num_gpus": 33, "num_nvswitches": 24},
        "num_gpus 33 need 33 PCI slots on pcie.node0; 32 are free (the bus has 32)",
    ),
    (
        {"hugepages": True, "num_gpus": 32, "num_nvswitches": 24},
        {"hugepages": True, "num_gpus": 32, "num_nvswitches": 25},
        "num_nvswitches 25 + num_nics 1 need 26 PCI slots on pcie.0; 25 are free (q35 leaves "
        "30 there beside its chipset and this machine's other devices take 5)",
    ),
    (
        {"hugepages": True, "num_nvswitches": 25},  # no GPU: no expander either
        {"hugepages": True, "num_nvswitches": 26},
        "num_nvswitches 26 + num_nics 1 need 27 PCI slots on pcie.0; 26 are free",
    ),
]


def machine(files: dict[str, str] | None = None, **kw: Any) -> Machine:
    paths = files or {"firmware": "f", "kernel": "k", "initrd": "i"}
    return Machine(cpu_count=2, memory_size=2 * GIB, kernel_cmdline="", **paths, **kw)


@pytest.fixture(scope="module")
def example_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("img")
    write_example_image(d)
    return {"firmware": str(d / "ovmf.fd"), "kernel": str(d / "bzImage"),
            "initrd": str(d / "initramfs.cpio.gz")}  # fmt: skip


@pytest.mark.parametrize(("fits", "past", "message"), EDGES)
def test_largest_fitting_machine_measures_and_one_more_is_refused(
    example_files: dict[str, str], fits: dict[str, Any], past: dict[str, Any], message: str
) -> None:
    details = machine(example_files, **fits).measure_with_logs(QemuAcpiModel())
    assert details.acpi_tables.source == "builtin"
    assert len(details.measurements.rtmr0) == 48
    for hotplug_off in (False, True):  # hotplug adds no device
        with pytest.raises(ConfigError, match=re.escape(message)):
            machine(hotplug_off=hotplug_off, **past)


@pytest.mark.parametrize("version", ["8.0.0", "9.1.0", "9.2.1", "10.1.0"])
def test_the_limit_does_not_follow_the_qemu_version(version: str) -> None:
    """The argv always asks for a plain q35: the version changes the ACPI compat, not slots."""
    assert machine(qemu_version=version, num_gpus=25).num_gpus == 25
    with pytest.raises(ConfigError, match=r"need 27 PCI slots on pcie.0; 26 are free"):
        machine(qemu_version=version, num_gpus=26)


@pytest.mark.parametrize("mode", acpi.SHARE_MODES)
@pytest.mark.parametrize(("fits", "past", "message"), EDGES)
def test_every_host_share_mode_takes_one_slot(
    mode: str, fits: dict[str, Any], past: dict[str, Any], message: str
) -> None:
    """vhd/vvfat add hd2's virtio-blk-pci, 9p the -virtfs virtio-9p-pci: one pcie.0 slot each,
    so no count fits with one mode and not with another (the slot check is keyed on it)."""
    assert machine(host_share_mode=mode, **fits).host_share_mode == mode
    with pytest.raises(ConfigError, match=re.escape(message)):
        machine(host_share_mode=mode, **past)


@pytest.mark.parametrize(
    "change",
    [
        {"cpu_count": 64},
        {"memory_size": 64 * GIB},
        {"smm": True},
        {"pic": True},
        {"qemu_version": "8.2.2"},
        {"hotplug_off": True},
        {"pci_hole64_size": 1 << 40},
        {"firmware": "-device", "kernel": "-virtfs", "initrd": "x"},
    ],
)
@pytest.mark.parametrize("layout", [fits for fits, _past, _message in EDGES])
def test_settings_outside_the_slot_check_add_no_device(
    change: dict[str, Any], layout: dict[str, Any]
) -> None:
    """The slot check is cached on the settings that change the device list; every other
    setting leaves the argv's PCI devices as they are."""
    kw: dict[str, Any] = {"cpu_count": 2, "memory_size": 2 * GIB, "kernel_cmdline": ""}
    kw.update({"firmware": "f", "kernel": "k", "initrd": "i"}, **layout)
    base = Machine(**kw).dumper_invocation().argv
    changed = Machine(**{**kw, **change}).dumper_invocation().argv
    assert base != changed
    assert pci_slots.devices_in_argv(changed) == pci_slots.devices_in_argv(base)


def test_swtpm_is_still_refused_only_where_tables_are_measured() -> None:
    m = machine(swtpm=True, num_gpus=25)  # the slot check ignores swtpm (no device of its own)
    with pytest.raises(ConfigError, match="swtpm is true"):
        m.dumper_invocation()


def test_vm_config_path_refuses_at_machine_construction() -> None:
    vm = VmConfig.from_json({"cpu_count": 2, "memory_size": 2 * GIB, "num_gpus": 100})
    with pytest.raises(ConfigError, match=r"num_gpus 100 \+ num_nics 1 need 101 PCI slots"):
        vm_machine(vm, ovmf_variant=OvmfVariant.PRE202505)
    fits = VmConfig.from_json({"cpu_count": 2, "memory_size": 2 * GIB, "num_gpus": 25})
    assert vm_machine(fits, ovmf_variant=OvmfVariant.PRE202505).num_gpus == 25


def test_cli_num_gpus_100_is_a_one_line_usage_error(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    result = CliRunner().invoke(
        app, ["measure", "--acpi-source", "builtin", "--num-gpus", "100", str(meta)]
    )
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert line.startswith("error: num_gpus 100 + num_nics 1 need 101 PCI slots on pcie.0")
    assert "26 are free" in line and "Traceback" not in result.output


def test_the_model_lays_out_with_the_same_accounting() -> None:
    """The ACPI model refuses an argv built past the edge (no Machine involved) the same way."""
    argv = acpi.dumper_invocation(
        cpu_count=1, memory_size=GIB, firmware="f", kernel="k", root_verity=True, smm=False,
        pic=False, qemu_version=(9, 1, 0), hugepages=False, num_gpus=26, num_nvswitches=0,
        hotplug_off=False, pci_hole64_size=None, host_share_mode="",
    ).argv  # fmt: skip
    with pytest.raises(pci_slots.SlotError, match=r"no free PCI slot left on pcie.0") as exc:
        tables_for(acpi.DumperInvocation(argv, "9.1.0"))
    assert (exc.value.bus, exc.value.need, exc.value.free) == ("pcie.0", 31, 30)


def test_slot_assignment_follows_qemu() -> None:
    dev = pci_slots.PciDevice
    slots = pci_slots.assign_slots(
        [dev("virtio-blk-pci", "pcie.0"), dev("pxb-pcie", "pcie.0", "pcie.node0", 0x10, 5),
         dev("pcie-root-port", "pcie.node0", "pci.0"), dev("vfio-pci", "pci.0"),
         dev("virtio-net-pci", "pcie.0")]
    )  # fmt: skip
    assert slots == (1, 0x10, 0, 0, 2)
    assert pci_slots.free_slots("pcie.0") == 30 and pci_slots.free_slots("pcie.node0") == 32
    with pytest.raises(ConfigError, match="single slot"):
        pci_slots.assign_slots([dev("pcie-root-port", "pcie.0", "p"), dev("vfio-pci", "p", addr=1)])
    with pytest.raises(ConfigError, match="unknown bus 'nope'"):
        pci_slots.assign_slots([dev("vfio-pci", "nope")])


def _dump_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    names = {"num_gpus": "gpus", "num_nvswitches": "nvswitches", "num_nics": "nics",
             "num_verity_volumes": "volumes"}  # fmt: skip
    return {"cpu": 2, "mem_mb": 2048, **{names.get(k, k): v for k, v in kw.items()}}


@pytest.mark.parametrize(("fits", "past", "message"), EDGES)
def test_edges_against_stock_qemu(fits: dict[str, Any], past: dict[str, Any], message: str) -> None:
    """QEMU starts the largest machine (with the model's tables) and refuses one more."""
    qemu = stock_qemu_dumper()
    blobs = qemu.dump(**_dump_kwargs(fits))
    argv, _ = qemu.dstack_argv(**_dump_kwargs(fits), stock=False)
    assert tables_for(acpi.DumperInvocation(tuple(argv), "9.1.0"), "stock-7.2") == blobs["tables"]
    with pytest.raises(Exception, match=r"PCI: (no slot/function available|slot 16 function 0)"):
        qemu.dump(**_dump_kwargs(past))
