"""The SEV-SNP launch MEASUREMENT: upstream's own test vectors, the real capture's inputs, and
virtee's sev-snp-measure as an independent implementation of the same computation."""

from __future__ import annotations

import hashlib
import struct

import pytest
from snp_helpers import HASHES_TABLE_GPA, RESET_EIP, SECTIONS, sev_ovmf, upstream_synthetic_ovmf

from dstack_mr.errors import DstackMrError, SnpError
from dstack_mr.snp import (
    BSP_EIP,
    VCPU_TYPES,
    OvmfSection,
    SectionType,
    SnpLaunchInputs,
    SnpOvmf,
    measured_cmdline,
    rootfs_hash_from_cmdline,
    sev_hashes_page,
    snp_ovmf_hash,
    vcpu_signature,
    vmsa_chain,
    vmsa_page,
)

ROOTFS = "33" * 32

#: upstream sev.rs ``valid_input()``.
UPSTREAM_INPUT = dict(
    cmdline=f"console=ttyS0 dstack.rootfs_hash={ROOTFS}",
    ovmf_hash=b"\x44" * 48,
    kernel_hash=b"\x55" * 32,
    initrd_hash=b"\x66" * 32,
    hashes_table_gpa=0x80_1000,
    reset_eip=0xFFFF_FFF0,
    vcpus=2,
    vcpu_type="epyc-v4",
    guest_features=1,
    ovmf_sections=(
        OvmfSection(0x100000, 0x2000, 1),
        OvmfSection(0x80_0000, 0x1000, 0x10),
        OvmfSection(0x81_0000, 0x1000, 2),
        OvmfSection(0x82_0000, 0x1000, 3),
    ),
)

#: The real capture's ``sev_snp_measurement`` as upstream's test spells it out.
REAL_INPUT = dict(
    cmdline="console=ttyS0 init=/init panic=1 net.ifnames=0 biosdevname=0 mce=off oops=panic "
    "pci=noearly pci=nommconf random.trust_cpu=y random.trust_bootloader=n tsc=reliable "
    "no-kvmclock dstack.rootfs_hash=ca5adaef0ac3a36108035925763b48a5818f634e700fbaab561d419fd30d"
    "7121 dstack.rootfs_size=490713088",
    ovmf_hash=bytes.fromhex(
        "ffb57e393469a497c0e3b07bd1c97d8611e555f464d14491837665893ac642b2"
        "63a71f9507ff100a847897fe0c3f8c6f"
    ),
    kernel_hash=bytes.fromhex("dd9ea274ce9a07090b22e8284b0c841b65c021c2d15ca57d0f16731089dd226c"),
    initrd_hash=bytes.fromhex("5f844c4a2ca5a3d0711b3db38293b21ba929bb8e0b3c5bc1a779a57f69221c19"),
    hashes_table_gpa=8457216,
    reset_eip=8433668,
    vcpus=2,
    vcpu_type="EPYC-v4",
    guest_features=1,
    ovmf_sections=tuple(OvmfSection(*s) for s in SECTIONS),
)
REAL_MEASUREMENT = (
    "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599"
    "847ff250dbffcd07e1ba639771d6f05d"
)


def test_upstream_measurement_vector() -> None:
    m = SnpLaunchInputs(**UPSTREAM_INPUT).measure()  # type: ignore[arg-type]
    assert m.measurement.hex() == (
        "88b48404819692fd2a5068f1a07bf1973bbcaa1314adc670705f9388762a759f"
        "af889f8e2c71fe1ec892554415257960"
    )


def test_real_capture_inputs_reproduce_the_signed_measurement() -> None:
    # The same sections as the synthetic helper's: they were copied from the capture.
    m = SnpLaunchInputs(**REAL_INPUT).measure()  # type: ignore[arg-type]
    assert m.measurement.hex() == REAL_MEASUREMENT
    # One stage for the OVMF seed, one per section, one per vCPU; each stage's digest feeds
    # the next, so the last one is the measurement.
    assert len(m.steps) == 1 + len(SECTIONS) + 2
    assert m.steps[0].digest == REAL_INPUT["ovmf_hash"]
    assert [s.label.split()[0] for s in m.steps[1:8]] == [
        "snp_sec_memory",
        "snp_sec_memory",
        "snp_secrets",
        "cpuid",
        "svsm_caa",
        "snp_sec_memory",
        "snp_kernel_hashes",
    ]
    assert m.steps[1].pages == 9
    assert m.pre_vmsa_digest == m.steps[7].digest


