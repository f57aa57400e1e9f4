"""Which ACPI source an operator's choice names (dstack_mr.acpi_source), library-level."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dstack_mr.acpi import AcpiDumper, AcpiTablesFile
from dstack_mr.acpi_model import QemuAcpiModel
from dstack_mr.acpi_source import acpi_source_for
from dstack_mr.errors import ConfigError


def test_each_kind_names_its_source(tmp_path: Path) -> None:
    tables = tmp_path / "t.bin"
    assert acpi_source_for(None, tables) == AcpiTablesFile(tables)
    assert acpi_source_for("file", tables) == AcpiTablesFile(tables)
    assert acpi_source_for(None, None, "/x/dumper", 7.0) == AcpiDumper("/x/dumper", 7.0)
    assert acpi_source_for("dumper", timeout=3.0) == AcpiDumper(None, 3.0)
    # builtin never runs a dumper, even an installed one; auto runs it when it is installed.
    assert isinstance(acpi_source_for("builtin", None, "/bin/sh"), QemuAcpiModel)
    assert acpi_source_for("auto", None, "/bin/sh", 5.0) == AcpiDumper("/bin/sh", 5.0)
    assert isinstance(acpi_source_for("auto", None, str(tmp_path / "none")), QemuAcpiModel)


@pytest.mark.parametrize(
    ("kind", "tables", "dumper", "message"),
    [
        (None, "t.bin", "/x", "give either --acpi-tables or --acpi-dumper, not both"),
        ("builtin", "t.bin", None, "--acpi-source builtin does not read --acpi-tables"),
        ("auto", "t.bin", None, "--acpi-source auto does not read --acpi-tables"),
        ("file", None, None, "--acpi-source file needs --acpi-tables FILE"),
        ("dumper", "t.bin", None, "--acpi-source dumper does not read --acpi-tables"),
        ("log", None, None, "unknown ACPI source 'log' (expected one of auto, dumper, file, "
         "builtin)"),
    ],
)  # fmt: skip
def test_contradictions_are_config_errors(
    kind: str | None, tables: str | None, dumper: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        acpi_source_for(kind, tables, dumper)
