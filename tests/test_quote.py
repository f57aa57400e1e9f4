"""TDX quote parsing: synthetic v4/v5 quotes, the real 0.6.0 capture, and hostile inputs."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dstack_mr.errors import QuoteError
from dstack_mr.quote import parse_quote

CAPTURE_060 = "dstack-0.6.0-getquote.json"

# --- synthetic quotes ------------------------------------------------------------------------


def _body(tag: int, td15: bool = False) -> bytes:
    """A TD report body whose every 48-byte measurement is recognisable by ``tag``."""
    body = bytearray(648 if td15 else 584)
    body[136:184] = bytes([tag]) * 48  # mrtd
    for i in range(4):
        body[328 + 48 * i : 376 + 48 * i] = bytes([tag + 1 + i]) * 48
    body[520:584] = bytes(range(64))  # report_data
    if td15:
        body[584:600] = b"\x11" * 16
        body[600:648] = b"\x22" * 48
    return bytes(body)


def make_quote(
    version: int = 4,
    body_type: int = 2,
    tee_type: int = 0x81,
    tag: int = 0xA0,
    signature: bytes = b"sig" * 10,
    body_size: int | None = None,
) -> bytes:
    header = struct.pack("<HHI", version, 2, tee_type) + bytes(40)
    body = _body(tag, td15=body_type == 3)
    if version == 5:
        size = len(body) if body_size is None else body_size
        header += struct.pack("<HI", body_type, size)
    return header + body + struct.pack("<I", len(signature)) + signature


def test_v4_fields() -> None:
    raw = make_quote()
    q = parse_quote(raw)
    assert (q.version, q.tee_type, q.body_type) == (4, 0x81, "td10")
    assert q.mrtd == b"\xa0" * 48
    assert q.rtmr == tuple(bytes([0xA1 + i]) * 48 for i in range(4))
    assert q.rtmr3 == b"\xa4" * 48
    assert q.report_data == bytes(range(64))
    assert q.tee_tcb_svn2 is None and q.mr_servicetd is None
    assert q.signature_data == b"sig" * 10
    assert q.signed_length == len(raw)
    # The documented quote offsets: MRTD at 184, RTMR0..3 at 376/424/472/520.
    assert raw[184:232] == q.mrtd
    assert [raw[o : o + 48] for o in (376, 424, 472, 520)] == list(q.rtmr)


@pytest.mark.parametrize(("body_type", "name"), [(2, "td10"), (3, "td15")])
def test_v5_bodies(body_type: int, name: str) -> None:
    q = parse_quote(make_quote(version=5, body_type=body_type))
    assert q.version == 5 and q.body_type == name
    assert q.mrtd == b"\xa0" * 48 and q.rtmr[2] == b"\xa3" * 48
    if name == "td15":
        assert q.tee_tcb_svn2 == b"\x11" * 16 and q.mr_servicetd == b"\x22" * 48


def test_hex_forms_and_padding() -> None:
    raw = make_quote()
    expected = parse_quote(raw)
    for form in (raw.hex(), "0x" + raw.hex().upper(), f"  {raw.hex()}\n", raw.hex().encode()):
        assert parse_quote(form) == expected
    padded = parse_quote(raw + bytes(70))  # the TDX driver's fixed-size buffer
    assert padded == expected and padded.signed_length == len(raw)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (make_quote(version=3), "unsupported quote version 3"),
        (make_quote(tee_type=0), "is not TDX"),
        (make_quote(version=5, body_type=1), "v5 body type 1"),
        (make_quote(version=5, body_type=2, body_size=648), "does not match body type 2"),
        (make_quote() + b"\x01", "not zero padding"),
        (make_quote()[:300], "TD report body"),
        (make_quote()[:-1], "signature data"),
        ("04zz", "invalid hex character 'z'"),
        ("040", "odd number"),
        ("", "empty"),
        (b"", "no data"),
    ],
)
def test_rejects(data: bytes | str, message: str) -> None:
    with pytest.raises(QuoteError, match=message):
        parse_quote(data)


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_quote_error(data: bytes) -> None:
    with contextlib.suppress(QuoteError):
        parse_quote(data)


@settings(max_examples=300)
@given(st.text(alphabet="0123456789abcdefx \n", max_size=1400))
def test_random_hex_text_only_raises_quote_error(text: str) -> None:
    with contextlib.suppress(QuoteError):
        parse_quote(text)


# --- the real 0.6.0 capture ------------------------------------------------------------------


def _cbor(data: bytes, off: int = 0) -> tuple[Any, int]:
    """Just enough CBOR (RFC 8949) for the measurement map: ints, strings, arrays, maps."""
    head = data[off]
    major, info = head >> 5, head & 0x1F
    off += 1
    if info < 24:
        arg = info
    else:
        n = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        arg = int.from_bytes(data[off : off + n], "big")
        off += n
    if major == 0:
        return arg, off
    if major == 1:
        return -1 - arg, off
    if major in (2, 3):
        chunk = data[off : off + arg]
        return (chunk if major == 2 else chunk.decode()), off + arg
    if major == 4:
        items = []
        for _ in range(arg):
            item, off = _cbor(data, off)
            items.append(item)
        return items, off
    if major == 5:
        out = {}
        for _ in range(arg):
            key, off = _cbor(data, off)
            out[key], off = _cbor(data, off)
        return out, off
    if major == 7 and info in (20, 21, 22):
        return {20: False, 21: True, 22: None}[info], off
    raise ValueError(f"unsupported CBOR item {head:#x}")


def _find(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


@pytest.fixture
def capture_060(real: Path) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((real / CAPTURE_060).read_text())
    return obj


def test_real_quote_060(capture_060: dict[str, Any]) -> None:
    raw = bytes.fromhex(capture_060["quote"])
    q = parse_quote(capture_060["quote"])
    assert (q.version, q.tee_type, q.body_type, q.att_key_type) == (4, 0x81, "td10", 2)
    assert q.mrtd == raw[184:232]
    assert q.rtmr == tuple(raw[o : o + 48] for o in (376, 424, 472, 520))
    assert q.mrtd.hex().startswith("fd685522ce791dfe")
    # The agent prepends nothing: report_data is what the GetQuote caller passed, zero padded.
    assert q.report_data.rstrip(b"\0") == bytes.fromhex(capture_060["report_data"])
    # 4936 bytes of quote, then the driver buffer's zero padding.
    assert q.signed_length == 4936 and len(q.raw) == 5006


def test_real_mrtd_is_the_two_pass_mrtd(capture_060: dict[str, Any]) -> None:
    vm_config = json.loads(capture_060["vm_config"])
    blob = base64.b64decode(vm_config["tdx_measurement"]["measurement"])
    measurement, end = _cbor(blob)
    assert end == len(blob)
    mrtd = _find(measurement, "mrtd")
    q = parse_quote(capture_060["quote"])
    assert q.mrtd == mrtd["two_pass"]
    assert q.mrtd != mrtd["single_pass"]


def test_real_quote_truncated_anywhere(capture_060: dict[str, Any]) -> None:
    raw = bytes.fromhex(capture_060["quote"])
    end = parse_quote(raw).signed_length
    for cut in range(end):
        with pytest.raises(QuoteError):
            parse_quote(raw[:cut])
    # Cutting only into the zero padding loses nothing that was signed.
    assert parse_quote(raw[:end]).mrtd == parse_quote(raw).mrtd


# The fixtures only hand out read-only data, so sharing them across examples is safe.
@settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_mutated_real_quote_only_raises_quote_error(
    capture_060: dict[str, Any], data: st.DataObject
) -> None:
    raw = bytearray(bytes.fromhex(capture_060["quote"]))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(QuoteError):
        parse_quote(bytes(raw[:cut]))


def test_real_image_digests_are_the_logged_events(capture_060: dict[str, Any]) -> None:
    """The CBOR's kernel Authenticode, cmdline and initrd digests are RTMR1 event 0 and the
    two RTMR2 events of the real log, whose fixed RTMR1 events are the known constants."""
    from dstack_mr.eventlog import parse_json_event_log
    from dstack_mr.events import RTMR1_LAYOUT

    vm_config = json.loads(capture_060["vm_config"])
    blob = base64.b64decode(vm_config["tdx_measurement"]["measurement"])
    image = _find(_cbor(blob)[0], "image")
    events = parse_json_event_log(capture_060["event_log"])
    rtmr1 = [e.digest for e in events if e.imr == 1]
    rtmr2 = [e.digest for e in events if e.imr == 2]
    assert rtmr1[0] == image["kernel_authenticode"]
    assert rtmr1[1:] == [s.digest for s in RTMR1_LAYOUT[1:]]
    assert rtmr2 == [image["cmdline_sha384"], image["initrd_sha384"]]
