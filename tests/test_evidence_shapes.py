"""Evidence in each shape it arrives in (CCEL built from the TCG spec, guest-agent JSON), and
the CLI's small option helpers, each asserted by value or by the words of its error."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dstack_mr import AcpiDumper, AcpiTablesFile
from dstack_mr.attestation import parse_attestation
from dstack_mr.ccel import parse_ccel
from dstack_mr.errors import EventLogError, EvidenceError
from dstack_mr.evidence import Evidence
from dstack_mr.example import write_example_image
from dstack_mr.quote import parse_quote
from dstack_mr_cli import main as cli
from dstack_mr_cli.base import parse_bool
from dstack_mr_cli.main import app

SHA1, SHA384 = 0x0004, 0x000C


def spec_id_event(algorithms: list[tuple[int, int]], vendor: bytes = b"") -> bytes:
    """TCG_PCR_EVENT (SHA-1 format) carrying a TCG_EfiSpecIDEvent, per the TCG PC Client
    spec: 'Spec ID Event03', platform class, spec version 2.0.2, uintn size 2, algorithms."""
    body = b"Spec ID Event03\0" + struct.pack("<IBBBBI", 0, 0, 2, 2, 2, len(algorithms))
    body += b"".join(struct.pack("<HH", a, s) for a, s in algorithms)
    body += bytes([len(vendor)]) + vendor
    return struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(body)) + body


def record(mr: int, event_type: int, digests: list[tuple[int, bytes]], data: bytes) -> bytes:
    out = struct.pack("<III", mr, event_type, len(digests))
    out += b"".join(struct.pack("<H", a) + d for a, d in digests)
    return out + struct.pack("<I", len(data)) + data


def ccel(*records: bytes, algorithms: list[tuple[int, int]] | None = None) -> bytes:
    algs = [(SHA1, 20), (SHA384, 48)] if algorithms is None else algorithms
    return spec_id_event(algs) + b"".join(records) + b"\xff" * 64


def two_digests(tag: int) -> list[tuple[int, bytes]]:
    return [(SHA1, bytes([tag]) * 20), (SHA384, bytes([tag]) * 48)]


def test_ccel_records() -> None:
    log = ccel(
        record(1, 0x80000001, two_digests(1), b"var"),
        record(0, 3, two_digests(2), b"no action"),  # EV_NO_ACTION: never extended
        record(4, 0x0800_0001, two_digests(3), b"rt"),
        record(2, 0x80000007, [(SHA384, b"\x04" * 48), (SHA1, b"\x05" * 20)], b""),
    )
    events = parse_ccel(log)
    assert [(e.imr, e.event_type, e.digest, e.event_payload) for e in events] == [
        (0, 0x80000001, b"\x01" * 48, b"var"),
        (3, 0x0800_0001, b"\x03" * 48, b"rt"),
        (1, 0x80000007, b"\x04" * 48, b""),
    ]
    assert events[0].event == "EV_EFI_VARIABLE_DRIVER_CONFIG"


def test_ccel_spec_id_first_record_at_32_plus_size() -> None:
    header = spec_id_event([(SHA384, 48)], vendor=b"vendor")
    log = header + record(1, 0x80000001, [(SHA384, b"\x07" * 48)], b"x")
    (event,) = parse_ccel(log)
    assert event.digest == b"\x07" * 48
    assert len(header) == 32 + struct.unpack_from("<I", header, 28)[0]


@pytest.mark.parametrize(
    ("algorithms", "message"),
    [
        ([(SHA384, 48), (0x9999, 0)], "algorithm 0x9999 has digest size 0"),
        ([(SHA384, 48), (0x9999, 129)], "algorithm 0x9999 has digest size 129"),
        ([(SHA384, 32)], "bad entry 0 (algorithm 0x000c size 32)"),
        ([(SHA384, 48), (SHA384, 48)], "bad entry 1 (algorithm 0x000c size 48)"),
        ([(SHA1, 20)], "the log carries no SHA-384 digests"),
        ([], "implausible numberOfAlgorithms 0"),
    ],
)
def test_ccel_spec_id_checked(algorithms: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(EventLogError, match=re.escape(f"CCEL spec-ID event: {message}")):
        parse_ccel(ccel(algorithms=algorithms))


def test_ccel_odd_but_valid_algorithm_size() -> None:
    log = ccel(record(1, 1, [(SHA384, b"\x01" * 48), (0x9999, b"\x02")], b""),
               algorithms=[(SHA384, 48), (0x9999, 1)])  # fmt: skip
    assert [e.digest for e in parse_ccel(log)] == [b"\x01" * 48]


@pytest.mark.parametrize(
    ("cut", "what"),
    [
        # Each part is read as a declared layout: the TCG_PCR_EVENT2 header names its three
        # fields, a TPMT_HA header its algorithm, then the event size.
        (2, "header (MR index, event type, digest count): need 12 bytes at offset 0x"),
        (6, "header (MR index, event type, digest count): need 12 bytes at offset 0x"),
        (10, "header (MR index, event type, digest count): need 12 bytes at offset 0x"),
        (13, "digest 0 algorithm: need 2 bytes at offset 0x"),
        (20, "digest 0: need 20 bytes"),
        (35, "digest 1 algorithm: need 2 bytes at offset 0x"),
        (86, "event size: need 4 bytes at offset 0x"),
        (90, "event data: need 3 bytes"),
    ],
)
def test_ccel_truncated_record_names_the_field(cut: int, what: str) -> None:
    head = spec_id_event([(SHA1, 20), (SHA384, 48)])
    rec = record(1, 0x80000001, two_digests(1), b"abc")
    with pytest.raises(EventLogError, match=re.escape(f"CCEL record 0 at offset {len(head):#x} ")
                       + ".*" + re.escape(what)):  # fmt: skip
        parse_ccel(head + rec[:cut])


@pytest.mark.parametrize(
    ("rec", "message"),
    [
        (record(1, 1, [], b""), "digest count 0 (the spec-ID event lists 2 algorithms)"),
        (record(1, 1, two_digests(1) * 2, b""), "digest count 4"),
        (record(1, 1, [(SHA1, b"\x01" * 20), (SHA1, b"\x01" * 20)], b""),
         "digest 1 algorithm 0x0004 is repeated"),
        (record(1, 1, [(0x000B, b"\x01" * 32)], b""), "not in the spec-ID algorithm table"),
        (record(1, 1, [(SHA1, b"\x01" * 20)], b""), "no SHA-384 digest"),
        (record(0, 1, two_digests(1), b""), "MR index 0 is not an RTMR"),
        (record(5, 1, two_digests(1), b""), "MR index 5 is not an RTMR"),
    ],
)  # fmt: skip
def test_ccel_bad_records(rec: bytes, message: str) -> None:
    with pytest.raises(EventLogError, match=re.escape(message)):
        parse_ccel(ccel(rec))


# --- guest-agent JSON --------------------------------------------------------------------------


def quote_hex(tag: int) -> str:
    body = bytes([tag]) * 584
    return (struct.pack("<HHI", 4, 2, 0x81) + bytes(40) + body + bytes(4)).hex()


EVENTS = [{"imr": 0, "event_type": 1, "digest": "aa" * 48}]
VM = {"cpu_count": 3, "memory_size": 1 << 30}


def test_attestation_shapes() -> None:
    bare = parse_attestation(json.dumps(EVENTS))
    assert (bare.source, bare.quote, bare.vm_config) == ("JSON event log", None, None)
    assert [e.digest for e in bare.events] == [b"\xaa" * 48]

    getquote = parse_attestation(
        json.dumps(
            {"quote": quote_hex(7), "event_log": json.dumps(EVENTS), "vm_config": json.dumps(VM)}
        )
    )
    assert getquote.source == "guest-agent GetQuote response"
    assert getquote.vm_config == VM and getquote.quote == parse_quote(quote_hex(7))

    tcb = {"event_log": EVENTS, "rtmr0": "bb" * 48, "mrtd": "cc" * 48}
    info = parse_attestation(json.dumps({"tcb_info": json.dumps(tcb), "vm_config": VM}))
    assert info.source == "guest-agent Info response" and info.quote is None
    assert info.registers == {"rtmr0": b"\xbb" * 48, "mrtd": b"\xcc" * 48}
    assert info.vm_config == VM

    bare_tcb = parse_attestation(json.dumps({**tcb, "vm_config": VM}))
    assert (bare_tcb.source, bare_tcb.quote, bare_tcb.vm_config) == ("tcb_info", None, VM)
    assert bare_tcb.registers == {"rtmr0": b"\xbb" * 48, "mrtd": b"\xcc" * 48}
    assert parse_attestation(json.dumps(tcb)).vm_config is None

    evidence = Evidence.from_attestation(getquote)
    assert evidence.sources == ("guest-agent GetQuote response",)
    assert evidence.vm_config is not None and evidence.vm_config.cpu_count == 3
    assert evidence.actual("rtmr0") == (bytes([7]) * 48, "quote")
    info_evidence = Evidence.from_attestation(info)
    assert info_evidence.actual("rtmr0") == (b"\xbb" * 48, "tcb_info")
    merged = info_evidence.merge(evidence)
    assert merged.quote == getquote.quote and merged.actual("rtmr0")[1] == "quote"
    assert evidence.merge(info_evidence).quote == getquote.quote


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tcb_info": {"a": 1, "b": 2}},
         "field 'tcb_info' has no 'event_log' (keys found: ['a', 'b'])"),
        ({"tcb_info": {}}, "field 'tcb_info' has no 'event_log' (keys found: [])"),
        ({"attestation": "zz"}, "field 'attestation': expected the SCALE VersionedAttestation"),
        ([1], "event log entry 0: expected an object, got int"),
        ("x", "attestation: expected a JSON object, got str"),
        ({"a": 1}, "attestation: unrecognised shape (keys found: ['a'])"),
    ],
)  # fmt: skip
def test_attestation_errors(doc: object, message: str) -> None:
    with pytest.raises((EvidenceError, EventLogError), match=re.escape(message)):
        parse_attestation(json.dumps(doc))


# --- the CLI's helpers -------------------------------------------------------------------------


def test_acpi_source_choice(tmp_path: Path) -> None:
    tables = tmp_path / "t.bin"
    assert cli.acpi_source(tables, None, 5.0) == AcpiTablesFile(tables)
    assert cli.acpi_source(None, "/x/dumper", 7.0) == AcpiDumper(program="/x/dumper", timeout=7.0)
    assert cli.acpi_source(None, None, 3.0) == AcpiDumper(program=None, timeout=3.0)
    kind = cli.AcpiSourceKind
    assert cli.acpi_source(tables, None, 5.0, kind.file) == AcpiTablesFile(tables)
    assert cli.acpi_source(None, None, 5.0, kind.dumper) == AcpiDumper(timeout=5.0)
    # builtin never runs a dumper, even one that exists; auto uses it when it exists.
    assert type(cli.acpi_source(None, "/bin/sh", 5.0, kind.builtin)).__name__ == "QemuAcpiModel"
    assert cli.acpi_source(None, "/bin/sh", 5.0, kind.auto) == AcpiDumper("/bin/sh", 5.0)
    assert type(cli.acpi_source(None, "/no/such", 5.0, kind.auto)).__name__ == "QemuAcpiModel"
    assert cli.acpi_source(None, "/bin/sh", 5.0, "auto") == AcpiDumper("/bin/sh", 5.0)
    for args, message in (
        ((tables, "/x", 1.0, None), "give either --acpi-tables or --acpi-dumper, not both"),
        ((tables, None, 1.0, kind.builtin), "--acpi-source builtin does not read --acpi-tables"),
        ((tables, None, 1.0, kind.auto), "--acpi-source auto does not read --acpi-tables"),
        ((None, None, 1.0, kind.file), "--acpi-source file needs --acpi-tables FILE"),
        ((tables, None, 1.0, kind.dumper), "--acpi-source dumper does not read --acpi-tables"),
    ):
        with pytest.raises(typer.BadParameter, match=f"^{re.escape(message)}$"):
            cli.acpi_source(*args)  # type: ignore[arg-type]


def test_option_value_parsers() -> None:
    assert parse_bool("true") is True and parse_bool("false") is False
    assert parse_bool(True) is True
    for bad in ("True", "1", "yes", ""):
        with pytest.raises(
            typer.BadParameter, match=re.escape(f"{bad!r} is not 'true' or 'false'")
        ):
            parse_bool(bad)
    assert cli._opt_bool(None) is None and cli._opt_bool("false") is False
    assert cli._u32("4294967295", "--cpu") == 4294967295 and cli._u32("+7", "--cpu") == 7
    for bad in ("4294967296", "-1", "1_0", " 1"):
        with pytest.raises(typer.BadParameter, match=re.escape(f"--cpu: {bad!r} is not a number")):
            cli._u32(bad, "--cpu")
    assert cli._memory("2G") == 2 << 30 and cli._memory("0x1000") == 0x1000
    with pytest.raises(typer.BadParameter, match="invalid hexadecimal memory size '0xzz'"):
        cli._memory("0xzz")


def test_cpu_message_names_the_range_it_accepts(tmp_path: Path) -> None:
    """--cpu 0 is refused (cpu_count >= 1), so a typo is told 1..=, not 0..="""
    meta = str(write_example_image(tmp_path / "img"))
    acpi = ["--acpi-tables", str(tmp_path / "acpi-tables.bin")]
    for args in (["-c", "x"], ["--cpu", "-1"], ["--snp", "-c", "x"]):
        result = CliRunner().invoke(app, ["measure", *args, *acpi, meta])
        assert result.exit_code == 2
        bad = args[-1]
        assert f"--cpu: {bad!r} is not a number in 1..=4294967295" in result.stderr, result.output
    zero = CliRunner().invoke(app, ["measure", "-c", "0", *acpi, meta])
    assert zero.exit_code == 2 and "in 1..=4294967295" in zero.stderr, zero.output
    other = CliRunner().invoke(app, ["measure", "-c", "2", "--num-gpus", "x", *acpi, meta])
    assert other.exit_code == 2
    assert "--num-gpus: 'x' is not a number in 0..=4294967295" in other.stderr, other.output


def test_bool_options_take_true_or_false(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    acpi = str(meta.parent / "acpi-tables.bin")
    for option in ("--smm", "--pic", "--two-pass-add-pages", "--hotplug-off", "--root-verity"):
        result = CliRunner().invoke(
            app, ["measure", option, "on", "--acpi-tables", acpi, str(meta)]
        )
        assert result.exit_code == 2, option
        assert "'on' is not 'true' or 'false'" in result.output
        help_text = CliRunner().invoke(app, ["measure", "--help"]).output
        assert re.search(rf"{option}\s+true\|false", help_text), option
