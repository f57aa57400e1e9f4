"""Lite verification: measurement documents, their integrity chain, and the real 0.6.0 VM."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import load_vectors, shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from dstack_mr import AcpiTablesFile, ConfigError, Machine, VmConfig, cbor
from dstack_mr.acpi import build_tables
from dstack_mr.attestation import parse_attestation
from dstack_mr.config import OvmfVariant, TdxMeasurementMaterial
from dstack_mr.errors import EvidenceError, ImageError, MeasurementDocumentError
from dstack_mr.eventlog import Event
from dstack_mr.lite import (
    lite_acpi_digests_from_log,
    measure_from_document,
    measure_lite,
)
from dstack_mr.measurement_doc import (
    MeasurementDocument,
    TdHobWitness,
    build_document,
    lite_memory_supported,
    sha256sum_entry,
    verify_material,
)
from dstack_mr.tdvf import parse as parse_tdvf


def capture(real: Path) -> tuple[VmConfig, Any]:
    att = parse_attestation((real / "dstack-0.6.0-getquote.json").read_text())
    assert att.vm_config is not None and att.quote is not None
    return VmConfig.from_dict(att.vm_config), att


def chain(doc_bytes: bytes) -> tuple[TdxMeasurementMaterial, bytes]:
    """Material whose chain is intact around ``doc_bytes``, and its os_image_hash."""
    checksum = f"{hashlib.sha256(doc_bytes).hexdigest()}  measurement.tdx.cbor\n".encode()
    return TdxMeasurementMaterial(checksum, doc_bytes), hashlib.sha256(checksum).digest()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# --- the real 0.6.0 capture -----------------------------------------------------------------


def test_real_capture_verifies_in_lite_mode(real: Path) -> None:
    vm, att = capture(real)
    details = measure_lite(vm, att.events)
    q = att.quote
    assert details.measurements.mrtd == q.mrtd
    assert details.measurements.rtmr0 == q.rtmr[0]
    assert details.measurements.rtmr1 == q.rtmr[1]
    assert details.measurements.rtmr2 == q.rtmr[2]
    assert details.mode == "lite" and details.acpi_from_log and details.invocation is None
    labels = {e.label: e.varies_with for e in details.rtmr_logs[0].events}
    assert all(
        "taken from the event log" in labels[k] for k in ("acpi_loader", "acpi_rsdp", "acpi_tables")
    )
    assert "taken from" not in labels["td_hob"]
    # Every expected event equals the log's, in order (the capture's README: TD HOB 0b8772e5...).
    for log in details.rtmr_logs:
        actual = [e.digest for e in att.events if e.imr == log.rtmr]
        assert log.digests == actual
    assert details.rtmr_logs[0].events[0].digest.hex().startswith("0b8772e5")


def test_real_document_decodes(real: Path) -> None:
    vm, _ = capture(real)
    assert vm.tdx_measurement is not None
    doc = verify_material(vm.tdx_measurement, vm.os_image_hash)
    assert doc.to_cbor() == vm.tdx_measurement.measurement
    w = doc.witness
    assert w.to_dict()["ranges"] == [
        {"start": "0x800000", "size": "0x6000"},
        {"start": "0x809000", "size": "0x2000"},
        {"start": "0x80b000", "size": "0x2000"},
        {"start": "0x810000", "size": "0x10000"},
    ]
    assert w.td_hob_page * 4096 == 0x809000
    assert doc.to_dict()["tdvf"]["mrtd"]["two_pass"].startswith("fd685522")


def test_single_pass_mrtd_for_qemu9(real: Path) -> None:
    vm, att = capture(real)
    assert vm.tdx_measurement is not None
    doc = verify_material(vm.tdx_measurement, vm.os_image_hash)
    acpi = lite_acpi_digests_from_log(att.events)
    assert (
        measure_from_document(doc, attrs.evolve(vm, qemu_version="9.1.0"), acpi).measurements.mrtd
        == doc.mrtd_single_pass
    )
    forced = attrs.evolve(vm, qemu_version="9.1.0", qemu_single_pass_add_pages=True)
    assert measure_from_document(doc, forced, acpi).measurements.mrtd == doc.mrtd_two_pass


# --- tampering: each a clear error, never a match ---------------------------------------------


def test_flipped_checksum_file(real: Path) -> None:
    vm, att = capture(real)
    assert vm.tdx_measurement is not None
    for at in (0, 10, len(vm.tdx_measurement.checksum_file) - 1):
        bad = attrs.evolve(
            vm.tdx_measurement, checksum_file=flip(vm.tdx_measurement.checksum_file, at)
        )
        with pytest.raises(MeasurementDocumentError, match="does not belong to this image"):
            measure_lite(attrs.evolve(vm, tdx_measurement=bad), att.events)


def test_flipped_document_byte(real: Path) -> None:
    vm, att = capture(real)
    assert vm.tdx_measurement is not None
    for at in (0, 100, len(vm.tdx_measurement.measurement) - 1):
        bad = attrs.evolve(vm.tdx_measurement, measurement=flip(vm.tdx_measurement.measurement, at))
        with pytest.raises(
            MeasurementDocumentError, match=r"is not the image's measurement\.tdx\.cbor"
        ):
            measure_lite(attrs.evolve(vm, tdx_measurement=bad), att.events)


def test_flipped_os_image_hash(real: Path) -> None:
    vm, att = capture(real)
    with pytest.raises(MeasurementDocumentError, match="does not belong to this image"):
        measure_lite(attrs.evolve(vm, os_image_hash=flip(vm.os_image_hash, 31)), att.events)
    with pytest.raises(MeasurementDocumentError, match="os_image_hash is empty"):
        measure_lite(attrs.evolve(vm, os_image_hash=b""), att.events)


def _redo(real: Path, edit: Any) -> tuple[VmConfig, Any]:
    """The capture's document re-encoded after ``edit`` (on the decoded CBOR), chain fixed."""
    vm, att = capture(real)
    assert vm.tdx_measurement is not None
    tree = cbor.decode(vm.tdx_measurement.measurement)
    edit(tree)
    material, image_hash = chain(cbor.encode(tree))
    return attrs.evolve(vm, tdx_measurement=material, os_image_hash=image_hash), att


