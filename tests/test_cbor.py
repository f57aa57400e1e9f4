"""The strict CBOR subset: what it accepts round-trips exactly; everything else is a CborError."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dstack_mr import cbor
from dstack_mr.errors import CborError

leaves = st.integers(0, (1 << 64) - 1) | st.binary(max_size=64) | st.text(max_size=20)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(values)
def test_encode_then_decode_is_identity(value: cbor.CborValue) -> None:
    data = cbor.encode(value)
    assert cbor.decode(data) == value
    assert cbor.encode(cbor.decode(data)) == data


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_random_bytes_raise_only_cbor_errors(data: bytes) -> None:
    try:
        value = cbor.decode(data)
    except CborError:
        return
    # Whatever is accepted has exactly one encoding: the input itself.
    assert cbor.encode(value) == data


@settings(max_examples=300)
@given(values, st.data())
def test_mutated_documents_raise_only_cbor_errors(
    value: cbor.CborValue, data: st.DataObject
) -> None:
    raw = bytearray(cbor.encode(value))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    try:
        decoded = cbor.decode(bytes(raw))
    except CborError:
        return
    assert cbor.encode(decoded) == bytes(raw)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (bytes([0x20]), "negative integer"),
        (bytes([0xC0, 0x00]), "tagged"),
        (bytes([0xF5]), "simple value"),
        (bytes([0xF9, 0x3C, 0x00]), "float"),
        (bytes([0x5F, 0x40, 0xFF]), "indefinite"),
        (bytes([0xBF, 0xFF]), "indefinite"),
        (bytes([0x18, 0x05]), "shortest form"),
        (bytes([0x19, 0x00, 0xFF]), "shortest form"),
        (bytes([0x1B, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]), "shortest form"),
        (bytes([0x01, 0x00]), "trailing"),
        (bytes([0xA1, 0x01, 0x01]), "key must be a text string"),
        (bytes([0xA2, 0x61, 0x61, 0x00, 0x61, 0x61, 0x01]), "duplicate map key 'a'"),
        (bytes([0x62, 0xC3, 0x28]), "UTF-8"),
        (bytes([0x45, 0x00]), "need 5 bytes"),
        (bytes([0x9A, 0xFF, 0xFF, 0xFF, 0xFF]), "announces 4294967295 entries"),
        (bytes([0x81] * 9 + [0x00]), "nesting deeper than 8"),
    ],
)
def test_rejected_inputs_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(CborError, match=message):
        cbor.decode(data)


def test_size_limit() -> None:
    blob = cbor.encode(b"x" * 100)
    assert cbor.decode(blob, max_size=len(blob)) == b"x" * 100
    with pytest.raises(CborError, match="exceeds the limit"):
        cbor.decode(blob, max_size=len(blob) - 1)


@pytest.mark.parametrize("bad", [-1, 1 << 64, True, 1.5, None, {1: 2}, {"a": object()}])
def test_encoder_refuses_outside_the_subset(bad: object) -> None:
    with pytest.raises(CborError):
        cbor.encode(bad)  # type: ignore[arg-type]


def test_map_order_is_kept_as_given() -> None:
    assert cbor.encode({"b": 1, "a": 2}) == bytes([0xA2, 0x61, 0x62, 0x01, 0x61, 0x61, 0x02])
    assert list(cbor.decode(bytes([0xA2, 0x61, 0x62, 0x01, 0x61, 0x61, 0x02]))) == ["b", "a"]


def test_field_accessors() -> None:
    doc = cbor.decode(cbor.encode({"n": 3, "b": b"\x01\x02", "t": "x", "m": {}, "l": [1]}))
    m = cbor.expect_fields(doc, "doc", ["n", "b", "t", "m"], ["l", "absent"])
    assert cbor.get_uint(m, "n", "doc") == 3
    assert cbor.get_bytes(m, "b", "doc", length=2) == b"\x01\x02"
    assert cbor.get_text(m, "t", "doc") == "x"
    assert cbor.get_map(m, "m", "doc") == {}
    assert cbor.get_array(m, "l", "doc") == [1]
    with pytest.raises(CborError, match=r"doc\.b: expected 3 bytes, got 2"):
        cbor.get_bytes(m, "b", "doc", length=3)
    with pytest.raises(CborError, match=r"doc\.n: expected a byte string, got an unsigned integer"):
        cbor.get_bytes(m, "n", "doc")
    with pytest.raises(CborError, match=r"doc\.n: 3 exceeds the maximum 2"):
        cbor.get_uint(m, "n", "doc", max_value=2)
    with pytest.raises(CborError, match="missing field"):
        cbor.expect_fields(doc, "doc", ["zzz"], ["n", "b", "t", "m", "l"])
    with pytest.raises(CborError, match="unknown field"):
        cbor.expect_fields(doc, "doc", ["n"])
    with pytest.raises(CborError, match="expected a map"):
        cbor.expect_fields(3, "doc", [])


def test_real_tdx_measurement_document(real: Path) -> None:
    capture = json.loads((real / "dstack-0.6.0-getquote.json").read_text())
    raw = base64.b64decode(json.loads(capture["vm_config"])["tdx_measurement"]["measurement"])
    doc = cbor.decode(raw)
    assert isinstance(doc, dict)
    assert list(doc) == ["version", "image", "tdvf"]
    assert doc["version"] == 3
    assert cbor.encode(doc) == raw


def test_real_snp_measurement_document(real: Path) -> None:
    from dstack_mr.scale import decode_versioned_attestation

    capture = json.loads((real / "dstack-snp-0.6.0-attestation.json").read_text())
    config = json.loads(decode_versioned_attestation(bytes.fromhex(capture["attestation"])).config)
    raw = base64.b64decode(json.loads(config["sev_snp_measurement"])["measurement"])
    doc = cbor.decode(raw)
    assert isinstance(doc, dict)
    sections = doc["ovmf_sections"]
    assert isinstance(sections, list) and len(sections) == 7
    assert sections[0] == {"gpa": 0x800000, "size": 0x9000, "type": 1}
    assert doc["hashes_table_gpa"] == 0x810C00
    assert cbor.encode(doc) == raw
