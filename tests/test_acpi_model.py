"""The pure-Python ACPI model against stock QEMU 7.2 (recorded, and live when installed)."""

from __future__ import annotations

import base64
import hashlib
import json
import lzma
import struct
from functools import cache
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import shared_path, stock_qemu_dumper
from hypothesis import given, settings
from hypothesis import strategies as st

from dstack_mr import acpi
from dstack_mr.acpi_model import QemuAcpiModel, aml, tables_for
from dstack_mr.errors import ConfigError

DATA = Path(__file__).resolve().parent / "data" / "acpi" / "stock-qemu-7.2.jsonl.xz"


@cache
def recorded() -> list[dict[str, Any]]:
    lines = lzma.decompress(DATA.read_bytes()).decode().splitlines()
    return [json.loads(line) for line in lines[1:]]


def invocation(entry: dict[str, Any]) -> acpi.DumperInvocation:
    return acpi.DumperInvocation(tuple(entry["argv"]), entry["config"]["qemu_version"])


def walk(blob: bytes) -> dict[str, bytes]:
    out, off = {}, 0
    while off + 8 <= len(blob) and blob[off : off + 4] != b"\0\0\0\0":
        length = struct.unpack_from("<I", blob, off + 4)[0]
        out[blob[off : off + 4].decode()] = blob[off : off + length]
        off += length
    return out


def test_recorded_set_is_large_and_varied() -> None:
    entries = recorded()
    assert len(entries) >= 300
    configs = [e["config"] for e in entries]
    for key in ("hugepages", "hotplug_off", "smm", "root_verity"):
        assert {c[key] for c in configs} == {False, True}, key
    assert len({c["cpu_count"] for c in configs}) > 20
    assert max(c["num_gpus"] for c in configs) >= 8


@pytest.mark.parametrize("index", range(len(recorded())))
def test_model_matches_recorded_stock_qemu(index: int) -> None:
    entry = recorded()[index]
    expected = base64.b64decode(entry["tables"]).ljust(entry["tables_size"], b"\0")
    got = tables_for(invocation(entry), qemu="stock-7.2")
    if got != expected:
        differing = [s for s, b in walk(expected).items() if walk(got).get(s) != b]
        pytest.fail(f"tables differ in {differing} for {entry['config']}")
    assert hashlib.sha384(got).hexdigest() == entry["sha384"]["tables"]
    if "SRAT" in walk(got):
        return  # QEMU's loader also checksums the SRAT; the reference's never does
    # QEMU's own loader and RSDP equal the reference's reconstruction from the blob
    built = acpi.build_tables(got)
    assert hashlib.sha384(built.loader).hexdigest() == entry["sha384"]["loader"]
    assert hashlib.sha384(built.rsdp).hexdigest() == entry["sha384"]["rsdp"]


def _library_argv(cfg: dict[str, Any]) -> tuple[str, ...]:
    return acpi.dumper_invocation(
        cpu_count=cfg["cpu_count"],
        memory_size=cfg["memory_size"],
        firmware="/usr/share/ovmf/OVMF.fd",
        kernel="k",
        root_verity=cfg["root_verity"],
        smm=cfg["smm"],
        pic=bool(cfg["pic"]),
        qemu_version=(9, 2, 1),
        hugepages=cfg["hugepages"],
        num_gpus=cfg["num_gpus"],
        num_nvswitches=cfg["num_nvswitches"],
        hotplug_off=cfg["hotplug_off"],
        pci_hole64_size=cfg["pci_hole64_size"],
        host_share_mode=cfg["host_share_mode"],
    ).argv


def test_library_argv_reads_as_the_recorded_machine() -> None:
    """The library's own dumper argv yields the recorded tables (seed layout: 1 NIC)."""
    checked = 0
    for entry in recorded():
        cfg = entry["config"]
        if cfg["num_nics"] != 1 or cfg["num_verity_volumes"] != 0 or cfg["pic"] is None:
            continue
        inv = acpi.DumperInvocation(_library_argv(cfg), cfg["qemu_version"])
        got = QemuAcpiModel("stock-7.2").acpi_tables(inv)
        assert hashlib.sha384(got).hexdigest() == entry["sha384"]["tables"], cfg
        checked += 1
        if checked == 40:
            break
    assert checked == 40


