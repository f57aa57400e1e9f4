"""Edges that mutation testing found untested, each pinned by an independent value."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from test_evidence_shapes import SHA384, ccel, record, spec_id_event

from dstack_mr import acpi, example, kernel, tdvf
from dstack_mr.attestation import parse_attestation
from dstack_mr.ccel import parse_ccel
from dstack_mr.diagnose import Evidence
from dstack_mr.errors import AcpiError, EventLogError, EvidenceError, KernelError, QuoteError
from dstack_mr.eventlog import parse_json_event_log
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


def test_evidence_is_read_up_to_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dstack_mr import evidence_files

    monkeypatch.setattr(evidence_files, "MAX_EVIDENCE_SIZE", 10)
    exact, over = tmp_path / "exact", tmp_path / "over"
    exact.write_bytes(b"0123456789")
    over.write_bytes(b"0123456789A")
    assert evidence_files.read_evidence(exact, "quote") == b"0123456789"
    with pytest.raises(EvidenceError, match=re.escape(f"quote {over} is larger than 10 bytes")):
        evidence_files.read_evidence(over, "quote")


# --- CLI helpers (second mutation run, docs/testing.md) ----------------------------------------


def test_version_option_prints_the_installed_distribution_version() -> None:
    from importlib.metadata import version

    from typer.testing import CliRunner

    from dstack_mr_cli.main import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"dstack-mr {version('dstack-mr')}\n"


def test_ctrl_c_exits_with_the_shell_status_for_sigint(monkeypatch: pytest.MonkeyPatch) -> None:
    from dstack_mr_cli import main as cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    with pytest.raises(SystemExit) as exc:
        cli.run()
    assert exc.value.code == 128 + 2  # 128 + SIGINT, as a shell reports it


def test_smbios_options_from_the_cli() -> None:
    import typer

    from dstack_mr_cli.main import _smbios_options

    assert _smbios_options(False, None, None) is None
    with pytest.raises(
        typer.BadParameter,
        match="^" + re.escape("--host-cpu and --smbios-product need --smbios-computed") + "$",
    ):
        _smbios_options(False, None, "box")
    # CPUID leaf 1 given as EAX:EDX in hex; the SMBIOS strings keep dstack's "dstack".
    cpu = _smbios_options(True, "c06f2:2fabfbff", None)
    assert cpu is not None
    assert (cpu.host_cpu.eax, cpu.host_cpu.edx, cpu.manufacturer, cpu.product) == (
        0xC06F2, 0x2FABFBFF, "dstack", "dstack"
    )  # fmt: skip
    product = _smbios_options(True, None, "box")
    assert product is not None
    assert (product.product, product.manufacturer) == ("box", "dstack")
    assert product.host_cpu == _smbios_options(True, None, None).host_cpu  # type: ignore[union-attr]


def test_diagnose_collateral_checks_the_real_quote_signature(tmp_path: Path) -> None:
    from conftest import shared_path
    from typer.testing import CliRunner

    from dstack_mr.example import write_example_image
    from dstack_mr_cli.main import app

    path = shared_path(
        "real", "collateral", "dstack-0.5.4-8cpu-64g-quote-tcbeval20-collateral.json"
    )
    doc = json.loads(path.read_text())
    quote = tmp_path / "quote.hex"
    quote.write_text(doc["quote"])
    meta = write_example_image(tmp_path / "img")
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 * GIB}))
    base = ["diagnose", "--vm-config", str(vm), "--image-dir", str(meta.parent), "--acpi-tables",
            str(meta.parent / "acpi-tables.bin"), "--no-explain", "--verbose"]  # fmt: skip
    run = CliRunner().invoke
    # The capture's recorded verdict at its recorded time (from the collateral file).
    want = doc["expected"]
    result = run(app, [*base, "--quote", str(quote), "--collateral", str(path),
                       "--at", doc["verify_at"]])  # fmt: skip
    assert result.exit_code == 1, result.output  # the example image is not that machine
    assert f"TCB status {want['status']}, advisories {', '.join(want['advisory_ids'])})" in (
        result.output
    )
    assert "signature verified (FMSPC " in result.output
    # After the collateral's validity (the default --at is now) the check fails instead.
    late = run(app, [*base, "--quote", str(quote), "--collateral", str(path)])
    assert "QUOTE SIGNATURE INVALID: " in late.output
    no_quote = run(app, [*base, "--collateral", str(path)])
    assert no_quote.exit_code == 2
    assert "--collateral checks a quote's signature: give --quote or --attestation" in (
        no_quote.output
    )


# --- attestation shapes: which field an error names (second mutation run) ---------------------

_QUOTE = (struct.pack("<HHI", 4, 2, 0x81) + bytes(40) + bytes(584) + bytes(4)).hex()


@pytest.mark.parametrize(
    ("doc", "error", "message"),
    [
        ({"quote": _QUOTE, "event_log": 5}, EventLogError,
         "field 'event_log': expected a JSON string or array, got int"),
        ({"quote": _QUOTE, "event_log": [], "vm_config": 5}, EvidenceError,
         "field 'vm_config': expected a JSON object, got int"),
        ({"tcb_info": {"event_log": 5}}, EventLogError,
         "field 'tcb_info.event_log': expected a JSON string or array, got int"),
        ({"tcb_info": {"event_log": [], "vm_config": 5}}, EvidenceError,
         "field 'vm_config': expected a JSON object, got int"),
        ({"tcb_info": {"event_log": [], "mrtd": 5}}, EvidenceError,
         "field 'tcb_info' field 'mrtd': expected a hex string"),
        ({"event_log": 5}, EventLogError,
         "field 'event_log': expected a JSON string or array, got int"),
        ({"event_log": [], "vm_config": 5}, EvidenceError,
         "field 'vm_config': expected a JSON object, got int"),
        ({"event_log": [], "rtmr0": 5}, EvidenceError,
         "tcb_info field 'rtmr0': expected a hex string"),
    ],
)  # fmt: skip
def test_attestation_errors_name_the_field(
    doc: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match="^" + re.escape(message) + "$"):
        parse_attestation(json.dumps(doc))


def test_attestation_shape_fields_are_read_from_their_place() -> None:
    with pytest.raises(EvidenceError, match=r"^attestation: invalid JSON "):
        parse_attestation(b"{not json")
    # 'quote' and 'event_log' make a GetQuote response even beside an 'attestation' key.
    both = parse_attestation(json.dumps({"attestation": "zz", "quote": _QUOTE, "event_log": []}))
    assert both.source == "guest-agent GetQuote response" and both.quote is not None
    # An Info response: the quote beside tcb_info, vm_config inside tcb_info.
    info = parse_attestation(
        json.dumps({"quote": _QUOTE, "tcb_info": {"event_log": [], "vm_config": '{"a": 1}'}})
    )
    assert info.quote == parse_quote(_QUOTE) and info.vm_config == {"a": 1}


def test_evidence_from_attestation_keeps_vm_config_notes_and_warnings() -> None:
    from dstack_mr.errors import ConfigError

    with pytest.raises(ConfigError, match="^" + re.escape("the attestation's vm_config has no")):
        Evidence.from_attestation(
            parse_attestation(json.dumps({"event_log": [], "vm_config": {"cpu_count": 2}}))
        )
    raw = {"cpu_count": 2, "memory_size": 2 * GIB, "bogus_key": 1}
    ev = Evidence.from_attestation(
        parse_attestation(json.dumps({"event_log": [], "vm_config": raw}))
    )
    assert ev.vm_config_raw == raw and ev.notes == ()
    assert ev.warnings == (
        "the attestation's vm_config: unknown key 'bogus_key' ignored (misspelt? their intended "
        "values took their defaults)",
    )
    unsigned = Evidence.from_attestation(
        parse_attestation(json.dumps({"quote": "", "event_log": []}))
    )
    assert unsigned.notes == (
        'the GetQuote response has no quote ("quote" is null or empty): nothing in it is signed',
    )
