"""diagnose: evidence replay, alignment by identity, proven vs hypothetical causes, the report.

The real-capture tests pin each case of issue 9 with the exact published data: what a report
may state as fact, and what it must call a hypothesis.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import attrs
import jsonschema
import pytest
from conftest import ROOT, shared_path
from typer.testing import CliRunner
from vmlog import events_of, smbios_swapped_log

from dstack_mr import AcpiTablesFile, OvmfVariant, VmConfig
from dstack_mr.acpi_log import AcpiDigests, acpi_digests_from_log
from dstack_mr.acpi_source import AcpiChoice, resolve_acpi
from dstack_mr.attestation import parse_attestation
from dstack_mr.diagnose import diagnose
from dstack_mr.errors import ConfigError, EvidenceError
from dstack_mr.event_payload import describe_payload
from dstack_mr.eventlog import FW_CFG_EVENT_PREFIX, Event, parse_json_event_log
from dstack_mr.evidence import Evidence, load_vm_config, parse_register_hex
from dstack_mr.example import write_example_image
from dstack_mr.image import Image, ImageFiles
from dstack_mr.registry import SMBIOS3_TABLE
from dstack_mr.report_text import render_diagnose as render
from dstack_mr.uefi import STABLE202505_VARIABLE_AUTHORITY_DIGEST, cmdline_digest
from dstack_mr_cli.main import app

SCHEMA = json.loads((ROOT / "docs" / "diagnose.schema.json").read_text())
GIB = 1 << 30
VM = VmConfig(cpu_count=2, memory_size=2 * GIB)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Image:
    meta = write_example_image(tmp_path_factory.mktemp("example") / "img")
    return Image(ImageFiles.from_metadata(meta), AcpiTablesFile(meta.parent / "acpi-tables.bin"))


def statuses(report: object) -> dict[str, str]:
    return {f.subject: f.status for f in report.findings}  # type: ignore[attr-defined]


# --- synthetic evidence on the example image ------------------------------------------------------


def test_self_evidence_matches(example: Image) -> None:
    expected = example.measure(VM)
    report = diagnose(VM, example, Evidence(events=events_of(expected)))
    assert report.ok and report.exit_code == 0 and report.result == "match"
    assert [r.status for r in report.registers] == ["not-compared"] + ["match"] * 3
    assert {e.status for e in report.events} == {"match"}
    assert len(report.events) == 13 + 5 + 2
    assert report.findings == ()
    assert report.headline().startswith("MATCH: RTMR0, RTMR1, RTMR2 equal the expected values")
    doc = report.to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert doc["result"] == "match" and doc["ok"] is True and doc["first_divergent"] == []


def test_no_evidence_is_not_compared(example: Image) -> None:
    report = diagnose(VM, example, Evidence())
    doc = report.to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert doc["result"] == "not-compared" and doc["ok"] is None
    assert report.headline().startswith("NOT COMPARED:")
    assert report.exit_code == 0


def test_memory_with_log_is_proven_at_event_level(example: Image) -> None:
    actual = example.measure(attrs.evolve(VM, memory_size=4 * GIB))
    report = diagnose(VM, example, Evidence(events=events_of(actual)))
    # At 2G and at >= 2.75G QEMU places the initrd alike: only the TD HOB differs.
    assert [e.label for e in report.differing_events()] == ["td_hob"]
    (hob,) = report.findings
    assert (hob.subject, hob.status, hob.parameter, hob.value) == (
        "td_hob", "proven", "memory_size", "4G"
    )  # fmt: skip
    assert report.headline() == (
        "MISMATCH: RTMR0 (unsigned: event log replay) — td_hob: the VM ran with "
        "memory_size=4G (config says 2G) [proven]"
    )


def test_register_only_memory_proves_the_other_events_equal(example: Image) -> None:
    """Issue 9: with only --actual-rtmr0 of a 4 GiB VM under a 2 GiB config, 4G reproduces the
    whole register, which proves the ACPI events equal: they must not be blamed."""
    actual = example.measure(attrs.evolve(VM, memory_size=4 * GIB))
    report = diagnose(VM, example, Evidence(registers={"rtmr0": actual.measurements.rtmr0}))
    (finding,) = report.findings
    assert finding.status == "proven" and finding.value == "4G"
    assert {"acpi_loader", "acpi_rsdp", "acpi_tables"} <= set(finding.proves_equal)
    assert "td_hob" not in finding.proves_equal and len(finding.proves_equal) == 12
    assert "proves its other 12 events equal" in finding.message
    assert (
        "    proven equal: cfv_image, efi:SecureBoot, efi:PK, efi:KEK, efi:db, efi:dbx, "
        "separator, acpi_loader, acpi_rsdp, acpi_tables, boot_order, Boot0000"
    ) in render(report)
    assert report.headline() == (
        "MISMATCH: RTMR0 (unsigned: --actual-rtmr0) — td_hob: the VM ran with memory_size=4G "
        "(config says 2G): RTMR0 recomputed with it reproduces the actual value, which proves "
        "its other 12 events equal the expected ones [proven]"
    )
    jsonschema.validate(report.to_dict(), SCHEMA)


def test_register_only_cmdline_does_not_blame_the_initrd(example: Image) -> None:
    """Issue 9: changing only the cmdline and giving --actual-rtmr2 blamed cmdline and initrd."""
    initrd = example.measure(VM).rtmr_logs[2].events[1].digest
    from dstack_mr.digest import replay

    rtmr2 = replay([cmdline_digest(example.info.cmdline), initrd])
    report = diagnose(VM, example, Evidence(registers={"rtmr2": rtmr2}))
    (finding,) = report.findings
    assert finding.subject == "cmdline" and finding.status == "proven"
    assert finding.proves_equal == ("initrd",)
    assert finding.value == example.info.cmdline


def test_register_only_unexplained_says_so(example: Image) -> None:
    report = diagnose(VM, example, Evidence(registers={"rtmr0": bytes(48), "rtmr2": bytes(48)}))
    found = {f.subject: f for f in report.findings}
    assert set(found) == {"rtmr0", "rtmr2"}
    rtmr0 = found["rtmr0"]
    assert rtmr0.status == "hypothesis" and "cannot be identified" in rtmr0.message
    assert any("256 MiB steps" in t for t in rtmr0.tried) and "event log" in (rtmr0.settle or "")
    assert "cannot be told whether the kernel command line or the initrd" in found["rtmr2"].message
    # Never every variable event listed as differing.
    assert not any(f.subject in ("td_hob", "acpi", "initrd") for f in report.findings)


def test_low_memory_moves_the_kernel_too(example: Image) -> None:
    actual = example.measure(attrs.evolve(VM, memory_size=1 * GIB))
    report = diagnose(VM, example, Evidence(events=events_of(actual)))
    assert {e.label for e in report.differing_events()} == {"td_hob", "kernel_authenticode"}
    found = {f.subject: f for f in report.findings}
    assert found["td_hob"].value == "1G" and found["td_hob"].status == "proven"
    assert found["kernel_authenticode"].value == "1G"
    assert found["kernel_authenticode"].status == "proven"


def test_memory_found_from_evidence_vm_config(example: Image) -> None:
    odd = 3 * GIB + (768 << 20)
    actual = example.measure(attrs.evolve(VM, memory_size=odd))
    ev = Evidence(events=events_of(actual), vm_config=attrs.evolve(VM, memory_size=odd))
    hob = next(f for f in diagnose(VM, example, ev).findings if f.subject == "td_hob")
    assert hob.value == "3.8G" and hob.status == "proven"


def test_two_pass_mrtd_explained(example: Image) -> None:
    two_pass = example.mrtd(True)
    assert two_pass != example.mrtd(False)
    report = diagnose(VM, example, Evidence(registers={"mrtd": two_pass}))
    (finding,) = [f for f in report.findings if f.subject == "mrtd"]
    assert finding.status == "proven" and finding.value == "true"
    assert "two-pass" in finding.message


def test_wrong_firmware_mrtd_is_a_hypothesis_naming_the_real_file(example: Image) -> None:
    report = diagnose(VM, example, Evidence(registers={"mrtd": bytes(48)}))
    (finding,) = [f for f in report.findings if f.subject == "mrtd"]
    assert finding.status == "hypothesis"
    fw = Path(example.files.firmware).name
    assert f"other firmware than {fw}" in finding.message and fw == example.info.bios


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
    assert finding.value == "stable202505" and finding.status == "proven"
    if with_log:
        rtmr0 = [e for e in report.events if e.rtmr == 0]
        # 17 against 13, paired by what the events are: the two fw_cfg items, the SMBIOS
        # handoff tables and a boot option are extra; nothing else is shifted.
        extra = sorted(e.identity for e in rtmr0 if e.status == "extra")
        assert extra == [
            "SMBIOS handoff tables", "a boot variable", "fw_cfg item BootMenu",
            "fw_cfg item bootorder",
        ]  # fmt: skip
        # The layout explains the boot variables too: no "another OVMF build" guesses.
        assert [f.subject for f in report.findings] == ["ovmf_variant"]
        assert [e.label for e in rtmr0 if e.status == "mismatch"] == ["boot_order", "Boot0000"]


def test_stable202505_index_13_is_the_smbios_handoff_event(example: Image) -> None:
    """Issue 9: the event the seed labels variable_authority is the SMBIOS handoff-tables
    event; its advice is about QEMU's SMBIOS tables, not OVMF builds; the seed's digest stays."""
    vm = attrs.evolve(VM, ovmf_variant=OvmfVariant.STABLE202505)
    other = hashlib.sha384(b"another SMBIOS table").digest()
    report = diagnose(
        vm, example, Evidence(events=smbios_swapped_log(example, vm, other, 0x7F6A3000))
    )
    (ev,) = report.differing_events()
    assert (ev.index, ev.label, ev.identity) == (13, "variable_authority", "SMBIOS handoff tables")
    assert ev.expected == STABLE202505_VARIABLE_AUTHORITY_DIGEST
    assert ev.actual_description is not None
    assert "SMBIOS3 table {f2fd1544-9794-4a2c-992e-e5bbcf20e394}" in ev.actual_description
    (finding,) = report.findings
    assert finding.subject == "smbios" and finding.status == "hypothesis"
    assert "QEMU's SMBIOS tables" in finding.message and "memory size" in finding.message
    assert "not a sign of another OVMF build" in finding.message
    assert "compare the OVMF build" not in finding.message
    text = render(report)
    assert text.startswith("MISMATCH: RTMR0 (unsigned: event log replay) — smbios: ")
    first = "FIRST DIVERGENT RTMR0 EVENT: index=13 label=variable_authority"
    assert f"{first} expected={ev.expected.hex()} actual={other.hex()}" in text


def test_fw_cfg_payload_is_ascii() -> None:
    payload = FW_CFG_EVENT_PREFIX + b"BootMenu".ljust(56, b"\0")
    assert describe_payload(Event(0, 0xA, bytes(48), "", payload)) == "fw_cfg item BootMenu"
    order = FW_CFG_EVENT_PREFIX + b"bootorder".ljust(56, b"\0")
    assert describe_payload(Event(0, 0xA, bytes(48), "", order)) == "fw_cfg item bootorder"


def test_cmdline_variant_explained(example: Image) -> None:
    expected = example.measure(VM)
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
    assert finding.status == "proven" and finding.value == example.info.cmdline


def test_log_that_does_not_replay_downgrades_proofs(example: Image) -> None:
    from dstack_mr.quote import parse_quote

    actual = example.measure(attrs.evolve(VM, memory_size=4 * GIB))
    quote = parse_quote(shared_path("real", "dstack-0.6.0-getquote.json").read_text().split('"')[3])
    report = diagnose(VM, example, Evidence(quote=quote, events=events_of(actual)))
    hob = next(f for f in report.findings if f.subject == "td_hob")
    assert hob.status == "hypothesis" and "does not replay" in hob.message


def test_parse_register_hex() -> None:
    assert parse_register_hex(" 0x" + "ab" * 48 + "\n", "x") == b"\xab" * 48
    for bad in ["ab" * 47, "zz" * 48, "", "ab" * 49]:
        with pytest.raises(EvidenceError, match="48 bytes"):
            parse_register_hex(bad, "--actual-rtmr0")


# --- inputs ---------------------------------------------------------------------------------------


def test_vm_config_without_memory_size_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no 'memory_size' field"):
        load_vm_config({"cpu_count": 2}, "vm.json")


def test_unknown_vm_config_keys_warn_but_upstream_keys_do_not() -> None:
    vm, warnings = load_vm_config({"memory_size": 2 * GIB, "memory": 1, "cpus": 2})
    assert vm.memory_size == 2 * GIB
    assert warnings == [
        "VmConfig: unknown keys 'cpus', 'memory' ignored (misspelt? their intended values took "
        "their defaults)"
    ]
    real = json.loads(
        json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())["vm_config"]
    )
    assert "tdx_measurement" in real and "tdx_attestation_variant" in real
    assert load_vm_config(real)[1] == []


def test_acpi_digests_from_log() -> None:
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    events = parse_json_event_log(doc["event_log"])
    got = acpi_digests_from_log(events)
    acpi = [e for e in json.loads(doc["event_log"]) if e["event"].startswith("acpi-")]
    assert got == AcpiDigests(*(bytes.fromhex(e["digest"]) for e in acpi))
    with pytest.raises(EvidenceError, match="0 RTMR0 'ACPI DATA' events"):
        acpi_digests_from_log([e for e in events if e.event_type != 0xA])


def test_resolve_acpi_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dumper anywhere
    monkeypatch.delenv("DSTACK_MR_ACPI_DUMPER", raising=False)
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    events = parse_json_event_log(doc["event_log"])
    assert resolve_acpi("auto", tables=tmp_path / "t.bin", events=events).kind == "file"
    auto = resolve_acpi("auto", events=events)
    assert auto.kind == "builtin" and auto.verified
    # For QEMU versions the built-in model does not cover: the log's digests, unverified.
    assert auto.fallback is not None and auto.fallback.kind == "log"
    assert not auto.fallback.verified
    assert auto.fallback.description == "ACPI digests taken from the event log, not verified"
    none = resolve_acpi("auto").fallback
    assert none is not None and none.kind == "none" and not none.judged
    assert resolve_acpi("log", events=events).kind == "log"
    with pytest.raises(EvidenceError):
        resolve_acpi("log")
    with pytest.raises(ConfigError):
        resolve_acpi("file")


# --- the real captures ----------------------------------------------------------------------------


def _stand_in_image(d: Path) -> Path:
    """The troubleshooting page's image: stand-ins, deliberately not the capture's image."""
    inputs = shared_path("inputs")
    d.mkdir(parents=True, exist_ok=True)
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
    return d


@pytest.fixture(scope="module")
def capture_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    d = _stand_in_image(tmp_path_factory.mktemp("img06") / "dstack-0.6.0")
    return Image.load(d, AcpiTablesFile(shared_path("inputs", "acpi-dstack-0.6.0-layout.bin")))


def capture(name: str = "dstack-0.6.0-getquote.json") -> Evidence:
    return Evidence.from_attestation(parse_attestation(shared_path("real", name).read_text()))


def test_real_capture(capture_image: Image) -> None:
    evidence = capture()
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
        (0, "acpi_tables"), (1, "kernel_authenticode"), (2, "cmdline"), (2, "initrd")
    }  # fmt: skip
    assert status[(0, "td_hob")] == "match"
    assert [r.status for r in report.registers] == ["mismatch"] * 4
    assert report.exit_code == 1
    acpi = next(e for e in report.events if e.label == "acpi_tables")
    assert acpi.actual_description == "ACPI DATA" and acpi.identity == "ACPI DATA (tables)"
    found = statuses(report)
    # The stand-in tables file has the real layout, not the real tables: the built-in ACPI
    # model reproduces the VM's three ACPI digests with its own config, which proves it.
    assert found == {
        "image": "proven",
        "mrtd": "hypothesis",
        "acpi": "proven",
        "kernel_authenticode": "hypothesis",
        "cmdline": "proven",
        "initrd": "proven",
    }
    # Issue 9: the stand-in image is not the image the VM declares, and the VM booted what it
    # declared: its measurement document (bound to os_image_hash) gives its quote's MRTD,
    # RTMR1 and RTMR2, and differs from the stand-in files. That leads, proven.
    assert report.headline() == (
        "MISMATCH: MRTD, RTMR0, RTMR1, RTMR2 — image: your image directory is not the image "
        "this VM declares (os_image_hash e6f5cfec20c02e7b…): its firmware, kernel, cmdline and "
        "initrd differ from that image's measurement document; the VM booted what it declared "
        "(its MRTD, RTMR1 and RTMR2 equal its measurement document's) [proven]"
    )
    doc = report.declared_measurement
    assert doc is not None and doc.error is None
    assert doc.vm_equal == ("MRTD", "RTMR1", "RTMR2") and doc.vm_differ == ()
    assert doc.image_differ == ("firmware", "kernel", "cmdline", "initrd")
    # Findings name the image's real files, not generic names.
    text = " ".join(f.message for f in report.findings)
    assert "ovmf-2022.11-deb12.fd" in text and "vmlinuz-6.1.0-56-amd64" in text
    assert "ovmf.fd" not in text.replace("ovmf-2022.11-deb12.fd", "") and "bzImage" not in text
    jsonschema.validate(report.to_dict(), SCHEMA)


def test_real_quote_only_blames_no_event(capture_image: Image) -> None:
    """Issue 9: with only the quote, the TD HOB must not be blamed (with the log it is a MATCH
    and only acpi_tables differs)."""
    full = capture()
    assert full.quote is not None and full.vm_config is not None
    report = diagnose(full.vm_config, capture_image, Evidence(quote=full.quote))
    found = {f.subject: f for f in report.findings}
    assert "td_hob" not in found and "acpi" not in found
    assert found["rtmr0"].status == "hypothesis"
    assert (
        "without the event log the differing event cannot be identified" in found["rtmr0"].message
    )
    assert found["rtmr2"].status == "hypothesis"


def test_real_register_only_memory_proves_acpi_equal(capture_image: Image) -> None:
    """Issue 9 with the real capture: only its RTMR0, a config claiming 4 GiB. Recomputed at
    2 GiB (with the built-in ACPI model) the whole register is reproduced, which proves the
    ACPI events equal: the report names the memory and nothing else."""
    from dstack_mr.acpi_model import QemuAcpiModel

    full = capture()
    assert full.quote is not None and full.vm_config is not None
    vm = attrs.evolve(full.vm_config, memory_size=4 * GIB, tdx_measurement=None, os_image_hash=b"")
    choice = AcpiChoice.from_source(QemuAcpiModel())
    report = diagnose(vm, capture_image, Evidence(registers={"rtmr0": full.quote.rtmr0}), choice)
    (finding,) = report.findings
    assert finding.subject == "td_hob" and finding.status == "proven" and finding.value == "2G"
    assert {"acpi_loader", "acpi_rsdp", "acpi_tables"} <= set(finding.proves_equal)
    assert report.headline() == (
        "MISMATCH: RTMR0 (unsigned: --actual-rtmr0) — td_hob: the VM ran with memory_size=2G "
        "(config says 4G): RTMR0 recomputed with it reproduces the actual value, which proves "
        "its other 12 events equal the expected ones [proven]"
    )


def test_real_quote_only_without_acpi_source_still_judges_the_rest(capture_image: Image) -> None:
    full = capture()
    assert full.quote is not None and full.vm_config is not None
    choice = AcpiChoice.none("no dumper was found, no --acpi-tables file and no event log")
    report = diagnose(full.vm_config, capture_image, Evidence(quote=full.quote), choice)
    assert [r.status for r in report.registers] == [
        "mismatch",
        "not-judged",
        "mismatch",
        "mismatch",
    ]
    assert report.headline().startswith("MISMATCH: MRTD, RTMR1, RTMR2; RTMR0 not judged")
    doc = report.to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert doc["rtmr0"] is None and doc["acpi_source"]["kind"] == "none"


def test_real_capture_acpi_from_log(capture_image: Image) -> None:
    """Issue 9: no ACPI source is no reason for no report: the log's three digests stand in,
    marked unverified, and RTMR0's other events are judged — the 4G config's TD HOB is caught."""
    evidence = capture()
    assert evidence.events is not None and evidence.vm_config is not None
    vm = attrs.evolve(evidence.vm_config, memory_size=4 * GIB)
    report = diagnose(vm, capture_image, evidence, AcpiChoice.from_log(evidence.events))
    rtmr0 = {e.label: e.status for e in report.events if e.rtmr == 0}
    assert rtmr0["td_hob"] == "mismatch"
    assert {rtmr0[k] for k in ("acpi_loader", "acpi_rsdp", "acpi_tables")} == {"unverified"}
    hob = next(f for f in report.findings if f.subject == "td_hob")
    assert hob.status == "proven" and hob.value == "2G"
    assert "  - td_hob: the VM ran with memory_size=2G (config says 4G) [proven]" in render(report)
    assert "taken from the VM's own event log, not verified" in " ".join(
        f.message for f in report.findings
    )


def test_real_capture_declared_image_hash(tmp_path: Path) -> None:
    """The VM declares os_image_hash; an image directory whose sha256sum.txt hashes to
    something else is not that image — proven by the hashes alone, and it leads."""
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    vm = json.loads(doc["vm_config"])
    del vm["tdx_measurement"]  # the hash alone decides here
    doc["vm_config"] = json.dumps(vm)
    evidence = Evidence.from_attestation(parse_attestation(doc))
    assert evidence.vm_config is not None
    declared = evidence.vm_config.os_image_hash.hex()
    assert declared.startswith("e6f5cfec")
    other = _stand_in_image(tmp_path / "other")
    (other / "sha256sum.txt").write_text("0" * 64 + "  ovmf-2022.11-deb12.fd\n")
    image = Image.load(other, AcpiTablesFile(shared_path("inputs", "acpi-dstack-0.6.0-layout.bin")))
    report = diagnose(evidence.vm_config, image, evidence)
    lead = report.lead()
    assert lead is not None and lead.subject == "image" and lead.status == "proven"
    assert report.headline().startswith(
        "MISMATCH: MRTD, RTMR0, RTMR1, RTMR2 — image: your image directory is not the image "
        "this VM declares (vm_config os_image_hash e6f5cfec20c02e7b…"
    )
    own = hashlib.sha256((other / "sha256sum.txt").read_bytes()).hexdigest()
    assert report.to_dict()["image_hash"] == {
        "status": "mismatch",
        "declared": declared,
        "image_dir": own,
        "image_dir_source": "sha256 of sha256sum.txt",
        "declared_by": "the VM",
    }
    # digest.txt naming the declared hash: the directory says it is the declared image.
    (other / "sha256sum.txt").unlink()
    (other / "digest.txt").write_text(declared + "\n")
    report = diagnose(evidence.vm_config, image, evidence)
    assert report.image_hash.status == "match"
    (note,) = [f for f in report.findings if f.subject == "image"]
    assert not note.lead and note.message.endswith("is the image this VM declares (os_image_hash "
                                                   "e6f5cfec20c02e7b…)")  # fmt: skip


def test_real_capture_declared_document_outranks_a_claiming_directory(tmp_path: Path) -> None:
    """A directory whose digest.txt claims the declared hash, but whose files are not those of
    the VM's measurement document, is not that image: the document decides."""
    evidence = capture()
    assert evidence.vm_config is not None
    other = _stand_in_image(tmp_path / "claims")
    (other / "digest.txt").write_text(evidence.vm_config.os_image_hash.hex() + "\n")
    image = Image.load(other, AcpiTablesFile(shared_path("inputs", "acpi-dstack-0.6.0-layout.bin")))
    report = diagnose(evidence.vm_config, image, evidence)
    assert report.image_hash.status == "match"
    lead = report.lead()
    assert lead is not None and lead.subject == "image" and lead.status == "proven"
    assert "its firmware, kernel, cmdline and initrd differ from that image's measurement" in (
        lead.message
    )


