"""diagnose on stable202505 evidence: the SMBIOS event's inputs are proven by recomputation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import attrs
import jsonschema
from conftest import ROOT
from typer.testing import CliRunner
from vmlog import smbios_swapped_log

from dstack_mr import OvmfVariant, VmConfig, smbios
from dstack_mr.diagnose import diagnose
from dstack_mr.digest import replay
from dstack_mr.events import SMBIOS_HANDOFF
from dstack_mr.evidence import Evidence
from dstack_mr.example import write_example_image
from dstack_mr.image import Image
from dstack_mr.report_text import render_diagnose as render
from dstack_mr.smbios import SmbiosInputs
from dstack_mr_cli.main import app

SCHEMA = json.loads((ROOT / "docs" / "diagnose.schema.json").read_text())
GIB = 1 << 30
VM16 = VmConfig(
    cpu_count=8, memory_size=16 * GIB, qemu_version="8.2.2", ovmf_variant=OvmfVariant.STABLE202505
)
#: What the host really was: a Sapphire Rapids stepping 8 machine, dstack's strings.
TRUTH = SmbiosInputs("8.2.2", 16 * GIB, cpuid_eax=0x806F8)
#: Where this host's SMBIOS handoff event says the tables are.
TABLE_ADDRESS = 0x7FA63000


def test_a_16g_vm_gets_its_smbios_inputs_proven_and_rtmr0_matches(image: Image) -> None:
    actual = smbios.event_digest(TRUTH)
    report = diagnose(
        VM16, image, Evidence(events=smbios_swapped_log(image, VM16, actual, TABLE_ADDRESS))
    )
    (ev,) = report.differing_events()
    assert (ev.index, ev.identity) == (13, "SMBIOS handoff tables")
    (finding,) = report.findings
    assert (finding.subject, finding.status, finding.parameter) == ("smbios", "proven", "smbios")
    assert finding.value == TRUTH.describe()
    assert "Sapphire Rapids stepping 8" in finding.message and "memory 16 GiB" in finding.message
    assert finding.message.endswith("; with it the expected RTMR0 equals the actual")
    # ... which is true: the expected log with this one digest replaced replays to RTMR0.
    expected = [e.digest for e in report.expected.rtmr_logs[0].events]
    expected[13] = actual
    assert replay(expected) == report.registers[1].actual
    assert report.headline().startswith(
        "MISMATCH: RTMR0 (unsigned: event log replay) — smbios: the SMBIOS handoff-tables "
        "event is the SMBIOS table of host CPU Sapphire Rapids stepping 8"
    )
    jsonschema.validate(report.to_dict(), SCHEMA)
    assert "[proven]" in render(report).splitlines()[0]
    # docs/smbios.md quotes this finding.
    page = (ROOT / "docs" / "smbios.md").read_text()
    block = page[page.index("<!-- smbios-diagnose-example -->") :].split("```")[1]
    assert " ".join(block.split()[1:]) == f"{finding.message} [proven]"


def test_memory_the_config_misstates_is_proven_by_the_td_hob_and_used(image: Image) -> None:
    said = attrs.evolve(VM16, memory_size=4 * GIB)
    events = smbios_swapped_log(image, VM16, smbios.event_digest(TRUTH), TABLE_ADDRESS)
    report = diagnose(said, image, Evidence(events=events))
    by_subject = {f.subject: f for f in report.findings}
    assert by_subject["td_hob"].value == "16G" and by_subject["td_hob"].proven
    smbios_finding = by_subject["smbios"]
    assert smbios_finding.proven and "memory 16 GiB" in smbios_finding.value
    assert "; memory 16G, config says 4G" in smbios_finding.message


def test_a_qemu_version_the_config_does_not_name_is_found(image: Image) -> None:
    unnamed = attrs.evolve(VM16, qemu_version=None)  # the reference then assumes 9.1.0
    events = smbios_swapped_log(image, unnamed, smbios.event_digest(TRUTH), TABLE_ADDRESS)
    report = diagnose(unnamed, image, Evidence(events=events))
    (finding,) = [f for f in report.findings if f.subject == "smbios"]
    assert finding.proven and "; QEMU 8.2.2, config resolves 9.1.0" in finding.message


def test_an_unknown_table_stays_a_hypothesis_and_lists_what_was_tried(image: Image) -> None:
    other = hashlib.sha384(b"a table from another QEMU").digest()
    report = diagnose(
        VM16, image, Evidence(events=smbios_swapped_log(image, VM16, other, TABLE_ADDRESS))
    )
    (finding,) = report.findings
    assert finding.subject == "smbios" and finding.status == "hypothesis"
    (tried,) = finding.tried
    assert tried.startswith("no SMBIOS table reproduces")
    assert "Emerald Rapids steppings 2, 1" in tried and "QEMU 8.2.2, 9.1.0, 9.2.1" in tried
    assert "--smbios-computed" in (finding.settle or "")


def test_registers_only_the_smbios_inputs_prove_the_other_16_events(image: Image) -> None:
    events = smbios_swapped_log(image, VM16, smbios.event_digest(TRUTH), TABLE_ADDRESS)
    rtmr0 = replay(e.digest for e in events if e.imr == 0)
    report = diagnose(VM16, image, Evidence(registers={"rtmr0": rtmr0}))
    (finding,) = report.findings
    assert finding.proven and finding.value == TRUTH.describe()
    assert "which proves its other 16 events equal" in finding.message
    assert SMBIOS_HANDOFF not in finding.proves_equal and len(finding.proves_equal) == 16


def test_cli_diagnose_names_the_proven_smbios_inputs(image: Image, tmp_path: Path) -> None:
    events = smbios_swapped_log(image, VM16, smbios.event_digest(TRUTH), TABLE_ADDRESS)
    rtmr0 = replay(e.digest for e in events if e.imr == 0)
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps(VM16.to_dict()))
    meta = write_example_image(tmp_path / "img")
    result = CliRunner().invoke(
        app,
        [
            "diagnose",
            "--vm-config",
            str(vm),
            "--image-dir",
            str(meta.parent),
            "--acpi-tables",
            str(meta.parent / "acpi-tables.bin"),
            "--actual-rtmr0",
            rtmr0.hex(),
        ],
    )
    assert result.exit_code == 1, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("MISMATCH: RTMR0 (unsigned: --actual-rtmr0) — smbios: ")
    assert "Sapphire Rapids stepping 8" in first and first.endswith("[proven]")
