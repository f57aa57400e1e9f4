"""The ``dstack-mr`` command. A thin layer: parse options, call the library, print.

Library errors become one line on stderr and exit code 2 (``--debug`` adds the traceback);
``diagnose`` exits 1 when evidence and expectation differ. The shared command base is
:mod:`dstack_mr_cli.base`.
"""

import enum
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import attrs
import typer

# Only what every command's options need at start-up; the rest is imported where it runs.
from dstack_mr import __version__
from dstack_mr.acpi import DEFAULT_TIMEOUT, AcpiSource
from dstack_mr.config import OvmfVariant, parse_memory_size, parse_rust_u32
from dstack_mr.errors import ConfigError

from .base import App, State, bool_option, library_errors, parse_bool

if TYPE_CHECKING:
    from dstack_mr.smbios import SmbiosOptions

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
    # Every other command lives in its own module, imported when the command is looked up
    # (measure needs none of them); --help lists measure, then these in this order.
    command_modules={
        "diagnose": "dstack_mr_cli.diagnose_cmd",
        "example": "dstack_mr_cli.example_cmd",
        "measurement-doc": "dstack_mr_cli.measurement_cmd",
        "inspect-measurement": "dstack_mr_cli.measurement_cmd",
        "verify": "dstack_mr_cli.verify_cmd",
    },
)


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


def _u32(value: str, option: str, minimum: int = 0) -> int:
    """A u32 option, parsed as Rust parses it. ``minimum`` is the low end the message names;
    the library refuses smaller values itself (``--cpu 0``: cpu_count must be >= 1)."""
    # Rust's u32 parser: no underscores, no whitespace, no sign but '+'.
    number = parse_rust_u32(value)
    if number is None:
        raise typer.BadParameter(f"{option}: {value!r} is not a number in {minimum}..=4294967295")
    return number


def _opt_bool(value: str | None) -> bool | None:
    return None if value is None else parse_bool(value)