def test_declared_document_that_does_not_bind(capture_image: Image) -> None:
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    vm = json.loads(doc["vm_config"])
    vm["os_image_hash"] = "11" * 32
    doc["vm_config"] = json.dumps(vm)
    evidence = Evidence.from_attestation(parse_attestation(doc))
    assert evidence.vm_config is not None
    report = diagnose(evidence.vm_config, capture_image, evidence)
    (found,) = [f for f in report.findings if f.subject == "declared"]
    assert found.status == "proven"
    assert found.message.startswith(
        "declared: the VM's measurement document (vm_config.tdx_measurement) does not check out: "
        "tdx_measurement.checksum_file does not belong to this image"
    )


def test_real_kernel_event_length_is_used(capture_image: Image) -> None:
    """The 0.5.4 capture's kernel event records an 8,180,736-byte image; the stand-in kernel
    has another size, so the report says another kernel (not "or an initrd of another size")."""
    evidence = capture("dstack-0.5.4-8cpu-64g-getquote.json")
    vm = VmConfig(cpu_count=8, memory_size=64 * GIB, qemu_version="8.2.2", host_share_mode="9p")
    report = diagnose(vm, capture_image, evidence, AcpiChoice.from_log(evidence.events or ()))
    kernel = next(f for f in report.findings if f.subject == "kernel_authenticode")
    size = len(capture_image.kernel)
    assert kernel.message == (
        "kernel_authenticode: the VM booted another kernel: its log records a 8180736-byte "
        f"image, vmlinuz-6.1.0-56-amd64 is {size} bytes (the recorded length is not covered by "
        "the digest)"
    )
    assert kernel.status == "hypothesis"
    # 64 GiB with the dstack TDVF layout: the TD HOB and every RTMR0 event but ACPI match.
    assert {e.status for e in report.events if e.rtmr == 0} == {"match", "unverified"}