def test_upstream_gctx_update_vector() -> None:
    # upstream: Gctx::new().update(0x01, 0x1000, sha384("page")).
    from dstack_mr.snp import _Gctx

    gctx = _Gctx()
    gctx.update(1, 0x1000, hashlib.sha384(b"page").digest())
    assert gctx.ld.hex() == (
        "3ebc1a70acc0bae5ae2788fae29a0371f983b19a68faf9843064f36040f58571"
        "ce5bb6bcdc9c361087073f8cffd92635"
    )
    other = _Gctx()
    other.update(1, 0x2000, hashlib.sha384(b"page").digest())
    assert other.ld != gctx.ld


def test_upstream_synthetic_ovmf_vector() -> None:
    fw = upstream_synthetic_ovmf()
    ovmf = SnpOvmf.parse(fw)
    assert ovmf.gpa == (1 << 32) - len(fw)
    assert ovmf.hashes_table_gpa == 0x4000
    assert ovmf.reset_eip == 0xFFFF_FFF0
    assert [(s.gpa, s.size, s.kind) for s in ovmf.sections] == [
        (0x1000, 0x1000, SectionType.SNP_SEC_MEMORY),
        (0x2000, 0x1000, SectionType.SNP_SECRETS),
        (0x3000, 0x1000, SectionType.CPUID),
        (0x4000, 0x1000, SectionType.SNP_KERNEL_HASHES),
    ]
    assert ovmf.ovmf_hash.hex() == (
        "7c0f80f0a8d0ab1ee23fe763b255b8b210bb71113febcda60d76c00e84512f0c"
        "c141ffaa61be7bd22164736e85ec52d3"
    )
    assert snp_ovmf_hash(fw) == ovmf.ovmf_hash


def test_hashes_page_layout_matches_upstream() -> None:
    page = sev_hashes_page("console=ttyS0", b"\x55" * 32, hashlib.sha256(b"").digest(), 0x80)
    assert len(page) == 4096
    assert page[:0x80] == bytes(0x80)
    assert page[0x80:0x90].hex() == "06d63894224fc94cb479a793d411fd21"
    assert struct.unpack_from("<H", page, 0x90)[0] == 168
    # cmdline entry first (its GUID, length 50, sha256(cmdline + NUL)), then initrd, kernel.
    assert page[0x92:0xA2].hex() == "d82dd09720bd944caa78e7714d36ab2a"
    assert page[0xA4:0xC4] == hashlib.sha256(b"console=ttyS0\0").digest()
    assert page[0x80 + 68 + 18 : 0x80 + 68 + 50] == hashlib.sha256(b"").digest()
    assert page[0x80 + 118 + 18 : 0x80 + 118 + 50] == b"\x55" * 32
    assert page[0x80 + 168 :] == bytes(4096 - 0x80 - 168)


def test_hashes_table_must_fit_its_page() -> None:
    sev_hashes_page("", b"\0" * 32, b"\0" * 32, 4096 - 176)
    with pytest.raises(SnpError, match="overflow"):
        sev_hashes_page("", b"\0" * 32, b"\0" * 32, 4096 - 175)
    with pytest.raises(SnpError, match="hashes_table_gpa"):
        SnpLaunchInputs(**{**UPSTREAM_INPUT, "hashes_table_gpa": 0x80_1F60})  # type: ignore[arg-type]


def test_vcpu_types_are_upstreams() -> None:
    assert vcpu_signature("EPYC-v4") == 0x800F12 == vcpu_signature("  epyc-v4 ")
    assert vcpu_signature("epyc-genoa-v1") == 0xA10F10
    assert vcpu_signature("EPYC-Milan") == 0xA00F11
    assert vcpu_signature("EPYC-Rome-v3") == 0x830F10
    assert len(VCPU_TYPES) == 15
    for bad in ("not-a-cpu", "EPYC-Turin", "", "EPYC-v5"):
        with pytest.raises(SnpError, match="unknown vcpu_type"):
            vcpu_signature(bad)


def test_vcpu_signatures_agree_with_sev_snp_measure() -> None:
    from sevsnpmeasure.vcpu_types import CPU_SIGS

    theirs = {name.lower(): sig for name, sig in CPU_SIGS.items()}
    # sev-snp-measure knows EPYC-Turin too; upstream (and so we) do not.
    assert set(theirs) - set(VCPU_TYPES) == {"epyc-turin"}
    assert {name: theirs[name] for name in VCPU_TYPES} == VCPU_TYPES


def test_vmsa_page_fields() -> None:
    page = vmsa_page(RESET_EIP, 0x800F12, 0x21)
    # CS: selector 0xf000, attrib 0x9b, limit 0xffff, base = eip & 0xffff0000; RIP = low 16.
    assert struct.unpack_from("<HHIQ", page, 0x10) == (0xF000, 0x9B, 0xFFFF, 0x800000)
    assert struct.unpack_from("<Q", page, 0x178)[0] == 0xB004
    assert struct.unpack_from("<Q", page, 0x310)[0] == 0x800F12
    assert struct.unpack_from("<Q", page, 0x3B0)[0] == 0x21
    bsp = vmsa_page(BSP_EIP, 0x800F12, 0x21)
    assert struct.unpack_from("<HHIQ", bsp, 0x10)[3] == 0xFFFF0000
    assert struct.unpack_from("<Q", bsp, 0x178)[0] == 0xFFF0


