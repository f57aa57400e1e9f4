"""Plain-text rendering of a diagnose report for terminals (colour only on a TTY)."""

from __future__ import annotations

from dstack_mr.config import VmConfig
from dstack_mr.diagnose import DiagnoseReport

_COLORS = {"match": "32", "mismatch": "31", "missing": "31", "extra": "33", "warn": "33"}


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


def render(report: DiagnoseReport, color: bool = False) -> str:
    st = Style(color)
    out: list[str] = ["=== inputs ==="]
    out += inputs_lines(report.vm_config, report.image_dir, report.ovmf_variant.rust_name)
    out.append(f"  (ovmf_variant from {report.variant_source})")

    m = report.expected.measurements
    out += ["", "=== expected measurements ==="]
    out += [
        f"  MRTD:  {m.mrtd.hex()}",
        f"  RTMR0: {m.rtmr0.hex()}",
        f"  RTMR1: {m.rtmr1.hex()}",
        f"  RTMR2: {m.rtmr2.hex()}",
    ]

    log0 = report.expected.rtmr_logs[0]
    out += ["", f"=== RTMR0 event log ({len(log0.events)} entries) ==="]
    for ev in log0.events:
        out.append(f"  [{ev.index:>2}] {ev.label:<20} {ev.digest.hex()}")
        if ev.varies_with:
            out.append(f"       {ev.varies_with}")

    if report.evidence_sources or report.replay:
        out += ["", "=== evidence ==="]
        out += [f"  source: {s}" for s in report.evidence_sources]
        for rp in report.replay:
            flag = "match" if rp.matches else ("warn" if rp.imr == 3 else "mismatch")
            out.append(f"  {st.status(flag, 'OK  ' if rp.matches else 'FAIL')} {rp.message}")

    compared = [r for r in report.registers if r.actual is not None]
    if compared:
        out += ["", "=== comparison ==="]
        for r in compared:
            label = f"{r.name:<5}"
            if r.status == "match":
                out.append(f"  {label}: {st.status('match')}  ({r.source})")
            else:
                out.append(f"  {label}: {st.status('mismatch')}  ({r.source})")
                out.append(f"    expected: {r.expected.hex()}")
                out.append(f"    actual:   {r.actual.hex() if r.actual else ''}")

    if report.events:
        diffs = report.differing_events()
        total = len(report.events)
        out += ["", f"=== events ({total - len(diffs)} of {total} match) ==="]
        width = max(len(e.label) for e in report.events)
        for e in report.events:
            idx = "--" if e.index is None else f"{e.index:>2}"
            out.append(f"  RTMR{e.rtmr} [{idx}] {e.label:<{width}}  {st.status(e.status)}")
            if e.status == "match":
                continue
            if e.expected is not None:
                out.append(f"      expected: {e.expected.hex()}")
            if e.actual is not None:
                out.append(f"      actual:   {e.actual.hex()}")
            if e.actual_description:
                out.append(f"      actual event: {e.actual_description}")
            if e.status == "mismatch" and e.varies_with:
                out.append(f"      {e.varies_with}")

    if report.findings:
        out += ["", "=== explanation ==="]
        out += [f"  - {f.message}" for f in report.findings]

    if report.compared:
        verdict = (
            st.status("match", "RESULT: all compared measurements match")
            if report.ok
            else st.status("mismatch", "RESULT: MISMATCH")
        )
        out += ["", verdict]
    return "\n".join(out)