def test_real_td_hob_miss_uses_the_logged_hob_address(capture_image: Image) -> None:
    """The Phala capture's TD HOB is at 0x809000, where the stand-in firmware puts it too, so
    a miss is not blamed on the section layout alone."""
    evidence = capture("phala-cloud-dstack-0.3-era-getquote.json")
    vm = VmConfig(cpu_count=2, memory_size=2 * GIB, qemu_version="8.2.2")
    report = diagnose(vm, capture_image, evidence, AcpiChoice.from_log(evidence.events or ()))
    hob = next(f for f in report.findings if f.subject == "td_hob")
    assert hob.status == "hypothesis"
    assert "the VM's log places its TD HOB at 0x809000, as ovmf-2022.11-deb12.fd does" in (
        hob.message
    )


def test_real_captures_identify_every_event() -> None:
    """Events with payloads are named by what they are, in every capture that has them."""
    for name in ("dstack-0.5.4-8cpu-64g-getquote.json", "phala-cloud-dstack-0.3-era-getquote.json"):
        from dstack_mr.event_identity import actual_identity

        evidence = capture(name)
        rtmr0 = [actual_identity(e).name for e in evidence.events or () if e.imr == 0]
        assert rtmr0 == [
            "TD HOB", "OVMF variable store (CFV)", "EFI variable SecureBoot", "EFI variable PK",
            "EFI variable KEK", "EFI variable db", "EFI variable dbx", "separator", "ACPI DATA",
            "ACPI DATA", "ACPI DATA", "EFI variable BootOrder", "boot option Boot0000",
        ], name  # fmt: skip


