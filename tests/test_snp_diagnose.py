"""SEV-SNP judgement: the real capture verifies; tampered inputs give MISMATCH with the cause
that reproduces the report (a fact) or a broken integrity chain; the CLI's exit codes."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from snp_helpers import sev_ovmf, snp_attestation_bytes, snp_report
from typer.testing import CliRunner

from dstack_mr.snp import SnpOvmf
from dstack_mr.snp_attestation import SnpAttestation, parse_snp_attestation
from dstack_mr.snp_diagnose import SnpDiagnoseReport, diagnose_snp
from dstack_mr.snp_document import SnpImageMeasurement, SnpVmConfig, snp_host_data
from dstack_mr.snp_image import load_snp_image
from dstack_mr_cli.main import app

RUN = CliRunner()
SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "docs" / "snp-diagnose.schema.json").read_text()
)
MEASUREMENT = (
    "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599"
    "847ff250dbffcd07e1ba639771d6f05d"
)
HOST_DATA = "783f0057820acb99249af56cc3b07b4e8d80f65183167cba9cf437bb680f742f"


def capture(real: Path) -> Path:
    return real / "dstack-snp-0.6.0-attestation.json"


def attestation(real: Path) -> SnpAttestation:
    att = parse_snp_attestation(capture(real).read_bytes(), "capture")
    assert att is not None
    return att


def config(att: SnpAttestation) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads(att.config)
    return cfg


def with_document(cfg: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc = json.loads(cfg["sev_snp_measurement"])
    doc.update(changes)
    return {**cfg, "sev_snp_measurement": json.dumps(doc)}


def rebind(cfg: dict[str, Any], cbor: bytes) -> dict[str, Any]:
    """A consistent chain for another measurement.snp.cbor: new sha256sum.txt, new
    os_image_hash (what a forger controls; the report's MEASUREMENT is what they cannot)."""
    sums = f"{hashlib.sha256(cbor).hexdigest()}  measurement.snp.cbor\n".encode()
    out = with_document(
        cfg,
        measurement=base64.b64encode(cbor).decode(),
        checksum_file=base64.b64encode(sums).decode(),
    )
    out["os_image_hash"] = hashlib.sha256(sums).hexdigest()
    return out


def judge(att: SnpAttestation, cfg: dict[str, Any], **kw: Any) -> SnpDiagnoseReport:
    report = diagnose_snp(att, vm_config=SnpVmConfig.from_dict(cfg), **kw)
    jsonschema.validate(report.to_dict(), SCHEMA)
    return report


def facts(report: SnpDiagnoseReport) -> list[tuple[str | None, str | None]]:
    return [(f.parameter, f.value) for f in report.findings if f.reproduced]


def test_real_capture_matches(real: Path) -> None:
    r = diagnose_snp(attestation(real))
    assert r.verdict == "MATCH" and r.ok and r.exit_code == 0
    assert [(c.name, c.status) for c in r.checks] == [
        ("MEASUREMENT", "match"),
        ("HOST_DATA", "match"),
    ]
    assert r.checks[0].expected is not None and r.checks[0].expected.hex() == MEASUREMENT
    assert r.checks[1].expected is not None and r.checks[1].expected.hex() == HOST_DATA
    assert all(i.ok for i in r.integrity)
    assert not r.problems and not r.warnings and not r.findings
    assert r.signature_checked is False
    d = r.to_dict()
    jsonschema.validate(d, SCHEMA)
    assert d["verdict"] == "MATCH" and d["signature_checked"] is False
    assert d["expected"]["measurement"] == MEASUREMENT
    assert json.loads(json.dumps(d)) == d
    html = r._repr_html_()
    assert "not checked" in html and 'class="match"' in html and "dstack-mr-snp-checks" in html


@pytest.mark.parametrize(
    ("changes", "fact"),
    [
        ({"vcpus": 4}, [("vcpus", "2")]),
        ({"vcpus": 1}, [("vcpus", "2")]),
        ({"vcpu_type": "EPYC-Milan"}, [("vcpu_type", "EPYC-v4")]),
        ({"vcpu_type": "EPYC-Genoa", "vcpus": 64}, [("vcpus", "2"), ("vcpu_type", "EPYC-v4")]),
        ({"guest_features": 0x21}, [("guest_features", "0x1")]),
        ({"guest_features": 1 | 1 << 40}, [("guest_features", "0x1")]),
    ],
)
def test_changed_deployment_values_are_proven(
    real: Path, changes: dict[str, Any], fact: list[tuple[str, str]]
) -> None:
    att = attestation(real)
    r = judge(att, with_document(config(att), **changes))
    assert r.verdict == "MISMATCH" and r.exit_code == 1
    assert r.checks[0].status == "mismatch" and r.checks[1].status == "match"
    # vcpus/vcpu_type/guest_features are outside sha256sum.txt: the chain still holds.
    assert all(i.ok for i in r.integrity)
    assert facts(r) == fact
    html = r._repr_html_()
    assert 'class="mismatch"' in html and "✔" in html


def _tampered_cmdline(att: SnpAttestation) -> bytes:
    assert att.vm_config is not None
    cbor = att.vm_config.measurement_document().measurement
    assert cbor.count(b"panic=1 ") == 1
    return cbor.replace(b"panic=1 ", b"panic=2 ")


def test_cmdline_byte_without_rebinding_breaks_integrity(real: Path) -> None:
    att = attestation(real)
    cfg = with_document(config(att), measurement=base64.b64encode(_tampered_cmdline(att)).decode())
    r = judge(att, cfg)
    assert r.verdict == "MISMATCH"
    assert [i.ok for i in r.integrity] == [True, False]
    assert "altered" in r.integrity[1].message
    assert r.checks[0].status == "mismatch"
    # No vCPU/feature change explains it, and no image was given: a hypothesis only.
    assert not facts(r)
    assert r.findings and r.findings[-1].message.startswith("hypothesis")


def test_rebound_cmdline_is_traced_to_the_image_directory(real: Path, tmp_path: Path) -> None:
    att = attestation(real)
    assert att.vm_config is not None
    genuine = att.vm_config.measurement_document()
    r = judge(att, rebind(config(att), _tampered_cmdline(att)))
    # The forged chain is consistent, so only the recomputation catches it.
    assert all(i.ok for i in r.integrity)
    assert r.checks[0].status == "mismatch" and not facts(r)
    image = tmp_path / "dstack-nvidia-0.6.0.a2"
    image.mkdir()
    (image / "measurement.snp.cbor").write_bytes(genuine.measurement)
    (image / "sha256sum.txt").write_bytes(genuine.checksum_file)
    r = judge(att, rebind(config(att), _tampered_cmdline(att)), image=load_snp_image(image))
    assert facts(r) == [("cmdline", "image directory's measurement.snp.cbor")]
    assert "image directory: its sha256sum.txt is not the image" in r.warnings[0]


def test_wrong_os_image_hash_breaks_integrity(real: Path) -> None:
    att = attestation(real)
    cfg = {**config(att), "os_image_hash": "00" * 32}
    r = judge(att, cfg)
    assert r.verdict == "MISMATCH"
    assert [i.ok for i in r.integrity] == [False, True]
    assert [c.status for c in r.checks] == ["match", "match"]


def test_tampered_mr_config_document(real: Path) -> None:
    att = attestation(real)
    cfg = config(att)
    forged = cfg["mr_config"].replace("86e59625be93207bc2351c4d1bba20037cec8e16", "11" * 20)
    assert forged != cfg["mr_config"]
    r = judge(att, {**cfg, "mr_config": forged})
    assert r.verdict == "MISMATCH"
    assert [(c.status, c.source) for c in r.checks[1:]] == [
        ("mismatch", "vm_config.mr_config"),
        ("match", "attestation mr_config"),
    ]
    assert facts(r) == [("mr_config", "attestation mr_config")]


def test_reserialised_mr_config_is_recognised(real: Path) -> None:
    att = attestation(real)
    cfg = config(att)
    pretty = json.dumps(json.loads(cfg["mr_config"]), indent=1)
    data = snp_attestation_bytes(
        att.report.raw, pretty, json.dumps({**cfg, "mr_config": pretty}), att.report_data
    )
    forged = parse_snp_attestation(data, "re-serialised")
    assert forged is not None
    r = diagnose_snp(forged)
    assert r.checks[1].status == "mismatch"
    assert facts(r) == [("mr_config", "canonical JSON")]


def test_missing_rootfs_hash_is_a_problem(tmp_path: Path) -> None:
    """An otherwise consistent launch whose cmdline does not commit a rootfs is refused, as
    upstream's verifier refuses it."""
    ovmf = SnpOvmf.parse(sev_ovmf())
    img = SnpImageMeasurement(
        cmdline="console=ttyS0",
        ovmf_hash=ovmf.ovmf_hash,
        kernel_hash=b"\1" * 32,
        initrd_hash=b"\2" * 32,
        hashes_table_gpa=ovmf.hashes_table_gpa,
        reset_eip=ovmf.reset_eip,
        ovmf_sections=ovmf.sections,
        raw=b"",
    )
    cbor = img.to_cbor()
    mr_config = '{"compose_hash":"' + "22" * 32 + '","key_provider":"none"}'
    cfg = rebind(
        {
            "sev_snp_measurement": json.dumps(
                {
                    "checksum_file": "",
                    "measurement": "",
                    "vcpus": 3,
                    "vcpu_type": "EPYC",
                    "guest_features": 1,
                }
            ),
            "mr_config": mr_config,
        },
        cbor,
    )
    measurement = img.launch_inputs(3, "EPYC", 1).measure().measurement
    data = snp_attestation_bytes(
        snp_report(measurement, snp_host_data(mr_config)), mr_config, json.dumps(cfg)
    )
    att = parse_snp_attestation(data)
    assert att is not None
    r = diagnose_snp(att)
    assert [c.status for c in r.checks] == ["match", "match"]
    assert all(i.ok for i in r.integrity)
    assert r.verdict == "MISMATCH"
    assert any("rootfs_hash" in p for p in r.problems)
    jsonschema.validate(r.to_dict(), SCHEMA)
    # The wrapper's report_data must be the signed report's.
    other = parse_snp_attestation(
        snp_attestation_bytes(
            snp_report(measurement, snp_host_data(mr_config)),
            mr_config,
            json.dumps(cfg),
            report_data=b"\1" * 64,
        )
    )
    assert other is not None
    assert any("report_data" in p for p in diagnose_snp(other).problems)


def test_measurement_html(real: Path) -> None:
    att = attestation(real)
    assert att.vm_config is not None
    m = att.vm_config.measurement_document().launch_inputs().measure()
    html = m._repr_html_()
    assert MEASUREMENT in html
    assert html.count("<tr>") == 1 + 10 + 1 + 10  # two tables: inputs and stages
    assert "dstack-mr-snp-steps" in html and "vmsa[1] (AP, reset_eip)" in html


def test_kernel_from_the_image_directory_is_proven(tmp_path: Path) -> None:
    """A synthetic image whose files boot another kernel than its document names."""
    image = tmp_path / "img"
    image.mkdir()
    (image / "ovmf-sev.fd").write_bytes(sev_ovmf())
    (image / "bzImage").write_bytes(b"real kernel")
    (image / "initrd").write_bytes(b"initrd")
    cmdline = "console=ttyS0 dstack.rootfs_hash=" + "ab" * 32
    (image / "metadata.json").write_text(
        json.dumps(
            {
                "cmdline": cmdline,
                "kernel": "bzImage",
                "initrd": "initrd",
                "bios": "ovmf.fd",
                "bios-sev": "ovmf-sev.fd",
            }
        )
    )
    snp = load_snp_image(image)
    assert snp.document is None and snp.computed is not None
    booted = snp.computed.launch_inputs(2, "EPYC-v4", 1).measure().measurement
    claimed = attrs_evolve(snp.computed, kernel_hash=hashlib.sha256(b"other kernel").digest())
    mr_config = '{"compose_hash":"' + "22" * 32 + '","key_provider":"none"}'
    cfg = rebind(
        {
            "sev_snp_measurement": json.dumps(
                {
                    "checksum_file": "",
                    "measurement": "",
                    "vcpus": 2,
                    "vcpu_type": "EPYC-v4",
                    "guest_features": 1,
                }
            ),
            "mr_config": mr_config,
        },
        claimed.to_cbor(),
    )
    data = snp_attestation_bytes(
        snp_report(booted, snp_host_data(mr_config)), mr_config, json.dumps(cfg)
    )
    att = parse_snp_attestation(data)
    assert att is not None
    assert facts(diagnose_snp(att)) == []
    r = diagnose_snp(att, image=snp)
    assert facts(r) == [("kernel_hash", "image directory's files")]


def attrs_evolve(img: SnpImageMeasurement, **changes: Any) -> SnpImageMeasurement:
    import attrs

    new = attrs.evolve(img, **changes)
    return attrs.evolve(new, raw=new.to_cbor())


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_diagnose_real_capture(real: Path) -> None:
    result = RUN.invoke(app, ["diagnose", "--attestation", str(capture(real))])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        "MATCH: MEASUREMENT, HOST_DATA equal the expected values (AMD SEV-SNP; report "
        "signature not checked)"
    )
    assert "verdict: MATCH" in result.output
    assert "NOT CHECKED" in result.output
    assert MEASUREMENT in result.output and HOST_DATA in result.output
    result = RUN.invoke(app, ["diagnose", "--attestation", str(capture(real)), "--json"])
    assert result.exit_code == 0
    out = json.loads(result.output)
    assert out["verdict"] == "MATCH" and out["report"]["host_data"] == HOST_DATA


