"""Small API contracts: JSON objects accepted as configs, readable reprs, truncated kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dstack_mr import AcpiTablesFile, ConfigError, ImageError, Machine, VmConfig, events, kernel
from dstack_mr.config import ImageInfo
from dstack_mr.diagnose import diagnose
from dstack_mr.example import build_kernel, write_example_image
from dstack_mr.image import Image, machine_for
from dstack_mr.measurement_doc import build_document, build_document_with_warnings
from dstack_mr_cli.main import app

GIB = 1 << 30


def test_from_json_takes_a_parsed_object() -> None:
    doc = {"cpu_count": 2, "memory_size": 2 * GIB, "pic": True}
    assert VmConfig.from_json(doc) == VmConfig.from_json(json.dumps(doc))
    assert VmConfig.from_json(doc) == VmConfig(cpu_count=2, memory_size=2 * GIB, pic=True)
    # The same strictness as for text: a string is not a number.
    with pytest.raises(ConfigError, match="cpu_count"):
        VmConfig.from_json({"cpu_count": "2"})
    info = {"cmdline": "c", "kernel": "k", "initrd": "i", "bios": "b"}
    assert ImageInfo.from_json(info) == ImageInfo.from_json(json.dumps(info))


@pytest.mark.parametrize("value", [[], [{"cpu_count": 2}], 42, None, 2.5])
def test_from_json_refuses_what_is_no_object_nor_text(value: object) -> None:
    with pytest.raises(ConfigError, match=r"VmConfig: expected a JSON object .* or its text"):
        VmConfig.from_json(value)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match=r"image metadata: expected a JSON object"):
        ImageInfo.from_json(value)  # type: ignore[arg-type]
    # Text of a non-object is refused as before, naming what it got.
    with pytest.raises(ConfigError, match="VmConfig: expected a JSON object, got list"):
        VmConfig.from_json("[]")


def test_reprs_say_what_matters(example: Path) -> None:
    image = Image.load(example.parent, AcpiTablesFile(example.parent / "acpi-tables.bin"))
    before = repr(image)
    assert before.startswith(f"<Image {str(example.parent)!r}") and "0 MRTD" in before
    vm = VmConfig(cpu_count=2, memory_size=2 * GIB)
    image.measure(vm)
    after = repr(image)
    assert "1 MRTD" in after and "1/64 kernel digests" in after and "1/64 blobs" in after

    machine = machine_for(vm, image.files)
    text = repr(machine)
    assert text.startswith("Machine(cpu_count=2, memory_size=2147483648, firmware=")
    assert "smm=" not in text and "ovmf_variant" not in text  # defaults are left out
    smm = Machine(**{**{k: getattr(machine, k) for k in ("cpu_count", "memory_size",
                  "firmware", "kernel", "initrd", "kernel_cmdline")}, "smm": True})  # fmt: skip
    assert repr(smm).endswith(", smm=True)")


def truncated_kernel(example: Path) -> tuple[bytes, int]:
    whole = build_kernel()
    end = kernel.pe_layout(whole, len(whole)).data_end
    assert end <= len(whole)
    cut = whole[: end - 5000]  # after the headers, inside the last sections
    (example.parent / "bzImage").write_bytes(cut)
    return cut, end


def test_truncated_kernel_keeps_the_digest_and_is_reported(example: Path) -> None:
    assert kernel.truncation_warning(build_kernel()) is None
    cut, end = truncated_kernel(example)
    warning = kernel.truncation_warning(cut)
    assert warning is not None
    assert f"kernel is {len(cut)} bytes" in warning and f"describes {end} bytes" in warning
    assert f"({end - len(cut)} bytes missing)" in warning

    acpi = AcpiTablesFile(example.parent / "acpi-tables.bin")
    image = Image.load(example.parent, acpi)
    vm = VmConfig(cpu_count=2, memory_size=2 * GIB)
    details = image.measure(vm)
    assert details.warnings == (warning,)
    assert details == image.machine(vm).measure_with_logs(acpi)
    # The reference's digest: the bytes that are there, the section sizes as declared.
    (rtmr1_first, *_) = details.rtmr_logs[1]
    assert rtmr1_first.label == events.KERNEL_AUTHENTICODE
    assert rtmr1_first.digest == kernel.patched_kernel_digest(
        cut, image.initrd_size, vm.memory_size
    )


def test_truncated_kernel_warns_on_stderr(example: Path) -> None:
    cut, end = truncated_kernel(example)
    args = ["measure", "-c", "2", "--acpi-tables", str(example.parent / "acpi-tables.bin")]
    result = CliRunner().invoke(app, [*args, "--json", str(example)])
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # stdout stays pure JSON
    (line,) = result.stderr.splitlines()
    assert line.startswith("warning: kernel is") and f"({end - len(cut)} bytes missing)" in line
    whole = CliRunner().invoke(app, [*args, str(write_example_image(example.parent / "w"))])
    assert whole.exit_code == 0 and whole.stderr == ""


def test_truncated_kernel_warning_is_in_measure_json(example: Path) -> None:
    """A JSON reader never sees stderr: the warning is in the result, and only then."""
    cut, _ = truncated_kernel(example)
    warning = kernel.truncation_warning(cut)
    args = ["measure", "-c", "2", "--acpi-tables", str(example.parent / "acpi-tables.bin")]
    for extra in ([], ["--events"]):
        result = CliRunner().invoke(app, [*args, *extra, "--json", str(example)])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["warnings"] == [warning]
    whole = write_example_image(example.parent / "w")
    doc = json.loads(CliRunner().invoke(app, [*args, "--json", str(whole)]).stdout)
    assert list(doc) == ["mrtd", "rtmr0", "rtmr1", "rtmr2"]  # the reference's shape


def test_truncated_kernel_is_reported_by_measurement_doc(example: Path) -> None:
    """The warning goes to stderr; the document is what the image measures to, unchanged."""
    cut, _ = truncated_kernel(example)
    warning = kernel.truncation_warning(cut)
    built = build_document_with_warnings(str(example.parent))
    assert built.warnings == (warning,)
    assert built.document == build_document(str(example.parent))
    out = example.parent / "m.cbor"
    result = CliRunner().invoke(app, ["measurement-doc", str(example.parent), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"warning: {warning}"]
    assert out.read_bytes() == built.document.to_cbor()
    result = CliRunner().invoke(app, ["measurement-doc", str(example.parent), "--json"])
    assert json.loads(result.stdout) == built.document.to_dict()
    assert result.stderr.splitlines() == [f"warning: {warning}"]
    whole = write_example_image(example.parent / "w")
    assert build_document_with_warnings(str(whole.parent)).warnings == ()
    clean = CliRunner().invoke(app, ["measurement-doc", str(whole.parent), "--json"])
    assert clean.exit_code == 0 and clean.stderr == ""


def test_truncated_kernel_is_reported_by_diagnose(example: Path) -> None:
    """diagnose shows the expected side's warnings (measure's), not only the evidence's."""
    cut, _ = truncated_kernel(example)
    warning = kernel.truncation_warning(cut)
    acpi = example.parent / "acpi-tables.bin"
    vm = VmConfig(cpu_count=2, memory_size=2 * GIB)
    report = diagnose(vm, Image.load(example.parent, AcpiTablesFile(acpi)))
    assert report.warnings == (warning,)
    assert report.to_dict()["warnings"] == [warning]
    (example.parent / "vm.json").write_text(json.dumps(vm.to_dict()))
    args = ["diagnose", "--vm-config", str(example.parent / "vm.json"), "--image-dir",
            str(example.parent), "--acpi-tables", str(acpi)]  # fmt: skip
    text = CliRunner().invoke(app, args)
    assert f"warning: {warning}" in text.stdout, text.output
    doc = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert doc["warnings"] == [warning]