def test_payloadless_acpi_events_still_line_up(capture_image: Image) -> None:
    """A log whose ACPI events lost their payload and name still pairs them with the ACPI
    events (by type), not as missing + extra."""
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    events = json.loads(doc["event_log"])
    for e in events:
        if e["event"].startswith("acpi-"):
            e["event"], e["event_payload"] = "", ""
    doc["event_log"] = json.dumps(events)
    evidence = Evidence.from_attestation(parse_attestation(doc))
    assert evidence.vm_config is not None
    report = diagnose(evidence.vm_config, capture_image, evidence)
    assert [(e.rtmr, e.label, e.status) for e in report.differing_events() if e.rtmr == 0] == [
        (0, "acpi_tables", "mismatch")
    ]


def test_null_quote_means_unsigned(capture_image: Image) -> None:
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    doc["quote"] = None
    evidence = Evidence.from_attestation(parse_attestation(doc))
    assert evidence.quote is None and evidence.vm_config is not None
    report = diagnose(evidence.vm_config, capture_image, evidence)
    assert not report.signed and report.replay == ()
    assert any('"quote" is null' in n for n in report.evidence_notes)
    text = render(report)
    assert "signed: nothing (no quote)" in text
    assert "the event log was compared with its own replay only" in text
    assert "(unsigned: event log replay)" in text.splitlines()[0]


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


