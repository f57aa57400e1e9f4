"""Edges that mutation testing found untested, each pinned by an independent value."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from test_evidence_shapes import SHA384, ccel, record, spec_id_event

from dstack_mr import acpi, example, kernel, tdvf
from dstack_mr.diagnose import Evidence
from dstack_mr.errors import AcpiError, EventLogError, EvidenceError, KernelError, QuoteError
from dstack_mr.eventlog import parse_attestation, parse_ccel, parse_json_event_log
from dstack_mr.quote import parse_quote

GIB = 1 << 30


def test_zero_length_acpi_table_rejected() -> None:
    blob = b"DSDT" + struct.pack("<I", 36) + bytes(28) + b"XXXX" + struct.pack("<I", 0) + bytes(64)
    with pytest.raises(
        AcpiError, match=re.escape("ACPI table at offset 0x24 (b'XXXX') has length 0")
    ):
        acpi.find_tables(blob, ["DSDT", "RSDT"])
    # A 1-byte table is odd but walkable: the walk moves on by one byte.
    odd = b"DSDT" + struct.pack("<I", 36) + bytes(28) + b"RSDT" + struct.pack("<I", 36) + bytes(28)
    assert acpi.find_tables(odd, ["DSDT", "RSDT"]) == {"DSDT": (0, 36), "RSDT": (36, 36)}


def test_td_hob_for_memory_below_the_firmware_sections() -> None:
    """1 MiB of RAM ends below every TD_HOB/TEMP_MEM section (0x800000 up): one unaccepted
    range [0, 1 MiB), then the sections as accepted ranges."""
    hob = tdvf.parse(example.build_firmware()).td_hob(1 << 20)
    resources = [struct.unpack_from("<B3xIQQ", hob, off + 24) for off in range(56, len(hob), 48)]
    assert resources[0] == (7, 7, 0, 1 << 20)
    assert [r[2] for r in resources[1:]] == [0x800000, 0x809000, 0x80B000, 0x810000][
        : len(resources) - 1
    ]


def test_initrd_address_reads_named_fields() -> None:
    with pytest.raises(
        KernelError, match=re.escape("boot protocol version: need a 2-byte integer")
    ):
        kernel.initrd_address(bytes(0x100), 1, 2 * GIB)
    short = bytearray(0x236)
    struct.pack_into("<H", short, 0x206, 0x020C)
    with pytest.raises(KernelError, match=re.escape("xloadflags: need a 2-byte integer")):
        kernel.initrd_address(bytes(short), 1, 2 * GIB)


def test_initrd_limit_equal_to_the_available_ram() -> None:
    # 2 GiB of RAM less 0x28000 of ACPI data: 0x7FFD8000 available; a limit of exactly that
    # is still lowered to available - 1, so a 4 KiB initrd lands at 0x7FFD6000, not 0x7FFD7000.
    k = bytearray(example.build_kernel())
    struct.pack_into("<H", k, 0x206, 0x0203)
    struct.pack_into("<I", k, 0x22C, 0x7FFD_8000)
    assert kernel.initrd_address(bytes(k), 0x1000, 2 * GIB) == 0x7FFD_6000


def test_quote_hex_prefixes_and_first_nonzero_byte() -> None:
    raw = struct.pack("<HHI", 4, 2, 0x81) + bytes(40) + bytes(584) + bytes(4)
    assert parse_quote("0X" + raw.hex()) == parse_quote(raw)
    with pytest.raises(QuoteError, match=re.escape("(first non-zero byte at 0x27e)")):
        parse_quote(raw + b"\0\0\x05")


def test_ccel_algorithm_table_limits() -> None:
    sixteen = [(SHA384, 48)] + [(0x7000 + i, 1) for i in range(15)]
    assert parse_ccel(ccel(algorithms=sixteen)) == ()
    with pytest.raises(EventLogError, match="implausible numberOfAlgorithms 17"):
        parse_ccel(ccel(algorithms=[*sixteen, (0x7100, 1)]))
    big = [(SHA384, 48), (0x7000, 128)]
    rec = record(1, 1, [(SHA384, b"\x01" * 48), (0x7000, bytes(128))], b"")
    assert [e.digest for e in parse_ccel(ccel(rec, algorithms=big))] == [b"\x01" * 48]
    assert len(spec_id_event(big)) == 32 + 24 + 4 + 8 + 1


def test_attestation_field_names_in_errors() -> None:
    quote = (struct.pack("<HHI", 4, 2, 0x81) + bytes(40) + bytes(584) + bytes(4)).hex()
    bad_log = {"quote": quote, "event_log": json.dumps([{"imr": 9}])}
    with pytest.raises(EventLogError, match=re.escape("event log entry 0: missing field")):
        parse_attestation(json.dumps(bad_log))
    with pytest.raises(EvidenceError, match=re.escape("field 'event_log'")):
        parse_attestation(json.dumps({"quote": quote, "event_log": 5}))
    with pytest.raises(EvidenceError, match=re.escape("has no 'event_log' (keys found: [])")):
        parse_attestation(json.dumps({"tcb_info": None}))
    with pytest.raises(EventLogError, match=re.escape("event log: ")):
        parse_json_event_log(b"[not json")


def test_tcb_register_hex_prefix() -> None:
    att = parse_attestation(json.dumps({"event_log": [], "rtmr1": "0x" + "ab" * 48,
                                        "rtmr2": "0X" + "cd" * 48}))  # fmt: skip
    assert att.registers == {"rtmr1": b"\xab" * 48, "rtmr2": b"\xcd" * 48}
    evidence = Evidence.from_attestation(att)
    assert evidence.vm_config is None and evidence.sources == ("tcb_info",)


def test_cli_reads_evidence_up_to_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dstack_mr_cli import main as cli

    monkeypatch.setattr(cli, "MAX_EVIDENCE_SIZE", 10)
    exact, over = tmp_path / "exact", tmp_path / "over"
    exact.write_bytes(b"0123456789")
    over.write_bytes(b"0123456789A")
    assert cli._read(exact, "quote") == b"0123456789"
    with pytest.raises(EvidenceError, match=re.escape(f"quote {over} is larger than 10 bytes")):
        cli._read(over, "quote")
