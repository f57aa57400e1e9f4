"""``dstack-mr diagnose``: expected measurements of a VmConfig on an image against evidence."""

import enum
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dstack_mr.acpi import DEFAULT_TIMEOUT

from .base import library_errors
from .main import (
    AcpiDumperOpt,
    AcpiTablesOpt,
    AcpiTimeoutOpt,
    JsonOpt,
    QuoteOpt,
    app,
)


class AcpiSourceMode(str, enum.Enum):
    auto = "auto"
    dumper = "dumper"
    file = "file"
    builtin = "builtin"
    log = "log"


class Color(str, enum.Enum):
    auto = "auto"
    always = "always"
    never = "never"


def _actual_option(register: str) -> Any:
    return typer.Option(
        f"--actual-{register}",
        metavar="HEX",
        help=f"Actual {register.upper()}: 96 hex digits (0x optional).",
    )


@app.command(
    epilog="Examples:\n\n"
    "\b\n"
    "  # quote, event log and vm_config from a guest-agent GetQuote response\n"
    "  dstack-mr diagnose --attestation getquote.json \\\n"
    "      --image-dir /opt/dstack/images/dstack-0.6.0 --acpi-tables tables.bin\n"
    "\n"
    "\b\n"
    "  # only a register value; the image is picked by vm_config.image\n"
    "  dstack-mr diagnose --vm-config vm.json --image-base-dir /opt/dstack/images \\\n"
    "      --actual-rtmr0 79468643...\n"
    "\n"
    "\b\n"
    "  # machine-readable (schema: docs/diagnose.schema.json)\n"
    "  dstack-mr diagnose --attestation getquote.json --image-dir IMAGE --json",
)
def diagnose(
    vm_config: Annotated[
        Path | None,
        typer.Option(
            "--vm-config",
            help="VmConfig JSON (as the VMM gives KMS). Optional when --attestation has one.",
        ),
    ] = None,
    image_dir: Annotated[
        Path | None,
        typer.Option("--image-dir", help="Image directory (metadata.json, ovmf.fd, ...)."),
    ] = None,
    image_base_dir: Annotated[
        Path | None,
        typer.Option(
            "--image-base-dir", help="Directory of images; the one named by vm_config.image."
        ),
    ] = None,
    actual_mrtd: Annotated[str | None, _actual_option("mrtd")] = None,
    actual_rtmr0: Annotated[str | None, _actual_option("rtmr0")] = None,
    actual_rtmr1: Annotated[str | None, _actual_option("rtmr1")] = None,
    actual_rtmr2: Annotated[str | None, _actual_option("rtmr2")] = None,
    quote: QuoteOpt = None,
    event_log: Annotated[
        Path | None,
        typer.Option(
            "--event-log",
            "--actual-event-log",
            help="dstack JSON event log (a GetQuote response's event_log).",
        ),
    ] = None,
    attestation: Annotated[
        Path | None,
        typer.Option(
            "--attestation",
            help="Guest-agent GetQuote/Info response or tcb_info JSON (quote, event log and "
            "vm_config are taken from it), or a dstack AMD SEV-SNP attestation.",
        ),
    ] = None,
    ccel: Annotated[
        Path | None,
        typer.Option(
            "--ccel", help="Binary CCEL/TCG2 event log (/sys/firmware/acpi/tables/data/CCEL)."
        ),
    ] = None,
    acpi_source_mode: Annotated[
        AcpiSourceMode,
        typer.Option(
            "--acpi-source",
            help="Where RTMR0's ACPI digests come from. auto: --acpi-tables or --acpi-dumper "
            "when given, else the dumper when found, else the built-in model of dstack's QEMU "
            "(QEMU 8.0 to 9.2), else the event log's three ACPI digests (not verified), else "
            "RTMR0 is not judged.",
        ),
    ] = AcpiSourceMode.auto,
    acpi_tables: AcpiTablesOpt = None,
    acpi_dumper: AcpiDumperOpt = None,
    acpi_timeout: AcpiTimeoutOpt = DEFAULT_TIMEOUT,
    collateral: Annotated[
        Path | None,
        typer.Option(
            "--collateral",
            help="Intel collateral JSON: also check the quote's signature and TCB status "
            "(as 'dstack-mr verify' does; needs dstack-mr[verify]).",
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", metavar="ISO8601", help="Time to check the signature at (default: now)."
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also print the inputs, the expected measurements and every event.",
        ),
    ] = False,
    explain: Annotated[
        bool, typer.Option("--explain/--no-explain", help="Search inputs that explain a diff.")
    ] = True,
    color: Annotated[Color, typer.Option("--color", help="Colour the report.")] = Color.auto,
    json_out: JsonOpt = False,
) -> None:
    """Expected MRs of a VmConfig on an image, compared event by event with real evidence.

    Evidence: --attestation, --quote, --event-log, --ccel and --actual-* (any mix). The
    first line is the verdict and its cause; a cause is [proven] only when recomputing with
    that one change reproduces the VM's digest, else it is a [hypothesis]. Then one block per
    differing register (its differing events, named by what they are), then what the evidence
    was. --verbose adds the inputs, the expected measurements and every event.

    Exit status: 0 when nothing compared differs (also when nothing was compared), 1 on a
    mismatch, 2 on bad input.
    """
    from dstack_mr.diagnose_files import diagnose_evidence
    from dstack_mr.evidence_files import EvidenceFiles
    from dstack_mr.snp_diagnose import SnpDiagnoseReport

    from .verify_cmd import parse_at

    use_color = color is Color.always or (
        color is Color.auto and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    )
    with library_errors():
        loaded = EvidenceFiles(
            attestation=attestation,
            quote=quote,
            event_log=event_log,
            ccel=ccel,
            vm_config=vm_config,
            actual={
                name: value
                for name, value in (
                    ("mrtd", actual_mrtd),
                    ("rtmr0", actual_rtmr0),
                    ("rtmr1", actual_rtmr1),
                    ("rtmr2", actual_rtmr2),
                )
                if value is not None
            },
        ).load()
        report = diagnose_evidence(
            loaded,
            image_dir=image_dir,
            image_base_dir=image_base_dir,
            acpi_mode=acpi_source_mode.value,
            acpi_tables=acpi_tables,
            acpi_dumper=acpi_dumper,
            acpi_timeout=acpi_timeout,
            explain=explain,
            collateral=collateral,
            at=parse_at(at) if collateral is not None else None,
        )

    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif isinstance(report, SnpDiagnoseReport):
        from dstack_mr.snp_text import render_snp

        # click strips colour codes from non-terminal output unless told otherwise.
        typer.echo(render_snp(report, use_color), color=use_color)
    else:
        from dstack_mr.report_text import render_diagnose

        typer.echo(render_diagnose(report, use_color, verbose), color=use_color)
    raise typer.Exit(report.exit_code)
