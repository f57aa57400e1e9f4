"""The library's text and JSON output (measurement_text, report_text, snp_text, inspect_doc)
and the OVMF layout `measure` picks for an image (image.image_variant), checked on the values
they render; the CLI prints these strings unchanged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from snp_helpers import snp_attestation_bytes, snp_report

from dstack_mr import AcpiTablesFile, Machine, OvmfVariant
from dstack_mr.config import ImageInfo
from dstack_mr.errors import ConfigError, ImageError
from dstack_mr.evidence_files import read_collateral, verify_evidence
from dstack_mr.example import write_example_image
from dstack_mr.image import ImageFiles, image_variant
from dstack_mr.inspect_doc import inspect_measurement, inspect_snp_material
from dstack_mr.machine import MeasurementDetails
from dstack_mr.measurement_doc import build_document
from dstack_mr.measurement_text import events_json, measurement_json, measurement_text
from dstack_mr.report_text import render_verification
from dstack_mr.snp_attestation import parse_snp_attestation
from dstack_mr.snp_diagnose import diagnose_snp
from dstack_mr.snp_image import measure_snp_image, snp_image_dir
from dstack_mr.snp_text import render_snp, snp_measurement_json, snp_measurement_text
from dstack_mr.verify import verify

SNP_CAPTURE = "dstack-snp-0.6.0-attestation.json"
PAIR = "collateral/phala-20a06f-quote-collateral.json"


@pytest.fixture(scope="module")
def details(tmp_path_factory: pytest.TempPathFactory) -> MeasurementDetails:
    meta = write_example_image(tmp_path_factory.mktemp("img"))
    files = ImageFiles.from_metadata(meta)
    machine = Machine(
        cpu_count=2,
        memory_size=2 << 30,
        firmware=files.firmware,
        kernel=files.kernel,
        initrd=files.initrd,
        kernel_cmdline=files.cmdline,
    )
    return machine.measure_with_logs(AcpiTablesFile(meta.parent / "acpi-tables.bin"))


# --- measure ------------------------------------------------------------------------------------


def test_measurement_text_is_the_reference_block(details: MeasurementDetails) -> None:
    m = details.measurements
    assert measurement_text(details) == (
        f"Machine measurements:\nMRTD: {m.mrtd.hex()}\nRTMR0: {m.rtmr0.hex()}\n"
        f"RTMR1: {m.rtmr1.hex()}\nRTMR2: {m.rtmr2.hex()}"
    )
    lines = measurement_text(details, events=True).split("\n")
    assert lines[5] == f"ACPI tables from: {details.acpi_tables.source}"
    log0 = details.rtmr_logs[0]
    at = lines.index(f"RTMR0 events ({len(log0.events)}):")
    assert lines[at - 1] == ""
    first = log0.events[0]
    assert lines[at + 1] == f"  [ 0] {first.label:<22} {first.digest.hex()}"
    assert len(lines) == 6 + sum(2 + len(log.events) for log in details.rtmr_logs)


def test_measurement_json(details: MeasurementDetails) -> None:
    plain = measurement_json(details)
    assert plain == details.measurements.to_dict() and list(plain) == [
        "mrtd", "rtmr0", "rtmr1", "rtmr2"
    ]  # fmt: skip
    full = measurement_json(details, events=True)
    assert full["acpi_source"] == details.acpi_tables.source
    logs = events_json(details)
    assert full["rtmr_logs"] == logs and len(logs) == 3
    # Replaying the listed digests gives the registers: the JSON loses nothing.
    for log, register in zip(details.rtmr_logs, ("rtmr0", "rtmr1", "rtmr2"), strict=True):
        assert [bytes.fromhex(str(e["digest"])) for e in logs[log.rtmr]] == [
            e.digest for e in log.events
        ]
        assert log.value.hex() == plain[register]


def test_image_variant_rules() -> None:
    base = {"cmdline": "console=ttyS0", "kernel": "k", "initrd": "i", "bios": "b"}
    info = ImageInfo(**base, version="0.5.10")
    by_meta = image_variant(info)
    assert (by_meta.variant, by_meta.rule) == (
        OvmfVariant.STABLE202505, "metadata.json version 0.5.10"
    )  # fmt: skip
    # The seed's rule and upstream's disagree from 0.5.10: the note says so and how to choose.
    assert by_meta.note is not None and by_meta.note.startswith(
        "OVMF layout stable202505 from version 0.5.10 (the reference's rule); upstream"
    )
    assert by_meta.note.endswith("Pass --ovmf-variant to choose; a real event log shows which "
                                 "one the VM has.")  # fmt: skip
    forced = image_variant(info, forced=OvmfVariant.PRE202505, os_version="0.6.1")
    assert (forced.variant, forced.rule, forced.note) == (
        OvmfVariant.PRE202505, "--ovmf-variant", None
    )  # fmt: skip
    typed = image_variant(info, os_version="0.5.4")
    assert (typed.variant, typed.note) == (OvmfVariant.PRE202505, None)
    assert typed.rule == "--dstack-os-version 0.5.4"
    declared = ImageInfo(**base, version="0.6.1", ovmf_variant=OvmfVariant.PRE202505)
    assert image_variant(declared).rule == "metadata.json ovmf_variant"
    assert image_variant(ImageInfo(**base)).variant is OvmfVariant.PRE202505
    # A version that is not X.Y.Z is an error here, not silently the default.
    with pytest.raises(ConfigError):
        image_variant(ImageInfo(**base, version="0.6"))
    with pytest.raises(ConfigError):
        image_variant(ImageInfo(**base), os_version="latest")


# --- verify -------------------------------------------------------------------------------------


def test_render_verification_on_the_real_pair(real: Path) -> None:
    doc = json.loads((real / PAIR).read_text())
    coll, adjacent = read_collateral(real / PAIR)
    at = dt.datetime.fromisoformat(doc["verify_at"].replace("Z", "+00:00"))
    found = verify_evidence(adjacent_quote=adjacent, collateral=real / PAIR)
    result = verify(found.judged, coll, at=at)
    lines = render_verification(result, at_given=True).split("\n")
    assert lines[0].startswith("VALID: every check passed")
    assert lines[1] == f"time used: {doc['verify_at']} (--at)"
    assert lines[2].endswith(f".. {doc['valid_until']}")
    assert f"platform FMSPC: {result.details.fmspc}" in lines
    checks = lines.index("checks:")
    assert len(lines[checks + 1 :]) >= len(result.details.checks)
    assert lines[checks + 1].startswith(("  ok   ", "  --   "))
    # Without collateral nothing is signed: the verdict line says so, "now" is the time.
    unsigned = render_verification(verify(found.judged, None, at=at), at_given=False)
    assert unsigned.startswith("INVALID: ") and "(now)" in unsigned
    assert "collateral: none given" in unsigned


# --- SEV-SNP ------------------------------------------------------------------------------------


def test_render_snp_colours_only_when_asked(real: Path) -> None:
    att = parse_snp_attestation((real / SNP_CAPTURE).read_bytes(), "capture")
    assert att is not None
    report = diagnose_snp(att)
    plain = render_snp(report)
    assert "\x1b[" not in plain and plain.split("\n")[0] == report.headline
    assert "=== AMD SEV-SNP attestation ===" in plain and f"  verdict: {report.verdict}" in plain
    coloured = render_snp(report, color=True)
    assert coloured.split("\n")[0] == f"\x1b[32m{report.headline}\x1b[0m"
    assert coloured.replace("\x1b[32m", "").replace("\x1b[0m", "") == plain


def test_snp_image_measurement_and_its_text(real: Path, tmp_path: Path) -> None:
    att = parse_snp_attestation((real / SNP_CAPTURE).read_bytes(), "capture")
    assert att is not None and att.vm_config is not None
    doc = att.vm_config.measurement_document()
    image = tmp_path / "img"
    image.mkdir()
    (image / "measurement.snp.cbor").write_bytes(doc.measurement)
    (image / "sha256sum.txt").write_bytes(doc.checksum_file)
    launch = measure_snp_image(image, 2, "EPYC-v4", 1)
    assert launch.measurement.measurement == att.report.measurement
    assert launch.basis == "measurement.snp.cbor" and launch.notes == ()
    assert launch.os_image_hash == att.vm_config.os_image_hash
    text = snp_measurement_text(launch).split("\n")
    assert text[:3] == [
        "SEV-SNP launch measurement:",
        f"MEASUREMENT: {att.report.measurement.hex()}",
        "  from measurement.snp.cbor; vcpus=2 vcpu_type=EPYC-v4 guest_features=0x1",
    ]
    steps = snp_measurement_text(launch, steps=True).split("\n")
    assert f"stages ({len(launch.measurement.steps)}):" in steps
    out = snp_measurement_json(launch)
    assert out["measurement"] == att.report.measurement.hex() and "steps" not in out
    assert out["notes"] == [] and out["basis"] == "measurement.snp.cbor"
    assert len(snp_measurement_json(launch, steps=True)["steps"]) == len(launch.measurement.steps)
    # A sha256sum.txt that no longer lists the document is a note, not silence.
    (image / "sha256sum.txt").write_bytes(b"0" * 64 + b"  measurement.snp.cbor\n")
    noted = measure_snp_image(image, 2, "EPYC-v4", 1)
    assert noted.notes and noted.notes[0].startswith("image directory: ")
    with pytest.raises(ImageError, match=r"does not exist"):
        measure_snp_image(tmp_path / "nope", 2, "EPYC-v4", 1)


def test_snp_image_dir(tmp_path: Path, real: Path) -> None:
    att = parse_snp_attestation((real / SNP_CAPTURE).read_bytes(), "capture")
    assert att is not None and att.vm_config is not None
    assert snp_image_dir(att.vm_config) is None
    assert snp_image_dir(None, tmp_path / "x", tmp_path) == str(tmp_path / "x")
    name = att.vm_config.fields["image"]
    assert snp_image_dir(att.vm_config, None, tmp_path) == str(tmp_path / name)
    with pytest.raises(ConfigError, match=r"vm_config.image is empty"):
        snp_image_dir(None, None, tmp_path)


# --- inspect-measurement ------------------------------------------------------------------------


def test_inspect_measurement_tdx_and_snp(tmp_path: Path, real: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    doc = build_document(str(meta.parent))
    assert inspect_measurement(doc.to_cbor(), "m.cbor") == doc.to_dict()
    with pytest.raises(ConfigError, match=r"^x.json: the VmConfig has no tdx_measurement$"):
        inspect_measurement(b'{"memory_size": 1}', "x.json")
    att = parse_snp_attestation((real / SNP_CAPTURE).read_bytes(), "capture")
    assert att is not None and att.vm_config is not None
    snp_doc = att.vm_config.measurement_document()
    shown = inspect_measurement(snp_doc.measurement, "m.snp.cbor")
    assert shown == snp_doc.image.to_dict()
    # TDX material is not SNP material: None hands it on to the TDX reader.
    assert inspect_snp_material(doc.to_cbor()) is None
    assert inspect_snp_material(b'{"memory_size": 1}') is None
    raw = snp_attestation_bytes(snp_report(bytes(48), bytes(32)), "", "")
    assert inspect_snp_material(raw) is None
