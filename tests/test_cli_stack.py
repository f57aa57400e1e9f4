"""The CLI's stack: --version, --debug on every command, true|false options, help, colour,
and a library that never pulls in the CLI's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main
from conftest import FakeDumper
from typer.testing import CliRunner

import dstack_mr
from dstack_mr_cli.base import expand_bool_aliases
from dstack_mr_cli.main import app

RUN = CliRunner()


def commands() -> dict[str, click.Command]:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    return dict(group.commands)


def test_version() -> None:
    result = RUN.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"dstack-mr {dstack_mr.__version__}\n"


def test_every_command_takes_debug_and_shows_argument_help() -> None:
    cmds = commands()
    assert {"measure", "diagnose", "example"} <= cmds.keys()
    for name in cmds:
        result = RUN.invoke(app, [name, "--debug", "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "--debug" in result.output, name
        assert "Positional arguments" not in result.output, name
    text = RUN.invoke(app, ["measure", "--help"]).output
    assert text.count("METADATA  The image's metadata.json.") == 1, text
    assert "DIRECTORY  Where to write the example image." in RUN.invoke(
        app, ["example", "--help"]
    ).output.replace("\n", " ")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_keeps_the_exit_code(example: Path, where: str) -> None:
    bad = ["measure", "-c", "2", "--acpi-tables", "/nonexistent/tables.bin", str(example)]
    plain = RUN.invoke(app, bad)
    debug = RUN.invoke(app, ["--debug", *bad] if where == "before" else [*bad, "--debug"])
    assert plain.exit_code == debug.exit_code == 2
    assert "Traceback" not in plain.output and "Traceback" in debug.stderr
    assert plain.stderr.splitlines()[-1] == debug.stderr.splitlines()[-1]
    # --debug on one run does not leak into the next.
    assert "Traceback" not in RUN.invoke(app, bad).output


@pytest.mark.parametrize("command", ["example", "measurement-doc"])
def test_debug_on_unwritable_output(tmp_path: Path, example: Path, command: str) -> None:
    """A file-write error: one line and exit 2; --debug adds the traceback, same exit code."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    where = str(blocker / "sub")
    args = [command, where] if command == "example" else [command, str(example.parent), "-o", where]
    plain, debug = RUN.invoke(app, args), RUN.invoke(app, [*args, "--debug"])
    assert plain.exit_code == debug.exit_code == 2
    assert plain.stderr == f"error: cannot write {where}: Not a directory\n"
    assert "Traceback" in debug.stderr and "NotADirectoryError" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.strip()


def test_bool_aliases_expand_without_swallowing_arguments() -> None:
    params: list[click.Parameter] = [
        click.Option(["--smm"], metavar="true|false"),
        click.Option(["--hugepages"], metavar="true|false"),
        click.Option(["--name"]),
    ]
    expand = lambda *a: expand_bool_aliases(params, list(a))  # noqa: E731
    assert expand("--hugepages", "meta.json") == ["--hugepages=true", "meta.json"]
    assert expand("--hugepages") == ["--hugepages=true"]
    assert expand("--hugepages", "false", "m") == ["--hugepages", "false", "m"]
    assert expand("--smm", "--hugepages", "true") == ["--smm=true", "--hugepages", "true"]
    assert expand("--smm=false", "--name", "--smm") == ["--smm=false", "--name", "--smm=true"]
    assert expand("--", "--smm") == ["--", "--smm"]
    assert expand("--smm", "maybe") == ["--smm=true", "maybe"]
    # Near-misses stay the option's value, so the error names the option.
    assert expand("--smm", "TRUE") == ["--smm", "TRUE"]


def test_bool_options_take_values_and_bare_aliases(
    example: Path, fake_dumper: FakeDumper, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dumper.serve(example.parent / "acpi-tables.bin")
    runs = {
        "bare": ["--hugepages", "--smm"],
        "valued": ["--hugepages", "true", "--smm", "true"],
        "equals": ["--hugepages=true", "--smm=true"],
        "off": ["--hugepages", "false", "--smm", "false"],
    }
    argvs = {}
    for name, flags in runs.items():
        fake_dumper.reset()
        result = RUN.invoke(app, ["measure", *flags, str(example)])
        assert result.exit_code == 0, (name, result.output)
        (call,) = fake_dumper.calls()
        argvs[name] = call["argv"]
    assert argvs["bare"] == argvs["valued"] == argvs["equals"] != argvs["off"]
    assert "smm=on" in str(argvs["bare"]) and "smm=off" in str(argvs["off"])
    wrong = RUN.invoke(app, ["measure", "--hugepages", "yes", str(example)])
    assert wrong.exit_code == 2 and "'yes' is not 'true' or 'false'" in wrong.output


def test_color_always_is_kept_in_a_pipe(example: Path) -> None:
    vm = example.parent / "vm.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 << 30}))
    base = ["diagnose", "--vm-config", str(vm), "--image-dir", str(example.parent),
            "--acpi-tables", str(example.parent / "acpi-tables.bin"),
            "--actual-rtmr0", "00" * 48]  # fmt: skip
    coloured = RUN.invoke(app, [*base, "--color", "always"])
    plain = RUN.invoke(app, [*base, "--color", "never"])
    auto = RUN.invoke(app, base)  # CliRunner's output is not a terminal
    assert coloured.exit_code == plain.exit_code == auto.exit_code == 1
    assert "\x1b[31m" in coloured.output
    assert "\x1b[" not in plain.output and "\x1b[" not in auto.output


def test_library_never_imports_the_cli_stack() -> None:
    code = (
        "import pkgutil, importlib, sys, dstack_mr\n"
        "for m in pkgutil.walk_packages(dstack_mr.__path__, 'dstack_mr.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('typer', 'click', 'rich', 'dstack_mr_cli'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("missing", ["typer", "click"])
def test_console_script_without_the_cli_extra(missing: str) -> None:
    """typer/click not installed (the library without ``[cli]``): one line and exit 2."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] == {missing!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "for name in [m for m in sys.modules if m.split('.')[0] in ('typer', 'click')]:\n"
        "    del sys.modules[name]\n"
        "sys.argv = ['dstack-mr', 'measure', '--help']\n"
        "from dstack_mr_cli.entry import run\n"
        "run()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "dstack-mr: the command needs the cli extra (typer, click): pip install 'dstack-mr[cli]'\n"
    )