# --- live against an installed stock QEMU ---------------------------------------------------


@pytest.mark.parametrize(
    "machine",
    [
        {"cpu": 3, "mem_mb": 2304, "gpus": 2, "hotplug_off": False, "smm": True},
        {"cpu": 12, "mem_mb": 6144, "gpus": 1, "hugepages": True, "pci_hole64_size": 1 << 36},
        {"cpu": 1, "mem_mb": 700, "nvswitches": 2, "hotplug_off": True, "root_verity": False},
    ],
)
def test_model_matches_live_stock_qemu(machine: dict[str, Any]) -> None:
    dumper = stock_qemu_dumper()
    blobs = dumper.dump(**machine)
    argv, _ = dumper.dstack_argv(**machine, stock=False)
    got = tables_for(acpi.DumperInvocation(tuple(argv), "9.2.1"), qemu="stock-7.2")
    assert got == blobs["tables"]


# --- AML encodings ---------------------------------------------------------------------------


def test_pkg_length_encodings() -> None:
    assert aml.pkg_length(0x3E) == bytes([0x3F])
    assert aml.pkg_length(0x3F) == bytes([0x41, 0x04])  # 63 + 2 bytes, two-byte form
    assert aml.pkg_length(0xFFD) == bytes([0x4F, 0xFF])
    assert aml.pkg_length(0xFFE) == bytes([0x81, 0x00, 0x01])
    assert aml.pkg_length(10, incl_self=False) == bytes([10])


def test_integer_and_name_encodings() -> None:
    assert aml.int_bytes(0) == b"\x00" and aml.int_bytes(1) == b"\x01"
    assert aml.int_bytes(0xFF) == b"\x0a\xff"
    assert aml.int_bytes(0x100) == b"\x0b\x00\x01"
    assert aml.int_bytes(0x10000) == b"\x0c\x00\x00\x01\x00"
    assert aml.int_bytes(1 << 32) == b"\x0e" + (1 << 32).to_bytes(8, "little")
    assert aml.namestring("_SB") == b"_SB_"
    assert aml.namestring("\\_SB.PCI0") == b"\\\x2e_SB_PCI0"
    assert aml.namestring("\\_SB.PCI0.PRES") == b"\\\x2f\x03_SB_PCI0PRES"
    assert aml.namestring("^S08.PCNT") == b"^\x2eS08_PCNT"
    assert aml.encode(aml.eisaid("PNP0A03")) == b"\x0c\x41\xd0\x0a\x03"


# --- properties ------------------------------------------------------------------------------


def _argv(
    cpus: int, mem_mb: int, gpus: int, nvs: int, hotplug_off: bool, huge: bool, smm: bool
) -> tuple[str, ...]:
    return acpi.dumper_invocation(
        cpu_count=cpus,
        memory_size=mem_mb << 20,
        firmware="f",
        kernel="k",
        root_verity=True,
        smm=smm,
        pic=False,
        qemu_version=(9, 2, 1),
        hugepages=huge,
        num_gpus=gpus,
        num_nvswitches=nvs,
        hotplug_off=hotplug_off,
        pci_hole64_size=None,
        host_share_mode="9p",
    ).argv


