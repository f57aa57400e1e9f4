"""The ``dstack-mr`` command. A thin layer: parse options, call the library, print.

Library errors become one line on stderr and exit code 2 (``--debug`` adds the traceback);
``diagnose`` exits 1 when evidence and expectation differ. The shared command base is
:mod:`dstack_mr_cli.base`.
"""

import enum
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from dstack_mr import (
    AcpiDumper,
    AcpiSource,
    AcpiTablesFile,
    Machine,
    OvmfVariant,
    __version__,
    ovmf_variant_for_version,
)
from dstack_mr.acpi import DEFAULT_TIMEOUT
from dstack_mr.config import parse_memory_size, parse_rust_u32
from dstack_mr.errors import ConfigError

from .base import (
    EXIT_BAD_INPUT,
    App,
    State,
    bool_option,
    library_errors,
    parse_bool,
)

app = App(
    name="dstack-mr",
    help="Expected TDX measurements (MRTD, RTMR0-2) of dstack CVMs, and why a quote differs.",
    epilog="Examples:\n\n"
    "\b\n"
    "  dstack-mr example ./example-image\n"
    "  dstack-mr measure -c 2 -m 2G \\\n"
    "      --acpi-tables example-image/acpi-tables.bin example-image/metadata.json\n"
    "  dstack-mr diagnose --attestation getquote.json \\\n"
    "      --image-dir /opt/dstack/images/dstack-0.6.0\n\n"
    "Run 'dstack-mr COMMAND --help' for a command's options and an example. "
    "'dstack-mr --install-completion' installs tab completion for your shell "
    "(bash, zsh, fish or PowerShell); '--show-completion' prints the script instead.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: Quotes, logs and configs are kilobytes; refuse to slurp anything huge.
MAX_EVIDENCE_SIZE = 16 << 20


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dstack-mr {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="On an error, also print the traceback (the exit code stays the same)."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    State.debug = debug


def _u32(value: str, option: str) -> int:
    # Rust's u32 parser: no underscores, no whitespace, no sign but '+'.
    number = parse_rust_u32(value)
    if number is None:
        raise typer.BadParameter(f"{option}: {value!r} is not a number in 0..=4294967295")
    return number


def _opt_bool(value: str | None) -> bool | None:
    return None if value is None else parse_bool(value)


def _memory(value: str) -> int:
    try:
        return parse_memory_size(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def acpi_source(tables: Path | None, dumper: str | None, timeout: float) -> AcpiSource:
    if tables is not None and dumper is not None:
        raise typer.BadParameter("give either --acpi-tables or --acpi-dumper, not both")
    if tables is not None:
        return AcpiTablesFile(tables)
    return AcpiDumper(program=dumper, timeout=timeout)


AcpiTablesOpt = Annotated[
    Path | None,
    typer.Option(
        "--acpi-tables",
        help="Read the ACPI tables blob from FILE instead of running the dumper.",
        metavar="FILE",
    ),
]
AcpiDumperOpt = Annotated[
    str | None,
    typer.Option(
        "--acpi-dumper",
        help="The dstack-acpi-tables program to run (default: $DSTACK_MR_ACPI_DUMPER, then PATH).",
        metavar="PATH",
    ),
]
AcpiTimeoutOpt = Annotated[
    float, typer.Option("--acpi-timeout", help="Seconds before the dumper is killed.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command(
    epilog="Examples:\n\n"
    "\b\n"
    "  # a 2-vCPU, 2 GiB VM, ACPI tables from a file, every event listed\n"
    "  dstack-mr measure -c 2 -m 2G --events \\\n"
    "      --acpi-tables example-image/acpi-tables.bin example-image/metadata.json\n"
    "\n"
    "\b\n"
    "  # QEMU 8.2.2 (two-pass page add, pic on); ACPI tables from the dumper\n"
    "  dstack-mr measure -c 4 -m 8G --qemu-version 8.2.2 --json \\\n"
    "      /opt/dstack/images/dstack-0.6.0/metadata.json"
)
def measure(
    metadata: Annotated[Path, typer.Argument(help="The image's metadata.json.")],
    cpu: Annotated[str, typer.Option("--cpu", "-c", help="Number of vCPUs.", metavar="N")] = "1",
    memory: Annotated[
        str, typer.Option("--memory", "-m", help="Memory: 2G, 512M, bytes or 0xHEX.")
    ] = "2G",
    two_pass_add_pages: Annotated[
        str | None,
        bool_option("--two-pass-add-pages", "Two-pass page add (default: by QEMU version)."),
    ] = None,
    pic: Annotated[str | None, bool_option("--pic", "PIC on (default: by QEMU version).")] = None,
    smm: Annotated[str, bool_option("--smm", "SMM on.")] = "false",
    pci_hole64_size: Annotated[
        str | None, typer.Option("--pci-hole64-size", help="PCI hole64 size (2G, 0x...).")
    ] = None,
    hugepages: Annotated[str, bool_option("--hugepages", "Back memory by hugepages.")] = "false",
    num_gpus: Annotated[
        str, typer.Option("--num-gpus", metavar="N", help="GPUs passed through (VFIO).")
    ] = "0",
    num_nvswitches: Annotated[
        str, typer.Option("--num-nvswitches", metavar="N", help="NVSwitches passed through (VFIO).")
    ] = "0",
    hotplug_off: Annotated[str, bool_option("--hotplug-off", "ACPI PCI hotplug off.")] = "false",
    root_verity: Annotated[
        str, bool_option("--root-verity", "Root disk as virtio-blk (dm-verity).")
    ] = "true",
    qemu_version: Annotated[
        str | None, typer.Option("--qemu-version", help="QEMU version (default 9.1.0).")
    ] = None,
    dstack_os_version: Annotated[
        str | None,
        typer.Option(
            "--dstack-os-version",
            help="dstack OS version X.Y.Z; picks the OVMF event layout (0.5.10 <= v < 0.6.0 "
            "and v >= 0.6.1 are stable202505). Default: from metadata.json.",
        ),
    ] = None,
    ovmf_variant: Annotated[
        OvmfVariant | None,
        typer.Option("--ovmf-variant", help="Force the OVMF event layout."),
    ] = None,
    host_share_mode: Annotated[
        str, typer.Option("--host-share-mode", help="'', 9p, vhd or vvfat.")
    ] = "",
    acpi_tables: AcpiTablesOpt = None,
    acpi_dumper: AcpiDumperOpt = None,
    acpi_timeout: AcpiTimeoutOpt = DEFAULT_TIMEOUT,
    events: Annotated[
        bool, typer.Option("--events", help="Also print every RTMR event, labelled.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Compute MRTD and RTMR0-2 of an image for one machine configuration.

    The image's cmdline is measured with " initrd=initrd" appended, like the reference.
    RTMR0 needs QEMU's ACPI tables: from --acpi-tables FILE, or by running the
    dstack-acpi-tables dumper.
    """
    from dstack_mr.image import ImageFiles

    with library_errors():
        files = ImageFiles.from_metadata(metadata)
        info = files.info
        if ovmf_variant is not None:
            variant = ovmf_variant
        elif dstack_os_version is not None:
            variant = ovmf_variant_for_version(dstack_os_version)
        elif info.ovmf_variant is not None:
            variant = info.ovmf_variant
        elif info.version:
            variant = ovmf_variant_for_version(info.version)
        else:
            variant = OvmfVariant.PRE202505
        machine = Machine(
            cpu_count=_u32(cpu, "--cpu"),
            memory_size=_memory(memory),
            firmware=files.firmware,
            kernel=files.kernel,
            initrd=files.initrd,
            kernel_cmdline=files.cmdline,
            two_pass_add_pages=_opt_bool(two_pass_add_pages),
            pic=_opt_bool(pic),
            smm=parse_bool(smm),
            pci_hole64_size=None if pci_hole64_size is None else _memory(pci_hole64_size),
            hugepages=parse_bool(hugepages),
            num_gpus=_u32(num_gpus, "--num-gpus"),
            num_nvswitches=_u32(num_nvswitches, "--num-nvswitches"),
            hotplug_off=parse_bool(hotplug_off),
            root_verity=parse_bool(root_verity),
            qemu_version=qemu_version,
            host_share_mode=host_share_mode,
            ovmf_variant=variant,
        )
        details = machine.measure_with_logs(acpi_source(acpi_tables, acpi_dumper, acpi_timeout))
    for warning in details.warnings:
        typer.echo(f"warning: {warning}", err=True)
    m = details.measurements
    if json_out:
        out: dict[str, object] = dict(m.to_dict())
        if events:
            out["rtmr_logs"] = [
                [{"index": e.index, "label": e.label, "digest": e.digest.hex()} for e in log.events]
                for log in details.rtmr_logs
            ]
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo("Machine measurements:")
    typer.echo(f"MRTD: {m.mrtd.hex()}")
    typer.echo(f"RTMR0: {m.rtmr0.hex()}")
    typer.echo(f"RTMR1: {m.rtmr1.hex()}")
    typer.echo(f"RTMR2: {m.rtmr2.hex()}")
    if events:
        for log in details.rtmr_logs:
            typer.echo(f"\nRTMR{log.rtmr} events ({len(log.events)}):")
            for e in log.events:
                typer.echo(f"  [{e.index:>2}] {e.label:<22} {e.digest.hex()}")


class Color(str, enum.Enum):
    auto = "auto"
    always = "always"
    never = "never"


def _read(path: Path, what: str) -> bytes:
    from dstack_mr.errors import EvidenceError

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_EVIDENCE_SIZE + 1)
    except OSError as exc:
        raise EvidenceError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_EVIDENCE_SIZE:
        raise EvidenceError(f"{what} {path} is larger than {MAX_EVIDENCE_SIZE} bytes")
    return data


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
        Path | None, typer.Option("--event-log", help="dstack JSON event log.")
    ] = None,
    attestation: Annotated[
        Path | None,
        typer.Option(
            "--attestation",
            help="Guest-agent GetQuote/Info response or tcb_info JSON (quote, event log and "
            "vm_config are taken from it).",
        ),
    ] = None,
    ccel: Annotated[
        Path | None,
        typer.Option(
            "--ccel", help="Binary CCEL/TCG2 event log (/sys/firmware/acpi/tables/data/CCEL)."
        ),
    ] = None,
    acpi_tables: AcpiTablesOpt = None,
    acpi_dumper: AcpiDumperOpt = None,
    acpi_timeout: AcpiTimeoutOpt = DEFAULT_TIMEOUT,
    explain: Annotated[
        bool, typer.Option("--explain/--no-explain", help="Search inputs that explain a diff.")
    ] = True,
    color: Annotated[Color, typer.Option("--color", help="Colour the report.")] = Color.auto,
    json_out: JsonOpt = False,
) -> None:
    """Expected MRs of a VmConfig on an image, compared event by event with real evidence.

    Evidence: --attestation, --quote, --event-log, --ccel and --actual-* (any mix). The
    report shows the inputs, the expected measurements and RTMR0 log, whether the evidence's
    log replays to its quote, every RTMR0-2 event lined up with its actual counterpart, and
    the input values that explain a difference.

    Exit status: 0 when everything compared matches, 1 on a mismatch, 2 on bad input.
    """
    from dstack_mr import diagnose as dg
    from dstack_mr.config import VmConfig
    from dstack_mr.errors import ConfigError
    from dstack_mr.eventlog import parse_attestation, parse_ccel, parse_json_event_log
    from dstack_mr.image import Image, ImageFiles, image_dir_for
    from dstack_mr.quote import parse_quote

    from .report import render

    with library_errors():
        evidence = dg.Evidence()
        if attestation is not None:
            att = parse_attestation(_read(attestation, "attestation"))
            evidence = evidence.merge(dg.Evidence.from_attestation(att))
        if quote is not None:
            evidence = evidence.merge(
                dg.Evidence(quote=parse_quote(_read(quote, "quote")), sources=(f"quote {quote}",))
            )
        if event_log is not None:
            evs = parse_json_event_log(_read(event_log, "event log"))
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
            vm = VmConfig.from_json(_read(vm_config, "VmConfig"))
        elif evidence.vm_config is not None:
            vm = evidence.vm_config
        else:
            raise ConfigError("no VmConfig: pass --vm-config, or an --attestation carrying one")

        if image_dir is not None:
            files = ImageFiles.from_dir(image_dir)
        elif image_base_dir is not None:
            files = ImageFiles.from_dir(image_dir_for(vm, image_base_dir))
        else:
            raise ConfigError("either --image-dir or --image-base-dir must be given")
        image = Image(files, acpi_source(acpi_tables, acpi_dumper, acpi_timeout))
        report = dg.diagnose(vm, image, evidence, explain=explain)

    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        use_color = color is Color.always or (
            color is Color.auto and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        )
        # click strips colour codes from non-terminal output unless told otherwise.
        typer.echo(render(report, use_color), color=use_color)
    raise typer.Exit(report.exit_code)


@app.command(
    epilog="Example:\n\n"
    "\b\n"
    "  dstack-mr example ./example-image\n"
    "  dstack-mr measure -c 2 -m 2G \\\n"
    "      --acpi-tables example-image/acpi-tables.bin example-image/metadata.json"
)
def example(
    directory: Annotated[Path, typer.Argument(help="Where to write the example image.")],
) -> None:
    """Write a small, synthetic but structurally valid image (firmware, kernel, initrd,
    metadata.json and an ACPI tables blob) to try the other commands on."""
    from dstack_mr.example import write_example_image

    with library_errors():
        try:
            meta = write_example_image(directory)
        except OSError as exc:
            typer.echo(f"error: cannot write {directory}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
    typer.echo(f"wrote {meta}")
    typer.echo(
        f"try: dstack-mr measure -c 2 -m 2G --acpi-tables {meta.parent / 'acpi-tables.bin'} {meta}"
    )


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
