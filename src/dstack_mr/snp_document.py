"""The measurement material a dstack SEV-SNP VM carries, and what binds it.

A dstack VMM puts in ``vm_config``:

- ``sev_snp_measurement`` — a JSON string ``{checksum_file, measurement, vcpus, vcpu_type,
  guest_features}`` where ``checksum_file`` is the image's ``sha256sum.txt`` and
  ``measurement`` the image's ``measurement.snp.cbor`` (both base64);
- ``os_image_hash`` — sha256(``sha256sum.txt``), the image's identity;
- ``mr_config`` — the MrConfigV3 document (JSON text) whose hash the report's HOST_DATA is.

The integrity chain a verifier walks (upstream ``dstack-types``): sha256(checksum_file) must
be ``os_image_hash``, and checksum_file's one line for ``measurement.snp.cbor`` must be
sha256(measurement). HOST_DATA = sha256(``"dstack-mr-config-v3:" ‖ 0x00 ‖`` document bytes as
supplied — never re-serialised: a pretty-printed copy of the same config hashes differently,
and that difference is the point).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .cbor import CborValue, decode, encode, expect_fields, get_array, get_bytes, get_text, get_uint
from .config import parse_json
from .digest import short_hex
from .errors import CborError, MeasurementDocumentError, SnpError, SnpEvidenceError
from .measurement_doc import sha256sum_entry
from .registry import U32_MAX
from .snp import OvmfSection, SnpLaunchInputs, image_inputs_dict
from .validate import Check, require, u32, u64

__all__ = [
    "MR_CONFIG_V3_DOMAIN",
    "SNP_MEASUREMENT_FILENAME",
    "IntegrityCheck",
    "MrConfigV3",
    "SnpImageMeasurement",
    "SnpMeasurementDocument",
    "SnpVmConfig",
    "integrity_checks",
    "sha256sum_entry",
    "snp_host_data",
]

SNP_MEASUREMENT_FILENAME = "measurement.snp.cbor"
SNP_CBOR_VERSION = 3
MR_CONFIG_V3_DOMAIN = b"dstack-mr-config-v3:"
#: Documents of a few KiB; refuse to decode anything huge.
MAX_DOCUMENT_SIZE = 1 << 20


# --- measurement.snp.cbor --------------------------------------------------------------------

_CBOR_FIELDS = (
    "version",
    "cmdline",
    "ovmf_hash",
    "kernel_hash",
    "initrd_hash",
    "hashes_table_gpa",
    "reset_eip",
    "ovmf_sections",
)
_WHERE = SNP_MEASUREMENT_FILENAME


def _cbor_section(value: CborValue, i: int) -> OvmfSection:
    where = f"{_WHERE}.ovmf_sections[{i}]"
    m = expect_fields(value, where, ("gpa", "size", "type"))
    try:
        return OvmfSection(
            gpa=get_uint(m, "gpa", where),
            size=get_uint(m, "size", where),
            section_type=get_uint(m, "type", where, max_value=U32_MAX),
        )
    except SnpError as e:
        raise SnpEvidenceError(f"{where}: {e}") from None


@attrs.frozen
class SnpImageMeasurement:
    """``measurement.snp.cbor``: the image-invariant SNP launch material (version 3).

    ``raw`` is the document as supplied (its SHA-256 is what sha256sum.txt lists).
    """

    cmdline: str
    ovmf_hash: bytes = attrs.field(repr=short_hex)
    kernel_hash: bytes = attrs.field(repr=short_hex)
    initrd_hash: bytes = attrs.field(repr=short_hex)
    hashes_table_gpa: int
    reset_eip: int
    ovmf_sections: tuple[OvmfSection, ...] = attrs.field(repr=False)
    raw: bytes = attrs.field(repr=False, eq=False)

    @classmethod
    def from_cbor(cls, data: bytes) -> SnpImageMeasurement:
        """Decode strictly; raise :class:`SnpEvidenceError` naming the field that is wrong."""
        try:
            doc = expect_fields(decode(data), _WHERE, _CBOR_FIELDS)
            version = get_uint(doc, "version", _WHERE)
            if version != SNP_CBOR_VERSION:
                raise SnpEvidenceError(
                    f"{_WHERE}: version {version} is not supported (only {SNP_CBOR_VERSION})"
                )
            sections = get_array(doc, "ovmf_sections", _WHERE)
            return cls(
                cmdline=get_text(doc, "cmdline", _WHERE),
                ovmf_hash=get_bytes(doc, "ovmf_hash", _WHERE),
                kernel_hash=get_bytes(doc, "kernel_hash", _WHERE),
                initrd_hash=get_bytes(doc, "initrd_hash", _WHERE),
                hashes_table_gpa=get_uint(doc, "hashes_table_gpa", _WHERE),
                reset_eip=get_uint(doc, "reset_eip", _WHERE, max_value=U32_MAX),
                ovmf_sections=tuple(_cbor_section(s, i) for i, s in enumerate(sections)),
                raw=bytes(data),
            )
        except CborError as e:
            raise SnpEvidenceError(f"{_WHERE}: {e}") from None

    def to_cbor(self) -> bytes:
        """The document as upstream writes it (ciborium, fields in declaration order)."""
        return encode(
            {
                "version": SNP_CBOR_VERSION,
                "cmdline": self.cmdline,
                "ovmf_hash": self.ovmf_hash,
                "kernel_hash": self.kernel_hash,
                "initrd_hash": self.initrd_hash,
                "hashes_table_gpa": self.hashes_table_gpa,
                "reset_eip": self.reset_eip,
                "ovmf_sections": [
                    {"gpa": s.gpa, "size": s.size, "type": s.section_type}
                    for s in self.ovmf_sections
                ],
            }
        )

    @property
    def digest(self) -> bytes:
        """sha256 of the document bytes: what its sha256sum.txt line must say."""
        return hashlib.sha256(self.raw).digest()

    def launch_inputs(self, vcpus: int, vcpu_type: str, guest_features: int) -> SnpLaunchInputs:
        """The full launch inputs for one deployment (raises :class:`SnpError` if invalid)."""
        return SnpLaunchInputs(
            cmdline=self.cmdline,
            ovmf_hash=self.ovmf_hash,
            kernel_hash=self.kernel_hash,
            initrd_hash=self.initrd_hash,
            hashes_table_gpa=self.hashes_table_gpa,
            reset_eip=self.reset_eip,
            ovmf_sections=self.ovmf_sections,
            vcpus=vcpus,
            vcpu_type=vcpu_type,
            guest_features=guest_features,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SNP_CBOR_VERSION,
            **image_inputs_dict(self),
        }


# --- sha256sum.txt ---------------------------------------------------------------------------


@attrs.frozen
class IntegrityCheck:
    """One link of the chain os_image_hash → sha256sum.txt → measurement.snp.cbor."""

    name: str
    ok: bool
    expected: bytes | None = attrs.field(repr=short_hex)
    actual: bytes | None = attrs.field(repr=short_hex)
    message: str = attrs.field(repr=False)

    @property
    def status(self) -> str:
        return "match" if self.ok else "mismatch"


def integrity_checks(
    os_image_hash: bytes | None, checksum_file: bytes, measurement: bytes
) -> tuple[IntegrityCheck, ...]:
    """Walk the chain; every link is reported, a broken one says what does not hold."""
    image_hash = hashlib.sha256(checksum_file).digest()
    checks = []
    if not os_image_hash:
        checks.append(
            IntegrityCheck(
                "os_image_hash",
                False,
                None,
                image_hash,
                "vm_config has no os_image_hash, so nothing names the image the material "
                "belongs to",
            )
        )
    else:
        ok = os_image_hash == image_hash
        checks.append(
            IntegrityCheck(
                "os_image_hash",
                ok,
                os_image_hash,
                image_hash,
                "sha256(sha256sum.txt) is vm_config.os_image_hash"
                if ok
                else "sha256(sha256sum.txt) is NOT vm_config.os_image_hash: the checksum file "
                "is not the one of the image the VM names",
            )
        )
    doc_hash = hashlib.sha256(measurement).digest()
    try:
        listed: bytes | None = sha256sum_entry(checksum_file, SNP_MEASUREMENT_FILENAME)
        problem = None
    except MeasurementDocumentError as e:
        listed, problem = None, str(e)
    ok = listed == doc_hash
    checks.append(
        IntegrityCheck(
            SNP_MEASUREMENT_FILENAME,
            ok,
            listed,
            doc_hash,
            problem
            or (
                f"sha256sum.txt lists sha256({SNP_MEASUREMENT_FILENAME})"
                if ok
                else f"sha256({SNP_MEASUREMENT_FILENAME}) is NOT what sha256sum.txt lists: the "
                "measurement document was altered or belongs to another image"
            ),
        )
    )
    return tuple(checks)


# --- the sev_snp_measurement JSON document ---------------------------------------------------


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise SnpEvidenceError(f"{where}: expected a base64 string, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SnpEvidenceError(f"{where}: not valid base64") from None
    if base64.b64encode(raw).decode() != value:
        raise SnpEvidenceError(f"{where}: base64 is not in its canonical padded form")
    return raw


def _json_int(obj: Mapping[str, Any], key: str, where: str, check: Check) -> int:
    value = obj[key]
    require(check, value, f"{where}.{key}", SnpEvidenceError)
    return int(value)


def _json_object(value: object, where: str, required: set[str], optional: set[str]) -> Any:
    if not isinstance(value, Mapping):
        raise SnpEvidenceError(f"{where}: expected a JSON object, got {type(value).__name__}")
    dup = sorted(getattr(value, "duplicates", frozenset()))
    if dup:
        raise SnpEvidenceError(f"{where}: duplicate field {dup[0]!r}")
    missing = sorted(required - set(value))
    if missing:
        raise SnpEvidenceError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(value) - required - optional)
    if unknown:
        raise SnpEvidenceError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return value


@attrs.frozen
class SnpMeasurementDocument:
    """``vm_config.sev_snp_measurement``: the image material plus the per-deployment
    values (vcpus, vcpu type, guest features) that complete the launch inputs."""

    checksum_file: bytes = attrs.field(repr=False)
    measurement: bytes = attrs.field(repr=False)
    vcpus: int
    vcpu_type: str | None
    guest_features: int
    image: SnpImageMeasurement

    @classmethod
    def from_json(cls, text: str | bytes) -> SnpMeasurementDocument:
        where = "sev_snp_measurement"
        if len(text) > MAX_DOCUMENT_SIZE:
            raise SnpEvidenceError(f"{where}: larger than {MAX_DOCUMENT_SIZE} bytes")
        obj = _json_object(
            parse_json(text, where, SnpEvidenceError),
            where,
            {"checksum_file", "measurement", "vcpus", "guest_features"},
            {"vcpu_type"},
        )
        vcpu_type = obj.get("vcpu_type")
        if vcpu_type is not None and not isinstance(vcpu_type, str):
            raise SnpEvidenceError(f"{where}.vcpu_type: expected a string or null")
        measurement = _b64(obj["measurement"], f"{where}.measurement")
        return cls(
            checksum_file=_b64(obj["checksum_file"], f"{where}.checksum_file"),
            measurement=measurement,
            vcpus=_json_int(obj, "vcpus", where, u32),
            vcpu_type=vcpu_type,
            guest_features=_json_int(obj, "guest_features", where, u64),
            image=SnpImageMeasurement.from_cbor(measurement),
        )

    def launch_inputs(self) -> SnpLaunchInputs:
        """The launch inputs as the document states them (raises :class:`SnpError`)."""
        if self.vcpu_type is None or not self.vcpu_type.strip():
            raise SnpError("sev_snp_measurement.vcpu_type is required")
        return self.image.launch_inputs(self.vcpus, self.vcpu_type, self.guest_features)

    def integrity(self, os_image_hash: bytes | None) -> tuple[IntegrityCheck, ...]:
        return integrity_checks(os_image_hash, self.checksum_file, self.measurement)


# --- MrConfigV3 and HOST_DATA ----------------------------------------------------------------


def snp_host_data(document: str | bytes) -> bytes:
    """HOST_DATA bound to an MrConfigV3 document: sha256 of the domain tag, a NUL and the
    document bytes exactly as supplied."""
    raw = document.encode("utf-8") if isinstance(document, str) else bytes(document)
    return hashlib.sha256(MR_CONFIG_V3_DOMAIN + b"\0" + raw).digest()


_KEY_PROVIDERS = ("none", "kms", "local", "tpm")
_MR_FIELDS_LEN = {"app_id": 20, "compose_hash": 32, "gpu_policy_hash": 32, "instance_id": 20}


def _hex_or_none(obj: Mapping[str, Any], key: str, where: str) -> bytes | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-fA-F]{2})*", value):
        raise SnpEvidenceError(f"{where}.{key}: expected an even-length hex string")
    raw = bytes.fromhex(value)
    want = _MR_FIELDS_LEN.get(key)
    if want is not None and len(raw) != want:
        raise SnpEvidenceError(f"{where}.{key}: expected {want} bytes, got {len(raw)}")
    return raw


@attrs.frozen
class MrConfigV3:
    """The app/config identity a dstack SNP VM binds through HOST_DATA.

    ``document`` is the text exactly as supplied; :attr:`host_data` hashes it unchanged.
    """

    document: str = attrs.field(repr=False)
    app_id: bytes | None = attrs.field(repr=short_hex)
    compose_hash: bytes = attrs.field(repr=short_hex)
    key_provider: str
    key_provider_id: bytes | None = attrs.field(repr=False)
    instance_id: bytes | None = attrs.field(repr=short_hex)
    gpu_policy_hash: bytes | None = attrs.field(repr=False)
    init_script_hashes: tuple[bytes, ...] | None = attrs.field(repr=False)

    @classmethod
    def from_document(cls, document: str) -> MrConfigV3:
        where = "mr_config"
        obj = _json_object(
            parse_json(document, where, SnpEvidenceError),
            where,
            {"compose_hash", "key_provider"},
            {
                "version",
                "app_id",
                "gpu_policy_hash",
                "key_provider_id",
                "instance_id",
                "init_script_hashes",
            },
        )
        if obj.get("version", 3) != 3 or isinstance(obj.get("version"), bool):
            raise SnpEvidenceError(f"{where}.version: must be 3, got {obj.get('version')!r}")
        provider = obj["key_provider"]
        if provider not in _KEY_PROVIDERS:
            raise SnpEvidenceError(
                f"{where}.key_provider: {provider!r} is not one of {', '.join(_KEY_PROVIDERS)}"
            )
        compose_hash = _hex_or_none(obj, "compose_hash", where)
        if compose_hash is None:
            raise SnpEvidenceError(f"{where}.compose_hash: required")
        scripts = obj.get("init_script_hashes")
        hashes: tuple[bytes, ...] | None = None
        if scripts is not None:
            if not isinstance(scripts, list) or len(scripts) > 5:
                raise SnpEvidenceError(f"{where}.init_script_hashes: at most 5 hex hashes")
            hashes = tuple(
                _hex_or_none({"h": s}, "h", f"{where}.init_script_hashes") or b"" for s in scripts
            )
            if any(len(h) != 32 for h in hashes):
                raise SnpEvidenceError(f"{where}.init_script_hashes: each must be 32 bytes")
        return cls(
            document=document,
            app_id=_hex_or_none(obj, "app_id", where),
            compose_hash=compose_hash,
            key_provider=provider,
            key_provider_id=_hex_or_none(obj, "key_provider_id", where),
            instance_id=_hex_or_none(obj, "instance_id", where),
            gpu_policy_hash=_hex_or_none(obj, "gpu_policy_hash", where),
            init_script_hashes=hashes,
        )

    @property
    def host_data(self) -> bytes:
        return snp_host_data(self.document)

    def canonical_document(self) -> str:
        """The JCS form dstack hosts generate (keys sorted, no spaces, lower-case hex)."""
        import json

        obj: dict[str, Any] = {
            "app_id": None if self.app_id is None else self.app_id.hex(),
            "compose_hash": self.compose_hash.hex(),
            "gpu_policy_hash": None if self.gpu_policy_hash is None else self.gpu_policy_hash.hex(),
            "init_script_hashes": None
            if self.init_script_hashes is None
            else [h.hex() for h in self.init_script_hashes],
            "instance_id": None if self.instance_id is None else self.instance_id.hex(),
            "key_provider": self.key_provider,
            "key_provider_id": None if self.key_provider_id is None else self.key_provider_id.hex(),
            "version": 3,
        }
        return json.dumps(
            {k: v for k, v in obj.items() if v is not None}, separators=(",", ":"), sort_keys=True
        )

    def to_dict(self) -> dict[str, Any]:
        def h(b: bytes | None) -> str | None:
            return None if b is None else b.hex()

        return {
            "app_id": h(self.app_id),
            "compose_hash": self.compose_hash.hex(),
            "key_provider": self.key_provider,
            "key_provider_id": h(self.key_provider_id),
            "instance_id": h(self.instance_id),
            "gpu_policy_hash": h(self.gpu_policy_hash),
        }


# --- the SNP part of vm_config ---------------------------------------------------------------


@attrs.frozen
class SnpVmConfig:
    """What an SNP verifier reads from ``vm_config``: the image identity, the measurement
    document and the MrConfigV3 text (each as supplied), plus the raw object for display."""

    os_image_hash: bytes | None
    sev_snp_measurement: str | None = attrs.field(repr=False)
    mr_config: str | None = attrs.field(repr=False)
    fields: dict[str, Any] = attrs.field(repr=False, factory=dict)

    @classmethod
    def from_json(cls, text: str | bytes) -> SnpVmConfig:
        obj = parse_json(text, "vm_config", SnpEvidenceError)
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: object) -> SnpVmConfig:
        if not isinstance(obj, Mapping):
            raise SnpEvidenceError(f"vm_config: expected a JSON object, got {type(obj).__name__}")
        nested = obj.get("vm_config")
        inner: Mapping[str, Any] = {}
        if isinstance(nested, str):
            # The legacy shape: the VmConfig as a JSON string inside the object.
            parsed = parse_json(nested, "vm_config.vm_config", SnpEvidenceError)
            if not isinstance(parsed, Mapping):
                raise SnpEvidenceError("vm_config.vm_config: expected a JSON object")
            inner = parsed

        def pick(key: str) -> Any:
            value = obj.get(key)
            return value if value not in (None, "") else inner.get(key)

        def text(key: str) -> str | None:
            value = pick(key)
            if value is not None and not isinstance(value, str):
                raise SnpEvidenceError(f"vm_config.{key}: expected a JSON string")
            return value

        image_hash = text("os_image_hash")
        raw_hash = None
        if image_hash:
            if not re.fullmatch(r"(?:[0-9a-fA-F]{2})*", image_hash):
                raise SnpEvidenceError("vm_config.os_image_hash: not an even-length hex string")
            raw_hash = bytes.fromhex(image_hash)
        return cls(
            os_image_hash=raw_hash,
            sev_snp_measurement=text("sev_snp_measurement"),
            mr_config=text("mr_config"),
            fields={**inner, **obj},
        )

    def measurement_document(self) -> SnpMeasurementDocument:
        if self.sev_snp_measurement is None:
            raise SnpEvidenceError(
                "vm_config has no sev_snp_measurement: this VM's launch inputs are not "
                "carried, so its SNP measurement cannot be recomputed (pass --vm-config with one)"
            )
        return SnpMeasurementDocument.from_json(self.sev_snp_measurement)
