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
from dstack_mr.acpi import DEFAULT_TIMEOUT, AcpiDumper, AcpiSource, AcpiTablesFile
from dstack_mr.config import (
    OvmfVariant,
    ovmf_variant_for_version,
    parse_memory_size,
    parse_rust_u32,
    version_rules_disagree,
)
from dstack_mr.errors import ConfigError

# EXIT_* and library_errors live in .base; re-exported for command modules importing them here.
from .base import EXIT_BAD_INPUT as EXIT_BAD_INPUT
from .base import EXIT_MISMATCH as EXIT_MISMATCH
from .base import App, State, bool_option, parse_bool
from .base import library_errors as library_errors

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


def _smbios_options(
    computed: bool, host_cpu: str | None, product: str | None
) -> "SmbiosOptions | None":
    if not computed:
        if host_cpu is not None or product is not None:
            raise typer.BadParameter("--host-cpu and --smbios-product need --smbios-computed")
        return None
    from dstack_mr.smbios import SmbiosOptions, find_host_cpu

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
    kind = getattr(source, "value", source)
    if tables is not None and dumper is not None:
        raise typer.BadParameter("give either --acpi-tables or --acpi-dumper, not both")
    if kind in ("builtin", "auto"):
        if tables is not None:
            raise typer.BadParameter(f"--acpi-source {kind} does not read --acpi-tables")
        from dstack_mr.acpi_model import QemuAcpiModel, auto_source

        if kind == "builtin":
            return QemuAcpiModel()
        return auto_source(AcpiDumper(program=dumper, timeout=timeout))
    if kind == "file" and tables is None:
        raise typer.BadParameter("--acpi-source file needs --acpi-tables FILE")
    if kind == "dumper" and tables is not None:
        raise typer.BadParameter("--acpi-source dumper does not read --acpi-tables")
    if tables is not None:
        return AcpiTablesFile(tables)
    return AcpiDumper(program=dumper, timeout=timeout)


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
                _u32(cpu, "--cpu"),
                vcpu_type,
                snp_cli.parse_features(guest_features),
                events,
                json_out,
            )
        return
    from dstack_mr.image import ImageFiles
    from dstack_mr.machine import Machine

    with library_errors():
        files = ImageFiles.from_metadata(metadata)
        info = files.info
        decided_by_version: str | None = None
        if ovmf_variant is not None:
            variant = ovmf_variant
        elif dstack_os_version is not None:
            variant = ovmf_variant_for_version(dstack_os_version)
            decided_by_version = dstack_os_version
        elif info.ovmf_variant is not None:
            variant = info.ovmf_variant
        elif info.version:
            variant = ovmf_variant_for_version(info.version)
            decided_by_version = info.version
        else:
            variant = OvmfVariant.PRE202505
        # Text mode only: JSON output stays exactly the reference's, with nothing beside it.
        if (
            not json_out
            and decided_by_version is not None
            and version_rules_disagree(decided_by_version)
        ):
            typer.echo(
                f"note: OVMF layout stable202505 from version {decided_by_version} (the "
                "reference's rule); upstream dstack uses pre202505 for every version. Pass "
                "--ovmf-variant to choose; a real event log shows which one the VM has.",
                err=True,
            )
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
            num_nics=_u32(num_nics, "--num-nics"),
            num_verity_volumes=_u32(num_verity_volumes, "--num-verity-volumes"),
            swtpm=parse_bool(swtpm),
            hotplug_off=parse_bool(hotplug_off),
            root_verity=parse_bool(root_verity),
            qemu_version=qemu_version,
            host_share_mode=host_share_mode,
            ovmf_variant=variant,
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
    m = details.measurements
    if json_out:
        out: dict[str, object] = dict(m.to_dict())
        if events:
            out["acpi_source"] = details.acpi_tables.source
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
        typer.echo(f"ACPI tables from: {details.acpi_tables.source}")
        for log in details.rtmr_logs:
            typer.echo(f"\nRTMR{log.rtmr} events ({len(log.events)}):")
            for e in log.events:
                typer.echo(f"  [{e.index:>2}] {e.label:<22} {e.digest.hex()}")


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


def run() -> None:
    """Run the app; Ctrl-C exits 130. The console script, :func:`dstack_mr_cli.entry.run`,
    calls this after it may have started hashing ``measure``'s initrd."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
