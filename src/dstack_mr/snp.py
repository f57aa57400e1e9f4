"""The expected AMD SEV-SNP launch MEASUREMENT of a dstack CVM (QEMU, kernel hashes on).

At launch the AMD secure processor folds every page QEMU hands it into a SHA-384 launch
digest, the guest context (GCTX): for each page, ``ld = SHA384(PAGE_INFO)`` where the
112-byte PAGE_INFO holds the previous ``ld``, the page's SHA-384 (zeros for pages whose
content the PSP fills itself), the page type and the guest physical address (SNP ABI
spec, PAGE_INFO). The final ``ld`` is the report's MEASUREMENT.

For dstack the pages are, in this order (upstream ``dstack-mr/src/sev.rs``, the QEMU path of
virtee's sev-snp-measure):

1. the OVMF image, mapped to end at 4 GiB — its digest is carried precomputed as
   ``ovmf_hash`` and seeds the GCTX;
2. the OVMF SEV metadata sections in their stored order: zero pages (SNP_SEC_MEMORY,
   SVSM_CAA), the secrets page, the CPUID page, and the kernel-hashes page holding
   SHA-256 of the cmdline (+ NUL), the initrd and the kernel;
3. one VMSA (initial register state) per vCPU: the BSP starts at ``0xfffffff0``, the APs at
   OVMF's SEV-ES reset EIP; each carries the vCPU's CPUID signature and the guest features.

Everything here is a pure function of its inputs; :class:`SnpLaunchInputs` validates them
the way upstream's verifier does before it recomputes.
"""

from __future__ import annotations

import enum
import hashlib
import re
import struct
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from . import registry, validate
from ._binary import Buffer, take, u16, u32
from .config import RUST_WHITESPACE, rust_split_whitespace
from .digest import short_hex
from .errors import SnpError
from .registry import U32_MAX, U64_MAX

if TYPE_CHECKING:
    from .snp_document import SnpImageMeasurement

__all__ = [
    "BSP_EIP",
    "MAX_OVMF_METADATA_PAGES",
    "MAX_OVMF_SECTIONS",
    "MAX_VCPUS",
    "VCPU_MODEL_NAMES",
    "VCPU_TYPES",
    "OvmfSection",
    "PageType",
    "SectionType",
    "SnpLaunchInputs",
    "SnpMeasurement",
    "SnpOvmf",
    "SnpStep",
    "image_inputs_dict",
    "measured_cmdline",
    "rootfs_hash_from_cmdline",
    "sev_hashes_page",
    "snp_ovmf_hash",
    "vcpu_signature",
    "vmsa_chain",
    "vmsa_page",
]

PAGE_SIZE = 4096
LD_LEN = 48
_ZEROS_LD = bytes(LD_LEN)
FOUR_GIB = 1 << 32
#: The VMSA page is recorded at GPA (u64)-1, page-aligned, bits above 51 cleared.
VMSA_GPA = 0x0000_FFFF_FFFF_F000
BSP_EIP = 0xFFFF_FFF0

# Upstream's bounds on a measurement input (sev.rs).
MAX_VCPUS = 512
MAX_OVMF_SECTIONS = 64
MAX_OVMF_METADATA_PAGES = 16_777_216


class PageType(enum.IntEnum):
    """SNP_LAUNCH_UPDATE page types as they enter PAGE_INFO."""

    NORMAL = 0x01
    VMSA = 0x02
    ZERO = 0x03
    UNMEASURED = 0x04
    SECRETS = 0x05
    CPUID = 0x06


class SectionType(enum.IntEnum):
    """OVMF SEV metadata section types (OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm)."""

    SNP_SEC_MEMORY = 0x01
    SNP_SECRETS = 0x02
    CPUID = 0x03
    SVSM_CAA = 0x04
    SNP_KERNEL_HASHES = 0x10


_SECTION_TYPES = frozenset(t.value for t in SectionType)

# --- the launch digest -----------------------------------------------------------------------


def _page_info(ld: bytes, contents: bytes, page_type: int, gpa: int) -> bytes:
    # PAGE_INFO: digest so far, page digest, length 0x70, type, IMI page = 0, VMPL1-3
    # permissions = 0, reserved, GPA.
    return ld + contents + struct.pack("<HBB4xQ", 0x70, page_type, 0, gpa)


