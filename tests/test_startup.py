"""What `dstack-mr measure` loads: the lazy package, the lazily imported and built commands,
and the cattrs-free metadata.json path give the same answers as the eager ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dstack_mr
from dstack_mr import config
from dstack_mr.config import ImageInfo
from dstack_mr.example import write_example_image

#: Modules the measure command has no use for (each costs start-up time).
NOT_ON_MEASURE_PATH = {
    "cattrs",
    "concurrent.futures",
    "dstack_mr.acpi_model",
    "dstack_mr.attestation",
    "dstack_mr.cbor",
    "dstack_mr.ccel",
    "dstack_mr.diagnose",
    "dstack_mr.diagnose_files",
    "dstack_mr.event_payload",
    "dstack_mr.eventlog",
    "dstack_mr.evidence_files",
    "dstack_mr.inspect_doc",
    "dstack_mr.lite",
    "dstack_mr.measurement_doc",
    "dstack_mr.quote",
    "dstack_mr.report_text",
    "dstack_mr.scale",
    "dstack_mr.smbios",
    "dstack_mr.snp",
    "dstack_mr.snp_text",
    "dstack_mr.verify",
    "dstack_mr_cli.diagnose_cmd",
    "dstack_mr_cli.example_cmd",
    "dstack_mr_cli.measurement_cmd",
    "dstack_mr_cli.snp",
    "dstack_mr_cli.verify_cmd",
}

_LOADED = """
import json, sys
from dstack_mr_cli.main import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_modules(*argv: str) -> tuple[str, set[str]]:
    """(stdout, modules loaded) of one CLI run in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, *argv], capture_output=True, text=True, timeout=120
    )
    return result.stdout, set(json.loads(result.stderr.strip().splitlines()[-1]))


def test_measure_loads_only_what_it_uses(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    tables = str(tmp_path / "img" / "acpi-tables.bin")
    out, modules = loaded_modules("measure", "--json", "--acpi-tables", tables, str(meta))
    assert set(json.loads(out)) == {"mrtd", "rtmr0", "rtmr1", "rtmr2"}
    assert not modules & NOT_ON_MEASURE_PATH, sorted(modules & NOT_ON_MEASURE_PATH)


def test_stable202505_measure_keeping_the_smbios_constant_loads_no_smbios(tmp_path: Path) -> None:
    """The note on the reference's constant is uefi's: only --smbios-computed needs smbios."""
    meta = write_example_image(tmp_path / "img")
    tables = str(tmp_path / "img" / "acpi-tables.bin")
    argv = ("measure", "--ovmf-variant", "stable202505", "--acpi-tables", tables, str(meta))
    out, modules = loaded_modules(*argv, "--json")
    assert set(json.loads(out)) == {"mrtd", "rtmr0", "rtmr1", "rtmr2"}
    assert not modules & {"dstack_mr.smbios", "dstack_mr.host_cpu"}, sorted(modules)
    out, modules = loaded_modules(*argv, "--smbios-computed", "--json")
    assert set(json.loads(out)) == {"mrtd", "rtmr0", "rtmr1", "rtmr2"}
    assert {"dstack_mr.smbios", "dstack_mr.host_cpu"} <= modules


def test_import_dstack_mr_loads_no_submodule_but_errors() -> None:
    code = "import sys, dstack_mr; print(sorted(m for m in sys.modules if 'dstack_mr' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['dstack_mr', 'dstack_mr.errors']"


def test_lazy_names_are_the_modules_objects() -> None:
    from dstack_mr import image, machine

    assert dstack_mr.Machine is machine.Machine
    assert dstack_mr.Image is image.Image
    assert set(dir(dstack_mr)) >= set(dstack_mr.__all__)
    for name in dstack_mr.__all__:
        assert getattr(dstack_mr, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = dstack_mr.nothing  # type: ignore[attr-defined]


def test_commands_are_built_on_lookup_only() -> None:
    import typer.main

    from dstack_mr_cli.main import app

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    names = group.list_commands(None)  # type: ignore[arg-type]
    assert names[0] == "measure" and {"diagnose", "verify", "example"} <= set(names)
    assert group._built == {}  # type: ignore[attr-defined]
    assert group.get_command(None, "measure") is not None  # type: ignore[arg-type]
    assert set(group._built) == {"measure"}  # type: ignore[attr-defined]
    assert list(group.commands) == names
    assert group.get_command(None, "no-such-command") is None  # type: ignore[arg-type]


def test_command_modules_name_every_command_they_declare() -> None:
    import importlib

    from dstack_mr_cli.main import app

    for module in set(app.command_modules.values()):
        importlib.import_module(module)
    declared = {
        info.name or info.callback.__name__.replace("_", "-"): info.callback.__module__
        for info in app.deferred
        if info.callback is not None
    }
    assert declared == {"measure": "dstack_mr_cli.main", **app.command_modules}


_HELP_ORDER = """
import sys, typer.main
from dstack_mr_cli.main import app
names = typer.main.get_command(app).list_commands(None)
print(" ".join(names), any(m.endswith("_cmd") for m in sys.modules))
"""


def test_help_lists_every_command_in_order_before_importing_any() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _HELP_ORDER], capture_output=True, text=True, check=True
    ).stdout.split()
    order = ["measure", "diagnose", "example", "measurement-doc", "inspect-measurement", "verify"]
    assert out == [*order, "False"]
    help_text = subprocess.run(
        [sys.executable, "-m", "dstack_mr_cli", "--help"], capture_output=True, text=True
    ).stdout
    listed = [line.split()[0] for line in help_text.split("Commands:")[1].splitlines()[1:7]]
    assert listed == order


_text = st.text(max_size=8) | st.sampled_from(["a\x00b", "\udc80", "ok"])
_value = st.none() | st.integers() | st.booleans() | _text | st.lists(st.integers(), max_size=2)


@given(
    st.dictionaries(
        st.sampled_from(["cmdline", "kernel", "initrd", "bios", "version", "ovmf_variant", "x"]),
        _value | st.sampled_from(["pre202505", "stable202505"]),
    )
)
def test_plain_metadata_path_agrees_with_the_converter(obj: dict[str, Any]) -> None:
    plain = config._plain_image_info(obj)
    try:
        expected: ImageInfo | None = config._converter().structure(obj, ImageInfo)
    except Exception:
        expected = None
    if plain is not None:
        assert plain == expected
    elif expected is not None:
        # only an ovmf_variant sends a valid object to the converter
        assert "ovmf_variant" in obj
