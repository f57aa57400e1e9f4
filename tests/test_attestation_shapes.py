"""Verifier input shapes: dstack's SCALE VersionedAttestation, raw or as {"attestation": hex}."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_scale import encode

from dstack_mr import DstackMrError, VmConfig, scale
from dstack_mr.attestation import parse_attestation
from dstack_mr.errors import EvidenceError, ScaleError
from dstack_mr.eventlog import DSTACK_RUNTIME_EVENT_TYPE, parse_json_event_log
from dstack_mr.lite import measure_lite


def lite_scale(real: Path) -> tuple[bytes, dict[str, object]]:
    """The 0.6.0 capture as its guest agent sends it in lite mode: only the RTMR0 ACPI events
    (payload "ACPI DATA") and the RTMR3 events (runtime digests stripped) are kept."""
    cap = json.loads((real / "dstack-0.6.0-getquote.json").read_text())
    events = []
    for e in json.loads(cap["event_log"]):
        digest, payload = bytes.fromhex(e["digest"]), bytes.fromhex(e["event_payload"])
        if e["imr"] == 0 and e["event_type"] == 10:
            events.append(scale.TdxEvent(0, 10, digest, e["event"], b"ACPI DATA"))
        elif e["imr"] == 3:
            runtime = e["event_type"] == DSTACK_RUNTIME_EVENT_TYPE
            events.append(
                scale.TdxEvent(
                    3,
                    e["event_type"],
                    b"" if runtime else digest,
                    e["event"],
                    payload if runtime else b"",
                )
            )
    a = scale.Attestation(
        "dstack-tdx",
        scale.TdxQuote(bytes.fromhex(cap["quote"]), tuple(events)),
        (),
        bytes.fromhex(cap["report_data"]),
        cap["vm_config"],
    )
    return encode(a), cap


@pytest.mark.parametrize("shape", ["raw", "json-hex", "object"])
def test_scale_attestation_shapes(real: Path, shape: str) -> None:
    raw, cap = lite_scale(real)
    given: object = {
        "raw": raw,
        "json-hex": json.dumps({"attestation": raw.hex()}),
        "object": {"attestation": raw.hex()},
    }[shape]
    att = parse_attestation(given)  # type: ignore[arg-type]
    # The source names where the attestation was found: the whole input, or its field.
    where = "attestation" if shape == "raw" else "field 'attestation'"
    assert att.source == f"{where} (SCALE VersionedAttestation V0, dstack-tdx)"
    assert att.quote is not None and att.quote.rtmr[0].hex().startswith("f8438db3")
    assert att.report_data == bytes.fromhex(str(cap["report_data"]))
    assert att.vm_config is not None and att.vm_config["image"] == "dstack-0.6.0"
    acpi = [e for e in att.events if e.imr == 0]
    assert [e.event for e in acpi] == ["acpi-loader", "acpi-rsdp", "acpi-tables"]
    originals = {
        e.event: e.digest for e in parse_json_event_log(str(cap["event_log"])) if e.imr == 3
    }
    runtime = [e for e in att.events if e.imr == 3]
    assert runtime and all(e.digest_derived for e in runtime)
    # Stripped digests are re-derived from name and payload: they equal what was measured.
    assert all(e.digest == originals[e.event] for e in runtime)
    # ... and that is all lite verification needs.
    details = measure_lite(VmConfig.from_dict(att.vm_config), att.events)
    assert details.measurements.rtmr0 == att.quote.rtmr[0]
    assert details.measurements.mrtd == att.quote.mrtd


def test_snp_attestation_is_named_not_misread(real: Path) -> None:
    data = (real / "dstack-snp-0.6.0-attestation.json").read_text()
    with pytest.raises(EvidenceError, match="dstack-amd-sev-snp attestation, not a TDX one"):
        parse_attestation(data)


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ('{"attestation": "0x00"}', EvidenceError, "even-length hex"),
        ('{"attestation": 5}', EvidenceError, "even-length hex"),
        ('{"attestation": "0000"}', ScaleError, "quote \\(dstack-tdx\\)"),
        ('{"attestation": "01"}', ScaleError, "first byte 0x01"),
        (b"\x00\x07", ScaleError, "unknown variant index 7"),
        (b"\x00\x00\x04", ScaleError, "truncated"),
    ],
)
def test_malformed_scale_inputs(given: str | bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_attestation(given)


def test_truncated_real_attestation_is_one_error(real: Path) -> None:
    raw, _ = lite_scale(real)
    for cut in (1, 2, 100, len(raw) // 2, len(raw) - 1):
        with pytest.raises(ScaleError):
            parse_attestation(raw[:cut])


@settings(max_examples=300)
@given(st.binary(max_size=300).map(lambda b: b"\x00\x00" + b))
def test_random_tdx_attestations_raise_only_library_errors(data: bytes) -> None:
    try:
        att = parse_attestation(data)
    except DstackMrError:
        return
    assert att.quote is not None


def test_mutated_real_attestation_raises_only_library_errors(real: Path) -> None:
    raw, _ = lite_scale(real)
    for at in range(0, len(raw), 97):
        mutated = raw[:at] + bytes([raw[at] ^ 0x5A]) + raw[at + 1 :]
        try:
            parse_attestation(mutated)
        except DstackMrError:
            continue