def test_version_2_document_is_rejected(real: Path) -> None:
    vm, att = _redo(real, lambda t: t.update(version=2))
    with pytest.raises(MeasurementDocumentError, match="unsupported version 2"):
        measure_lite(vm, att.events)


def test_overlapping_witness_is_rejected(real: Path) -> None:
    overlapping = TdHobWitness(0x800, 0x809, ((0x800, 6), (0x805, 2), (0x809, 2)))
    vm, att = _redo(real, lambda t: t["tdvf"].update(td_hob=overlapping.encode()))
    with pytest.raises(MeasurementDocumentError, match="overlaps"):
        measure_lite(vm, att.events)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["tdvf"].update(ovmf="stable202505"), "only the 'pre202505' layout"),
        (lambda t: t["image"].update(initrd_sha384=b"x" * 47), "expected 48 bytes"),
        (lambda t: t["image"].pop("kernel_authenticode"), "missing field"),
        (lambda t: t.update(extra=1), "unknown field"),
        (lambda t: t["tdvf"].update(td_hob=b"\x80"), "truncated"),
        (lambda t: t["tdvf"].update(td_hob=b"\x80\x10\x09\x01\x00\x06\x00"), "trailing"),
        (
            lambda t: t["tdvf"].update(td_hob=b"\x80\x10\x05\x01\x00\x06"),
            "not the start of any range",
        ),
        (lambda t: t["tdvf"].update(td_hob=b"\x80\x10\x00\x01\x00\x00"), "empty"),
        (lambda t: t["tdvf"].update(td_hob=b"\x80\x10\x00\x01\x01\x06"), "base_page is not"),
        (
            lambda t: t["tdvf"].update(td_hob=b"\x80\x90\x00\x00\x01\x00\x06"),
            "not minimally encoded",
        ),
        (lambda t: t["tdvf"]["mrtd"].update(two_pass="ab"), "expected a byte string"),
    ],
)
def test_malformed_documents(real: Path, edit: Any, message: str) -> None:
    vm, att = _redo(real, edit)
    with pytest.raises(MeasurementDocumentError, match=message):
        measure_lite(vm, att.events)


