"""``dstack-mr example``: write the bundled synthetic image to try the other commands on."""

from pathlib import Path
from typing import Annotated

import typer

from .base import library_errors, write_errors
from .main import app


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

    with library_errors(), write_errors(directory):
        meta = write_example_image(directory)
    typer.echo(f"wrote {meta}")
    typer.echo(
        f"try: dstack-mr measure -c 2 -m 2G --acpi-tables {meta.parent / 'acpi-tables.bin'} {meta}"
    )
