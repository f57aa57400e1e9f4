"""What ``inspect-measurement`` shows: a lite-mode measurement document as JSON-ready data.

The file may be a ``measurement.tdx.cbor``, a ``measurement.snp.cbor``, a VmConfig carrying
``tdx_measurement`` or ``sev_snp_measurement`` (whose chain to its ``os_image_hash`` is then
checked first), or a bare ``sev_snp_measurement`` JSON.
"""

from __future__ import annotations

import os

from .errors import CborError, ConfigError, SnpEvidenceError


def inspect_measurement(data: bytes, name: str | os.PathLike[str]) -> dict[str, object]:
    """The document in ``data`` (read from file ``name``) decoded, digests in hex.

    Raises :class:`~dstack_mr.errors.DstackMrError` subclasses naming what is malformed.
    """
    snp = inspect_snp_material(data)
    if snp is not None:
        return snp
    from .measurement_doc import MeasurementDocument, verify_material

    if data.lstrip()[:1] == b"{":
        from .config import VmConfig

        vm = VmConfig.from_json(data)
        if vm.tdx_measurement is None:
            raise ConfigError(f"{os.fspath(name)}: the VmConfig has no tdx_measurement")
        doc = verify_material(vm.tdx_measurement, vm.os_image_hash)
        return {"integrity": "sha256sum.txt and os_image_hash check out", **doc.to_dict()}
    return MeasurementDocument.from_cbor(data).to_dict()


def inspect_snp_material(data: bytes) -> dict[str, object] | None:
    """A measurement.snp.cbor, or a vm_config (or sev_snp_measurement) JSON whose chain is
    then checked. ``None`` when ``data`` is not SNP material, so the TDX reader gets it."""
    from . import cbor
    from .config import parse_json
    from .snp_document import SnpImageMeasurement, SnpMeasurementDocument, SnpVmConfig

    if data.lstrip()[:1] == b"{":
        obj = parse_json(data, "measurement document", SnpEvidenceError)
        if not isinstance(obj, dict):
            return None
        if "checksum_file" in obj and "vcpus" in obj:
            doc = SnpMeasurementDocument.from_json(data)
            image_hash = None
        elif "sev_snp_measurement" in obj or "vm_config" in obj:
            vm = SnpVmConfig.from_dict(obj)
            if vm.sev_snp_measurement is None:
                return None
            doc = vm.measurement_document()
            image_hash = vm.os_image_hash
        else:
            return None
        checks = doc.integrity(image_hash)
        return {
            "integrity": {c.name: {"ok": c.ok, "message": c.message} for c in checks},
            "vcpus": doc.vcpus,
            "vcpu_type": doc.vcpu_type,
            "guest_features": doc.guest_features,
            **doc.image.to_dict(),
        }
    try:
        value = cbor.decode(data)
    except CborError:
        return None
    if not isinstance(value, dict) or "ovmf_sections" not in value:
        return None
    return SnpImageMeasurement.from_cbor(data).to_dict()
