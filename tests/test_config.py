"""VmConfig / ImageInfo loading, OVMF variant rules, memory sizes (the reference's rules)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dstack_mr import (
    ConfigError,
    ImageError,
    ImageInfo,
    OvmfVariant,
    VmConfig,
    extract_version_from_image_name,
    ovmf_variant_for_image,
    ovmf_variant_for_version,
)
from dstack_mr.config import format_memory_size, parse_memory_size, parse_version_triple

PRE, STABLE = OvmfVariant.PRE202505, OvmfVariant.STABLE202505


@pytest.mark.parametrize("v", ["0.4.99", "0.5.7", "0.5.8", "0.5.9", "0.6.0", "0.0.0"])
def test_pre202505_versions(v: str) -> None:
    assert ovmf_variant_for_version(v) is PRE


@pytest.mark.parametrize("v", ["0.5.10", "0.5.99", "0.6.1", "0.6.2", "0.7.0", "1.0.0", "+0.6.1"])
def test_stable202505_versions(v: str) -> None:
    # A leading '+' is accepted because Rust's u32 parser accepts it.
    assert ovmf_variant_for_version(v) is STABLE


@pytest.mark.parametrize(
    "v",
    ["0.5", "0.5.10-dev", "v0.5.10", "", "0.5.10.", "0..10", "-1.0.0", "4294967296.0.0", "٠.6.1"],
)
def test_malformed_versions_rejected(v: str) -> None:
    with pytest.raises(ConfigError):
        ovmf_variant_for_version(v)


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("dstack-0.5.10", "0.5.10"),
        ("dstack-dev-0.5.10", "0.5.10"),
        ("dstack-nvidia-0.5.10", "0.5.10"),
        ("dstack-nvidia-dev-0.6.1", "0.6.1"),
        ("dstack-0.5.10.rc1", "0.5.10"),
        ("dstack-dev-0.6.1.dev", "0.6.1"),
        ("dstack-nvidia-dev-0.5.10.1", "0.5.10"),
        ("0.6.1", "0.6.1"),
        ("dstack", None),
        ("dstack-rc1", None),
        ("dstack-0.5", None),
        ("dstack-0.5.10.", None),
        ("dstack-0.5.10.1.2", None),
        ("dstack-0..10", None),
        ("dstack-a.b.c", None),
    ],
)
def test_extract_version_from_image_name(name: str, version: str | None) -> None:
    assert extract_version_from_image_name(name) == version


def test_ovmf_variant_for_image() -> None:
    assert ovmf_variant_for_image(None) is PRE
    assert ovmf_variant_for_image("dstack") is PRE
    assert ovmf_variant_for_image("dstack-0.5.9") is PRE
    assert ovmf_variant_for_image("dstack-0.5.10") is STABLE
    assert ovmf_variant_for_image("dstack-nvidia-dev-0.6.1") is STABLE


def test_variant_json_names() -> None:
    assert [v.value for v in OvmfVariant] == ["pre202505", "stable202505"]
    assert STABLE.rust_name == "Stable202505"


def test_vm_config_defaults_and_unknown_keys() -> None:
    vm = VmConfig.from_json('{"cpu_count": 2, "memory_size": 2147483648, "tdx_extra": {"a": 1}}')
    assert vm == VmConfig(cpu_count=2, memory_size=2 << 30)
    assert vm.qemu_single_pass_add_pages is None and vm.ovmf_variant is None
    assert vm.host_share_mode == "" and vm.pci_hole64_size == 0 and vm.os_image_hash == b""
    assert VmConfig.from_json("{}") == VmConfig()


def test_vm_config_full_round_trip() -> None:
    doc = {
        "os_image_hash": "e6f5cfec20c02e7b97baa213d0f718020b55e040172d90ccbcb946d56c8b09db",
        "cpu_count": 8,
        "memory_size": 68719476736,
        "qemu_single_pass_add_pages": False,
        "pic": True,
        "qemu_version": "8.2.2",
        "pci_hole64_size": 1 << 40,
        "hugepages": True,
        "num_gpus": 1,
        "num_nvswitches": 0,
        "hotplug_off": True,
        "image": "dstack-0.6.0",
        "host_share_mode": "9p",
        "ovmf_variant": "stable202505",
    }
    vm = VmConfig.from_json(json.dumps(doc))
    assert vm.ovmf_variant is STABLE and vm.os_image_hash[:2] == b"\xe6\xf5"
    assert vm.to_dict() == doc
    # serde skips None options when serialising
    assert "pic" not in VmConfig().to_dict() and "image" not in VmConfig().to_dict()


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ('{"cpu_count": "2"}', "cpu_count"),
        ('{"cpu_count": -1}', "u32"),
        ('{"cpu_count": 4294967296}', "u32"),
        ('{"memory_size": 18446744073709551616}', "u64"),
        ('{"cpu_count": true}', "cpu_count"),
        ('{"cpu_count": 2.0}', "cpu_count"),
        ('{"hugepages": 1}', "hugepages"),
        ('{"pic": "true"}', "pic"),
        ('{"ovmf_variant": "Stable202505"}', "ovmf_variant"),
        ('{"os_image_hash": "xyz"}', "os_image_hash"),
        ('{"image": 5}', "image"),
        ("[]", "object"),
        ("{", "JSON"),
    ],
)
def test_vm_config_strict(doc: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        VmConfig.from_json(doc)


def test_image_info() -> None:
    info = ImageInfo.from_json(
        '{"cmdline": "c", "kernel": "k", "initrd": "i", "bios": "b", "version": "0.5.4"}'
    )
    assert info.version == "0.5.4" and info.ovmf_variant is None
    with pytest.raises(ImageError, match="bios"):
        ImageInfo.from_json('{"cmdline": "c", "kernel": "k", "initrd": "i"}')


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2G", 2 << 30),
        ("2g", 2 << 30),
        ("512M", 512 << 20),
        ("4096", 4096),
        ("0x80000000", 0x80000000),
        ("0X10", 16),
        ("1T", 1 << 40),
        ("3k", 3072),
        (" 2G ", 2 << 30),
        ("0", 0),
    ],
)
def test_parse_memory_size(text: str, value: int) -> None:
    assert parse_memory_size(text) == value


@pytest.mark.parametrize(
    "text", ["", " ", "abc", "0xgg", "abcK", "2GB", "1.5G", "-1", "99999999999999999999"]
)
def test_parse_memory_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_memory_size(text)


@given(st.integers(0, (1 << 64) - 1))
def test_memory_size_formats_round_trip_for_whole_units(n: int) -> None:
    text = format_memory_size(n)
    if "." not in text:
        assert parse_memory_size(text) == n


@given(st.text(max_size=30))
def test_version_parser_total(text: str) -> None:
    try:
        a, b, c = parse_version_triple(text)
    except ConfigError:
        return
    assert all(0 <= x <= 0xFFFFFFFF for x in (a, b, c))
