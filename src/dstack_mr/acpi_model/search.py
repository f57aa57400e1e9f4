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
class AcpiDigests:
    loader: bytes
    rsdp: bytes
    tables: bytes


@attrs.frozen
class AcpiMatch:
    """A configuration whose recomputed loader, RSDP and tables digests equal the VM's."""

    changes: tuple[tuple[str, Any], ...]  # (field, value) that differ from the claimed machine
    machine: Machine

    def describe(self) -> str:
        if not self.changes:
            return "the claimed configuration"
        return ", ".join(f"{k}={v!r}" for k, v in self.changes)


def digests_of(machine: Machine, model: QemuAcpiModel | None = None) -> AcpiDigests:
    blob = (model or QemuAcpiModel()).acpi_tables(machine.dumper_invocation())
    built = acpi.build_tables(blob)
    return AcpiDigests(built.loader_digest, built.rsdp_digest, built.tables_digest)


def search_acpi_config(
    actual: AcpiDigests,
    claimed: Machine,
    axes: Mapping[str, Iterable[Any]] | None = None,
    *,
    model: QemuAcpiModel | None = None,
    limit: int = 20,
) -> list[AcpiMatch]:
    """Configurations (the claimed one varied along ``axes``) that reproduce ``actual``.

    Candidates the model refuses (an uncovered QEMU version, more devices than PCI slots)
    are skipped; they can neither match nor mislead.
    """
    model = model or QemuAcpiModel()
    axes = dict(DEFAULT_AXES if axes is None else axes)
    names = list(axes)
    for name in names:
        if not hasattr(claimed, name):
            raise ConfigError(f"cannot search over {name!r}: not a Machine field")
    values = [list(axes[name]) for name in names]
    matches: list[AcpiMatch] = []
    seen: set[acpi.DumperInvocation] = set()
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
            actual.loader,
            actual.rsdp,
            actual.tables,
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