# --- the CLI --------------------------------------------------------------------------------------


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["diagnose", *args])
    return result.exit_code, result.output


def test_real_capture_cli(capture_image: Image) -> None:
    att = shared_path("real", "dstack-0.6.0-getquote.json")
    acpi = shared_path("inputs", "acpi-dstack-0.6.0-layout.bin")
    args = ["--attestation", str(att), "--image-dir", capture_image.files.directory,
            "--acpi-tables", str(acpi)]  # fmt: skip
    code, out = _run(*args, "--json")
    assert code == 1, out
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["result"] == "mismatch" and doc["ok"] is False
    assert [d["label"] for d in doc["first_divergent"]] == [
        "acpi_tables",
        "kernel_authenticode",
        "cmdline",
    ]
    code, text = _run(*args)
    assert code == 1
    lines = text.splitlines()
    assert lines[0] == doc["headline"] and lines[0].startswith("MISMATCH: ")
    assert lines[0].endswith("[proven]")
    assert "FIRST DIVERGENT RTMR0 EVENT: index=10 label=acpi_tables expected=c31d04bb" in text
    assert "\x1b[" not in text  # no colour when not a TTY
    assert "=== events" not in text
    code, verbose = _run(*args, "--verbose")
    assert "=== events (16 of 20 without a difference) ===" in verbose
    assert "=== expected measurements ===" in verbose