@settings(max_examples=60, deadline=None)
@given(
    cpus=st.integers(1, 254),
    mem_mb=st.integers(1, 1 << 22),
    gpus=st.integers(0, 12),
    nvs=st.integers(0, 6),
    hotplug_off=st.booleans(),
    huge=st.booleans(),
    smm=st.booleans(),
)
def test_accepted_configurations_give_consistent_tables(
    cpus: int, mem_mb: int, gpus: int, nvs: int, hotplug_off: bool, huge: bool, smm: bool
) -> None:
    inv = acpi.DumperInvocation(_argv(cpus, mem_mb, gpus, nvs, hotplug_off, huge, smm), "9.2.1")
    try:
        blob = tables_for(inv, qemu="stock-7.2")
    except ConfigError as exc:  # only a machine QEMU itself could not start
        assert "slot" in str(exc)
        return
    assert len(blob) == 0x20000
    tables = walk(blob)
    assert {"FACS", "DSDT", "FACP", "APIC", "MCFG", "WAET", "RSDT"} <= set(tables)
    assert ("SRAT" in tables) == huge
    end = sum(len(b) for b in tables.values())
    assert blob[end:] == bytes(len(blob) - end)
    rsdt = tables["RSDT"]
    entries = struct.unpack_from(f"<{(len(rsdt) - 36) // 4}I", rsdt, 36)
    for sig, body in tables.items():
        if sig == "FACS":
            continue
        assert struct.unpack_from("<I", body, 4)[0] == len(body)
        assert body[9] == 0  # left for the loader's ADD_CHECKSUM
        # once the loader patches the checksum byte, the table sums to zero
        patched = body[:9] + bytes([-sum(body) & 0xFF]) + body[10:]
        assert sum(patched) & 0xFF == 0
        if sig not in ("DSDT", "RSDT"):
            assert blob.index(body) in entries
    built = acpi.build_tables(blob)
    assert len(built.loader) == 4096 and len(built.rsdp) == 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-smp", "0", "-m", "2048M", "-machine", "q35,hpet=off"], "cpu_count"),
        (["-smp", "300", "-m", "2048M", "-machine", "q35,hpet=off"], "cpu_count"),
        (["-smp", "2", "-m", "2G", "-machine", "q35,hpet=off"], "MiB"),
        (["-smp", "2", "-m", "2048M", "-machine", "pc,hpet=off"], "q35"),
        (["-smp", "2", "-m", "2048M", "-machine", "q35"], "hpet"),
        (["-smp", "2", "-m", "2048M", "-machine", "q35,hpet=off", "-device", "e1000"], "e1000"),
        (["-smp", "2", "-m", "2048M", "-machine", "q35,hpet=off", "-acpitable", "x"], "-acpitable"),
        (["-smp", "2", "-m", "2048M"], "lacks"),
    ],
)
def test_out_of_range_inputs_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tables_for(acpi.DumperInvocation(tuple(argv), "9.2.1"), qemu="stock-7.2")


def test_too_many_ports_is_a_config_error() -> None:
    argv = _argv(2, 2048, 30, 0, False, False, False)
    with pytest.raises(ConfigError, match="slot"):
        tables_for(acpi.DumperInvocation(argv, "9.2.1"), qemu="stock-7.2")


def test_unmodelled_qemu_builds_are_refused() -> None:
    inv = acpi.DumperInvocation(_argv(2, 2048, 0, 0, False, False, False), "9.2.1")
    with pytest.raises(ConfigError, match="does not cover"):
        tables_for(inv, qemu="stock-8.2")


# --- dstack's QEMU: the real CVMs -------------------------------------------------------------


def _ground_truth() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(shared_path("acpi", "ground-truth.json").read_text())
    return data


def test_builtin_model_reproduces_real_cvm_digests() -> None:
    from dstack_mr.machine import Machine

    truths = _ground_truth()
    assert len(truths) >= 2
    for truth in truths:
        cfg = truth["config"]
        machine = Machine(
            cpu_count=cfg["cpu_count"],
            memory_size=cfg["memory_size"],
            firmware="ovmf.fd",
            kernel="bzImage",
            initrd="initrd",
            kernel_cmdline="",
            qemu_version=cfg["qemu_version"],
            smm=cfg["smm"],
            pci_hole64_size=cfg["pci_hole64_size"] or None,
            hugepages=cfg["hugepages"],
            num_gpus=cfg["num_gpus"],
            hotplug_off=cfg["hotplug_off"],
            root_verity=cfg["root_verity"],
            host_share_mode=cfg["host_share_mode"],
        )
        blob = QemuAcpiModel().acpi_tables(machine.dumper_invocation())
        built = acpi.build_tables(blob)
        digests = truth["digests"]
        assert built.loader_digest.hex() == digests["loader"], truth["capture"]
        assert built.rsdp_digest.hex() == digests["rsdp"], truth["capture"]
        assert built.tables_digest.hex() == digests["tables"], truth["capture"]
        layout = {sig: len(body) for sig, body in walk(blob).items()}
        assert layout == {k: v for k, v in truth["solved_layout"].items() if k != "rsdt_offset"}


