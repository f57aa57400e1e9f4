"""diagnose in lite mode: the VM's own measurement document, no image directory, no QEMU."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_attestation_shapes import lite_scale
from typer.testing import CliRunner

from dstack_mr import cbor
from dstack_mr.measurement_doc import TdHobWitness
from dstack_mr_cli.main import app

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "diagnose.schema.json").read_text())
RUN = CliRunner()


def capture(real: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((real / "dstack-0.6.0-getquote.json").read_text())
    return doc


def write(tmp_path: Path, doc: dict[str, Any], vm: dict[str, Any] | None = None) -> Path:
    if vm is not None:
        doc = {**doc, "vm_config": json.dumps(vm)}
    path = tmp_path / "getquote.json"
    path.write_text(json.dumps(doc))
    return path


def diagnose(*args: str) -> Any:
    return RUN.invoke(app, ["diagnose", *args])


def test_real_capture_matches_in_lite_mode(real: Path) -> None:
    path = real / "dstack-0.6.0-getquote.json"
    result = diagnose("--attestation", str(path))
    assert result.exit_code == 0, result.output
    head = result.output.splitlines()[0]
    assert head.startswith("MATCH: MRTD, RTMR0, RTMR1, RTMR2 equal the expected values (quote)")
    assert "the ACPI digests were taken from the log, not verified" in head
    assert "lite mode: vm_config.tdx_measurement checks out" in result.output
    as_json = diagnose("--attestation", str(path), "--json")
    assert as_json.exit_code == 0
    doc = json.loads(as_json.output)
    jsonschema.validate(doc, SCHEMA)
    assert doc["result"] == "match"
    assert doc["acpi_source"]["kind"] == "log" and doc["acpi_source"]["verified"] is False
    assert [c["status"] for c in doc["comparison"]] == ["match"] * 4
    assert [e["status"] for e in doc["events"] if e["rtmr"] == 0].count("unverified") == 3


def test_scale_lite_log_matches_by_register(real: Path, tmp_path: Path) -> None:
    raw, _ = lite_scale(real)
    path = tmp_path / "attestation.bin"
    path.write_bytes(raw)
    result = diagnose("--attestation", str(path))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("MATCH: MRTD, RTMR0, RTMR1, RTMR2")
    assert "lite log" in result.output
    hexed = tmp_path / "attestation.json"
    hexed.write_text(json.dumps({"attestation": raw.hex()}))
    assert diagnose("--attestation", str(hexed)).exit_code == 0


def _vm(real: Path) -> dict[str, Any]:
    vm: dict[str, Any] = json.loads(capture(real)["vm_config"])
    return vm


def _flip_b64(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def _rechained(vm: dict[str, Any], edit: Any) -> dict[str, Any]:
    tree = cbor.decode(base64.b64decode(vm["tdx_measurement"]["measurement"]))
    edit(tree)
    doc = cbor.encode(tree)
    sums = f"{hashlib.sha256(doc).hexdigest()}  measurement.tdx.cbor\n".encode()
    return {
        **vm,
        "os_image_hash": hashlib.sha256(sums).hexdigest(),
        "tdx_measurement": {
            "checksum_file": base64.b64encode(sums).decode(),
            "measurement": base64.b64encode(doc).decode(),
        },
    }


def _tampered(real: Path, kind: str) -> tuple[dict[str, Any], str]:
    vm = _vm(real)
    tm = vm["tdx_measurement"]
    if kind == "checksum_file":
        return {
            **vm,
            "tdx_measurement": {**tm, "checksum_file": _flip_b64(tm["checksum_file"], 5)},
        }, "does not belong to this image"
    if kind == "document":
        return {
            **vm,
            "tdx_measurement": {**tm, "measurement": _flip_b64(tm["measurement"], 200)},
        }, "is not the image's measurement.tdx.cbor"
    if kind == "os_image_hash":
        h = bytearray(bytes.fromhex(vm["os_image_hash"]))
        h[0] ^= 0x80
        return {**vm, "os_image_hash": h.hex()}, "does not belong to this image"
    if kind == "version-2":
        return _rechained(vm, lambda t: t.update(version=2)), "unsupported version 2"
    overlapping = TdHobWitness(0x800, 0x809, ((0x800, 6), (0x805, 2), (0x809, 2))).encode()
    return _rechained(vm, lambda t: t["tdvf"].update(td_hob=overlapping)), "overlaps"


@pytest.mark.parametrize(
    "kind", ["checksum_file", "document", "os_image_hash", "version-2", "overlapping-witness"]
)
def test_tampering_is_a_clear_error_never_a_match(real: Path, tmp_path: Path, kind: str) -> None:
    vm, message = _tampered(real, kind)
    result = diagnose("--attestation", str(write(tmp_path, capture(real), vm)))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert "MATCH" not in result.output


def test_a_wrong_register_is_a_mismatch(real: Path) -> None:
    path = real / "dstack-0.6.0-getquote.json"
    result = diagnose("--attestation", str(path), "--actual-rtmr2", "00" * 48)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("MISMATCH: RTMR2")


def test_other_page_add_order_is_proven(real: Path, tmp_path: Path) -> None:
    vm = {**_vm(real), "qemu_version": "9.1.0"}
    result = diagnose("--attestation", str(write(tmp_path, capture(real), vm)))
    assert result.exit_code == 1
    assert "other page-add order" in result.output and "[proven]" in result.output


def test_without_document_or_image_dir(real: Path, tmp_path: Path) -> None:
    vm = {k: v for k, v in _vm(real).items() if k != "tdx_measurement"}
    result = diagnose("--attestation", str(write(tmp_path, capture(real), vm)))
    assert result.exit_code == 2
    assert "either --image-dir or --image-base-dir must be given" in result.output
    assert "tdx_measurement, for lite mode" in result.output


def test_memory_outside_the_lite_gate(real: Path, tmp_path: Path) -> None:
    vm = {**_vm(real), "memory_size": 1 << 30}
    result = diagnose("--attestation", str(write(tmp_path, capture(real), vm)))
    assert result.exit_code == 2 and "lite verification needs exactly 2 GiB" in result.output


def test_modes_page_shows_the_current_lite_report(real: Path) -> None:
    page = (ROOT / "docs" / "modes.md").read_text()
    result = diagnose("--attestation", str(real / "dstack-0.6.0-getquote.json"))
    first, _, second = result.output.splitlines()[:3]
    assert first in page and second in page


def test_with_an_image_dir_the_legacy_path_cross_checks_the_document(
    real: Path, tmp_path: Path
) -> None:
    from dstack_mr.example import write_example_image

    meta = write_example_image(tmp_path / "img")
    result = diagnose(
        "--attestation",
        str(real / "dstack-0.6.0-getquote.json"),
        "--image-dir",
        str(meta.parent),
        "--acpi-tables",
        str(meta.parent / "acpi-tables.bin"),
        "--json",
    )
    doc = json.loads(result.output)
    assert doc["inputs"]["image_dir"] == str(meta.parent)
    assert doc["acpi_source"]["kind"] == "file"
    # The example image is not the VM's declared image: its document says so part by part.
    assert doc["declared_measurement"]["image_differ"]
    assert result.exit_code == 1


def test_acpi_sources_need_the_image_dir(real: Path) -> None:
    path = str(real / "dstack-0.6.0-getquote.json")
    for extra in (["--acpi-tables", path], ["--acpi-source", "dumper"]):
        result = diagnose("--attestation", path, *extra)
        assert result.exit_code == 2 and "needs the image directory" in result.output, extra
    assert diagnose("--attestation", path, "--acpi-source", "log").exit_code == 0


def test_builtin_acpi_verifies_the_real_capture_without_image_or_qemu(real: Path) -> None:
    """The built-in ACPI model computes the 0.6.0 capture's three ACPI digests from its
    vm_config alone, so lite mode verifies RTMR0 whole instead of taking them from the log."""
    from dstack_mr import VmConfig
    from dstack_mr.lite import builtin_acpi_tables

    doc = capture(real)
    log = json.loads(doc["event_log"])
    logged = [bytes.fromhex(e["digest"]) for e in log if e["imr"] == 0 and e["event_type"] == 10]
    tables = builtin_acpi_tables(VmConfig.from_json(doc["vm_config"]))
    assert [tables.loader_digest, tables.rsdp_digest, tables.tables_digest] == logged
    assert tables.source == "builtin"

    path = str(real / "dstack-0.6.0-getquote.json")
    result = diagnose("--attestation", path, "--acpi-source", "builtin", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    jsonschema.validate(report, SCHEMA)
    assert report["result"] == "match"
    assert report["acpi_source"]["kind"] == "builtin" and report["acpi_source"]["verified"]
    rtmr0 = [e for e in report["events"] if e["rtmr"] == 0]
    assert [e["status"] for e in rtmr0] == ["match"] * 13
    text = diagnose("--attestation", path, "--acpi-source", "builtin").output
    assert text.splitlines()[0] == (
        "MATCH: MRTD, RTMR0, RTMR1, RTMR2 equal the expected values (quote)"
    )
    assert "not verified" not in text.splitlines()[0]


def test_builtin_acpi_catches_what_the_log_cannot(real: Path, tmp_path: Path) -> None:
    """A vm_config claiming 4 vCPUs: the log's own ACPI digests hide it (MATCH), the tables
    computed for the claim do not (RTMR0's three ACPI events differ)."""
    doc = capture(real)
    vm = {**json.loads(doc["vm_config"]), "cpu_count": 4}
    path = str(write(tmp_path, doc, vm))
    assert diagnose("--attestation", path).exit_code == 0
    result = diagnose("--attestation", path, "--acpi-source", "builtin", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["result"] == "mismatch"
    status = {c["register"]: c["status"] for c in report["comparison"]}
    assert status == {"MRTD": "match", "RTMR0": "mismatch", "RTMR1": "match", "RTMR2": "match"}
    differ = [e["label"] for e in report["events"] if e["rtmr"] == 0 and e["status"] != "match"]
    assert differ == ["acpi_loader", "acpi_rsdp", "acpi_tables"]
    # The model's search proves the real vCPU count from the VM's own ACPI digests.
    head = diagnose("--attestation", path, "--acpi-source", "builtin").output.splitlines()[0]
    assert head == (
        "MISMATCH: RTMR0 — acpi: the VM's ACPI tables are those of cpu_count=2 (vm_config says "
        "cpu_count=4): the built-in model reproduces all three of its logged ACPI digests with "
        "it [proven]"
    )


def test_builtin_acpi_refuses_what_the_model_does_not_cover(real: Path, tmp_path: Path) -> None:
    doc = capture(real)
    vm = {**json.loads(doc["vm_config"]), "qemu_version": "10.0.0"}
    path = str(write(tmp_path, doc, vm))
    result = diagnose("--attestation", path, "--acpi-source", "builtin")
    assert result.exit_code == 2
    assert "10.0" in result.output