def _cli_image(tmp_path: Path) -> tuple[Path, Path, Path]:
    meta = write_example_image(tmp_path / "img")
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 * GIB, "unknown_key": 1}))
    return meta, vm, meta.parent / "acpi-tables.bin"


def test_cli_actual_rtmr0_match_and_mismatch(tmp_path: Path) -> None:
    meta, vm, acpi = _cli_image(tmp_path)
    base = ["--vm-config", str(vm), "--image-dir", str(meta.parent), "--acpi-tables", str(acpi)]
    code, out = _run(*base, "--json")
    doc = json.loads(out)
    own = doc["rtmr0"]
    assert doc["result"] == "not-compared" and code == 0
    assert doc["warnings"] == [
        f"--vm-config {vm}: unknown key 'unknown_key' ignored (misspelt? their intended values "
        "took their defaults)"
    ]

    code, ok = _run(*base, "--actual-rtmr0", own)
    assert code == 0, ok
    assert ok.splitlines()[0] == ("MATCH: RTMR0 equal the expected values (--actual-rtmr0)")

    wrong = "0x" + "00" * 48
    code, bad = _run(*base, "--actual-rtmr0", wrong)
    assert code == 1
    assert bad.splitlines()[0].startswith("MISMATCH: RTMR0 (unsigned: --actual-rtmr0) — rtmr0: ")
    assert f"  expected: {own}" in bad and "  actual:   " + "00" * 48 in bad
    assert "warning: --vm-config" in bad


