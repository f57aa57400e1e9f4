"""HTML tables for notebooks (``_repr_html_``). Pure string building, no dependencies.

Jupyter shows :class:`~dstack_mr.machine.TdxMeasurements`,
:class:`~dstack_mr.machine.RtmrLog`, :class:`~dstack_mr.machine.MeasurementDetails` and
:class:`~dstack_mr.diagnose.DiagnoseReport` through these functions. Every table has the
CSS class ``dstack-mr`` plus one naming its content (``dstack-mr-registers``,
``dstack-mr-log``, ``dstack-mr-replay``, ``dstack-mr-events``); every row of a comparison
carries its status as its class (``match``, ``mismatch``, ``missing``, ``extra``,
``not-compared``), so a mismatching event is ``<tr class="mismatch">``. Digests are shown
short (``abcd1234…89ef``) with the full value in the cell's tooltip. Rows that differ are
also coloured inline, because some notebook viewers drop ``<style>`` blocks.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from .config import format_memory_size

if TYPE_CHECKING:
    from .diagnose import DiagnoseReport
    from .events import RtmrLog
    from .machine import MeasurementDetails, TdxMeasurements

_STYLE = (
    "<style>"
    "table.dstack-mr{border-collapse:collapse;margin:4px 0 10px 0}"
    "table.dstack-mr caption{text-align:left;font-weight:bold;padding:2px 0}"
    ".dstack-mr td,.dstack-mr th{text-align:left;padding:2px 8px;vertical-align:top}"
    ".dstack-mr td.mono{font-family:monospace;white-space:nowrap}"
    ".dstack-mr tr.mismatch,.dstack-mr tr.missing{background:#fdd}"
    ".dstack-mr tr.extra,.dstack-mr tr.warn{background:#ffd}"
    ".dstack-mr tr.not-compared{color:#888}"
    ".dstack-mr td.status-match{color:#080;font-weight:bold}"
    ".dstack-mr td.status-mismatch,.dstack-mr td.status-missing{color:#c00;font-weight:bold}"
    ".dstack-mr td.status-extra{color:#a60;font-weight:bold}"
    "</style>"
)

#: Inline row colours (the classes above say the same for viewers that keep <style>).
_ROW_COLOURS = {"mismatch": "#fdd", "missing": "#fdd", "extra": "#ffd", "warn": "#ffd"}


@attrs.frozen
class Cell:
    """A table cell: text (escaped when rendered), an optional tooltip and CSS class."""

    text: str
    title: str | None = None
    css: str | None = None

    def html(self) -> str:
        attrs_ = ""
        if self.css:
            attrs_ += f' class="{html.escape(self.css)}"'
        if self.title:
            attrs_ += f' title="{html.escape(self.title)}"'
        return f"<td{attrs_}>{html.escape(self.text)}</td>"


def short(digest: bytes, n: int = 8) -> str:
    """``abcd1234…89ef`` — enough to tell digests apart at a glance."""
    h = digest.hex()
    return h if len(h) <= 2 * n + 1 else f"{h[:n]}…{h[-4:]}"


def digest_cell(digest: bytes | None) -> Cell:
    """A short digest with the full hex as its tooltip; ``-`` when there is none."""
    if digest is None:
        return Cell("-")
    return Cell(short(digest), digest.hex(), "mono")


def status_cell(status: str) -> Cell:
    return Cell(status, css=f"status-{status}")


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str | Cell]],
    classes: Iterable[str] | None = None,
    caption: str | None = None,
    kind: str | None = None,
) -> str:
    """An escaped HTML table.

    ``classes`` gives each row a CSS class (a status such as ``mismatch``); ``kind`` adds
    ``dstack-mr-<kind>`` to the table's classes so that callers and tests can find it.
    """
    table_class = "dstack-mr" + (f" dstack-mr-{kind}" if kind else "")
    out = [f'<table class="{html.escape(table_class)}">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
    row_classes = iter(classes) if classes is not None else None
    for row in rows:
        cls = next(row_classes, "") if row_classes is not None else ""
        attr = f' class="{html.escape(cls)}"' if cls else ""
        if cls in _ROW_COLOURS:
            attr += f' style="background:{_ROW_COLOURS[cls]}"'
        cells = "".join(c.html() if isinstance(c, Cell) else Cell(str(c)).html() for c in row)
        out.append(f"<tr{attr}>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _memory(size: int) -> str:
    text = format_memory_size(size)
    return text if "." not in text else f"{size} bytes (~{text})"


def _wrap(*parts: str) -> str:
    return f'<div class="dstack-mr">{_STYLE}{"".join(parts)}</div>'


def _measurements_table(m: TdxMeasurements) -> str:
    rows = [
        (name.upper(), Cell(getattr(m, name).hex(), css="mono"))
        for name in ("mrtd", "rtmr0", "rtmr1", "rtmr2")
    ]
    return table(["register", "value"], rows, kind="registers")


def _log_table(log: RtmrLog) -> str:
    rows = [(str(e.index), e.label, digest_cell(e.digest), e.varies_with) for e in log.events]
    return table(
        ["#", "event", "digest", "varies with"],
        rows,
        caption=f"RTMR{log.rtmr} = {short(log.value)} ({len(log.events)} events)",
        kind="log",
    )


def measurements_html(m: TdxMeasurements) -> str:
    """MRTD and RTMR0-2, full hex."""
    return _wrap(_measurements_table(m))


def rtmr_log_html(log: RtmrLog) -> str:
    """One register's expected events: index, label, short digest, what it varies with."""
    return _wrap(_log_table(log))


