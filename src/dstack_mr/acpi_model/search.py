"""Which machine configuration reproduces a VM's three ACPI digests.

Given the loader, RSDP and tables digests a real VM measured (its event log) and the
configuration it claims, try the configurations that differ in the inputs the tables depend
on (CPU count, GPUs, NVSwitches, hotplug, memory, hugepages, ...) and report those whose
recomputed digests equal all three. A reported match is therefore proven by recomputation
(it is a fact, not a guess); an empty result proves only that no candidate tried matches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .. import acpi
from ..acpi_log import AcpiDigests
from ..errors import ConfigError
from ..machine import Machine
from . import QemuAcpiModel

#: Machine fields the search may vary, and what they default to trying.
DEFAULT_AXES: dict[str, Sequence[Any]] = {
    "cpu_count": range(1, 129),
    "num_gpus": range(0, 9),
    "hotplug_off": (False, True),
}


@attrs.frozen
class AcpiMatch:
    """A configuration whose recomputed loader, RSDP and tables digests equal the VM's."""

    changes: tuple[tuple[str, Any], ...]  # (field, value) that differ from the claimed machine
    machine: Machine

    def describe(self) -> str:
        if not self.changes:
            return "the claimed configuration"
        return ", ".join(f"{k}={v!r}" for k, v in self.changes)


def _digests(model: QemuAcpiModel, invocation: acpi.DumperInvocation) -> AcpiDigests:
    built = acpi.build_tables(model.acpi_tables(invocation))
    return AcpiDigests(built.loader_digest, built.rsdp_digest, built.tables_digest)


def digests_of(machine: Machine, model: QemuAcpiModel | None = None) -> AcpiDigests:
    return _digests(model or QemuAcpiModel(), machine.dumper_invocation())


def search_acpi_config(
    actual: AcpiDigests,
    claimed: Machine,
    axes: Mapping[str, Iterable[Any]] | None = None,
    *,
    model: QemuAcpiModel | None = None,
    limit: int = 20,
    seen: set[acpi.DumperInvocation] | None = None,
) -> list[AcpiMatch]:
    """Configurations (the claimed one varied along ``axes``) that reproduce ``actual``.

    Candidates the model refuses (an uncovered QEMU version, more devices than PCI slots)
    are skipped; they can neither match nor mislead. Invocations in ``seen`` are skipped
    too, and every one tried is added to it: searches sharing it build no table twice.
    """
    model = model or QemuAcpiModel()
    axes = dict(DEFAULT_AXES if axes is None else axes)
    names = list(axes)
    for name in names:
        if not hasattr(claimed, name):
            raise ConfigError(f"cannot search over {name!r}: not a Machine field")
    values = [list(axes[name]) for name in names]
    matches: list[AcpiMatch] = []
    seen = set() if seen is None else seen
    for combo in itertools.product(*values):
        try:
            candidate = attrs.evolve(claimed, **dict(zip(names, combo, strict=True)))
            invocation = candidate.dumper_invocation()
            if invocation in seen:
                continue
            seen.add(invocation)
            blob = model.acpi_tables(invocation)
        except (ConfigError, ValueError, TypeError):
            continue
        built = acpi.build_tables(blob)
        if (built.loader_digest, built.rsdp_digest, built.tables_digest) != (
            actual.loader_digest,
            actual.rsdp_digest,
            actual.tables_digest,
        ):
            continue
        changes = tuple(
            (name, value)
            for name, value in zip(names, combo, strict=True)
            if getattr(claimed, name) != value
        )
        matches.append(AcpiMatch(changes, candidate))
        if len(matches) >= limit:
            break
    return matches


def diagnose_axes(claimed: Machine) -> list[dict[str, Sequence[Any]]]:
    """The searches diagnose runs when a VM's ACPI digests differ, cheapest first: every
    single input the tables follow, then CPU count with GPU count together."""
    branch = ["8.2.2", "9.2.1"]  # one version per branch of dstack's dumper
    return [
        {"cpu_count": range(1, 255)},
        {"num_gpus": range(0, 17)},
        {"num_nvswitches": range(0, 9)},
        {"hotplug_off": (False, True)},
        {"qemu_version": branch},
        {"hugepages": (False, True)},
        {"smm": (False, True)},
        {"root_verity": (False, True)},
        {"pic": (False, True)},
        {"cpu_count": range(1, 65), "num_gpus": range(0, 9)},
        {"cpu_count": range(1, 65), "hotplug_off": (False, True), "qemu_version": branch},
    ]


def explain_acpi_mismatch(
    claimed: Machine, actual: AcpiDigests
) -> tuple[AcpiMatch | None, tuple[str, ...]]:
    """Why a VM's three ACPI digests differ from the expected ones, by recomputation.

    Returns a match with no ``changes`` when the claimed configuration itself reproduces the
    VM's digests (then the expected tables came from elsewhere: another dumper build or a
    tables file of another machine), else the first configuration (by :func:`diagnose_axes`)
    that does, else None; and what was tried. None too when the built-in model does not
    cover the claimed QEMU version (nothing can be recomputed).
    """
    model = QemuAcpiModel()
    try:
        claimed_invocation = claimed.dumper_invocation()
        if _digests(model, claimed_invocation) == actual:
            return AcpiMatch((), claimed), ("the configuration as given",)
    except ConfigError:
        return None, ()
    # A configuration tried (by an earlier search, or the claimed one just above) did not
    # match, so later searches skip it; the first match found is thus never the claimed one.
    seen = {claimed_invocation}
    tried = ["the configuration as given"]
    for axes in diagnose_axes(claimed):
        tried.append(" x ".join(axes))
        for match in search_acpi_config(actual, claimed, axes, model=model, limit=1, seen=seen):
            return match, tuple(tried)
    return None, tuple(tried)
