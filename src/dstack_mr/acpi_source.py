"""Where RTMR0's ACPI tables come from: an operator's choice of source, and diagnose's wider one.

:func:`acpi_source_for` (``measure``, ``verify``): ``kind`` is ``"dumper"``, ``"file"``,
``"builtin"``, ``"auto"`` or ``None`` (a tables file when one is given, else the dumper).
:func:`resolve_acpi` (``diagnose``) can also fall back to the VM's event log, and returns an
:class:`AcpiChoice` that says whether the digests it gives are verified.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from .acpi import DEFAULT_TIMEOUT, AcpiDumper, AcpiSource, AcpiTablesFile
from .acpi_log import AcpiDigests, acpi_digests_from_log
from .errors import ConfigError, DumperNotFoundError, EvidenceError

if TYPE_CHECKING:
    from .eventlog import Event

__all__ = ["ACPI_MODES", "KINDS", "AcpiChoice", "acpi_source_for", "resolve_acpi"]

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
    if kind == "file":
        return _tables_file(tables)
    if kind == "dumper" and tables is not None:
        raise ConfigError("--acpi-source dumper does not read --acpi-tables")
    if tables is not None:
        return AcpiTablesFile(tables)
    return AcpiDumper(program=dumper, timeout=timeout)


#: diagnose's wider choice: the sources above, or the VM's own event log.
ACPI_MODES = (*KINDS, "log")


@attrs.frozen
class AcpiChoice:
    """Where the expected ACPI digests come from, and whether they can be trusted.

    ``kind``: ``dumper`` / ``file`` / ``builtin`` (tables predicted for this configuration:
    verified), ``log`` (the VM's own three digests: taken from the log, not verified) or
    ``none`` (ACPI not judged: RTMR0 cannot be predicted). ``fallback`` is used when this
    source cannot serve the configuration (``auto`` picking the built-in model for a QEMU
    version it does not cover).
    """

    kind: str
    description: str
    source: AcpiSource | AcpiDigests | None = attrs.field(default=None, repr=False)
    #: False when the digests are the VM's own claim (or unknown).
    verified: bool = True
    fallback: AcpiChoice | None = attrs.field(default=None, repr=False)

    @property
    def judged(self) -> bool:
        return self.kind != "none"

    @classmethod
    def from_source(cls, source: AcpiSource) -> AcpiChoice:
        if isinstance(source, AcpiTablesFile):
            return cls("file", f"ACPI tables from {source.path}", source)
        if isinstance(source, AcpiDumper):
            return cls("dumper", "ACPI tables from the dumper", source)
        name = getattr(source, "source_name", type(source).__name__)
        if name == "builtin":
            return cls("builtin", "ACPI tables from the built-in model of dstack's QEMU", source)
        return cls(str(name), f"ACPI tables from {name}", source)

    @classmethod
    def from_log(cls, events: Sequence[Event]) -> AcpiChoice:
        return cls(
            "log",
            "ACPI digests taken from the event log, not verified",
            acpi_digests_from_log(events),
            verified=False,
        )

    @classmethod
    def none(cls, why: str) -> AcpiChoice:
        return cls("none", f"ACPI not judged: {why}", verified=False)

    @classmethod
    def log_or_none(cls, events: Sequence[Event] | None, why: str) -> AcpiChoice:
        """The event log's digests, else not judged: ``why`` there is no better source, and
        what is wrong with the log."""
        if events is not None:
            try:
                return cls.from_log(events)
            except EvidenceError as exc:
                return cls.none(f"{why}, and {exc}")
        return cls.none(f"{why}, and no event log was given")


def _tables_file(tables: str | os.PathLike[str] | None) -> AcpiTablesFile:
    """The tables file ``--acpi-source file`` reads, which must be given."""
    if tables is None:
        raise ConfigError("--acpi-source file needs --acpi-tables FILE")
    return AcpiTablesFile(tables)


def _dumper_choice(dumper: AcpiDumper) -> AcpiChoice:
    """The dumper, named by the program it resolves to (DumperNotFoundError when none)."""
    found = dumper.resolve()
    return attrs.evolve(
        AcpiChoice.from_source(dumper), description=f"ACPI tables from the dumper {found}"
    )


def _builtin() -> AcpiChoice:
    from .acpi_model import QemuAcpiModel  # the model's modules load only when used

    return AcpiChoice.from_source(QemuAcpiModel())


def resolve_acpi(
    mode: str,
    *,
    tables: str | os.PathLike[str] | None = None,
    dumper: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    events: Sequence[Event] | None = None,
) -> AcpiChoice:
    """Pick the ACPI source for a diagnosis.

    ``auto``: an explicitly given tables file or dumper program; else the dumper when it is
    found (``$DSTACK_MR_ACPI_DUMPER`` or PATH); else the built-in model of dstack's QEMU for
    the QEMU versions it covers; else the event log's three ACPI digests (not verified); else
    nothing (RTMR0 is then not judged, everything else still is). The other modes insist on
    their source and raise when it is unavailable.
    """
    if mode not in ACPI_MODES:
        raise ConfigError(f"unknown ACPI source {mode!r} (expected one of {', '.join(ACPI_MODES)})")
    if tables is not None and dumper is not None:
        raise ConfigError("give either an ACPI tables file or a dumper program, not both")
    dumper_source = AcpiDumper(program=dumper, timeout=timeout)
    if mode == "file" or (mode == "auto" and tables is not None):
        return AcpiChoice.from_source(_tables_file(tables))
    if mode == "dumper" or (mode == "auto" and dumper is not None):
        return _dumper_choice(dumper_source)
    if mode == "builtin":
        return _builtin()
    if mode == "log":
        if events is None:
            raise EvidenceError("--acpi-source log needs an event log (--attestation, --event-log)")
        return AcpiChoice.from_log(events)
    try:
        return _dumper_choice(dumper_source)
    except DumperNotFoundError:
        return attrs.evolve(
            _builtin(),
            fallback=AcpiChoice.log_or_none(
                events, "no dumper was found, no --acpi-tables file, the built-in model does "
                "not cover this QEMU version"
            ),
        )  # fmt: skip
