"""Evidence read from files (dstack_mr.evidence_files): bounded reads, shapes told apart on the
real captures, parts merged, and one error per wrong input naming the file and the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import pytest
from snp_helpers import snp_attestation_bytes, snp_report
from test_attestation_shapes import lite_scale

from dstack_mr.ccel import parse_ccel
from dstack_mr.config import VmConfig
from dstack_mr.errors import ConfigError, EvidenceError, QuoteError
from dstack_mr.evidence_files import (
    EvidenceFiles,
    SnpEvidence,
    TdxEvidence,
    read_attestation,
    read_collateral,
    read_evidence,
    read_json,
    verify_evidence,
    verify_inputs,
)
from dstack_mr.quote import parse_quote

V060 = "dstack-0.6.0-getquote.json"
V054 = "dstack-0.5.4-8cpu-64g-getquote.json"
COLLATERAL = "collateral/dstack-0.5.4-8cpu-64g-quote-collateral.json"


def tdx(files: EvidenceFiles) -> TdxEvidence:
    loaded = files.load()
    assert isinstance(loaded, TdxEvidence)
    return loaded


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --- bounded reads ------------------------------------------------------------------------------


def test_read_evidence_names_the_file_and_why(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(EvidenceError, match="^" + re.escape(f"cannot read quote {missing}: ")):
        read_evidence(missing, "quote")
    # A NUL in a path is refused by the OS layer as ValueError; still one EvidenceError.
    with pytest.raises(EvidenceError, match=r"path contains a null byte"):
        read_evidence("/tmp/x\0y", "quote")
    with pytest.raises(
        EvidenceError, match=re.escape(f"collateral {tmp_path / 'c.json'}: invalid JSON")
    ):
        read_json(write(tmp_path, "c.json", "{"), "collateral")
    assert read_json(write(tmp_path, "ok.json", '{"a": 1}'), "collateral") == {"a": 1}


# --- diagnose's evidence ------------------------------------------------------------------------


def test_getquote_response_carries_quote_log_and_vm_config(real: Path) -> None:
    loaded = tdx(EvidenceFiles(attestation=real / V060))
    cap = json.loads((real / V060).read_text())
    ev = loaded.evidence
    assert ev.quote == parse_quote(cap["quote"])
    assert ev.events is not None and len(ev.events) == len(json.loads(cap["event_log"]))
    assert ev.sources == ("guest-agent GetQuote response",)
    assert loaded.vm_config == VmConfig.from_json(cap["vm_config"])
    assert loaded.vm_config.image == "dstack-0.6.0"


def test_parts_merge_with_the_attestation_and_typed_registers(tmp_path: Path, real: Path) -> None:
    cap = json.loads((real / V060).read_text())
    quote = write(tmp_path, "quote.hex", cap["quote"])
    log = write(tmp_path, "log.json", cap["event_log"])
    rtmr2 = "0x" + "ab" * 48
    ev = tdx(
        EvidenceFiles(attestation=real / V060, quote=quote, event_log=log, actual={"rtmr2": rtmr2})
    ).evidence
    # The same quote and log twice agree; the typed register outranks the quote's.
    assert ev.sources == (
        "guest-agent GetQuote response",
        f"quote {quote}",
        f"event log {log}",
        "command line",
    )
    assert ev.actual("rtmr2") == (b"\xab" * 48, "--actual-rtmr2")
    assert ev.actual("rtmr1") == (ev.quote.rtmr1, "quote")  # type: ignore[union-attr]


def test_two_different_quotes_are_refused(tmp_path: Path, real: Path) -> None:
    other = json.loads((real / V054).read_text())["quote"]
    quote = write(tmp_path, "quote.hex", other)
    with pytest.raises(EvidenceError, match=r"^two different quotes were given$"):
        EvidenceFiles(attestation=real / V060, quote=quote).load()


@pytest.mark.parametrize("option", ["quote", "event_log", "vm_config"])
def test_an_attestation_given_as_one_part_names_attestation(
    tmp_path: Path, real: Path, option: str
) -> None:
    path = write(tmp_path, "getquote.json", (real / V060).read_bytes())
    flag = "--" + option.replace("_", "-")
    extra = {} if option == "vm_config" else {"vm_config": write(tmp_path, "vm.json", "{}")}
    with pytest.raises(
        EvidenceError,
        match=r"^"
        + re.escape(f"{flag} {path} is an attestation response (it has 'quote', 'event_log')")
        + ".*use --attestation FILE$",
    ):
        EvidenceFiles(**{option: path, **extra}).load()  # type: ignore[arg-type]


def test_vm_config_file_outranks_the_attestation_and_warns(tmp_path: Path, real: Path) -> None:
    vm = write(tmp_path, "vm.json", json.dumps({"memory_size": 2 << 30, "cpus": 4}))
    loaded = tdx(EvidenceFiles(attestation=real / V060, vm_config=vm))
    assert loaded.vm_config.memory_size == 2 << 30 and loaded.vm_config.image is None
    assert loaded.evidence.warnings == (
        f"--vm-config {vm}: unknown key 'cpus' ignored (misspelt? their intended values "
        "took their defaults)",
    )


def test_no_vm_config_anywhere(real: Path) -> None:
    # The 0.5.4 capture's GetQuote response predates vm_config.
    with pytest.raises(
        ConfigError, match=r"^no VmConfig: pass --vm-config, or an --attestation carrying one$"
    ):
        EvidenceFiles(attestation=real / V054).load()


def test_null_quote_is_noted_not_refused(tmp_path: Path, real: Path) -> None:
    cap = json.loads((real / V060).read_text())
    path = write(tmp_path, "a.json", json.dumps({**cap, "quote": None}))
    ev = tdx(EvidenceFiles(attestation=path)).evidence
    assert ev.quote is None and ev.events
    assert ev.notes == (
        'the GetQuote response has no quote ("quote" is null or empty): nothing in it is signed',
    )


@pytest.mark.parametrize("shape", ["raw", "json-hex"])
def test_scale_attestation_raw_or_as_hex(tmp_path: Path, real: Path, shape: str) -> None:
    raw, cap = lite_scale(real)
    data = raw if shape == "raw" else json.dumps({"attestation": raw.hex()}).encode()
    loaded = tdx(EvidenceFiles(attestation=write(tmp_path, "att", data)))
    assert loaded.evidence.quote == parse_quote(str(cap["quote"]))
    assert loaded.vm_config.image == "dstack-0.6.0"
    assert "SCALE VersionedAttestation V0, dstack-tdx" in loaded.evidence.sources[0]


def test_ccel_and_register_only(tmp_path: Path, real: Path) -> None:
    vm = write(tmp_path, "vm.json", '{"memory_size": 2147483648}')
    ccel = real / "dstack-ccel-sample.bin"
    ev = tdx(EvidenceFiles(ccel=ccel, vm_config=vm, actual={"mrtd": "00" * 48})).evidence
    assert ev.events == parse_ccel(ccel.read_bytes())
    assert ev.sources == (f"CCEL {ccel}", "command line")
    assert ev.registers == {"mrtd": bytes(48)}
    with pytest.raises(EvidenceError, match=r"^--actual-rtmr0: expected 48 bytes as 96 hex"):
        EvidenceFiles(vm_config=vm, actual={"rtmr0": "abc"}).load()
    with pytest.raises(ConfigError, match=re.escape("unknown ['rtmr3']")):
        EvidenceFiles(actual={"rtmr3": "00" * 48})


def test_snp_attestation_is_told_apart(tmp_path: Path, real: Path) -> None:
    snp = real / "dstack-snp-0.6.0-attestation.json"
    loaded = EvidenceFiles(attestation=snp).load()
    assert isinstance(loaded, SnpEvidence) and loaded.vm_config is None
    assert loaded.attestation.source.startswith(f"attestation {snp} (")
    # A VmConfig beside it is read as the SNP VmConfig.
    cfg = write(tmp_path, "vm.json", json.dumps({"image": "dstack-0.6.0"}))
    with_vm = EvidenceFiles(attestation=snp, vm_config=cfg).load()
    assert isinstance(with_vm, SnpEvidence) and with_vm.vm_config is not None
    assert with_vm.vm_config.fields["image"] == "dstack-0.6.0"
    # Raw SCALE bytes are recognised too.
    raw = snp_attestation_bytes(snp_report(bytes(48), bytes(32)), "", "")
    assert isinstance(EvidenceFiles(attestation=write(tmp_path, "raw", raw)).load(), SnpEvidence)


def test_tdx_parts_beside_an_snp_attestation_are_refused(tmp_path: Path, real: Path) -> None:
    snp = real / "dstack-snp-0.6.0-attestation.json"
    files = EvidenceFiles(attestation=snp, ccel=tmp_path / "x", actual={"rtmr1": "00" * 48})
    assert files.tdx_parts() == ["--ccel", "--actual-rtmr1"]
    with pytest.raises(
        ConfigError,
        match=r"^"
        + re.escape(
            "--ccel, --actual-rtmr1: TDX evidence cannot be combined with an AMD SEV-SNP "
            "attestation, which is judged on its own"
        )
        + "$",
    ):
        files.load()


# --- verify's evidence --------------------------------------------------------------------------


def test_near_style_public_data(tmp_path: Path, real: Path) -> None:
    cap = json.loads((real / V060).read_text())
    tcb = {"event_log": json.loads(cap["event_log"]), "vm_config": cap["vm_config"]}
    doc = {"tee_participant_info": {"Dstack": {"quote": list(bytes.fromhex(cap["quote"])),
                                               "tcb_info": tcb}}}  # fmt: skip
    att = read_attestation(write(tmp_path, "near.json", json.dumps(doc)))
    assert att.quote == parse_quote(cap["quote"])
    assert att.source == "guest-agent Info response"
    doc["tee_participant_info"]["Dstack"]["quote"] = [256]
    bad = write(tmp_path, "bad.json", json.dumps(doc))
    with pytest.raises(EvidenceError, match=r"tee_participant_info.Dstack.quote is not bytes"):
        read_attestation(bad)


def test_verify_evidence_sources(tmp_path: Path, real: Path) -> None:
    coll_path = real / COLLATERAL
    coll, adjacent = read_collateral(coll_path)
    assert isinstance(adjacent, str) and coll.tcb_info
    # Only the attestation: it is handed on whole (its shape tells what the VM stated).
    only = verify_evidence(real / V060)
    assert only.only_attestation is not None and only.judged is only.only_attestation
    # No quote file and no attestation: the quote next to the collateral is used.
    found = verify_evidence(adjacent_quote=adjacent, collateral=coll_path)
    assert found.evidence.quote == parse_quote(adjacent)
    assert found.evidence.sources == (f"quote in {coll_path}",)
    assert found.judged is found.evidence
    with pytest.raises(EvidenceError, match=r"its 'quote' is not hex text"):
        verify_evidence(adjacent_quote=5, collateral=coll_path)
    with pytest.raises(EvidenceError, match=r"^no quote: give --quote, --attestation"):
        verify_evidence()
    with pytest.raises(QuoteError):
        verify_evidence(quote=write(tmp_path, "q.hex", "00"))


def test_verify_inputs_from_files(
    tmp_path: Path, real: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dstack_mr import dcap
    from dstack_mr.acpi import AcpiTablesFile
    from dstack_mr.example import write_example_image
    from dstack_mr.measurement_doc import build_document

    coll_path = real / COLLATERAL
    # The collateral file, with the quote stored next to it as the evidence.
    inputs = verify_inputs(collateral=coll_path)
    assert inputs.collateral == read_collateral(coll_path)[0]
    assert inputs.found.evidence.sources == (f"quote in {coll_path}",)
    assert (inputs.vm_config, inputs.document, inputs.image) == (None, None, None)
    with pytest.raises(ConfigError, match="either --collateral or --pccs-url, not both"):
        verify_inputs(real / V054, collateral=coll_path, pccs_url="https://pccs.invalid")

    # --pccs-url: fetched for the evidence's quote (no network here).
    fetched: list[object] = []
    monkeypatch.setattr(dcap, "fetch_collateral", lambda url, q: fetched.append((url, q)) or 7)
    online = verify_inputs(real / V054, pccs_url="https://pccs.invalid")
    assert online.collateral == 7
    assert fetched == [("https://pccs.invalid", online.found.evidence.quote)]

    # What the measurements are checked against: a VmConfig, a document, an image.
    meta = write_example_image(tmp_path / "img")
    vm = write(tmp_path, "vm.json", json.dumps({"cpu_count": 2, "memory_size": 2 << 30}))
    doc = write(tmp_path, "m.cbor", build_document(str(meta.parent)).to_cbor())
    acpi = AcpiTablesFile(meta.parent / "acpi-tables.bin")
    full = verify_inputs(
        real / V054, vm_config=vm, measurement_doc=doc, image_dir=meta.parent, acpi=acpi
    )
    assert full.vm_config == VmConfig(cpu_count=2, memory_size=2 << 30)
    assert full.document is not None and full.document.to_cbor() == doc.read_bytes()
    assert full.image is not None and full.image.files.directory == str(meta.parent)
    with pytest.raises(ConfigError, match="VmConfig"):
        verify_inputs(real / V054, vm_config=write(tmp_path, "bad.json", "[]"))


# --- which diagnosis the evidence gets (dstack_mr.diagnose_files) -------------------------------


def test_lite_mode_when_no_image_is_given(real: Path) -> None:
    from dstack_mr.diagnose import DiagnoseReport
    from dstack_mr.diagnose_files import diagnose_evidence

    loaded = EvidenceFiles(attestation=real / V060).load()
    report = diagnose_evidence(loaded)
    assert isinstance(report, DiagnoseReport) and report.result == "match"
    assert report.acpi.kind == "log"  # upstream's lite semantics: the log's ACPI digests
    assert [r.status for r in report.registers] == ["match"] * 4
    # A tables file or dumper needs an image directory; lite mode has none.
    for kw in ({"acpi_tables": "t.bin"}, {"acpi_dumper": "/bin/true"}, {"acpi_mode": "file"}):
        with pytest.raises(ConfigError, match=r"needs the image directory"):
            diagnose_evidence(loaded, **kw)  # type: ignore[arg-type]
    # --collateral without a quote to check is refused before the diagnosis runs (so before
    # the diagnosis' own refusal of a tables file without an image directory).
    vm = tdx(EvidenceFiles(attestation=real / V060)).vm_config
    no_quote = TdxEvidence(tdx(EvidenceFiles(attestation=real / V060)).evidence, vm)
    no_quote = TdxEvidence(attrs.evolve(no_quote.evidence, quote=None), vm)
    for kw in ({}, {"acpi_mode": "file"}):
        with pytest.raises(ConfigError, match=r"^--collateral checks a quote's signature"):
            diagnose_evidence(no_quote, collateral=real / COLLATERAL, **kw)  # type: ignore[arg-type]


def test_image_is_required_without_a_measurement_document(tmp_path: Path, real: Path) -> None:
    from dstack_mr.diagnose_files import diagnose_evidence
    from dstack_mr.errors import PathEscapeError

    vm = write(tmp_path, "vm.json", json.dumps({"memory_size": 2 << 30, "image": "../up"}))
    loaded = EvidenceFiles(attestation=real / V054, vm_config=vm).load()
    with pytest.raises(ConfigError, match=r"^either --image-dir or --image-base-dir must be given"):
        diagnose_evidence(loaded)
    # The image named by vm_config.image must stay inside the base directory.
    with pytest.raises(PathEscapeError):
        diagnose_evidence(loaded, image_base_dir=tmp_path)


def test_snp_attestation_is_judged_on_its_own(real: Path) -> None:
    from dstack_mr.diagnose_files import diagnose_evidence
    from dstack_mr.snp_diagnose import SnpDiagnoseReport

    loaded = EvidenceFiles(attestation=real / "dstack-snp-0.6.0-attestation.json").load()
    report = diagnose_evidence(loaded, acpi_mode="builtin")  # TDX-only options are ignored
    assert isinstance(report, SnpDiagnoseReport) and report.ok and report.exit_code == 0
