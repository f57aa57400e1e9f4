"""Small API contracts: JSON objects accepted as configs, readable reprs, truncated kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dstack_mr import AcpiTablesFile, ConfigError, Machine, VmConfig, events, kernel
from dstack_mr.config import ImageInfo
from dstack_mr.example import build_kernel, write_example_image
from dstack_mr.image import Image, machine_for
from dstack_mr_cli.main import app

GIB = 1 << 30


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return write_example_image(tmp_path / "img")


def test_from_json_takes_a_parsed_object() -> None:
    doc = {"cpu_count": 2, "memory_size": 2 * GIB, "pic": True}
    assert VmConfig.from_json(doc) == VmConfig.from_json(json.dumps(doc))
    assert VmConfig.from_json(doc) == VmConfig(cpu_count=2, memory_size=2 * GIB, pic=True)
    # The same strictness as for text: a string is not a number.
    with pytest.raises(ConfigError, match="cpu_count"):
        VmConfig.from_json({"cpu_count": "2"})
    info = {"cmdline": "c", "kernel": "k", "initrd": "i", "bios": "b"}
    assert ImageInfo.from_json(info) == ImageInfo.from_json(json.dumps(info))


def test_reprs_say_what_matters(example: Path) -> None:
    image = Image.load(example.parent, AcpiTablesFile(example.parent / "acpi-tables.bin"))
    before = repr(image)
    assert before.startswith(f"<Image {str(example.parent)!r}") and "0 MRTD" in before
    vm = VmConfig(cpu_count=2, memory_size=2 * GIB)
    image.measure(vm)
    after = repr(image)
    assert "1 MRTD" in after and "1/64 kernel digests" in after and "1/64 blobs" in after

    machine = machine_for(vm, image.files)
    text = repr(machine)
    assert text.startswith("Machine(cpu_count=2, memory_size=2147483648, firmware=")
    assert "smm=" not in text and "ovmf_variant" not in text  # defaults are left out
    smm = Machine(**{**{k: getattr(machine, k) for k in ("cpu_count", "memory_size",
                  "firmware", "kernel", "initrd", "kernel_cmdline")}, "smm": True})  # fmt: skip
    assert repr(smm).endswith(", smm=True)")


def truncated_kernel(example: Path) -> tuple[bytes, int]:
    whole = build_kernel()
    end = kernel.pe_layout(whole, len(whole)).data_end
    assert end <= len(whole)
    cut = whole[: end - 5000]  # after the headers, inside the last sections
    (example.parent / "bzImage").write_bytes(cut)
    return cut, end


def test_truncated_kernel_keeps_the_digest_and_is_reported(example: Path) -> None:
    assert kernel.truncation_warning(build_kernel()) is None
    cut, end = truncated_kernel(example)
    warning = kernel.truncation_warning(cut)
    assert warning is not None
    assert f"kernel is {len(cut)} bytes" in warning and f"describes {end} bytes" in warning
    assert f"({end - len(cut)} bytes missing)" in warning

    acpi = AcpiTablesFile(example.parent / "acpi-tables.bin")
    image = Image.load(example.parent, acpi)
    vm = VmConfig(cpu_count=2, memory_size=2 * GIB)
    details = image.measure(vm)
    assert details.warnings == (warning,)
    assert details == image.machine(vm).measure_with_logs(acpi)
    # The reference's digest: the bytes that are there, the section sizes as declared.
    (rtmr1_first, *_) = details.rtmr_logs[1]
    assert rtmr1_first.label == events.KERNEL_AUTHENTICODE
    assert rtmr1_first.digest == kernel.patched_kernel_digest(
        cut, image.initrd_size, vm.memory_size
    )


def test_truncated_kernel_warns_on_stderr(example: Path) -> None:
    cut, end = truncated_kernel(example)
    args = ["measure", "-c", "2", "--acpi-tables", str(example.parent / "acpi-tables.bin")]
    result = CliRunner().invoke(app, [*args, "--json", str(example)])
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # stdout stays pure JSON
    (line,) = result.stderr.splitlines()
    assert line.startswith("warning: kernel is") and f"({end - len(cut)} bytes missing)" in line
    whole = CliRunner().invoke(app, [*args, str(write_example_image(example.parent / "w"))])
    assert whole.exit_code == 0 and whole.stderr == ""
