"""Diagnose what an operator holds: evidence read by :mod:`dstack_mr.evidence_files` and an
image directory, a directory of images, or (lite mode) the VM's own measurement document.

:func:`diagnose_evidence` picks the path ``dstack-mr diagnose`` takes: an SNP attestation is
judged on its own; TDX evidence by lite mode when no image is given and the VmConfig carries
``tdx_measurement``, else against the image directory (``image_dir``, or the one
``vm_config.image`` names inside ``image_base_dir``) with RTMR0's ACPI digests from the
source ``acpi_mode`` picks.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from .acpi import DEFAULT_TIMEOUT
from .errors import ConfigError

if TYPE_CHECKING:
    from .diagnose import DiagnoseReport
    from .evidence_files import SnpEvidence, StrPath, TdxEvidence
    from .snp_diagnose import SnpDiagnoseReport


def diagnose_evidence(
    loaded: TdxEvidence | SnpEvidence,
    *,
    image_dir: StrPath | None = None,
    image_base_dir: StrPath | None = None,
    acpi_mode: str = "auto",
    acpi_tables: StrPath | None = None,
    acpi_dumper: str | None = None,
    acpi_timeout: float = DEFAULT_TIMEOUT,
    explain: bool = True,
    collateral: StrPath | None = None,
    at: dt.datetime | None = None,
) -> DiagnoseReport | SnpDiagnoseReport:
    """The report on ``loaded`` (see the module docstring for which path it takes).

    ``collateral`` (a TDX Intel collateral file) also checks the quote's signature at ``at``
    (default now), exactly as ``verify`` does.
    """
    from .evidence_files import SnpEvidence

    if isinstance(loaded, SnpEvidence):
        return _diagnose_snp(loaded, image_dir, image_base_dir, explain)
    from . import diagnose as dg

    vm, evidence = loaded.vm_config, loaded.evidence
    # Refused before the diagnosis runs, not after it.
    intel = None
    if collateral is not None:
        if evidence.quote is None:
            raise ConfigError(
                "--collateral checks a quote's signature: give --quote or --attestation"
            )
        from .evidence_files import read_collateral

        intel = read_collateral(collateral)[0]
    if image_dir is None and image_base_dir is None and vm.tdx_measurement is not None:
        # Lite mode: the VM's own measurement document instead of the image.
        from .lite_diagnose import diagnose_lite

        if acpi_tables is not None or acpi_dumper is not None or acpi_mode in ("dumper", "file"):
            raise ConfigError(
                "an ACPI tables file or dumper needs the image directory (--image-dir); "
                "without one, lite mode takes the ACPI digests from the event log, or "
                "computes the tables with --acpi-source builtin"
            )
        # auto keeps upstream's lite semantics (the log); builtin verifies the tables.
        report = diagnose_lite(vm, evidence, "builtin" if acpi_mode == "builtin" else "log")
    else:
        from .acpi_source import resolve_acpi
        from .image import Image, ImageFiles, image_dir_for

        if image_dir is not None:
            files = ImageFiles.from_dir(image_dir)
        elif image_base_dir is not None:
            files = ImageFiles.from_dir(image_dir_for(vm, image_base_dir))
        else:
            raise ConfigError(
                "either --image-dir or --image-base-dir must be given (or a vm_config "
                "carrying tdx_measurement, for lite mode)"
            )
        choice = resolve_acpi(
            acpi_mode,
            tables=acpi_tables,
            dumper=acpi_dumper,
            timeout=acpi_timeout,
            events=evidence.events,
        )
        report = dg.diagnose(vm, Image(files), evidence, choice, explain=explain)
    if intel is None:
        return report
    import attrs

    from .dcap import verify_quote

    assert evidence.quote is not None  # checked with the collateral
    verdict = verify_quote(evidence.quote, intel, at)
    return attrs.evolve(report, quote_signature=verdict)


def _diagnose_snp(
    loaded: SnpEvidence,
    image_dir: StrPath | None,
    image_base_dir: StrPath | None,
    explain: bool,
) -> SnpDiagnoseReport:
    from .snp_diagnose import diagnose_snp
    from .snp_image import load_snp_image, snp_image_dir

    vm = loaded.vm_config
    directory = snp_image_dir(vm or loaded.attestation.vm_config, image_dir, image_base_dir)
    image = load_snp_image(directory) if directory is not None else None
    return diagnose_snp(loaded.attestation, vm_config=vm, image=image, explain=explain)