class _Gctx:
    """The running launch digest (private and mutable; results leave as bytes)."""

    __slots__ = ("ld",)

    def __init__(self, seed: bytes = _ZEROS_LD) -> None:
        self.ld = seed

    def update(self, page_type: int, gpa: int, contents: bytes) -> None:
        self.ld = hashlib.sha384(_page_info(self.ld, contents, page_type, gpa)).digest()

    def normal_pages(self, gpa: int, data: Buffer) -> None:
        # A trailing partial page is hashed as it is, like upstream (chunks of 4096).
        view = memoryview(data)
        for off in range(0, len(view), PAGE_SIZE):
            page = hashlib.sha384(view[off : off + PAGE_SIZE]).digest()
            self.update(PageType.NORMAL, gpa + off, page)

    def zero_pages(self, gpa: int, size: int, page_type: int = PageType.ZERO) -> None:
        for off in range(0, size, PAGE_SIZE):
            self.update(page_type, gpa + off, _ZEROS_LD)


def snp_ovmf_hash(firmware: Buffer) -> bytes:
    """The GCTX after the OVMF image alone, mapped to end at 4 GiB (``ovmf_hash``)."""
    if len(firmware) > FOUR_GIB:
        raise SnpError(f"SEV firmware: {len(firmware)} bytes do not fit below 4 GiB")
    gctx = _Gctx()
    gctx.normal_pages(FOUR_GIB - len(firmware), firmware)
    return gctx.ld


# --- the kernel hashes page ------------------------------------------------------------------


_HASH_TABLE_GUID = registry.SEV_HASH_TABLE.bytes_le
_CMDLINE_GUID = registry.SEV_CMDLINE_ENTRY.bytes_le
_INITRD_GUID = registry.SEV_INITRD_ENTRY.bytes_le
_KERNEL_GUID = registry.SEV_KERNEL_ENTRY.bytes_le
_ENTRY_LEN = 16 + 2 + 32
_TABLE_LEN = 16 + 2 + 3 * _ENTRY_LEN
_PADDED_TABLE_LEN = (_TABLE_LEN + 15) & ~15


def measured_cmdline(cmdline: str) -> str:
    """The cmdline QEMU hashes for dstack: the document's, trimmed (Rust ``str::trim``)."""
    return cmdline.strip(RUST_WHITESPACE)


def rootfs_hash_from_cmdline(cmdline: str) -> bytes:
    """The ``dstack.rootfs_hash=`` value (32 bytes) the measured cmdline must commit to."""
    for param in rust_split_whitespace(cmdline):
        if param.startswith("dstack.rootfs_hash="):
            value = param[len("dstack.rootfs_hash=") :]
            raw = bytes.fromhex(value) if re.fullmatch(r"(?:[0-9a-fA-F]{2})*", value) else None
            if raw is None or len(raw) != 32:
                raise SnpError(f"cmdline: dstack.rootfs_hash={value[:80]!r} is not 32 bytes of hex")
            return raw
    raise SnpError(
        "cmdline: dstack.rootfs_hash=<64 hex digits> is required in an SEV-SNP measured "
        "cmdline (it is what commits the root filesystem)"
    )


def _entry(guid: bytes, digest: bytes) -> bytes:
    return guid + struct.pack("<H", _ENTRY_LEN) + digest


def sev_hashes_page(cmdline: str, kernel_hash: bytes, initrd_hash: bytes, offset: int) -> bytes:
    """The 4 KiB page QEMU fills with the SEV hash table at ``offset``: SHA-256 of the
    cmdline plus its NUL, of the initrd and of the kernel, as GUID-tagged entries."""
    if len(kernel_hash) != 32 or len(initrd_hash) != 32:
        raise SnpError("kernel and initrd hashes must be 32 bytes (SHA-256)")
    if offset < 0 or offset + _PADDED_TABLE_LEN > PAGE_SIZE:
        raise SnpError(
            f"hashes_table_gpa: the SEV hash table at page offset {offset:#x} would overflow "
            "its 4096-byte page"
        )
    cmdline_hash = hashlib.sha256(cmdline.encode() + b"\0").digest()
    table = (
        _HASH_TABLE_GUID
        + struct.pack("<H", _TABLE_LEN)
        + _entry(_CMDLINE_GUID, cmdline_hash)
        + _entry(_INITRD_GUID, initrd_hash)
        + _entry(_KERNEL_GUID, kernel_hash)
    )
    return bytes(offset) + table + bytes(PAGE_SIZE - offset - _TABLE_LEN)


