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
