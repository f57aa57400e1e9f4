"""The SMBIOS handoff-table event: real digests, stock QEMU's bytes, and the filter's rules."""

from __future__ import annotations

import contextlib
import json
import random
import struct

import pytest
import smbios_oracle as oracle
from conftest import qemu_installed, shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from dstack_mr import host_cpu, smbios
from dstack_mr.errors import ConfigError, SmbiosError
from dstack_mr.registry import SMBIOS3_TABLE
from dstack_mr.smbios import EntryPoint, SmbiosInputs
from dstack_mr.uefi import STABLE202505_VARIABLE_AUTHORITY_DIGEST

SEED = STABLE202505_VARIABLE_AUTHORITY_DIGEST
GIB = 1 << 30


# --- real digests --------------------------------------------------------------------------


@pytest.mark.parametrize("cpus", [1, 2, 4, 8, 16, 32, 64, 255, 256, 1024])
def test_seed_constant_is_the_2g_qemu_8_2_2_table_for_any_vcpu_count(cpus: int) -> None:
    event = smbios.build_event(SmbiosInputs("8.2.2", 2 * GIB, cpu_count=cpus))
    assert event.digest == SEED
    assert event.entry_point is EntryPoint.V3
    assert event.table_guid == SMBIOS3_TABLE


def test_seed_constant_needs_every_assumed_input() -> None:
    base = SmbiosInputs("8.2.2", 2 * GIB)
    others = [
        SmbiosInputs("8.2.2", 4 * GIB),
        SmbiosInputs("8.1.0", 2 * GIB),
        SmbiosInputs("8.2.2", 2 * GIB, manufacturer=None, product=None),
        SmbiosInputs("8.2.2", 2 * GIB, product="dstack-prod"),
        SmbiosInputs("8.2.2", 2 * GIB, cpuid_eax=host_cpu.cpuid_signature(6, 0xCF, 1)),
        SmbiosInputs("8.2.2", 2 * GIB, cpuid_edx=0xBFEBFBFF),
        SmbiosInputs("8.2.2", 2 * GIB, entry_point="32"),
    ]
    assert smbios.event_digest(base) == SEED
    digests = {smbios.event_digest(i) for i in others}
    assert SEED not in digests and len(digests) == len(others)


def test_default_host_cpu_is_emerald_rapids_stepping_2() -> None:
    cpu = host_cpu.DEFAULT_HOST_CPU
    assert (cpu.eax, cpu.edx) == (0x000C06F2, 0x2FABFBFF)
    assert (cpu.family, cpu.model, cpu.stepping) == (6, 0xCF, 2)
    assert cpu.name == "Emerald Rapids stepping 2"


def test_known_cpu_signatures_decode_to_their_names() -> None:
    models = {
        "Sapphire Rapids": 0x8F,
        "Emerald Rapids": 0xCF,
        "Granite Rapids": 0xAD,
        "Sierra Forest": 0xAF,
    }
    assert len({c.eax for c in host_cpu.KNOWN_TDX_HOST_CPUS}) == len(host_cpu.KNOWN_TDX_HOST_CPUS)
    for cpu in host_cpu.KNOWN_TDX_HOST_CPUS:
        family_name = cpu.name.rsplit(" stepping ", 1)[0]
        assert (cpu.family, cpu.model) == (6, models[family_name])
        assert cpu.name.endswith(f"stepping {cpu.stepping}")
    assert host_cpu.cpuid_signature(6, 0x8F, 8) == 0x000806F8
    assert host_cpu.cpuid_signature(0xF, 0x6B, 1) == 0x00060FB1  # qemu64 (family 15)


@pytest.mark.parametrize(
    ("text", "eax", "edx"),
    [
        ("Emerald Rapids stepping 2", 0xC06F2, 0x2FABFBFF),
        ("emerald-rapids  stepping 1", 0xC06F1, 0x2FABFBFF),
        ("0x806f8", 0x806F8, 0x2FABFBFF),
        ("c06f2:bfebfbff", 0xC06F2, 0xBFEBFBFF),
    ],
)
def test_find_host_cpu(text: str, eax: int, edx: int) -> None:
    cpu = host_cpu.find_host_cpu(text)
    assert (cpu.eax, cpu.edx) == (eax, edx)


