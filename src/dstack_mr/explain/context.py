"""What the explanations of one diagnosis share: its inputs, and what earlier findings proved."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from ..config import parse_memory_size
from .finding import Finding

if TYPE_CHECKING:
    from ..acpi_source import AcpiChoice
    from ..config import VmConfig
    from ..declarations import DeclaredMeasurement, ImageHashCheck
    from ..diagnose import EventCheck, RegisterCheck, ReplayCheck
    from ..evidence import Evidence
    from ..image import Image
    from ..machine import MeasurementDetails


@attrs.define
class SoFar:
    """The findings made so far, in order, and what a later search takes from them."""

    findings: list[Finding] = attrs.Factory(list)
    #: The memory size the latest proven ``memory_size`` finding states (e.g. the TD HOB's):
    #: the SMBIOS search starts from it rather than from the config's.
    memory_size: str | None = None

    def add(self, finding: Finding | None) -> None:
        if finding is None:
            return
        self.findings.append(finding)
        if finding.proven and finding.parameter == "memory_size" and finding.value is not None:
            self.memory_size = finding.value


@attrs.frozen
class ExplainContext:
    """The comparison being explained, and the findings made so far (``so_far``)."""

    vm: VmConfig
    image: Image
    evidence: Evidence
    expected: MeasurementDetails
    #: By lower-case name: ``mrtd``, ``rtmr0`` ...
    registers: Mapping[str, RegisterCheck]
    events: tuple[EventCheck, ...]
    #: By IMR.
    replay: Mapping[int, ReplayCheck]
    acpi: AcpiChoice
    image_hash: ImageHashCheck
    declared: DeclaredMeasurement | None
    #: The image's file names, as the findings name them.
    fw: str
    kernel: str
    initrd: str
    so_far: SoFar = attrs.Factory(SoFar)

    @classmethod
    def of(
        cls,
        *,
        vm: VmConfig,
        image: Image,
        evidence: Evidence,
        expected: MeasurementDetails,
        registers: Sequence[RegisterCheck],
        events: Sequence[EventCheck],
        replay: Sequence[ReplayCheck],
        acpi: AcpiChoice,
        image_hash: ImageHashCheck,
        declared: DeclaredMeasurement | None,
    ) -> ExplainContext:
        files = image.files
        return cls(
            vm,
            image,
            evidence,
            expected,
            {r.name.lower(): r for r in registers},
            tuple(events),
            {r.imr: r for r in replay},
            acpi,
            image_hash,
            declared,
            os.path.basename(files.firmware),
            os.path.basename(files.kernel),
            os.path.basename(files.initrd),
        )

    def has_log(self, rtmr: int) -> bool:
        """The VM's event log has events of this register to compare."""
        return any(e.rtmr == rtmr and e.actual is not None for e in self.events)

    def proven_memory_size(self) -> int:
        """The memory size a finding proved, else the config's."""
        said = self.so_far.memory_size
        return self.vm.memory_size if said is None else parse_memory_size(said)
