"""The SCALE VersionedAttestation V0 reader: real captures, exact round trips, and only
ScaleError on anything malformed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dstack_mr import scale
from dstack_mr.errors import ScaleError

# --- a test-side SCALE encoder (the library only reads) --------------------------------------


def compact(n: int) -> bytes:
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return (n << 2 | 1).to_bytes(2, "little")
    if n < 1 << 30:
        return (n << 2 | 2).to_bytes(4, "little")
    return b"\x03" + n.to_bytes(4, "little")


def vec(b: bytes) -> bytes:
    return compact(len(b)) + b


def text(s: str) -> bytes:
    return vec(s.encode())


def tdx_event(e: scale.TdxEvent) -> bytes:
    return (
        e.imr.to_bytes(4, "little")
        + e.event_type.to_bytes(4, "little")
        + vec(e.digest)
        + text(e.event)
        + vec(e.event_payload)
    )


def tdx_quote(q: scale.TdxQuote) -> bytes:
    return vec(q.quote) + compact(len(q.event_log)) + b"".join(map(tdx_event, q.event_log))


def tpm_quote(q: scale.TpmQuote) -> bytes:
    platforms = ["dstack", "gcp", "nitro-enclave", "aws-ec2"]
    return (
        vec(q.message)
        + vec(q.signature)
        + compact(len(q.pcr_values))
        + b"".join(
            p.index.to_bytes(4, "little") + text(p.algorithm) + vec(p.value) for p in q.pcr_values
        )
        + vec(q.ak_cert)
        + bytes([platforms.index(q.platform)])
        + compact(len(q.event_log))
        + b"".join(e.pcr_index.to_bytes(4, "little") + vec(e.digest) for e in q.event_log)
    )


def encode(a: scale.Attestation) -> bytes:
    q = a.quote
    if isinstance(q, scale.TdxQuote):
        body = b"\x00" + tdx_quote(q)
    elif isinstance(q, scale.GcpTdxQuote):
        body = b"\x01" + tdx_quote(q.tdx_quote) + tpm_quote(q.tpm_quote)
    elif isinstance(q, scale.NitroEnclaveQuote):
        body = b"\x02" + vec(q.nsm_quote)
    elif isinstance(q, scale.SnpQuote):
        chain = compact(len(q.cert_chain)) + b"".join(map(vec, q.cert_chain))
        body = b"\x03" + vec(q.report) + chain + text(q.mr_config)
    else:
        body = b"\x04" + vec(q.attestation_doc)
    events = b"".join(text(e.event) + vec(e.payload) for e in a.runtime_events)
    return b"\x00" + body + compact(len(a.runtime_events)) + events + a.report_data + text(a.config)


u32s = st.integers(0, (1 << 32) - 1)
small = st.binary(max_size=24)
names = st.text(max_size=10)
tdx_events = st.builds(scale.TdxEvent, u32s, u32s, small, names, small)
tdx_quotes = st.builds(scale.TdxQuote, small, st.lists(tdx_events, max_size=3).map(tuple))
tpm_quotes = st.builds(
    scale.TpmQuote,
    small,
    small,
    st.lists(st.builds(scale.PcrValue, u32s, names, small), max_size=2).map(tuple),
    small,
    st.sampled_from(["dstack", "gcp", "nitro-enclave", "aws-ec2"]),
    st.lists(st.builds(scale.TpmEvent, u32s, small), max_size=2).map(tuple),
)
quotes = st.one_of(
    tdx_quotes,
    st.builds(scale.GcpTdxQuote, tdx_quotes, tpm_quotes),
    st.builds(scale.NitroEnclaveQuote, small),
    st.builds(scale.SnpQuote, small, st.lists(small, max_size=3).map(tuple), names),
    st.builds(scale.AwsNitroTpmQuote, small),
)
_PLATFORM = {
    scale.TdxQuote: "dstack-tdx",
    scale.GcpTdxQuote: "dstack-gcp-tdx",
    scale.NitroEnclaveQuote: "dstack-nitro-enclave",
    scale.SnpQuote: "dstack-amd-sev-snp",
    scale.AwsNitroTpmQuote: "dstack-aws-nitro-tpm",
}
attestations = st.builds(
    lambda q, ev, rd, cfg: scale.Attestation(_PLATFORM[type(q)], q, tuple(ev), rd, cfg),
    quotes,
    st.lists(st.builds(scale.RuntimeEvent, names, small), max_size=3),
    st.binary(min_size=64, max_size=64),
    st.text(max_size=40),
)


@settings(max_examples=200)
@given(attestations)
def test_round_trip_every_variant(a: scale.Attestation) -> None:
    assert scale.decode_versioned_attestation(encode(a)) == a


@settings(max_examples=200)
@given(attestations, st.data())
def test_every_truncation_is_an_error(a: scale.Attestation, data: st.DataObject) -> None:
    raw = encode(a)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ScaleError):
        scale.decode_versioned_attestation(raw[:cut])
    with pytest.raises(ScaleError, match="trailing"):
        scale.decode_versioned_attestation(raw + b"\x00")


@settings(max_examples=500)
@given(st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: b"\x00" + b))
def test_random_bytes_raise_only_scale_errors(data: bytes) -> None:
    try:
        decoded = scale.decode_versioned_attestation(data)
    except ScaleError:
        return
    # Whatever is accepted has exactly one encoding: the input itself.
    assert encode(decoded) == data


@settings(max_examples=300)
@given(attestations, st.data())
def test_mutated_attestations_raise_only_scale_errors(
    a: scale.Attestation, data: st.DataObject
) -> None:
    raw = bytearray(encode(a))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    try:
        decoded = scale.decode_versioned_attestation(bytes(raw))
    except ScaleError:
        return
    assert encode(decoded) == bytes(raw)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x82\xa1", "V1 \\(MessagePack\\)"),
        (b"\x01\x00", "first byte 0x01"),
        (b"\x00\x05", "unknown variant index 5"),
        # quote length 1 written in the two-byte mode: a second encoding of the same value.
        (b"\x00\x00\x05\x00", "not in its shortest form"),
        (b"\x00\x00\x07\x00\x00\x00\x00", "wider than 32 bits"),
        (b"\x00\x00\x00\xfe\xff\xff\xff", "announces 1073741823 items"),
        (b"\x00\x03\x00\x00\x08\xc3\x28", "not valid UTF-8"),
    ],
)
def test_malformed_inputs_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(ScaleError, match=message):
        scale.decode_versioned_attestation(data)


def test_size_limit() -> None:
    with pytest.raises(ScaleError, match="exceeds the limit"):
        scale.decode_versioned_attestation(b"\x00" * (scale.MAX_ATTESTATION_BYTES + 1))


def test_sniffing() -> None:
    assert scale.looks_like_versioned_attestation(b"\x00\x03rest")
    assert not scale.looks_like_versioned_attestation(b"\x00\x09")
    assert not scale.looks_like_versioned_attestation(b'{"quote"')


def test_real_snp_attestation(real: Path) -> None:
    raw = bytes.fromhex(
        json.loads((real / "dstack-snp-0.6.0-attestation.json").read_text())["attestation"]
    )
    a = scale.decode_versioned_attestation(raw)
    assert a.platform == "dstack-amd-sev-snp"
    assert isinstance(a.quote, scale.SnpQuote)
    report = a.quote.report
    assert len(report) == 1184
    # SNP ATTESTATION_REPORT: MEASUREMENT at 0x90 (48 bytes), HOST_DATA at 0xC0 (32 bytes).
    assert report[0x90:0x94].hex() == "7f51e17f"
    assert (
        report[0xC0:0xE0].hex()
        == "783f0057820acb99249af56cc3b07b4e8d80f65183167cba9cf437bb680f742f"
    )
    assert [len(c) for c in a.quote.cert_chain] == [2325, 1887]
    assert json.loads(a.quote.mr_config)["version"] == 3
    assert [e.event for e in a.runtime_events][:3] == ["system-preparing", "app-id", "compose-hash"]
    assert a.report_data.startswith(b"attest-test-fixture-2026")
    config = json.loads(a.config)
    assert config["image"] == "dstack-nvidia-0.6.0.a2"
    assert "sev_snp_measurement" in config
    assert encode(a) == raw


def test_real_tdx_getquote_as_scale(real: Path) -> None:
    """The 0.6.0 capture re-encoded as the SCALE V0 its guest agent would send."""
    cap = json.loads((real / "dstack-0.6.0-getquote.json").read_text())
    events = tuple(
        scale.TdxEvent(
            e["imr"],
            e["event_type"],
            bytes.fromhex(e["digest"]),
            e["event"],
            bytes.fromhex(e["event_payload"]),
        )
        for e in json.loads(cap["event_log"])
    )
    a = scale.Attestation(
        "dstack-tdx",
        scale.TdxQuote(bytes.fromhex(cap["quote"]), events),
        (),
        bytes.fromhex(cap["report_data"]),
        cap["vm_config"],
    )
    assert scale.decode_versioned_attestation(encode(a)) == a


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # The offset is where the bad value starts, not where reading it stopped.
        (b"\x00\x00\x05\x00", r"quote \(dstack-tdx\)\.quote length: .* \(at offset 0x2\)"),
        (b"\x00\x05", r"unknown variant index 5 .* \(at offset 0x1\)"),
        (b"\x00\x00\x00\xfe\xff\xff\xff", r"announces .* \(at offset 0x3\)"),
    ],
)
def test_errors_name_where_the_value_starts(data: bytes, message: str) -> None:
    with pytest.raises(ScaleError, match=message):
        scale.decode_versioned_attestation(data)
