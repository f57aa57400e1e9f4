"""Which ACPI tables source an operator's choice names (``measure``, ``verify``).

``kind`` is ``"dumper"``, ``"file"``, ``"builtin"``, ``"auto"`` or ``None`` (a tables file
when one is given, else the dumper). ``diagnose`` has its own wider choice, which can also
fall back to the event log (:func:`dstack_mr.diagnose.resolve_acpi`).
"""

from __future__ import annotations

import os

from .acpi import DEFAULT_TIMEOUT, AcpiDumper, AcpiSource, AcpiTablesFile
from .errors import ConfigError

KINDS = ("auto", "dumper", "file", "builtin")


def acpi_source_for(
    kind: str | None = None,
    tables: str | os.PathLike[str] | None = None,
    dumper: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> AcpiSource:
    """The source ``kind`` names: ``file`` reads ``tables``; ``dumper`` runs ``dumper`` (default:
    ``$DSTACK_MR_ACPI_DUMPER``, then PATH); ``builtin`` is the model of dstack's QEMU; ``auto``
    the dumper when it is installed, else the model. Raises ConfigError for a combination
    that names two sources or none."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown ACPI source {kind!r} (expected one of {', '.join(KINDS)})")
    if tables is not None and dumper is not None:
        raise ConfigError("give either --acpi-tables or --acpi-dumper, not both")
    if kind in ("builtin", "auto"):
        if tables is not None:
            raise ConfigError(f"--acpi-source {kind} does not read --acpi-tables")
        from .acpi_model import QemuAcpiModel, auto_source

        if kind == "builtin":
            return QemuAcpiModel()
        return auto_source(AcpiDumper(program=dumper, timeout=timeout))
    if kind == "file" and tables is None:
        raise ConfigError("--acpi-source file needs --acpi-tables FILE")
    if kind == "dumper" and tables is not None:
        raise ConfigError("--acpi-source dumper does not read --acpi-tables")
    if tables is not None:
        return AcpiTablesFile(tables)
    return AcpiDumper(program=dumper, timeout=timeout)
