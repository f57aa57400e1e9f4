"""``dstack-mr measurement-doc`` and ``inspect-measurement``: the lite-mode document."""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .base import EXIT_BAD_INPUT, library_errors
from .main import _read, app


@app.command(
    "measurement-doc",
    epilog="Examples:\n\n"
    "\b\n"
    "  dstack-mr measurement-doc IMAGE_DIR -o measurement.tdx.cbor\n"
    "  dstack-mr measurement-doc ./example-image --json",
)
def measurement_doc(
    image_dir: Annotated[Path, typer.Argument(help="Image directory (metadata.json, ...).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the CBOR here (default: standard output)."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the document as JSON instead of CBOR.")
    ] = False,
    snp: Annotated[
        bool,
        typer.Option("--snp", help="measurement.snp.cbor (AMD SEV-SNP) from the SEV firmware."),
    ] = False,
) -> None:
    """Compute an image's measurement.tdx.cbor (what upstream dstack ships for lite mode).

    Both MRTD candidates, the kernel's Authenticode digest for QEMU's high-memory placement,
    the cmdline (with " initrd=initrd") and initrd digests, and the TD HOB witness of the
    firmware. List its sha256 in the image's sha256sum.txt to bind it to the image.
    With --snp: measurement.snp.cbor instead, from the SEV firmware (metadata.json's
    bios-sev, else bios), kernel, initrd and cmdline.
    """
    from dstack_mr.measurement_doc import build_document

    from . import snp as snp_cli

    with library_errors():
        if snp:
            data = snp_cli.document_cbor(image_dir, json_out)
        else:
            doc = build_document(str(image_dir))
            if json_out:
                typer.echo(json.dumps(doc.to_dict(), indent=2))
            data = None if json_out else doc.to_cbor()
    if data is None:
        return
    if output is not None:
        try:
            output.write_bytes(data)
        except OSError as exc:
            typer.echo(f"error: cannot write {output}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        return
    if sys.stdout.isatty():
        typer.echo("error: refusing to write binary CBOR to a terminal; use -o FILE", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    typer.echo(data, nl=False)


@app.command(
    "inspect-measurement",
    epilog="Examples:\n\n"
    "\b\n"
    "  dstack-mr inspect-measurement measurement.tdx.cbor\n"
    "  dstack-mr inspect-measurement vm_config.json  # also checks its chain",
)
def inspect_measurement(
    file: Annotated[
        Path,
        typer.Argument(
            help="measurement.tdx.cbor, or a VmConfig JSON carrying tdx_measurement.",
            metavar="FILE",
        ),
    ],
) -> None:
    """Print a measurement.tdx.cbor as JSON (digests in hex, the witness also decoded).

    Given a VmConfig JSON instead, the document is first checked against its
    sha256sum.txt and os_image_hash, as lite verification does. A measurement.snp.cbor, or
    a VmConfig carrying sev_snp_measurement, is decoded the same way (AMD SEV-SNP).
    """
    from dstack_mr.config import VmConfig
    from dstack_mr.errors import ConfigError
    from dstack_mr.measurement_doc import MeasurementDocument, verify_material

    from . import snp as snp_cli

    with library_errors():
        data = _read(file, "measurement document")
        snp_out = snp_cli.inspect_document(data)
        if snp_out is not None:
            typer.echo(json.dumps(snp_out, indent=2))
            return
        if data.lstrip()[:1] == b"{":
            vm = VmConfig.from_json(data)
            if vm.tdx_measurement is None:
                raise ConfigError(f"{file}: the VmConfig has no tdx_measurement")
            doc = verify_material(vm.tdx_measurement, vm.os_image_hash)
            out = {"integrity": "sha256sum.txt and os_image_hash check out", **doc.to_dict()}
        else:
            out = MeasurementDocument.from_cbor(data).to_dict()
    typer.echo(json.dumps(out, indent=2))
