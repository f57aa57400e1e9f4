"""Boundaries and overrides pinned without ../shared, against values derived independently.

Every expected value here comes from SPEC.md's description turned into a few lines of test
code (the TD HOB, MRTD's record stream, the kernel's initrd address, Authenticode) applied to
the synthetic image of :mod:`dstack_mr.example`, or from the reference's recorded dumper calls
(tests/data/dumper_argv.json, copied from ../shared/vectors) -- never from the library itself.
So each of them still fails when ../shared is absent and the golden vectors skip.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeDumper
from spec_model import (
    SPLIT,
    spec_acpi,
    spec_authenticode,
    spec_events,
    spec_initrd_address,
    spec_mrtd,
    spec_registers,
    spec_td_hob,
)
from typer.testing import CliRunner

from dstack_mr import Machine, VmConfig, acpi, example, kernel, tdvf
from dstack_mr.errors import ConfigError, FirmwareError
from dstack_mr_cli.main import app

DATA = Path(__file__).resolve().parent / "data"
MIB, GIB = 1 << 20, 1 << 30
H = hashlib.sha384


# --- the image --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return example.write_example_image(tmp_path_factory.mktemp("boundaries") / "img").parent


def machine(image_dir: Path, **kw: Any) -> Machine:
    meta = json.loads((image_dir / "metadata.json").read_text())
    kw.setdefault("cpu_count", 2)
    kw.setdefault("memory_size", 2 * GIB)
    return Machine(
        firmware=str(image_dir / meta["bios"]),
        kernel=str(image_dir / meta["kernel"]),
        initrd=str(image_dir / meta["initrd"]),
        kernel_cmdline=meta["cmdline"] + " initrd=initrd",
        **kw,
    )


def measure(image_dir: Path, **kw: Any) -> Any:
    return machine(image_dir, **kw).measure_with_logs(
        acpi.AcpiTablesFile(image_dir / "acpi-tables.bin")
    )


# --- TD HOB: the split at exactly 0xB0000000 --------------------------------------------------


@pytest.mark.parametrize(
    "memory_size",
    [SPLIT - MIB, SPLIT - 0x1000, SPLIT - 1, SPLIT, SPLIT + 0x1000, SPLIT + MIB, 2 * GIB, 4 * GIB],
)
def test_td_hob_split_at_0xb0000000(memory_size: int) -> None:
    parsed = tdvf.parse(example.build_firmware())
    assert parsed.td_hob(memory_size) == spec_td_hob(memory_size)
    assert parsed.td_hob_digest(memory_size) == H(spec_td_hob(memory_size)).digest()


def test_td_hob_is_rtmr0_event_0_at_the_split(image_dir: Path) -> None:
    for memory_size, resources in ((SPLIT - MIB, 8), (SPLIT, 9)):
        details = measure(image_dir, memory_size=memory_size)
        want = spec_td_hob(memory_size)
        assert len(want) == 56 + 48 * resources
        assert details.rtmr_logs[0].events[0].digest == H(want).digest()


# --- kernel: QEMU's initrd placement at 2.75 GiB ----------------------------------------------


@pytest.mark.parametrize("memory_size", [SPLIT - MIB, SPLIT - 0x1000, SPLIT, SPLIT + MIB, 4 * GIB])
@pytest.mark.parametrize("initrd_size", [1, 0x1234567])
def test_initrd_address_at_2_75_gib(memory_size: int, initrd_size: int) -> None:
    kd = example.build_kernel()
    want = spec_initrd_address(initrd_size, memory_size)
    assert kernel.initrd_address(kd, initrd_size, memory_size) == want
    patched = kernel.patch(kd, initrd_size, memory_size)
    assert struct.unpack_from("<II", patched, 0x218) == (want, initrd_size)
    # QEMU's other setup-header writes (boot protocol 2.15, LOADED_HIGH set): loader type
    # 0xB0, CAN_USE_HEAP, heap_end 0x20000 - 0x10000 - 0x200, cmd_line_ptr 0x20000.
    assert patched[0x210] == 0xB0 and patched[0x211] == 0x81
    assert struct.unpack_from("<I", patched, 0x224)[0] == 0xFE00
    assert struct.unpack_from("<I", patched, 0x228)[0] == 0x20000
    assert patched[:0x210] == kd[:0x210] and patched[0x22C:] == kd[0x22C:]


def test_initrd_address_differs_across_the_boundary() -> None:
    # One MiB below the split, low RAM ends at memory_size; at the split, at 2 GiB.
    assert spec_initrd_address(1, SPLIT - MIB) == 0xAFED_7000
    assert spec_initrd_address(1, SPLIT) == 0x7FFD_7000
    assert spec_initrd_address(1, 4 * GIB) == 0x7FFD_7000


def test_kernel_authenticode_is_rtmr1_event_0_at_the_boundary(image_dir: Path) -> None:
    kd = example.build_kernel()
    initrd_size = len(example.build_initrd())
    for memory_size in (SPLIT - MIB, SPLIT, 4 * GIB):
        patched = bytearray(kd)
        patched[0x210] = 0xB0
        patched[0x211] |= 0x80
        patched[0x224:0x228] = (0xFE00).to_bytes(4, "little")
        patched[0x228:0x22C] = (0x20000).to_bytes(4, "little")
        patched[0x218:0x220] = struct.pack(
            "<II", spec_initrd_address(initrd_size, memory_size), initrd_size
        )
        want = spec_authenticode(bytes(patched))
        assert kernel.patched_kernel_digest(kd, initrd_size, memory_size) == want
        assert measure(image_dir, memory_size=memory_size).rtmr_logs[1].events[0].digest == want


def test_authenticode_model_agrees_on_the_unpatched_kernel() -> None:
    kd = example.build_kernel()
    assert kernel.authenticode_sha384(kd) == spec_authenticode(kd)
    # The example's size is not a multiple of 8: OVMF's padding contributes.
    assert len(kd) % 8 == 4


# --- MRTD: page-add order and its overrides on QEMU 8.x (SPEC.md: explicit settings win) ------


@pytest.fixture(scope="module")
def mrtds() -> dict[bool, bytes]:
    fw = example.build_firmware()
    two, one = spec_mrtd(fw, True), spec_mrtd(fw, False)
    assert two != one
    return {True: two, False: one}


@pytest.mark.parametrize(
    ("qemu_version", "two_pass", "want_two_pass"),
    [
        ("8.0.0", None, True),
        ("8.2.2", None, True),
        ("8.2.2", False, False),
        ("8.99.99", False, False),
        ("9.0.0", None, False),
        ("9.1.0", True, True),
        (None, None, False),
        (None, True, True),
    ],
)
def test_page_add_order_override(
    image_dir: Path,
    mrtds: dict[bool, bytes],
    qemu_version: str | None,
    two_pass: bool | None,
    want_two_pass: bool,
) -> None:
    m = machine(image_dir, qemu_version=qemu_version, two_pass_add_pages=two_pass)
    assert m.versioned_options().two_pass_add_pages is want_two_pass
    assert (
        measure(image_dir, qemu_version=qemu_version, two_pass_add_pages=two_pass).measurements.mrtd
        == (mrtds[want_two_pass])
    )


def test_tdvf_mrtd_both_orders(mrtds: dict[bool, bytes]) -> None:
    parsed = tdvf.parse(example.build_firmware())
    assert parsed.mrtd(True) == mrtds[True]
    assert parsed.mrtd(False) == mrtds[False]


@pytest.mark.parametrize(
    ("qemu_version", "pic", "want"),
    [("8.2.2", None, "pic=on"), ("8.2.2", False, "pic=off"), ("9.1.0", True, "pic=on"),
     ("9.1.0", None, "pic=off")],
)  # fmt: skip
def test_pic_override_reaches_the_dumper(
    image_dir: Path, qemu_version: str, pic: bool | None, want: str
) -> None:
    argv = machine(image_dir, qemu_version=qemu_version, pic=pic).dumper_invocation().argv
    assert argv[-1].endswith(f",smm=off,{want}")


def test_vm_config_single_pass_flag_is_passed_unchanged(
    image_dir: Path, mrtds: dict[bool, bytes]
) -> None:
    """VmConfig's qemu_single_pass_add_pages reaches the machine as two_pass_add_pages as is
    (the reference's and dstack verifier's behaviour, kept on purpose)."""
    from dstack_mr.image import Image, ImageFiles

    image = Image(
        ImageFiles.from_metadata(image_dir / "metadata.json"),
        acpi.AcpiTablesFile(image_dir / "acpi-tables.bin"),
    )
    for flag, want in ((False, False), (True, True), (None, True)):
        vm = VmConfig(cpu_count=2, memory_size=2 * GIB, qemu_version="8.2.2",
                      qemu_single_pass_add_pages=flag)  # fmt: skip
        assert image.measure(vm).measurements.mrtd == mrtds[want], flag


def test_cli_two_pass_false_on_qemu_8(image_dir: Path, mrtds: dict[bool, bytes]) -> None:
    acpi_file, meta = str(image_dir / "acpi-tables.bin"), str(image_dir / "metadata.json")
    base = ["measure", "-c", "2", "-m", "2G", "--qemu-version", "8.2.2", "--json",
            "--acpi-tables", acpi_file, meta]  # fmt: skip
    for extra, want in (([], True), (["--two-pass-add-pages", "false"], False),
                        (["--two-pass-add-pages", "true"], True)):  # fmt: skip
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["mrtd"] == mrtds[want].hex(), extra


# --- the dumper's argv, as the reference gave it (tests/data/dumper_argv.json) ----------------

ARGV = {k: v for k, v in json.loads((DATA / "dumper_argv.json").read_text()).items() if k[0] != "_"}


@pytest.mark.parametrize("name", sorted(ARGV))
def test_dumper_argv_as_the_reference(name: str) -> None:
    case = ARGV[name]
    mach = {k: v for k, v in case["machine"].items() if k != "ovmf_variant"}
    m = Machine(firmware="{firmware}", kernel="{kernel}", initrd="/x", kernel_cmdline="", **mach)
    inv = m.dumper_invocation()
    assert list(inv.argv) == case["argv"]
    assert inv.compat_ver == case["compat_ver"]
    assert inv.env == {"QEMU_ACPI_COMPAT_VER": case["compat_ver"]}


def test_pci_hole64_size_in_argv() -> None:
    base = dict(cpu_count=2, memory_size=2 * GIB, firmware="{firmware}", kernel="{kernel}",
                initrd="/x", kernel_cmdline="")  # fmt: skip
    without = Machine(**base).dumper_invocation().argv  # type: ignore[arg-type]
    for size, text in ((1 << 40, "0x10000000000"), (0, "0x0"), (0x8000_0000, "0x80000000")):
        argv = Machine(**base, pci_hole64_size=size).dumper_invocation().argv  # type: ignore[arg-type]
        assert list(argv) == [*without, "-global", f"q35-pcihost.pci-hole64-size={text}"]


def test_cli_pci_hole64_size_reaches_the_dumper(image_dir: Path, fake_dumper: FakeDumper) -> None:
    fake_dumper.serve(image_dir / "acpi-tables.bin")
    meta = image_dir / "metadata.json"
    for option, text in (("1T", "0x10000000000"), ("0x80000000", "0x80000000")):
        fake_dumper.reset()
        result = CliRunner().invoke(app, ["measure", "--pci-hole64-size", option, str(meta)])
        assert result.exit_code == 0, result.output
        (call,) = fake_dumper.calls()
        assert call["argv"][-2:] == ["-global", f"q35-pcihost.pci-hole64-size={text}"]
        assert call["compat_ver"] == "9.1.0"
    fake_dumper.reset()
    assert CliRunner().invoke(app, ["measure", str(meta)]).exit_code == 0
    assert "-global" not in fake_dumper.calls()[0]["argv"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"cpu_count": 0}, "cpu_count must be an integer in 1..=4294967295 (u32), got 0"),
        ({"host_share_mode": "nfs"}, "host_share_mode must be one of '', '9p', 'vhd', 'vvfat'"),
        ({"num_gpus": 26}, "num_gpus 26 + num_nics 1 need 27 PCI slots on pcie.0; 26 are free"),
        ({"qemu_version": "7.2.0"}, "unsupported QEMU version 7.2.0"),
        ({"qemu_version": "9.1"}, "expected exactly 3 parts"),
    ],
)
def test_invalid_machine_rejected_with_reason(kw: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = dict(cpu_count=2, memory_size=2 * GIB, firmware="f", kernel="k",
                                initrd="i", kernel_cmdline="")  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape(message)):
        Machine(**{**base, **kw}).dumper_invocation()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"cpu_count": 0}, "cpu_count must be an integer in 1..=4294967295 (u32), got 0"),
        ({"cpu_count": 1 << 32}, "cpu_count must be an integer in 1..=4294967295"),
        ({"host_share_mode": "bogus"}, "host_share_mode must be one of '', '9p', 'vhd', 'vvfat'"),
        ({"host_share_mode": "9P"}, "host_share_mode must be one of"),
        ({"num_gpus": 300}, "num_gpus must be an integer in 0..=256 (PCIe root ports"),
        ({"num_nvswitches": 257}, "num_nvswitches must be an integer in 0..=256"),
        ({"num_gpus": 200, "num_nvswitches": 56}, "need 257 PCI slots on pcie.0; 26 are free"),
        ({"num_nics": 100000}, "num_nics must be an integer in 0..=256 (q35 PCI functions"),
        ({"num_verity_volumes": 257}, "num_verity_volumes must be an integer in 0..=256"),
        ({"num_nics": 200, "num_verity_volumes": 56}, "need 256 PCI slots on pcie.0"),
    ],
)
def test_invalid_machine_cannot_be_built(kw: dict[str, Any], message: str) -> None:
    """Refused when the Machine is made, not first when it is measured."""
    base: dict[str, Any] = dict(cpu_count=2, memory_size=2 * GIB, firmware="f", kernel="k",
                                initrd="i", kernel_cmdline="")  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape(message)):
        Machine(**{**base, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {"cpu_count": 1},  # the golden vector cpu-1
        {"cpu_count": (1 << 32) - 1},  # the reference's u32
        {"num_gpus": 25},  # the largest counts that fit pcie.0's slots (test_pci_slots.py)
        {"num_gpus": 12, "num_nvswitches": 13},
        {"num_nics": 0},  # upstream allows a machine without a NIC
        {"num_nics": 26},
        {"num_nics": 1, "num_verity_volumes": 25},
        *({"host_share_mode": mode} for mode in ("", "9p", "vhd", "vvfat")),
    ],
)
def test_edge_machines_accepted(kw: dict[str, Any]) -> None:
    base: dict[str, Any] = dict(cpu_count=2, memory_size=2 * GIB, firmware="f", kernel="k",
                                initrd="i", kernel_cmdline="")  # fmt: skip
    machine = Machine(**{**base, **kw})
    argv = machine.dumper_invocation().argv
    assert argv[argv.index("-smp") + 1] == str(machine.cpu_count)


def test_256_passthrough_ports_accepted() -> None:
    argv = acpi.dumper_invocation(
        cpu_count=1, memory_size=GIB, firmware="f", kernel="k", root_verity=True, smm=False,
        pic=False, qemu_version=(9, 1, 0), hugepages=False, num_gpus=128, num_nvswitches=128,
        hotplug_off=False, pci_hole64_size=None, host_share_mode="",
    ).argv  # fmt: skip
    assert argv.count("-device") == 4 + 2 * 256
    assert "pcie-root-port,id=pci.255,bus=pcie.0,chassis=255" in argv


def test_whole_example_image_against_the_spec_model(image_dir: Path) -> None:
    """Every event and register of the example image, from SPEC.md alone."""
    for memory_size in (2 * GIB, SPLIT, 4 * GIB):
        details = measure(image_dir, memory_size=memory_size)
        want = spec_registers(memory_size)
        assert [[e.digest for e in log.events] for log in details.rtmr_logs] == spec_events(
            memory_size
        )
        assert details.measurements.to_dict() == {k: v.hex() for k, v in want.items()}
    loader, rsdp = spec_acpi(example.build_acpi_tables())
    tables = acpi.build_tables(example.build_acpi_tables())
    assert (tables.loader, tables.rsdp) == (loader, rsdp)


def cli_args(machine: dict[str, Any]) -> list[str]:
    """The ``measure`` options for one reference machine (bool options take true|false)."""
    flag = {"two_pass_add_pages": "--two-pass-add-pages", "pic": "--pic", "smm": "--smm",
            "hotplug_off": "--hotplug-off", "root_verity": "--root-verity"}  # fmt: skip
    args = ["--cpu", str(machine["cpu_count"]), "--memory", str(machine["memory_size"])]
    for key, option in flag.items():
        if machine[key] is not None:
            args += [option, str(machine[key]).lower()]
    if machine["hugepages"]:
        args.append("--hugepages")
    for key in ("num_gpus", "num_nvswitches"):
        args += [f"--{key.replace('_', '-')}", str(machine[key])]
    if machine["pci_hole64_size"] is not None:
        args += ["--pci-hole64-size", hex(machine["pci_hole64_size"])]
    if machine["qemu_version"] is not None:
        args += ["--qemu-version", machine["qemu_version"]]
    return [*args, "--host-share-mode", machine["host_share_mode"]]


@pytest.mark.parametrize("name", sorted(ARGV))
def test_cli_options_reach_the_dumper_as_the_reference(
    name: str, image_dir: Path, fake_dumper: FakeDumper
) -> None:
    """Each ``measure`` option maps to its own Machine field: the dumper gets the argv the
    reference gave it for that machine."""
    case = ARGV[name]
    fake_dumper.serve(image_dir / "acpi-tables.bin")
    meta = image_dir / "metadata.json"
    result = CliRunner().invoke(app, ["measure", *cli_args(case["machine"]), str(meta)])
    assert result.exit_code == 0, result.output
    (call,) = fake_dumper.calls()
    names = {"{firmware}": str(image_dir / "ovmf.fd"), "{kernel}": str(image_dir / "bzImage")}
    assert call["argv"] == [names.get(a, a) for a in case["argv"]]
    assert call["compat_ver"] == case["compat_ver"]


@pytest.mark.parametrize(
    ("args", "events"),
    [
        ([], 13),  # the example image is 0.5.4: pre-202505
        (["--ovmf-variant", "stable202505"], 17),
        (["--dstack-os-version", "0.5.10"], 17),
        (["--dstack-os-version", "0.5.9"], 13),
        (["--dstack-os-version", "0.5.10", "--ovmf-variant", "pre202505"], 13),
    ],
)
def test_cli_ovmf_variant_options(image_dir: Path, args: list[str], events: int) -> None:
    acpi_file, meta = str(image_dir / "acpi-tables.bin"), str(image_dir / "metadata.json")
    result = CliRunner().invoke(
        app, ["measure", "--json", "--events", *args, "--acpi-tables", acpi_file, meta]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stable202505 adds a note on stderr
    assert len(doc["rtmr_logs"][0]) == events
    labels = [e["label"] for e in doc["rtmr_logs"][0]]
    assert ("variable_authority" in labels) is (events == 17)


def test_cli_measure_output_is_the_spec_model(image_dir: Path) -> None:
    acpi_file, meta = str(image_dir / "acpi-tables.bin"), str(image_dir / "metadata.json")
    want = spec_registers(3 * GIB)
    text = CliRunner().invoke(app, ["measure", "-c", "2", "-m", "3G", "--acpi-tables", acpi_file,
                                    "--events", meta])  # fmt: skip
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[:5] == ["Machine measurements:", f"MRTD: {want['mrtd'].hex()}",
                         f"RTMR0: {want['rtmr0'].hex()}", f"RTMR1: {want['rtmr1'].hex()}",
                         f"RTMR2: {want['rtmr2'].hex()}"]  # fmt: skip
    events = spec_events(3 * GIB)
    assert lines[5] == f"ACPI tables from: file {acpi_file}"
    assert lines[7] == "RTMR0 events (13):"
    assert lines[8] == f"  [ 0] {'td_hob':<22} {events[0][0].hex()}"
    assert f"  [ 4] {'kernel_authenticode':<22}" not in text.output
    assert f"  [ 0] {'kernel_authenticode':<22} {events[1][0].hex()}" in lines
    assert f"  [ 1] {'initrd':<22} {events[2][1].hex()}" in lines
    args = ["measure", "-c", "2", "-m", "3G", "--acpi-tables", acpi_file, "--events", "--json"]
    doc = json.loads(CliRunner().invoke(app, [*args, meta]).output)
    assert {k: doc[k] for k in want} == {k: v.hex() for k, v in want.items()}
    assert [[e["digest"] for e in log] for log in doc["rtmr_logs"]] == [
        [d.hex() for d in log] for log in events
    ]
    assert [e["index"] for e in doc["rtmr_logs"][1]] == [0, 1, 2, 3, 4]


def test_stable202505_layout_against_the_spec_model(image_dir: Path) -> None:
    details = measure(image_dir, ovmf_variant="stable202505")
    want = spec_events(variant="stable202505")
    assert len(want[0]) == 17
    assert [[e.digest for e in log.events] for log in details.rtmr_logs] == want
    labels = [e.label for e in details.rtmr_logs[0].events]
    assert labels[2:4] == ["fwcfg:BootMenu", "fwcfg:bootorder"]
    assert labels[13:] == ["variable_authority", "boot_order_var", "Boot0000", "Boot0001"]


def test_td_hob_base_follows_the_td_hob_section() -> None:
    """EfiEndOfHobList counts from the TD_HOB section's address; 0x809000 only without one."""
    fw = bytes(example.build_firmware())
    section = struct.pack("<IIQQII", 0, 0, 0x809000, 0x2000, example.SECTION_TD_HOB, 0)
    assert fw.count(section) == 1
    for replacement, base in (
        (struct.pack("<IIQQII", 0, 0, 0x900000, 0x2000, example.SECTION_TD_HOB, 0), 0x900000),
        (struct.pack("<IIQQII", 0, 0, 0x900000, 0x2000, example.SECTION_TEMP_MEM, 0), 0x809000),
    ):
        parsed = tdvf.parse(fw.replace(section, replacement))
        assert parsed.td_hob_base == base
        hob = parsed.td_hob(2 * GIB)
        assert int.from_bytes(hob[48:56], "little") == base + len(hob) + 8
        # The moved section is accepted memory at its new place.
        assert struct.pack("<BxxxIQQ", 0, 7, 0x900000, 0x2000) in hob


