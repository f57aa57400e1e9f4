"""Configuration types shared with dstack: ``OvmfVariant``, ``VmConfig`` and ``ImageInfo``.

Field names, defaults and JSON shapes follow the Rust serde types of ``dstack-types`` so a
``VmConfig`` taken from a KMS request or a ``metadata.json`` from an image directory loads
unchanged. Loading is strict where serde is strict (a string is not a number, a number must
fit its Rust integer type) and lenient where serde is lenient (unknown keys are ignored).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, NewType, TypeVar

import attrs

if TYPE_CHECKING:
    import cattrs

from . import validate
from ._binary import from_hex
from .errors import ConfigError, DstackMrError, ImageError
from .registry import U32_MAX as U32_MAX  # re-exported: the home is registry
from .registry import U64_MAX as U64_MAX

U32 = NewType("U32", int)
U64 = NewType("U64", int)


class OvmfVariant(str, enum.Enum):
    """Which OVMF build, and so which RTMR0 event layout, the guest image carries."""

    #: OVMF before edk2-stable202505: 13 RTMR0 events.
    PRE202505 = "pre202505"
    #: edk2-stable202505 and later: 17 RTMR0 events.
    STABLE202505 = "stable202505"

    @property
    def rust_name(self) -> str:
        """The name the reference prints with ``{:?}`` (``Pre202505`` / ``Stable202505``)."""
        return "Pre202505" if self is OvmfVariant.PRE202505 else "Stable202505"

    def __str__(self) -> str:
        return self.value


class TdxAttestationVariant(str, enum.Enum):
    """Which TDX verification the VMM resolved for a boot (``vm_config.tdx_attestation_variant``).

    ``legacy`` recomputes everything, ACPI tables included, from the image; ``lite`` takes
    the three ACPI digests from the event log and the rest from ``tdx_measurement``.
    """

    LEGACY = "legacy"
    LITE = "lite"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class TdxMeasurementMaterial:
    """``vm_config.tdx_measurement``: the image's ``sha256sum.txt`` and its
    ``measurement.tdx.cbor``, raw bytes (base64 in JSON). Decoded and checked by
    :mod:`dstack_mr.measurement_doc`."""

    checksum_file: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    measurement: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


def parse_rust_u32(text: str) -> int | None:
    """Parse like Rust's ``str::parse::<u32>``: optional ``+``, ASCII digits, no overflow."""
    digits = text[1:] if text.startswith("+") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    digits = digits.lstrip("0") or "0"
    if len(digits) > 10:  # more than u32::MAX has; also keeps int() away from huge strings
        return None
    value = int(digits)
    return value if value <= U32_MAX else None


#: Rust's ``char::is_whitespace`` (Unicode White_Space). Python's ``str.split()`` and
#: ``str.strip()`` also treat U+001C..U+001F as whitespace, which Rust does not.
RUST_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_RUST_WS_RUN = re.compile(f"[{RUST_WHITESPACE}]+")


def rust_split_whitespace(text: str) -> list[str]:
    """Rust's ``str::split_whitespace``."""
    return [part for part in _RUST_WS_RUN.split(text) if part]


def rust_lines(text: str) -> list[str]:
    """Rust's ``str::lines``: split at ``\\n`` only, one trailing ``\\r`` dropped per line
    (Python's ``splitlines`` also splits at ``\\v``, ``\\f``, U+001C..U+001E, U+0085, U+2028
    and U+2029)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def parse_version_triple(text: str) -> tuple[int, int, int]:
    """Parse ``MAJOR.MINOR.PATCH`` with the reference's rules; raise ConfigError otherwise."""
    parts = text.split(".")
    numbers = [parse_rust_u32(p) for p in parts]
    for part, number in zip(parts, numbers, strict=True):
        if number is None:
            raise ConfigError(
                f"invalid version {text!r}: component {part!r} is not a number "
                "(expected MAJOR.MINOR.PATCH, e.g. 9.1.0)"
            )
    if len(numbers) != 3:
        raise ConfigError(
            f"invalid version {text!r}: expected exactly 3 parts (MAJOR.MINOR.PATCH), "
            f"got {len(numbers)}"
        )
    a, b, c = (n for n in numbers if n is not None)
    return (a, b, c)


def parse_os_version(text: str) -> tuple[int, int, int]:
    """A dstack OS version ``X.Y.Z`` or ``X.Y.Z.SUFFIX`` (upstream's rule: one optional,
    non-empty fourth component of any text, e.g. ``0.5.10.rc1``); the numeric triple."""
    parts = text.split(".")
    if len(parts) == 4:
        if not parts[3]:
            raise ConfigError(
                f"invalid version {text!r}: the fourth component (SUFFIX) is empty "
                "(expected X.Y.Z or X.Y.Z.SUFFIX, e.g. 0.5.10.rc1)"
            )
        parts = parts[:3]
    elif len(parts) > 4:
        raise ConfigError(
            f"invalid version {text!r}: expected X.Y.Z or X.Y.Z.SUFFIX, got {len(parts)} parts"
        )
    return parse_version_triple(".".join(parts))


