"""Upstream dstack's VmConfig fields (NICs, verity volumes, swtpm, lite) and version rules."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import TESTS_BIN, FakeDumper
from typer.testing import CliRunner

from dstack_mr import AcpiTablesFile, ConfigError, Machine, VmConfig
from dstack_mr.config import (
    OvmfVariant,
    TdxAttestationVariant,
    TdxMeasurementMaterial,
    ovmf_variant_for_version,
    parse_os_version,
    version_rules_disagree,
)
from dstack_mr.example import write_example_image
from dstack_mr_cli.main import app

RUN = CliRunner()

# The reference's argv up to the NIC, then its tail, for a 2-vCPU 2 GiB 9p machine.
HEAD = [
    "-cpu", "qemu64", "-smp", "2", "-m", "2048M", "-nographic", "-nodefaults",
    "-serial", "stdio", "-bios", "FW", "-kernel", "K", "-initrd", "/bin/sh",
    "-drive", "file=/bin/sh,if=none,id=hd1,format=raw,readonly=on",
    "-device", "virtio-blk-pci,drive=hd1",
]  # fmt: skip
NET0 = ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"]
TAIL = [
    "-object", "tdx-guest,id=tdx", "-device", "vhost-vsock-pci,guest-cid=3",
    "-virtfs",
    "local,path=/bin,mount_tag=host-shared,readonly=on,security_model=none,id=virtfs0",
    "-drive", "file=/bin/sh,if=none,id=hd0,format=raw,readonly=on",
    "-device", "virtio-blk-pci,drive=hd0",
    "-machine", "q35,kernel-irqchip=split,confidential-guest-support=tdx,hpet=off,smm=off,pic=off",
]  # fmt: skip


def machine(**kw: object) -> Machine:
    base: dict[str, object] = dict(
        cpu_count=2, memory_size=2 << 30, firmware="FW", kernel="K", initrd="I", kernel_cmdline=""
    )
    base.update(kw)
    return Machine(**base)  # type: ignore[arg-type]


def argv(**kw: object) -> list[str]:
    return list(machine(**kw).dumper_invocation().argv)


def test_defaults_are_the_reference_argv() -> None:
    assert argv() == HEAD + NET0 + TAIL
    assert argv(num_nics=1, num_verity_volumes=0, swtpm=False) == HEAD + NET0 + TAIL


def test_zero_nics_drops_the_nic_pair_only() -> None:
    assert argv(num_nics=0) == HEAD + TAIL


def test_three_nics_at_the_seed_nic_position() -> None:
    nics = [
        "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0",
        "-netdev", "user,id=net1", "-device", "virtio-net-pci,netdev=net1",
        "-netdev", "user,id=net2", "-device", "virtio-net-pci,netdev=net2",
    ]  # fmt: skip
    assert argv(num_nics=3) == HEAD + nics + TAIL


def test_verity_volumes_after_hd1_before_the_nics() -> None:
    vols = [
        "-drive", "file=/bin/sh,if=none,id=vol0,format=raw,readonly=on",
        "-device", "virtio-blk-pci,drive=vol0",
        "-drive", "file=/bin/sh,if=none,id=vol1,format=raw,readonly=on",
        "-device", "virtio-blk-pci,drive=vol1",
    ]  # fmt: skip
    assert argv(num_verity_volumes=2) == HEAD + vols + NET0 + TAIL
    assert argv(num_verity_volumes=2, num_nics=0) == HEAD + vols + TAIL


def test_device_count_is_bounded() -> None:
    # pcie.0's 30 free slots, less hd1, vsock, the 9p share and hd0
    with pytest.raises(ConfigError, match="num_nics 20 \\+ num_verity_volumes 7 need 27 PCI"):
        machine(num_nics=20, num_verity_volumes=7)
    assert argv(num_nics=20, num_verity_volumes=6).count("-netdev") == 20
    with pytest.raises(ConfigError, match="num_nics must be an integer"):
        machine(num_nics=-1)


def test_swtpm_refused_on_every_table_measuring_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"swtpm is true.*lite mode"):
        machine(swtpm=True).dumper_invocation()
    meta = write_example_image(tmp_path / "img")
    files_machine = machine(
        swtpm=True,
        firmware=str(meta.parent / "ovmf.fd"),
        kernel=str(meta.parent / "bzImage"),
        initrd=str(meta.parent / "initramfs.cpio.gz"),
    )
    with pytest.raises(ConfigError, match="swtpm"):
        files_machine.measure(AcpiTablesFile(meta.parent / "acpi-tables.bin"))


def test_vmconfig_new_fields_and_defaults() -> None:
    vm = VmConfig.from_json("{}")
    assert (vm.num_nics, vm.num_verity_volumes, vm.swtpm) == (1, 0, False)
    assert vm.tdx_attestation_variant is TdxAttestationVariant.LEGACY
    assert vm.tdx_measurement is None
    assert (
        vm.to_dict()
        .keys()
        .isdisjoint(
            {
                "num_nics",
                "num_verity_volumes",
                "swtpm",
                "tdx_attestation_variant",
                "tdx_measurement",
            }
        )
    )
    vm = VmConfig.from_json(
        '{"num_nics": 0, "num_verity_volumes": 2, "swtpm": true,'
        ' "tdx_attestation_variant": "lite",'
        ' "tdx_measurement": {"checksum_file": "YWJj", "measurement": "oA=="}}'
    )
    assert (vm.num_nics, vm.num_verity_volumes, vm.swtpm) == (0, 2, True)
    assert vm.tdx_attestation_variant is TdxAttestationVariant.LITE
    assert vm.tdx_measurement == TdxMeasurementMaterial(b"abc", b"\xa0")
    assert VmConfig.from_dict(vm.to_dict()) == vm
    assert vm.to_dict()["tdx_measurement"] == {"checksum_file": "YWJj", "measurement": "oA=="}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('{"num_nics": -1}', "num_nics"),
        ('{"num_nics": "3"}', "num_nics"),
        ('{"swtpm": 1}', "swtpm"),
        ('{"tdx_attestation_variant": "full"}', "expected 'legacy' or 'lite'"),
        ('{"tdx_measurement": {"checksum_file": "YWJj"}}', "missing field 'measurement'"),
        ('{"tdx_measurement": {"checksum_file": "Y W", "measurement": ""}}', "not valid base64"),
        ('{"tdx_measurement": {"checksum_file": "YWJ", "measurement": ""}}', "not valid base64"),
        ('{"tdx_measurement": "x"}', "expected an object"),
    ],
)
def test_vmconfig_new_fields_strict(doc: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VmConfig.from_json(doc)


def test_other_platform_fields_are_never_an_error() -> None:
    vm = VmConfig.from_json(
        json.dumps(
            {
                "sev_snp_measurement": '{"checksum_file": "x"}',
                "mr_config": '{"version": 3}',
                "gcp_measurement": {"anything": [1, 2]},
                "aws_measurement": None,
                "spec_version": 1,
            }
        )
    )
    assert vm == VmConfig()


def test_real_snp_config_loads(real: Path) -> None:
    from dstack_mr.scale import decode_versioned_attestation

    raw = json.loads((real / "dstack-snp-0.6.0-attestation.json").read_text())["attestation"]
    vm = VmConfig.from_json(decode_versioned_attestation(bytes.fromhex(raw)).config)
    assert vm.image == "dstack-nvidia-0.6.0.a2" and vm.memory_size == 4 << 30


def test_cli_measure_new_options(
    tmp_path: Path, fake_dumper: FakeDumper, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = write_example_image(tmp_path / "img")
    fake_dumper.serve(meta.parent / "acpi-tables.bin")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    program = str(TESTS_BIN / "dstack-acpi-tables")
    base = ["measure", "--acpi-dumper", program, str(meta)]
    result = RUN.invoke(
        app, [*base[:-1], "--num-nics", "3", "--num-verity-volumes", "2", str(meta)]
    )
    assert result.exit_code == 0, result.output
    (call,) = fake_dumper.calls()
    got = call["argv"]
    assert isinstance(got, list)
    assert [a for a in got if a.startswith("user,id=")] == [
        "user,id=net0",
        "user,id=net1",
        "user,id=net2",
    ]
    assert got.index("virtio-blk-pci,drive=vol1") < got.index("user,id=net0")
    fake_dumper.reset()
    assert RUN.invoke(app, [*base[:-1], "--num-nics", "0", str(meta)]).exit_code == 0
    (call,) = fake_dumper.calls()
    assert isinstance(call["argv"], list) and "-netdev" not in call["argv"]
    swtpm = RUN.invoke(app, [*base[:-1], "--swtpm", str(meta)])
    assert swtpm.exit_code == 2 and "swtpm is true" in swtpm.output
    bad = RUN.invoke(app, [*base[:-1], "--num-nics", "x", str(meta)])
    assert bad.exit_code == 2


# --- versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "triple"),
    [
        ("0.5.10", (0, 5, 10)),
        ("0.5.10.rc1", (0, 5, 10)),
        ("0.6.0.a2", (0, 6, 0)),
        ("0.5.4.1", (0, 5, 4)),
    ],
)
def test_os_versions_with_suffix(version: str, triple: tuple[int, int, int]) -> None:
    assert parse_os_version(version) == triple


@pytest.mark.parametrize("bad", ["0.5", "0.5.10.", "0.5.10.rc1.x", "0.5.x.rc1", "v0.5.10", ""])
def test_bad_os_versions(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_os_version(bad)


def test_seed_rule_and_upstream_disagreement() -> None:
    assert ovmf_variant_for_version("0.5.8.rc1") is OvmfVariant.PRE202505
    assert ovmf_variant_for_version("0.5.10.rc1") is OvmfVariant.STABLE202505
    for v in ("0.5.10", "0.5.99.x", "0.6.1", "1.0.0"):
        assert version_rules_disagree(v), v
    for v in ("0.5.9", "0.6.0", "0.6.0.a2", "garbage"):
        assert not version_rules_disagree(v), v


def test_variant_resolution_names_the_rule_and_the_disagreement() -> None:
    from dstack_mr.config import ImageInfo
    from dstack_mr.image import variant_resolution

    info = ImageInfo(cmdline="", kernel="k", initrd="i", bios="b")
    r = variant_resolution(VmConfig(image="dstack-0.5.10.rc1"), info)
    assert (r.variant, r.rule, r.upstream_disagrees) == (
        OvmfVariant.STABLE202505,
        "image name 'dstack-0.5.10.rc1'",
        True,
    )
    assert "event log decides" in r.description
    r = variant_resolution(VmConfig(image="dstack-0.6.0.a2"), info)
    assert (r.variant, r.upstream_disagrees) == (OvmfVariant.PRE202505, False)
    r = variant_resolution(
        VmConfig(), ImageInfo(cmdline="", kernel="k", initrd="i", bios="b", version="0.6.1")
    )
    assert (r.rule, r.upstream_disagrees) == ("metadata.json version 0.6.1", True)
    r = variant_resolution(
        VmConfig(ovmf_variant=OvmfVariant.STABLE202505, image="dstack-0.6.1"), info
    )
    assert (r.rule, r.upstream_disagrees) == ("vm_config.ovmf_variant", False)
    assert variant_resolution(VmConfig(), info).rule == "default"


def test_cli_measure_notes_the_version_disagreement(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    args = ["measure", "--acpi-tables", str(meta.parent / "acpi-tables.bin")]
    result = RUN.invoke(app, [*args, "--dstack-os-version", "0.6.1.rc2", str(meta)])
    assert result.exit_code == 0, result.output
    assert "upstream dstack uses pre202505" in result.output
    result = RUN.invoke(app, [*args, "--dstack-os-version", "0.6.0.a2", str(meta)])
    assert result.exit_code == 0 and "upstream" not in result.output


def test_swtpm_allowed_when_acpi_digests_are_given(tmp_path: Path) -> None:
    """Digests taken from a log measure no tables: nothing to refuse, no dumper argv."""
    from dstack_mr.acpi_log import AcpiDigests
    from dstack_mr.image import Image

    meta = write_example_image(tmp_path / "img")
    image = Image.load(meta.parent)
    vm = VmConfig(cpu_count=2, memory_size=2 << 30, swtpm=True)
    digests = AcpiDigests(b"\x01" * 48, b"\x02" * 48, b"\x03" * 48)
    details = image.measure_machine(image.machine(vm), digests)
    assert details.invocation is None
    assert details.rtmr_logs[0].digests[8:11] == [b"\x01" * 48, b"\x02" * 48, b"\x03" * 48]
    with pytest.raises(ConfigError, match="swtpm"):
        image.measure(vm)


def test_diagnose_reports_the_variant_rule_and_disagreement(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    info = json.loads(meta.read_text())
    meta.write_text(json.dumps({**info, "version": "0.5.10.rc1"}))
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 << 30}))
    args = ["diagnose", "--vm-config", str(vm), "--image-dir", str(meta.parent)]
    result = RUN.invoke(
        app, [*args, "--acpi-tables", str(meta.parent / "acpi-tables.bin"), "--json"]
    )
    doc = json.loads(result.output)
    assert doc["ovmf_variant"] == "Stable202505"
    assert doc["ovmf_variant_source"].startswith("metadata.json version 0.5.10.rc1")
    assert "upstream dstack would pick pre202505" in doc["ovmf_variant_source"]