def test_cli_cpu_zero_rejected(image_dir: Path) -> None:
    acpi_file, meta = str(image_dir / "acpi-tables.bin"), str(image_dir / "metadata.json")
    result = CliRunner().invoke(app, ["measure", "--cpu", "0", "--acpi-tables", acpi_file, meta])
    assert result.exit_code == 2
    assert "cpu_count must be an integer in 1..=4294967295 (u32), got 0" in result.output


def firmware_with_sections(size: int, sections: list[tuple[int, int, int, int, int, int]]) -> bytes:
    """A TDVF image with the descriptor at offset 0 (SPEC.md's footer and metadata entry)."""
    import uuid

    footer_guid = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
    entry_guid = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
    fw = bytearray(size)
    desc = b"TDVF" + struct.pack("<III", 16 + 32 * len(sections), 1, len(sections))
    desc += b"".join(struct.pack("<IIQQII", *s) for s in sections)
    fw[: len(desc)] = desc
    entry = struct.pack("<I", size) + struct.pack("<H", 4 + 18) + entry_guid
    footer = entry + struct.pack("<H", len(entry) + 18) + footer_guid
    fw[size - 32 - len(footer) : size - 32] = footer
    return bytes(fw)


def test_extended_pages_are_capped_across_sections() -> None:
    """Each section MR.EXTENDs the whole 1 MiB file (256 pages, within bounds on its own);
    4097 of them exceed the 2**20-page cap only in total."""
    size = 1 << 20
    extend_only = 0x1 | 0x2  # MR_EXTEND + PAGE_AUG: no MEM.PAGE.ADD records to count
    ok = [(0, size, 0x1_0000_0000 * k, size, 0, extend_only) for k in range(4096)]
    parsed = tdvf.parse(firmware_with_sections(size, ok))
    assert len(parsed.sections) == 4096
    too_many = [*ok, (0, size, 0x1_0000_0000 * 4096, size, 0, extend_only)]
    with pytest.raises(
        FirmwareError, match=re.escape("sections MR.EXTEND more than 1048576 pages")
    ):
        tdvf.parse(firmware_with_sections(size, too_many))
    adds = [(0, 0, 0x1_0000_0000 * k, size, 0, 0) for k in range(4097)]
    with pytest.raises(FirmwareError, match=re.escape("sections add more than 1048576 pages")):
        tdvf.parse(firmware_with_sections(size, adds))
