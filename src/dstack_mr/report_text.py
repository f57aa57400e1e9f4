"""Plain-text reports for terminals, beside :mod:`dstack_mr.render` (HTML): diagnose's and
verify's. Strings only: the caller prints them; ``color`` adds ANSI colours to statuses.

The diagnose report puts the verdict and its proven cause first, then one short block per
differing register, then what the evidence was and what it lacked. ``verbose`` appends the
inputs, the expected measurements and every event lined up with the VM's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .event_identity import is_acpi_label

if TYPE_CHECKING:
    from .config import VmConfig
    from .diagnose import DiagnoseReport, EventCheck, RegisterCheck
    from .explain import Finding
    from .verify import VerificationResult

_COLORS = {
    "match": "32",
    "mismatch": "31",
    "missing": "31",
    "extra": "33",
    "warn": "33",
    "unverified": "33",
    "proven": "32",
    "hypothesis": "33",
}


class Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def status(self, status: str, text: str | None = None) -> str:
        text = text if text is not None else status.upper()
        code = _COLORS.get(status)
        if not self.color or code is None:
            return text
        return f"\x1b[{code}m{text}\x1b[0m"

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.color else text


def _rust_opt(value: object) -> str:
    # The reference prints Options with {:?}; keep its inputs line byte-compatible.
    if value is None:
        return "None"
    if isinstance(value, bool):
        return f"Some({str(value).lower()})"
    if isinstance(value, str):
        return f'Some("{value}")'
    return f"Some({value})"


def inputs_lines(vm: VmConfig, image_dir: str, variant: str) -> list[str]:
    return [
        f"  cpu={vm.cpu_count} mem={vm.memory_size} qemu_version={_rust_opt(vm.qemu_version)} "
        f"pic={_rust_opt(vm.pic)} two_pass={_rust_opt(vm.qemu_single_pass_add_pages)}",
        f"  hugepages={str(vm.hugepages).lower()} num_gpus={vm.num_gpus} "
        f"num_nvswitches={vm.num_nvswitches} hotplug_off={str(vm.hotplug_off).lower()} "
        f"pci_hole64={vm.pci_hole64_size}",
        f'  host_share_mode="{vm.host_share_mode}"',
        f"  image_dir={image_dir}",
        f"  ovmf_variant={variant}",
    ]


def first_divergent_line(rtmr: int, e: EventCheck) -> str:
    """Upstream's one-line summary of where a register's log first departs from the expected."""
    expected = e.expected.hex() if e.expected is not None else "none"
    actual = e.actual.hex() if e.actual is not None else "none"
    if e.index is None:  # an event the VM measured that is not expected at all
        where = f"index=- label={e.identity} (extra, actual index {e.actual_index})"
    else:
        where = f"index={e.index} label={e.label}"
    return f"FIRST DIVERGENT RTMR{rtmr} EVENT: {where} expected={expected} actual={actual}"


def _finding_lines(f: Finding, st: Style, indent: str = "  ") -> list[str]:
    out = [f"{indent}- {f.message} [{st.status(f.status, f.status)}]"]
    if f.proves_equal:
        out.append(f"{indent}    proven equal: {', '.join(f.proves_equal)}")
    if f.tried:
        out.append(f"{indent}    tried: {'; '.join(f.tried)}")
    if f.settle:
        out.append(f"{indent}    would settle it: {f.settle}")
    return out


def _event_lines(e: EventCheck, st: Style) -> list[str]:
    if e.index is None:
        head = f"    [--] {e.identity}"
    else:
        name = e.identity if e.identity and e.identity != e.label else ""
        head = f"    [{e.index:>2}] {e.label}" + (f" ({name})" if name else "")
    out = [f"{head}: {st.status(e.status)}"]
    if e.expected is not None:
        out.append(f"         expected: {e.expected.hex()}")
    if e.actual is not None:
        out.append(f"         actual:   {e.actual.hex()}")
    seen = e.actual_description or (
        e.actual_identity if e.actual_identity and e.actual_identity != e.identity else None
    )
    if seen:
        out.append(f"         the VM's event: {seen}")
    return out


def _register_block(
    report: DiagnoseReport,
    r: RegisterCheck,
    differing_events: list[EventCheck],
    findings: list[Finding],
    st: Style,
) -> list[str]:
    """A differing register: its values when they mismatch (else only that its event log
    differs), its differing events, its findings."""
    rtmr = int(r.name[4:]) if r.name.startswith("RTMR") else None
    diffs = [e for e in differing_events if rtmr is not None and e.rtmr == rtmr]
    if r.status == "mismatch":
        out = [f"{r.name}: {st.status('mismatch')} (actual from {r.source})"]
        out.append(f"  expected: {r.expected.hex() if r.expected is not None else 'not judged'}")
        out.append(f"  actual:   {r.actual.hex() if r.actual is not None else ''}")
        if diffs:
            mine = [e for e in report.events if e.rtmr == rtmr and e.index is not None]
            same = sum(e.status in ("match", "unverified") for e in mine)
            out.append(
                f"  {same} of {len(mine)} expected events found unchanged; differing "
                f"event{'s' if len(diffs) > 1 else ''}:"
            )
    else:
        out = [f"{r.name}: the event log differs from the expected events"]
    for e in diffs:
        out += _event_lines(e, st)
    for f in findings:
        out += _finding_lines(f, st)
    return out


def render_diagnose(report: DiagnoseReport, color: bool = False, verbose: bool = False) -> str:
    """The diagnose report as text (``verbose``: also inputs, expectations, every event)."""
    st = Style(color)
    result = report.result
    verdict = report.headline()
    tone = {"match": "match", "mismatch": "mismatch"}.get(result, "warn")
    out: list[str] = [st.status(tone, verdict)]
    sig = report.quote_signature
    if sig is not None and not sig.verified:
        # The compared values come from a quote that failed its signature check: say so first.
        out.insert(0, st.status("mismatch", f"QUOTE SIGNATURE INVALID: {sig.error}"))

    by_register: dict[str, list[Finding]] = {}
    loose: list[Finding] = []
    differing = {r.name for r in report.differing_registers()}
    differing_events = report.differing_events()
    for r in report.registers:
        if r.name.startswith("RTMR") and any(e.rtmr == int(r.name[4:]) for e in differing_events):
            differing.add(r.name)
    for f in report.findings:
        if f.register in differing:
            by_register.setdefault(f.register or "", []).append(f)
        else:
            loose.append(f)

    image = [f for f in loose if f.subject == "image"]
    if image:
        out += ["", "image:"]
        for f in image:
            out += _finding_lines(f, st)

    for r in report.registers:
        if r.name not in differing:
            continue
        out.append("")
        out += _register_block(report, r, differing_events, by_register.get(r.name, []), st)
        if r.name.startswith("RTMR"):
            first = report.first_divergent(int(r.name[4:]))
            if first is not None:
                out.append(first_divergent_line(int(r.name[4:]), first))

    matching = [r for r in report.registers if r.status == "match" and r.name not in differing]
    if matching:
        names = ", ".join(r.name for r in matching)
        if report.acpi.kind == "log" and any(r.name == "RTMR0" for r in matching):
            names += " (RTMR0's ACPI events taken from the log, not verified)"
        out += ["", f"match: {names}"]
    notes = [f for f in loose if f.subject != "image"]
    if notes:
        out += ["", "notes:"]
        for f in notes:
            out += _finding_lines(f, st)

    out += ["", "evidence:"]
    out += _evidence_lines(report, st)
    if verbose:
        out += _verbose_lines(report, st)
    else:
        out += ["", "(--verbose adds the inputs, the expected measurements and every event)"]
    return "\n".join(out)


def _signature(report: DiagnoseReport) -> str:
    v = report.quote_signature
    if v is None:
        return "signature not checked (give --collateral to check it)"
    if not v.verified:
        return f"signature INVALID: {v.error}"
    advisories = f", advisories {', '.join(v.advisory_ids)}" if v.advisory_ids else ""
    return f"signature verified (FMSPC {v.fmspc}, TCB status {v.status}{advisories})"


def _evidence_lines(report: DiagnoseReport, st: Style) -> list[str]:
    out = [f"  source: {s}" for s in report.evidence_sources]
    for note in report.evidence_notes:
        out.append(f"  note: {note}")
    compared = [r for r in report.registers if r.actual is not None]
    if report.signed:
        out.append(f"  signed: the quote (MRTD and RTMR0-3); {_signature(report)}")
    elif compared:
        sources = sorted({r.source or "" for r in compared})
        out.append(
            f"  signed: nothing (no quote); the registers compared are unsigned "
            f"({', '.join(sources)})"
        )
    for rp in report.replay:
        flag = "match" if rp.matches else ("warn" if rp.imr == 3 else "mismatch")
        out.append(f"  {st.status(flag, 'OK  ' if rp.matches else 'FAIL')} {rp.message}")
    if report.events and not report.replay:
        out.append(
            "  the event log was compared with its own replay only: nothing signed vouches for it"
        )
    absent = []
    if not report.events:
        absent.append("event log")
    if not any(r.source == "quote" for r in report.registers):
        absent.append("quote")
    if absent:
        out.append(f"  absent: {', '.join(absent)}")
    out.append(f"  ACPI: {report.acpi.description}")
    h = report.image_hash
    if h.status == "not-compared":
        if h.declared is not None:
            out.append(
                f"  image: {h.declared_by} declares os_image_hash {h.declared.hex()}; the "
                "image directory has no sha256sum.txt or digest.txt to compare it with"
            )
        elif h.image_hash is not None:
            out.append(
                f"  image: {report.image_dir} is {h.image_hash.hex()} ({h.image_hash_source}); "
                "the evidence declares no os_image_hash"
            )
    else:
        assert h.declared is not None and h.image_hash is not None
        out.append(
            f"  image: os_image_hash {st.status(h.status)}: declared {h.declared.hex()}, "
            f"image directory {h.image_hash.hex()} ({h.image_hash_source})"
        )
    doc = report.declared_measurement
    if doc is not None:
        if doc.error is not None:
            out.append(f"  declared measurement: does not check out: {doc.error}")
        else:
            parts = []
            if doc.vm_equal:
                parts.append(f"the evidence's {', '.join(doc.vm_equal)} equal it")
            if doc.vm_differ:
                parts.append(f"the evidence's {', '.join(doc.vm_differ)} differ from it")
            if doc.image_differ:
                parts.append(f"the image directory's {', '.join(doc.image_differ)} differ from it")
            else:
                parts.append("the image directory's files equal it")
            whose = "the VM's vm_config" if doc.from_evidence else "the given VmConfig"
            out.append(
                f"  declared measurement ({whose}'s tdx_measurement, bound to its "
                "os_image_hash): " + "; ".join(parts)
            )
    for w in report.warnings:
        out.append(f"  {st.status('warn', 'warning')}: {w}")
    return out


def _verbose_lines(report: DiagnoseReport, st: Style) -> list[str]:
    out = ["", "=== inputs ==="]
    out += inputs_lines(report.vm_config, report.image_dir, report.ovmf_variant.rust_name)
    out.append(f"  (ovmf_variant from {report.variant_source})")
    files = report.image_files
    if files:
        out.append(
            f"  files: firmware={files.get('firmware')} kernel={files.get('kernel')} "
            f"initrd={files.get('initrd')}"
        )

    m = report.expected.measurements
    judged = report.acpi.judged
    out += ["", "=== expected measurements ==="]
    out += [
        f"  MRTD:  {m.mrtd.hex()}",
        f"  RTMR0: {m.rtmr0.hex() if judged else 'not judged (no ACPI source)'}",
        f"  RTMR1: {m.rtmr1.hex()}",
        f"  RTMR2: {m.rtmr2.hex()}",
    ]

    log0 = report.expected.rtmr_logs[0]
    out += ["", f"=== RTMR0 event log ({len(log0.events)} entries) ==="]
    for ev in log0.events:
        unknown = not judged and is_acpi_label(ev.label)
        digest = "(not judged)" if unknown else ev.digest.hex()
        out.append(f"  [{ev.index:>2}] {ev.label:<20} {digest}")
        if ev.varies_with:
            out.append(f"       {ev.varies_with}")

    compared = [r for r in report.registers if r.actual is not None]
    if compared:
        out += ["", "=== comparison ==="]
        for r in compared:
            out.append(f"  {r.name:<5}: {st.status(r.status)}  ({r.source})")
            if r.status != "match":
                exp = r.expected.hex() if r.expected is not None else "not judged"
                out.append(f"    expected: {exp}")
                out.append(f"    actual:   {r.actual.hex() if r.actual else ''}")

    if report.events:
        diffs = report.differing_events()
        total = len(report.events)
        out += ["", f"=== events ({total - len(diffs)} of {total} without a difference) ==="]
        width = max(len(e.label) for e in report.events)
        for e in report.events:
            idx = "--" if e.index is None else f"{e.index:>2}"
            name = f"  {e.identity}" if e.identity and e.identity != e.label else ""
            out.append(f"  RTMR{e.rtmr} [{idx}] {e.label:<{width}}  {st.status(e.status)}{name}")
            if e.status == "match":
                continue
            if e.expected is not None:
                out.append(f"      expected: {e.expected.hex()}")
            if e.actual is not None:
                out.append(f"      actual:   {e.actual.hex()}")
            if e.actual_description:
                out.append(f"      the VM's event: {e.actual_description}")
            if e.status == "mismatch" and e.varies_with:
                out.append(f"      {e.varies_with}")
    return out


_MARK = {"passed": "ok  ", "failed": "FAIL", "not_checked": "--  "}


def render_verification(result: VerificationResult, at_given: bool) -> str:
    """``verify``'s report: the verdict, the time and collateral used, TCB, every check, and
    the app identity. ``at_given`` says the time was chosen (``--at``), not now."""
    d = result.details
    out = []
    if result.is_valid:
        skipped = [c.name for c in d.checks if c.status == "not_checked"]
        extra = f" (not checked: {', '.join(skipped)})" if skipped else ""
        out.append(f"VALID: every check passed{extra}")
    else:
        out.append(f"INVALID: {result.reason}")
    when = d.verified_at.isoformat().replace("+00:00", "Z")
    out.append(f"time used: {when} ({'--at' if at_given else 'now'})")
    w = d.collateral_window
    if w is not None:
        start = w.not_before.isoformat().replace("+00:00", "Z")
        end = w.not_after.isoformat().replace("+00:00", "Z")
        out.append(f"collateral valid: {start} .. {end}")
    else:
        out.append("collateral: none given")
    out.append(f"platform FMSPC: {d.fmspc or 'unknown'}")
    status = d.tcb_status or "unknown"
    verdict = "accepted" if d.tcb_accepted else "not accepted"
    out.append(f"TCB status: {status} ({verdict}; accepted: {', '.join(d.accepted_tcb)})")
    out.append(f"advisories: {', '.join(d.advisory_ids) if d.advisory_ids else 'none'}")
    out.append("checks:")
    out += [f"  {_MARK.get(c.status, c.status)} {c.name}: {c.message}" for c in d.checks]
    out += [f"warning: {w}" for w in d.warnings]
    if d.report_data is not None:
        out.append(f"report_data: {d.report_data.hex()}")
    if d.app_info is not None:
        out.append("app_info:")
        for key, value in d.app_info.to_dict().items():
            shown = ", ".join(value) if isinstance(value, list) else value
            out.append(f"  {key}: {shown if shown else '(none)'}")
        if d.key_provider is not None:
            out.append(f"  key_provider: {d.key_provider.name} {d.key_provider.id}")
    return "\n".join(out)
