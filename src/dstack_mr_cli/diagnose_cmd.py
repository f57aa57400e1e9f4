"""``dstack-mr diagnose``: expected measurements of a VmConfig on an image against evidence."""

import enum
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dstack_mr.acpi import DEFAULT_TIMEOUT

from .base import library_errors
from .main import (
    AcpiDumperOpt,
    AcpiTablesOpt,
    AcpiTimeoutOpt,
    JsonOpt,
    _read,
    app,
)

if TYPE_CHECKING:
    from dstack_mr import diagnose as dg
    from dstack_mr.quote import TdxQuote


class AcpiSourceMode(str, enum.Enum):
    auto = "auto"
    dumper = "dumper"
    file = "file"
    builtin = "builtin"
    log = "log"


def _with_signature(
    report: "dg.DiagnoseReport", quote: "TdxQuote | None", collateral: Path, at: str | None
) -> "dg.DiagnoseReport":
    """The report with the quote's signature checked exactly as ``verify`` checks it."""
    import attrs

    from dstack_mr.collateral import parse_collateral
    from dstack_mr.dcap import verify_quote
    from dstack_mr.errors import ConfigError

    from .verify_cmd import _json_file, _parse_at

    if quote is None:
        raise ConfigError("--collateral checks a quote's signature: give --quote or --attestation")
    coll = parse_collateral(_json_file(collateral, "collateral"))
    return attrs.evolve(report, quote_signature=verify_quote(quote, coll, _parse_at(at)))


class Color(str, enum.Enum):
    auto = "auto"
    always = "always"
    never = "never"


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
    actual_mrtd: Annotated[
        str | None,
        typer.Option(
            "--actual-mrtd", metavar="HEX", help="Actual MRTD: 96 hex digits (0x optional)."
        ),
    ] = None,
    actual_rtmr0: Annotated[
        str | None,
        typer.Option(
            "--actual-rtmr0", metavar="HEX", help="Actual RTMR0: 96 hex digits (0x optional)."
        ),
    ] = None,
    actual_rtmr1: Annotated[
        str | None,
        typer.Option(
            "--actual-rtmr1", metavar="HEX", help="Actual RTMR1: 96 hex digits (0x optional)."
        ),
    ] = None,
    actual_rtmr2: Annotated[
        str | None,
        typer.Option(
            "--actual-rtmr2", metavar="HEX", help="Actual RTMR2: 96 hex digits (0x optional)."
        ),
    ] = None,
    quote: Annotated[
        Path | None, typer.Option("--quote", help="TDX quote v4/v5, hex or binary.")
    ] = None,
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
    from dstack_mr import diagnose as dg
    from dstack_mr.attestation import parse_attestation
    from dstack_mr.ccel import parse_ccel
    from dstack_mr.config import parse_json
    from dstack_mr.errors import ConfigError
    from dstack_mr.eventlog import parse_json_event_log
    from dstack_mr.image import Image, ImageFiles, image_dir_for
    from dstack_mr.quote import parse_quote

    from .report import render

    with library_errors():
        evidence = dg.Evidence()
        if attestation is not None:
            raw = _read(attestation, "attestation")
            # An AMD SEV-SNP attestation is judged by its own module; anything else is TDX.
            from . import snp as snp_cli

            code = snp_cli.diagnose_attestation(
                raw,
                f"attestation {attestation}",
                vm_config_text=None if vm_config is None else _read(vm_config, "vm_config"),
                image_dir=image_dir,
                image_base_dir=image_base_dir,
                explain=explain,
                json_out=json_out,
                color=color.value,
                tdx_evidence=[
                    name
                    for name, value in (
                        ("--quote", quote),
                        ("--event-log", event_log),
                        ("--ccel", ccel),
                        ("--actual-mrtd", actual_mrtd),
                        ("--actual-rtmr0", actual_rtmr0),
                        ("--actual-rtmr1", actual_rtmr1),
                        ("--actual-rtmr2", actual_rtmr2),
                    )
                    if value is not None
                ],
            )
            if code is not None:
                raise typer.Exit(code)
            att = parse_attestation(raw)
            evidence = evidence.merge(dg.Evidence.from_attestation(att))
        if quote is not None:
            data = _read(quote, "quote")
            dg.reject_attestation(data, f"--quote {quote}")
            evidence = evidence.merge(
                dg.Evidence(quote=parse_quote(data), sources=(f"quote {quote}",))
            )
        if event_log is not None:
            data = _read(event_log, "event log")
            dg.reject_attestation(data, f"--event-log {event_log}")
            evs = parse_json_event_log(data)
            evidence = evidence.merge(dg.Evidence(events=evs, sources=(f"event log {event_log}",)))
        if ccel is not None:
            evs = parse_ccel(_read(ccel, "CCEL event log"))
            evidence = evidence.merge(dg.Evidence(events=evs, sources=(f"CCEL {ccel}",)))
        typed = {
            name: dg.parse_register_hex(value, f"--actual-{name}")
            for name, value in (
                ("mrtd", actual_mrtd),
                ("rtmr0", actual_rtmr0),
                ("rtmr1", actual_rtmr1),
                ("rtmr2", actual_rtmr2),
            )
            if value is not None
        }
        if typed:
            evidence = evidence.merge(dg.Evidence(registers=typed, sources=("command line",)))

        if vm_config is not None:
            data = _read(vm_config, "VmConfig")
            dg.reject_attestation(data, f"--vm-config {vm_config}")
            vm, warnings = dg.load_vm_config(
                parse_json(data, f"VmConfig {vm_config}", ConfigError), f"--vm-config {vm_config}"
            )
            evidence = evidence.merge(dg.Evidence(warnings=tuple(warnings)))
        elif evidence.vm_config is not None:
            vm = evidence.vm_config
        else:
            raise ConfigError("no VmConfig: pass --vm-config, or an --attestation carrying one")

        if image_dir is None and image_base_dir is None and vm.tdx_measurement is not None:
            # Lite mode: the VM's own measurement document instead of the image.
            from dstack_mr.lite_diagnose import diagnose_lite

            mode = acpi_source_mode.value
            if acpi_tables is not None or acpi_dumper is not None or mode in ("dumper", "file"):
                raise ConfigError(
                    "an ACPI tables file or dumper needs the image directory (--image-dir); "
                    "without one, lite mode takes the ACPI digests from the event log, or "
                    "computes the tables with --acpi-source builtin"
                )
            # auto keeps upstream's lite semantics (the log); builtin verifies the tables.
            report = diagnose_lite(vm, evidence, "builtin" if mode == "builtin" else "log")
        else:
            if image_dir is not None:
                files = ImageFiles.from_dir(image_dir)
            elif image_base_dir is not None:
                files = ImageFiles.from_dir(image_dir_for(vm, image_base_dir))
            else:
                raise ConfigError(
                    "either --image-dir or --image-base-dir must be given (or a vm_config "
                    "carrying tdx_measurement, for lite mode)"
                )
            choice = dg.resolve_acpi(
                acpi_source_mode.value,
                tables=acpi_tables,
                dumper=acpi_dumper,
                timeout=acpi_timeout,
                events=evidence.events,
            )
            image = Image(files)
            report = dg.diagnose(vm, image, evidence, choice, explain=explain)
        if collateral is not None:
            report = _with_signature(report, evidence.quote, collateral, at)

    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        use_color = color is Color.always or (
            color is Color.auto and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        )
        # click strips colour codes from non-terminal output unless told otherwise.
        typer.echo(render(report, use_color, verbose), color=use_color)
    raise typer.Exit(report.exit_code)
