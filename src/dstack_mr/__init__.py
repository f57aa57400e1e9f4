"""Expected Intel TDX measurements (MRTD, RTMR0-2) of dstack confidential VMs.

Quick start::

    from dstack_mr import Machine, AcpiTablesFile
    m = Machine(cpu_count=2, memory_size=2 << 30, firmware="ovmf.fd", kernel="bzImage",
                initrd="initramfs.cpio.gz", kernel_cmdline="console=ttyS0 initrd=initrd")
    details = m.measure_with_logs(acpi=AcpiTablesFile("tables.bin"))
    print(details.measurements.to_dict())
"""

from __future__ import annotations

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
from .events import MeasuredEvent, RtmrLog
from .image import Image, ImageFiles
from .lite import measure_from_document, measure_lite
from .machine import Machine, MeasurementDetails, TdxMeasurements, VersionedOptions
from .measurement_doc import MeasurementDocument

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