@pytest.mark.parametrize("compat", ["10.0.0", "10.2.1", "7.2.0", ""])
def test_builtin_model_refuses_unproven_versions(compat: str) -> None:
    inv = acpi.DumperInvocation(_argv(2, 2048, 0, 0, False, False, False), compat)
    with pytest.raises(ConfigError, match="QEMU_ACPI_COMPAT_VER"):
        QemuAcpiModel().acpi_tables(inv)


@pytest.mark.parametrize(
    ("compat", "same_as"),
    [("8.0.0", "8.2.2"), ("9.0.0", "8.2.2"), ("9.1.3", "8.2.2"), ("9.2.0", "9.2.1")],
)
def test_builtin_model_covers_each_branch_alike(compat: str, same_as: str) -> None:
    argv = _argv(4, 4096, 1, 1, False, True, False)
    blob = QemuAcpiModel().acpi_tables(acpi.DumperInvocation(argv, compat))
    reference = QemuAcpiModel().acpi_tables(acpi.DumperInvocation(argv, same_as))
    assert blob == reference
    other = QemuAcpiModel().acpi_tables(
        acpi.DumperInvocation(argv, "9.2.1" if same_as == "8.2.2" else "8.2.2")
    )
    assert other != blob  # the two branches differ (triggers, MADT overrides, PDSM)


#: RTMR0 that dstack-mr (the reference, with the real dumper) printed for dstack-nvidia-0.5.4.1
#: at 24 vCPU, 256 GiB, QEMU 9.2.1, 1 GPU, hotplug off, pci_hole64_size 1 PiB (published in a
#: public verifier's bootchain documentation).
REFERENCE_9_2_1_RTMR0 = (
    "24c15e08c07aa01c531cbd7e8ba28f8cb62e78f6"
    "171bf6a8e0800714a65dd5efd3a06bf0cf5433c02bbfac839434b418"
)


def test_builtin_model_reproduces_the_references_9_2_1_rtmr0(tmp_path: Path) -> None:
    """RTMR0 folds the TD HOB (dstack's TDVF layout, as in the example firmware), constants
    and the three ACPI digests, so equal RTMR0 means equal ACPI digests."""
    from dstack_mr import tdvf
    from dstack_mr.config import OvmfVariant
    from dstack_mr.example import write_example_image
    from dstack_mr.machine import Machine, rtmr0_digests

    firmware = tdvf.parse((write_example_image(tmp_path / "img").parent / "ovmf.fd").read_bytes())
    machine = Machine(
        cpu_count=24, memory_size=256 << 30, firmware="f", kernel="k", initrd="i",
        kernel_cmdline="", qemu_version="9.2.1", pci_hole64_size=1 << 50, num_gpus=1,
        hotplug_off=True,
    )  # fmt: skip
    tables = acpi.build_tables(QemuAcpiModel().acpi_tables(machine.dumper_invocation()))
    td_hob = firmware.td_hob_digest(machine.memory_size)
    rtmr0 = bytes(48)
    for digest in rtmr0_digests(OvmfVariant.PRE202505, td_hob, tables):
        rtmr0 = hashlib.sha384(rtmr0 + digest).digest()
    assert rtmr0.hex() == REFERENCE_9_2_1_RTMR0


# --- the configuration search -----------------------------------------------------------------


def _capture_acpi_digests(name: str) -> Any:
    from dstack_mr.acpi_log import acpi_digests_from_log
    from dstack_mr.attestation import parse_attestation

    attestation = parse_attestation(shared_path("real", name).read_text())
    return acpi_digests_from_log(attestation.events)