def test_vmsa_chain_equals_full_recomputation() -> None:
    base = SnpLaunchInputs(**REAL_INPUT)  # type: ignore[arg-type]
    pre = base.measure().pre_vmsa_digest
    chain = dict(vmsa_chain(pre, base.reset_eip, base.vcpu_sig, 1, 5))
    for n in (1, 3, 5):
        assert chain[n] == base.evolve(vcpus=n).measure().measurement


def test_cmdline_is_trimmed_like_rust() -> None:
    base = SnpLaunchInputs(**REAL_INPUT)  # type: ignore[arg-type]
    padded = base.evolve(cmdline=f"\t {base.cmdline} \n\u3000")
    assert padded.measure().measurement.hex() == REAL_MEASUREMENT
    # U+001F is whitespace to Python's strip() but not to Rust's trim(): it is measured.
    assert measured_cmdline("\x1fa\x1f") == "\x1fa\x1f"
    assert base.evolve(cmdline=base.cmdline + "\x1f").measure().measurement.hex() != (
        REAL_MEASUREMENT
    )


def test_every_input_changes_the_measurement() -> None:
    base = SnpLaunchInputs(**REAL_INPUT)  # type: ignore[arg-type]
    changes = {
        "cmdline": base.cmdline.replace("panic=1", "panic=2"),
        "ovmf_hash": b"\x99" * 48,
        "kernel_hash": b"\x99" * 32,
        "initrd_hash": b"\x99" * 32,
        "hashes_table_gpa": base.hashes_table_gpa + 0x40,
        "reset_eip": 0xFFFF_0000,
        "vcpus": 4,
        "vcpu_type": "EPYC-Milan",
        "guest_features": 3,
        "ovmf_sections": (OvmfSection(0x801000, 0x9000, 1), *base.ovmf_sections[1:]),
    }
    seen = {base.measure().measurement}
    for field, value in changes.items():
        digest = base.evolve(**{field: value}).measure().measurement
        assert digest not in seen, field
        seen.add(digest)
    # Only the in-page offset of the hash table is measured.
    moved = base.evolve(hashes_table_gpa=base.hashes_table_gpa + 0x1000)
    assert moved.measure().measurement.hex() == REAL_MEASUREMENT


def test_empty_initrd_hash_means_no_initrd() -> None:
    base = SnpLaunchInputs(**REAL_INPUT)  # type: ignore[arg-type]
    empty = base.evolve(initrd_hash=b"").measure().measurement
    assert empty == base.evolve(initrd_hash=hashlib.sha256(b"").digest()).measure().measurement


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("vcpus", 0, "vcpus"),
        ("vcpus", 513, "vcpus"),
        ("guest_features", 0, "guest_features"),
        ("hashes_table_gpa", 0, "hashes_table_gpa"),
        ("reset_eip", 0, "reset_eip"),
        ("reset_eip", 1 << 32, "reset_eip"),
        ("ovmf_hash", b"\0" * 32, "ovmf_hash"),
        ("kernel_hash", b"\0" * 48, "kernel_hash"),
        ("initrd_hash", b"\0" * 31, "initrd_hash"),
        ("vcpu_type", "EPYC-Turin", "vcpu_type"),
        ("ovmf_sections", (), "ovmf_sections"),
        ("ovmf_sections", (OvmfSection(0x1000, 0x1000, 1),), "SNP_KERNEL_HASHES"),
        ("ovmf_sections", (OvmfSection(0, 0x1000, 0x10),) * 65, "more than 64"),
        (
            "ovmf_sections",
            (OvmfSection(0, 1 << 40, 1), OvmfSection(0, 0x1000, 0x10)),
            "pages exceed",
        ),
    ],
)
def test_invalid_inputs_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(SnpError, match=message):
        SnpLaunchInputs(**{**REAL_INPUT, field: value})  # type: ignore[arg-type]


def test_invalid_sections_are_refused() -> None:
    with pytest.raises(SnpError, match="unknown ovmf section type 0x5"):
        OvmfSection(0, 0x1000, 5)
    with pytest.raises(SnpError, match="size"):
        OvmfSection(0, 0, 1)
    with pytest.raises(SnpError, match="past 2"):
        OvmfSection((1 << 64) - 0x1000, 0x2000, 1)