def test_vm_config_variant_must_agree(real: Path) -> None:
    vm, att = capture(real)
    with pytest.raises(MeasurementDocumentError, match="ovmf_variant"):
        measure_lite(attrs.evolve(vm, ovmf_variant=OvmfVariant.STABLE202505), att.events)


@pytest.mark.parametrize(
    ("size", "ok"),
    [
        (2 << 30, True),
        (0xB000_0000, True),
        (64 << 30, True),
        (1 << 30, False),
        ((2 << 30) + (1 << 20), False),
        (0xAFF0_0000, False),
    ],
)
def test_memory_gate(real: Path, size: int, ok: bool) -> None:
    assert lite_memory_supported(size) is ok
    vm, att = capture(real)
    vm = attrs.evolve(vm, memory_size=size)
    if ok:
        assert measure_lite(vm, att.events).measurements.rtmr1 == att.quote.rtmr[1]
    else:
        with pytest.raises(ConfigError, match="lite verification needs exactly 2 GiB"):
            measure_lite(vm, att.events)


def test_no_document() -> None:
    with pytest.raises(ConfigError, match="no tdx_measurement"):
        measure_lite(VmConfig(), ())


def _acpi(name: str, digest: bytes = b"\x01" * 48, payload: bytes = b"ACPI DATA") -> Event:
    return Event(0, 0xA, digest, name, payload)


def test_acpi_digests_chosen_by_name() -> None:
    events = [
        _acpi("acpi-tables", b"\x03" * 48),
        _acpi("acpi-loader", b"\x01" * 48),
        _acpi("acpi-rsdp", b"\x02" * 48),
    ]
    d = lite_acpi_digests_from_log(events)
    assert (d.loader_digest[0], d.rsdp_digest[0], d.tables_digest[0]) == (1, 2, 3)
    with pytest.raises(EvidenceError, match="exactly 3"):
        lite_acpi_digests_from_log(events[:2])
    with pytest.raises(EvidenceError, match="named 'acpi-rsdp'"):
        lite_acpi_digests_from_log([*events[:2], _acpi("")])
    with pytest.raises(EvidenceError, match="exactly 3"):
        lite_acpi_digests_from_log([*events[:2], _acpi("acpi-rsdp", payload=b"")])
    with pytest.raises(EvidenceError, match="47-byte digest"):
        lite_acpi_digests_from_log([*events[:2], _acpi("acpi-rsdp", b"\x02" * 47)])


# --- sha256sum.txt --------------------------------------------------------------------------


def test_sha256sum_entry_rules() -> None:
    h = "ab" * 32
    assert sha256sum_entry(
        f"\n  {h}  measurement.tdx.cbor  \nff  other\n".encode(), "measurement.tdx.cbor"
    ) == bytes.fromhex(h)
    for text, message in [
        (f"{h}  x.cbor\n", "no line for"),
        (f"{h}  measurement.tdx.cbor\n{h}  measurement.tdx.cbor\n", "more than once"),
        (f"{h[:-2]}  measurement.tdx.cbor\n", "not a SHA-256"),
        (f"{h} *measurement.tdx.cbor\n", "no line for"),
        (f"{h}\n", "no file name"),
    ]:
        with pytest.raises(MeasurementDocumentError, match=message):
            sha256sum_entry(text.encode(), "measurement.tdx.cbor")
    with pytest.raises(MeasurementDocumentError, match="not UTF-8"):
        sha256sum_entry(b"\xff", "measurement.tdx.cbor")


# --- witnesses and random input -------------------------------------------------------------


@settings(max_examples=400)
@given(st.binary(max_size=40))
def test_random_witnesses_raise_only_document_errors(data: bytes) -> None:
    try:
        w = TdHobWitness.decode(data)
    except MeasurementDocumentError:
        return
    assert w.encode() == data
    w.td_hob_digest(2 << 30)


