"""The `dstack-mr measure` / `example` commands and the CLI's error contract."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import TESTS_BIN, FakeDumper, load_vectors, shared_path
from typer.testing import CliRunner

from dstack_mr import PathEscapeError
from dstack_mr_cli.main import app

RUN = CliRunner()


def measure(meta: Path, *args: str) -> list[str]:
    acpi = meta.parent / "acpi-tables.bin"
    return ["measure", *args, "--acpi-tables", str(acpi), str(meta)]


def test_measure_text_matches_reference_vector(tmp_path: Path) -> None:
    inputs = shared_path("inputs")  # skips first when ../shared is absent
    vector = next(v for v in load_vectors() if v["name"] == "default-2cpu-2g")
    d = tmp_path / "img"
    d.mkdir()
    for key in ("firmware", "kernel", "initrd"):
        shutil.copy(inputs / vector["inputs"][key], d / vector["inputs"][key])
    cmdline = vector["cmdline"].removesuffix(" initrd=initrd")
    meta = {"bios": vector["inputs"]["firmware"], "kernel": vector["inputs"]["kernel"],
            "initrd": vector["inputs"]["initrd"], "cmdline": cmdline}  # fmt: skip
    (d / "metadata.json").write_text(json.dumps(meta))
    acpi = inputs / vector["inputs"]["acpi_tables"]
    args = ["measure", "-c", "2", "-m", "2G", "--acpi-tables", str(acpi), str(d / "metadata.json")]
    result = RUN.invoke(app, args)
    assert result.exit_code == 0, result.output
    want = vector["expected"]
    assert result.output == (
        "Machine measurements:\n"
        f"MRTD: {want['mrtd']}\nRTMR0: {want['rtmr0']}\n"
        f"RTMR1: {want['rtmr1']}\nRTMR2: {want['rtmr2']}\n"
    )
    as_json = RUN.invoke(app, [*args, "--json"])
    assert json.loads(as_json.output) == {k: want[k] for k in ("mrtd", "rtmr0", "rtmr1", "rtmr2")}
    assert as_json.output.startswith('{\n  "mrtd": "')  # serde_json's pretty layout


def rtmr0_events(meta: Path, *args: str) -> int:
    result = RUN.invoke(app, [*measure(meta, *args), "--json", "--events"])
    assert result.exit_code == 0, result.output
    # stdout only: stable202505 results add a note on stderr.
    return len(json.loads(result.stdout)["rtmr_logs"][0])


def set_metadata(meta: Path, **changes: str) -> None:
    doc = json.loads(meta.read_text())
    doc.update(changes)
    meta.write_text(json.dumps(doc))


def test_ovmf_variant_precedence(example: Path) -> None:
    assert rtmr0_events(example) == 13  # metadata version 0.5.4
    set_metadata(example, version="0.6.1")
    assert rtmr0_events(example) == 17
    assert rtmr0_events(example, "--dstack-os-version", "0.5.9") == 13  # flag beats metadata
    set_metadata(example, ovmf_variant="pre202505")
    assert rtmr0_events(example) == 13  # metadata ovmf_variant beats metadata version
    assert rtmr0_events(example, "--dstack-os-version", "0.6.1") == 17
    assert rtmr0_events(example, "--ovmf-variant", "stable202505") == 17
    set_metadata(example, ovmf_variant="", version="0.6")
    bad = RUN.invoke(app, measure(example))
    assert bad.exit_code == 2 and bad.output.startswith("error: ")


def test_memory_and_bool_options(example: Path) -> None:
    def mrs(*args: str) -> dict[str, str]:
        result = RUN.invoke(app, [*measure(example, *args), "--json"])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.output))

    base = mrs()
    assert mrs("-m", "2048M") == mrs("--memory", "0x80000000") == mrs("-m", "2147483648") == base
    assert mrs("-m", "4G")["rtmr0"] != base["rtmr0"]
    assert mrs("--two-pass-add-pages", "true")["mrtd"] != base["mrtd"]
    assert mrs("--two-pass-add-pages", "false") == base
    assert mrs("--qemu-version", "8.2.2")["mrtd"] == mrs("--two-pass-add-pages", "true")["mrtd"]
    for args in (["--smm", "maybe"], ["-m", "2X"], ["--cpu", "-1"]):
        result = RUN.invoke(app, measure(example, *args))
        assert result.exit_code == 2, args


def test_dumper_argument_and_env(
    example: Path, fake_dumper: FakeDumper, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dumper.serve(example.parent / "acpi-tables.bin")
    # python3 stays reachable for the script's shebang; the dumper only as configured here.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    program = str(TESTS_BIN / "dstack-acpi-tables")
    args = ["measure", "-c", "3", "--smm", "true", "--acpi-dumper", program, str(example)]
    result = RUN.invoke(app, args)
    assert result.exit_code == 0, result.output
    (call,) = fake_dumper.calls()
    argv = call["argv"]
    assert isinstance(argv, list)
    assert argv[:4] == ["-cpu", "qemu64", "-smp", "3"] and call["compat_ver"] == "9.1.0"
    assert str(example.parent / "ovmf.fd") in argv and argv[-1].endswith("smm=on,pic=off")

    monkeypatch.setenv("DSTACK_MR_ACPI_DUMPER", program)
    assert RUN.invoke(app, ["measure", str(example)]).exit_code == 0
    assert len(fake_dumper.calls()) == 2


def test_missing_dumper_one_line_exit_2(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("DSTACK_MR_ACPI_DUMPER", raising=False)
    result = RUN.invoke(app, ["measure", str(example)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ACPI dumper 'dstack-acpi-tables'")
    assert "--acpi-tables" in lines[0] and "Traceback" not in result.output


def test_debug_shows_the_exception(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("DSTACK_MR_ACPI_DUMPER", raising=False)
    result = RUN.invoke(app, ["--debug", "measure", str(example)])
    # The traceback is added; the exit code stays that of a bad input.
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "DumperNotFoundError" in result.stderr
    assert "ACPI dumper 'dstack-acpi-tables' (looked up on PATH) was not found" in result.stderr


@pytest.mark.parametrize("field", ["bios", "kernel", "initrd"])
@pytest.mark.parametrize("name", ["../outside.fd", "/etc/passwd", "sub/../../x"])
def test_path_escape_rejected(example: Path, field: str, name: str) -> None:
    set_metadata(example, **{field: name})
    result = RUN.invoke(app, measure(example))
    assert result.exit_code == 2
    assert result.output.startswith("error: metadata") and repr(name) in result.output


def test_symlink_escape_rejected(example: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.fd"
    shutil.copy(example.parent / "ovmf.fd", outside)
    (example.parent / "link.fd").symlink_to(outside)
    set_metadata(example, bios="link.fd")
    result = RUN.invoke(app, ["--debug", *measure(example)])
    assert result.exit_code == 2
    assert f"{PathEscapeError.__module__}.PathEscapeError" in result.stderr
    assert "symlink" in result.stderr.splitlines()[-1]


def test_example_command(tmp_path: Path) -> None:
    result = RUN.invoke(app, ["example", str(tmp_path / "ex")])
    assert result.exit_code == 0
    assert (tmp_path / "ex" / "metadata.json").is_file()
    shown = RUN.invoke(app, measure(tmp_path / "ex" / "metadata.json", "-c", "2"))
    assert shown.exit_code == 0 and shown.output.startswith("Machine measurements:\nMRTD: ")


@pytest.mark.parametrize("image", ["../img", "/etc", "img/../../img", "", "link"])
def test_vm_config_image_escape_rejected(example: Path, tmp_path: Path, image: str) -> None:
    base = tmp_path / "images"
    base.mkdir()
    (base / "link").symlink_to(example.parent)  # a symlink leading out of the base dir
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 << 30, "image": image}))
    args = ["diagnose", "--vm-config", str(vm), "--image-base-dir", str(base),
            "--acpi-tables", str(example.parent / "acpi-tables.bin")]  # fmt: skip
    result = RUN.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: vm_config.image")


def test_vm_config_image_inside_base_dir(example: Path, tmp_path: Path) -> None:
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 << 30, "image": "img"}))
    args = ["diagnose", "--vm-config", str(vm), "--image-base-dir", str(example.parent.parent),
            "--acpi-tables", str(example.parent / "acpi-tables.bin"), "--verbose"]  # fmt: skip
    result = RUN.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "=== RTMR0 event log (13 entries) ===" in result.output
