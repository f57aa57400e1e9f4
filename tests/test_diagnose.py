"""diagnose: evidence replay, event alignment, explanations, JSON schema and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import attrs
import jsonschema
import pytest
from conftest import ROOT, shared_path
from typer.testing import CliRunner

from dstack_mr import AcpiTablesFile, OvmfVariant, VmConfig
from dstack_mr.diagnose import Evidence, diagnose, parse_register_hex
from dstack_mr.errors import EvidenceError
from dstack_mr.eventlog import Event, parse_attestation
from dstack_mr.example import write_example_image
from dstack_mr.image import Image, ImageFiles
from dstack_mr.machine import MeasurementDetails
from dstack_mr_cli.main import app

SCHEMA = json.loads((ROOT / "docs" / "diagnose.schema.json").read_text())
GIB = 1 << 30


def events_of(details: MeasurementDetails) -> tuple[Event, ...]:
    """Evidence as a VM would log it: the expected events of each RTMR."""
    return tuple(
        Event(log.rtmr, 0x80000001, e.digest) for log in details.rtmr_logs for e in log.events
    )


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Image:
    meta = write_example_image(tmp_path_factory.mktemp("example") / "img")
    return Image(ImageFiles.from_metadata(meta), AcpiTablesFile(meta.parent / "acpi-tables.bin"))


VM = VmConfig(cpu_count=2, memory_size=2 * GIB)


def test_self_evidence_matches(example: Image) -> None:
    expected = example.measure(VM)
    report = diagnose(VM, example, Evidence(events=events_of(expected)))
    assert report.ok and report.exit_code == 0
    assert [r.status for r in report.registers] == ["not-compared"] + ["match"] * 3
    assert {e.status for e in report.events} == {"match"}
    assert len(report.events) == 13 + 5 + 2
    assert report.findings == ()
    jsonschema.validate(report.to_dict(), SCHEMA)


@pytest.mark.parametrize("with_log", [True, False])
def test_memory_size_explained(example: Image, with_log: bool) -> None:
    actual = example.measure(attrs.evolve(VM, memory_size=4 * GIB))
    evidence = (
        Evidence(events=events_of(actual))
        if with_log
        else Evidence(registers={"rtmr0": actual.measurements.rtmr0})
    )
    report = diagnose(VM, example, evidence)
    assert not report.ok
    hob = [f for f in report.findings if f.subject == "td_hob"]
    assert len(hob) == 1 and hob[0].reproduced
    assert hob[0].parameter == "memory_size" and hob[0].value == "4G"
    assert "td_hob: actual matches memory_size=4G (config says 2G)" in hob[0].message
    if with_log:
        # At 2G and at >= 2.75G QEMU places the initrd alike: only the TD HOB differs.
        assert [e.label for e in report.differing_events()] == ["td_hob"]


def test_low_memory_moves_the_kernel_too(example: Image) -> None:
    actual = example.measure(attrs.evolve(VM, memory_size=1 * GIB))
    report = diagnose(VM, example, Evidence(events=events_of(actual)))
    assert {e.label for e in report.differing_events()} == {"td_hob", "kernel_authenticode"}
    found = {f.subject: f for f in report.findings}
    assert found["td_hob"].value == "1G" and found["td_hob"].reproduced
    assert found["kernel_authenticode"].value == "1G" and found["kernel_authenticode"].reproduced


def test_memory_found_from_evidence_vm_config(example: Image) -> None:
    odd = 3 * GIB + (768 << 20)
    actual = example.measure(attrs.evolve(VM, memory_size=odd))
    ev = Evidence(events=events_of(actual), vm_config=attrs.evolve(VM, memory_size=odd))
    hob = next(f for f in diagnose(VM, example, ev).findings if f.subject == "td_hob")
    assert hob.value == "3.8G" and hob.reproduced


def test_two_pass_mrtd_explained(example: Image) -> None:
    two_pass = example.mrtd(True)
    assert two_pass != example.mrtd(False)
    report = diagnose(VM, example, Evidence(registers={"mrtd": two_pass}))
    assert report.registers[0].status == "mismatch"
    (finding,) = [f for f in report.findings if f.subject == "mrtd"]
    assert finding.reproduced and finding.value == "true"
    assert "two-pass" in finding.message


def test_wrong_firmware_mrtd_not_blamed_on_page_order(example: Image) -> None:
    report = diagnose(VM, example, Evidence(registers={"mrtd": bytes(48)}))
    (finding,) = [f for f in report.findings if f.subject == "mrtd"]
    assert not finding.reproduced and "different firmware" in finding.message


@pytest.mark.parametrize("with_log", [True, False])
def test_stable202505_layout_explained(example: Image, with_log: bool) -> None:
    actual = example.measure(attrs.evolve(VM, ovmf_variant=OvmfVariant.STABLE202505))
    assert len(actual.rtmr_logs[0]) == 17
    evidence = (
        Evidence(events=events_of(actual))
        if with_log
        else Evidence(registers={"rtmr0": actual.measurements.rtmr0})
    )
    report = diagnose(VM, example, evidence)
    assert report.ovmf_variant is OvmfVariant.PRE202505
    (finding,) = [f for f in report.findings if f.subject == "ovmf_variant"]
    assert finding.value == "stable202505" and finding.reproduced
    if with_log:
        statuses = [e.status for e in report.events if e.rtmr == 0]
        assert statuses.count("extra") == 4  # 17 actual events against 13 expected
        # The legacy BootOrder/Boot0000 pair up with the new layout's boot variables.
        mismatched = [e.label for e in report.differing_events() if e.status == "mismatch"]
        assert mismatched == ["boot_order", "Boot0000"]


def test_cmdline_variant_explained(example: Image) -> None:
    expected = example.measure(VM)
    from dstack_mr.uefi import cmdline_digest

    bare = cmdline_digest(example.info.cmdline)  # without " initrd=initrd"
    events = [
        e
        for e in events_of(expected)
        if not (e.imr == 2 and e.digest == expected.rtmr_logs[2].events[0].digest)
    ]
    events.insert(len(events) - 1, Event(2, 6, bare))
    report = diagnose(VM, example, Evidence(events=tuple(events)))
    assert [e.label for e in report.differing_events()] == ["cmdline"]
    (finding,) = [f for f in report.findings if f.subject == "cmdline"]
    assert finding.reproduced and finding.value == example.info.cmdline


def test_parse_register_hex() -> None:
    assert parse_register_hex(" 0x" + "ab" * 48 + "\n", "x") == b"\xab" * 48
    for bad in ["ab" * 47, "zz" * 48, "", "ab" * 49]:
        with pytest.raises(EvidenceError, match="48 bytes"):
            parse_register_hex(bad, "--actual-rtmr0")


# --- the real dstack-0.6.0 capture -------------------------------------------------------------


@pytest.fixture(scope="module")
def capture_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    inputs = shared_path("inputs")
    d = tmp_path_factory.mktemp("img06")
    for name in ("ovmf-2022.11-deb12.fd", "vmlinuz-6.1.0-56-amd64", "initrd-small.img"):
        shutil.copy(inputs / name, d / name)
    meta = {
        "bios": "ovmf-2022.11-deb12.fd",
        "kernel": "vmlinuz-6.1.0-56-amd64",
        "initrd": "initrd-small.img",
        "cmdline": "console=ttyS0 init=/init panic=1",
        "version": "0.6.0",
    }
    (d / "metadata.json").write_text(json.dumps(meta))
    return Image.load(d, AcpiTablesFile(inputs / "acpi-dstack-0.6.0-layout.bin"))


def test_real_capture(capture_image: Image) -> None:
    att = parse_attestation(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    evidence = Evidence.from_attestation(att)
    assert evidence.vm_config is not None and evidence.vm_config.memory_size == 2 * GIB
    report = diagnose(evidence.vm_config, capture_image, evidence)

    replay = {r.imr: r for r in report.replay}
    assert all(replay[i].matches and replay[i].derived_digests == 0 for i in range(3))
    # RTMR3's runtime events carry no digest in this capture: it does not replay as logged;
    # only recomputed from the payloads does it reach the quote's value, and the report says so.
    assert replay[3].derived_digests == replay[3].events == 9
    assert "carries no digest" in replay[3].message

    status = {(e.rtmr, e.label): e.status for e in report.events}
    assert {k for k, v in status.items() if v != "match"} == {
        (0, "acpi_tables"),
        (1, "kernel_authenticode"),
        (2, "cmdline"),
        (2, "initrd"),
    }
    for label in (
        "td_hob",
        "cfv_image",
        "efi:SecureBoot",
        "efi:PK",
        "efi:KEK",
        "efi:db",
        "efi:dbx",
        "separator",
        "boot_order",
        "Boot0000",
        "acpi_loader",
        "acpi_rsdp",
    ):
        assert status[(0, label)] == "match", label
    assert [r.status for r in report.registers] == ["mismatch"] * 4
    assert report.exit_code == 1
    acpi = next(e for e in report.events if e.label == "acpi_tables")
    assert acpi.actual_description is not None and "ACPI DATA" in acpi.actual_description
    jsonschema.validate(report.to_dict(), SCHEMA)


def test_real_capture_cli(capture_image: Image) -> None:
    att = shared_path("real", "dstack-0.6.0-getquote.json")
    acpi = shared_path("inputs", "acpi-dstack-0.6.0-layout.bin")
    args = ["diagnose", "--attestation", str(att), "--image-dir", capture_image.files.directory,
            "--acpi-tables", str(acpi)]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    jsonschema.validate(doc, SCHEMA)
    assert doc["ok"] is False
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 1
    assert "RTMR0 [10] acpi_tables" in text.output and "RESULT: MISMATCH" in text.output
    assert "\x1b[" not in text.output  # no colour when not a TTY


# --- the seed flow from the CLI ------------------------------------------------------------------


def _cli_image(tmp_path: Path) -> tuple[Path, Path, Path]:
    meta = write_example_image(tmp_path / "img")
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 * GIB, "unknown_key": 1}))
    return meta, vm, meta.parent / "acpi-tables.bin"


def test_cli_actual_rtmr0_match_and_mismatch(tmp_path: Path) -> None:
    meta, vm, acpi = _cli_image(tmp_path)
    base = ["diagnose", "--vm-config", str(vm), "--image-dir", str(meta.parent),
            "--acpi-tables", str(acpi)]  # fmt: skip
    own = json.loads(CliRunner().invoke(app, [*base, "--json"]).output)["rtmr0"]

    ok = CliRunner().invoke(app, [*base, "--actual-rtmr0", own])
    assert ok.exit_code == 0, ok.output
    assert "RTMR0: MATCH" in ok.output

    wrong = "0x" + "00" * 48
    bad = CliRunner().invoke(app, [*base, "--actual-rtmr0", wrong])
    assert bad.exit_code == 1
    assert "RTMR0: MISMATCH" in bad.output
    assert f"expected: {own}" in bad.output and "actual:   " + "00" * 48 in bad.output


def test_cli_bad_input_exit_2(tmp_path: Path) -> None:
    meta, vm, acpi = _cli_image(tmp_path)
    base = ["diagnose", "--vm-config", str(vm), "--image-dir", str(meta.parent),
            "--acpi-tables", str(acpi)]  # fmt: skip
    for extra in (["--actual-rtmr0", "zz"], ["--quote", str(vm)]):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    missing = CliRunner().invoke(app, ["diagnose", "--vm-config", str(vm)])
    assert missing.exit_code == 2 and "--image-dir" in missing.output


def test_cli_evidence_files(capture_image: Image, tmp_path: Path) -> None:
    """--quote (hex and binary), --event-log (list and JSON string) and --vm-config, split
    out of the real GetQuote response, give the same report as --attestation."""
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    (tmp_path / "quote.hex").write_text(doc["quote"] + "\n")
    (tmp_path / "quote.bin").write_bytes(bytes.fromhex(doc["quote"]))
    (tmp_path / "log-string.json").write_text(json.dumps(doc["event_log"]))
    (tmp_path / "log-list.json").write_text(doc["event_log"])
    (tmp_path / "vm.json").write_text(doc["vm_config"])
    acpi = shared_path("inputs", "acpi-dstack-0.6.0-layout.bin")
    common = ["diagnose", "--image-dir", capture_image.files.directory, "--acpi-tables",
              str(acpi), "--json"]  # fmt: skip
    via_attestation = json.loads(
        CliRunner()
        .invoke(
            app, [*common, "--attestation", str(shared_path("real", "dstack-0.6.0-getquote.json"))]
        )
        .output
    )
    for quote, log in (("quote.hex", "log-string.json"), ("quote.bin", "log-list.json")):
        args = [*common, "--vm-config", str(tmp_path / "vm.json"), "--quote",
                str(tmp_path / quote), "--event-log", str(tmp_path / log)]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        doc2 = json.loads(result.output)
        for key in ("comparison", "replay", "events", "findings", "mrtd", "rtmr0"):
            assert doc2[key] == via_attestation[key], key


def test_cli_ccel(example: Image) -> None:
    """A raw CCEL log is lined up against the expected events (it is another VM's log)."""
    ccel = shared_path("real", "dstack-ccel-sample.bin")
    vm = Path(example.files.directory).parent / "vm-ccel.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 << 30}))
    args = ["diagnose", "--vm-config", str(vm), "--image-dir", example.files.directory,
            "--acpi-tables", str(Path(example.files.directory) / "acpi-tables.bin"),
            "--ccel", str(ccel), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    jsonschema.validate(doc, SCHEMA)
    rtmr0 = [e for e in doc["events"] if e["rtmr"] == 0]
    assert any(e["status"] == "match" and e["label"] == "separator" for e in rtmr0)
    assert any(e["actual_description"] and "ACPI DATA" in e["actual_description"] for e in rtmr0)
    assert doc["evidence"] == [f"CCEL {ccel}"]


def test_lying_runtime_event_is_reported_not_fatal(capture_image: Image) -> None:
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    events = json.loads(doc["event_log"])
    app_id = next(e for e in events if e["event"] == "app-id")
    app_id["digest"] = "11" * 48  # stated digest that is not that of the payload
    doc["event_log"] = json.dumps(events)
    evidence = Evidence.from_attestation(parse_attestation(doc))
    assert evidence.vm_config is not None
    report = diagnose(evidence.vm_config, capture_image, evidence)
    rtmr3 = next(r for r in report.replay if r.imr == 3)
    assert not rtmr3.matches and rtmr3.inconsistent_payloads == 1
    assert "not that of their payload" in rtmr3.message
    # The boot-time comparison is unaffected.
    assert all(r.matches for r in report.replay if r.imr < 3)
    assert {e.label for e in report.differing_events()} == {
        "acpi_tables", "kernel_authenticode", "cmdline", "initrd"
    }  # fmt: skip
