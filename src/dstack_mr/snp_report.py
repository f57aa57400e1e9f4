"""The AMD SEV-SNP attestation report (the 1184-byte ATTESTATION_REPORT of the SNP ABI).

Only decoding: the report's ECDSA P-384 signature and its VCEK → ASK → ARK certificate chain
are located but NOT verified. That is an AMD verifier's job (upstream: ``sev-snp-qvl``);
comparing the measurement of an unverified report is still what a diagnosis needs, and
every caller that prints a verdict says the signature was not checked.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._binary import Buffer, take, u32, u64
from .digest import short_hex
from .errors import SnpEvidenceError

__all__ = ["REPORT_LEN", "SnpPolicy", "SnpReport", "SnpTcb", "parse_snp_report"]

REPORT_LEN = 0x4A0  # 1184
_SIGNED_LEN = 0x2A0  # the signature covers bytes 0x000..0x29F
#: Report versions whose layout this parser knows (2: Milan/Genoa firmware, 3: adds the
#: CPUID family/model/stepping, 5: adds mitigation vectors; 4 was never released).
KNOWN_VERSIONS = frozenset({2, 3, 5})


@attrs.frozen
class SnpTcb:
    """A TCB_VERSION: the security version numbers of the firmware components.

    Turin (family 0x1A) moved the fields; ``turin`` says which layout was applied.
    """

    raw: int = attrs.field(repr=lambda v: f"{v:#018x}")
    turin: bool = False

    def _byte(self, i: int) -> int:
        return (self.raw >> (8 * i)) & 0xFF

    @property
    def bootloader(self) -> int:
        return self._byte(1 if self.turin else 0)

    @property
    def tee(self) -> int:
        return self._byte(2 if self.turin else 1)

    @property
    def snp(self) -> int:
        return self._byte(3 if self.turin else 6)

    @property
    def microcode(self) -> int:
        return self._byte(7)

    @property
    def fmc(self) -> int | None:
        return self._byte(0) if self.turin else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"raw": f"{self.raw:016x}"}
        if self.turin:
            out["fmc"] = self.fmc
        out.update(bootloader=self.bootloader, tee=self.tee, snp=self.snp, microcode=self.microcode)
        return out

    def __str__(self) -> str:
        fmc = f"fmc={self.fmc} " if self.turin else ""
        return (
            f"{fmc}bootloader={self.bootloader} tee={self.tee} snp={self.snp} "
            f"microcode={self.microcode}"
        )


_POLICY_BITS = {
    16: "smt",
    18: "migrate_ma",
    19: "debug",
    20: "single_socket",
    21: "cxl_allow",
    22: "mem_aes_256_xts",
    23: "rapl_dis",
    24: "ciphertext_hiding",
    25: "page_swap_disable",
}


@attrs.frozen
class SnpPolicy:
    """The guest policy the VM was launched with (SNP ABI, GUEST_POLICY)."""

    raw: int = attrs.field(repr=hex)

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.raw >> 8) & 0xFF

    @property
    def debug(self) -> bool:
        """A debug-enabled guest's memory can be read by the host: it is not confidential."""
        return bool(self.raw >> 19 & 1)

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(name for bit, name in _POLICY_BITS.items() if self.raw >> bit & 1)

    def __str__(self) -> str:
        flags = ",".join(self.flags) or "-"
        return f"{self.raw:#x} (abi>={self.abi_major}.{self.abi_minor}, {flags})"


