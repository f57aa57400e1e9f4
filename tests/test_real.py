"""Ground truth from real dstack CVMs (../shared/real): what real firmware measured."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import shared_path

from dstack_mr import OvmfVariant, acpi, tdvf
from dstack_mr.events import RTMR0_LAYOUTS

GIB = 1 << 30


def rtmr0_log(capture: str) -> list[str]:
    doc: dict[str, Any] = json.loads(shared_path("real", capture).read_text())
    events = json.loads(doc["event_log"])
    return [e["digest"] for e in events if e["imr"] == 0]


@pytest.fixture(scope="module")
def firmware() -> tdvf.Tdvf:
    return tdvf.parse(shared_path("inputs", "ovmf-2022.11-deb12.fd").read_bytes())


@pytest.mark.parametrize(
    ("capture", "memory"),
    [("dstack-0.6.0-getquote.json", 2 * GIB), ("dstack-0.5.4-8cpu-64g-getquote.json", 64 * GIB)],
)
def test_td_hob_matches_real_firmware(firmware: tdvf.Tdvf, capture: str, memory: int) -> None:
    # The Debian OVMF carries the same TD_HOB/TEMP_MEM layout as the dstack OVMF.
    layout = [
        (s.memory_address, s.memory_data_size)
        for s in firmware.sections
        if s.section_type in (tdvf.SectionType.TD_HOB, tdvf.SectionType.TEMP_MEM)
    ]
    assert sorted(layout) == [(0x800000, 0x6000), (0x809000, 0x2000), (0x80B000, 0x2000),
                              (0x810000, 0x10000)]  # fmt: skip
    assert firmware.td_hob_digest(memory).hex() == rtmr0_log(capture)[0]
    assert firmware.td_hob_digest(memory + GIB).hex() != rtmr0_log(capture)[0]


@pytest.mark.parametrize(
    "capture",
    [
        "dstack-0.6.0-getquote.json",
        "dstack-0.5.4-8cpu-64g-getquote.json",
        "phala-cloud-dstack-0.3-era-getquote.json",
    ],
)
def test_fixed_rtmr0_events_match_real_logs(capture: str) -> None:
    real = rtmr0_log(capture)
    layout = RTMR0_LAYOUTS[OvmfVariant.PRE202505]
    assert len(real) == len(layout) == 13
    fixed = [(i, s) for i, s in enumerate(layout) if s.digest is not None]
    assert [i for i, _ in fixed] == [1, 2, 3, 4, 5, 6, 7, 11, 12]
    for i, spec in fixed:
        assert spec.digest is not None and spec.digest.hex() == real[i], spec.label


def test_acpi_loader_and_rsdp_match_real_log() -> None:
    blob = shared_path("inputs", "acpi-dstack-0.6.0-layout.bin").read_bytes()
    tables = acpi.build_tables(blob)
    # The blob is laid out like the real CVM's: RSDT at 8931 after FACS+DSDT+FACP+APIC+MCFG+WAET.
    assert acpi.find_table(blob, "RSDT") == (8931, 52)
    real = rtmr0_log("dstack-0.6.0-getquote.json")
    assert tables.loader_digest.hex() == real[8]
    assert tables.rsdp_digest.hex() == real[9]


def test_phala_capture_quote_mrtd() -> None:
    """The README names the 0.3-era Phala CVM by its MRTD c68518a0...: the quote says so."""
    from dstack_mr.attestation import parse_attestation

    capture = shared_path("real", "phala-cloud-dstack-0.3-era-getquote.json").read_text()
    quote = parse_attestation(capture).quote
    assert quote is not None
    assert quote.mrtd.hex() == (
        "c68518a0ebb42136c12b2275164f8c72f25fa9a34392228687ed6e9caeb9c0f1"
        "dbd895e9cf475121c029dc47e70e91fd"
    )


def test_builtin_acpi_tables_of_the_060_capture_have_the_readme_layout() -> None:
    """The built-in model's tables for the 0.6.0 capture's own vm_config reproduce its three
    logged ACPI digests, and are FACS 64 + DSDT 8285 + FACP 244 + APIC 238 + MCFG 60 +
    WAET 40 + RSDT 52 back to back (RSDT at 8931), zeros after."""
    from dstack_mr import VmConfig
    from dstack_mr.acpi_log import AcpiDigests, acpi_digests_from_log
    from dstack_mr.attestation import parse_attestation
    from dstack_mr.lite import builtin_acpi_tables

    capture = parse_attestation(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    assert capture.vm_config is not None
    built = builtin_acpi_tables(VmConfig.from_dict(capture.vm_config))
    assert acpi_digests_from_log(capture.events) == AcpiDigests(
        built.loader_digest, built.rsdp_digest, built.tables_digest
    )
    # (offset, length): each table starts where the one before it ends, in this order.
    layout = {
        "FACS": (0, 64), "DSDT": (64, 8285), "FACP": (8349, 244), "APIC": (8593, 238),
        "MCFG": (8831, 60), "WAET": (8891, 40), "RSDT": (8931, 52),
    }  # fmt: skip
    assert acpi.find_tables(built.tables, list(layout)) == layout
    ends = [off + length for off, length in layout.values()]
    assert [off for off, _ in layout.values()] == [0, *ends[:-1]]
    assert not any(built.tables[8931 + 52 :])


def test_snp_capture_vm_config() -> None:
    """The README's SNP CVM: 2 vCPU, 4 GiB, vhd host share mode, read from its attestation's
    vm_config with the library's parsers."""
    from dstack_mr import VmConfig
    from dstack_mr.snp_attestation import parse_snp_attestation

    data = shared_path("real", "dstack-snp-0.6.0-attestation.json").read_bytes()
    attestation = parse_snp_attestation(data, "capture")
    assert attestation is not None and attestation.vm_config is not None
    vm = VmConfig.from_dict(attestation.vm_config.fields)
    assert (vm.cpu_count, vm.memory_size, vm.host_share_mode) == (2, 4 << 30, "vhd")