#: Versions the seed's rule maps to stable202505: 0.5.10 <= v < 0.6.0 and v >= 0.6.1.
def _seed_says_stable(v: tuple[int, int, int]) -> bool:
    return (0, 5, 10) <= v < (0, 6, 0) or v >= (0, 6, 1)


def ovmf_variant_for_version(version: str) -> OvmfVariant:
    """OVMF layout of a dstack OS version (the seed's rule): 0.5.10 <= v < 0.6.0 and
    v >= 0.6.1 are stable202505, the rest pre202505. ``X.Y.Z.SUFFIX`` is accepted (the suffix
    does not matter). Upstream master maps every version to pre202505 instead: see
    :func:`version_rules_disagree`.

    Raises ConfigError for anything that is not ``X.Y.Z[.SUFFIX]``.
    """
    stable = _seed_says_stable(parse_os_version(version))
    return OvmfVariant.STABLE202505 if stable else OvmfVariant.PRE202505


def version_rules_disagree(version: str) -> bool:
    """True when the seed's version rule picks stable202505 where upstream master (which
    dropped the stable202505 layout) picks pre202505. Only the event log can then decide."""
    try:
        return _seed_says_stable(parse_os_version(version))
    except ConfigError:
        return False


def extract_version_from_image_name(image: str) -> str | None:
    """``X.Y.Z`` from an image name shaped ``<prefix>-X.Y.Z[.SUFFIX]``, else None.

    ``dstack-dev-0.6.1.dev`` gives ``0.6.1``; ``dstack-0.5``, ``dstack-0.5.10.`` and
    ``dstack-0.5.10.1.2`` give None.
    """
    tail = image.rsplit("-", 1)[-1]
    parts = tail.split(".")
    if not 3 <= len(parts) <= 4:
        return None
    if any(parse_rust_u32(p) is None for p in parts[:3]):
        return None
    if len(parts) == 4 and not parts[3]:
        return None
    return ".".join(parts[:3])


def ovmf_variant_for_image(image: str | None) -> OvmfVariant:
    """Variant from an image name; the default (pre202505) when it carries no valid version."""
    if image is None:
        return OvmfVariant.PRE202505
    version = extract_version_from_image_name(image)
    if version is None:
        return OvmfVariant.PRE202505
    try:
        return ovmf_variant_for_version(version)
    except ConfigError:
        return OvmfVariant.PRE202505


@attrs.frozen
class VmConfig:
    """The VMM's ``VmConfig`` (dstack-types), as carried in KMS requests and quotes' evidence."""

    os_image_hash: bytes = b""
    cpu_count: U32 = U32(0)
    memory_size: U64 = U64(0)
    #: Passed unchanged as ``two_pass_add_pages`` by the reference and the dstack verifier.
    qemu_single_pass_add_pages: bool | None = None
    pic: bool | None = None
    qemu_version: str | None = None
    pci_hole64_size: U64 = U64(0)
    hugepages: bool = False
    num_gpus: U32 = U32(0)
    num_nvswitches: U32 = U32(0)
    hotplug_off: bool = False
    image: str | None = None
    host_share_mode: str = ""
    ovmf_variant: OvmfVariant | None = None
    #: One ``-netdev``/``virtio-net-pci`` pair each; 1 is the reference's fixed single NIC.
    num_nics: U32 = U32(1)
    #: Read-only virtio-blk volumes attached after ``hd1``, before the NICs.
    num_verity_volumes: U32 = U32(0)
    #: A software TPM whose ACPI effect is not modelled: table-measuring paths refuse it.
    swtpm: bool = False
    tdx_attestation_variant: TdxAttestationVariant = TdxAttestationVariant.LEGACY
    tdx_measurement: TdxMeasurementMaterial | None = None

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> VmConfig:
        """From JSON text, or from an already-parsed JSON object (same checks)."""
        return _load_json(text, cls, ConfigError, "VmConfig")

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> VmConfig:
        return _structure(obj, cls, ConfigError, "VmConfig")

    def to_dict(self) -> dict[str, Any]:
        return _unstructure(self)


@attrs.frozen
class ImageInfo:
    """An image directory's ``metadata.json`` (dstack-types ``ImageInfo``)."""

    cmdline: str
    kernel: str
    initrd: str
    bios: str
    version: str = ""
    ovmf_variant: OvmfVariant | None = None

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> ImageInfo:
        """From JSON text, or from an already-parsed JSON object (same checks)."""
        return _load_json(text, cls, ImageError, "image metadata")

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ImageInfo:
        return _structure(obj, cls, ImageError, "image metadata")

    def to_dict(self) -> dict[str, Any]:
        return _unstructure(self)