def test_cli_diagnose_tampered_vcpus(real: Path, tmp_path: Path) -> None:
    att = attestation(real)
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps(with_document(config(att), vcpus=8)))
    result = RUN.invoke(
        app, ["diagnose", "--attestation", str(capture(real)), "--vm-config", str(vm)]
    )
    assert result.exit_code == 1, result.output
    head = result.output.splitlines()[0]
    assert head.startswith("MISMATCH: MEASUREMENT — the actual MEASUREMENT is reproduced with ")
    assert "vcpus=2" in head and head.endswith("[proven] (report signature not checked)")
    assert "verdict: MISMATCH" in result.output
    assert "[FACT (reproduced)] the actual MEASUREMENT is reproduced with vcpus=2" in result.output


def test_cli_diagnose_accepts_hex_and_raw(real: Path, tmp_path: Path) -> None:
    hex_text = json.loads(capture(real).read_text())["attestation"]
    (tmp_path / "a.hex").write_text(hex_text + "\n")
    (tmp_path / "a.bin").write_bytes(bytes.fromhex(hex_text))
    for name in ("a.hex", "a.bin"):
        result = RUN.invoke(app, ["diagnose", "--attestation", str(tmp_path / name)])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "content",
    [
        b'{"attestation": "zz"}',
        b'{"attestation": "0003ff"}',
        b"\x00\x03\x01",
        b'{"attestation": 5}',
    ],
)
def test_cli_diagnose_bad_snp_input_exits_2(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "att"
    path.write_bytes(content)
    result = RUN.invoke(app, ["diagnose", "--attestation", str(path)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output


def test_cli_measure_snp_from_document_and_files(real: Path, tmp_path: Path) -> None:
    att = attestation(real)
    assert att.vm_config is not None
    doc = att.vm_config.measurement_document()
    image = tmp_path / "img"
    image.mkdir()
    (image / "measurement.snp.cbor").write_bytes(doc.measurement)
    (image / "sha256sum.txt").write_bytes(doc.checksum_file)
    result = RUN.invoke(app, ["measure", "--snp", "-c", "2", str(image)])
    assert result.exit_code == 0, result.output
    assert f"MEASUREMENT: {MEASUREMENT}" in result.output
    assert "os_image_hash: f69c8e50" in result.output
    result = RUN.invoke(app, ["measure", "--snp", "-c", "3", "--json", "--events", str(image)])
    out = json.loads(result.output)
    assert out["measurement"] != MEASUREMENT and len(out["steps"]) == 1 + 7 + 3
    (image / "sha256sum.txt").write_bytes(b"0" * 64 + b"  measurement.snp.cbor\n")
    result = RUN.invoke(app, ["measure", "--snp", "-c", "2", str(image)])
    assert result.exit_code == 0 and "note: image directory" in result.output
    bad = RUN.invoke(app, ["measure", "--snp", "--vcpu-type", "EPYC-Turin", str(image)])
    assert bad.exit_code == 2 and "unknown vcpu_type" in bad.output
    bad = RUN.invoke(app, ["measure", "--snp", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


# --- the docs page shows current output ------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "snp.md"


def _block_after(page: str, command: str) -> list[str]:
    lines = page.split("\n")
    start = lines.index(f"$ {command}") + 1
    end = lines.index("```", start)
    return lines[start:end]


def test_docs_page_diagnose_output_is_current(
    real: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / capture(real).name).write_bytes(capture(real).read_bytes())
    monkeypatch.chdir(tmp_path)
    result = RUN.invoke(app, ["diagnose", "--attestation", capture(real).name])
    shown = _block_after(
        DOCS.read_text(), "dstack-mr diagnose --attestation dstack-snp-0.6.0-attestation.json"
    )
    assert result.output.rstrip("\n").split("\n") == shown, (
        "docs/snp.md shows an outdated diagnose report: paste the current output between the "
        "snp-diagnose-output markers"
    )


def test_docs_page_measure_output_is_current(real: Path, tmp_path: Path) -> None:
    att = attestation(real)
    assert att.vm_config is not None
    doc = att.vm_config.measurement_document()
    (tmp_path / "measurement.snp.cbor").write_bytes(doc.measurement)
    (tmp_path / "sha256sum.txt").write_bytes(doc.checksum_file)
    result = RUN.invoke(app, ["measure", "--snp", "-c", "2", str(tmp_path)])
    shown = _block_after(
        DOCS.read_text(), "dstack-mr measure --snp -c 2 /opt/dstack/images/dstack-nvidia-0.6.0.a2"
    )
    assert result.output.rstrip("\n").split("\n") == shown


def test_cli_measure_snp_from_sev_firmware(tmp_path: Path) -> None:
    from sevsnpmeasure.guest import snp_calc_launch_digest
    from sevsnpmeasure.vcpu_types import CPU_SIGS

    image = tmp_path / "img"
    image.mkdir()
    (image / "ovmf-sev.fd").write_bytes(sev_ovmf())
    (image / "ovmf.fd").write_bytes(b"a TDX firmware, not read for SNP")
    (image / "bzImage").write_bytes(b"kernel" * 999)
    (image / "initrd").write_bytes(b"initrd" * 777)
    cmdline = "console=ttyS0 dstack.rootfs_hash=" + "ab" * 32
    meta = {
        "cmdline": cmdline,
        "kernel": "bzImage",
        "initrd": "initrd",
        "bios": "ovmf.fd",
        "bios-sev": "ovmf-sev.fd",
    }
    (image / "metadata.json").write_text(json.dumps(meta))
    theirs = snp_calc_launch_digest(
        3,
        CPU_SIGS["EPYC-Milan"],
        str(image / "ovmf-sev.fd"),
        str(image / "bzImage"),
        str(image / "initrd"),
        cmdline,
        1,
        "",
    )
    args = ["measure", "--snp", "-c", "3", "--vcpu-type", "EPYC-Milan"]
    for target in (image, image / "metadata.json"):
        result = RUN.invoke(app, [*args, str(target)])
        assert result.exit_code == 0, result.output
        assert f"MEASUREMENT: {theirs.hex()}" in result.output
        assert "from files" in result.output
    # A shipped document that disagrees with the files is used, and the difference named.
    snp = load_snp_image(image)
    assert snp.computed is not None
    wrong = attrs_evolve(snp.computed, initrd_hash=b"\0" * 32)
    (image / "measurement.snp.cbor").write_bytes(wrong.to_cbor())
    result = RUN.invoke(app, [*args, str(image)])
    assert result.exit_code == 0
    assert "from measurement.snp.cbor" in result.output
    assert "disagree on initrd_hash" in result.output
    assert f"MEASUREMENT: {theirs.hex()}" not in result.output


def test_cli_diagnose_with_image_base_dir(real: Path, tmp_path: Path) -> None:
    att = attestation(real)
    assert att.vm_config is not None
    genuine = att.vm_config.measurement_document()
    image = tmp_path / "images" / "dstack-nvidia-0.6.0.a2"  # vm_config.image
    image.mkdir(parents=True)
    (image / "measurement.snp.cbor").write_bytes(genuine.measurement)
    (image / "sha256sum.txt").write_bytes(genuine.checksum_file)
    base = ["diagnose", "--attestation", str(capture(real)), "--image-base-dir"]
    result = RUN.invoke(app, [*base, str(tmp_path / "images")])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps(rebind(config(att), _tampered_cmdline(att))))
    result = RUN.invoke(app, [*base, str(tmp_path / "images"), "--vm-config", str(vm), "--json"])
    assert result.exit_code == 1, result.output
    out = json.loads(result.output)
    jsonschema.validate(out, SCHEMA)
    assert [(f["parameter"], f["reproduced"]) for f in out["findings"]] == [("cmdline", True)]
    result = RUN.invoke(app, [*base, str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_snp_measurement_doc_and_inspect(real: Path, tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.mkdir()
    (image / "ovmf.fd").write_bytes(sev_ovmf())
    (image / "bzImage").write_bytes(b"kernel")
    (image / "initrd").write_bytes(b"initrd")
    cmdline = " console=ttyS0 dstack.rootfs_hash=" + "ab" * 32 + " "
    meta = {"cmdline": cmdline, "kernel": "bzImage", "initrd": "initrd", "bios": "ovmf.fd"}
    (image / "metadata.json").write_text(json.dumps(meta))
    out = tmp_path / "measurement.snp.cbor"
    result = RUN.invoke(app, ["measurement-doc", "--snp", str(image), "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = SnpImageMeasurement.from_cbor(out.read_bytes())
    assert doc.cmdline == cmdline.strip()  # stored trimmed, as upstream's build does
    assert doc.kernel_hash == hashlib.sha256(b"kernel").digest()
    assert doc.ovmf_hash == SnpOvmf.parse(sev_ovmf()).ovmf_hash
    shown = json.loads(RUN.invoke(app, ["measurement-doc", "--snp", "--json", str(image)]).output)
    assert shown == doc.to_dict()
    inspected = RUN.invoke(app, ["inspect-measurement", str(out)])
    assert inspected.exit_code == 0 and json.loads(inspected.output) == doc.to_dict()
    # The capture's vm_config: decoded and its chain checked.
    vm = tmp_path / "vm.json"
    vm.write_text(attestation(real).config)
    inspected = RUN.invoke(app, ["inspect-measurement", str(vm)])
    assert inspected.exit_code == 0, inspected.output
    out_doc = json.loads(inspected.output)
    assert out_doc["integrity"]["os_image_hash"]["ok"] is True
    assert out_doc["integrity"]["measurement.snp.cbor"]["ok"] is True
    assert (out_doc["vcpus"], out_doc["reset_eip"]) == (2, 0x80B004)
    # No SEV firmware: a clear error, exit 2.
    (image / "ovmf.fd").write_bytes(b"\0" * 4096)
    bad = RUN.invoke(app, ["measurement-doc", "--snp", str(image), "-o", str(out)])
    assert bad.exit_code == 2 and "cannot be measured for SEV-SNP" in bad.output


def test_tdx_style_cmdline_suffix_is_proven(real: Path) -> None:
    att = attestation(real)
    assert att.vm_config is not None
    genuine = att.vm_config.measurement_document().image
    claimed = attrs_evolve(genuine, cmdline=genuine.cmdline + " initrd=initrd")
    r = judge(att, rebind(config(att), claimed.to_cbor()))
    assert r.verdict == "MISMATCH"
    assert facts(r) == [("cmdline", genuine.cmdline)]
    assert "initrd=initrd" in r.findings[0].message


def test_cli_refuses_tdx_evidence_beside_an_snp_attestation(real: Path) -> None:
    args = ["diagnose", "--attestation", str(capture(real)), "--actual-rtmr0", "00" * 48]
    result = RUN.invoke(app, args)
    assert result.exit_code == 2
    assert "--actual-rtmr0: TDX evidence cannot be combined" in result.output