def details_html(d: MeasurementDetails) -> str:
    """The registers, the settings that shaped them, and the three labelled event logs."""
    o = d.options
    settings = (
        f"QEMU {o.version_str}, pic={'on' if o.pic else 'off'}, "
        f"{'two' if o.two_pass_add_pages else 'single'}-pass page add, "
        f"OVMF layout {d.ovmf_variant.value} ({len(d.rtmr_logs[0])} RTMR0 events)"
    )
    return _wrap(
        _measurements_table(d.measurements),
        f"<p>{html.escape(settings)}</p>",
        *(_log_table(log) for log in d.rtmr_logs),
    )


def report_html(r: DiagnoseReport) -> str:
    """Verdict, registers, log replay, every event lined up, explanations.

    Each compared row's class is its status, so mismatching events are
    ``<tr class="mismatch">``.
    """
    verdict = r.headline()
    vm = r.vm_config
    parts = [
        f"<p><b>dstack-mr diagnose</b>: {html.escape(verdict)}<br>"
        f"cpu_count={vm.cpu_count}, memory_size={_memory(vm.memory_size)}, "
        f"qemu_version={html.escape(r.expected.options.version_str)}, "
        f"image {html.escape(r.image_dir)}, OVMF layout {html.escape(r.ovmf_variant.value)} "
        f"(from {html.escape(r.variant_source)}); {html.escape(r.acpi.description)}"
    ]
    if r.evidence_sources:
        parts.append(f"<br>evidence: {html.escape(', '.join(r.evidence_sources))}")
    parts.append("</p>")
    parts.append(
        table(
            ["register", "status", "expected", "actual", "source"],
            [
                (
                    c.name,
                    status_cell(c.status),
                    digest_cell(c.expected),
                    digest_cell(c.actual),
                    c.source or "-",
                )
                for c in r.registers
            ],
            [c.status for c in r.registers],
            kind="registers",
        )
    )
    if r.replay:
        # RTMR3 holds runtime events dstack-mr does not predict: a replay problem there is
        # reported, but not as a boot-time mismatch.
        parts.append(
            table(
                ["register", "log replays to evidence", "detail"],
                [
                    (
                        f"RTMR{c.imr}",
                        Cell("yes", css="status-match")
                        if c.matches
                        else Cell("NO", css="status-mismatch"),
                        c.message,
                    )
                    for c in r.replay
                ],
                [
                    "match" if c.matches else ("warn" if c.imr == 3 else "mismatch")
                    for c in r.replay
                ],
                caption="evidence consistency",
                kind="replay",
            )
        )
    if r.events:
        diffs = len(r.differing_events())
        parts.append(
            table(
                ["rtmr", "#", "event", "status", "expected", "actual", "actual event"],
                [
                    (
                        str(e.rtmr),
                        "-" if e.index is None else str(e.index),
                        Cell(e.label, e.varies_with or None),
                        status_cell(e.status),
                        digest_cell(e.expected),
                        digest_cell(e.actual),
                        e.actual_description or "",
                    )
                    for e in r.events
                ],
                [e.status for e in r.events],
                caption=f"events ({len(r.events) - diffs} of {len(r.events)} match)",
                kind="events",
            )
        )
    if r.findings:
        items = "".join(
            f"<li>{html.escape(f.message)} <b>[{f.status}]</b></li>" for f in r.findings
        )
        parts.append(f"<p><b>explanation</b></p><ul>{items}</ul>")
    return _wrap(*parts)
