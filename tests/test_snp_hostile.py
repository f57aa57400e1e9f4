"""Hostile SEV-SNP inputs (SCALE attestation, measurement.snp.cbor, the JSON documents, SEV
firmware): a library error every time, never another exception type."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snp_helpers import sev_ovmf

from dstack_mr.errors import DstackMrError
from dstack_mr.snp import SnpOvmf
from dstack_mr.snp_attestation import parse_snp_attestation
from dstack_mr.snp_diagnose import diagnose_snp
from dstack_mr.snp_document import (
    MrConfigV3,
    SnpImageMeasurement,
    SnpMeasurementDocument,
    SnpVmConfig,
    sha256sum_entry,
)

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _real_scale(real: Path) -> bytes:
    text = (real / "dstack-snp-0.6.0-attestation.json").read_text()
    return bytes.fromhex(json.loads(text)["attestation"])


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6)
CUTS = st.one_of(st.none(), st.integers(0, 9000))


def _judge(data: bytes) -> None:
    with contextlib.suppress(DstackMrError):
        att = parse_snp_attestation(data)
        if att is not None:
            diagnose_snp(att)


@SETTINGS
@given(edits=EDITS, cut=CUTS)
def test_mutated_real_attestation(
    real: Path, edits: list[tuple[int, int]], cut: int | None
) -> None:
    _judge(_mutate(_real_scale(real), edits, cut))


@SETTINGS
@given(st.binary(max_size=512))
def test_random_attestation_bytes(data: bytes) -> None:
    _judge(b"\x00\x03" + data)
    _judge(data)


@SETTINGS
@given(st.binary(max_size=64))
def test_random_attestation_json(data: bytes) -> None:
    _judge(b'{"attestation": "' + data.hex().encode() + b'"}')
    _judge(data)


@SETTINGS
@given(edits=EDITS, cut=st.one_of(st.none(), st.integers(0, 600)))
def test_mutated_measurement_cbor(
    real: Path, edits: list[tuple[int, int]], cut: int | None
) -> None:
    att = parse_snp_attestation(_real_scale(real))
    assert att is not None and att.vm_config is not None
    cbor = att.vm_config.measurement_document().measurement
    with contextlib.suppress(DstackMrError):
        SnpImageMeasurement.from_cbor(_mutate(cbor, edits, cut)).launch_inputs(
            2, "EPYC-v4", 1
        ).measure()


@SETTINGS
@given(st.binary(max_size=300))
def test_random_cbor(data: bytes) -> None:
    with contextlib.suppress(DstackMrError):
        SnpImageMeasurement.from_cbor(data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@SETTINGS
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "checksum_file": JSON_VALUES | st.just(base64.b64encode(b"x  y\n").decode()),
            "measurement": JSON_VALUES,
            "vcpus": JSON_VALUES,
            "vcpu_type": JSON_VALUES,
            "guest_features": JSON_VALUES,
        },
    )
)
def test_random_measurement_documents(obj: dict[str, object]) -> None:
    with contextlib.suppress(DstackMrError):
        SnpMeasurementDocument.from_json(json.dumps(obj)).launch_inputs()


@SETTINGS
@given(JSON_VALUES)
def test_random_json_documents(value: object) -> None:
    text = json.dumps(value)
    for parse in (MrConfigV3.from_document, SnpVmConfig.from_json):
        with contextlib.suppress(DstackMrError):
            parse(text)  # type: ignore[operator]


@SETTINGS
@given(st.binary(max_size=200), st.text(max_size=10))
def test_random_checksum_files(data: bytes, name: str) -> None:
    with contextlib.suppress(DstackMrError):
        sha256sum_entry(data, name)


@SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255)), max_size=8))
def test_mutated_firmware(edits: list[tuple[int, int]]) -> None:
    fw = bytearray(sev_ovmf())
    # Aim most edits at the structures: the metadata block and the footer table.
    for pos, value in edits:
        region = (0x200 + pos % 0x60) if pos & 1 else (len(fw) - 32 - 18 - 72 + pos % 90)
        fw[region] = value
    with contextlib.suppress(DstackMrError):
        SnpOvmf.parse(bytes(fw))


@pytest.mark.parametrize("size", [0, 49, 50, 4096])
def test_tiny_firmware(size: int) -> None:
    with pytest.raises(DstackMrError):
        SnpOvmf.parse(bytes(size))