@pytest.mark.parametrize("text", ["Pentium", "0x1:zz", "1ffffffff"])
def test_find_host_cpu_rejects_unknown_names(text: str) -> None:
    with pytest.raises(ConfigError, match="host CPU"):
        host_cpu.find_host_cpu(text)


# --- stock QEMU 7.2, recorded and live --------------------------------------------------------


def _recording() -> dict[str, object]:
    doc: dict[str, object] = json.loads(oracle.RECORDING.read_text())
    return doc


def test_recording_covers_the_advertised_configurations() -> None:
    doc = _recording()
    cases = doc["cases"]
    assert isinstance(cases, list) and len(cases) == len(oracle.cases())
    assert "QEMU emulator version 7.2" in str(doc["qemu"])
    seen = {(c["cpu"], c["mem_mb"], c["ep"], tuple(c["smbios"]), c["model"]) for c in cases}
    wanted = {
        (c["cpu"], c["mem_mb"], c["ep"], tuple(c["smbios"]), c["model"]) for c in oracle.cases()
    }
    assert seen == wanted


def test_model_reproduces_every_recorded_stock_qemu_blob() -> None:
    cases = _recording()["cases"]
    assert isinstance(cases, list)
    for case in cases:
        tables, anchor = bytes.fromhex(case["tables"]), bytes.fromhex(case["anchor"])
        cpuid = oracle.processor_id(tables)
        if case["model"] == "qemu64":
            assert cpuid == (0x00060FB1, 0x078BFBFD)
        inputs = oracle.inputs_for(case, cpuid)
        assert smbios.qemu_tables(inputs) == tables, case
        assert smbios.qemu_anchor(inputs) == anchor, case


def test_recorded_blobs_span_both_entry_points_and_memory_layouts() -> None:
    cases = _recording()["cases"]
    assert isinstance(cases, list)
    anchors = {bytes.fromhex(c["anchor"])[:5] for c in cases}
    assert anchors == {b"_SM_\x00", b"_SM3_"}
    type19_counts = {bytes.fromhex(c["tables"]).count(b"\x13\x1f") for c in cases}
    assert type19_counts >= {1, 2}


@pytest.mark.skipif(not qemu_installed(), reason="qemu-system-x86_64 not installed")
def test_live_stock_qemu_matches_model_and_recording() -> None:
    mod = oracle.dumper(shared_path())
    recorded = {
        (c["cpu"], c["mem_mb"], c["ep"], tuple(c["smbios"]), c["model"]): c
        for c in _recording()["cases"]  # type: ignore[attr-defined]
    }
    # A sample keeps the suite quick; `python tests/smbios_oracle.py` re-records them all.
    sample = random.Random(14).sample(oracle.cases(), 8)
    for case in sample:
        tables, anchor = oracle.dump(mod, case)
        inputs = oracle.inputs_for(case, oracle.processor_id(tables))
        assert smbios.qemu_tables(inputs) == tables, case
        assert smbios.qemu_anchor(inputs) == anchor, case
        key = (case["cpu"], case["mem_mb"], case["ep"], tuple(case["smbios"]), case["model"])
        assert bytes.fromhex(recorded[key]["tables"]) == tables


# --- machine-type rules ------------------------------------------------------------------


def _kinds(table: bytes) -> list[tuple[int, int]]:
    return [(s.kind, s.handle) for s in smbios.structures(table)]


