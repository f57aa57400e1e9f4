"""The SNP attestation report parser, on the real capture's report and on hostile bytes."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dstack_mr.errors import DstackMrError, SnpEvidenceError
from dstack_mr.snp_report import REPORT_LEN, SnpTcb, parse_snp_report


def real_report(real: Path) -> bytes:
    """The report inside the capture's SCALE attestation: version 0, quote variant 3 (SNP),
    then a two-byte compact length (1184 << 2 | 1) and the report."""
    raw = bytes.fromhex(
        json.loads((real / "dstack-snp-0.6.0-attestation.json").read_text())["attestation"]
    )
    assert raw[:4] == bytes([0, 3]) + struct.pack("<H", REPORT_LEN << 2 | 1)
    return raw[4 : 4 + REPORT_LEN]


def test_real_report_fields(real: Path) -> None:
    r = parse_snp_report(real_report(real))
    assert r.version == 3
    assert r.measurement.hex().startswith("7f51e17f72a04d5422cb2c00998166536019a217376f3aa4")
    assert r.host_data.hex() == "783f0057820acb99249af56cc3b07b4e8d80f65183167cba9cf437bb680f742f"
    assert r.report_data.rstrip(b"\0") == b"attest-test-fixture-2026"
    # chip_id as the upstream fixture README states it.
    assert r.chip_id.hex() == (
        "38d174589d2dff97a6d40cb9f9d90b9507c027491219083cef3ce73e"
        "d18f7289142d941ad61eabecd27d25f268c1095d665f6001358e98a4769c82734a6bb877"
    )
    assert r.policy.raw == 0x30000
    assert r.policy.flags == ("smt",)
    assert not r.policy.debug
    assert r.vmpl == 0
    assert r.signing_key_name == "VCEK"
    assert r.cpuid == (0x19, 0x01, 0x01)
    assert r.product == "Milan"
    assert (r.reported_tcb.bootloader, r.reported_tcb.tee, r.reported_tcb.snp) == (4, 0, 23)
    assert r.reported_tcb.microcode == 0xD5
    assert r.current_tcb.snp == 24
    assert r.current_version == "1.55.29"
    assert r.signed_bytes == real_report(real)[:0x2A0]
    d = r.to_dict()
    assert d["signature_checked"] is False
    assert d["measurement"] == r.measurement.hex()


def _report(version: int = 2, **fields: tuple[int, bytes]) -> bytearray:
    data = bytearray(REPORT_LEN)
    struct.pack_into("<I", data, 0, version)
    for off, value in fields.values():
        data[off : off + len(value)] = value
    return data


def test_version_2_has_no_cpuid_and_turin_tcb_layout() -> None:
    r = parse_snp_report(_report(2, tcb=(0x180, bytes([1, 2, 3, 4, 5, 6, 7, 8]))))
    assert r.cpuid is None and r.product is None
    assert (r.reported_tcb.bootloader, r.reported_tcb.tee, r.reported_tcb.snp) == (1, 2, 7)
    turin = parse_snp_report(
        _report(3, tcb=(0x180, bytes([1, 2, 3, 4, 5, 6, 7, 8])), cpuid=(0x188, b"\x1a\x02\x00"))
    )
    assert turin.product == "Turin"
    tcb = turin.reported_tcb
    assert (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (1, 2, 3, 4, 8)
    assert SnpTcb(0x0102030405060708).microcode == 1


def test_debug_policy_is_visible() -> None:
    r = parse_snp_report(_report(3, policy=(0x08, struct.pack("<Q", 0xB0000))))
    assert r.policy.debug
    assert "debug" in r.policy.flags


@pytest.mark.parametrize("length", [0, 1, REPORT_LEN - 1, REPORT_LEN + 1, 4000])
def test_wrong_length_refused(length: int) -> None:
    with pytest.raises(SnpEvidenceError, match="1184 bytes"):
        parse_snp_report(bytes(length))


@pytest.mark.parametrize("version", [0, 1, 4, 6, 0xFFFFFFFF])
def test_unknown_version_refused(version: int) -> None:
    with pytest.raises(SnpEvidenceError, match=f"version {version}"):
        parse_snp_report(_report(version))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=REPORT_LEN + 8))
def test_hostile_bytes_only_raise_library_errors(data: bytes) -> None:
    with contextlib.suppress(DstackMrError):
        parse_snp_report(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([2, 3, 5]), st.binary(min_size=REPORT_LEN - 4, max_size=REPORT_LEN - 4))
def test_any_body_of_a_known_version_parses(version: int, body: bytes) -> None:
    r = parse_snp_report(struct.pack("<I", version) + body)
    assert r.raw[0x90:0xC0] == r.measurement
    assert r.raw[0xC0:0xE0] == r.host_data
    assert len(r.signature) == REPORT_LEN - 0x2A0
