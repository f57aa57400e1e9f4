"""The library's exceptions.

Everything the public API raises on bad input derives from :class:`DstackMrError`, so a
caller can catch one type. The subclasses say which input was wrong; the message says where
and how.
"""

from __future__ import annotations


class DstackMrError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(DstackMrError):
    """A machine setting or VmConfig/metadata value is invalid (e.g. QEMU version 7.2.0)."""


class ImageError(DstackMrError):
    """An image directory or metadata.json is unusable (missing file, bad JSON, bad field)."""


class PathEscapeError(ImageError):
    """A file name in metadata.json or vm_config.image points outside its base directory."""


class FirmwareError(DstackMrError):
    """The OVMF/TDVF firmware image is malformed or truncated."""


class KernelError(DstackMrError):
    """The kernel (bzImage / PE) is malformed, truncated, or cannot take the initrd."""


class SnpError(DstackMrError):
    """AMD SEV-SNP launch inputs or an SEV firmware (OVMF) image are invalid."""


class AcpiError(DstackMrError):
    """The ACPI table blob is malformed or lacks a required table."""


class DumperError(AcpiError):
    """Running the external ACPI table dumper failed."""


class DumperNotFoundError(DumperError):
    """The dumper program does not exist or is not executable."""


class DumperTimeoutError(DumperError):
    """The dumper ran longer than the allowed time and was killed."""


class DumperFailedError(DumperError):
    """The dumper exited with a non-zero status."""


class DumperOutputError(DumperError):
    """The dumper's output was empty or larger than allowed."""


class EvidenceError(DstackMrError):
    """Evidence from a VM (quote, event log, attestation response) is malformed."""


class QuoteError(EvidenceError):
    """A TDX quote cannot be parsed."""


class SnpEvidenceError(EvidenceError):
    """An SEV-SNP attestation, report or measurement document is malformed."""


class EventLogError(EvidenceError):
    """A JSON or CCEL event log cannot be parsed."""


class SmbiosError(DstackMrError):
    """An SMBIOS table is malformed (a structure or its strings run past the end)."""


class CborError(DstackMrError):
    """A CBOR document is malformed or uses a feature outside the strict subset accepted."""


class ScaleError(EvidenceError):
    """A SCALE-encoded dstack ``VersionedAttestation`` is malformed or truncated."""


class MeasurementDocumentError(DstackMrError):
    """A ``measurement.tdx.cbor`` document or its integrity chain (``sha256sum.txt`` and
    ``os_image_hash``) is malformed, of an unsupported version, or does not check out."""


class CollateralError(DstackMrError):
    """Quote collateral (TCB info, QE identity, CRLs, issuer chains) is malformed."""


class MissingExtraError(DstackMrError):
    """An optional dependency this operation needs is not installed (e.g. ``dstack-mr[verify]``)."""
