"""``dstack-mr verify``: the whole verdict on a dstack VM (quote, TCB, log, measurements, app).

Exit status: 0 when everything checked is valid and the TCB status is accepted, 1 when
something is invalid, not accepted or the signature could not be checked (the first line
says what), 2 for bad input.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from dstack_mr.acpi import DEFAULT_TIMEOUT

from .base import library_errors
from .main import (
    AcpiDumperOpt,
    AcpiSourceOpt,
    AcpiTablesOpt,
    AcpiTimeoutOpt,
    JsonOpt,
    QuoteOpt,
    acpi_source,
    app,
)

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


def parse_at(text: str | None) -> dt.datetime | None:
    """``--at``: an ISO 8601 time, UTC when it names no zone."""
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
    from dstack_mr.validate import hex_string

    s = text.strip()
    s = s[2:] if s[:2] in ("0x", "0X") else s
    data = bytes.fromhex(s) if hex_string(s) is None else None
    if data is None or len(data) > 64:
        raise typer.BadParameter(f"--report-data: expected up to 64 bytes of hex, got {text!r}")
    return data


@app.command(epilog=EPILOG)
def verify(
    quote: QuoteOpt = None,
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
    from dstack_mr.dcap import TcbPolicy
    from dstack_mr.evidence_files import verify_inputs
    from dstack_mr.report_text import render_verification
    from dstack_mr.verify import verify as run_verify

    when = parse_at(at)
    expected_rd = _parse_report_data(report_data)
    if collateral is not None and pccs_url is not None:
        raise typer.BadParameter("give either --collateral or --pccs-url, not both")
    with library_errors():
        policy = TcbPolicy.from_names(accept_tcb)
        inputs = verify_inputs(
            attestation,
            quote,
            collateral=collateral,
            pccs_url=pccs_url,
            vm_config=vm_config,
            measurement_doc=measurement_doc,
            image_dir=image_dir,
            acpi=None
            if image_dir is None
            else acpi_source(acpi_tables, acpi_dumper, acpi_timeout, acpi_source_kind),
        )
        result = run_verify(
            inputs.found.judged,
            inputs.collateral,
            at=when,
            policy=policy,
            image=inputs.image,
            vm_config=inputs.vm_config,
            document=inputs.document,
            report_data=expected_rd,
        )
    if json_out:
        typer.echo(result.to_json())
    else:
        typer.echo(render_verification(result, when is not None))
    raise typer.Exit(result.exit_code)