def test_cli_bad_input_exit_2(tmp_path: Path) -> None:
    meta, vm, acpi = _cli_image(tmp_path)
    base = ["--vm-config", str(vm), "--image-dir", str(meta.parent), "--acpi-tables", str(acpi)]
    for extra in (["--actual-rtmr0", "zz"], ["--quote", str(vm)]):
        code, out = _run(*base, *extra)
        assert code == 2, out
        assert out.count("\n") == 1 and out.startswith("error: ")
    code, out = _run("--vm-config", str(vm))
    assert code == 2 and "--image-dir" in out
    nomem = tmp_path / "nomem.json"
    nomem.write_text('{"cpu_count": 2}')
    code, out = _run("--vm-config", str(nomem), "--image-dir", str(meta.parent))
    assert code == 2 and out == (
        f"error: --vm-config {nomem} has no 'memory_size' field; it is required (bytes, e.g. "
        "2147483648 for 2 GiB)\n"
    )


def test_cli_evidence_without_vm_config(capture_image: Image) -> None:
    """The 0.5.4 capture carries no vm_config: one line naming the two ways to give one."""
    att = shared_path("real", "dstack-0.5.4-8cpu-64g-getquote.json")
    code, out = _run("--attestation", str(att), "--image-dir", capture_image.files.directory)
    assert code == 2
    assert out == "error: no VmConfig: pass --vm-config, or an --attestation carrying one\n"


@pytest.mark.parametrize("option", ["--quote", "--event-log", "--actual-event-log", "--vm-config"])
def test_cli_attestation_given_as_a_part(tmp_path: Path, option: str) -> None:
    """Issue 9: a GetQuote response given to --quote / --event-log / --vm-config gets one line
    naming --attestation, not an internal class name or a quote-version error."""
    meta, vm, _ = _cli_image(tmp_path)
    att = shared_path("real", "dstack-0.6.0-getquote.json")
    code, out = _run("--vm-config", str(vm), "--image-dir", str(meta.parent), option, str(att))
    assert code == 2
    shown = "--event-log" if option == "--actual-event-log" else option
    assert out == (
        f"error: {shown} {att} is an attestation response (it has 'quote', 'event_log'), not a "
        "bare part of one; use --attestation FILE\n"
    )


def test_cli_evidence_files(capture_image: Image, tmp_path: Path) -> None:
    """--quote (hex and binary), --event-log / --actual-event-log (list and JSON string) and
    --vm-config, split out of the real GetQuote response, give the same report as
    --attestation."""
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    (tmp_path / "quote.hex").write_text(doc["quote"] + "\n")
    (tmp_path / "quote.bin").write_bytes(bytes.fromhex(doc["quote"]))
    (tmp_path / "log-string.json").write_text(json.dumps(doc["event_log"]))
    (tmp_path / "log-list.json").write_text(doc["event_log"])
    (tmp_path / "vm.json").write_text(doc["vm_config"])
    acpi = shared_path("inputs", "acpi-dstack-0.6.0-layout.bin")
    common = ["--image-dir", capture_image.files.directory, "--acpi-tables", str(acpi), "--json"]
    via_attestation = json.loads(
        _run(*common, "--attestation", str(shared_path("real", "dstack-0.6.0-getquote.json")))[1]
    )
    for quote, log, opt in (
        ("quote.hex", "log-string.json", "--event-log"),
        ("quote.bin", "log-list.json", "--actual-event-log"),
    ):
        args = [*common, "--vm-config", str(tmp_path / "vm.json"), "--quote",
                str(tmp_path / quote), opt, str(tmp_path / log)]  # fmt: skip
        code, out = _run(*args)
        assert code == 1, out
        doc2 = json.loads(out)
        for key in ("comparison", "replay", "events", "mrtd", "rtmr0", "first_divergent"):
            assert doc2[key] == via_attestation[key], key
        # The same findings; only who declares the image differs (the VM's own vm_config in
        # the response, a VmConfig given on the command line here).
        assert [(f["subject"], f["status"]) for f in doc2["findings"]] == [
            (f["subject"], f["status"]) for f in via_attestation["findings"]
        ]
        assert "the given VmConfig declares" in doc2["headline"]
        assert "this VM declares" in via_attestation["headline"]