# --- VMSAs -----------------------------------------------------------------------------------


def _amd_cpu_signature(family: int, model: int, stepping: int) -> int:
    # CPUID Fn0000_0001_EAX: extended family/model above the base fields.
    family_low, family_high = (0xF, (family - 0xF) & 0xFF) if family > 0xF else (family, 0)
    return (
        (family_high << 20)
        | (((model >> 4) & 0xF) << 16)
        | (family_low << 8)
        | ((model & 0xF) << 4)
        | (stepping & 0xF)
    )


_EPYC = _amd_cpu_signature(23, 1, 2)
_ROME = _amd_cpu_signature(23, 49, 0)
_MILAN = _amd_cpu_signature(25, 1, 1)
_GENOA = _amd_cpu_signature(25, 17, 0)

#: QEMU CPU models upstream accepts (matched trimmed and case-insensitively) and their
#: CPUID signatures. sev-snp-measure also knows EPYC-Turin; upstream does not, so neither
#: do we: a Turin launch would be rejected by the dstack verifier.
_MODELS = {
    "EPYC": _EPYC,
    "EPYC-v1": _EPYC,
    "EPYC-v2": _EPYC,
    "EPYC-IBPB": _EPYC,
    "EPYC-v3": _EPYC,
    "EPYC-v4": _EPYC,
    "EPYC-Rome": _ROME,
    "EPYC-Rome-v1": _ROME,
    "EPYC-Rome-v2": _ROME,
    "EPYC-Rome-v3": _ROME,
    "EPYC-Milan": _MILAN,
    "EPYC-Milan-v1": _MILAN,
    "EPYC-Milan-v2": _MILAN,
    "EPYC-Genoa": _GENOA,
    "EPYC-Genoa-v1": _GENOA,
}
VCPU_TYPES: dict[str, int] = {name.lower(): sig for name, sig in _MODELS.items()}
#: One model name per signature, for reports.
VCPU_MODEL_NAMES: dict[int, str] = {
    _EPYC: "EPYC-v4",
    _ROME: "EPYC-Rome",
    _MILAN: "EPYC-Milan",
    _GENOA: "EPYC-Genoa",
}


def vcpu_signature(vcpu_type: str) -> int:
    """The CPUID signature QEMU puts in a VMSA's RDX for a CPU model name."""
    key = vcpu_type.strip(RUST_WHITESPACE).lower()
    if key not in VCPU_TYPES:
        known = ", ".join(_MODELS)
        raise SnpError(f"unknown vcpu_type {vcpu_type!r}; known QEMU CPU models: {known}")
    return VCPU_TYPES[key]


def _segment(page: bytearray, off: int, selector: int, attrib: int, base: int) -> None:
    struct.pack_into("<HHIQ", page, off, selector, attrib, 0xFFFF, base)


def vmsa_page(eip: int, vcpu_sig: int, sev_features: int) -> bytes:
    """A vCPU's initial VMSA as QEMU/KVM creates it (SEV-ES save area, real mode at ``eip``)."""
    page = bytearray(PAGE_SIZE)
    # es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr
    _segment(page, 0x000, 0, 0x93, 0)
    _segment(page, 0x010, 0xF000, 0x9B, eip & 0xFFFF_0000)
    _segment(page, 0x020, 0, 0x93, 0)
    _segment(page, 0x030, 0, 0x93, 0)
    _segment(page, 0x040, 0, 0x93, 0)
    _segment(page, 0x050, 0, 0x93, 0)
    _segment(page, 0x060, 0, 0x00, 0)
    _segment(page, 0x070, 0, 0x82, 0)
    _segment(page, 0x080, 0, 0x00, 0)
    _segment(page, 0x090, 0, 0x8B, 0)
    for off, value in (
        (0x0D0, 0x1000),  # EFER.SVME (KVM)
        (0x148, 0x40),  # CR4.MCE (KVM)
        (0x158, 0x10),  # CR0
        (0x160, 0x400),  # DR7
        (0x168, 0xFFFF_0FF0),  # DR6
        (0x170, 0x2),  # RFLAGS
        (0x178, eip & 0xFFFF),  # RIP
        (0x268, 0x0007_0406_0007_0406),  # G_PAT
        (0x310, vcpu_sig),  # RDX
        (0x3B0, sev_features),
        (0x3E8, 0x1),  # XCR0
    ):
        struct.pack_into("<Q", page, off, value)
    struct.pack_into("<I", page, 0x408, 0x1F80)  # MXCSR
    struct.pack_into("<H", page, 0x410, 0x037F)  # x87 FCW
    return bytes(page)