# --- strict (un)structuring --------------------------------------------------------------


def _strict_str(value: Any, _type: Any) -> str:
    problem = validate.string(value)
    if problem is not None or not isinstance(value, str):
        raise ValueError(problem)
    if _SURROGATE.search(value):
        # JSON may spell a lone surrogate (\udc80); serde_json refuses it for a String.
        raise ValueError("string contains a lone UTF-16 surrogate")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _attestation_variant(value: Any, _type: Any) -> TdxAttestationVariant:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    try:
        return TdxAttestationVariant(value)
    except ValueError:
        raise ValueError(
            f"unknown tdx_attestation_variant {value!r} (expected 'legacy' or 'lite')"
        ) from None


def _base64(value: Any, what: str) -> bytes:
    import base64
    import binascii

    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a base64 string, got {type(value).__name__}")
    try:
        # validate=True: characters outside the alphabet are an error, not skipped.
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"{what}: not valid base64 ({e})") from None


def _material(value: Any, _type: Any) -> TdxMeasurementMaterial:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    missing = [k for k in ("checksum_file", "measurement") if k not in value]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    return TdxMeasurementMaterial(
        checksum_file=_base64(value["checksum_file"], "checksum_file"),
        measurement=_base64(value["measurement"], "measurement"),
    )


def _unmaterial(value: TdxMeasurementMaterial) -> dict[str, str]:
    import base64

    return {
        "checksum_file": base64.b64encode(value.checksum_file).decode(),
        "measurement": base64.b64encode(value.measurement).decode(),
    }


def _variant(value: Any, _type: Any) -> OvmfVariant:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    try:
        return OvmfVariant(value)
    except ValueError:
        raise ValueError(
            f"unknown OVMF variant {value!r} (expected 'pre202505' or 'stable202505')"
        ) from None


def _hex_bytes(value: Any, _type: Any) -> bytes:
    """The bytes of plain hex, decoded once; anything else is validate.hex_string's ValueError."""
    decoded = from_hex(value) if isinstance(value, str) else None
    if decoded is None:
        raise ValueError(validate.hex_string(value))
    return decoded


@cache
def _converter() -> cattrs.Converter:
    # Built on first use: importing cattrs costs ~10 ms that `dstack-mr measure` never needs.
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=False, omit_if_default=False)
    conv.register_structure_hook(U32, validate.cattrs_hook(validate.u32))
    conv.register_structure_hook(U64, validate.cattrs_hook(validate.u64))
    conv.register_structure_hook(bool, validate.cattrs_hook(validate.boolean))
    conv.register_structure_hook(str, _strict_str)
    # serde_human_bytes is plain hex::decode: no 0x prefix, no whitespace, even length.
    conv.register_structure_hook(bytes, _hex_bytes)
    conv.register_structure_hook(OvmfVariant, _variant)
    conv.register_structure_hook(TdxAttestationVariant, _attestation_variant)
    conv.register_structure_hook(TdxMeasurementMaterial, _material)
    conv.register_unstructure_hook(bytes, lambda b: b.hex())
    conv.register_unstructure_hook(OvmfVariant, lambda v: v.value)
    conv.register_unstructure_hook(TdxAttestationVariant, lambda v: v.value)
    conv.register_unstructure_hook(TdxMeasurementMaterial, _unmaterial)
    return conv


T = TypeVar("T")


def _structure(obj: Any, cls: type[T], error: type[DstackMrError], what: str) -> T:
    if not isinstance(obj, Mapping):
        raise error(f"{what}: expected a JSON object, got {type(obj).__name__}")
    # serde rejects a known field given twice (parse_json records them).
    seen_twice: frozenset[str] = getattr(obj, "duplicates", frozenset())
    dup = sorted(seen_twice & {f.name for f in attrs.fields(cls)})  # type: ignore[arg-type]
    if dup:
        raise error(f"{what}: duplicate field {dup[0]!r}")
    if cls is ImageInfo:
        plain = _plain_image_info(obj)
        if plain is not None:
            return plain  # type: ignore[return-value]  # cls is ImageInfo
    try:
        return _converter().structure(obj, cls)
    except Exception as exc:
        import cattrs

        details = "; ".join(cattrs.transform_error(exc, path=what, format_exception=_why))
        raise error(f"invalid {what}: {details}") from None


