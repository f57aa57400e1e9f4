"""Why does a quote not match? Event-by-event comparison of expected and actual measurements.

:func:`diagnose` computes what a ``VmConfig`` on an image should measure, compares it with
whatever evidence the operator holds (a quote, a JSON or CCEL event log, a guest-agent
response, or bare register values), checks the evidence against itself (does the log replay
to the quote?), lines up expected and actual events of RTMR0-2, and searches the inputs each
differing event depends on for values that reproduce the actual digest.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from . import kernel as kernel_mod
from ._binary import from_hex
from .acpi import AcpiSource
from .config import (
    OvmfVariant,
    VmConfig,
    format_memory_size,
)
from .digest import DIGEST_LEN, replay
from .errors import DstackMrError, EvidenceError
from .eventlog import Attestation, Event, describe_payload, event_type_name
from .events import RTMR0_LAYOUTS
from .image import Image, ovmf_variant_with_source
from .machine import MeasurementDetails, checked_cmdline_digest, rtmr0_digests
from .quote import TdxQuote

SCHEMA_VERSION = 1
REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2")
GIB = 1 << 30
#: The memory-size search: every 256 MiB step up to 2 TiB (so every whole GiB too).
MEMORY_STEP = 256 << 20
MEMORY_LIMIT = 2 << 40


@attrs.frozen
class Evidence:
    """What the VM produced. Every part is optional; more parts allow a deeper diagnosis.

    ``registers`` are values the operator typed (``--actual-rtmr0``); ``stated_registers``
    come from an Info/tcb_info response (not signed, unlike a quote).
    """

    quote: TdxQuote | None = attrs.field(default=None, repr=lambda q: "<quote>" if q else "None")
    events: tuple[Event, ...] | None = attrs.field(
        default=None, repr=lambda e: "None" if e is None else f"<{len(e)} events>"
    )
    registers: Mapping[str, bytes] = attrs.field(factory=dict)
    stated_registers: Mapping[str, bytes] = attrs.field(factory=dict, repr=False)
    vm_config: VmConfig | None = None
    sources: tuple[str, ...] = ()

    def merge(self, other: Evidence) -> Evidence:
        """Combine two pieces of evidence; a part given twice must not disagree."""
        if self.quote is not None and other.quote is not None and self.quote != other.quote:
            raise EvidenceError("two different quotes were given")
        if self.events is not None and other.events is not None and self.events != other.events:
            raise EvidenceError("two different event logs were given")
        return Evidence(
            quote=self.quote or other.quote,
            events=self.events if self.events is not None else other.events,
            registers={**other.registers, **self.registers},
            stated_registers={**other.stated_registers, **self.stated_registers},
            vm_config=self.vm_config or other.vm_config,
            sources=self.sources + other.sources,
        )

    @classmethod
    def from_attestation(cls, att: Attestation) -> Evidence:
        vm = VmConfig.from_dict(att.vm_config) if att.vm_config is not None else None
        return cls(
            quote=att.quote,
            events=att.events,
            stated_registers=dict(att.registers),
            vm_config=vm,
            sources=(att.source,),
        )

    def actual(self, register: str) -> tuple[bytes, str] | None:
        """The best available actual value of a register and where it came from."""
        if register in self.registers:
            return self.registers[register], f"--actual-{register}"
        if self.quote is not None:
            return getattr(self.quote, register), "quote"
        if register in self.stated_registers:
            return self.stated_registers[register], "tcb_info"
        if self.events is not None and register.startswith("rtmr"):
            imr = int(register[4:])
            if any(e.imr == imr for e in self.events):
                return replay(e.digest for e in self.events if e.imr == imr), "event log replay"
        return None


def parse_register_hex(text: str, what: str) -> bytes:
    """A 48-byte register value from hex: surrounding whitespace and a leading ``0x`` are
    ignored (as by the reference's ``trim().trim_start_matches("0x")``), nothing else."""
    s = text.strip()
    while s.startswith("0x"):
        s = s[2:]
    value = from_hex(s)
    if value is None or len(value) != DIGEST_LEN:
        raise EvidenceError(
            f"{what}: expected {DIGEST_LEN} bytes as {2 * DIGEST_LEN} hex digits, got {text!r}"
        )
    return value


@attrs.frozen
class RegisterCheck:
    name: str
    expected: bytes
    actual: bytes | None
    source: str | None

    @property
    def status(self) -> str:
        if self.actual is None:
            return "not-compared"
        return "match" if self.actual == self.expected else "mismatch"


@attrs.frozen
class ReplayCheck:
    """Does the event log replay to the register the quote (or tcb_info) states?"""

    imr: int
    events: int
    replayed: bytes
    reference: bytes
    reference_source: str
    derived_digests: int
    #: Runtime events whose stated digest is not that of their payload.
    inconsistent_payloads: int = 0

    @property
    def matches(self) -> bool:
        return self.replayed == self.reference

    @property
    def message(self) -> str:
        text = self._replay_message()
        if self.inconsistent_payloads:
            text += (
                f"; {self.inconsistent_payloads} runtime event(s) carry a digest that is not "
                "that of their payload (the payload shown is not what was measured)"
            )
        return text

    def _replay_message(self) -> str:
        name = f"RTMR{self.imr}"
        src = self.reference_source
        if self.matches and not self.derived_digests:
            return f"{name}: the event log ({self.events} events) replays to the {src} value"
        if self.matches:
            return (
                f"{name}: the log carries no digest for {self.derived_digests} of its "
                f"{self.events} events; recomputed from their payloads, it replays to the {src} "
                "value"
            )
        if self.events == 0:
            return f"{name}: the event log has no events for this register"
        return (
            f"{name}: the event log ({self.events} events) does NOT replay to the {src} value: "
            "the evidence is inconsistent (trimmed or altered log), not necessarily the image"
        )


@attrs.frozen
class EventCheck:
    """One expected event lined up with the actual one (either may be missing)."""

    rtmr: int
    index: int | None
    actual_index: int | None
    label: str
    varies_with: str
    expected: bytes | None
    actual: bytes | None
    actual_type: int | None = None
    actual_description: str | None = None

    @property
    def status(self) -> str:
        if self.expected is None:
            return "extra"
        if self.actual is None:
            return "missing"
        return "match" if self.expected == self.actual else "mismatch"


@attrs.frozen
class Finding:
    """An explanation: which input value reproduces an actual digest, or why none does."""

    subject: str
    message: str
    parameter: str | None = None
    value: str | None = None
    reproduced: bool = False


@attrs.frozen
class DiagnoseReport:
    vm_config: VmConfig = attrs.field(repr=False)
    image_dir: str
    ovmf_variant: OvmfVariant
    variant_source: str
    expected: MeasurementDetails = attrs.field(repr=False)
    registers: tuple[RegisterCheck, ...] = attrs.field(repr=False)
    replay: tuple[ReplayCheck, ...] = attrs.field(repr=False)
    events: tuple[EventCheck, ...] = attrs.field(repr=False)
    findings: tuple[Finding, ...] = attrs.field(repr=False)
    evidence_sources: tuple[str, ...] = ()

    @property
    def compared(self) -> bool:
        return any(r.actual is not None for r in self.registers) or bool(self.events)

    @property
    def ok(self) -> bool:
        """No compared register or event differs, and the boot-time log is consistent."""
        if any(r.status == "mismatch" for r in self.registers):
            return False
        if any(e.status != "match" for e in self.events):
            return False
        return all(r.matches for r in self.replay if r.imr < 3)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def differing_events(self) -> list[EventCheck]:
        return [e for e in self.events if e.status != "match"]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (schema: docs/diagnose.schema.json)."""
        m = self.expected.measurements
        logs = self.expected.rtmr_logs
        return {
            "schema_version": SCHEMA_VERSION,
            "ovmf_variant": self.ovmf_variant.rust_name,
            "ovmf_variant_source": self.variant_source,
            "mrtd": m.mrtd.hex(),
            "rtmr0": m.rtmr0.hex(),
            "rtmr1": m.rtmr1.hex(),
            "rtmr2": m.rtmr2.hex(),
            "rtmr0_log": [
                {
                    "index": e.index,
                    "label": e.label,
                    "digest": e.digest.hex(),
                    "note": e.varies_with,
                }
                for e in logs[0].events
            ],
            "expected_logs": [
                [{"index": e.index, "label": e.label, "digest": e.digest.hex()} for e in log.events]
                for log in logs
            ],
            "inputs": {
                "vm_config": self.vm_config.to_dict(),
                "image_dir": self.image_dir,
                "qemu_version": self.expected.options.version_str,
                "pic": self.expected.options.pic,
                "two_pass_add_pages": self.expected.options.two_pass_add_pages,
                "acpi_dumper_argv": None
                if self.expected.invocation is None
                else list(self.expected.invocation.argv),
            },
            "evidence": list(self.evidence_sources),
            "comparison": [
                {
                    "register": r.name,
                    "status": r.status,
                    "expected": r.expected.hex(),
                    "actual": None if r.actual is None else r.actual.hex(),
                    "source": r.source,
                }
                for r in self.registers
            ],
            "replay": [
                {
                    "imr": r.imr,
                    "events": r.events,
                    "replayed": r.replayed.hex(),
                    "reference": r.reference.hex(),
                    "reference_source": r.reference_source,
                    "derived_digests": r.derived_digests,
                    "inconsistent_payloads": r.inconsistent_payloads,
                    "matches": r.matches,
                    "message": r.message,
                }
                for r in self.replay
            ],
            "events": [
                {
                    "rtmr": e.rtmr,
                    "index": e.index,
                    "actual_index": e.actual_index,
                    "label": e.label,
                    "status": e.status,
                    "expected": None if e.expected is None else e.expected.hex(),
                    "actual": None if e.actual is None else e.actual.hex(),
                    "actual_type": None
                    if e.actual_type is None
                    else event_type_name(e.actual_type),
                    "actual_description": e.actual_description,
                    "varies_with": e.varies_with,
                }
                for e in self.events
            ],
            "findings": [
                {
                    "subject": f.subject,
                    "message": f.message,
                    "parameter": f.parameter,
                    "value": f.value,
                    "reproduced": f.reproduced,
                }
                for f in self.findings
            ],
            "ok": self.ok,
        }

    def _repr_html_(self) -> str:
        from .render import report_html

        return report_html(self)


def diagnose(
    vm: VmConfig,
    image: Image,
    evidence: Evidence | None = None,
    acpi: AcpiSource | None = None,
    *,
    explain: bool = True,
) -> DiagnoseReport:
    """Expected measurements of ``vm`` on ``image``, compared with ``evidence``."""
    evidence = evidence or Evidence()
    variant, variant_source = ovmf_variant_with_source(vm, image.info)
    machine = image.machine(vm, variant)
    expected = image.measure_machine(machine, acpi)
    m = expected.measurements

    registers = []
    for name in REGISTERS:
        found = evidence.actual(name)
        registers.append(
            RegisterCheck(
                name.upper(),
                getattr(m, name),
                None if found is None else found[0],
                None if found is None else found[1],
            )
        )

    replay_checks = _replay_checks(evidence)
    events: list[EventCheck] = []
    if evidence.events is not None:
        for log in expected.rtmr_logs:
            actual = [e for e in evidence.events if e.imr == log.rtmr]
            events.extend(_align(log.rtmr, log.events, actual))

    findings: list[Finding] = []
    if explain:
        findings = _Explainer(vm, image, evidence, expected, registers, events).run()
    return DiagnoseReport(
        vm_config=vm,
        image_dir=image.files.directory,
        ovmf_variant=variant,
        variant_source=variant_source,
        expected=expected,
        registers=tuple(registers),
        replay=tuple(replay_checks),
        events=tuple(events),
        findings=tuple(findings),
        evidence_sources=evidence.sources,
    )


def _replay_checks(evidence: Evidence) -> list[ReplayCheck]:
    if evidence.events is None:
        return []
    checks = []
    for imr in range(4):
        name = f"rtmr{imr}"
        if evidence.quote is not None:
            reference, source = getattr(evidence.quote, name), "quote"
        elif name in evidence.stated_registers:
            reference, source = evidence.stated_registers[name], "tcb_info"
        else:
            continue
        mine = [e for e in evidence.events if e.imr == imr]
        checks.append(
            ReplayCheck(
                imr=imr,
                events=len(mine),
                replayed=replay(e.digest for e in mine),
                reference=reference,
                reference_source=source,
                derived_digests=sum(e.digest_derived for e in mine),
                inconsistent_payloads=sum(e.payload_consistent is False for e in mine),
            )
        )
    return checks


def _check(rtmr: int, spec: Any, i: int | None, j: int | None, actual: Event | None) -> EventCheck:
    return EventCheck(
        rtmr=rtmr,
        index=i,
        actual_index=j,
        label=spec.label if spec is not None else "(unexpected event)",
        varies_with=spec.varies_with if spec is not None else "",
        expected=spec.digest if spec is not None else None,
        actual=None if actual is None else actual.digest,
        actual_type=None if actual is None else actual.event_type,
        actual_description=None if actual is None else describe_payload(actual),
    )


def _align(rtmr: int, expected: Sequence[Any], actual: Sequence[Event]) -> list[EventCheck]:
    """Pair expected and actual events: equal digests anchor the alignment; between anchors,
    events pair up by position, and whatever is left over is missing or extra."""
    want = [e.digest for e in expected]
    got = [e.digest for e in actual]
    out: list[EventCheck] = []
    matcher = difflib.SequenceMatcher(a=want, b=got, autojunk=False)
    for _op, i1, i2, j1, j2 in matcher.get_opcodes():
        for k in range(max(i2 - i1, j2 - j1)):
            i = i1 + k if i1 + k < i2 else None
            j = j1 + k if j1 + k < j2 else None
            out.append(
                _check(
                    rtmr,
                    expected[i] if i is not None else None,
                    i,
                    j,
                    actual[j] if j is not None else None,
                )
            )
    return out


# --- explanations -----------------------------------------------------------------------------


class _Explainer:
    """Searches, for each differing part, the inputs it depends on."""

    def __init__(
        self,
        vm: VmConfig,
        image: Image,
        evidence: Evidence,
        expected: MeasurementDetails,
        registers: Sequence[RegisterCheck],
        events: Sequence[EventCheck],
    ) -> None:
        self.vm = vm
        self.image = image
        self.evidence = evidence
        self.expected = expected
        self.registers = {r.name.lower(): r for r in registers}
        self.events = events
        self.findings: list[Finding] = []

    def run(self) -> list[Finding]:
        self._mrtd()
        self._variant()
        self._td_hob()
        self._kernel()
        self._cmdline()
        self._initrd()
        self._acpi()
        self._variable_authority()
        return self.findings

    # Each hypothesis gives a candidate digest for one expected event. With an event log it
    # is compared with the actual event; without one, the register is replayed with it.
    def _event(self, rtmr: int, label: str) -> EventCheck | None:
        for e in self.events:
            if e.rtmr == rtmr and e.label == label:
                return e
        return None

    def _differs(self, rtmr: int, label: str) -> bool | None:
        """True/False when the event (or, without a log, its register) differs; None when
        nothing can be compared."""
        if self.events:
            ev = self._event(rtmr, label)
            return ev is not None and ev.status == "mismatch"
        reg = self.registers[f"rtmr{rtmr}"]
        return None if reg.actual is None else reg.status == "mismatch"

    def _reproduces(self, rtmr: int, label: str, candidate: bytes) -> bool:
        if self.events:
            ev = self._event(rtmr, label)
            return ev is not None and ev.actual == candidate
        reg = self.registers[f"rtmr{rtmr}"]
        log = self.expected.rtmr_logs[rtmr]
        digests = [candidate if e.label == label else e.digest for e in log.events]
        return reg.actual == replay(digests)

    def _search(
        self,
        rtmr: int,
        label: str,
        candidates: Iterable[tuple[str, Any]],
        digest_for: Callable[[Any], bytes],
    ) -> tuple[str, Any] | None:
        for name, value in candidates:
            try:
                if self._reproduces(rtmr, label, digest_for(value)):
                    return name, value
            except DstackMrError:
                continue
        return None

    def _memory_candidates(self, limit: int = MEMORY_LIMIT) -> list[tuple[str, int]]:
        sizes: list[int] = []
        ev_vm = self.evidence.vm_config
        if ev_vm is not None and ev_vm.memory_size:
            sizes.append(ev_vm.memory_size)
        sizes += range(MEMORY_STEP, limit + 1, MEMORY_STEP)
        seen: set[int] = set()
        out = []
        for s in sizes:
            if s not in seen and s != self.vm.memory_size:
                seen.add(s)
                out.append((format_memory_size(s), s))
        return out

    def _mrtd(self) -> None:
        reg = self.registers["mrtd"]
        if reg.status != "mismatch":
            return
        opts = self.expected.options
        other = not opts.two_pass_add_pages
        if self.image.mrtd(other) == reg.actual:
            said = "two-pass" if opts.two_pass_add_pages else "single-pass"
            found = "two-pass" if other else "single-pass"
            self.findings.append(
                Finding(
                    "mrtd",
                    f"mrtd: actual matches {found} page add (config gives {said}: QEMU "
                    f"{opts.version_str}, qemu_single_pass_add_pages="
                    f"{_opt(self.vm.qemu_single_pass_add_pages)}, passed unchanged as "
                    "two_pass_add_pages like the dstack verifier)",
                    "two_pass_add_pages",
                    str(other).lower(),
                    True,
                )
            )
        else:
            self.findings.append(
                Finding(
                    "mrtd",
                    "mrtd: neither page-add order reproduces the actual MRTD: the VM booted "
                    "different firmware (ovmf.fd) than this image's",
                )
            )

    def _variant(self) -> None:
        ours = self.expected.ovmf_variant
        other = OvmfVariant.STABLE202505 if ours is OvmfVariant.PRE202505 else OvmfVariant.PRE202505
        n_ours, n_other = len(RTMR0_LAYOUTS[ours]), len(RTMR0_LAYOUTS[other])
        td_hob = self.expected.rtmr_logs[0].events[0].digest
        alt = rtmr0_digests(other, td_hob, self.expected.acpi_tables)
        if self.evidence.events is not None:
            actual = [e.digest for e in self.evidence.events if e.imr == 0]
            if len(actual) == n_ours:
                return
            fixed_other = [s.digest for s in RTMR0_LAYOUTS[other] if s.fixed]
            hits = sum(d in actual for d in fixed_other)
            if len(actual) == n_other or hits >= len(fixed_other) - 1:
                self.findings.append(
                    Finding(
                        "ovmf_variant",
                        f"ovmf_variant: the actual RTMR0 log has {len(actual)} events, the "
                        f"{other.value} layout ({n_other} events); the config resolved "
                        f"{ours.value} ({n_ours} events, from "
                        f"{ovmf_variant_with_source(self.vm, self.image.info)[1]})",
                        "ovmf_variant",
                        other.value,
                        len(actual) == n_other,
                    )
                )
            return
        reg = self.registers["rtmr0"]
        if reg.status == "mismatch" and reg.actual == replay(alt):
            self.findings.append(
                Finding(
                    "ovmf_variant",
                    f"ovmf_variant: actual RTMR0 matches the {other.value} layout (config "
                    f"resolved {ours.value})",
                    "ovmf_variant",
                    other.value,
                    True,
                )
            )

    def _by_memory(
        self,
        rtmr: int,
        label: str,
        candidates: list[tuple[str, int]],
        digest_for: Callable[[int], bytes],
        why: str,
        otherwise: str,
    ) -> None:
        """Search memory sizes for one that reproduces the actual ``label`` event."""
        hit = self._search(rtmr, label, candidates, digest_for)
        said = format_memory_size(self.vm.memory_size)
        if hit is not None:
            message = f"{label}: actual matches memory_size={hit[0]} (config says {said}{why})"
            self.findings.append(Finding(label, message, "memory_size", hit[0], True))
        else:
            self.findings.append(Finding(label, f"{label}: {otherwise}"))

    def _td_hob(self) -> None:
        if self._differs(0, "td_hob"):
            self._by_memory(
                0,
                "td_hob",
                self._memory_candidates(),
                self.image.tdvf.td_hob_digest,
                "",
                "no memory size (256 MiB steps up to 2T) reproduces it: the firmware's TDVF "
                "section layout differs from this image's ovmf.fd",
            )

    def _kernel(self) -> None:
        if not self._differs(1, "kernel_authenticode"):
            return
        img = self.image
        # The patched kernel varies with memory only below 0xB0000000 (initrd placement).
        candidates = [c for c in self._memory_candidates() if c[1] < kernel_mod.STABLE_MIN_MEMORY]
        candidates.append(("3G", 3 * GIB))
        self._by_memory(
            1,
            "kernel_authenticode",
            candidates,
            lambda mem: img._kernel_digest(img.kernel, img.initrd_size, mem),
            "; QEMU places the initrd by memory size",
            "no memory size reproduces it: the VM booted a different kernel (bzImage) or an "
            "initrd of another size",
        )

    def _cmdline(self) -> None:
        if not self._differs(2, "cmdline"):
            return
        base = self.image.info.cmdline
        variants = [
            ("cmdline without ' initrd=initrd'", base),
            ("cmdline + ' initrd=initrd '", base + " initrd=initrd "),
            ("cmdline + ' ' + ' initrd=initrd'", base + "  initrd=initrd"),
            ("cmdline.strip() + ' initrd=initrd'", base.strip() + " initrd=initrd"),
            ("cmdline.rstrip()", base.rstrip()),
            ("cmdline + ' '", base + " "),
            ("'initrd=initrd ' + cmdline", "initrd=initrd " + base),
        ]
        hit = self._search(2, "cmdline", variants, checked_cmdline_digest)
        if hit is not None:
            self.findings.append(
                Finding(
                    "cmdline",
                    f"cmdline: actual matches {hit[0]}: {hit[1]!r}",
                    "kernel_cmdline",
                    hit[1],
                    True,
                )
            )
            return
        ev = self._event(2, "cmdline")
        seen = (
            f" (the VM's log says {ev.actual_description})" if ev and ev.actual_description else ""
        )
        self.findings.append(
            Finding(
                "cmdline",
                f"cmdline: the VM booted a different kernel command line{seen}; expected "
                f"{self.image.files.cmdline!r}",
            )
        )

    def _initrd(self) -> None:
        if self._differs(2, "initrd"):
            self.findings.append(
                Finding(
                    "initrd",
                    "initrd: the VM booted a different initrd than "
                    f"{self.image.files.initrd} ({self.image.initrd_size} bytes)",
                )
            )

    def _acpi(self) -> None:
        labels = [
            lbl for lbl in ("acpi_loader", "acpi_rsdp", "acpi_tables") if self._differs(0, lbl)
        ]
        if not labels:
            return
        self.findings.append(
            Finding(
                "acpi",
                f"{', '.join(labels)}: QEMU generated different ACPI tables; they vary with "
                "cpu_count, memory, pic, smm, hotplug_off, pci_hole64_size, host_share_mode, "
                "GPUs/NVSwitches, hugepages and the QEMU version — check those against the "
                "VM's real settings, and that the dumper (or --acpi-tables file) matches that "
                "QEMU build",
            )
        )

    def _variable_authority(self) -> None:
        if self._differs(0, "variable_authority") and self.events:
            self.findings.append(
                Finding(
                    "variable_authority",
                    "variable_authority: the expected value is a constant captured from one "
                    "edk2-stable202505 build; other builds (e.g. real dstack-0.6.x CVMs) measure "
                    "a different value — compare the OVMF build, not the VM config",
                )
            )


def _opt(value: object) -> str:
    return "unset" if value is None else str(value).lower()


__all__ = [
    "DiagnoseReport",
    "EventCheck",
    "Evidence",
    "Finding",
    "RegisterCheck",
    "ReplayCheck",
    "diagnose",
    "parse_register_hex",
]