# --- inputs ----------------------------------------------------------------------------------


def _int_field(name: str, lo: int, hi: int) -> Any:
    return validate.attrs_validator(validate.int_range(lo, hi), name, SnpError)


def _bytes_field(name: str, length: int) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, bytes) or len(value) != length:
            got = len(value) if isinstance(value, bytes) else type(value).__name__
            raise SnpError(f"{name} must be {length} bytes, got {got}")

    return check


def _text_field(name: str) -> Any:
    return validate.attrs_validator(validate.string, name, SnpError)


@attrs.frozen
class OvmfSection:
    """One OVMF SEV metadata section: where it is, how big, and what QEMU does with it."""

    gpa: int = attrs.field(validator=_int_field("ovmf section gpa", 0, U64_MAX))
    size: int = attrs.field(validator=_int_field("ovmf section size", 1, U64_MAX))
    section_type: int = attrs.field(validator=_int_field("ovmf section type", 0, U32_MAX))

    def __attrs_post_init__(self) -> None:
        if self.section_type not in _SECTION_TYPES:
            raise SnpError(f"unknown ovmf section type {self.section_type:#x}")
        if self.gpa + self.size > U64_MAX + 1:
            raise SnpError(f"ovmf section at {self.gpa:#x} + {self.size:#x} ends past 2^64")

    @property
    def kind(self) -> SectionType:
        return SectionType(self.section_type)

    @property
    def pages(self) -> int:
        # A hashes section is measured as one page whatever its size (as upstream does).
        if self.kind is SectionType.SNP_KERNEL_HASHES:
            return 1
        if self.kind in (SectionType.SNP_SECRETS, SectionType.CPUID):
            return 1
        return -(-self.size // PAGE_SIZE)

    def to_dict(self) -> dict[str, int]:
        return {"gpa": self.gpa, "size": self.size, "type": self.section_type}


def _sections(value: Sequence[OvmfSection]) -> tuple[OvmfSection, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise SnpError(f"ovmf_sections must be a sequence of OvmfSection, got {value!r:.40}")
    return tuple(value)


@attrs.frozen
class SnpStep:
    """One stage of the launch digest: what was added, at which GPA, and the digest after."""

    label: str
    gpa: int | None
    pages: int
    digest: bytes = attrs.field(repr=short_hex)
    varies_with: str = attrs.field(repr=False)


def image_inputs_dict(inputs: SnpLaunchInputs | SnpImageMeasurement) -> dict[str, Any]:
    """The image part of the launch inputs as JSON (digests in hex), in the document's order."""
    return {
        "cmdline": inputs.cmdline,
        "ovmf_hash": inputs.ovmf_hash.hex(),
        "kernel_hash": inputs.kernel_hash.hex(),
        "initrd_hash": inputs.initrd_hash.hex(),
        "hashes_table_gpa": inputs.hashes_table_gpa,
        "reset_eip": inputs.reset_eip,
        "ovmf_sections": [s.to_dict() for s in inputs.ovmf_sections],
    }


@attrs.frozen
class SnpLaunchInputs:
    """Everything that determines a dstack SEV-SNP launch MEASUREMENT.

    The image part (``cmdline`` … ``ovmf_sections``) is ``measurement.snp.cbor``; ``vcpus``,
    ``vcpu_type`` and ``guest_features`` are per deployment. ``cmdline`` is the image's
    cmdline as the document carries it (measured trimmed); an empty ``initrd_hash`` means
    no initrd (SHA-256 of nothing), as upstream reads it.
    """

    cmdline: str = attrs.field(validator=_text_field("cmdline"))
    ovmf_hash: bytes = attrs.field(validator=_bytes_field("ovmf_hash", LD_LEN), repr=short_hex)
    kernel_hash: bytes = attrs.field(validator=_bytes_field("kernel_hash", 32), repr=short_hex)
    initrd_hash: bytes = attrs.field(repr=short_hex)
    hashes_table_gpa: int = attrs.field(validator=_int_field("hashes_table_gpa", 1, U64_MAX))
    reset_eip: int = attrs.field(validator=_int_field("reset_eip", 1, U32_MAX))
    ovmf_sections: tuple[OvmfSection, ...] = attrs.field(converter=_sections, repr=False)
    vcpus: int = attrs.field(validator=_int_field("vcpus", 1, MAX_VCPUS))
    vcpu_type: str = attrs.field(validator=_text_field("vcpu_type"))
    guest_features: int = attrs.field(validator=_int_field("guest_features", 1, U64_MAX))

    @initrd_hash.validator
    def _check_initrd(self, _attr: object, value: object) -> None:
        if not isinstance(value, bytes) or len(value) not in (0, 32):
            raise SnpError("initrd_hash must be 32 bytes (or empty for no initrd)")

    def __attrs_post_init__(self) -> None:
        vcpu_signature(self.vcpu_type)
        if not self.ovmf_sections:
            raise SnpError("ovmf_sections: an SEV-SNP launch needs the OVMF metadata sections")
        if len(self.ovmf_sections) > MAX_OVMF_SECTIONS:
            raise SnpError(f"ovmf_sections: more than {MAX_OVMF_SECTIONS} sections")
        if not all(isinstance(s, OvmfSection) for s in self.ovmf_sections):
            raise SnpError("ovmf_sections must be OvmfSection values")
        pages = sum(-(-s.size // PAGE_SIZE) for s in self.ovmf_sections)
        if pages > MAX_OVMF_METADATA_PAGES:
            raise SnpError(
                f"ovmf_sections: {pages} pages exceed the limit of {MAX_OVMF_METADATA_PAGES}"
            )
        if not any(s.kind is SectionType.SNP_KERNEL_HASHES for s in self.ovmf_sections):
            raise SnpError(
                "ovmf_sections: no SNP_KERNEL_HASHES section, so the kernel, initrd and cmdline "
                "would not be measured (is this an SEV firmware built with kernel hashes?)"
            )
        self.hashes_page()  # the table must fit its page

    @property
    def effective_initrd_hash(self) -> bytes:
        return self.initrd_hash or hashlib.sha256(b"").digest()

    @property
    def vcpu_sig(self) -> int:
        return vcpu_signature(self.vcpu_type)

    def hashes_page(self) -> bytes:
        return sev_hashes_page(
            measured_cmdline(self.cmdline),
            self.kernel_hash,
            self.effective_initrd_hash,
            self.hashes_table_gpa & 0xFFF,
        )

    def evolve(self, **changes: Any) -> SnpLaunchInputs:
        return attrs.evolve(self, **changes)

    def measure(self) -> SnpMeasurement:
        """Recompute the launch MEASUREMENT, stage by stage."""
        return SnpMeasurement(self, tuple(_steps(self)))

    def to_dict(self) -> dict[str, Any]:
        return {
            **image_inputs_dict(self),
            "vcpus": self.vcpus,
            "vcpu_type": self.vcpu_type,
            "guest_features": self.guest_features,
        }


_SECTION_VARIES = {
    SectionType.SNP_SEC_MEMORY: "image (OVMF metadata)",
    SectionType.SNP_SECRETS: "image (OVMF metadata)",
    SectionType.CPUID: "image (OVMF metadata)",
    SectionType.SVSM_CAA: "image (OVMF metadata)",
    SectionType.SNP_KERNEL_HASHES: "cmdline, kernel, initrd, hashes_table_gpa",
}


def _steps(inputs: SnpLaunchInputs) -> Iterator[SnpStep]:
    gctx = _Gctx(inputs.ovmf_hash)
    yield SnpStep("ovmf (ovmf_hash)", None, 0, gctx.ld, "image (OVMF firmware)")
    for s in inputs.ovmf_sections:
        kind = s.kind
        if kind in (SectionType.SNP_SEC_MEMORY, SectionType.SVSM_CAA):
            gctx.zero_pages(s.gpa, s.size)
        elif kind is SectionType.SNP_SECRETS:
            gctx.update(PageType.SECRETS, s.gpa, _ZEROS_LD)
        elif kind is SectionType.CPUID:
            gctx.update(PageType.CPUID, s.gpa, _ZEROS_LD)
        else:
            gctx.normal_pages(s.gpa, inputs.hashes_page())
        label = f"{kind.name.lower()} {s.gpa:#x}+{s.size:#x}"
        yield SnpStep(label, s.gpa, s.pages, gctx.ld, _SECTION_VARIES[kind])
    sig = inputs.vcpu_sig
    bsp = hashlib.sha384(vmsa_page(BSP_EIP, sig, inputs.guest_features)).digest()
    ap = hashlib.sha384(vmsa_page(inputs.reset_eip, sig, inputs.guest_features)).digest()
    for i in range(inputs.vcpus):
        gctx.update(PageType.VMSA, VMSA_GPA, bsp if i == 0 else ap)
        role = "BSP" if i == 0 else "AP, reset_eip"
        yield SnpStep(
            f"vmsa[{i}] ({role})", VMSA_GPA, 1, gctx.ld, "vcpus, vcpu_type, guest_features"
        )


def vmsa_chain(
    pre_vmsa: bytes, reset_eip: int, vcpu_sig: int, guest_features: int, max_vcpus: int
) -> Iterator[tuple[int, bytes]]:
    """(n, MEASUREMENT with n vCPUs) for n = 1..max_vcpus, from the digest before the VMSAs:
    every vCPU count of one vCPU model costs one hash each."""
    bsp = hashlib.sha384(vmsa_page(BSP_EIP, vcpu_sig, guest_features)).digest()
    ap = hashlib.sha384(vmsa_page(reset_eip, vcpu_sig, guest_features)).digest()
    gctx = _Gctx(pre_vmsa)
    for n in range(1, max_vcpus + 1):
        gctx.update(PageType.VMSA, VMSA_GPA, bsp if n == 1 else ap)
        yield n, gctx.ld


@attrs.frozen
class SnpMeasurement:
    """An expected launch MEASUREMENT with the inputs and labelled stages behind it."""

    inputs: SnpLaunchInputs = attrs.field(repr=False)
    steps: tuple[SnpStep, ...] = attrs.field(repr=lambda s: f"<{len(s)} steps>")

    @property
    def measurement(self) -> bytes:
        return self.steps[-1].digest

    @property
    def pre_vmsa_digest(self) -> bytes:
        """The launch digest before the first VMSA (what vCPU settings build on)."""
        return self.steps[len(self.inputs.ovmf_sections)].digest

    def to_dict(self) -> dict[str, Any]:
        return {
            "measurement": self.measurement.hex(),
            "inputs": self.inputs.to_dict(),
            "steps": [
                {
                    "label": s.label,
                    "gpa": s.gpa,
                    "pages": s.pages,
                    "digest": s.digest.hex(),
                    "varies_with": s.varies_with,
                }
                for s in self.steps
            ],
        }

    def _repr_html_(self) -> str:
        from .snp_render import measurement_html

        return measurement_html(self)


# --- the SEV firmware ------------------------------------------------------------------------

_FOOTER_GUID = registry.OVMF_TABLE_FOOTER.bytes_le
_HASH_TABLE_RV_GUID = registry.SEV_HASH_TABLE_RV.bytes_le
_SEV_ES_RESET_GUID = registry.SEV_ES_RESET_BLOCK.bytes_le
_SEV_METADATA_GUID = registry.SEV_METADATA.bytes_le
#: The GUIDed footer table ends 32 bytes before the end of the image (reset vector).
_RESET_VECTOR_TAIL = 32
_ENTRY_HEADER = 18  # u16 size + GUID, at the end of each entry


def _footer_entries(data: bytes) -> dict[bytes, bytes]:
    footer_off = len(data) - _RESET_VECTOR_TAIL - _ENTRY_HEADER
    if footer_off < 0:
        raise SnpError(f"SEV firmware: {len(data)} bytes is too small for an OVMF footer table")
    total = u16(data, footer_off, "OVMF footer table size", SnpError)
    if take(data, footer_off + 2, 16, "OVMF footer GUID", SnpError) != _FOOTER_GUID:
        raise SnpError(
            "SEV firmware: no OVMF footer table GUID 16 bytes before the reset vector "
            "(is this an OVMF image at all?)"
        )
    if total < _ENTRY_HEADER or total - _ENTRY_HEADER > footer_off:
        raise SnpError(f"SEV firmware: OVMF footer table size {total} is out of bounds")
    table = data[footer_off - (total - _ENTRY_HEADER) : footer_off]
    found: dict[bytes, bytes] = {}
    end = len(table)
    # Walked from the end like upstream, which keeps the last one it sees of a GUID.
    while end >= _ENTRY_HEADER:
        size = u16(table, end - _ENTRY_HEADER, "OVMF footer entry size", SnpError)
        if size < _ENTRY_HEADER or size > end:
            raise SnpError(f"SEV firmware: OVMF footer entry size {size} is out of bounds")
        guid = table[end - 16 : end]
        body = table[end - size : end - _ENTRY_HEADER]
        if len(body) >= 4:
            found[guid] = body
        end -= size
    if end:
        raise SnpError(f"SEV firmware: {end} stray bytes at the start of the OVMF footer table")
    return found


@attrs.frozen
class SnpOvmf:
    """An SEV-capable OVMF image: where it sits and what its SEV metadata declares."""

    gpa: int
    size: int
    sections: tuple[OvmfSection, ...]
    hashes_table_gpa: int
    reset_eip: int
    ovmf_hash: bytes = attrs.field(repr=short_hex)

    @classmethod
    def parse(cls, data: Buffer) -> SnpOvmf:
        fw = bytes(data)
        if len(fw) > FOUR_GIB:
            raise SnpError(f"SEV firmware: {len(fw)} bytes do not fit below 4 GiB")
        entries = _footer_entries(fw)

        def entry(guid: bytes, what: str) -> int:
            if guid not in entries:
                raise SnpError(f"SEV firmware: no {what} entry in the OVMF footer table")
            return u32(entries[guid], 0, f"OVMF {what} entry", SnpError)

        hashes_gpa = entry(_HASH_TABLE_RV_GUID, "SEV hash table")
        if not hashes_gpa:
            raise SnpError("SEV firmware: the SEV hash table GPA is 0 (no kernel hashes)")
        reset_eip = entry(_SEV_ES_RESET_GUID, "SEV-ES reset block")
        if not reset_eip:
            raise SnpError("SEV firmware: the SEV-ES reset EIP is 0")
        meta_from_end = entry(_SEV_METADATA_GUID, "SEV metadata")
        start = len(fw) - meta_from_end
        if start < 0:
            raise SnpError(f"SEV firmware: SEV metadata offset {meta_from_end} exceeds the image")
        if take(fw, start, 4, "SEV metadata signature", SnpError) != b"ASEV":
            raise SnpError(f"SEV firmware: no 'ASEV' SEV metadata signature at {start:#x}")
        version = u32(fw, start + 8, "SEV metadata version", SnpError)
        if version != 1:
            raise SnpError(f"SEV firmware: SEV metadata version {version} is not 1")
        count = u32(fw, start + 12, "SEV metadata section count", SnpError)
        if count > MAX_OVMF_SECTIONS:
            raise SnpError(f"SEV firmware: {count} SEV metadata sections (limit 64)")
        sections = []
        for i in range(count):
            off = start + 16 + 12 * i
            gpa, size, kind = struct.unpack(
                "<III", take(fw, off, 12, f"SEV metadata section {i}", SnpError)
            )
            if size == 0:
                raise SnpError(f"SEV firmware: SEV metadata section {i} has size 0")
            sections.append(OvmfSection(gpa, size, kind))
        return cls(
            gpa=FOUR_GIB - len(fw),
            size=len(fw),
            sections=tuple(sections),
            hashes_table_gpa=hashes_gpa,
            reset_eip=reset_eip,
            ovmf_hash=snp_ovmf_hash(fw),
        )

    def launch_inputs(
        self,
        cmdline: str,
        kernel_hash: bytes,
        initrd_hash: bytes,
        vcpus: int,
        vcpu_type: str,
        guest_features: int,
    ) -> SnpLaunchInputs:
        return SnpLaunchInputs(
            cmdline=cmdline,
            ovmf_hash=self.ovmf_hash,
            kernel_hash=kernel_hash,
            initrd_hash=initrd_hash,
            hashes_table_gpa=self.hashes_table_gpa,
            reset_eip=self.reset_eip,
            ovmf_sections=self.sections,
            vcpus=vcpus,
            vcpu_type=vcpu_type,
            guest_features=guest_features,
        )