@attrs.frozen
class SnpReport:
    """The decoded fields of an SNP attestation report. ``raw`` is the whole report."""

    version: int
    guest_svn: int
    policy: SnpPolicy
    family_id: bytes = attrs.field(repr=False)
    image_id: bytes = attrs.field(repr=False)
    vmpl: int
    signature_algo: int
    current_tcb: SnpTcb
    platform_info: int
    signing_key: int
    report_data: bytes = attrs.field(repr=short_hex)
    measurement: bytes = attrs.field(repr=short_hex)
    host_data: bytes = attrs.field(repr=short_hex)
    id_key_digest: bytes = attrs.field(repr=False)
    author_key_digest: bytes = attrs.field(repr=False)
    report_id: bytes = attrs.field(repr=False)
    report_id_ma: bytes = attrs.field(repr=False)
    reported_tcb: SnpTcb
    cpuid: tuple[int, int, int] | None
    chip_id: bytes = attrs.field(repr=short_hex)
    committed_tcb: SnpTcb = attrs.field(repr=False)
    current_version: str = attrs.field(repr=False)
    committed_version: str = attrs.field(repr=False)
    launch_tcb: SnpTcb = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)
    raw: bytes = attrs.field(repr=False, eq=False)

    @property
    def signed_bytes(self) -> bytes:
        """What the VCEK signed (the report before its signature)."""
        return self.raw[:_SIGNED_LEN]

    @property
    def signing_key_name(self) -> str:
        return {0: "VCEK", 1: "VLEK", 7: "none"}.get(self.signing_key, f"{self.signing_key}")

    @property
    def product(self) -> str | None:
        """Milan / Genoa / Turin from the CPUID fields (report version 3 and later)."""
        if self.cpuid is None:
            return None
        family, model, _ = self.cpuid
        if family == 0x19:
            if model <= 0x0F:
                return "Milan"
            if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
                return "Genoa"
        if family == 0x1A and model <= 0x11:
            return "Turin"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "guest_svn": self.guest_svn,
            "policy": f"{self.policy.raw:#x}",
            "policy_flags": list(self.policy.flags),
            "vmpl": self.vmpl,
            "signature_algo": self.signature_algo,
            "signing_key": self.signing_key_name,
            "platform_info": f"{self.platform_info:#x}",
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "report_data": self.report_data.hex(),
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "report_id": self.report_id.hex(),
            "chip_id": self.chip_id.hex(),
            "cpuid": None if self.cpuid is None else list(self.cpuid),
            "product": self.product,
            "current_tcb": self.current_tcb.to_dict(),
            "reported_tcb": self.reported_tcb.to_dict(),
            "committed_tcb": self.committed_tcb.to_dict(),
            "launch_tcb": self.launch_tcb.to_dict(),
            "current_version": self.current_version,
            "committed_version": self.committed_version,
            "signature_checked": False,
        }


def parse_snp_report(data: Buffer) -> SnpReport:
    """Decode a 1184-byte SNP attestation report (binary).

    Raises :class:`SnpEvidenceError` for any other length or an unknown report version.
    Reserved bytes are not judged: the signature covers them, and it is not checked here.
    """
    r = bytes(data)
    if len(r) != REPORT_LEN:
        raise SnpEvidenceError(
            f"SNP report: expected {REPORT_LEN} bytes, got {len(r)} (truncated, or not a report)"
        )
    E = SnpEvidenceError
    version = u32(r, 0x00, "SNP report version", E)
    if version not in KNOWN_VERSIONS:
        raise SnpEvidenceError(
            f"SNP report: version {version} at offset 0x0 is not one this parser knows "
            f"({', '.join(map(str, sorted(KNOWN_VERSIONS)))})"
        )
    cpuid = None
    if version >= 3:
        fam, mod, step = take(r, 0x188, 3, "SNP report CPUID", E)
        cpuid = (fam, mod, step)
    turin = cpuid is not None and cpuid[0] == 0x1A

    def tcb(off: int, what: str) -> SnpTcb:
        return SnpTcb(u64(r, off, f"SNP report {what}", E), turin)

    def ver(off: int) -> str:
        build, minor, major = take(r, off, 3, "SNP report firmware version", E)
        return f"{major}.{minor}.{build}"

    flags = u32(r, 0x48, "SNP report key flags", E)
    return SnpReport(
        version=version,
        guest_svn=u32(r, 0x04, "SNP report guest SVN", E),
        policy=SnpPolicy(u64(r, 0x08, "SNP report policy", E)),
        family_id=take(r, 0x10, 16, "SNP report family id", E),
        image_id=take(r, 0x20, 16, "SNP report image id", E),
        vmpl=u32(r, 0x30, "SNP report VMPL", E),
        signature_algo=u32(r, 0x34, "SNP report signature algorithm", E),
        current_tcb=tcb(0x38, "current TCB"),
        platform_info=u64(r, 0x40, "SNP report platform info", E),
        signing_key=(flags >> 2) & 0x7,
        report_data=take(r, 0x50, 64, "SNP report REPORT_DATA", E),
        measurement=take(r, 0x90, 48, "SNP report MEASUREMENT", E),
        host_data=take(r, 0xC0, 32, "SNP report HOST_DATA", E),
        id_key_digest=take(r, 0xE0, 48, "SNP report ID key digest", E),
        author_key_digest=take(r, 0x110, 48, "SNP report author key digest", E),
        report_id=take(r, 0x140, 32, "SNP report id", E),
        report_id_ma=take(r, 0x160, 32, "SNP report id (migration agent)", E),
        reported_tcb=tcb(0x180, "reported TCB"),
        cpuid=cpuid,
        chip_id=take(r, 0x1A0, 64, "SNP report chip id", E),
        committed_tcb=tcb(0x1E0, "committed TCB"),
        current_version=ver(0x1E8),
        committed_version=ver(0x1EC),
        launch_tcb=tcb(0x1F0, "launch TCB"),
        signature=take(r, _SIGNED_LEN, REPORT_LEN - _SIGNED_LEN, "SNP report signature", E),
        raw=r,
    )