def _memory(value: str) -> int:
    try:
        return parse_memory_size(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def _smbios_options(
    computed: bool, host_cpu: str | None, product: str | None
) -> "SmbiosOptions | None":
    if not computed:
        if host_cpu is not None or product is not None:
            raise typer.BadParameter("--host-cpu and --smbios-product need --smbios-computed")
        return None
    from dstack_mr.host_cpu import find_host_cpu
    from dstack_mr.smbios import SmbiosOptions

    options = SmbiosOptions()
    if host_cpu is not None:
        options = attrs.evolve(options, host_cpu=find_host_cpu(host_cpu))
    if product is not None:
        options = attrs.evolve(options, product=product)
    return options


def acpi_source(
    tables: Path | None, dumper: str | None, timeout: float, source: object = None
) -> AcpiSource:
    """The tables' source: --acpi-source if given, else --acpi-tables FILE, else the dumper."""
    from dstack_mr.acpi_source import acpi_source_for

    kind = getattr(source, "value", source)
    try:
        return acpi_source_for(None if kind is None else str(kind), tables, dumper, timeout)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


class AcpiSourceKind(str, enum.Enum):
    auto = "auto"
    dumper = "dumper"
    file = "file"
    builtin = "builtin"


AcpiSourceOpt = Annotated[
    AcpiSourceKind | None,
    typer.Option(
        "--acpi-source",
        help="Where the ACPI tables come from: the dumper, --acpi-tables FILE, the built-in "
        "model of dstack's QEMU (QEMU 8.0 to 9.2), or auto (the dumper when installed, else "
        "builtin). Default: FILE when --acpi-tables is given, else the dumper.",
    ),
]


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
QuoteOpt = Annotated[Path | None, typer.Option("--quote", help="TDX quote v4/v5, hex or binary.")]


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
    num_nics: Annotated[
        str, typer.Option("--num-nics", metavar="N", help="virtio-net NICs (0 allowed).")
    ] = "1",
    num_verity_volumes: Annotated[
        str,
        typer.Option("--num-verity-volumes", metavar="N", help="Read-only virtio-blk volumes."),
    ] = "0",
    swtpm: Annotated[
        str, bool_option("--swtpm", "VM has a software TPM (refused: not modelled).")
    ] = "false",
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
            help="dstack OS version X.Y.Z[.SUFFIX]; picks the OVMF event layout "
            "(0.5.10 <= v < 0.6.0 and v >= 0.6.1 are stable202505). Default: from "
            "metadata.json.",
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
    acpi_source_kind: AcpiSourceOpt = None,
    events: Annotated[
        bool, typer.Option("--events", help="Also print every RTMR event, labelled.")
    ] = False,
    smbios_computed: Annotated[
        bool,
        typer.Option(
            "--smbios-computed",
            help="stable202505: compute the SMBIOS event (RTMR0 event 13) from memory, QEMU "
            "version, host CPU and SMBIOS strings instead of using the reference's constant "
            "(right only for 2 GiB on QEMU 8.2.2).",
        ),
    ] = False,
    host_cpu: Annotated[
        str | None,
        typer.Option(
            "--host-cpu",
            help="With --smbios-computed: the host CPU, e.g. 'Emerald Rapids stepping 2' "
            "(default) or CPUID leaf 1 as EAX[:EDX] in hex.",
            metavar="CPU",
        ),
    ] = None,
    smbios_product: Annotated[
        str | None,
        typer.Option(
            "--smbios-product",
            help="With --smbios-computed: the VMM's -smbios type=1 product string "
            "(default dstack).",
            metavar="NAME",
        ),
    ] = None,
    json_out: JsonOpt = False,
    snp: Annotated[
        bool,
        typer.Option(
            "--snp",
            help="AMD SEV-SNP instead: the launch MEASUREMENT for --cpu vCPUs, from the "
            "image's measurement.snp.cbor (else its SEV firmware, kernel and initrd).",
        ),
    ] = False,
    vcpu_type: Annotated[
        str, typer.Option("--vcpu-type", help="SEV-SNP: QEMU CPU model.", metavar="MODEL")
    ] = "EPYC-v4",
    guest_features: Annotated[
        str, typer.Option("--guest-features", help="SEV-SNP: SEV features.", metavar="N")
    ] = "0x1",
) -> None:
    """Compute MRTD and RTMR0-2 of an image for one machine configuration.

    The image's cmdline is measured with " initrd=initrd" appended, like the reference.
    RTMR0 needs QEMU's ACPI tables: from --acpi-tables FILE, or by running the
    dstack-acpi-tables dumper. With --snp: the AMD SEV-SNP launch MEASUREMENT instead
    (METADATA may then also be the image directory).
    """
    if snp:
        from . import snp as snp_cli

        with library_errors():
            snp_cli.measure_snp(
                metadata,
                _u32(cpu, "--cpu", minimum=1),
                vcpu_type,
                snp_cli.parse_features(guest_features),
                events,
                json_out,
            )
        return
    from dstack_mr.image import ImageFiles, image_variant
    from dstack_mr.machine import Machine
    from dstack_mr.measurement_text import measurement_json, measurement_text

    with library_errors():
        files = ImageFiles.from_metadata(metadata)
        resolved = image_variant(files.info, forced=ovmf_variant, os_version=dstack_os_version)
        # Text mode only: JSON output stays exactly the reference's, with nothing beside it.
        if not json_out and resolved.note is not None:
            typer.echo(f"note: {resolved.note}", err=True)
        machine = Machine(
            cpu_count=_u32(cpu, "--cpu", minimum=1),
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
            num_nics=_u32(num_nics, "--num-nics"),
            num_verity_volumes=_u32(num_verity_volumes, "--num-verity-volumes"),
            swtpm=parse_bool(swtpm),
            hotplug_off=parse_bool(hotplug_off),
            root_verity=parse_bool(root_verity),
            qemu_version=qemu_version,
            host_share_mode=host_share_mode,
            ovmf_variant=resolved.variant,
            smbios=_smbios_options(smbios_computed, host_cpu, smbios_product),
        )
        details = machine.measure_with_logs(
            acpi_source(acpi_tables, acpi_dumper, acpi_timeout, acpi_source_kind)
        )
    for note in details.notes:
        # stderr: stdout keeps the reference's exact output.
        typer.echo(f"note: {note}", err=True)
    for warning in details.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if json_out:
        typer.echo(json.dumps(measurement_json(details, events), indent=2))
    else:
        typer.echo(measurement_text(details, events))


def run() -> None:
    """Run the app; Ctrl-C exits 130. The console script, :func:`dstack_mr_cli.entry.run`,
    calls this after it may have started hashing ``measure``'s initrd."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
