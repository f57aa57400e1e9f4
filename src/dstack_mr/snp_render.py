"""HTML tables of SEV-SNP results for notebooks, in the style of :mod:`dstack_mr.render`.

Tables carry the classes ``dstack-mr`` and ``dstack-mr-snp-<content>`` (``snp-inputs``,
``snp-steps``, ``snp-checks``, ``snp-integrity``); compared rows carry their status
(``match``, ``mismatch``, ``not-compared``) as their class.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from .render import Cell, digest_cell, short, status_cell, table

if TYPE_CHECKING:
    from .snp import SnpLaunchInputs, SnpMeasurement
    from .snp_diagnose import SnpDiagnoseReport

_WRAP_STYLE = (
    "<style>"
    "table.dstack-mr{border-collapse:collapse;margin:4px 0 10px 0}"
    "table.dstack-mr caption{text-align:left;font-weight:bold;padding:2px 0}"
    ".dstack-mr td,.dstack-mr th{text-align:left;padding:2px 8px;vertical-align:top}"
    ".dstack-mr td.mono{font-family:monospace;white-space:nowrap}"
    ".dstack-mr tr.mismatch{background:#fdd}"
    ".dstack-mr td.status-match{color:#080;font-weight:bold}"
    ".dstack-mr td.status-mismatch{color:#c00;font-weight:bold}"
    "</style>"
)


def _wrap(*parts: str) -> str:
    return f'<div class="dstack-mr">{_WRAP_STYLE}{"".join(parts)}</div>'


def _inputs_table(i: SnpLaunchInputs) -> str:
    rows: list[tuple[str, str | Cell]] = [
        ("cmdline", Cell(i.cmdline, css="mono")),
        ("ovmf_hash", digest_cell(i.ovmf_hash)),
        ("kernel_hash", digest_cell(i.kernel_hash)),
        ("initrd_hash", digest_cell(i.effective_initrd_hash)),
        ("hashes_table_gpa", Cell(f"{i.hashes_table_gpa:#x}", css="mono")),
        ("reset_eip", Cell(f"{i.reset_eip:#x}", css="mono")),
        ("ovmf_sections", f"{len(i.ovmf_sections)} sections"),
        ("vcpus", str(i.vcpus)),
        ("vcpu_type", f"{i.vcpu_type} (CPUID signature {i.vcpu_sig:#x})"),
        ("guest_features", Cell(f"{i.guest_features:#x}", css="mono")),
    ]
    return table(["input", "value"], rows, caption="launch inputs", kind="snp-inputs")


def _steps_table(m: SnpMeasurement) -> str:
    rows = [
        (
            s.label,
            "-" if s.gpa is None else Cell(f"{s.gpa:#x}", css="mono"),
            str(s.pages),
            digest_cell(s.digest),
            s.varies_with,
        )
        for s in m.steps
    ]
    return table(
        ["stage", "gpa", "pages", "launch digest after", "varies with"],
        rows,
        caption=f"MEASUREMENT = {short(m.measurement)} ({len(m.steps)} stages)",
        kind="snp-steps",
    )


def measurement_html(m: SnpMeasurement) -> str:
    """The MEASUREMENT, its inputs and its stages."""
    head = (
        f"<p><b>SEV-SNP MEASUREMENT</b> "
        f'<span class="mono" style="font-family:monospace">{m.measurement.hex()}</span></p>'
    )
    return _wrap(head, _inputs_table(m.inputs), _steps_table(m))


def report_html(r: SnpDiagnoseReport) -> str:
    """Verdict, compared values, integrity chain, explanations; signature not checked."""
    parts = [
        f"<p><b>dstack-mr diagnose (AMD SEV-SNP)</b>: {html.escape(r.verdict)}<br>"
        "report signature (ARK → ASK → VCEK): <b>not checked</b><br>"
        f"evidence: {html.escape(', '.join(r.sources))}</p>",
        table(
            ["value", "status", "expected", "actual", "expected from"],
            [
                (
                    c.name,
                    status_cell(c.status),
                    digest_cell(c.expected),
                    digest_cell(c.actual),
                    c.source,
                )
                for c in r.checks
            ],
            [c.status for c in r.checks],
            kind="snp-checks",
        ),
        table(
            ["link", "status", "detail"],
            [(i.name, status_cell(i.status), i.message) for i in r.integrity],
            [i.status for i in r.integrity],
            caption="integrity chain (os_image_hash → sha256sum.txt → measurement.snp.cbor)",
            kind="snp-integrity",
        ),
        _inputs_table(r.inputs),
    ]
    notes = [f"problem: {p}" for p in r.problems] + [f"warning: {w}" for w in r.warnings]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if r.findings:
        items = "".join(
            f"<li>{'✔ ' if f.reproduced else ''}{html.escape(f.message)}</li>" for f in r.findings
        )
        parts.append(f"<p><b>explanation</b></p><ul>{items}</ul>")
    return _wrap(*parts)
