"""Explanations of a diagnosis, each proven or labelled a hypothesis, run in report order.

The rule: a cause is *proven* only when recomputing the expected value with that one change
reproduces the actual digest — the event's digest when the VM's event log has the event (and
the log replays to the quote), the whole register otherwise. A change that reproduces a whole
register also proves every other event of that register equal, and the finding says which.
When nothing reproduces a difference the finding says so plainly, lists what was tried and
what evidence would settle it; it never guesses which events differ.

This module is the orchestrator: it runs the explanations in report order over one shared
:class:`~dstack_mr.explain.context.ExplainContext`, where later ones find what earlier ones
proved (the SMBIOS search starts from the memory size the TD HOB proved). Each thing
explained has its own module: ``image_identity``, ``firmware`` (MRTD), ``memory`` (TD HOB),
``ovmf_layout``, ``acpi_tables``, ``smbios_event``, ``kernel_event``, ``cmdline`` (and the
initrd), ``rtmr0`` (RTMR0 without a log); ``proof`` holds the rules they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..event_identity import SMBIOS_LABELS, expected_identity
from .acpi_tables import acpi_event_finding, acpi_note
from .cmdline import cmdline_finding, initrd_event_finding, rtmr2_finding
from .context import ExplainContext
from .finding import Finding
from .firmware import constant_event_finding, mrtd_finding
from .image_identity import declared_finding, image_finding
from .kernel_event import kernel_event_finding, rtmr1_finding
from .memory import td_hob_event_finding
from .ovmf_layout import layout_finding
from .proof import log_caveat
from .rtmr0 import rtmr0_finding
from .smbios_event import smbios_event_finding

if TYPE_CHECKING:
    from ..acpi_source import AcpiChoice
    from ..config import VmConfig
    from ..declarations import DeclaredMeasurement, ImageHashCheck
    from ..diagnose import EventCheck, RegisterCheck, ReplayCheck
    from ..evidence import Evidence
    from ..image import Image
    from ..machine import MeasurementDetails

__all__ = ["Finding", "explain"]


def explain(
    *,
    vm: VmConfig,
    image: Image,
    evidence: Evidence,
    expected: MeasurementDetails,
    registers: Sequence[RegisterCheck],
    events: Sequence[EventCheck],
    replay: Sequence[ReplayCheck],
    acpi: AcpiChoice,
    image_hash: ImageHashCheck,
    declared: DeclaredMeasurement | None = None,
) -> list[Finding]:
    """Every finding for one comparison, most important first."""
    ctx = ExplainContext.of(
        vm=vm, image=image, evidence=evidence, expected=expected, registers=registers,
        events=events, replay=replay, acpi=acpi, image_hash=image_hash, declared=declared,
    )  # fmt: skip
    add = ctx.so_far.add
    add(image_finding(ctx))
    add(declared_finding(ctx))
    add(mrtd_finding(ctx))
    without_log = (rtmr0_finding, rtmr1_finding, rtmr2_finding)
    for rtmr in range(3):
        if ctx.has_log(rtmr):
            _events_of(ctx, rtmr)
        elif ctx.registers[f"rtmr{rtmr}"].status == "mismatch":
            add(without_log[rtmr](ctx))
    add(acpi_note(ctx))
    return ctx.so_far.findings


def _events_of(ctx: ExplainContext, rtmr: int) -> None:
    """With the VM's event log: each differing event of ``rtmr`` explained on its own."""
    mine = [e for e in ctx.events if e.rtmr == rtmr]
    other_layout = False
    if rtmr == 0 and any(e.status in ("missing", "extra") for e in mine):
        layout = layout_finding(ctx, mine)
        ctx.so_far.add(layout)
        other_layout = layout.proven
    for ev in mine:
        if ev.status != "mismatch":
            continue
        if other_layout and expected_identity(0, ev.label).kind not in ("td-hob", "acpi"):
            continue  # the other layout's own events, explained by the layout finding
        finding = _event(ctx, ev)
        if finding is not None:
            ctx.so_far.add(log_caveat(ctx, rtmr, finding))


def _event(ctx: ExplainContext, ev: EventCheck) -> Finding | None:
    """The explanation of one differing log event, by what the event is."""
    assert ev.actual is not None
    kind = expected_identity(ev.rtmr, ev.label).kind
    reg = f"RTMR{ev.rtmr}"
    if kind == "td-hob":
        return td_hob_event_finding(ctx, ev, reg)
    if kind == "kernel":
        return kernel_event_finding(ctx, ev, reg)
    if kind == "cmdline":
        return cmdline_finding(ctx, reg, lambda d: d == ev.actual, ev)
    if kind == "initrd":
        return initrd_event_finding(ctx, reg)
    if kind == "acpi":
        return acpi_event_finding(ctx, ev)
    if kind == "smbios" or ev.label in SMBIOS_LABELS:
        return smbios_event_finding(ctx, ev)
    return constant_event_finding(ctx, ev, reg)
