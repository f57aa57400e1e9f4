"""Expected Intel TDX measurements (MRTD, RTMR0-2) of dstack confidential VMs.

Quick start::

    from dstack_mr import Machine, AcpiTablesFile
    m = Machine(cpu_count=2, memory_size=2 << 30, firmware="ovmf.fd", kernel="bzImage",
                initrd="initramfs.cpio.gz", kernel_cmdline="console=ttyS0 initrd=initrd")
    details = m.measure_with_logs(acpi=AcpiTablesFile("tables.bin"))
    print(details.measurements.to_dict())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (
    AcpiError,
    CborError,
    CollateralError,
    ConfigError,
    DstackMrError,
    DumperError,
    DumperFailedError,
    DumperNotFoundError,
    DumperOutputError,
    DumperTimeoutError,
    EventLogError,
    EvidenceError,
    FirmwareError,
    ImageError,
    KernelError,
    MeasurementDocumentError,
    MissingExtraError,
    PathEscapeError,
    QuoteError,
    ScaleError,
    SnpError,
    SnpEvidenceError,
)

# The rest is imported on first use (PEP 562): `import dstack_mr` stays cheap and a CLI
# command loads only the modules it runs. The TYPE_CHECKING block keeps the names visible
# to type checkers and IDEs.
if TYPE_CHECKING:
    from .acpi import (
        AcpiDumper,
        AcpiSource,
        AcpiTables,
        AcpiTablesBlob,
        AcpiTablesFile,
        CachedAcpiSource,
        DumperInvocation,
    )
    from .config import (
        ImageInfo,
        OvmfVariant,
        VmConfig,
        extract_version_from_image_name,
        ovmf_variant_for_image,
        ovmf_variant_for_version,
    )
    from .events import MeasuredEvent, RtmrLog
    from .image import Image, ImageFiles
    from .lite import measure_from_document, measure_lite
    from .machine import Machine, MeasurementDetails, TdxMeasurements, VersionedOptions
    from .measurement_doc import MeasurementDocument

#: Lazily exported name -> the submodule that defines it.
_LAZY = {
    "AcpiDumper": "acpi",
    "AcpiSource": "acpi",
    "AcpiTables": "acpi",
    "AcpiTablesBlob": "acpi",
    "AcpiTablesFile": "acpi",
    "CachedAcpiSource": "acpi",
    "DumperInvocation": "acpi",
    "ImageInfo": "config",
    "OvmfVariant": "config",
    "VmConfig": "config",
    "extract_version_from_image_name": "config",
    "ovmf_variant_for_image": "config",
    "ovmf_variant_for_version": "config",
    "MeasuredEvent": "events",
    "RtmrLog": "events",
    "Image": "image",
    "ImageFiles": "image",
    "measure_from_document": "lite",
    "measure_lite": "lite",
    "Machine": "machine",
    "MeasurementDetails": "machine",
    "TdxMeasurements": "machine",
    "VersionedOptions": "machine",
    "MeasurementDocument": "measurement_doc",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "AcpiDumper",
    "AcpiError",
    "AcpiSource",
    "AcpiTables",
    "AcpiTablesBlob",
    "AcpiTablesFile",
    "CachedAcpiSource",
    "CborError",
    "CollateralError",
    "ConfigError",
    "DstackMrError",
    "DumperError",
    "DumperFailedError",
    "DumperInvocation",
    "DumperNotFoundError",
    "DumperOutputError",
    "DumperTimeoutError",
    "EventLogError",
    "EvidenceError",
    "FirmwareError",
    "Image",
    "ImageError",
    "ImageFiles",
    "ImageInfo",
    "KernelError",
    "Machine",
    "MeasuredEvent",
    "MeasurementDetails",
    "MeasurementDocument",
    "MeasurementDocumentError",
    "MissingExtraError",
    "OvmfVariant",
    "PathEscapeError",
    "QuoteError",
    "RtmrLog",
    "ScaleError",
    "SnpError",
    "SnpEvidenceError",
    "TdxMeasurements",
    "VersionedOptions",
    "VmConfig",
    "__version__",
    "extract_version_from_image_name",
    "measure_from_document",
    "measure_lite",
    "ovmf_variant_for_image",
    "ovmf_variant_for_version",
]