BASE = dict(firmware="f", kernel="k", initrd="i", kernel_cmdline="c", cpu_count=1)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"memory_size": 1}, "memory_size 1 must be a positive whole number of MiB"),
        ({"memory_size": (2 << 30) + 1}, "whole number of MiB"),
        ({"memory_size": 2 << 30, "qemu_version": "7.2.0"}, "unsupported QEMU version 7.2.0"),
        ({"memory_size": 2 << 30, "qemu_version": "9.1"}, "invalid qemu_version"),
        ({"memory_size": 2 << 30, "num_gpus": True}, "num_gpus must be an integer"),
    ],
)
def test_machine_cannot_be_built_invalid(override: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Machine(**{**BASE, **override})  # type: ignore[arg-type]


def test_options_are_resolved_once_per_machine(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dstack_mr import machine as machine_mod

    calls = []
    real = machine_mod.parse_version_triple
    monkeypatch.setattr(machine_mod, "parse_version_triple", lambda t: calls.append(t) or real(t))
    image = Image.load(example.parent, AcpiTablesFile(example.parent / "acpi-tables.bin"))
    m = image.machine(VmConfig(cpu_count=2, memory_size=2 * GIB, qemu_version="8.2.2"))
    assert calls == ["8.2.2"]
    details = image.measure_machine(m)
    m.measure_with_logs(AcpiTablesFile(example.parent / "acpi-tables.bin"))
    assert calls == ["8.2.2"] and details.options.pic and details.options.two_pass_add_pages


def test_one_wording_for_attrs_and_json() -> None:
    from dstack_mr import validate

    with pytest.raises(ConfigError) as direct:
        Machine(**{**BASE, "memory_size": -1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as parsed:
        VmConfig.from_json('{"memory_size": -1}')
    problem = validate.u64(-1)
    assert problem == "must be an integer in 0..=18446744073709551615 (u64), got -1"
    assert validate.u32(-1) == "must be an integer in 0..=4294967295 (u32), got -1"
    assert problem in str(direct.value) and problem in str(parsed.value)
    assert validate.u32(True) is not None and validate.u64(1 << 64) is not None
    assert validate.boolean(0) == "must be true or false, got 0"
    assert validate.hex_string("0xab") is not None and validate.hex_string("ab") is None
    assert validate.optional(validate.string)(None) is None


def test_binary_layouts_have_their_specified_sizes() -> None:
    from dstack_mr import ccel, quote, tdvf
    from dstack_mr import event_payload as ep

    # Sizes the specifications give (TDVF design guide, UEFI PI HOBs, DCAP quote format).
    assert (tdvf.TDVF_DESCRIPTOR.size, tdvf.TDVF_SECTION.size) == (16, 32)
    # TCG PC Client PFP: TCG_PCClientPCREvent (SHA-1 digest), TCG_EfiSpecIdEvent up to its
    # algorithm table, one algorithm entry, TCG_PCR_EVENT2 up to its digests.
    assert ccel.PCR_EVENT_HEADER.size == 32 and ccel.SPEC_ID_EVENT.size == 28
    assert (ccel.SPEC_ID_ALGORITHM.size, ccel.PCR_EVENT2_HEADER.size) == (4, 12)
    assert (ccel.DIGEST_HEADER.size, ccel.EVENT_SIZE.size, ccel.VENDOR_INFO_SIZE.size) == (2, 4, 1)
    # PFP event data: UEFI_VARIABLE_DATA and UEFI_IMAGE_LOAD_EVENT headers, a firmware blob,
    # EFI_CONFIGURATION_TABLE, a tagged-event header, EFI_LOAD_OPTION, a device-path node.
    layouts = (ep.VARIABLE_DATA, ep.IMAGE_LOAD_EVENT, ep.FIRMWARE_BLOB, ep.CONFIGURATION_TABLE)
    assert [s.size for s in layouts] == [32, 32, 16, 24]
    assert (ep.TAGGED_EVENT.size, ep.LOAD_OPTION.size, ep.DEVICE_PATH_NODE.size) == (8, 6, 4)
    assert (tdvf.HOB_HANDOFF.size, tdvf.HOB_RESOURCE.size) == (56, 48)
    assert quote.QUOTE_HEADER.size == 48 and quote.V5_BODY_DESCRIPTOR.size == 6
    assert (quote.TD10_BODY.size, quote.TD15_BODY.size) == (584, 648)
    assert len(quote.TD10_FIELDS) == len(quote.TD10_BODY.unpack(bytes(584)))
    assert len(quote.TD15_FIELDS) == len(quote.TD15_BODY.unpack(bytes(648)))
    # The TD HOB of a real firmware is built from those records: one handoff record, then
    # resource descriptors, with EfiEndOfHobList pointing just past an 8-byte end HOB.
    fw = tdvf.parse(write_example_image_bytes())
    hob = fw.td_hob(2 * GIB)
    fields = tdvf.HOB_HANDOFF.unpack_from(hob)
    assert fields[:4] == (tdvf.HOB_TYPE_HANDOFF, 56, 0, tdvf.HOB_HANDOFF_VERSION)
    assert fields[-1] == fw.td_hob_base + len(hob) + 8
    assert (len(hob) - 56) % 48 == 0
    for rec in tdvf.HOB_RESOURCE.iter_unpack(hob[56:]):
        assert rec[0] == tdvf.HOB_TYPE_RESOURCE_DESCRIPTOR and rec[1] == 48
        assert rec[4] in (tdvf.RESOURCE_SYSTEM_MEMORY, tdvf.RESOURCE_MEMORY_UNACCEPTED)


def write_example_image_bytes() -> bytes:
    from dstack_mr.example import build_firmware

    return build_firmware()


def test_image_kernel_digest_is_public_and_cached(example: Path) -> None:
    image = Image.load(example.parent, AcpiTablesFile(example.parent / "acpi-tables.bin"))
    details = image.measure(VmConfig(cpu_count=2, memory_size=2 * GIB))
    assert image.kernel_digest(2 * GIB) == details.rtmr_logs[1][0].digest
    assert image.kernel_digest(2 * GIB) == kernel.patched_kernel_digest(
        image.kernel, image.initrd_size, 2 * GIB
    )
    assert "1/64 kernel digests" in repr(image)  # the measure's entry was reused


def test_cursor_reads_declared_layouts() -> None:
    import struct

    from dstack_mr._binary import Cursor
    from dstack_mr.errors import ScaleError

    cur = Cursor(bytes([1, 0, 2, 0, 0, 0, 9]), ScaleError)
    head = struct.Struct("<HI")
    assert cur.peek(head, "head") == (1, 2) and cur.offset == 0  # peek does not move
    assert cur.unpack(head, "head") == (1, 2) and cur.offset == head.size
    with pytest.raises(ScaleError, match="second head: need 6 bytes at offset 0x6"):
        cur.unpack(head, "second head")
    assert cur.offset == 6  # a failed read consumes nothing
    assert "(at offset 0x2)" in str(cur.fail("bad value", at=2))
    assert "(at offset 0x6)" in str(cur.fail("bad value"))
