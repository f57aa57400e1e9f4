"""Event logs: JSON and CCEL parsing, replay against real quotes, payload readings, evidence."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dstack_mr.attestation import parse_attestation
from dstack_mr.ccel import parse_ccel
from dstack_mr.digest import ZERO_MR, extend
from dstack_mr.errors import EventLogError, EvidenceError, QuoteError
from dstack_mr.event_payload import describe_payload
from dstack_mr.eventlog import (
    DSTACK_RUNTIME_EVENT_TYPE,
    Event,
    event_type_name,
    parse_json_event_log,
    replay_all,
    replay_imr,
    runtime_event_digest,
)
from dstack_mr.quote import parse_quote

R060 = "dstack-0.6.0-getquote.json"
R054 = "dstack-0.5.4-8cpu-64g-getquote.json"
RPHALA = "phala-cloud-dstack-0.3-era-getquote.json"
RCCEL = "dstack-ccel-sample.bin"

SHA384, SHA256 = 0x000C, 0x000B
D = bytes(range(48))
DHEX = D.hex()


def entry(imr: Any = 0, event_type: Any = 1, digest: Any = DHEX, **extra: Any) -> dict[str, Any]:
    return {"imr": imr, "event_type": event_type, "digest": digest, "event": "", **extra}


# --- JSON event log (synthetic) --------------------------------------------------------------


def test_json_accepts_list_text_and_string_of_text() -> None:
    log = [entry(event_payload="4142"), entry(imr=3, event_type=5, unknown_key=[1])]
    expected = (Event(0, 1, D, "", b"AB"), Event(3, 5, D, "", b""))
    text = json.dumps(log)
    assert parse_json_event_log(log) == expected
    assert parse_json_event_log(text) == expected
    assert parse_json_event_log(text.encode()) == expected
    assert parse_json_event_log(json.dumps(text)) == expected
    assert parse_json_event_log("[]") == ()


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ({"imr": 0}, "expected a JSON array"),
        ([entry(imr=4)], "entry 0 field 'imr' must be an integer in 0..=3, got 4"),
        ([entry(), entry(imr=True)], "entry 1 field 'imr' must be an integer in 0..=3, got True"),
        ([entry(imr=1.0)], "field 'imr' must be an integer in 0..=3, got 1.0"),
        ([entry(event_type=1 << 32)], "field 'event_type'"),
        ([entry(event_type=-1)], "field 'event_type'"),
        ([entry(digest="ab" * 47)], "field 'digest': 47 bytes, expected 48"),
        ([entry(digest="")], "field 'digest': 0 bytes"),
        ([entry(digest="zz" * 48)], "field 'digest': not an even-length hex"),
        ([entry(event_payload="41 42")], "field 'event_payload'"),
        ([entry(event_payload=None)], "field 'event_payload': expected a hex string"),
        ([entry(event=7)], "field 'event' must be a string, got int"),
        ([[1, 2]], "entry 0: expected an object"),
        ([{"imr": 0, "event_type": 1}], "entry 0: missing field 'digest'"),
        ("[", "invalid JSON"),
        (b"\xff[]", "not UTF-8"),
        (json.dumps(json.dumps("x")), "expected a JSON array, got str"),
    ],
)
def test_json_rejects(log: Any, message: str) -> None:
    data = log if isinstance(log, (str, bytes)) else json.dumps(log)
    with pytest.raises(EventLogError, match=message):
        parse_json_event_log(data)


def test_runtime_event_digests() -> None:
    # dstack's v1 and v2 definitions, spelled out independently of the library.
    v1 = hashlib.sha384(struct.pack("<I", 0x08000001) + b":app-id:" + b"\xde\xad").digest()
    assert runtime_event_digest("app-id", b"\xde\xad") == v1
    canonical = b'{"event":"compose-hash","event_type":134217729,"payload":"abcd","version":2}'
    assert (
        runtime_event_digest("compose-hash", b"\xab\xcd", 2) == hashlib.sha384(canonical).digest()
    )
    with pytest.raises(EventLogError, match="version 3"):
        runtime_event_digest("x", b"", 3)


def test_runtime_event_digest_derivation_and_checks() -> None:
    rt = DSTACK_RUNTIME_EVENT_TYPE
    stripped = entry(imr=3, event_type=rt, digest="", event="app-id", event_payload="dead")
    (ev,) = parse_json_event_log([stripped])
    assert ev.digest == runtime_event_digest("app-id", b"\xde\xad") and ev.digest_derived
    v2 = dict(stripped, version=2)
    assert parse_json_event_log([v2])[0].digest == runtime_event_digest("app-id", b"\xde\xad", 2)
    # A stated v2 digest without a "version" key is recognised too.
    v2_stated = dict(stripped, digest=runtime_event_digest("app-id", b"\xde\xad", 2).hex())
    assert not parse_json_event_log([v2_stated])[0].digest_derived
    (lying,) = parse_json_event_log([dict(stripped, digest=D.hex())])
    assert lying.digest == D and lying.payload_consistent is False and not lying.digest_derived
    assert ev.payload_consistent is True
    with pytest.raises(EventLogError, match="field 'version'"):
        parse_json_event_log([dict(stripped, version=3)])


def test_replay_helpers() -> None:
    events = [Event(0, 1, D), Event(2, 1, D[::-1]), Event(0, 1, D[::-1])]
    assert replay_imr(events, 0) == extend(extend(ZERO_MR, D), D[::-1])
    assert replay_all(events) == (
        replay_imr(events, 0),
        replay_imr(events, 1),
        extend(ZERO_MR, D[::-1]),
        ZERO_MR,
    )
    with pytest.raises(EventLogError, match="out of range"):
        replay_imr(events, 4)


def test_event_type_names() -> None:
    assert event_type_name(0x80000001) == "EV_EFI_VARIABLE_DRIVER_CONFIG"
    assert event_type_name(0xA) == "EV_PLATFORM_CONFIG_FLAGS"
    assert event_type_name(DSTACK_RUNTIME_EVENT_TYPE) == "DSTACK_RUNTIME_EVENT"
    assert event_type_name(0x1234) == "0x00001234"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5)
    ),
    max_leaves=20,
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "imr": st.integers(-1, 5) | json_values,
        "event_type": st.integers(-1, 1 << 33) | st.just(DSTACK_RUNTIME_EVENT_TYPE),
        "digest": st.sampled_from(["", D.hex(), "00", "zz"]) | json_values,
        "event": st.text(max_size=10) | json_values,
        "event_payload": st.binary(max_size=8).map(bytes.hex) | json_values,
        "version": st.integers(0, 3) | json_values,
    },
)


@settings(max_examples=300)
@given(st.lists(entries | json_values, max_size=5) | json_values)
def test_json_random_structures_only_raise_event_log_error(obj: Any) -> None:
    with contextlib.suppress(EventLogError):
        parse_json_event_log(json.dumps(obj))


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_json_random_bytes_only_raise_event_log_error(data: bytes) -> None:
    with contextlib.suppress(EventLogError):
        parse_json_event_log(data)


# --- CCEL (synthetic) ------------------------------------------------------------------------


def spec_header(algs: list[tuple[int, int]], vendor: bytes = b"") -> bytes:
    spec = b"Spec ID Event03\0" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
    spec += b"".join(struct.pack("<HH", a, s) for a, s in algs)
    spec += bytes([len(vendor)]) + vendor
    return struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(spec)) + spec


def record(mr: int, event_type: int, digests: list[tuple[int, bytes]], data: bytes) -> bytes:
    out = struct.pack("<III", mr, event_type, len(digests))
    out += b"".join(struct.pack("<H", a) + d for a, d in digests)
    return out + struct.pack("<I", len(data)) + data


SHA384_ONLY = spec_header([(SHA384, 48)])


def test_ccel_index_mapping_and_no_action() -> None:
    log = SHA384_ONLY + record(1, 0xA, [(SHA384, D)], b"ACPI DATA")
    log += record(0, 3, [(SHA384, bytes(48))], b"StartupLocality\0\0")
    log += record(4, 0x80000007, [(SHA384, D[::-1])], b"x")
    events = parse_ccel(log + b"\xff" * 64)
    assert events == (
        Event(0, 0xA, D, "EV_PLATFORM_CONFIG_FLAGS", b"ACPI DATA"),
        Event(3, 0x80000007, D[::-1], "EV_EFI_ACTION", b"x"),
    )
    assert parse_ccel(log + bytes(64)) == events  # zero padding
    assert parse_ccel(log) == events  # no padding at all
    assert parse_ccel(log + bytes(3)) == events  # padding shorter than a record header


def test_ccel_picks_sha384_among_several_digests() -> None:
    log = spec_header([(SHA256, 32), (SHA384, 48)])
    log += record(2, 1, [(SHA256, bytes(32)), (SHA384, D)], b"")
    assert parse_ccel(log) == (Event(1, 1, D, "EV_POST_CODE", b""),)


@pytest.mark.parametrize(
    ("log", "message"),
    [
        (SHA384_ONLY + record(0, 1, [(SHA384, D)], b""), "MR index 0 is not an RTMR"),
        (SHA384_ONLY + record(5, 1, [(SHA384, D)], b""), "MR index 5"),
        (SHA384_ONLY + record(1, 1, [(SHA256, bytes(48))], b""), "not in the spec-ID"),
        (
            spec_header([(SHA256, 32), (SHA384, 48)]) + record(1, 1, [(SHA256, bytes(32))], b""),
            "no SHA-384 digest",
        ),
        (SHA384_ONLY + struct.pack("<III", 1, 1, 1000), "digest count 1000"),
        (SHA384_ONLY + struct.pack("<III", 1, 1, 0), "digest count 0"),
        (SHA384_ONLY + record(1, 1, [(SHA384, D)], b"abc")[:-1], "event data"),
        (SHA384_ONLY + record(1, 1, [(SHA384, D)], b"")[:40], "digest 0"),
        (
            SHA384_ONLY + struct.pack("<IIIH", 1, 1, 1, SHA384) + D + b"\xff\xff\xff\x7f",
            "event data",
        ),
        (SHA384_ONLY + b"\x01\x00\x00", "MR index"),
        (spec_header([(SHA256, 32)]), "no SHA-384 digests"),
        (spec_header([(SHA384, 32)]), "bad entry 0"),
        (spec_header([(SHA384, 48), (SHA384, 48)]), "bad entry 1"),
        (SHA384_ONLY.replace(b"Event03", b"Event02"), "signature"),
        (SHA384_ONLY[:4] + b"\x01" + SHA384_ONLY[5:], "not EV_NO_ACTION"),
        (SHA384_ONLY[:40], "spec-ID event"),
        (b"", "spec-ID event"),
    ],
)
def test_ccel_rejects(log: bytes, message: str) -> None:
    with pytest.raises(EventLogError, match=message):
        parse_ccel(log)


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_ccel_random_bytes_only_raise_event_log_error(data: bytes) -> None:
    for candidate in (data, SHA384_ONLY + data):
        with contextlib.suppress(EventLogError):
            parse_ccel(candidate)


# --- describe_payload (synthetic) ------------------------------------------------------------


def test_describe_synthetic() -> None:
    guid = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
    var = guid + struct.pack("<QQ", 10, 1) + "SecureBoot".encode("utf-16-le") + b"\x01"
    assert describe_payload(Event(0, 0x80000001, D, "", var)) == (
        "efi variable SecureBoot {8be4df61-93ca-11d2-aa0d-00e098032b8c} (data 1 byte)"
    )
    cmdline = "console=ttyS0 root=/dev/vda".encode("utf-16-le") + b"\0\0"
    tagged = struct.pack("<II", 0x8F3B22ED, len(cmdline)) + cmdline
    assert describe_payload(Event(2, 6, D, "", tagged)) == (
        "tagged event 0x8f3b22ed (Linux load options): kernel command line: "
        "console=ttyS0 root=/dev/vda"
    )
    assert describe_payload(Event(2, 0xD, D, "", cmdline)) == (
        "kernel command line (UTF-16LE): console=ttyS0 root=/dev/vda"
    )
    assert describe_payload(Event(1, 4, D, "", b"\xff" * 4)) == "separator (firmware error)"
    assert describe_payload(Event(0, 1, D, "", b"")) is None
    # A payload that is not what its type promises falls back instead of raising.
    assert describe_payload(Event(0, 0x80000001, D, "", b"\x00\x01\x02")) == "3 bytes: 000102"
    assert describe_payload(Event(0, 0x80000001, D, "", b"bogus")) == "bogus"
    evil = Event(3, DSTACK_RUNTIME_EVENT_TYPE, D, "name\u202e", b"x\x1b[2J")
    assert describe_payload(evil) == "dstack runtime event name\\u202e: 781b5b324a"


@settings(max_examples=500)
@given(
    st.sampled_from(
        [0x1, 0x3, 0x4, 0x6, 0xA, 0xD, DSTACK_RUNTIME_EVENT_TYPE]
        + [0x80000000 + k for k in (1, 2, 3, 4, 5, 7, 8, 9, 0xA, 0xB, 0xC, 0xE0)]
    ),
    st.binary(max_size=300),
    st.text(max_size=12),
)
def test_describe_never_raises(event_type: int, payload: bytes, name: str) -> None:
    result = describe_payload(Event(0, event_type, D, name, payload))
    assert result is None or isinstance(result, str)


@settings(max_examples=300)
@given(st.binary(min_size=32, max_size=200), st.integers(0, 200), st.integers(0, 200))
def test_describe_variable_with_lying_lengths(tail: bytes, name_len: int, data_len: int) -> None:
    guid = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
    payload = guid + struct.pack("<QQ", name_len, data_len) + tail
    for t in (0x80000001, 0x80000002):
        assert isinstance(describe_payload(Event(0, t, D, "", payload)), str)


# --- attestation shapes (synthetic) ----------------------------------------------------------


def test_attestation_info_and_tcb_info_shapes() -> None:
    log = [entry(event_payload="41")]
    tcb = {"mrtd": "aa" * 48, "rtmr0": "bb" * 48, "rtmr3": "", "event_log": log}
    info = {"app_id": "00", "tcb_info": json.dumps(tcb), "vm_config": '{"cpu_count": 2}'}
    a = parse_attestation(json.dumps(info))
    assert a.source == "guest-agent Info response" and a.quote is None
    assert a.events == (Event(0, 1, D, "", b"A"),)
    assert a.registers == {"mrtd": b"\xaa" * 48, "rtmr0": b"\xbb" * 48}
    assert a.vm_config == {"cpu_count": 2}
    bare = parse_attestation(tcb)
    assert bare.source == "tcb_info" and bare.registers == a.registers and bare.events == a.events
    assert parse_attestation({"quote": "", "event_log": "[]"}).quote is None


@pytest.mark.parametrize(
    ("obj", "error", "message"),
    [
        ({"foo": 1, "bar": 2}, EvidenceError, r"keys found: \['bar', 'foo'\]"),
        ("[1", EvidenceError, "invalid JSON"),
        ("3", EvidenceError, "expected a JSON object, got int"),
        ({"tcb_info": "{}"}, EvidenceError, "no 'event_log'"),
        ({"tcb_info": 5}, EvidenceError, "field 'tcb_info': expected a JSON object"),
        ({"event_log": [], "rtmr0": "ab"}, EvidenceError, "'rtmr0': not 48 bytes"),
        ({"event_log": 5}, EventLogError, "expected a JSON string or array"),
        ({"quote": "0400", "event_log": "[]"}, QuoteError, "quote"),
        ({"quote": 4, "event_log": "[]"}, QuoteError, "field 'quote'"),
        ({"quote": "", "event_log": "[]", "vm_config": "[]"}, EvidenceError, "vm_config"),
    ],
)
def test_attestation_rejects(obj: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_attestation(obj)


# --- real captures ---------------------------------------------------------------------------


def load(real: Path, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((real / name).read_text())
    return obj


def test_real_060_replay(real: Path) -> None:
    a = parse_attestation((real / R060).read_text())
    assert a.source == "guest-agent GetQuote response" and a.quote is not None
    assert a.vm_config is not None and a.vm_config["image"] == "dstack-0.6.0"
    rtmr = replay_all(a.events)
    assert rtmr[:3] == a.quote.rtmr[:3]
    # The capture's runtime events carry no digest (the agent strips them: they are a
    # function of name and payload). Recomputing them the way dstack's verifier does makes
    # RTMR3 replay too, so the runtime events were not trimmed.
    runtime = [e for e in a.events if e.imr == 3]
    assert len(runtime) == 9 and all(e.digest_derived for e in runtime)
    assert rtmr[3] == a.quote.rtmr[3]
    # Without them RTMR3 would not replay: every one of the nine events is needed.
    assert replay_imr(a.events[:-1], 3) != a.quote.rtmr[3]
    # Boot-time events keep their digests but have their payloads stripped.
    assert all(e.event_payload == b"" for e in a.events[:8])


@pytest.mark.parametrize("name", [R054, RPHALA])
def test_real_all_four_replay(real: Path, name: str) -> None:
    obj = load(real, name)
    events = parse_json_event_log(obj["event_log"])
    quote = parse_quote(obj["quote"])
    assert replay_all(events) == quote.rtmr
    assert not any(e.digest_derived for e in events)


def test_real_ccel_sample(real: Path) -> None:
    events = parse_ccel((real / RCCEL).read_bytes())
    assert len(events) == 18
    assert all(len(e.digest) == 48 and 0 <= e.imr <= 3 for e in events)
    assert {e.imr for e in events} == {0, 1}
    rtmr0 = [e for e in events if e.imr == 0]
    assert rtmr0[0].event == "EV_EFI_HANDOFF_TABLES2"
    assert (describe_payload(rtmr0[0]) or "").startswith('handoff tables "TdxTable" (TD HOB)')
    assert [e.event_payload for e in rtmr0].count(b"ACPI DATA") == 3
    # The CFV, the five variables and the separator are constants shared with the 0.5.4 log.
    json_054 = parse_json_event_log(load(real, R054)["event_log"])
    assert [e.digest for e in rtmr0[1:8]] == [e.digest for e in json_054[1:8]]
    assert rtmr0[1].digest.hex().startswith("344bc51c980ba621")


def test_real_describe_payloads(real: Path) -> None:
    events = parse_json_event_log(load(real, RPHALA)["event_log"])
    readings = [describe_payload(e) for e in events]
    gv = "{8be4df61-93ca-11d2-aa0d-00e098032b8c}"
    assert readings[0] == (
        'handoff tables "TdxTable" (TD HOB): {93bb96af-b9f2-4eb8-9462-e0ba74564236} at 0x809000'
    )
    assert readings[1] == (
        'firmware blob "Fv(XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)" at 0xffc00000, 0x84000 bytes'
    )
    assert readings[2] == f"efi variable SecureBoot {gv} (data 0 bytes)"
    assert readings[5] == "efi variable db {d719b2cb-3d3a-4596-a3bc-dad00e67656f} (data 0 bytes)"
    assert readings[7] == "separator"
    assert readings[8] == "ACPI DATA"
    assert readings[11] == (
        "EFI boot services application, 11727872 bytes at 0x7b446018: "
        "VenMedia(1428f772-b64a-441e-b8c3-9ebdd7f893c7)/kernel"
    )
    assert readings[12] == f"efi variable BootOrder {gv} (data 2 bytes): Boot0000"
    assert readings[13] == (
        f'efi variable Boot0000 {gv} (data 62 bytes): "UiApp" '
        "Fv(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)"
    )
    assert readings[14] == "Calling EFI Application from Boot Option"
    assert readings[16] == "tagged event 0x8f3b22ed (Linux load options): LOADED_IMAGE::LoadOptions"
    assert readings[17] == "tagged event 0x8f3b22ec (Linux initrd): Linux initrd"
    assert readings[18] == "Exit Boot Services Invocation"
    assert readings[21] == "dstack runtime event app-id: 9f91439ecacc4f8845a9cd81cc141256d5e1bce3"
    assert all(r for r in readings)
    a060 = parse_attestation(load(real, R060))
    by_name = {e.event: describe_payload(e) for e in a060.events if e.event}
    assert by_name["storage-fs"] == "dstack runtime event storage-fs: zfs"
    assert by_name["system-ready"] == "dstack runtime event system-ready (no payload)"
    assert by_name["acpi-rsdp"] == "ACPI DATA"
    assert (by_name["key-provider"] or "").startswith(
        'dstack runtime event key-provider: {"name":"kms"'
    )


# The fixtures only hand out read-only paths, so sharing them across examples is safe.
@settings(
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_mutated_real_ccel_only_raises_event_log_error(real: Path, data: st.DataObject) -> None:
    raw = bytearray((real / RCCEL).read_bytes()[:2048])
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, 1933))
        raw[pos] = data.draw(
            st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, data.draw(st.integers(0, 255))])
        )
    cut = data.draw(st.integers(0, len(raw)))
    try:
        events = parse_ccel(bytes(raw[:cut]))
    except EventLogError:
        return
    for e in events:
        assert isinstance(describe_payload(e), (str, type(None)))