def _machine(**kw: Any) -> Any:
    from dstack_mr.machine import Machine

    base: dict[str, Any] = {
        "cpu_count": 2, "memory_size": 2 << 30, "firmware": "f", "kernel": "k",
        "initrd": "i", "kernel_cmdline": "", "qemu_version": "8.2.2",
    }  # fmt: skip
    base.update(kw)
    return Machine(**base)


def test_search_finds_the_real_cvms_configuration_only() -> None:
    from dstack_mr.acpi_model.search import search_acpi_config

    actual = _capture_acpi_digests("dstack-0.5.4-8cpu-64g-getquote.json")
    claimed = _machine(cpu_count=2, memory_size=64 << 30)
    axes = {"cpu_count": range(1, 17), "num_gpus": range(0, 3), "hotplug_off": (False, True)}
    matches = search_acpi_config(actual, claimed, axes)
    assert [m.describe() for m in matches] == ["cpu_count=8"]
    assert search_acpi_config(actual, attrs.evolve(claimed, cpu_count=8), {}) != []


def test_search_identifies_an_older_phala_cvm() -> None:
    """The 0.3-era Phala capture carries no configuration; its three ACPI digests are those
    of one vCPU booted from a CD-ROM (root_verity off), hotplug on: proven by recomputation."""
    from dstack_mr.acpi_model.search import search_acpi_config

    actual = _capture_acpi_digests("phala-cloud-dstack-0.3-era-getquote.json")
    axes = {"cpu_count": range(1, 9), "hotplug_off": (False, True), "root_verity": (True, False)}
    matches = search_acpi_config(actual, _machine(), axes)
    assert [m.describe() for m in matches] == ["cpu_count=1, root_verity=False"]


def test_search_rejects_unknown_axes() -> None:
    from dstack_mr.acpi_model.search import AcpiDigests, search_acpi_config

    with pytest.raises(ConfigError, match="not a Machine field"):
        search_acpi_config(AcpiDigests(b"", b"", b""), _machine(), {"cpus": [1]})


_TOKENS = [
    "-smp", "-m", "-machine", "-device", "-global", "-numa", "-virtfs", "-nodefaults",
    "2", "0", "999999999999", "2048M", "2G", "-1M", "q35,hpet=off", "q35,hpet=off,smm=on",
    "pcie-root-port,id=p,bus=pcie.0,chassis=1", "virtio-blk-pci,bus=p", "virtio-blk-pci,bus=x",
    "pxb-pcie,id=n,bus=pcie.0,addr=zz,bus_nr=5", "pxb-pcie,id=n,bus=pcie.0,addr=10,bus_nr=q",
    "virtio-net-pci,addr=1f", "virtio-net-pci,addr=2.1", "pxb-pcie,id=m,bus=pcie.0",
    "pxb-pcie,id=k,bus=pcie.0,bus_nr=0", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
    "q35-pcihost.pci-hole64-size=0x10", "q35-pcihost.pci-hole64-size=nope", "", ",,,", "=",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=14), st.sampled_from(["8.2.2", "9.1.0", "x"]))
def test_hostile_argv_gives_tables_or_a_config_error(argv: list[str], compat: str) -> None:
    inv = acpi.DumperInvocation(tuple(argv), compat)
    for qemu in ("stock-7.2", "dstack"):
        try:
            blob = tables_for(inv, qemu=qemu)
        except ConfigError:
            continue
        assert len(blob) == 0x20000
        acpi.build_tables(blob)


def test_search_skips_and_records_shared_seen_invocations() -> None:
    """Searches sharing ``seen`` build no configuration twice: a tried one is not retried."""
    from dstack_mr.acpi_model.search import search_acpi_config

    actual = _capture_acpi_digests("dstack-0.5.4-8cpu-64g-getquote.json")
    claimed = _machine(cpu_count=2, memory_size=64 << 30)
    seen: set[Any] = set()
    first = search_acpi_config(actual, claimed, {"cpu_count": range(1, 17)}, seen=seen)
    assert [m.describe() for m in first] == ["cpu_count=8"]
    assert len(seen) == 16
    assert search_acpi_config(actual, claimed, {"cpu_count": range(1, 17)}, seen=seen) == []
    assert len(seen) == 16
