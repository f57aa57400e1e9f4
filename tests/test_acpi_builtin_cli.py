"""`--acpi-source` on measure: the built-in model next to the dumper and a tables file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dstack_mr.acpi_model import QemuAcpiModel
from dstack_mr.machine import Machine
from dstack_mr_cli.main import app

RUN = CliRunner()


def _json(result_output: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(result_output)
    return data


def test_builtin_equals_the_same_tables_from_a_file(example: Path, tmp_path: Path) -> None:
    common = ["measure", "-c", "4", "-m", "3G", "--qemu-version", "8.2.2", "--json", "--events"]
    builtin = RUN.invoke(app, [*common, "--acpi-source", "builtin", str(example)])
    assert builtin.exit_code == 0, builtin.output
    got = _json(builtin.output)
    assert got["acpi_source"] == "builtin"

    machine = Machine(
        cpu_count=4, memory_size=3 << 30, firmware=str(example.parent / "ovmf.fd"),
        kernel="k", initrd="i", kernel_cmdline="", qemu_version="8.2.2",
    )  # fmt: skip
    blob = tmp_path / "tables.bin"
    blob.write_bytes(QemuAcpiModel().acpi_tables(machine.dumper_invocation()))
    from_file = RUN.invoke(app, [*common, "--acpi-tables", str(blob), str(example)])
    assert from_file.exit_code == 0, from_file.output
    expected = _json(from_file.output)
    assert str(expected["acpi_source"]).startswith("file ")
    for reg in ("mrtd", "rtmr0", "rtmr1", "rtmr2"):
        assert got[reg] == expected[reg]


def test_auto_falls_back_to_builtin_without_a_dumper(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("DSTACK_MR_ACPI_DUMPER", raising=False)
    result = RUN.invoke(app, ["measure", "--acpi-source", "auto", "--events", str(example)])
    assert result.exit_code == 0, result.output
    assert "ACPI tables from: builtin" in result.output


def test_builtin_refuses_an_uncovered_qemu_version(example: Path) -> None:
    args = ["measure", "--qemu-version", "10.0.0", "--acpi-source", "builtin", str(example)]
    result = RUN.invoke(app, args)
    assert result.exit_code == 2
    assert "QEMU_ACPI_COMPAT_VER=10.0.0" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--acpi-source", "builtin", "--acpi-tables", "x.bin"],
        ["--acpi-source", "file"],
        ["--acpi-source", "dumper", "--acpi-tables", "x.bin"],
    ],
)
def test_contradictory_acpi_options_are_usage_errors(example: Path, args: list[str]) -> None:
    result = RUN.invoke(app, ["measure", *args, str(example)])
    assert result.exit_code == 2
    assert "acpi" in result.output.lower()
