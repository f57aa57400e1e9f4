"""Edge cases where the reference's exact accept/reject behaviour is easy to miss."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from spec_model import spec_authenticode
from typer.testing import CliRunner

from dstack_mr import ConfigError, EvidenceError, FirmwareError, ImageError, VmConfig, tdvf
from dstack_mr.config import parse_memory_size
from dstack_mr.evidence import parse_register_hex
from dstack_mr.example import build_firmware, build_kernel, write_example_image
from dstack_mr.image import ImageFiles, rust_parent
from dstack_mr.kernel import authenticode_sha384
from dstack_mr_cli.main import app

# --- JSON as strict as serde_json -----------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ('{"cpu_count": 1, "cpu_count": 2}', "duplicate field 'cpu_count'"),
        ('{"cpu_count": NaN}', "NaN"),
        ('{"extra": Infinity}', "Infinity"),
        ('{"os_image_hash": "0xabcd"}', "hex"),
        ('{"os_image_hash": "ab cd"}', "hex"),
        ('{"os_image_hash": "abc"}', "hex"),
        ('{"image": "\\udc80"}', "surrogate"),
    ],
)
def test_vm_config_rejects_what_serde_rejects(doc: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        VmConfig.from_json(doc)


def test_vm_config_accepts_what_serde_accepts() -> None:
    # Duplicate *unknown* keys are ignored by serde, like the keys themselves.
    assert VmConfig.from_json('{"x": 1, "x": 2, "cpu_count": 3}').cpu_count == 3
    assert VmConfig.from_json('{"os_image_hash": "ABcd"}').os_image_hash == b"\xab\xcd"
    with pytest.raises(ConfigError, match="byte-order mark"):
        VmConfig.from_json(b"\xef\xbb\xbf{}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        VmConfig.from_json('{"cpu_count": 1}'.encode("utf-16"))


@pytest.mark.parametrize("text", ["\x1c2G", "9" * 5000, "9" * 5000 + "G", "0x" + "f" * 17])
def test_memory_size_edges_rejected(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_memory_size(text)


def test_memory_size_edges_accepted() -> None:
    assert parse_memory_size("0x" + "0" * 40 + "1") == 1  # from_str_radix takes leading zeros
    assert parse_memory_size("\u30002G\u2003") == 2 << 30  # Rust's trim is Unicode White_Space


# --- firmware and kernel inputs the reference accepts ------------------------------------------


def _with_section(fw: bytes, index: int, **fields: int) -> bytes:
    t = tdvf.parse(fw)
    desc = fw.rfind(b"TDVF")
    base = desc + 16 + 32 * index
    s = t.sections[index]
    values = {
        "data_offset": s.data_offset, "raw_data_size": s.raw_data_size,
        "memory_address": s.memory_address, "memory_data_size": s.memory_data_size,
        "section_type": s.section_type, "attributes": s.attributes,
    }  # fmt: skip
    values.update(fields)
    packed = struct.pack("<IIQQII", *values.values())
    return fw[:base] + packed + fw[base + 32 :]


def _index(fw: bytes, section_type: int) -> int:
    return next(i for i, s in enumerate(tdvf.parse(fw).sections) if s.section_type == section_type)


def test_empty_mr_extend_section_reads_nothing() -> None:
    fw = build_firmware()
    i = _index(fw, tdvf.SectionType.CFV)
    odd = _with_section(fw, i, data_offset=0xFFFFFFFF, raw_data_size=0, memory_data_size=0,
                        attributes=tdvf.ATTR_MR_EXTEND)  # fmt: skip
    assert tdvf.parse(odd).mrtd(False) != tdvf.parse(fw).mrtd(False)


def test_section_ending_at_the_top_of_the_address_space() -> None:
    fw = build_firmware()
    cfv = _index(fw, tdvf.SectionType.CFV)
    top = (1 << 64) - 0x1000
    tdvf.parse(_with_section(fw, cfv, memory_address=top, raw_data_size=0, memory_data_size=0x1000))
    temp = _index(fw, tdvf.SectionType.TEMP_MEM)
    with pytest.raises(FirmwareError, match="address space"):
        tdvf.parse(_with_section(fw, temp, memory_address=top, memory_data_size=0x1000))


def test_section_table_needs_only_the_fields_read() -> None:
    k = bytearray(build_kernel())
    pe = struct.unpack_from("<I", k, 0x3C)[0]
    # No sections, and a section table that would start past the end of the file.
    struct.pack_into("<H", k, pe + 4 + 2, 0)
    struct.pack_into("<H", k, pe + 4 + 16, 0xFFFF)
    # Headers and the bytes between them and the certificate table, nothing else.
    assert authenticode_sha384(bytes(k)) == spec_authenticode(bytes(k))


# --- paths and CLI values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parent"),
    [("metadata.json", ""), ("/metadata.json", "/"), ("/d/./metadata.json", "/d"),
     ("./metadata.json", "."), ("a//b/metadata.json", "a//b"), ("a/../metadata.json", "a/..")],
)  # fmt: skip
def test_rust_parent(path: str, parent: str) -> None:
    assert rust_parent(path) == parent


def test_metadata_path_with_dot_component_joins_like_rust(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    files = ImageFiles.from_metadata(f"{meta.parent}/./metadata.json")
    assert files.firmware == f"{meta.parent}/ovmf.fd"


def test_image_name_with_surrogate_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError):
        ImageFiles.from_dir(str(tmp_path) + "/\udc80")


@pytest.mark.parametrize("args", [["-c", "1_0"], ["-c", " 2"], ["--smm", "TRUE"],
                                  ["--num-gpus", "+-1"], ["--pic", "yes"]])  # fmt: skip
def test_cli_values_parsed_like_clap(tmp_path: Path, args: list[str]) -> None:
    meta = write_example_image(tmp_path / "img")
    acpi = str(meta.parent / "acpi-tables.bin")
    result = CliRunner().invoke(app, ["measure", *args, "--acpi-tables", acpi, str(meta)])
    assert result.exit_code == 2, result.output


def test_cli_plus_sign_accepted_like_rust(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    acpi = str(meta.parent / "acpi-tables.bin")
    run = CliRunner().invoke
    plus = run(app, ["measure", "-c", "+2", "--json", "--acpi-tables", acpi, str(meta)])
    two = run(app, ["measure", "-c", "2", "--json", "--acpi-tables", acpi, str(meta)])
    assert plus.exit_code == 0 and json.loads(plus.output) == json.loads(two.output)


@pytest.mark.parametrize("text", ["0X" + "ab" * 48, "ab" * 24 + "\t" + "ab" * 24, "0x" * 2])
def test_register_hex_like_reference(text: str) -> None:
    with pytest.raises(EvidenceError):
        parse_register_hex(text, "--actual-rtmr0")


def test_register_hex_repeated_prefix_stripped() -> None:
    # trim_start_matches("0x") strips every leading "0x".
    assert parse_register_hex("0x0x" + "cd" * 48, "x") == b"\xcd" * 48