def test_qemu_structures_and_handles_for_a_64g_8_2_machine() -> None:
    entry_point, parts = smbios.qemu_structures(SmbiosInputs("8.2.2", 64 * GIB))
    assert entry_point is EntryPoint.V3
    table = b"".join(parts)
    assert _kinds(table) == [
        (1, 0x100),
        (3, 0x300),
        (4, 0x400),
        (16, 0x1000),
        (17, 0x1100),
        (17, 0x1101),
        (17, 0x1102),
        (17, 0x1103),
        (19, 0x1300),
        (19, 0x1301),
        (32, 0x2000),
        (127, 0x7F00),
    ]


@pytest.mark.parametrize(
    ("version", "entry_point", "type4_length", "family"),
    [
        ("7.2.0", EntryPoint.V2, 0x2A, 0x01),
        ("8.0.4", EntryPoint.V2, 0x2A, 0x01),
        ("8.1.0", EntryPoint.V3, 0x30, 0x01),
        ("9.0.2", EntryPoint.V3, 0x30, 0xFE),
        ("9.1.0", EntryPoint.V2, 0x2A, 0xFE),
        ("9.2.1", EntryPoint.V2, 0x2A, 0xFE),
    ],
)
def test_per_machine_type_rules(
    version: str, entry_point: EntryPoint, type4_length: int, family: int
) -> None:
    inputs = SmbiosInputs(version, 64 * GIB)
    got, parts = smbios.qemu_structures(inputs)
    assert got is entry_point
    type4 = next(p for p in parts if p[0] == 4)
    assert (type4[1], type4[6]) == (type4_length, family)
    dimms = sum(1 for p in parts if p[0] == 17)
    assert dimms == (1 if version >= "9.1" else 4)
    assert inputs.machine_type.encode() in parts[0]


@pytest.mark.parametrize("version", ["7.1.0", "6.2.0", "10.0.0", "9.3.0"])
def test_unmodelled_qemu_versions_are_refused(version: str) -> None:
    with pytest.raises(ConfigError, match=r"modelled for QEMU 7\.2"):
        SmbiosInputs(version, GIB)


def test_auto_entry_point_needs_9_1() -> None:
    with pytest.raises(ConfigError, match="auto"):
        smbios.qemu_structures(SmbiosInputs("8.2.2", GIB, entry_point="auto"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_size", 0),
        ("memory_size", True),
        ("manufacturer", "a\0b"),
        ("product", 5),
        ("cpuid_eax", 1 << 32),
        ("cpu_count", 0),
        ("entry_point", "3.0"),
        ("qemu_version", "8.2"),
    ],
)
def test_inputs_are_validated(field: str, value: object) -> None:
    kwargs: dict[str, object] = {"qemu_version": "8.2.2", "memory_size": GIB, field: value}
    with pytest.raises(ConfigError, match=field if field != "qemu_version" else "version"):
        SmbiosInputs(**kwargs)  # type: ignore[arg-type]


MIB_SIZES = st.integers(1, 4 << 20).map(lambda mib: mib << 20)
VERSIONS = st.sampled_from(["7.2.0", "8.0.0", "8.1.2", "8.2.2", "9.0.0", "9.1.3", "9.2.1"])


