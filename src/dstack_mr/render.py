"""HTML tables for notebooks (``_repr_html_``). Pure string building, no dependencies."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .diagnose import DiagnoseReport
    from .machine import MeasurementDetails, RtmrLog, TdxMeasurements

_STYLE = (
    "<style>.dstack-mr td,.dstack-mr th{text-align:left;padding:2px 8px;"
    "font-family:monospace}.dstack-mr tr.mismatch{background:#fdd}"
    ".dstack-mr tr.match{background:#dfd}</style>"
)


def short(digest: bytes, n: int = 8) -> str:
    """``abcd1234…89ef`` — enough to tell digests apart at a glance."""
    h = digest.hex()
    return h if len(h) <= 2 * n + 1 else f"{h[:n]}…{h[-4:]}"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    classes: Iterable[str] | None = None,
    caption: str | None = None,
) -> str:
    """An escaped HTML table; ``classes`` gives each row a CSS class (e.g. ``mismatch``)."""
    out = [_STYLE, '<table class="dstack-mr">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
    row_classes = iter(classes) if classes is not None else None
    for row in rows:
        cls = next(row_classes, "") if row_classes is not None else ""
        attr = f' class="{html.escape(cls)}"' if cls else ""
        cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        out.append(f"<tr{attr}>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _digest_cell(d: bytes) -> str:
    return d.hex()


def measurements_html(m: TdxMeasurements) -> str:
    rows = [
        (name.upper(), _digest_cell(getattr(m, name)))
        for name in ("mrtd", "rtmr0", "rtmr1", "rtmr2")
    ]
    return table(["register", "value"], rows)


def rtmr_log_html(log: RtmrLog) -> str:
    rows = [(str(e.index), e.label, short(e.digest), e.varies_with) for e in log.events]
    return table(
        ["#", "event", "digest", "varies with"],
        rows,
        caption=f"RTMR{log.rtmr} = {short(log.value)} ({len(log.events)} events)",
    )


def details_html(d: MeasurementDetails) -> str:
    parts = [measurements_html(d.measurements)]
    parts += [rtmr_log_html(log) for log in d.rtmr_logs]
    return "".join(parts)


def report_html(r: DiagnoseReport) -> str:
    """Registers, then every event lined up, mismatching rows marked ``class="mismatch"``."""
    verdict = "all compared measurements match" if r.ok else "MISMATCH"
    parts = [
        f"<p><b>dstack-mr diagnose</b>: {html.escape(verdict)} "
        f"(OVMF layout {html.escape(r.ovmf_variant.value)}, "
        f"from {html.escape(r.variant_source)})</p>"
    ]
    parts.append(
        table(
            ["register", "status", "expected", "actual", "source"],
            [
                (
                    c.name,
                    c.status,
                    short(c.expected),
                    short(c.actual) if c.actual else "-",
                    c.source or "-",
                )
                for c in r.registers
            ],
            [c.status for c in r.registers],
        )
    )
    if r.replay:
        parts.append(
            table(
                ["register", "log replays to evidence", "detail"],
                [(f"RTMR{c.imr}", "yes" if c.matches else "NO", c.message) for c in r.replay],
                ["match" if c.matches else "mismatch" for c in r.replay],
            )
        )
    if r.events:
        parts.append(
            table(
                ["rtmr", "#", "event", "status", "expected", "actual", "actual event"],
                [
                    (
                        str(e.rtmr),
                        "-" if e.index is None else str(e.index),
                        e.label,
                        e.status,
                        short(e.expected) if e.expected else "-",
                        short(e.actual) if e.actual else "-",
                        e.actual_description or "",
                    )
                    for e in r.events
                ],
                ["match" if e.status == "match" else "mismatch" for e in r.events],
            )
        )
    if r.findings:
        items = "".join(f"<li>{html.escape(f.message)}</li>" for f in r.findings)
        parts.append(f"<ul>{items}</ul>")
    return "".join(parts)
