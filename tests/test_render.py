"""Notebook HTML (``_repr_html_``): tables, short digests, mismatching rows marked."""

from __future__ import annotations

from html.parser import HTMLParser

import attrs
import pytest
from vmlog import events_of

from dstack_mr import VmConfig
from dstack_mr.diagnose import DiagnoseReport, diagnose
from dstack_mr.eventlog import Event
from dstack_mr.evidence import Evidence
from dstack_mr.image import Image
from dstack_mr.machine import MeasurementDetails
from dstack_mr.render import Cell, short, table

VM = VmConfig(cpu_count=2, memory_size=2 << 30)


@attrs.define
class Row:
    css: str
    cells: list[str] = attrs.Factory(list)
    titles: list[str | None] = attrs.Factory(list)


@attrs.define
class Table:
    css: str
    rows: list[Row] = attrs.Factory(list)


class TableParser(HTMLParser):
    """Collects every <table>: its class, and each data row's class, cell texts and titles."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[Table] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        a = dict(attrs_)
        if tag == "table":
            self.tables.append(Table(a.get("class") or ""))
        elif tag == "tr":
            self.tables[-1].rows.append(Row(a.get("class") or ""))
        elif tag == "td":
            self._cell = []
            self.tables[-1].rows[-1].titles.append(a.get("title"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.tables[-1].rows[-1].cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def find(self, kind: str) -> Table:
        (found,) = [t for t in self.tables if f"dstack-mr-{kind}" in t.css.split()]
        return found


def parse(html_text: str) -> TableParser:
    p = TableParser()
    p.feed(html_text)
    p.close()
    return p


def data_rows(t: Table) -> list[Row]:
    return [r for r in t.rows if r.cells]  # the header row has <th> only


@pytest.fixture(scope="module")
def expected(image: Image) -> MeasurementDetails:
    return image.measure(VM)


def logged(details: MeasurementDetails) -> list[Event]:
    return list(events_of(details))


def report_with_one_bad_event(
    image: Image, expected: MeasurementDetails, rtmr: int, label: str
) -> DiagnoseReport:
    events = logged(expected)
    target = next(e for e in expected.rtmr_logs[rtmr].events if e.label == label)
    at = next(i for i, ev in enumerate(events) if ev.imr == rtmr and ev.digest == target.digest)
    events[at] = attrs.evolve(events[at], digest=bytes(48))
    return diagnose(VM, image, Evidence(events=tuple(events)))


@pytest.mark.parametrize(("rtmr", "label"), [(0, "cfv_image"), (1, "kernel_authenticode")])
def test_one_mismatching_event_is_marked(
    image: Image, expected: MeasurementDetails, rtmr: int, label: str
) -> None:
    report = report_with_one_bad_event(image, expected, rtmr, label)
    page = report._repr_html_()
    tables = parse(page)

    events = data_rows(tables.find("events"))
    assert len(events) == 13 + 5 + 2
    marked = [r for r in events if r.css == "mismatch"]
    assert len(marked) == 1, [(r.css, r.cells[:3]) for r in events]
    (row,) = marked
    assert row.cells[0] == str(rtmr) and row.cells[2] == label and row.cells[3] == "mismatch"
    # Short digests, the full value as the tooltip.
    target = next(e for e in expected.rtmr_logs[rtmr].events if e.label == label)
    assert row.cells[4] == short(target.digest) and row.titles[4] == target.digest.hex()
    assert row.cells[5] == short(bytes(48))
    assert all(r.css == "match" for r in events if r is not row)
    # The row is coloured even where <style> is stripped.
    assert page.count('<tr class="mismatch" style="background:') == 2  # this event + RTMR row

    registers = {r.cells[0]: r.css for r in data_rows(tables.find("registers"))}
    assert registers == {
        "MRTD": "not-compared",
        "RTMR0": "mismatch" if rtmr == 0 else "match",
        "RTMR1": "mismatch" if rtmr == 1 else "match",
        "RTMR2": "match",
    }
    assert "MISMATCH" in page


def test_matching_report_marks_nothing(image: Image, expected: MeasurementDetails) -> None:
    report = diagnose(VM, image, Evidence(events=tuple(logged(expected))))
    page = report._repr_html_()
    assert 'class="mismatch"' not in page
    assert "MATCH: RTMR0, RTMR1, RTMR2 equal the expected values" in page
    rows = data_rows(parse(page).find("events"))
    assert {r.css for r in rows} == {"match"} and len(rows) == 20


def test_missing_and_extra_events(image: Image, expected: MeasurementDetails) -> None:
    events = logged(expected)
    rtmr2 = [i for i, e in enumerate(events) if e.imr == 2]
    del events[rtmr2[-1]]  # the initrd event never happened ...
    events.append(Event(1, 0x80000007, b"\x11" * 48))  # ... and RTMR1 got one more
    page = diagnose(VM, image, Evidence(events=tuple(events)))._repr_html_()
    rows = data_rows(parse(page).find("events"))
    by_css = {r.css: r for r in rows if r.css != "match"}
    assert set(by_css) == {"missing", "extra"}
    assert by_css["missing"].cells[2] == "initrd"
    assert by_css["extra"].cells[0] == "1" and by_css["extra"].cells[4] == "-"


def test_measurement_tables(expected: MeasurementDetails) -> None:
    m = expected.measurements
    regs = data_rows(parse(m._repr_html_()).find("registers"))
    assert [(r.cells[0], r.cells[1]) for r in regs] == [
        (k.upper(), v) for k, v in m.to_dict().items()
    ]

    log = expected.rtmr_logs[0]
    rows = data_rows(parse(log._repr_html_()).find("log"))
    assert [r.cells[1] for r in rows] == [e.label for e in log.events]
    assert [r.titles[2] for r in rows] == [e.digest.hex() for e in log.events]
    assert f"RTMR0 = {short(log.value)} (13 events)" in log._repr_html_()

    details = parse(expected._repr_html_())
    assert [t.css for t in details.tables] == ["dstack-mr dstack-mr-registers"] + [
        "dstack-mr dstack-mr-log"
    ] * 3
    assert "OVMF layout pre202505 (13 RTMR0 events)" in expected._repr_html_()


def test_everything_is_escaped(image: Image, expected: MeasurementDetails) -> None:
    html_text = table(["<h>"], [["<b>x</b>"], [Cell("a&b", title='"q"')]], ["<c>"])
    assert "<b>" not in html_text and "&lt;b&gt;x&lt;/b&gt;" in html_text
    assert 'title="&quot;q&quot;"' in html_text and 'class="&lt;c&gt;"' in html_text

    events = logged(expected)
    events.append(Event(2, 6, b"\x22" * 48, event_payload=b"<script>alert(1)</script>"))
    page = diagnose(VM, image, Evidence(events=tuple(events)))._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_renders_without_evidence(image: Image) -> None:
    page = diagnose(VM, image)._repr_html_()
    assert "NOT COMPARED: no evidence" in page and "dstack-mr-events" not in page
    assert {r.css for r in data_rows(parse(page).find("registers"))} == {"not-compared"}