@settings(max_examples=300)
@given(st.binary(max_size=500))
def test_random_documents_raise_only_document_errors(data: bytes) -> None:
    with pytest.raises(MeasurementDocumentError):
        MeasurementDocument.from_cbor(data)


@pytest.mark.parametrize("fw", ["ovmf-2022.11-deb12.fd", "ovmf-2025.02-deb13.fd"])
def test_witness_td_hob_equals_the_firmware_sections(fw: str) -> None:
    tdvf = parse_tdvf(shared_path("inputs", fw).read_bytes())
    w = TdHobWitness.decode(TdHobWitness.from_tdvf(tdvf).encode())
    for size in (2 << 30, 0xB000_0000, 3 << 30, 64 << 30, 1 << 30, 768 << 20):
        assert w.td_hob_digest(size) == tdvf.td_hob_digest(size), hex(size)


# --- the build side against Machine -----------------------------------------------------------


def image_from_vector(tmp_path: Path, name: str) -> tuple[Path, dict[str, Any]]:
    inputs = shared_path("inputs")
    vector = next(v for v in load_vectors() if v["name"] == name)
    d = tmp_path / name
    d.mkdir()
    for key in ("firmware", "kernel", "initrd"):
        shutil.copy(inputs / vector["inputs"][key], d / vector["inputs"][key])
    meta = {
        "bios": vector["inputs"]["firmware"],
        "kernel": vector["inputs"]["kernel"],
        "initrd": vector["inputs"]["initrd"],
        "cmdline": vector["cmdline"].removesuffix(" initrd=initrd"),
    }
    (d / "metadata.json").write_text(json.dumps(meta))
    return d, vector


@pytest.mark.parametrize("memory", [2 << 30, 0xB000_0000, 4 << 30])
@pytest.mark.parametrize("qemu", ["8.2.2", "9.1.0"])
def test_built_document_reproduces_machine(tmp_path: Path, memory: int, qemu: str) -> None:
    d, vector = image_from_vector(tmp_path, "default-2cpu-2g")
    doc = build_document(str(d))
    assert MeasurementDocument.from_cbor(doc.to_cbor()) == doc
    meta = json.loads((d / "metadata.json").read_text())
    machine = Machine(
        cpu_count=2,
        memory_size=memory,
        firmware=str(d / meta["bios"]),
        kernel=str(d / meta["kernel"]),
        initrd=str(d / meta["initrd"]),
        kernel_cmdline=vector["cmdline"],
        qemu_version=qemu,
    )
    tables = shared_path("inputs", vector["inputs"]["acpi_tables"])
    full = machine.measure_with_logs(AcpiTablesFile(tables))
    vm = VmConfig(cpu_count=2, memory_size=memory, qemu_version=qemu)
    lite = measure_from_document(doc, vm, build_tables(tables.read_bytes()))
    assert lite.measurements == full.measurements
    assert [log.digests for log in lite.rtmr_logs] == [log.digests for log in full.rtmr_logs]
    # The builder's digests are the Machine's, event by event.
    assert doc.cmdline_sha384 == full.rtmr_logs[2].digests[0]
    assert doc.initrd_sha384 == full.rtmr_logs[2].digests[1]
    assert doc.kernel_authenticode == full.rtmr_logs[1].digests[0]


def test_builder_refuses_stable202505_metadata(tmp_path: Path) -> None:
    d, _ = image_from_vector(tmp_path, "default-2cpu-2g")
    meta = json.loads((d / "metadata.json").read_text())
    (d / "metadata.json").write_text(json.dumps({**meta, "ovmf_variant": "stable202505"}))
    with pytest.raises(MeasurementDocumentError, match="only the 'pre202505'"):
        build_document(str(d))
    (d / "metadata.json").write_text(json.dumps({**meta, "cmdline": " "}))
    with pytest.raises(MeasurementDocumentError, match="no cmdline"):
        build_document(str(d))


# --- CLI ------------------------------------------------------------------------------------


