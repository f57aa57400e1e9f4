"""measurement.snp.cbor, sev_snp_measurement, the integrity chain and HOST_DATA, on the real
capture and on crafted documents."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from dstack_mr.errors import MeasurementDocumentError, SnpError, SnpEvidenceError
from dstack_mr.snp_attestation import SnpAttestation, parse_snp_attestation
from dstack_mr.snp_document import (
    MrConfigV3,
    SnpImageMeasurement,
    SnpMeasurementDocument,
    SnpVmConfig,
    integrity_checks,
    sha256sum_entry,
    snp_host_data,
)

HOST_DATA = "783f0057820acb99249af56cc3b07b4e8d80f65183167cba9cf437bb680f742f"
OS_IMAGE_HASH = "f69c8e5031ec2b269bbc08839ce02cb98ee255d695626f941f4b37b95946d352"


def real_attestation(real: Path) -> SnpAttestation:
    path = real / "dstack-snp-0.6.0-attestation.json"
    att = parse_snp_attestation(path.read_bytes(), str(path))
    assert att is not None
    return att


def test_real_measurement_document(real: Path) -> None:
    att = real_attestation(real)
    assert att.vm_config is not None
    assert att.vm_config.os_image_hash is not None
    assert att.vm_config.os_image_hash.hex() == OS_IMAGE_HASH
    doc = att.vm_config.measurement_document()
    assert (doc.vcpus, doc.vcpu_type, doc.guest_features) == (2, "EPYC-v4", 1)
    img = doc.image
    assert img.cmdline.startswith("console=ttyS0 init=/init")
    assert img.ovmf_hash.hex().startswith("ffb57e39")
    assert (img.hashes_table_gpa, img.reset_eip) == (0x810C00, 0x80B004)
    assert len(img.ovmf_sections) == 7
    # Our encoder writes the document byte for byte as upstream's ciborium did.
    assert img.to_cbor() == doc.measurement == img.raw
    assert [c.ok for c in doc.integrity(att.vm_config.os_image_hash)] == [True, True]
    assert doc.launch_inputs().measure().measurement == att.report.measurement


def test_real_host_data(real: Path) -> None:
    att = real_attestation(real)
    assert snp_host_data(att.mr_config).hex() == HOST_DATA
    mc = MrConfigV3.from_document(att.mr_config)
    assert mc.host_data.hex() == HOST_DATA
    assert mc.key_provider == "kms"
    assert mc.app_id is not None and mc.app_id.hex() == "86e59625be93207bc2351c4d1bba20037cec8e16"
    # The VMM wrote the canonical (JCS) form, so re-serialising gives the same bytes ...
    assert mc.canonical_document() == att.mr_config
    # ... but a pretty-printed copy of the same content binds a different HOST_DATA.
    pretty = json.dumps(json.loads(att.mr_config), indent=2)
    assert MrConfigV3.from_document(pretty).host_data != mc.host_data


def test_host_data_hashes_bytes_as_supplied() -> None:
    doc = '{"compose_hash":"' + "22" * 32 + '","key_provider":"none"}'
    assert snp_host_data(doc) == hashlib.sha256(b"dstack-mr-config-v3:\0" + doc.encode()).digest()
    assert snp_host_data(doc.encode()) == snp_host_data(doc)
    assert snp_host_data(doc + " ") != snp_host_data(doc)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[]", "JSON object"),
        ('{"key_provider":"none"}', "compose_hash"),
        ('{"compose_hash":"' + "22" * 31 + '","key_provider":"none"}', "32 bytes"),
        ('{"compose_hash":"' + "22" * 32 + '","key_provider":"sgx"}', "key_provider"),
        ('{"compose_hash":"' + "22" * 32 + '","key_provider":"none","version":2}', "version"),
        ('{"compose_hash":"' + "22" * 32 + '","key_provider":"none","x":1}', "unknown field"),
        ('{"compose_hash":"zz","key_provider":"none"}', "hex"),
        (
            '{"compose_hash":"' + "22" * 32 + '","key_provider":"none","key_provider":"kms"}',
            "duplicate",
        ),
        (
            '{"compose_hash":"'
            + "22" * 32
            + '","key_provider":"none","init_script_hashes":'
            + json.dumps(["aa" * 32] * 6)
            + "}",
            "at most 5",
        ),
    ],
)
def test_bad_mr_config_refused(document: str, message: str) -> None:
    with pytest.raises(SnpEvidenceError, match=message):
        MrConfigV3.from_document(document)


def test_mr_config_optional_fields() -> None:
    doc = (
        '{"compose_hash":"' + "22" * 32 + '","key_provider":"none","app_id":null,'
        '"init_script_hashes":["' + "aa" * 32 + '"]}'
    )
    mc = MrConfigV3.from_document(doc)
    assert mc.app_id is None and mc.init_script_hashes == (b"\xaa" * 32,)
    assert '"init_script_hashes":["' in mc.canonical_document()


SUMS = (
    ("a" * 64 + "  measurement.tdx.cbor\n")
    + ("b" * 64 + "  measurement.snp.cbor\r\n")
    + "\n"
    + ("c" * 64 + "\tovmf.fd\n")
)


def test_sha256sum_entry() -> None:
    assert sha256sum_entry(SUMS.encode(), "measurement.snp.cbor") == b"\xbb" * 32
    assert sha256sum_entry(SUMS.encode(), "ovmf.fd") == b"\xcc" * 32
    with pytest.raises(MeasurementDocumentError, match="no line for x"):
        sha256sum_entry(SUMS.encode(), "x")
    with pytest.raises(MeasurementDocumentError, match="more than once"):
        sha256sum_entry((SUMS + "d" * 64 + " ovmf.fd\n").encode(), "ovmf.fd")
    with pytest.raises(MeasurementDocumentError, match="no file name"):
        sha256sum_entry(b"abcd\n", "ovmf.fd")
    with pytest.raises(MeasurementDocumentError, match="not a SHA-256"):
        sha256sum_entry(b"abcd ovmf.fd\n", "ovmf.fd")
    with pytest.raises(MeasurementDocumentError, match="not UTF-8"):
        sha256sum_entry(b"\xff ovmf.fd\n", "ovmf.fd")
    # Rust's lines() and split_whitespace(): U+001C is neither a line break nor a space.
    sep = ("d" * 64 + "\x1covmf.fd\n").encode()
    with pytest.raises(MeasurementDocumentError, match="no file name"):
        sha256sum_entry(sep, "ovmf.fd")
    vt = ("d" * 64 + "  ovmf.fd\v").encode()
    assert sha256sum_entry(vt, "ovmf.fd") == b"\xdd" * 32


def test_integrity_chain_reports_each_link() -> None:
    cbor = b"document"
    sums = (hashlib.sha256(cbor).hexdigest() + "  measurement.snp.cbor\n").encode()
    good = integrity_checks(hashlib.sha256(sums).digest(), sums, cbor)
    assert [c.ok for c in good] == [True, True]
    wrong_image = integrity_checks(b"\0" * 32, sums, cbor)
    assert [c.ok for c in wrong_image] == [False, True]
    assert "NOT vm_config.os_image_hash" in wrong_image[0].message
    altered = integrity_checks(hashlib.sha256(sums).digest(), sums, cbor + b"!")
    assert [c.ok for c in altered] == [True, False]
    assert "altered" in altered[1].message
    missing = integrity_checks(None, sums, cbor)
    assert not missing[0].ok and "no os_image_hash" in missing[0].message
    unlisted = integrity_checks(hashlib.sha256(b"x\n").digest(), b"x\n", cbor)
    assert not unlisted[1].ok and "no file name" in unlisted[1].message


def _doc_json(real: Path, **changes: object) -> str:
    att = real_attestation(real)
    assert att.vm_config is not None and att.vm_config.sev_snp_measurement is not None
    obj = json.loads(att.vm_config.sev_snp_measurement)
    obj.update(changes)
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vcpus": -1}, "vcpus"),
        ({"vcpus": True}, "vcpus"),
        ({"guest_features": 1 << 64}, "guest_features"),
        ({"vcpu_type": 3}, "vcpu_type"),
        ({"measurement": "not base64!"}, "base64"),
        ({"checksum_file": "QQ"}, "base64"),
        ({"extra": 1}, "unknown field"),
        ({"measurement": base64.b64encode(b"\xa0").decode()}, "missing field"),
        ({"measurement": base64.b64encode(b"\xff").decode()}, "measurement.snp.cbor"),
    ],
)
def test_bad_measurement_document_refused(
    real: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SnpEvidenceError, match=message):
        SnpMeasurementDocument.from_json(_doc_json(real, **changes))


def test_vcpu_type_null_is_refused_at_launch(real: Path) -> None:
    doc = SnpMeasurementDocument.from_json(_doc_json(real, vcpu_type=None))
    with pytest.raises(SnpError, match="vcpu_type is required"):
        doc.launch_inputs()


def _cbor_with(img: SnpImageMeasurement, **fields: object) -> bytes:
    from dstack_mr.cbor import decode, encode

    obj = decode(img.to_cbor())
    assert isinstance(obj, dict)
    obj.update(fields)  # type: ignore[arg-type]
    return encode(obj)


def test_measurement_cbor_strictness(real: Path) -> None:
    img = SnpMeasurementDocument.from_json(_doc_json(real)).image
    with pytest.raises(SnpEvidenceError, match="version 2 is not supported"):
        SnpImageMeasurement.from_cbor(_cbor_with(img, version=2))
    with pytest.raises(SnpEvidenceError, match="unknown field"):
        SnpImageMeasurement.from_cbor(_cbor_with(img, extra=1))
    with pytest.raises(SnpEvidenceError, match="reset_eip"):
        SnpImageMeasurement.from_cbor(_cbor_with(img, reset_eip=1 << 32))
    with pytest.raises(SnpEvidenceError, match="type"):
        SnpImageMeasurement.from_cbor(
            _cbor_with(img, ovmf_sections=[{"gpa": 0, "size": 4096, "type": 9}])
        )
    with pytest.raises(SnpEvidenceError, match="ovmf_hash"):
        SnpImageMeasurement.from_cbor(_cbor_with(img, ovmf_hash="ff"))


def test_vm_config_shapes() -> None:
    inner = {"os_image_hash": "ab" * 32, "sev_snp_measurement": "{}", "mr_config": "{}"}
    top = SnpVmConfig.from_dict(inner)
    nested = SnpVmConfig.from_dict({"vm_config": json.dumps(inner)})
    assert top.os_image_hash == nested.os_image_hash == b"\xab" * 32
    assert top.mr_config == nested.mr_config == "{}"
    assert SnpVmConfig.from_dict({}).os_image_hash is None
    with pytest.raises(SnpEvidenceError, match="no sev_snp_measurement"):
        SnpVmConfig.from_dict({}).measurement_document()
    with pytest.raises(SnpEvidenceError, match="os_image_hash"):
        SnpVmConfig.from_dict({"os_image_hash": "xyz"})
    with pytest.raises(SnpEvidenceError, match="JSON string"):
        SnpVmConfig.from_dict({"mr_config": {}})
    with pytest.raises(SnpEvidenceError, match="JSON object"):
        SnpVmConfig.from_json("[1]")


def test_other_evidence_is_left_to_the_tdx_path(real: Path) -> None:
    getquote = (real / "dstack-0.6.0-getquote.json").read_bytes()
    assert parse_snp_attestation(getquote) is None
    assert parse_snp_attestation(b"[]") is None
    assert parse_snp_attestation(b"04000200") is None  # hex of a TDX quote header
    # A TDX VersionedAttestation: version 0, variant 0 (a one-byte quote, no events), no
    # runtime events, report_data, empty config.
    tdx = b"\x00\x00" + b"\x04\x00" + b"\x00" + b"\x00" + bytes(64) + b"\x00"
    assert parse_snp_attestation(tdx) is None
    assert parse_snp_attestation(b'{"attestation": "' + tdx.hex().encode() + b'"}') is None