def test_cli_acpi_sources(
    capture_image: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DSTACK_MR_ACPI_DUMPER", raising=False)
    att = shared_path("real", "dstack-0.6.0-getquote.json")
    directory = capture_image.files.directory
    # auto, no dumper: the built-in model of dstack's QEMU reproduces the real CVM's tables.
    code, out = _run("--attestation", str(att), "--image-dir", directory, "--json")
    doc = json.loads(out)
    assert doc["acpi_source"]["kind"] == "builtin" and doc["acpi_source"]["verified"]
    assert {e["status"] for e in doc["events"] if e["rtmr"] == 0} == {"match"}
    code, out = _run("--attestation", str(att), "--image-dir", directory, "--json",
                     "--acpi-source", "log")  # fmt: skip
    doc = json.loads(out)
    assert doc["acpi_source"] == {
        "kind": "log",
        "description": "ACPI digests taken from the event log, not verified",
        "verified": False,
    }
    acpi = [e["status"] for e in doc["events"] if e["label"].startswith("acpi_")]
    assert acpi == ["unverified"] * 3
    code, out = _run("--attestation", str(att), "--image-dir", directory, "--acpi-source", "dumper")
    assert code == 2 and "dstack-acpi-tables" in out
    # A QEMU version the model does not cover, and no log: only RTMR0 is not judged.
    doc06 = json.loads(att.read_text())
    vm = json.loads(doc06["vm_config"])
    vm["qemu_version"] = "10.0.0"
    (tmp_path / "q.hex").write_text(doc06["quote"])
    (tmp_path / "vm.json").write_text(json.dumps(vm))
    code, text = _run("--quote", str(tmp_path / "q.hex"), "--vm-config", str(tmp_path / "vm.json"),
                      "--image-dir", directory)  # fmt: skip
    assert code == 1
    assert text.splitlines()[0].startswith("MISMATCH: MRTD, RTMR1, RTMR2; RTMR0 not judged")
    assert (
        "  ACPI: ACPI not judged: no dumper was found, no --acpi-tables file, the built-in " in text
    )


def test_cli_ccel(example: Image) -> None:
    """A raw CCEL log is lined up against the expected events (it is another VM's log), and
    the report says nothing signed it."""
    ccel = shared_path("real", "dstack-ccel-sample.bin")
    vm = Path(example.files.directory).parent / "vm-ccel.json"
    vm.write_text(json.dumps({"cpu_count": 2, "memory_size": 2 << 30}))
    args = ["--vm-config", str(vm), "--image-dir", example.files.directory,
            "--acpi-tables", str(Path(example.files.directory) / "acpi-tables.bin"),
            "--ccel", str(ccel)]  # fmt: skip
    code, out = _run(*args, "--json")
    assert code == 1, out
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    rtmr0 = [e for e in doc["events"] if e["rtmr"] == 0]
    assert any(e["status"] == "match" and e["label"] == "separator" for e in rtmr0)
    assert any(e["actual_description"] == "ACPI DATA" for e in rtmr0)
    assert doc["evidence"] == [f"CCEL {ccel}"] and doc["signed"] is False
    code, text = _run(*args)
    assert "the event log was compared with its own replay only" in text
    assert "signed: nothing (no quote)" in text


def test_report_names_match_identity_kinds() -> None:
    """Every label of every layout has an identity of its own kind (none falls through)."""
    from dstack_mr.event_identity import expected_identity
    from dstack_mr.events import RTMR0_LAYOUTS, RTMR1_LAYOUT, RTMR2_LAYOUT

    for layout in RTMR0_LAYOUTS.values():
        for spec in layout:
            assert not expected_identity(0, spec.label).kind.startswith("label:"), spec.label
    for rtmr, layout in ((1, RTMR1_LAYOUT), (2, RTMR2_LAYOUT)):
        for spec in layout:
            assert not expected_identity(rtmr, spec.label).kind.startswith("label:"), spec.label
    assert uuid.UUID("f2fd1544-9794-4a2c-992e-e5bbcf20e394") == SMBIOS3_TABLE


def test_acpi_search_names_the_claimed_value_of_a_machine_only_input(
    capture_image: Image,
) -> None:
    """root_verity is no VmConfig field (the dumper always gets it on): the proven ACPI
    finding for the Phala capture quotes the claimed machine's value, not a placeholder."""
    from dstack_mr.acpi_model import QemuAcpiModel

    evidence = capture("phala-cloud-dstack-0.3-era-getquote.json")
    vm = VmConfig(cpu_count=1, memory_size=2 * GIB, qemu_version="8.2.2")
    report = diagnose(vm, capture_image, evidence, AcpiChoice.from_source(QemuAcpiModel()))
    acpi = next(f for f in report.findings if f.subject == "acpi")
    assert acpi.status == "proven"
    assert (
        "the VM's ACPI tables are those of root_verity=False (config says root_verity=True)"
        in acpi.message
    )


def test_json_records_keep_their_keys_and_order(capture_image: Image) -> None:
    """The --json records (cattrs hooks in dstack_mr.diagnose): keys in a fixed order, bytes
    as hex, event types by name, times in UTC with Z."""
    import datetime as dt

    from dstack_mr.collateral import ValidityWindow
    from dstack_mr.dcap import QuoteVerdict

    evidence = capture()
    assert evidence.vm_config is not None
    report = diagnose(evidence.vm_config, capture_image, evidence)
    at = dt.datetime(2025, 9, 20, tzinfo=dt.timezone.utc)
    window = ValidityWindow(at, at + dt.timedelta(days=30), ())
    verdict = QuoteVerdict(True, at, "UpToDate", advisory_ids=("INTEL-SA-1",), window=window)
    doc = attrs.evolve(report, quote_signature=verdict).to_dict()
    assert list(doc["comparison"][0]) == ["register", "status", "expected", "actual", "source"]
    assert doc["comparison"][0]["expected"] == report.registers[0].expected.hex()  # type: ignore[union-attr]
    assert list(doc["replay"][0]) == [
        "imr", "events", "replayed", "reference", "reference_source", "derived_digests",
        "inconsistent_payloads", "matches", "message",
    ]  # fmt: skip
    assert list(doc["events"][0]) == [
        "rtmr", "index", "actual_index", "label", "identity", "actual_identity", "status",
        "expected", "actual", "actual_type", "actual_description", "varies_with",
    ]  # fmt: skip
    assert doc["events"][0]["actual_type"] == "EV_EFI_HANDOFF_TABLES2"
    assert list(doc["first_divergent"][0]) == [
        "rtmr", "index", "actual_index", "label", "identity", "expected", "actual",
    ]  # fmt: skip
    assert doc["quote_signature"] == {
        "verified": True, "error": None, "tcb_status": "UpToDate",
        "advisory_ids": ["INTEL-SA-1"], "fmspc": None, "verified_at": "2025-09-20T00:00:00Z",
        "collateral_valid_until": "2025-10-20T00:00:00Z",
    }  # fmt: skip
    assert isinstance(doc["comparison"], list) and isinstance(doc["events"], list)
    jsonschema.validate(doc, SCHEMA)