def test_cli_measurement_doc_and_inspect(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dstack_mr_cli.main import app

    run = CliRunner()
    d, _ = image_from_vector(tmp_path, "default-2cpu-2g")
    out = tmp_path / "m.cbor"
    result = run.invoke(app, ["measurement-doc", str(d), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == build_document(str(d)).to_cbor()
    as_json = run.invoke(app, ["measurement-doc", str(d), "--json"])
    assert json.loads(as_json.output)["tdvf"]["ovmf"] == "pre202505"
    shown = run.invoke(app, ["inspect-measurement", str(out)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == json.loads(as_json.output)
    out.write_bytes(out.read_bytes()[:-1])
    bad = run.invoke(app, ["inspect-measurement", str(out)])
    assert bad.exit_code == 2 and bad.output.startswith("error: measurement.tdx.cbor: ")
    missing = run.invoke(app, ["measurement-doc", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_cli_inspect_vm_config_checks_the_chain(real: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dstack_mr_cli.main import app

    cap = json.loads((real / "dstack-0.6.0-getquote.json").read_text())
    cfg = tmp_path / "vm.json"
    cfg.write_text(cap["vm_config"])
    result = CliRunner().invoke(app, ["inspect-measurement", str(cfg)])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["integrity"].startswith("sha256sum.txt and os_image_hash check out")
    assert shown["image"]["kernel_authenticode"].startswith("ac7e632d")
    vm = json.loads(cap["vm_config"])
    vm["os_image_hash"] = "00" * 32
    cfg.write_text(json.dumps(vm))
    bad = CliRunner().invoke(app, ["inspect-measurement", str(cfg)])
    assert bad.exit_code == 2 and "does not belong to this image" in bad.output


def test_modes_page_output_is_current(real: Path, tmp_path: Path) -> None:
    from dstack_mr.example import write_example_image

    page = (Path(__file__).resolve().parent.parent / "docs" / "modes.md").read_text()
    vm, att = capture(real)
    details = measure_lite(vm, att.events)
    assert str(details.measurements.to_dict()) in page
    meta = write_example_image(tmp_path / "example-image")
    machine_out = Machine(
        cpu_count=2,
        memory_size=2 << 30,
        firmware=str(meta.parent / "ovmf.fd"),
        kernel=str(meta.parent / "bzImage"),
        initrd=str(meta.parent / "initramfs.cpio.gz"),
        kernel_cmdline=json.loads(meta.read_text())["cmdline"] + " initrd=initrd",
    ).measure(AcpiTablesFile(meta.parent / "acpi-tables.bin"))
    for name, value in machine_out.to_dict().items():
        assert f"{name.upper()}: {value}" in page


def test_cross_check_against_an_image_dir(tmp_path: Path) -> None:
    from dstack_mr.lite import cross_check_image

    d, _ = image_from_vector(tmp_path, "default-2cpu-2g")
    doc = build_document(str(d))
    material, image_hash = chain(doc.to_cbor())
    vm = VmConfig(memory_size=2 << 30, os_image_hash=image_hash, tdx_measurement=material)
    same = cross_check_image(doc, vm, str(d))
    assert same.same_image and same.differing == () and same.image_hash_matches is None
    (d / "sha256sum.txt").write_bytes(material.checksum_file)
    assert cross_check_image(doc, vm, str(d)).image_hash_matches is True
    other = attrs.evolve(doc, initrd_sha384=bytes(48))
    diff = cross_check_image(other, attrs.evolve(vm, os_image_hash=bytes(32)), str(d))
    assert diff.differing == ("initrd_sha384",) and diff.image_hash_matches is False
    assert not diff.same_image
    # A checksum list over 1 MiB is no image's: refused, never hashed in part nor skipped.
    big = material.checksum_file + b"\n" * (1 << 20)
    (d / "sha256sum.txt").write_bytes(big)
    first_mib = attrs.evolve(vm, os_image_hash=hashlib.sha256(big[: 1 << 20]).digest())
    with pytest.raises(ImageError, match=r"image checksum file .*sha256sum.txt is more than"):
        cross_check_image(doc, first_mib, str(d))
