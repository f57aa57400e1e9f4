"""``measure --snp``: its option parser and its printing (``diagnose`` tells an SNP
attestation apart in :mod:`dstack_mr.evidence_files` and judges it like TDX evidence)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def parse_features(text: str) -> int:
    """``--guest-features``: decimal or 0x-hex, a u64."""
    try:
        value = int(text, 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value < 1 << 64 or not text.strip() == text:
        raise typer.BadParameter(f"--guest-features: {text!r} is not a number (0x1, 33, ...)")
    return value


def measure_snp(
    image: Path, vcpus: int, vcpu_type: str, guest_features: int, steps: bool, json_out: bool
) -> None:
    """Print the expected SNP MEASUREMENT of an image directory (or of its metadata.json's
    directory) for one deployment."""
    from dstack_mr.snp_image import measure_snp_image
    from dstack_mr.snp_text import snp_measurement_json, snp_measurement_text

    launch = measure_snp_image(image, vcpus, vcpu_type, guest_features)
    if json_out:
        typer.echo(json.dumps(snp_measurement_json(launch, steps), indent=2))
    else:
        typer.echo(snp_measurement_text(launch, steps))