def _plain_image_info(obj: Mapping[str, Any]) -> ImageInfo | None:
    """A metadata.json of plain strings, built without cattrs (~10 ms of every `dstack-mr
    measure`); None for anything else, which the converter then checks and explains."""
    if "ovmf_variant" in obj:
        return None
    try:
        return ImageInfo(
            cmdline=_strict_str(obj["cmdline"], str),
            kernel=_strict_str(obj["kernel"], str),
            initrd=_strict_str(obj["initrd"], str),
            bios=_strict_str(obj["bios"], str),
            version=_strict_str(obj["version"], str) if "version" in obj else "",
        )
    except Exception:
        return None


def _why(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    import cattrs

    return cattrs.v.format_exception(exc, type_)


class _Object(dict[str, Any]):
    """A JSON object that remembers which keys it saw more than once."""

    duplicates: frozenset[str] = frozenset()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        obj.duplicates = frozenset(k for k in obj if keys.count(k) > 1)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str | bytes, what: str, error: type[DstackMrError]) -> Any:
    """JSON as strictly as serde_json reads it: UTF-8 only (no BOM), no NaN/Infinity.
    Objects record keys given twice (``duplicates``) for the caller to judge."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if text.startswith("\ufeff"):
            raise ValueError("a byte-order mark is not allowed")
        return json.loads(text, object_pairs_hook=_object, parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise error(
            f"{what} is not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except json.JSONDecodeError as e:
        raise error(f"{what}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except ValueError as e:
        raise error(f"{what}: invalid JSON ({e})") from None
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply") from None


def _load_json(
    text: str | bytes | Mapping[str, Any], cls: type[T], error: type[DstackMrError], what: str
) -> T:
    """Parse as strictly as serde_json; a field given twice is an error."""
    if isinstance(text, Mapping):
        return _structure(text, cls, error, what)
    if isinstance(text, bytearray):
        text = bytes(text)
    if not isinstance(text, (str, bytes)):
        raise error(
            f"{what}: expected a JSON object (a dict) or its text (str or bytes), "
            f"got {type(text).__name__}"
        )
    return _structure(parse_json(text, what, error), cls, error, what)


def _unstructure(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = _converter().unstructure(value)
    # serde skips these when None; mirror it so round-trips are byte-identical.
    for key in (
        "qemu_single_pass_add_pages",
        "pic",
        "qemu_version",
        "image",
        "ovmf_variant",
        "tdx_measurement",
    ):
        if key in out and out[key] is None:
            del out[key]
    # ... and these at their defaults, so a config from before they existed stays unchanged.
    for key, default in (
        ("num_nics", 1),
        ("num_verity_volumes", 0),
        ("swtpm", False),
        ("tdx_attestation_variant", "legacy"),
    ):
        if key in out and out[key] == default:
            del out[key]
    return out


#: Unicode White_Space, what Rust's str::trim removes (Python's strip also takes \x1c-\x1f).
_RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
#: u64::MAX has 20 decimal / 16 hex digits; anything longer (after leading zeros) overflows,
#: and checking first keeps int() away from huge strings.
_MAX_DIGITS = 20

_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory_size(text: str) -> int:
    """Parse ``2G`` / ``512M`` / ``4096`` / ``0x80000000`` like dstack's size-parser.

    Suffixes K, M, G, T are binary and case-insensitive; the result must fit a u64.
    """
    s = text.strip(_RUST_WHITESPACE)
    if not s:
        raise ConfigError("empty memory size")
    if s[:2] in ("0x", "0X"):
        digits = s[2:].removeprefix("+")
        if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise ConfigError(f"invalid hexadecimal memory size {text!r}")
        if len(digits.lstrip("0")) > 16:
            raise ConfigError(f"memory size {text!r} overflows u64")
        value = int(digits, 16)
    elif s.isascii() and s.isdigit():
        if len(s.lstrip("0")) > _MAX_DIGITS:
            raise ConfigError(f"memory size {text!r} overflows u64")
        value = int(s)
    else:
        unit = _SIZE_UNITS.get(s[-1].lower()) if s[-1].isascii() else None
        if unit is None:
            raise ConfigError(
                f"invalid memory size {text!r}: expected bytes, 0xHEX, or a number with "
                "K, M, G or T"
            )
        number = s[:-1].removeprefix("+")
        if not number or not number.isascii() or not number.isdigit():
            raise ConfigError(f"invalid number in memory size {text!r}")
        if len(number.lstrip("0")) > _MAX_DIGITS:
            raise ConfigError(f"memory size {text!r} overflows u64")
        value = int(number) * unit
    if value > U64_MAX:
        raise ConfigError(f"memory size {text!r} overflows u64")
    return value


def format_memory_size(size: int) -> str:
    """``2G``, ``1536M``, ``1.5K`` style, as dstack's size-parser prints sizes."""
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= unit:
            if size % unit == 0:
                return f"{size // unit}{suffix}"
            return f"{size / unit:.1f}{suffix}"
    return str(size)