def test_rootfs_hash_from_cmdline() -> None:
    assert rootfs_hash_from_cmdline(f"a dstack.rootfs_hash={ROOTFS} b") == bytes.fromhex(ROOTFS)
    assert rootfs_hash_from_cmdline(f"a\u3000dstack.rootfs_hash={ROOTFS.upper()}") == bytes(
        [0x33] * 32
    )
    for bad in ("console=ttyS0", "dstack.rootfs_hash=abcd", f"xdstack.rootfs_hash={ROOTFS}"):
        with pytest.raises(SnpError, match="rootfs_hash"):
            rootfs_hash_from_cmdline(bad)


# --- the SEV firmware ------------------------------------------------------------------------


def test_firmware_parse_and_launch_inputs() -> None:
    fw = sev_ovmf()
    ovmf = SnpOvmf.parse(fw)
    assert ovmf.hashes_table_gpa == HASHES_TABLE_GPA
    assert ovmf.reset_eip == RESET_EIP
    assert tuple((s.gpa, s.size, s.section_type) for s in ovmf.sections) == SECTIONS
    inputs = ovmf.launch_inputs(REAL_INPUT["cmdline"], b"\1" * 32, b"\2" * 32, 4, "EPYC", 1)  # type: ignore[arg-type]
    assert inputs.ovmf_hash == snp_ovmf_hash(fw)
    assert inputs.measure().steps[0].digest == ovmf.ovmf_hash


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda fw: fw[:40], "too small"),
        (lambda fw: fw[:-34] + b"\0" * 34, "footer table GUID"),
        (lambda fw: fw.replace(b"ASEV", b"BSEV"), "ASEV"),
        (
            lambda fw: fw.replace(
                b"ASEV" + struct.pack("<II", 100, 1), b"ASEV" + struct.pack("<II", 100, 2)
            ),
            "version 2",
        ),
    ],
)
def test_broken_firmware_is_refused(mutate: object, message: str) -> None:
    fw = sev_ovmf()
    with pytest.raises(SnpError, match=message):
        SnpOvmf.parse(mutate(fw))  # type: ignore[operator]


def test_firmware_entries_checked() -> None:
    with pytest.raises(SnpError, match="hash table GPA is 0"):
        SnpOvmf.parse(sev_ovmf(hashes_gpa=0))
    with pytest.raises(SnpError, match="reset EIP is 0"):
        SnpOvmf.parse(sev_ovmf(reset_eip=0))
    with pytest.raises(SnpError, match="unknown ovmf section type"):
        SnpOvmf.parse(sev_ovmf(sections=((0x1000, 0x1000, 7),)))
    with pytest.raises(SnpError, match="65 SEV metadata sections"):
        SnpOvmf.parse(sev_ovmf(sections=((0x1000, 0x1000, 1),) * 65))


# --- an independent implementation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("vcpus", "vcpu_type", "features"),
    [(1, "EPYC-v4", 1), (2, "EPYC-v4", 1), (4, "EPYC-Milan", 0x21), (7, "EPYC-Genoa", 0x5)],
)
def test_agrees_with_sev_snp_measure(
    tmp_path: object, vcpus: int, vcpu_type: str, features: int
) -> None:
    """virtee's sev-snp-measure computes the same digest from the same files."""
    from pathlib import Path

    from sevsnpmeasure.guest import snp_calc_launch_digest
    from sevsnpmeasure.vcpu_types import CPU_SIGS
    from sevsnpmeasure.vmm_types import VMMType

    d = Path(str(tmp_path))
    fw, kernel, initrd = sev_ovmf(), b"kernel" * 1000, b"initrd" * 3000
    for name, data in (("ovmf.fd", fw), ("bzImage", kernel), ("initrd", initrd)):
        (d / name).write_bytes(data)
    cmdline = REAL_INPUT["cmdline"]
    theirs = snp_calc_launch_digest(
        vcpus,
        CPU_SIGS[vcpu_type],
        str(d / "ovmf.fd"),
        str(d / "bzImage"),
        str(d / "initrd"),
        cmdline,  # type: ignore[arg-type]
        features,
        "",
        vmm_type=VMMType.QEMU,
    )
    ours = (
        SnpOvmf.parse(fw)
        .launch_inputs(
            cmdline,  # type: ignore[arg-type]
            hashlib.sha256(kernel).digest(),
            hashlib.sha256(initrd).digest(),
            vcpus,
            vcpu_type,
            features,
        )
        .measure()
    )
    assert ours.measurement == theirs


def test_errors_are_library_errors() -> None:
    assert issubclass(SnpError, DstackMrError)


@pytest.mark.parametrize(
    "field", ["cmdline", "vcpu_type", "ovmf_hash", "vcpus", "initrd_hash", "ovmf_sections"]
)
def test_wrong_types_are_library_errors(field: str) -> None:
    with pytest.raises(SnpError, match=field):
        SnpLaunchInputs(**{**REAL_INPUT, field: None})  # type: ignore[arg-type]
