"""``dstack-mr verify``: the whole verdict on a dstack VM (quote, TCB, log, measurements, app).

Exit status: 0 when everything checked is valid and the TCB status is accepted, 1 when
something is invalid, not accepted or the signature could not be checked (the first line
says what), 2 for bad input.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dstack_mr.acpi import DEFAULT_TIMEOUT

from .base import library_errors
from .main import (
    AcpiDumperOpt,
    AcpiSourceOpt,
    AcpiTablesOpt,
    AcpiTimeoutOpt,
    JsonOpt,
    _read,
    acpi_source,
    app,
)

if TYPE_CHECKING:
    from dstack_mr.attestation import Attestation
    from dstack_mr.collateral import Collateral
    from dstack_mr.verify import VerificationResult

EPILOG = (
    "Examples:\n\n"
    "\b\n"
    "  # quote and event log from a guest-agent GetQuote response\n"
    "  dstack-mr verify --attestation getquote.json \\\n"
    "      --collateral collateral.json\n"
    "\n"
    "\b\n"
    "  # judge at a past time; accept an out-of-date platform\n"
    "  dstack-mr verify --quote quote.hex --collateral collateral.json \\\n"
    "      --at 2026-08-13T11:45:38Z --accept-tcb UpToDate,OutOfDate\n"
    "\n"
    "\b\n"
    "  # also recompute MRTD/RTMR0-2 from the image (legacy TDX attestation)\n"
    "  dstack-mr verify --attestation getquote.json --collateral collateral.json \\\n"
    "      --image-dir /opt/dstack/images/dstack-0.5.4 --acpi-tables t.bin --json"
)

_MARK = {"passed": "ok  ", "failed": "FAIL", "not_checked": "--  "}


def _parse_at(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"--at: {text!r} is not an ISO 8601 time (e.g. 2026-08-13T11:45:38Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _parse_report_data(text: str | None) -> bytes | None:
    if text is None:
        return None
    from dstack_mr._binary import from_hex

    s = text.strip()
    s = s[2:] if s[:2] in ("0x", "0X") else s
    data = from_hex(s)
    if data is None or len(data) > 64:
        raise typer.BadParameter(f"--report-data: expected up to 64 bytes of hex, got {text!r}")
    return data


def _json_file(path: Path, what: str) -> Any:
    from dstack_mr.config import parse_json
    from dstack_mr.errors import EvidenceError

    return parse_json(_read(path, what), f"{what} {path}", EvidenceError)


def _read_attestation(path: Path) -> Attestation:
    """GetQuote/Info/tcb_info responses, dstack's SCALE attestation (raw or as
    ``{"attestation": hex}``), or NEAR-style public data around a quote and tcb_info."""
    from dstack_mr.attestation import parse_attestation
    from dstack_mr.config import parse_json
    from dstack_mr.errors import EvidenceError

    data = _read(path, "attestation")
    if data[:1] == b"\0":  # a SCALE VersionedAttestation V0; JSON never starts with NUL
        return parse_attestation(data)
    doc = parse_json(data, f"attestation {path}", EvidenceError)
    node = doc.get("tee_participant_info") if isinstance(doc, dict) else None
    if isinstance(node, dict) and isinstance(node.get("Dstack"), dict):
        inner = node["Dstack"]
        quote = inner.get("quote")
        if isinstance(quote, list):
            if not all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in quote
            ):
                raise EvidenceError(f"{path}: tee_participant_info.Dstack.quote is not bytes")
            quote = bytes(quote).hex()
        doc = {"quote": quote, "tcb_info": inner.get("tcb_info")}
    return parse_attestation(doc)


def _collateral(path: Path | None) -> tuple[Collateral | None, object]:
    if path is None:
        return None, None
    from dstack_mr.collateral import find_collateral, parse_collateral

    doc = _json_file(path, "collateral")
    quote = find_collateral(doc)[1] if isinstance(doc, dict) else None
    return parse_collateral(doc), quote


def render_result(result: VerificationResult, at_given: bool) -> str:
    d = result.details
    out = []
    if result.is_valid:
        skipped = [c.name for c in d.checks if c.status == "not_checked"]
        extra = f" (not checked: {', '.join(skipped)})" if skipped else ""
        out.append(f"VALID: every check passed{extra}")
    else:
        out.append(f"INVALID: {result.reason}")
    when = d.verified_at.isoformat().replace("+00:00", "Z")
    out.append(f"time used: {when} ({'--at' if at_given else 'now'})")
    w = d.collateral_window
    if w is not None:
        start = w.not_before.isoformat().replace("+00:00", "Z")
        end = w.not_after.isoformat().replace("+00:00", "Z")
        out.append(f"collateral valid: {start} .. {end}")
    else:
        out.append("collateral: none given")
    out.append(f"platform FMSPC: {d.fmspc or 'unknown'}")
    status = d.tcb_status or "unknown"
    verdict = "accepted" if d.tcb_accepted else "not accepted"
    out.append(f"TCB status: {status} ({verdict}; accepted: {', '.join(d.accepted_tcb)})")
    out.append(f"advisories: {', '.join(d.advisory_ids) if d.advisory_ids else 'none'}")
    out.append("checks:")
    out += [f"  {_MARK.get(c.status, c.status)} {c.name}: {c.message}" for c in d.checks]
    if d.report_data is not None:
        out.append(f"report_data: {d.report_data.hex()}")
    if d.app_info is not None:
        out.append("app_info:")
        for key, value in d.app_info.to_dict().items():
            shown = ", ".join(value) if isinstance(value, list) else value
            out.append(f"  {key}: {shown if shown else '(none)'}")
        if d.key_provider is not None:
            out.append(f"  key_provider: {d.key_provider.name} {d.key_provider.id}")
    return "\n".join(out)


@app.command(epilog=EPILOG)
def verify(
    quote: Annotated[
        Path | None, typer.Option("--quote", help="TDX quote v4/v5, hex or binary.")
    ] = None,
    attestation: Annotated[
        Path | None,
        typer.Option(
            "--attestation",
            help="Guest-agent GetQuote/Info response, tcb_info, or NEAR-style public data "
            "(quote, event log and vm_config are taken from it).",
        ),
    ] = None,
    collateral: Annotated[
        Path | None,
        typer.Option(
            "--collateral",
            help="Intel collateral JSON (dcap-qvl, PCCS, or {'quote', 'collateral'} file). "
            "Without it the signature is not checked and the result is not valid.",
        ),
    ] = None,
    pccs_url: Annotated[
        str | None,
        typer.Option(
            "--pccs-url",
            metavar="URL",
            help="Fetch the collateral from this PCCS instead of --collateral (online).",
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="ISO8601", help="Verification time (default: now)."),
    ] = None,
    accept_tcb: Annotated[
        str,
        typer.Option(
            "--accept-tcb", metavar="LIST", help="Accepted TCB statuses, comma-separated."
        ),
    ] = "UpToDate",
    image_dir: Annotated[
        Path | None,
        typer.Option("--image-dir", help="Image directory: recompute MRTD/RTMR0-2 from it."),
    ] = None,
    vm_config: Annotated[
        Path | None,
        typer.Option("--vm-config", help="VmConfig JSON, when the evidence carries none."),
    ] = None,
    measurement_doc: Annotated[
        Path | None,
        typer.Option(
            "--measurement-doc",
            metavar="FILE",
            help="A trusted measurement.tdx.cbor: check the measurements against it (lite) "
            "instead of the VmConfig's own tdx_measurement.",
        ),
    ] = None,
    acpi_tables: AcpiTablesOpt = None,
    acpi_dumper: AcpiDumperOpt = None,
    acpi_timeout: AcpiTimeoutOpt = DEFAULT_TIMEOUT,
    acpi_source_kind: AcpiSourceOpt = None,
    report_data: Annotated[
        str | None,
        typer.Option(
            "--report-data", metavar="HEX", help="Expected report_data (zero-padded to 64)."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a dstack VM: quote signature and TCB status (offline, dcap-qvl), event log
    replay, measurements against an image, and the app identity from RTMR3.

    Exit status: 0 when everything checked is valid and the TCB status is accepted, 1 when
    something is invalid or not accepted (the first line says what), 2 on bad input.
    """
    from dstack_mr.config import VmConfig
    from dstack_mr.dcap import TcbPolicy, fetch_collateral
    from dstack_mr.diagnose import Evidence
    from dstack_mr.errors import EvidenceError
    from dstack_mr.image import Image
    from dstack_mr.quote import parse_quote
    from dstack_mr.verify import verify as run_verify

    when = _parse_at(at)
    expected_rd = _parse_report_data(report_data)
    with library_errors():
        policy = TcbPolicy.from_names(accept_tcb)
        coll, adjacent_quote = _collateral(collateral)
        evidence = Evidence()
        att = _read_attestation(attestation) if attestation is not None else None
        if att is not None:
            evidence = Evidence.from_attestation(att)
        if quote is not None:
            evidence = evidence.merge(
                Evidence(quote=parse_quote(_read(quote, "quote")), sources=(f"quote {quote}",))
            )
        if evidence.quote is None and adjacent_quote is not None:
            if not isinstance(adjacent_quote, str):
                raise EvidenceError(f"collateral {collateral}: its 'quote' is not hex text")
            evidence = evidence.merge(
                Evidence(quote=parse_quote(adjacent_quote), sources=(f"quote in {collateral}",))
            )
        if evidence.quote is None:
            raise EvidenceError(
                "no quote: give --quote, --attestation, or a --collateral file with a 'quote'"
            )
        if pccs_url is not None:
            if coll is not None:
                raise typer.BadParameter("give either --collateral or --pccs-url, not both")
            coll = fetch_collateral(pccs_url, evidence.quote)
        vm = VmConfig.from_json(_read(vm_config, "VmConfig")) if vm_config else None
        document = None
        if measurement_doc is not None:
            from dstack_mr.measurement_doc import MeasurementDocument

            document = MeasurementDocument.from_cbor(_read(measurement_doc, "measurement document"))
        image = None
        if image_dir is not None:
            image = Image.load(
                image_dir, acpi_source(acpi_tables, acpi_dumper, acpi_timeout, acpi_source_kind)
            )
        # The attestation itself when it is the only evidence: its shape tells verify what the
        # VM stated (report_data, a stripped boot log).
        only = att if att is not None and quote is None and att.quote is not None else None
        result = run_verify(
            only if only is not None else evidence,
            coll,
            at=when,
            policy=policy,
            image=image,
            vm_config=vm,
            document=document,
            report_data=expected_rd,
        )
    if json_out:
        typer.echo(result.to_json())
    else:
        typer.echo(render_result(result, when is not None))
    raise typer.Exit(result.exit_code)
