"""The RTMR0-2 layouts as data (dstack_mr.events): shape, sources, and the one assembler."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT

from dstack_mr import OvmfVariant, events
from dstack_mr.digest import replay, sha384
from dstack_mr.events import (
    MACHINE_INPUTS,
    RTMR0_LAYOUTS,
    RTMR1_LAYOUT,
    RTMR2_LAYOUT,
    EventSpec,
    labelled_log,
    labelled_logs,
)

ALL_LAYOUTS = [*RTMR0_LAYOUTS.values(), RTMR1_LAYOUT, RTMR2_LAYOUT]
INPUTS = {name: sha384(name.encode()) for name in MACHINE_INPUTS}


def test_each_event_has_exactly_one_digest_source() -> None:
    for layout in ALL_LAYOUTS:
        labels = [s.label for s in layout]
        assert len(labels) == len(set(labels)), labels
        for spec in layout:
            assert (spec.digest is None) != (spec.input is None), spec
            assert spec.fixed == spec.varies_with.startswith("fixed"), spec
            if spec.input is not None:
                assert spec.input in MACHINE_INPUTS and spec.input == spec.label
            else:
                assert spec.digest is not None and len(spec.digest) == 48
    with pytest.raises(ValueError, match="exactly one"):
        EventSpec("x", "fixed: x", digest=bytes(48), input=events.TD_HOB)
    with pytest.raises(ValueError, match="exactly one"):
        EventSpec("x", "varies-with: x")
    with pytest.raises(ValueError, match="unknown per-machine input"):
        EventSpec("x", "varies-with: x", input="memory")


def test_every_machine_input_fills_an_event_of_every_variant() -> None:
    for variant in OvmfVariant:
        used = [s.input for layout in events.layouts(variant) for s in layout if s.input]
        assert sorted(used) == sorted(MACHINE_INPUTS), variant


@pytest.mark.parametrize("variant", list(OvmfVariant))
def test_labelled_logs_fill_inputs_by_name(variant: OvmfVariant) -> None:
    logs = labelled_logs(variant, INPUTS)
    assert [log.rtmr for log in logs] == [0, 1, 2]
    for log, layout in zip(logs, events.layouts(variant), strict=True):
        assert [e.label for e in log.events] == [s.label for s in layout]
        assert [e.index for e in log.events] == list(range(len(layout)))
        for event, spec in zip(log.events, layout, strict=True):
            expected = spec.digest if spec.input is None else INPUTS[spec.input]
            assert event.digest == expected
            assert event.varies_with == spec.varies_with
        assert log.value == replay(log.digests)
    assert logs[2].digests == [INPUTS[events.CMDLINE], INPUTS[events.INITRD]]


def test_missing_input_is_named() -> None:
    partial = {k: v for k, v in INPUTS.items() if k != events.ACPI_RSDP}
    with pytest.raises(ValueError, match="acpi_rsdp"):
        labelled_log(0, RTMR0_LAYOUTS[OvmfVariant.PRE202505], partial)
    # RTMR1 does not take the RSDP digest, so it assembles without it.
    assert len(labelled_log(1, RTMR1_LAYOUT, partial)) == len(RTMR1_LAYOUT)


# Labels that are also ordinary words elsewhere (file kinds, metadata.json keys).
_COMMON_WORDS = {events.CMDLINE, events.INITRD, events.SEPARATOR}
_NOT_YET: set[str] = set()
# Upstream's measurement.tdx.cbor field names ("kernel_authenticode", "td_hob") happen to equal
# two labels; there they are a document format, not event names.
_NOT_LABELS = {"measurement_doc.py"}


def test_no_label_is_typed_outside_events() -> None:
    labels = {s.label for layout in ALL_LAYOUTS for s in layout} - _COMMON_WORDS
    offenders = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        if path.name == "events.py" or path.name in _NOT_YET | _NOT_LABELS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in labels:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


def test_rtmr_log_is_a_read_only_sequence() -> None:
    from collections.abc import Sequence

    log = labelled_log(2, RTMR2_LAYOUT, INPUTS)
    assert isinstance(log, Sequence)
    assert list(log) == list(log.events) and len(log) == 2
    assert log[0].label == events.CMDLINE and log[-1].label == events.INITRD
    assert log[:1] == log.events[:1] and log[0] in log and log.index(log[1]) == 1
    with pytest.raises(IndexError):
        log[2]
    with pytest.raises(TypeError):
        log[0] = log[1]  # type: ignore[index]
    with pytest.raises(AttributeError):
        log.events = ()  # type: ignore[misc]
    assert "<2 events>" in repr(log)