@settings(max_examples=60, deadline=None)
@given(memory=MIB_SIZES, version=VERSIONS, cpus=st.integers(1, 512))
def test_memory_structures_add_up(memory: int, version: str, cpus: int) -> None:
    inputs = SmbiosInputs(version, memory, cpu_count=cpus)
    _, parts = smbios.qemu_structures(inputs)
    t16 = next(p for p in parts if p[0] == 16)
    t17 = [p for p in parts if p[0] == 17]
    t19 = [p for p in parts if p[0] == 19]
    assert struct.unpack_from("<H", t16, 13)[0] == len(t17)
    sizes_mb = [
        struct.unpack_from("<I", p, 0x1C)[0] or struct.unpack_from("<H", p, 0x0C)[0] for p in t17
    ]
    assert sum(sizes_mb) == memory >> 20
    covered = 0
    for p in t19:
        start, end = struct.unpack_from("<II", p, 4)
        if start == 0xFFFF_FFFF:
            start, end = (x // 1024 for x in struct.unpack_from("<QQ", p, 15))
        covered += end - start + 1
    assert covered * 1024 == memory
    assert len(t19) == (2 if memory >= 0xB000_0000 else 1)


@settings(max_examples=40, deadline=None)
@given(memory=MIB_SIZES, version=VERSIONS, cpus=st.integers(1, 4096))
def test_digest_does_not_depend_on_vcpu_count(memory: int, version: str, cpus: int) -> None:
    one = smbios.event_digest(SmbiosInputs(version, memory, cpu_count=1))
    assert smbios.event_digest(SmbiosInputs(version, memory, cpu_count=cpus)) == one


# --- OVMF's installation and the measurement filter --------------------------------------


def test_ovmf_adds_its_type0_at_handle_0_and_the_end_record() -> None:
    qemu = smbios.qemu_tables(SmbiosInputs("8.2.2", 2 * GIB))
    installed = smbios.ovmf_install(qemu)
    kinds = _kinds(installed)
    assert kinds[:-2] == _kinds(qemu)[:-1]
    assert kinds[-2:] == [(0, 0x0000), (127, 0xFEFF)]
    t0 = next(s for s in smbios.structures(installed) if s.kind == 0)
    assert t0.length == 0x1A
    assert t0.strings == (b"EDK II", b"unknown", b"02/02/2022")
    assert installed.endswith(b"\x7f\x04\xff\xfe\x00\x00")


def test_ovmf_keeps_a_qemu_type0_and_adds_none() -> None:
    qemu = smbios.qemu_tables(SmbiosInputs("8.2.2", 2 * GIB))
    type0 = smbios._header(0, 0x1A, 0) + smbios.OVMF_TYPE0_BODY + b"QEMU BIOS\0\0"
    installed = smbios.ovmf_install(type0 + qemu)
    assert [k for k, _ in _kinds(installed)].count(0) == 1
    assert installed.startswith(type0)


def test_ovmf_install_refuses_duplicate_handles_and_missing_end() -> None:
    qemu = smbios.qemu_tables(SmbiosInputs("8.2.2", 2 * GIB))
    with pytest.raises(SmbiosError, match="used twice"):
        smbios.ovmf_install(smbios.type32() + qemu)
    with pytest.raises(SmbiosError, match="no Type 127"):
        smbios.ovmf_install(qemu[: -len(smbios.type127())])


def test_filter_blanks_exactly_the_listed_fields() -> None:
    event = smbios.build_event(SmbiosInputs("8.2.2", 2 * GIB, cpu_count=8))
    before = {s.kind: s for s in smbios.structures(event.installed)}
    after = {s.kind: s for s in smbios.structures(event.measured)}
    assert len(event.measured) == len(event.installed)
    t4 = event.measured[after[4].offset : after[4].offset + after[4].length]
    assert t4[0x23:0x26] == b"\0\0\0" and t4[0x2A:0x30] == bytes(6)
    assert t4[0x16:0x18] == b"\0\0" and t4[0x14:0x16] == struct.pack("<H", 2000)
    t1 = event.measured[after[1].offset : after[1].offset + after[1].length]
    assert t1[0x18] == 0 and t1[8:0x18] == bytes(16)
    # No filtered string was set, so every string survives.
    assert [s.strings for s in after.values()] == [s.strings for s in before.values()]


def test_filter_turns_a_filtered_string_into_spaces() -> None:
    t3 = bytearray(smbios.type3(SmbiosInputs("8.2.2", GIB)))
    t3[7] = 3  # serial number -> a third string
    table = bytes(t3[:-1]) + b"SN-123\0\0" + smbios.type127()
    measured = smbios.measured_table(table)
    (s3, _end) = smbios.structures(measured)
    assert s3.strings == (b"QEMU", b"pc-q35-8.2", b"      ")
    assert measured[7] == 0


def test_filter_zeroes_whole_bodies_of_secret_and_oem_types() -> None:
    oem = smbios._header(0x80, 6, 0x5000) + b"\x01\x02ab\0\0"
    t11 = smbios._header(11, 5, 0x0E00) + b"\x01" + b"secret\0\0"
    measured = smbios.measured_table(oem + t11 + smbios.type127())
    assert measured[:4] == oem[:4] and measured[4 : len(oem)] == bytes(len(oem) - 4)
    start = len(oem)
    assert measured[start + 4 : start + len(t11)] == bytes(len(t11) - 4)


def test_measured_length_stops_at_the_first_end_record() -> None:
    event = smbios.build_event(SmbiosInputs("8.2.2", 2 * GIB))
    tail = b"\x7f\x04\x00\x7f\0\0" + b"junk"
    assert smbios.measured_table(event.installed + tail) == event.measured


@st.composite
def tables(draw: st.DrawFn) -> bytes:
    """Well-formed tables of arbitrary structures (any type, body and strings)."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 255).filter(lambda k: k != 127))
        body = draw(st.binary(min_size=0, max_size=60))
        strings = draw(st.lists(st.binary(min_size=1, max_size=12).map(_no_nul), max_size=4))
        handle = draw(st.integers(0, 0xFFFF))
        out += smbios._header(kind, 4 + len(body), handle) + body
        out += b"".join(s + b"\0" for s in strings) + b"\0" if strings else b"\0\0"
    return bytes(out) + smbios.END_OF_TABLE


def _no_nul(b: bytes) -> bytes:
    return b.replace(b"\0", b"x")


@settings(max_examples=300, deadline=None)
@given(table=tables())
def test_filter_keeps_headers_and_touches_only_listed_types(table: bytes) -> None:
    try:
        once = smbios.measured_table(table)
    except SmbiosError:
        return  # a filtered string index with no strings: edk2 would ASSERT
    assert len(once) == len(table)
    blanked = False
    for s in smbios.structures(table):
        raw, out = table[s.offset : s.offset + s.size], once[s.offset : s.offset + s.size]
        assert out[:4] == raw[:4]
        rule = smbios.MEASUREMENT_FILTER.get(s.kind, ()) if s.kind < 128 else None
        if rule is None:
            # The whole body goes, strings and terminator included (edk2's ZeroMem of
            # TableEntrySize - 4 bytes), so a filtered table may not walk like the original.
            assert out[4:] == bytes(s.size - 4)
            blanked = True
        elif not rule:
            assert out == raw
    if not blanked:
        assert smbios.measured_table(once) == once


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_give_a_table_or_smbios_error(data: bytes) -> None:
    try:
        out = smbios.measured_table(data)
    except SmbiosError:
        return
    assert len(out) <= len(data)
    with contextlib.suppress(SmbiosError):
        smbios.ovmf_install(data)


def test_annotated_hex_names_every_structure() -> None:
    event = smbios.build_event(SmbiosInputs("8.2.2", 2 * GIB))
    text = smbios.annotated_hex(event.measured)
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert len(headings) == len(list(smbios.structures(event.measured)))
    assert headings[0].startswith("# Type 1 System Information, handle 0x0100")
    hex_bytes = bytes.fromhex(
        "".join(line[6:53] for line in text.splitlines() if not line.startswith("#"))
    )
    assert hex_bytes == event.measured


def _block_after(page: str, marker: str) -> str:
    start = page.index(marker)
    body = page[page.index("```text\n", start) + len("```text\n") :]
    return body[: body.index("\n```")]


def test_docs_worked_example_is_what_the_model_prints() -> None:
    page = (oracle.RECORDING.parent.parent.parent / "docs" / "smbios.md").read_text()
    event = smbios.build_event(SmbiosInputs("8.2.2", 2 * GIB, cpu_count=8))
    assert _block_after(page, "<!-- smbios-worked-example -->") == smbios.annotated_hex(
        event.measured
    )
    assert _block_after(page, "<!-- smbios-worked-digest -->") == SEED.hex() == event.digest.hex()
