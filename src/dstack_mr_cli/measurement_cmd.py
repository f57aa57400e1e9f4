"""``dstack-mr measurement-doc`` and ``inspect-measurement``: the lite-mode document."""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .base import EXIT_BAD_INPUT, library_errors, write_errors
from .main import app


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
    from dstack_mr.measurement_doc import build_document_with_warnings
    from dstack_mr.snp_image import build_snp_document

    with library_errors():
        if snp:
            snp_doc = build_snp_document(image_dir)
            to_dict, to_cbor = snp_doc.to_dict, snp_doc.to_cbor
        else:
            built = build_document_with_warnings(str(image_dir))
            to_dict, to_cbor = built.document.to_dict, built.document.to_cbor
            # stderr: the document on stdout stays exactly what the image measures to.
            for warning in built.warnings:
                typer.echo(f"warning: {warning}", err=True)
        if json_out:
            typer.echo(json.dumps(to_dict(), indent=2))
            return
        data = to_cbor()
    if output is not None:
        with write_errors(output):
            output.write_bytes(data)
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
    from dstack_mr.evidence_files import read_evidence
    from dstack_mr.inspect_doc import inspect_measurement

    with library_errors():
        out = inspect_measurement(read_evidence(file, "measurement document"), file)
    typer.echo(json.dumps(out, indent=2))
