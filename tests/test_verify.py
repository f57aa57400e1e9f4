"""`dstack-mr verify`: real quotes with their collateral (../shared/real/collateral), tampering,
collateral shapes, TCB policy, event log, measurements and app_info."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dstack_mr import AcpiTablesFile, Image, VmConfig, kernel
from dstack_mr.appinfo import app_info
from dstack_mr.attestation import parse_attestation
from dstack_mr.collateral import Collateral, parse_collateral, pem_certificates
from dstack_mr.dcap import TcbPolicy, normalize_tcb_status, verify_quote
from dstack_mr.errors import CollateralError, ConfigError, EvidenceError, MissingExtraError
from dstack_mr.eventlog import DSTACK_RUNTIME_EVENT_TYPE, Event
from dstack_mr.evidence import Evidence
from dstack_mr.evidence_files import verify_evidence
from dstack_mr.example import write_example_image
from dstack_mr.quote import TdxQuote, parse_quote, parse_quote_signature
from dstack_mr.verify import FAILED, NOT_CHECKED, PASSED, verify
from dstack_mr_cli.main import app

RUN = CliRunner()
PAIRS = [
    "dstack-0.5.4-8cpu-64g-quote-collateral.json",
    "dstack-0.5.4-8cpu-64g-quote-tcbeval20-collateral.json",
    "phala-20a06f-quote-collateral.json",
]
UP_TO_DATE = "phala-20a06f-quote-collateral.json"
OUT_OF_DATE = "dstack-0.5.4-8cpu-64g-quote-tcbeval20-collateral.json"
ADVISORIES = ["INTEL-SA-01192", "INTEL-SA-01245", "INTEL-SA-01312", "INTEL-SA-01313"]
BOOT_REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2")
BODY = 48  # the TD report body of a v4 quote starts after the 48-byte header
SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "docs" / "verify.schema.json").read_text()
)


def pair(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(shared_path("real", "collateral", name).read_text())
    return doc


def when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def flipped(quote: TdxQuote, offset: int) -> TdxQuote:
    raw = bytearray(quote.raw)
    raw[offset] ^= 0x01
    return parse_quote(bytes(raw))


def with_pck_chain(quote: TdxQuote, chain: bytes) -> TdxQuote:
    """The quote with its embedded PCK chain replaced (every enclosing length fixed up)."""
    sig = parse_quote_signature(quote)
    assert sig.pck_chain is not None and sig.pck_chain_offset is not None
    raw = bytearray(quote.raw[: quote.signed_length])
    start, end = sig.pck_chain_offset, sig.pck_chain_offset + len(sig.pck_chain)
    delta = len(chain) - len(sig.pck_chain)
    raw[start:end] = chain
    for off in (start - 4, sig.cert_data_offset - 4, sig.signature_offset - 4):
        (n,) = struct.unpack_from("<I", raw, off)
        struct.pack_into("<I", raw, off, n + delta)
    return parse_quote(bytes(raw))


def cli(*args: str) -> tuple[int, list[str]]:
    result = RUN.invoke(app, ["verify", *args])
    return result.exit_code, result.output.splitlines()


def write(tmp: Path, name: str, doc: object) -> str:
    path = tmp / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


# --- the real pairs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAIRS)
def test_every_pair_gives_its_expected_status(name: str) -> None:
    doc = pair(name)
    quote = parse_quote(doc["quote"])
    collateral = parse_collateral(doc)
    verdict = verify_quote(quote, collateral, when(doc["verify_at"]))
    assert verdict.verified, verdict.error
    assert verdict.status == doc["expected"]["status"]
    assert list(verdict.advisory_ids) == doc["expected"]["advisory_ids"]
    assert verdict.accepted == (doc["expected"]["status"] == "UpToDate")
    assert verdict.window is not None
    assert verdict.window.not_after == when(doc["valid_until"])
    assert verdict.window.contains(when(doc["verify_at"]))


@pytest.mark.parametrize("name", PAIRS)
def test_cli_pair_exit_status_follows_the_policy(name: str) -> None:
    doc = pair(name)
    path = str(shared_path("real", "collateral", name))
    code, lines = cli("--collateral", path, "--at", doc["verify_at"])
    up_to_date = doc["expected"]["status"] == "UpToDate"
    assert code == (0 if up_to_date else 1), lines
    assert lines[0].startswith("VALID" if up_to_date else "INVALID: TCB status OutOfDate")
    assert f"time used: {doc['verify_at']} (--at)" in lines
    assert any(line.endswith(f".. {doc['valid_until']}") for line in lines)


def test_out_of_date_pair_accepted_when_asked_and_advisories_listed() -> None:
    doc = pair(OUT_OF_DATE)
    path = str(shared_path("real", "collateral", OUT_OF_DATE))
    code, lines = cli("--collateral", path, "--at", doc["verify_at"])
    assert code == 1
    assert "not accepted" in lines[0] and "OutOfDate" in lines[0]
    assert f"advisories: {', '.join(ADVISORIES)}" in lines
    code, lines = cli(
        "--collateral", path, "--at", doc["verify_at"], "--accept-tcb", "UpToDate,OutOfDate"
    )
    assert code == 0, lines
    assert f"advisories: {', '.join(ADVISORIES)}" in lines
    assert "TCB status: OutOfDate (accepted; accepted: UpToDate, OutOfDate)" in lines


def test_full_verification_of_the_054_capture_with_its_collateral() -> None:
    doc = pair(OUT_OF_DATE)
    att = parse_attestation(shared_path("real", "dstack-0.5.4-8cpu-64g-getquote.json").read_text())
    result = verify(
        att,
        parse_collateral(doc),
        at=when(doc["verify_at"]),
        policy=TcbPolicy.from_names("UpToDate,OutOfDate"),
    )
    assert result.is_valid and result.reason is None
    d = result.details
    assert (d.quote_verified, d.event_log_verified, d.tcb_status) == (True, True, "OutOfDate")
    assert not d.os_image_hash_verified and not d.acpi_tables_verified
    assert d.check("measurements") == attrs.evolve(d.check("measurements"), status=NOT_CHECKED)
    info = d.app_info
    assert info is not None and d.key_provider is not None
    assert d.key_provider.name == "local-sgx"
    # dstack's app id is the first 20 bytes of the compose hash of the first deployment.
    assert info.app_id.hex() == "65a2417f54af907a7bdbe50080a5a7cd1589e2bb"
    assert info.compose_hash[:20] == info.app_id and len(info.compose_hash) == 32
    assert info.instance_id == b""
    assert info.device_id == hashlib.sha256(b"").digest()
    q = att.quote
    assert q is not None
    kp = hashlib.sha256(info.key_provider_info).digest()
    assert info.mr_system == hashlib.sha256(q.mrtd + q.rtmr0 + q.rtmr1 + q.rtmr2 + kp).digest()
    # The application's own events after system-ready are not part of the identity.
    assert info.init_script_hashes == ()


def test_json_form_uses_dstack_verifier_names() -> None:
    doc = pair(UP_TO_DATE)
    result = verify(parse_quote(doc["quote"]), parse_collateral(doc), at=when(doc["verify_at"]))
    out = json.loads(result.to_json())
    assert list(out) == ["is_valid", "details", "reason"]
    for key in ("quote_verified", "event_log_verified", "os_image_hash_verified",
                "acpi_tables_verified", "tcb_status", "advisory_ids", "report_data",
                "app_info"):  # fmt: skip
        assert key in out["details"]
    assert out["is_valid"] is True and out["details"]["tcb_status"] == "UpToDate"
    assert out["details"]["report_data"] == parse_quote(doc["quote"]).report_data.hex()
    assert out["details"]["verified_at"] == doc["verify_at"]
    assert out["details"]["collateral_valid_until"] == doc["valid_until"]
    jsonschema.validate(out, SCHEMA)
    code, lines = cli(
        "--collateral", str(shared_path("real", "collateral", UP_TO_DATE)),
        "--at", doc["verify_at"], "--json",
    )  # fmt: skip
    assert code == 0 and json.loads("\n".join(lines))["is_valid"] is True


# --- tampering ---------------------------------------------------------------------------------


def _tamper_targets(quote: TdxQuote) -> dict[str, int]:
    sig = parse_quote_signature(quote)
    assert sig.qe_report_offset is not None and sig.pck_chain_offset is not None
    return {
        "body (RTMR0)": BODY + 328 + 5,
        "body (report_data)": BODY + 520,
        "quote signature": sig.signature_offset + 7,
        "QE report": sig.qe_report_offset + 100,
        "QE report signature": sig.qe_report_offset + 384 + 9,
        "certification data (PCK leaf)": sig.pck_chain_offset + 400,
    }


@pytest.mark.parametrize(
    "target",
    [
        "body (RTMR0)",
        "body (report_data)",
        "quote signature",
        "QE report",
        "QE report signature",
        "certification data (PCK leaf)",
    ],
)
def test_one_flipped_quote_byte_is_invalid(target: str, tmp_path: Path) -> None:
    doc = pair(UP_TO_DATE)
    quote = parse_quote(doc["quote"])
    bad = flipped(quote, _tamper_targets(quote)[target])
    verdict = verify_quote(bad, parse_collateral(doc), when(doc["verify_at"]))
    assert not verdict.verified and verdict.status is None
    qfile = tmp_path / "quote.bin"
    qfile.write_bytes(bad.raw)
    code, lines = cli(
        "--quote", str(qfile), "--collateral", str(shared_path("real", "collateral", UP_TO_DATE)),
        "--at", doc["verify_at"],
    )  # fmt: skip
    assert code == 1
    assert lines[0].startswith("INVALID: quote verification failed: ")
    assert any(w in lines[0] for w in ("signature is invalid", "Signature is invalid",
                                       "certificate", "cert"))  # fmt: skip


@pytest.mark.parametrize(
    ("field", "edit", "message"),
    [
        ("tcb_info", lambda c: c.tcb_info.replace('"UpToDate"', '"OutOfDate"', 1),
         "Signature is invalid for tcb_info"),
        ("qe_identity", lambda c: c.qe_identity.replace('"isvprodid":2', '"isvprodid":3'),
         "Signature is invalid for qe_identity"),
        ("tcb_info_signature", lambda c: bytes([c.tcb_info_signature[0] ^ 1])
         + c.tcb_info_signature[1:], "Signature is invalid for tcb_info"),
        ("pck_crl", lambda c: c.pck_crl[:-10] + bytes([c.pck_crl[-10] ^ 1]) + c.pck_crl[-9:],
         "certificate chain"),
    ],
)  # fmt: skip
def test_collateral_edit_is_invalid(field: str, edit: Any, message: str, tmp_path: Path) -> None:
    doc = pair(UP_TO_DATE)
    collateral = parse_collateral(doc)
    edited = attrs.evolve(collateral, **{field: edit(collateral)})
    assert edited != collateral
    verdict = verify_quote(parse_quote(doc["quote"]), edited, when(doc["verify_at"]))
    assert not verdict.verified and message in (verdict.error or "")
    path = write(tmp_path, "c.json", {"quote": doc["quote"], "collateral": edited.to_dict()})
    code, lines = cli("--collateral", path, "--at", doc["verify_at"])
    assert code == 1 and message in lines[0]


@pytest.mark.parametrize("name", PAIRS)
def test_expired_and_not_yet_valid_times_are_invalid(name: str) -> None:
    doc = pair(name)
    path = str(shared_path("real", "collateral", name))
    after = (when(doc["valid_until"]) + dt.timedelta(seconds=1)).isoformat()
    code, lines = cli("--collateral", path, "--at", after, "--accept-tcb", "UpToDate,OutOfDate")
    assert code == 1
    assert lines[0].startswith(f"INVALID: quote verification failed: the collateral expired at "
                               f"{doc['valid_until']}")  # fmt: skip
    code, lines = cli("--collateral", path, "--at", "2020-01-01T00:00:00Z")
    assert code == 1 and "is not valid before" in lines[0]
    # Without --at the time is now, which is after every published window.
    code, lines = cli("--collateral", path)
    assert code == 1 and "expired" in lines[0] and lines[1].endswith("(now)")


def _other_chain() -> bytes:
    other = parse_quote(pair(PAIRS[0])["quote"])
    chain = parse_quote_signature(other).pck_chain
    assert chain is not None
    return chain


def test_swapped_pck_chain_in_collateral_is_refused(tmp_path: Path) -> None:
    doc = pair(UP_TO_DATE)
    quote = parse_quote(doc["quote"])
    own = parse_quote_signature(quote).pck_chain
    assert own is not None and pem_certificates(own) != pem_certificates(_other_chain())
    collateral = parse_collateral(doc)
    swapped = attrs.evolve(collateral, pck_certificate_chain=_other_chain().decode())
    verdict = verify_quote(quote, swapped, when(doc["verify_at"]))
    assert not verdict.verified
    assert "not the quote's own PCK chain" in (verdict.error or "")
    path = write(tmp_path, "c.json", {"quote": doc["quote"], "collateral": swapped.to_dict()})
    code, lines = cli("--collateral", path, "--at", doc["verify_at"])
    assert code == 1 and "not the quote's own PCK chain (leaf certificates differ)" in lines[0]
    # The quote's own chain, shipped with the collateral (as PCCS clients do), is fine.
    same = attrs.evolve(collateral, pck_certificate_chain=own.decode().rstrip("\0") + "\n")
    assert verify_quote(quote, same, when(doc["verify_at"])).accepted


def test_swapped_pck_chain_in_quote_is_invalid(tmp_path: Path) -> None:
    doc = pair(UP_TO_DATE)
    quote = with_pck_chain(parse_quote(doc["quote"]), _other_chain())
    assert parse_quote_signature(quote).pck_chain == _other_chain()
    qfile = tmp_path / "quote.hex"
    qfile.write_text(quote.raw.hex())
    code, lines = cli(
        "--quote", str(qfile), "--collateral", str(shared_path("real", "collateral", UP_TO_DATE)),
        "--at", doc["verify_at"],
    )  # fmt: skip
    assert code == 1 and lines[0].startswith("INVALID: quote verification failed:")
    # The other machine's chain names the other platform, whose collateral this is not.
    assert "FMSPC B0C06F000000" in lines[0]


def test_wrong_platform_collateral_says_so() -> None:
    att = parse_attestation(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    doc = pair(UP_TO_DATE)
    result = verify(att, parse_collateral(doc), at=when(doc["verify_at"]))
    assert not result.is_valid
    assert result.reason is not None
    assert "collateral for FMSPC 90C06F000000 is not available" in result.reason


# --- the 0.6.0 capture, whose platform has no published collateral ---------------------------


def test_060_capture_without_collateral_checks_the_rest() -> None:
    path = str(shared_path("real", "dstack-0.6.0-getquote.json"))
    code, lines = cli("--attestation", path)
    assert code == 1
    assert lines[0].startswith("INVALID: signature not checked: no collateral given")
    assert "FMSPC 90C06F000000" in lines[0]
    text = "\n".join(lines)
    assert "ok   event_log: 29 events replay to the quote's RTMR0-3" in text
    assert "--   quote: signature not checked" in text
    result = verify(parse_attestation(Path(path).read_text()))
    d = result.details
    assert not d.quote_verified and d.event_log_verified and d.fmspc == "90C06F000000"
    assert d.app_info is not None and d.key_provider is not None
    assert d.key_provider.name == "kms"
    assert d.app_info.instance_id.hex() == "050bf89570575fe8fab4cb8f0a62a9e64efe8ead"
    assert d.app_info.os_image_hash.hex().startswith("e6f5cfec")


# --- event log, report_data, measurements -----------------------------------------------------


def test_altered_event_log_fails_and_withholds_app_info() -> None:
    doc = pair(OUT_OF_DATE)
    att = parse_attestation(shared_path("real", "dstack-0.5.4-8cpu-64g-getquote.json").read_text())
    assert att.quote is not None
    events = list(att.events)
    k = next(i for i, e in enumerate(events) if e.event == "compose-hash")
    events[k] = attrs.evolve(events[k], event_payload=b"\x00" * 32)
    ev = Evidence(quote=att.quote, events=tuple(events))
    policy = TcbPolicy.from_names("OutOfDate")
    result = verify(ev, parse_collateral(doc), at=when(doc["verify_at"]), policy=policy)
    assert not result.is_valid and result.details.app_info is None
    assert result.reason == "RTMR3 events whose digest is not that of their payload: compose-hash"
    events[k] = attrs.evolve(events[k], digest=bytes(48), payload_consistent=True)
    result = verify(attrs.evolve(ev, events=tuple(events)), parse_collateral(doc),
                    at=when(doc["verify_at"]), policy=policy)  # fmt: skip
    assert result.reason is not None and "do not replay to the quote's RTMR3" in result.reason


def test_report_data_check() -> None:
    doc = pair(UP_TO_DATE)
    quote = parse_quote(doc["quote"])
    coll, at = parse_collateral(doc), when(doc["verify_at"])
    ok = verify(quote, coll, at=at, report_data=quote.report_data)
    assert ok.is_valid and ok.details.check("report_data") is not None
    bad = verify(quote, coll, at=at, report_data=b"\x12\x34")
    assert not bad.is_valid and bad.reason is not None and "report_data" in bad.reason
    path = str(shared_path("real", "collateral", UP_TO_DATE))
    code, _ = cli("--collateral", path, "--at", doc["verify_at"], "--report-data",
                  "0x" + quote.report_data.hex())  # fmt: skip
    assert code == 0
    code, lines = cli("--collateral", path, "--at", doc["verify_at"], "--report-data", "1234")
    assert code == 1 and "report_data" in lines[0]


def _quote_with_registers(quote: TdxQuote, regs: dict[str, bytes]) -> TdxQuote:
    raw = bytearray(quote.raw)
    offsets = {"mrtd": 136, "rtmr0": 328, "rtmr1": 376, "rtmr2": 424}
    for name, value in regs.items():
        raw[BODY + offsets[name] : BODY + offsets[name] + 48] = value
    return parse_quote(bytes(raw))


def test_legacy_measurements_against_an_image(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    image = Image.load(meta.parent, AcpiTablesFile(meta.parent / "acpi-tables.bin"))
    sums = b"0123  ovmf.fd\n"
    (meta.parent / "sha256sum.txt").write_bytes(sums)
    vm = VmConfig(cpu_count=2, memory_size=2 << 30, os_image_hash=hashlib.sha256(sums).digest())
    m = image.measure(vm).measurements
    real = parse_quote(pair(UP_TO_DATE)["quote"])
    quote = _quote_with_registers(real, {r: getattr(m, r) for r in ("mrtd", "rtmr0", "rtmr1",
                                                                     "rtmr2")})  # fmt: skip
    result = verify(quote, image=image, vm_config=vm)
    d = result.details
    assert [c.status for c in d.checks if c.name in ("measurements", "os_image_hash")] == [
        PASSED,
        PASSED,
    ]
    assert d.acpi_tables_verified and d.os_image_hash_verified and not d.quote_verified
    assert not result.is_valid  # the quote's signature was not checked
    other = attrs.evolve(vm, os_image_hash=bytes(32))
    assert (
        verify(quote, image=image, vm_config=other).details.check("os_image_hash").status == FAILED
    )  # type: ignore[union-attr]
    # Images that ship digest.txt instead name themselves by it.
    (meta.parent / "sha256sum.txt").unlink()
    (meta.parent / "digest.txt").write_text(hashlib.sha256(sums).hexdigest() + "\n")
    hashed = verify(quote, image=image, vm_config=vm).details.check("os_image_hash")
    assert hashed is not None and hashed.status == PASSED and "(digest.txt)" in hashed.message
    (meta.parent / "digest.txt").unlink()
    hashed = verify(quote, image=image, vm_config=vm).details.check("os_image_hash")
    assert hashed is not None and hashed.status == NOT_CHECKED
    bigger = attrs.evolve(vm, memory_size=4 << 30)
    result = verify(quote, image=image, vm_config=bigger)
    assert result.reason is not None and result.reason.startswith("RTMR0 differ")
    assert not result.details.acpi_tables_verified


def test_truncated_kernel_in_the_image_is_a_warning(tmp_path: Path) -> None:
    """measure's warning reaches verify's result (text and JSON) without changing the verdict."""
    meta = write_example_image(tmp_path / "img")
    whole = (meta.parent / "bzImage").read_bytes()
    cut = whole[: kernel.pe_layout(whole, len(whole)).data_end - 5000]
    (meta.parent / "bzImage").write_bytes(cut)
    warning = kernel.truncation_warning(cut)
    assert warning is not None
    acpi = meta.parent / "acpi-tables.bin"
    image = Image.load(meta.parent, AcpiTablesFile(acpi))
    vm = VmConfig(cpu_count=2, memory_size=2 << 30)
    m = image.measure(vm).measurements
    quote = _quote_with_registers(
        parse_quote(pair(UP_TO_DATE)["quote"]), {r: getattr(m, r) for r in BOOT_REGISTERS}
    )
    d = verify(quote, image=image, vm_config=vm).details
    assert d.warnings == (warning,)
    assert d.check("measurements").status == PASSED  # type: ignore[union-attr]
    args = ["--quote", write(tmp_path, "q.hex", quote.raw.hex()),
            "--vm-config", write(tmp_path, "vm.json", vm.to_dict()),
            "--image-dir", str(meta.parent), "--acpi-tables", str(acpi)]  # fmt: skip
    code, lines = cli(*args)
    assert code == 1 and f"warning: {warning}" in lines, lines
    code, lines = cli(*args, "--json")
    out = json.loads("\n".join(lines))
    assert out["details"]["warnings"] == [warning]
    jsonschema.validate(out, SCHEMA)
    # A whole kernel: no warning, and no "warnings" key.
    (meta.parent / "bzImage").write_bytes(whole)
    m = Image.load(meta.parent, AcpiTablesFile(acpi)).measure(vm).measurements
    quote = _quote_with_registers(quote, {r: getattr(m, r) for r in BOOT_REGISTERS})
    args[1] = write(tmp_path, "q.hex", quote.raw.hex())
    code, lines = cli(*args, "--json")
    out = json.loads("\n".join(lines))
    assert "warnings" not in out["details"], out["details"]
    assert [c["status"] for c in out["details"]["checks"] if c["name"] == "measurements"] == [
        PASSED
    ]


# --- collateral shapes -------------------------------------------------------------------------


def _pccs_shape(c: Collateral) -> dict[str, Any]:
    quoted = urllib.parse.quote(c.tcb_info_issuer_chain, safe="")
    return {
        "pckCrlIssuerChain": c.pck_crl_issuer_chain + "\0",
        "rootCaCrl": c.root_ca_crl.hex(),
        "pckCrl": "-----BEGIN X509 CRL-----\n"
        + __import__("base64").encodebytes(c.pck_crl).decode()
        + "-----END X509 CRL-----\n",
        "tcbInfoIssuerChain": quoted,
        "tcbInfo": '{"tcbInfo":' + c.tcb_info + ',"signature":"' + c.tcb_info_signature.hex()
        + '"}',
        "qeIdentityIssuerChain": c.qe_identity_issuer_chain,
        "qeIdentity": {"enclaveIdentity": json.loads(c.qe_identity),
                       "signature": c.qe_identity_signature.hex()},
    }  # fmt: skip


@pytest.mark.parametrize(
    "shape",
    ["hex", "int-arrays", "pccs", "public-data", "quote_collateral", "dcap-qvl", "nul-terminated"],
)
def test_collateral_shapes_read_to_the_same_collateral(shape: str) -> None:
    doc = pair(UP_TO_DATE)
    base = parse_collateral(doc)
    d = base.to_dict()
    if shape == "hex":
        obj: Any = d
    elif shape == "int-arrays":
        obj = {k: list(bytes.fromhex(v)) if k in ("root_ca_crl", "pck_crl", "tcb_info_signature",
               "qe_identity_signature") else v for k, v in d.items()}  # fmt: skip
    elif shape == "pccs":
        obj = _pccs_shape(base)
    elif shape == "public-data":
        obj = {"tee_participant_info": {"Dstack": {"quote": list(bytes.fromhex(doc["quote"])),
                                                   "collateral": d, "tcb_info": {}}}}  # fmt: skip
    elif shape == "quote_collateral":
        obj = {"quote_collateral": d}
    elif shape == "dcap-qvl":
        import dcap_qvl

        obj = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(d))
    else:
        obj = {k: v + "\0" for k, v in d.items()}
    got = parse_collateral(obj)
    assert attrs.evolve(got, source="") == attrs.evolve(base, source="")
    assert verify_quote(parse_quote(doc["quote"]), got, when(doc["verify_at"])).accepted


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({}, "missing pck_crl_issuer_chain"),
        ([1, 2], "expected a JSON object"),
        ({"collateral": {"root_ca_crl": "zz"}}, "missing"),
    ],
)
def test_malformed_collateral_is_bad_input(obj: object, message: str, tmp_path: Path) -> None:
    with pytest.raises(CollateralError, match=message):
        parse_collateral(obj)
    doc = pair(UP_TO_DATE)
    path = write(tmp_path, "c.json", obj)
    qpath = write(tmp_path, "q.hex", doc["quote"])
    code, lines = cli("--quote", qpath, "--collateral", path)
    assert code == 2 and lines[-1].startswith("error: collateral")


def test_bad_byte_field_names_the_field() -> None:
    d = parse_collateral(pair(UP_TO_DATE)).to_dict()
    d["pck_crl"] = "not hex"
    with pytest.raises(CollateralError, match="'pck_crl'"):
        parse_collateral(d)
    d["pck_crl"] = [1, 300]
    with pytest.raises(CollateralError, match="element 1"):
        parse_collateral(d)


# --- policy and statuses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("UpToDate", "UpToDate"),
        ("OK", "UpToDate"),
        ("OUT_OF_DATE", "OutOfDate"),
        ("out-of-date", "OutOfDate"),
        ("SW_HARDENING_NEEDED", "SWHardeningNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"),
        ("SGX_QL_QV_RESULT_OUT_OF_DATE_CONFIG_NEEDED", None),
        ("OutOfDateConfigurationNeeded", "OutOfDateConfigurationNeeded"),
        ("REVOKED", "Revoked"),
        ("Great", None),
    ],
)
def test_status_normalisation(text: str, status: str | None) -> None:
    assert normalize_tcb_status(text) == status


def test_policy_fails_closed() -> None:
    assert TcbPolicy().names() == ["UpToDate"]
    assert not TcbPolicy().accepts("OutOfDate") and not TcbPolicy().accepts(None)
    assert TcbPolicy.from_names(" out_of_date , UpToDate").names() == ["UpToDate", "OutOfDate"]
    for bad in ("Revoked", "", "UpToDate,Typo"):
        with pytest.raises(ConfigError):
            TcbPolicy.from_names(bad)


@pytest.mark.parametrize(
    "args",
    [
        ["--at", "yesterday"],
        ["--report-data", "xyz"],
        ["--report-data", "00" * 65],
        ["--accept-tcb", "Revoked"],
    ],
)
def test_bad_options_exit_2(args: list[str]) -> None:
    path = str(shared_path("real", "collateral", UP_TO_DATE))
    code, _ = cli("--collateral", path, *args)
    assert code == 2


def test_no_quote_is_bad_input(tmp_path: Path) -> None:
    d = parse_collateral(pair(UP_TO_DATE)).to_dict()
    code, lines = cli("--collateral", write(tmp_path, "c.json", d))
    assert code == 2 and lines[-1].startswith("error: no quote")


@pytest.mark.parametrize("option", ["--quote", "--vm-config"])
def test_attestation_given_as_a_part_names_attestation(option: str) -> None:
    """The guidance diagnose gives (issue 9), not "unsupported quote version 2683"."""
    att = str(shared_path("real", "dstack-0.6.0-getquote.json"))
    others = [] if option == "--quote" else ["--attestation", att]
    result = RUN.invoke(app, ["verify", *others, option, att])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {option} {att} is an attestation response (it has 'quote', 'event_log'), not "
        "a bare part of one; use --attestation FILE\n"
    )
    with pytest.raises(EvidenceError, match=r"^--quote .* use --attestation FILE$"):
        verify_evidence(quote=att)


# --- app_info ----------------------------------------------------------------------------------


def _runtime(name: str, payload: bytes) -> Event:
    from dstack_mr.eventlog import runtime_event_digest

    digest = runtime_event_digest(name, payload)
    return Event(3, DSTACK_RUNTIME_EVENT_TYPE, digest, name, payload, payload_consistent=True)


def test_mr_system_matches_dstack_verifier_readme_example() -> None:
    # Registers and key-provider info of the example response in dstack's verifier README.
    h = bytes.fromhex
    quote = attrs.evolve(
        parse_quote(pair(UP_TO_DATE)["quote"]),
        mrtd=h("f06dfda6dce1cf904d4e2bab1dc370634cf95cefa2ceb2de2eee127c9382698090d7a4a13e14c536ec6c9c3c8fa87077"),
        rtmr=(
            h("68102e7b524af310f7b7d426ce75481e36c40f5d513a9009c046e9d37e31551f0134d954b496a3357fd61d03f07ffe96"),
            h("a7b523278d4f914ee8df0ec80cd1c3d498cbf1152b0c5eaf65bad9425072874a3fcf891e8b01713d3d9937e3e0d26c15"),
            h("dbf4924c07f5066f3dc6859844184344306aa3263817153dcaee85af97d23e0c0b96efe0731d8865a8747e51b9e351ac"),
            bytes(48),
        ),
    )  # fmt: skip
    key = (b'{"name":"kms","id":"3059301306072a8648ce3d020106082a8648ce3d03010703420004'
           b'19b2457dd9b8aa6446d980f136fff7812ecd6c77740eeb0e28b10d56c0c00028a5b6e59dcea307'
           b'd583bd1f70769e9c116df2bcfb1758a95d8613e7de1c8482c0"}')  # fmt: skip
    events = [
        _runtime("app-id", b"\x01" * 20),
        _runtime("key-provider", key),
        _runtime("init-script-hash", b"\x02" * 32),
        _runtime("system-ready", b""),
        _runtime("app-id", b"\x03" * 20),
        _runtime("init-script-hash", b"\x04" * 32),
    ]
    info = app_info(quote, events)
    assert (
        info.mr_system.hex() == "145010fa227e6c2537ad957c64e4a8486fcbfd8265ddfb359168b59afcff1d05"
    )
    assert info.app_id == b"\x01" * 20  # the first, before system-ready
    assert info.init_script_hashes == (b"\x02" * 32,)
    assert info.key_provider is not None and info.key_provider.name == "kms"
    no_key = app_info(quote, events[:1])
    assert no_key.key_provider_info == b"" and no_key.key_provider is None
    assert (
        no_key.mr_system
        == hashlib.sha256(quote.mrtd + b"".join(quote.rtmr[:3]) + bytes(32)).digest()
    )


def test_mr_aggregated_includes_owner_fields_only_when_set() -> None:
    quote = parse_quote(pair(UP_TO_DATE)["quote"])
    events = [_runtime("app-id", b"\x01" * 20)]
    plain = app_info(quote, events).mr_aggregated
    from dstack_mr.digest import replay

    rtmr3 = replay(e.digest for e in events)
    assert plain == hashlib.sha256(quote.mrtd + b"".join(quote.rtmr[:3]) + rtmr3).digest()
    owned = attrs.evolve(quote, mr_owner=b"\x05" * 48)
    want = hashlib.sha256(quote.mrtd + b"".join(quote.rtmr[:3]) + rtmr3 + bytes(48)
                          + b"\x05" * 48 + bytes(48)).digest()  # fmt: skip
    assert app_info(owned, events).mr_aggregated == want


def test_debug_td_is_invalid() -> None:
    doc = pair(UP_TO_DATE)
    quote = parse_quote(doc["quote"])
    debug = attrs.evolve(quote, td_attributes=b"\x01" + quote.td_attributes[1:])
    result = verify(debug, parse_collateral(doc), at=when(doc["verify_at"]))
    assert result.reason is not None and "debug mode" in result.reason


# --- without the extra -------------------------------------------------------------------------


def test_core_imports_without_dcap_qvl() -> None:
    code = (
        "import sys; sys.modules['dcap_qvl'] = None\n"
        "import dstack_mr, dstack_mr.verify, dstack_mr_cli.main\n"
        "from dstack_mr.dcap import quote_fmspc\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = pair(UP_TO_DATE)
    monkeypatch.setitem(sys.modules, "dcap_qvl", None)
    with pytest.raises(MissingExtraError, match=r"dstack-mr\[verify\]"):
        verify_quote(parse_quote(doc["quote"]), parse_collateral(doc))
    path = str(shared_path("real", "collateral", UP_TO_DATE))
    result = RUN.invoke(app, ["verify", "--collateral", path])
    assert result.exit_code == 2 and "pip install 'dstack-mr[verify]'" in result.output
    # Without collateral nothing needs dcap-qvl; the platform is just unknown.
    code, lines = cli("--attestation", str(shared_path("real", "dstack-0.6.0-getquote.json")))
    assert code == 1 and "(FMSPC unknown)" in lines[0]


# --- --pccs-url against a collateral server on the loopback interface --------------------------


class _Pccs:
    """A minimal PCCS (Intel's v4 API) serving one pair's collateral; records requested paths."""

    def __init__(self, collateral: Collateral) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        c = collateral
        quote = urllib.parse.quote
        routes: dict[str, tuple[bytes, dict[str, str]]] = {
            "/sgx/certification/v4/pckcrl": (
                c.pck_crl,
                {"SGX-PCK-CRL-Issuer-Chain": quote(c.pck_crl_issuer_chain)},
            ),
            "/sgx/certification/v4/rootcacrl": (c.root_ca_crl.hex().encode(), {}),
            "/tdx/certification/v4/tcb": (
                f'{{"tcbInfo":{c.tcb_info},"signature":"{c.tcb_info_signature.hex()}"}}'.encode(),
                {"TCB-Info-Issuer-Chain": quote(c.tcb_info_issuer_chain)},
            ),
            "/tdx/certification/v4/qe/identity": (
                f'{{"enclaveIdentity":{c.qe_identity},"signature":"'
                f'{c.qe_identity_signature.hex()}"}}'.encode(),
                {"SGX-Enclave-Identity-Issuer-Chain": quote(c.qe_identity_issuer_chain)},
            ),
        }
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                paths.append(self.path)
                route = routes.get(urllib.parse.urlparse(self.path).path)
                if route is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                body, headers = route
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def pccs() -> Any:
    server = _Pccs(parse_collateral(pair(UP_TO_DATE)))
    yield server
    server.close()


def test_pccs_url_fetches_from_the_given_server_only(pccs: _Pccs, tmp_path: Path) -> None:
    doc = pair(UP_TO_DATE)
    qpath = write(tmp_path, "q.hex", doc["quote"])
    code, lines = cli("--quote", qpath, "--pccs-url", pccs.url, "--at", doc["verify_at"])
    assert code == 0, lines
    assert lines[0].startswith("VALID") and "TCB status: UpToDate (accepted" in "\n".join(lines)
    assert sorted(p.split("?")[0] for p in pccs.paths) == [
        "/sgx/certification/v4/pckcrl",
        "/sgx/certification/v4/rootcacrl",
        "/tdx/certification/v4/qe/identity",
        "/tdx/certification/v4/tcb",
    ]
    assert "fmspc=20A06F000000" in next(p for p in pccs.paths if "/tcb" in p)


def test_pccs_url_errors_are_bad_input(pccs: _Pccs, tmp_path: Path) -> None:
    doc = pair(UP_TO_DATE)
    qpath = write(tmp_path, "q.hex", doc["quote"])
    code, lines = cli("--quote", qpath, "--pccs-url", pccs.url + "/nothing-here")
    assert code == 2 and "cannot fetch collateral" in lines[-1]
    code, lines = cli("--quote", qpath, "--pccs-url", "file:///etc/passwd")
    assert code == 2 and "http" in lines[-1]
    path = str(shared_path("real", "collateral", UP_TO_DATE))
    code, _ = cli("--collateral", path, "--pccs-url", pccs.url)
    assert code == 2


# --- the docs page ------------------------------------------------------------------------------


def test_docs_worked_example_is_real_output() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "verify.md").read_text()
    block = page[page.index("<!-- verify-example -->") :]
    block = block[block.index("```text\n") + 8 :]
    block = block[: block.index("\n```")]
    real = shared_path("real")
    code, lines = cli(
        "--attestation", str(real / "dstack-0.5.4-8cpu-64g-getquote.json"),
        "--collateral", str(real / "collateral" / OUT_OF_DATE), "--at", "2026-08-13T11:45:38Z",
    )  # fmt: skip
    assert code == 1 and lines == block.splitlines()
    code, lines = cli(
        "--attestation", str(real / "dstack-0.5.4-8cpu-64g-getquote.json"),
        "--collateral", str(real / "collateral" / OUT_OF_DATE), "--at", "2026-08-13T11:45:38Z",
        "--accept-tcb", "UpToDate,OutOfDate",
    )  # fmt: skip
    assert code == 0
    assert lines[0] == (
        "VALID: every check passed (not checked: report_data, measurements, os_image_hash)"
    )
    assert lines[0] in " ".join(page.split())
    # The page's claim about the September 2025 collateral for the same quote.
    code, lines = cli(
        "--attestation", str(real / "dstack-0.5.4-8cpu-64g-getquote.json"),
        "--collateral", str(real / "collateral" / PAIRS[0]), "--at", "2025-09-16T11:31:47Z",
    )  # fmt: skip
    assert code == 0 and "TCB status: UpToDate (accepted; accepted: UpToDate)" in lines
    lite = page[page.index("<!-- verify-lite -->\n```text\n") + 29 :]
    lite_lines = lite[: lite.index("\n```")].splitlines()
    code, lines = cli("--attestation", str(real / "dstack-0.6.0-getquote.json"))
    assert code == 1 and lines[0] == lite_lines[0]
    start = lines.index("checks:")
    assert lines[start : start + len(lite_lines) - 1] == lite_lines[1:]


# --- hostile bytes -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_crls_and_certificates_fail_only_with_collateral_error(data: Any) -> None:
    base = parse_collateral(pair(UP_TO_DATE))
    field = data.draw(st.sampled_from(["root_ca_crl", "pck_crl", "tcb_info_issuer_chain"]))
    if field == "tcb_info_issuer_chain":
        der = bytearray(pem_certificates(base.tcb_info_issuer_chain)[0])
    else:
        der = bytearray(getattr(base, field))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] = data.draw(st.integers(0, 255))
    der = der[: data.draw(st.integers(0, len(der)))]
    if field == "tcb_info_issuer_chain":
        import base64

        pem = "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(bytes(der)).decode()
        edited = attrs.evolve(base, tcb_info_issuer_chain=pem + "\n-----END CERTIFICATE-----\n")
    else:
        edited = attrs.evolve(base, **{field: bytes(der)})
    try:
        window = edited.validity()
    except CollateralError:
        return
    assert window.not_before <= window.not_after or not window.contains(window.not_before)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_signature_data_fails_only_with_quote_error(data: Any) -> None:
    from dstack_mr.errors import QuoteError

    quote = parse_quote(pair(UP_TO_DATE)["quote"])
    sig = parse_quote_signature(quote)
    raw = bytearray(quote.raw[: quote.signed_length])
    # Mutate the lengths and types that locate the PCK chain.
    assert sig.qe_report_offset is not None and sig.pck_chain_offset is not None
    hot = [sig.cert_data_offset - 6, sig.cert_data_offset - 4, sig.qe_report_offset + 448,
           sig.pck_chain_offset - 6, sig.pck_chain_offset - 4]  # fmt: skip
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.sampled_from(hot)) + data.draw(st.integers(0, 3))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        mutated = parse_quote(bytes(raw))
        got = parse_quote_signature(mutated)
    except QuoteError:
        return
    end = mutated.signed_length
    if got.pck_chain is not None:
        assert got.pck_chain_offset is not None
        assert got.pck_chain_offset + len(got.pck_chain) <= end
        assert mutated.raw[got.pck_chain_offset : got.pck_chain_offset + len(got.pck_chain)] == (
            got.pck_chain
        )


@settings(max_examples=25, deadline=None)
@given(offset=st.integers(0, 4000), bit=st.integers(0, 7))
def test_any_flipped_signed_bit_never_verifies(offset: int, bit: int) -> None:
    """Every byte before the PCK chain's own type/size framing is signed (header and body by
    the attestation key, the QE report by the PCK key, the key and QE auth data through the QE
    report's report_data). Not signed: the PEM text and the 6-byte type/size header in front
    of it — a size one or two bytes short only drops the chain's trailing "\n\0" and leaves
    the same certificates (hypothesis found exactly that), which the chain check vouches for."""
    from dstack_mr.errors import QuoteError

    doc = pair(UP_TO_DATE)
    quote = parse_quote(doc["quote"])
    chain_at = parse_quote_signature(quote).pck_chain_offset
    assert chain_at is not None
    raw = bytearray(quote.raw[: quote.signed_length])
    i = offset % (chain_at - 6)
    raw[i] ^= 1 << bit
    try:
        bad = parse_quote(bytes(raw))
    except QuoteError:
        return  # the header, a length or the trailing bytes no longer parse: bad input
    result = verify(bad, parse_collateral(doc), at=when(doc["verify_at"]))
    assert not result.is_valid


def test_near_public_data_file_is_both_evidence_and_collateral(tmp_path: Path) -> None:
    doc = pair(PAIRS[0])
    capture = json.loads(shared_path("real", "dstack-0.5.4-8cpu-64g-getquote.json").read_text())
    coll = parse_collateral(doc).to_dict()
    for key in ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"):
        coll[key] = list(bytes.fromhex(coll[key]))
    for key in ("tcb_info", "qe_identity", "pck_crl_issuer_chain"):
        coll[key] += "\0"  # C strings, as NEAR's node publishes them
    public = {
        "near_signer_public_key": "ed25519:...",
        "tee_participant_info": {
            "Dstack": {
                "quote": list(bytes.fromhex(capture["quote"])),
                "collateral": coll,
                "tcb_info": {"event_log": json.loads(capture["event_log"])},
            }
        },
    }
    path = write(tmp_path, "public_data.json", public)
    code, lines = cli("--attestation", path, "--collateral", path, "--at", doc["verify_at"])
    assert code == 0, lines
    assert "  ok   event_log: 28 events replay to the quote's RTMR0-3" in lines
    assert any(line.startswith("  key_provider: local-sgx 1b7a4937") for line in lines)
    # Bytes that are not bytes are bad input, not a silently different quote.
    public["tee_participant_info"]["Dstack"]["quote"][0] = 256
    code, lines = cli("--attestation", write(tmp_path, "bad.json", public))
    assert code == 2 and "is not bytes" in lines[-1]


def test_json_follows_the_schema_in_every_outcome() -> None:
    real = shared_path("real")
    doc = pair(OUT_OF_DATE)
    att = parse_attestation((real / "dstack-0.5.4-8cpu-64g-getquote.json").read_text())
    quote = att.quote
    assert quote is not None
    results = [
        verify(att, parse_collateral(doc), at=when(doc["verify_at"])),  # TCB not accepted
        verify(att, parse_collateral(doc), at=when(doc["valid_until"]) + dt.timedelta(1)),
        verify(parse_attestation((real / "dstack-0.6.0-getquote.json").read_text())),
        verify(flipped(quote, BODY + 100), parse_collateral(doc), at=when(doc["verify_at"])),
    ]
    for result in results:
        out = result.to_dict()
        jsonschema.validate(out, SCHEMA)
        assert (out["reason"] is None) == out["is_valid"]
    assert [r.details.tcb_status for r in results] == ["OutOfDate", None, None, None]


def test_driver_zero_padding_after_the_quote_is_accepted(tmp_path: Path) -> None:
    doc = pair(UP_TO_DATE)
    padded = bytes.fromhex(doc["quote"]) + bytes(8000 - len(bytes.fromhex(doc["quote"])))
    qfile = tmp_path / "quote.bin"
    qfile.write_bytes(padded)
    path = str(shared_path("real", "collateral", UP_TO_DATE))
    code, lines = cli("--quote", str(qfile), "--collateral", path, "--at", doc["verify_at"])
    assert code == 0, lines


# --- lite: the 0.6.0 capture's own measurement document -----------------------------------------


def _lite_capture(edit: Any = None, log_edit: Any = None) -> Any:
    doc = json.loads(shared_path("real", "dstack-0.6.0-getquote.json").read_text())
    vm = json.loads(doc["vm_config"])
    if edit is not None:
        edit(vm)
    doc["vm_config"] = json.dumps(vm)
    if log_edit is not None:
        events = json.loads(doc["event_log"])
        log_edit(events)
        doc["event_log"] = json.dumps(events)
    return parse_attestation(json.dumps(doc))


def _statuses(result: Any) -> dict[str, str]:
    return {c.name: c.status for c in result.details.checks}


def test_lite_capture_measurements_verified_from_its_document() -> None:
    result = verify(_lite_capture())
    st_ = _statuses(result)
    assert st_["measurements"] == PASSED and st_["os_image_hash"] == PASSED
    assert st_["event_log"] == PASSED and st_["quote"] == NOT_CHECKED
    d = result.details
    assert d.os_image_hash_verified and d.event_log_verified
    assert not d.acpi_tables_verified  # lite takes the ACPI digests from the log
    assert not result.is_valid and result.reason is not None
    assert "collateral for this quote's platform (FMSPC 90C06F000000) is needed" in result.reason
    measured = d.check("measurements")
    assert measured is not None and "taken from the event log" in measured.message


def test_lite_wrong_memory_fails_the_measurements() -> None:
    result = verify(_lite_capture(lambda vm: vm.update(memory_size=4 << 30)))
    assert _statuses(result)["measurements"] == FAILED
    assert _statuses(result)["os_image_hash"] == FAILED
    assert result.reason is not None and result.reason.startswith("RTMR0 differ")


def test_lite_unsupported_memory_is_not_checked() -> None:
    result = verify(_lite_capture(lambda vm: vm.update(memory_size=1 << 30)))
    measured = result.details.check("measurements")
    assert measured is not None and measured.status == NOT_CHECKED
    assert "lite verification needs exactly 2 GiB" in measured.message


def test_lite_document_not_bound_to_os_image_hash() -> None:
    result = verify(_lite_capture(lambda vm: vm.update(os_image_hash="00" * 32)))
    assert _statuses(result)["os_image_hash"] == FAILED
    assert _statuses(result)["measurements"] == NOT_CHECKED
    assert result.reason is not None and "does not belong to this image" in result.reason


def test_lite_needs_the_named_acpi_events() -> None:
    def rename(events: list[dict[str, Any]]) -> None:
        next(e for e in events if e["event"] == "acpi-rsdp")["event"] = "acpi-other"

    result = verify(_lite_capture(log_edit=rename))
    assert _statuses(result)["event_log"] == PASSED  # names are not measured
    assert _statuses(result)["measurements"] == FAILED
    assert result.reason is not None and "'acpi-rsdp'" in result.reason


def test_legacy_vm_config_does_not_use_its_document() -> None:
    result = verify(_lite_capture(lambda vm: vm.update(tdx_attestation_variant="legacy")))
    measured = result.details.check("measurements")
    assert measured is not None and measured.status == NOT_CHECKED
    assert "not used for a legacy boot" in measured.message


def test_measurement_doc_option(tmp_path: Path) -> None:
    att = _lite_capture()
    assert att.vm_config is not None
    material = base64.b64decode(att.vm_config["tdx_measurement"]["measurement"])
    docfile = tmp_path / "measurement.tdx.cbor"
    docfile.write_bytes(material)
    path = str(shared_path("real", "dstack-0.6.0-getquote.json"))
    code, lines = cli("--attestation", path, "--measurement-doc", str(docfile))
    assert code == 1  # still unsigned
    assert any(line.startswith("  ok   measurements: MRTD and RTMR0-2 equal") for line in lines)
    assert (
        "  --   os_image_hash: the measurement document was given directly, not bound to an "
        "os_image_hash"
    ) in lines
    docfile.write_bytes(material[:-1])
    code, lines = cli("--attestation", path, "--measurement-doc", str(docfile))
    assert code == 2


# --- dstack's SCALE attestation (the verifier's own input), with its stripped boot log ----------


@pytest.mark.parametrize("shape", ["raw", "json-hex"])
def test_scale_attestation_verifies_like_dstack(shape: str, tmp_path: Path) -> None:
    from test_attestation_shapes import lite_scale

    raw, cap = lite_scale(shared_path("real"))
    path = tmp_path / "attestation"
    if shape == "raw":
        path.write_bytes(raw)
    else:
        path.write_text(json.dumps({"attestation": raw.hex()}))
    code, lines = cli("--attestation", str(path))
    assert code == 1 and "signature not checked" in lines[0]  # FMSPC 90C06F: no collateral
    text = "\n".join(lines)
    assert "  ok   measurements: MRTD and RTMR0-2 equal the measurement document's" in text
    assert "  ok   report_data: the quote's report_data is the attestation's" in text
    assert "the attestation's boot log is stripped (RTMR0 (3 events), RTMR1 (0 events)" in text
    result = verify(parse_attestation(raw))
    assert result.details.event_log_verified and result.details.os_image_hash_verified
    assert result.details.app_info is not None
    assert result.details.app_info.app_id.hex() == "86b0e55f2fa8e4fb69d890f14f54d5612707646e"
    # The same stripped log in a GetQuote response is not excused: it must replay.
    stripped_json = attrs.evolve(parse_attestation(raw), report_data=None)
    bad = verify(stripped_json)
    assert (
        bad.reason is not None and "does not replay to the quote's RTMR0 (3 events)" in bad.reason
    )
    # A report_data the quote does not carry is refused.
    other = attrs.evolve(parse_attestation(raw), report_data=bytes(64))
    refused = verify(other)
    assert refused.reason is not None and "is not the attestation's" in refused.reason
    assert str(cap["report_data"]) in refused.reason


# --- diagnose uses the same signature check ---------------------------------------------------


@pytest.fixture
def diag_inputs(tmp_path: Path) -> dict[str, str]:
    meta = write_example_image(tmp_path / "img")
    vm = tmp_path / "vm.json"
    vm.write_text(json.dumps({"cpu_count": 8, "memory_size": 64 << 30, "qemu_version": "8.2.2"}))
    real = shared_path("real")
    return {
        "image": str(meta.parent),
        "vm": str(vm),
        "att": str(real / "dstack-0.5.4-8cpu-64g-getquote.json"),
        "coll": str(real / "collateral" / PAIRS[0]),
        "at": pair(PAIRS[0])["verify_at"],
    }


def _diagnose(d: dict[str, str], *extra: str) -> tuple[int, str]:
    args = ["diagnose", "--attestation", d["att"], "--vm-config", d["vm"], "--image-dir",
            d["image"], "--acpi-source", "log", *extra]  # fmt: skip
    result = RUN.invoke(app, args)
    return result.exit_code, result.output


def test_diagnose_says_signature_not_checked_without_collateral(
    diag_inputs: dict[str, str],
) -> None:
    _code, out = _diagnose(diag_inputs)
    assert "signed: the quote (MRTD and RTMR0-3); signature not checked (give --collateral" in out
    _code, out = _diagnose(diag_inputs, "--json")
    doc = json.loads(out)
    assert doc["quote_signature"] is None and doc["signed"] is True
    schema = json.loads((Path(__file__).resolve().parent.parent / "docs" /
                         "diagnose.schema.json").read_text())  # fmt: skip
    jsonschema.validate(doc, schema)


def test_diagnose_checks_the_signature_with_collateral(
    diag_inputs: dict[str, str], tmp_path: Path
) -> None:
    d = diag_inputs
    _code, out = _diagnose(d, "--collateral", d["coll"], "--at", d["at"])
    assert "signature verified (FMSPC B0C06F000000, TCB status UpToDate)" in out
    assert "QUOTE SIGNATURE INVALID" not in out
    _code, out = _diagnose(d, "--collateral", d["coll"], "--at", d["at"], "--json")
    sig = json.loads(out)["quote_signature"]
    assert sig["verified"] is True and sig["tcb_status"] == "UpToDate"
    assert sig["verified_at"] == d["at"]
    # A tampered quote: the report leads with the failed signature and exits 1.
    cap = json.loads(Path(d["att"]).read_text())
    raw = bytearray(bytes.fromhex(cap["quote"]))
    raw[BODY + 520] ^= 1
    cap["quote"] = raw.hex()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(cap))
    code, out = _diagnose({**d, "att": str(bad)}, "--collateral", d["coll"], "--at", d["at"])
    assert code == 1
    assert out.splitlines()[0].startswith("QUOTE SIGNATURE INVALID: dcap-qvl: ")
    # Same verdict as verify's.
    verdict = verify_quote(parse_quote(raw.hex()), parse_collateral(pair(PAIRS[0])),
                           when(d["at"]))  # fmt: skip
    assert f"QUOTE SIGNATURE INVALID: {verdict.error}" == out.splitlines()[0]


def test_diagnose_collateral_needs_a_quote(diag_inputs: dict[str, str]) -> None:
    d = diag_inputs
    result = RUN.invoke(app, ["diagnose", "--vm-config", d["vm"], "--image-dir", d["image"],
                              "--actual-rtmr1", "00" * 48, "--collateral", d["coll"]])  # fmt: skip
    assert result.exit_code == 2 and "give --quote or --attestation" in result.output


def test_failed_signature_makes_a_matching_diagnosis_exit_1(tmp_path: Path) -> None:
    from dstack_mr.dcap import QuoteVerdict
    from dstack_mr.diagnose import diagnose

    meta = write_example_image(tmp_path / "img")
    image = Image.load(meta.parent, AcpiTablesFile(meta.parent / "acpi-tables.bin"))
    vm = VmConfig(cpu_count=2, memory_size=2 << 30)
    m = image.measure(vm).measurements
    regs = {r: getattr(m, r) for r in ("mrtd", "rtmr0", "rtmr1", "rtmr2")}
    report = diagnose(vm, image, Evidence(registers=regs), explain=False)
    assert report.result == "match" and report.exit_code == 0
    failed = QuoteVerdict(False, dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), error="x")
    assert attrs.evolve(report, quote_signature=failed).exit_code == 1
    ok = attrs.evolve(failed, verified=True, error=None, status="OutOfDate")
    assert attrs.evolve(report, quote_signature=ok).exit_code == 0  # TCB is verify's policy


def test_collateral_is_per_platform_not_per_quote() -> None:
    """The 0.3-era Phala capture is another quote on the same platform (FMSPC 20A06F000000):
    the published collateral verifies it too, with its whole event log."""
    doc = pair(UP_TO_DATE)
    att = parse_attestation(
        shared_path("real", "phala-cloud-dstack-0.3-era-getquote.json").read_text()
    )
    assert att.quote is not None and att.quote.raw.hex() != doc["quote"]
    result = verify(att, parse_collateral(doc), at=when(doc["verify_at"]))
    assert result.is_valid, result.reason
    d = result.details
    assert (d.fmspc, d.tcb_status, d.event_log_verified) == ("20A06F000000", "UpToDate", True)
    assert d.app_info is not None and d.key_provider is None  # this generation had none
    assert d.app_info.app_id.hex() == "9f91439ecacc4f8845a9cd81cc141256d5e1bce3"
