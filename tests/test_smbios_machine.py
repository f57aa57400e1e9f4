"""The SMBIOS event in measurements (constant vs computed), on the CLI, and the search."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from typer.testing import CliRunner

from dstack_mr import Machine, OvmfVariant, host_cpu, smbios, smbios_search, uefi
from dstack_mr.acpi import AcpiTablesFile
from dstack_mr.errors import ConfigError
from dstack_mr.events import RTMR0_LAYOUTS, SMBIOS_HANDOFF
from dstack_mr.example import write_example_image
from dstack_mr.image import ImageFiles
from dstack_mr.machine import MeasurementDetails
from dstack_mr.smbios import SmbiosInputs, SmbiosOptions
from dstack_mr.uefi import STABLE202505_VARIABLE_AUTHORITY_DIGEST
from dstack_mr_cli.main import app

GIB = 1 << 30
INDEX = [s.label for s in RTMR0_LAYOUTS[OvmfVariant.STABLE202505]].index(SMBIOS_HANDOFF)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_example_image(tmp_path_factory.mktemp("smbios") / "img")


def measure(meta: Path, **fields: object) -> MeasurementDetails:
    files = ImageFiles.from_metadata(meta)
    machine = Machine(
        **{
            "cpu_count": 2,
            "memory_size": 2 * GIB,
            "firmware": files.firmware,
            "kernel": files.kernel,
            "initrd": files.initrd,
            "kernel_cmdline": files.cmdline,
            "qemu_version": "8.2.2",
            "ovmf_variant": OvmfVariant.STABLE202505,
            **fields,
        }
    )
    return machine.measure_with_logs(AcpiTablesFile(meta.parent / "acpi-tables.bin"))


def test_index_13_is_the_smbios_event() -> None:
    assert INDEX == 13


def test_default_is_the_reference_constant_with_a_note(example: Path) -> None:
    details = measure(example, memory_size=16 * GIB)
    assert details.rtmr_logs[0].digests[INDEX] == STABLE202505_VARIABLE_AUTHORITY_DIGEST
    assert details.smbios_inputs is None
    (note,) = details.notes
    assert "SMBIOS handoff-table event" in note and "memory 2 GiB, QEMU 8.2.2" in note
    assert "this machine has 16 GiB on QEMU 8.2.2, so it will not match" in note
    assert "--smbios-computed" in note


def test_default_note_says_when_the_machine_is_the_seed_configuration(example: Path) -> None:
    (note,) = measure(example).notes
    assert note.endswith("this machine has that memory and QEMU version.")


def test_the_seed_description_is_what_the_smbios_model_says() -> None:
    """uefi spells the seed configuration out so measure need not import smbios."""
    memory, version = uefi.SMBIOS_SEED_CONFIGURATION
    assert SmbiosInputs(version, memory).describe() == uefi.SMBIOS_SEED_DESCRIPTION
    assert SmbiosOptions().inputs(memory, version, 4).describe() == uefi.SMBIOS_SEED_DESCRIPTION
    assert uefi.SMBIOS_SEED_CONFIGURATION == (2 * 1024**3, (8, 2, 2))


def test_pre202505_results_carry_no_note(example: Path) -> None:
    details = measure(example, ovmf_variant=OvmfVariant.PRE202505)
    assert details.notes == () and details.smbios_inputs is None


def test_pre202505_says_the_smbios_options_do_nothing(example: Path) -> None:
    plain = measure(example, ovmf_variant=OvmfVariant.PRE202505)
    asked = measure(example, ovmf_variant=OvmfVariant.PRE202505, smbios=SmbiosOptions())
    assert asked.measurements == plain.measurements and asked.smbios_inputs is None
    assert asked.notes == (smbios.NO_SMBIOS_EVENT_NOTE,)
    assert "no effect" in asked.notes[0]


@pytest.mark.parametrize("cpus", [1, 2, 8])
def test_computed_event_equals_the_constant_for_the_seed_configuration(
    example: Path, cpus: int
) -> None:
    default = measure(example, cpu_count=cpus)
    computed = measure(example, cpu_count=cpus, smbios=SmbiosOptions())
    assert computed.measurements == default.measurements
    assert computed.smbios_inputs == SmbiosInputs("8.2.2", 2 * GIB, cpu_count=cpus)


def test_computed_event_follows_memory_and_says_what_it_assumed(example: Path) -> None:
    options = SmbiosOptions(host_cpu=host_cpu.find_host_cpu("Granite Rapids stepping 1"))
    details = measure(example, memory_size=16 * GIB, smbios=options)
    want = smbios.event_digest(SmbiosInputs("8.2.2", 16 * GIB, cpuid_eax=0xA06D1))
    log = details.rtmr_logs[0]
    assert log.digests[INDEX] == want != STABLE202505_VARIABLE_AUTHORITY_DIGEST
    assert log.events[INDEX].label == SMBIOS_HANDOFF
    (note,) = details.notes
    assert "Granite Rapids stepping 1" in note and "memory 16 GiB" in note
    # Only event 13 moved.
    default = measure(example, memory_size=16 * GIB).rtmr_logs[0].digests
    assert [i for i, (a, b) in enumerate(zip(default, log.digests, strict=True)) if a != b] == [
        INDEX
    ]


def test_computed_event_uses_the_resolved_qemu_version(example: Path) -> None:
    details = measure(example, qemu_version=None, smbios=SmbiosOptions())
    assert details.smbios_inputs is not None
    assert details.smbios_inputs.machine_type == "pc-q35-9.1"  # the reference's default 9.1.0


def test_machine_rejects_a_non_options_smbios_value(example: Path) -> None:
    with pytest.raises(ConfigError, match="SmbiosOptions"):
        measure(example, smbios="dstack")


# --- CLI ---------------------------------------------------------------------------------------


def _cli(example: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app,
        [
            "measure",
            "-c",
            "2",
            "--qemu-version",
            "8.2.2",
            "--ovmf-variant",
            "stable202505",
            "--acpi-tables",
            str(example.parent / "acpi-tables.bin"),
            "--events",
            *args,
            str(example),
        ],
    )
    return result.exit_code, result.stdout, result.stderr


def _event13(stdout: str) -> str:
    line = next(x for x in stdout.splitlines() if x.startswith("  [13] "))
    return line.split()[-1]


def test_cli_default_prints_the_note_on_stderr_only(example: Path) -> None:
    code, out, err = _cli(example, "-m", "8G")
    assert code == 0
    assert _event13(out) == STABLE202505_VARIABLE_AUTHORITY_DIGEST.hex()
    assert err.startswith("note: RTMR0 event 13") and "note" not in out


def test_cli_smbios_computed_with_cpu_and_product(example: Path) -> None:
    code, out, err = _cli(
        example,
        "-m",
        "8G",
        "--smbios-computed",
        "--host-cpu",
        "Sapphire Rapids stepping 6",
        "--smbios-product",
        "acme",
    )
    assert code == 0, err
    inputs = SmbiosInputs("8.2.2", 8 * GIB, product="acme", cpuid_eax=0x806F6)
    assert _event13(out) == smbios.event_digest(inputs).hex()
    assert "Sapphire Rapids stepping 6" in err and "product='acme'" in err


def test_cli_options_need_smbios_computed(example: Path) -> None:
    code, _out, err = _cli(example, "--host-cpu", "0xc06f2")
    assert code == 2 and "--smbios-computed" in err


def test_cli_unknown_host_cpu_is_a_bad_input(example: Path) -> None:
    code, _out, err = _cli(example, "--smbios-computed", "--host-cpu", "Pentium")
    assert code == 2 and "unknown host CPU 'Pentium'" in err


# --- search ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual_memory", "cpu", "strings"),
    [
        (16 * GIB, "Emerald Rapids stepping 1", ("dstack", "dstack")),
        (64 * GIB, "Sapphire Rapids stepping 8", (None, None)),
        (6 * GIB, "Granite Rapids stepping 0", ("dstack", "dstack")),
    ],
)
def test_search_proves_the_inputs(
    actual_memory: int, cpu: str, strings: tuple[str | None, str | None]
) -> None:
    host = host_cpu.find_host_cpu(cpu)
    truth = SmbiosInputs("8.2.2", actual_memory, *strings, cpuid_eax=host.eax)
    found = smbios_search.search(smbios.event_digest(truth), 32 * GIB, "8.2.2")
    assert found.found and found.match == truth
    assert found.describe().startswith("SMBIOS event reproduced (proven) by host CPU " + cpu)


def test_search_lists_what_it_tried() -> None:
    found = smbios_search.search(bytes(48), 4 * GIB, "8.2.2", nearby_memory=False)
    assert not found.found and found.match is None
    cpus, pairs = len(host_cpu.KNOWN_TDX_HOST_CPUS), len(smbios_search.KNOWN_SMBIOS_STRINGS)
    assert found.qemu_versions == ((8, 2, 2), (9, 1, 0), (9, 2, 1))
    assert found.tried == 3 * cpus * pairs
    text = found.describe()
    assert "no SMBIOS table reproduces" in text and "memory 4 GiB;" in text
    assert "QEMU 8.2.2, 9.1.0, 9.2.1" in text
    assert "Emerald Rapids steppings 2, 1; Sapphire Rapids steppings 8, 7, 6, 5, 4, 3" in text
    only = smbios_search.search(bytes(48), 4 * GIB, "8.2.2", other_qemu_versions=False)
    assert only.tried == (1 + len(smbios_search.nearby_memory_sizes(4 * GIB))) * cpus * pairs


def test_search_finds_the_qemu_version_the_config_does_not_name() -> None:
    # A VmConfig without qemu_version means 9.1.0 to the reference; the VM ran 8.2.2.
    truth = SmbiosInputs("8.2.2", 16 * GIB)
    found = smbios_search.search(smbios.event_digest(truth), 16 * GIB, "9.1.0", nearby_memory=False)
    assert found.match == truth


def test_fast_per_cpu_digests_equal_the_full_recomputation() -> None:
    base = SmbiosInputs("9.2.1", 24 * GIB, None, None)
    fast = list(smbios_search.digests_by_cpu(base, host_cpu.KNOWN_TDX_HOST_CPUS))
    slow = [
        smbios.event_digest(attrs.evolve(base, cpuid_eax=c.eax, cpuid_edx=c.edx))
        for c in host_cpu.KNOWN_TDX_HOST_CPUS
    ]
    assert fast == slow and len(set(fast)) == len(fast)


@pytest.mark.parametrize(
    ("fmspc", "names"),
    [
        ("B0C06F000000", ["Emerald Rapids stepping 2", "Emerald Rapids stepping 1"]),
        ("00806F050000", [f"Sapphire Rapids stepping {s}" for s in (8, 7, 6, 5, 4, 3)]),
        ("20a06f000000", [f"Sierra Forest stepping {s}" for s in (3, 2, 1, 0)]),
    ],
)
def test_fmspc_narrows_the_host_cpus(fmspc: str, names: list[str]) -> None:
    assert [c.name for c in host_cpu.host_cpus_for_fmspc(fmspc)] == names


def test_unknown_fmspc_gives_every_stepping_and_bad_ones_are_refused() -> None:
    cpus = host_cpu.host_cpus_for_fmspc("00906ED50000")
    assert [c.eax for c in cpus] == [0x906E0 + s for s in range(16)]
    with pytest.raises(ConfigError, match="FMSPC"):
        host_cpu.host_cpus_for_fmspc("B0C06F")


def test_nearby_memory_sizes_are_whole_gib_closest_first() -> None:
    sizes = smbios_search.nearby_memory_sizes(4 * GIB)
    assert sizes[:3] == [3 * GIB, 5 * GIB, 2 * GIB]
    assert len(sizes) == 7 and 4 * GIB not in sizes
    assert len(smbios_search.nearby_memory_sizes(4096 * GIB)) == smbios_search.MAX_NEARBY_SIZES


def test_options_are_frozen_values() -> None:
    options = SmbiosOptions()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.product = "x"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="host_cpu"):
        SmbiosOptions(host_cpu="Emerald Rapids")  # type: ignore[arg-type]
