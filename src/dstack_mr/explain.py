"""Explanations of a diagnosis, each either proven or labelled a hypothesis.

The rule: a cause is *proven* only when recomputing the expected value with that one change
reproduces the actual digest — the event's digest when the VM's event log has the event (and
the log replays to the quote), the whole register otherwise. A change that reproduces a whole
register also proves every other event of that register equal, and the finding says which.
When nothing reproduces a difference the finding says so plainly, lists what was tried and
what evidence would settle it; it never guesses which events differ.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from . import events
from .config import OvmfVariant, format_memory_size, parse_memory_size
from .digest import replay
from .errors import DstackMrError
from .event_identity import (
    SMBIOS_LABELS,
    actual_identity,
    expected_identity,
    handoff_table_address,
    is_acpi_label,
    kernel_image_length,
)
from .events import RTMR0_LAYOUTS
from .machine import checked_cmdline_digest, rtmr0_digests
from .reproduce import (
    MEMORY_TRIED,
    cmdline_variants,
    first_reproducing,
    kernel_memory_candidates,
    memory_candidates,
)
from .smbios_search import SmbiosSearch, search
from .tdvf import SectionType

if TYPE_CHECKING:
    from .acpi_source import AcpiChoice
    from .config import VmConfig
    from .declarations import DeclaredMeasurement, ImageHashCheck
    from .diagnose import EventCheck, RegisterCheck, ReplayCheck
    from .evidence import Evidence
    from .image import Image
    from .machine import MeasurementDetails

__all__ = ["Finding", "explain"]

TD_HOB_TYPE = SectionType.TD_HOB


@attrs.frozen
class Finding:
    """One explanation.

    ``status`` is ``proven`` (a recomputation with ``parameter`` = ``value`` reproduced the
    actual digest, or a direct comparison showed it) or ``hypothesis``. ``tried`` lists what
    was recomputed without success, ``settle`` what evidence would decide, ``proves_equal``
    the events a register-level proof shows equal. ``lead`` marks findings that may head the
    report (causes, not side notes).
    """

    subject: str
    message: str
    status: str = "hypothesis"
    parameter: str | None = None
    value: str | None = None
    register: str | None = None
    tried: tuple[str, ...] = ()
    settle: str | None = None
    proves_equal: tuple[str, ...] = ()
    lead: bool = True

    @property
    def proven(self) -> bool:
        return self.status == "proven"

    @property
    def reproduced(self) -> bool:
        """A recomputation with a changed input reproduced the actual value."""
        return self.proven and self.parameter is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "message": self.message,
            "status": self.status,
            "register": self.register,
            "parameter": self.parameter,
            "value": self.value,
            "reproduced": self.reproduced,
            "tried": list(self.tried),
            "settle": self.settle,
            "proves_equal": list(self.proves_equal),
        }


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
    return _Explainer(
        vm, image, evidence, expected, registers, events, replay, acpi, image_hash, declared
    ).run()


def _short(value: bytes) -> str:
    return value.hex()[:16] + "…"


def _wrong_image(message: str, declared: bytes) -> Finding:
    """A proof that the image directory is not the one whose os_image_hash is ``declared``."""
    return Finding(
        "image",
        message,
        "proven",
        "image",
        declared.hex(),
        settle="diagnose against the image directory whose sha256sum.txt hashes to "
        f"{declared.hex()}",
    )


class _Explainer:
    def __init__(
        self,
        vm: VmConfig,
        image: Image,
        evidence: Evidence,
        expected: MeasurementDetails,
        registers: Sequence[RegisterCheck],
        events: Sequence[EventCheck],
        replay_checks: Sequence[ReplayCheck],
        acpi: AcpiChoice,
        image_hash: ImageHashCheck,
        declared: DeclaredMeasurement | None = None,
    ) -> None:
        self.declared = declared
        self.vm = vm
        self.image = image
        self.evidence = evidence
        self.expected = expected
        self.registers = {r.name.lower(): r for r in registers}
        self.events = events
        self.replay = {r.imr: r for r in replay_checks}
        self.acpi = acpi
        self.image_hash = image_hash
        self.findings: list[Finding] = []
        files = image.files
        self.fw = os.path.basename(files.firmware)
        self.kernel = os.path.basename(files.kernel)
        self.initrd = os.path.basename(files.initrd)

    # --- structure ----------------------------------------------------------------------------

    def run(self) -> list[Finding]:
        self._image()
        self._declared()
        self._mrtd()
        for rtmr in range(3):
            reg = self.registers[f"rtmr{rtmr}"]
            if self._has_log(rtmr):
                self._events_of(rtmr)
            elif reg.status == "mismatch":
                (self._rtmr0, self._rtmr1, self._rtmr2)[rtmr]()
        self._acpi_note()
        return self.findings

    def _has_log(self, rtmr: int) -> bool:
        return any(e.rtmr == rtmr and e.actual is not None for e in self.events)

    def _add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def _log_caveat(self, rtmr: int, finding: Finding) -> Finding:
        """A proof against a log event holds for the register only if the log replays."""
        check = self.replay.get(rtmr)
        if check is None or check.matches or not finding.proven:
            return finding
        return attrs.evolve(
            finding,
            status="hypothesis",
            message=finding.message + f" (the log does not replay to the {check.reference_source}"
            " value, so its events are not verified)",
        )

    # --- the image as a whole ------------------------------------------------------------------

    def _image(self) -> None:
        check = self.image_hash
        declared = check.declared
        doc = self.declared
        directory = self.image.files.directory
        booted = ""
        whose = "its" if doc is None or doc.from_evidence else "the given VmConfig's"
        by_vm = bool(self.evidence.declared_image_hash())
        declares = "this VM declares" if by_vm else "the given VmConfig declares"
        if doc is not None and doc.error is None and doc.vm_equal and not doc.vm_differ:
            booted = (
                f"; the VM booted what it declared (its {_and(list(doc.vm_equal))} equal "
                f"{whose} measurement document's)"
                if doc.from_evidence
                else f"; the VM's {_and(list(doc.vm_equal))} equal {whose} measurement document's"
            )
        if check.status == "mismatch" and declared is not None and check.image_hash is not None:
            self._add(
                _wrong_image(
                    f"image: your image directory is not the image {declares} "
                    f"(vm_config os_image_hash {_short(declared)}; {directory} has "
                    f"{_short(check.image_hash)}, the {check.image_hash_source}){booted}",
                    declared,
                )
            )
            return
        if doc is not None and doc.error is None and doc.image_differ and declared is not None:
            parts = _and(list(doc.image_differ))
            self._add(
                _wrong_image(
                    f"image: your image directory is not the image {declares} "
                    f"(os_image_hash {_short(declared)}): its {parts} "
                    f"{'differs' if len(doc.image_differ) == 1 else 'differ'} from that "
                    f"image's measurement document{booted}",
                    declared,
                )
            )
            return
        if check.status == "match" and declared is not None:
            self._add(
                Finding(
                    "image",
                    f"image: {directory} is the image {declares} (os_image_hash "
                    f"{_short(declared)}){booted}",
                    "proven",
                    lead=False,
                )
            )
            return
        if doc is not None and doc.error is None and not doc.image_differ:
            self._add(
                Finding(
                    "image",
                    f"image: {directory}'s firmware, kernel, cmdline and initrd equal the VM's "
                    f"measurement document's{booted}",
                    "proven",
                    lead=False,
                )
            )
            return
        # Unknown either way: say so only when everything the image decides differs.
        image_parts = [
            self.registers[n] for n in ("mrtd", "rtmr1", "rtmr2") if self.registers[n].actual
        ]
        if len(image_parts) < 2 or any(r.status != "mismatch" for r in image_parts):
            return
        names = _and([r.name for r in image_parts])
        if declared is not None:
            settle = (
                f"the image the VM declares: os_image_hash {declared.hex()} (the SHA-256 of its "
                f"sha256sum.txt); {directory} has no sha256sum.txt or digest.txt to check"
            )
        else:
            settle = "the image directory the VM was launched from"
        self._add(
            Finding(
                "image",
                f"image: {directory} is most likely not this VM's image: {names} "
                f"{'both' if len(image_parts) == 2 else 'all'} differ, and each depends on the "
                f"image's files ({self.fw}, {self.kernel}, {self.initrd}, cmdline)",
                settle=settle,
            )
        )

    def _declared(self) -> None:
        doc = self.declared
        if doc is None:
            return
        what = (
            "the VM's measurement document (vm_config.tdx_measurement)"
            if doc.from_evidence
            else "the measurement document of the given VmConfig (tdx_measurement)"
        )
        if doc.error is not None:
            self._add(
                Finding(
                    "declared",
                    f"declared: {what} does not check out: {doc.error}",
                    "proven",
                    settle="the VmConfig as the VMM issued it",
                )
            )
            return
        if not doc.vm_differ:
            return
        regs = _and(list(doc.vm_differ))
        verb = "differs" if len(doc.vm_differ) == 1 else "differ"
        if doc.from_evidence:
            message = (
                f"declared: the VM did not boot what it declares: its {regs} {verb} from its "
                "own measurement document's (vm_config.tdx_measurement, bound to its "
                "os_image_hash)"
            )
        else:
            message = (
                f"declared: the evidence's {regs} {verb} from {what}: the VM did not boot "
                "that image, or this VmConfig is not the VM's"
            )
        self._add(Finding("declared", message, "proven"))

    # --- MRTD ----------------------------------------------------------------------------------

    def _mrtd(self) -> None:
        reg = self.registers["mrtd"]
        if reg.status != "mismatch":
            return
        opts = self.expected.options
        other = not opts.two_pass_add_pages
        said = "two-pass" if opts.two_pass_add_pages else "single-pass"
        if self.image.mrtd(other) == reg.actual:
            found = "two-pass" if other else "single-pass"
            self._add(
                Finding(
                    "mrtd",
                    f"mrtd: the VM's QEMU added pages {found} (config gives {said}: QEMU "
                    f"{opts.version_str}, qemu_single_pass_add_pages="
                    f"{_opt(self.vm.qemu_single_pass_add_pages)}, passed unchanged as "
                    "two_pass_add_pages like the dstack verifier)",
                    "proven",
                    "two_pass_add_pages",
                    str(other).lower(),
                    "MRTD",
                )
            )
            return
        self._add(
            Finding(
                "mrtd",
                f"mrtd: neither page-add order of {self.fw} reproduces the actual MRTD; MRTD "
                f"depends only on the firmware and that order, so the VM most likely booted "
                f"other firmware than {self.fw}",
                register="MRTD",
                tried=("single-pass page add", "two-pass page add"),
                settle=f"the VM's firmware file (compare it with {self.fw})",
            )
        )

    # --- with an event log: event by event -----------------------------------------------------

    def _events_of(self, rtmr: int) -> None:
        mine = [e for e in self.events if e.rtmr == rtmr]
        other_layout = False
        if rtmr == 0 and any(e.status in ("missing", "extra") for e in mine):
            other_layout = self._layout(mine)
        for ev in mine:
            if ev.status != "mismatch":
                continue
            if other_layout and expected_identity(0, ev.label).kind not in ("td-hob", "acpi"):
                continue  # the other layout's own events, explained by the layout finding
            finding = self._event(ev)
            if finding is not None:
                self._add(self._log_caveat(rtmr, finding))

    def _event(self, ev: EventCheck) -> Finding | None:
        assert ev.actual is not None
        kind = expected_identity(ev.rtmr, ev.label).kind
        reg = f"RTMR{ev.rtmr}"
        if kind == "td-hob":
            return self._memory(
                reg, events.TD_HOB, self._memory_candidates(), self.image.tdvf.td_hob_digest,
                lambda d: d == ev.actual, "", otherwise=self._td_hob_miss(),
                settle=f"the VM's firmware (compare its TDVF metadata with {self.fw}) and its "
                "real memory size",
            )  # fmt: skip
        if kind == "kernel":
            return self._kernel_event(ev, reg)
        if kind == "cmdline":
            return self._cmdline(reg, lambda d: d == ev.actual, ev)
        if kind == "initrd":
            return Finding(
                "initrd",
                f"initrd: the VM's initrd is not {self.initrd} ({self.image.initrd_size} "
                "bytes): its SHA-384 differs",
                "proven",
                register=reg,
                lead=False,
            )
        if kind == "acpi":
            return self._acpi_event(ev)
        if kind == "smbios" or ev.label in SMBIOS_LABELS:
            return self._smbios(ev)
        return Finding(
            ev.label,
            f"{ev.label}: {ev.identity} differs from the constant every dstack OVMF of the "
            f"{self.expected.ovmf_variant.value} layout measures: the VM's firmware is another "
            "build",
            register=reg,
            settle=f"the VM's firmware (compare it with {self.fw})",
        )

    def _td_hob_miss(self) -> str:
        """Why no memory size reproduced the TD HOB, using where the VM's log says its TD HOB
        is (the handoff table's address: not covered by the digest, but telling)."""
        base = (
            f"td_hob: no memory size reproduces it; the TD HOB depends only on the memory size "
            f"and the TDVF section layout of {self.fw}"
        )
        ours = next(
            (s.memory_address for s in self.image.tdvf.sections if s.section_type == TD_HOB_TYPE),
            None,
        )
        logged = None
        for e in self.evidence.events or ():
            if e.imr == 0 and actual_identity(e).kind == "td-hob":
                logged = handoff_table_address(e)
                break
        if logged is not None and ours is not None and logged != ours:
            return (
                f"{base}; the VM's log places its TD HOB at {logged:#x}, {self.fw} at "
                f"{ours:#x}, so the VM's firmware has another TDVF section layout"
            )
        if logged is not None and logged == ours:
            return (
                f"{base}; the VM's log places its TD HOB at {logged:#x}, as {self.fw} does, so "
                "most likely the VM's memory size is one not tried (not a multiple of 256 MiB) "
                "or its firmware's other TDVF sections differ"
            )
        return (
            f"{base}, so the VM's firmware most likely has another section layout (or its "
            "memory size is not a multiple of 256 MiB)"
        )

    def _kernel_event(self, ev: EventCheck, reg: str) -> Finding:
        found = self._kernel_memory(lambda d: d == ev.actual, reg)
        if found is not None:
            return found
        size = len(self.image.kernel)
        length = self._logged_kernel_length()
        tried = (f"{MEMORY_TRIED} below 2.75G (initrd placement)",)
        if length is not None and length != size:
            message = (
                f"kernel_authenticode: the VM booted another kernel: its log records a "
                f"{length}-byte image, {self.kernel} is {size} bytes (the recorded length is "
                "not covered by the digest)"
            )
        elif length is not None:
            message = (
                f"kernel_authenticode: no memory size reproduces it; the VM's kernel has the "
                f"size of {self.kernel} ({size} bytes), so the initrd size most likely differs "
                f"(QEMU writes it into the kernel's header; {self.initrd} is "
                f"{self.image.initrd_size} bytes) or the kernel was rebuilt"
            )
        else:
            message = (
                f"kernel_authenticode: no memory size reproduces it: the VM booted another "
                f"kernel than {self.kernel}, or an initrd of another size than {self.initrd} "
                f"({self.image.initrd_size} bytes; QEMU writes the size into the kernel's header)"
            )
        return Finding(
            events.KERNEL_AUTHENTICODE,
            message,
            register=reg,
            tried=tried,
            settle=f"the VM's kernel and initrd files (compare with {self.kernel}, {self.initrd})",
        )

    def _logged_kernel_length(self) -> int | None:
        for e in self.evidence.events or ():
            if e.imr == 1 and actual_identity(e).kind == "kernel":
                try:
                    return kernel_image_length(e)
                except DstackMrError:
                    return None
        return None

    def _acpi_event(self, ev: EventCheck) -> Finding | None:
        differing = [
            e.label for e in self.events if e.rtmr == 0 and is_acpi_label(e.label)
            and e.status == "mismatch"
        ]  # fmt: skip
        if ev.label != differing[0]:
            return None  # one finding for the three
        layout = (
            "; the loader and RSDP match, so the table layout (sizes and offsets) is right and "
            "some table content differs"
            if differing == [events.ACPI_TABLES]
            else ""
        )
        proven = self._acpi_search(differing)
        if proven is not None:
            return proven
        return Finding(
            "acpi",
            f"{', '.join(differing)}: QEMU generated other ACPI tables than "
            f"{self.acpi.description.removeprefix('ACPI tables from ')}{layout}; they follow "
            "cpu_count, pic, smm, hotplug_off, pci_hole64_size, host_share_mode, GPUs and "
            "NVSwitches, hugepages and the QEMU version",
            register="RTMR0",
            settle="the VM's real settings and the host's dstack-acpi-tables (the dumper of "
            "that QEMU build), or --acpi-source log to take the VM's own ACPI digests",
        )

    def _acpi_search(self, differing: list[str]) -> Finding | None:
        """Recompute the tables with the built-in model for the inputs they follow; a
        configuration reproducing all three of the VM's ACPI digests is a proven cause."""
        from .acpi_log import acpi_digests_from_log
        from .acpi_model.search import explain_acpi_mismatch

        try:
            actual = acpi_digests_from_log(self.evidence.events or ())
            claimed = self.image.machine(self.vm)
            match, _tried = explain_acpi_mismatch(claimed, actual)
        except DstackMrError:
            return None
        if match is None:
            return None
        if not match.changes:
            source = self.acpi.description.removeprefix("ACPI tables from ")
            return Finding(
                "acpi",
                f"{', '.join(differing)}: the built-in model of dstack's QEMU reproduces all "
                "three of the VM's ACPI digests with the configuration as given, so the "
                f"expected tables ({source}) are not the ones this VM's QEMU built",
                "proven",
                "acpi_source",
                "builtin",
                "RTMR0",
            )
        # The claimed Machine, not the VmConfig: some inputs (root_verity) are no VmConfig field.
        said = ", ".join(f"{k}={getattr(claimed, k)!r}" for k, _ in match.changes)
        name, value = match.changes[0]
        return Finding(
            "acpi",
            f"{', '.join(differing)}: the VM's ACPI tables are those of {match.describe()} "
            f"(config says {said}): the built-in model reproduces all three ACPI digests with it",
            "proven",
            name,
            repr(value) if len(match.changes) == 1 else match.describe(),
            "RTMR0",
        )

    def _smbios(self, ev: EventCheck) -> Finding:
        assert ev.actual is not None
        found = self._smbios_search(ev.actual)
        if found is not None and found.match is not None:
            finding = self._smbios_found(found)
            reg = self.registers["rtmr0"]
            log = self.expected.rtmr_logs[0]
            with_it = [ev.actual if e.label == ev.label else e.digest for e in log.events]
            if reg.actual is not None and replay(with_it) == reg.actual:
                finding = attrs.evolve(
                    finding,
                    message=finding.message + "; with it the expected RTMR0 equals the actual",
                )
            return finding
        return Finding(
            "smbios",
            "smbios: the SMBIOS handoff-tables event (EV_EFI_HANDOFF_TABLES) differs and no "
            "modelled SMBIOS table reproduces it; its digest follows QEMU's SMBIOS tables "
            "(memory size, host CPU, -smbios strings, QEMU machine type), and the expected "
            "value is the constant of one 2 GiB configuration — this is not a sign of another "
            "OVMF build",
            register="RTMR0",
            tried=(found.describe(),) if found is not None else (),
            settle="the host's CPU (CPUID leaf 1), its VMM's -smbios type=1 strings and QEMU "
            "version (dstack-mr measure --smbios-computed --host-cpu ...)",
            lead=False,
        )

    def _smbios_search(self, actual: bytes | Callable[[bytes], bool]) -> SmbiosSearch | None:
        """The SMBIOS inputs behind ``actual``, at the memory size the TD HOB proved (if it
        did) or the config's; None when the model cannot take this VM's inputs."""
        memory: int = self.vm.memory_size
        for f in self.findings:
            if f.proven and f.parameter == "memory_size" and f.value is not None:
                memory = parse_memory_size(f.value)
        try:
            return search(actual, memory, self.expected.options.version)
        except DstackMrError:
            return None

    def _smbios_found(self, found: SmbiosSearch) -> Finding:
        match = found.match
        assert match is not None
        differs = []
        if match.memory_size != self.vm.memory_size:
            differs.append(
                f"memory {format_memory_size(match.memory_size)}, config says "
                f"{format_memory_size(self.vm.memory_size)}"
            )
        if match.qemu_version != self.expected.options.version:
            differs.append(
                f"QEMU {'.'.join(map(str, match.qemu_version))}, config resolves "
                f"{self.expected.options.version_str}"
            )
        return Finding(
            "smbios",
            f"smbios: the SMBIOS handoff-tables event is the SMBIOS table of {match.describe()}: "
            "recomputing QEMU's tables with these inputs reproduces the VM's digest (the "
            "expected value was the reference's constant, right for 2 GiB on QEMU 8.2.2 only)"
            + "".join(f"; {d}" for d in differs),
            "proven",
            "smbios",
            match.describe(),
            "RTMR0",
        )

    def _layout(self, mine: Sequence[EventCheck]) -> bool:
        """A finding about the RTMR0 event sequence; True when the VM's log is proven to be
        the other OVMF layout."""
        ours = self.expected.ovmf_variant
        other = _other(ours)
        n_ours, n_other = len(RTMR0_LAYOUTS[ours]), len(RTMR0_LAYOUTS[other])
        actual = [e for e in (self.evidence.events or ()) if e.imr == 0]
        kinds = [actual_identity(e).kind for e in actual]
        want = [expected_identity(0, s.label).kind for s in RTMR0_LAYOUTS[other]]
        source = self.expected_source()
        if kinds == want:
            self._add(
                Finding(
                    "ovmf_variant",
                    f"ovmf_variant: the VM's OVMF measured the {other.value} layout ({n_other} "
                    f"RTMR0 events, identified by type and payload); the config resolved "
                    f"{ours.value} ({n_ours} events, from {source})",
                    "proven",
                    "ovmf_variant",
                    other.value,
                    "RTMR0",
                )
            )
            return True
        extra = [e.actual_identity or e.label for e in mine if e.status == "extra"]
        missing = [e.identity for e in mine if e.status == "missing"]
        parts = []
        if extra:
            parts.append(f"the VM measured {len(extra)} event(s) not expected: {', '.join(extra)}")
        if missing:
            parts.append(f"{len(missing)} expected event(s) are absent: {', '.join(missing)}")
        self._add(
            Finding(
                "ovmf_variant",
                f"RTMR0 layout: {'; '.join(parts)}; the log has {len(actual)} events, the "
                f"{ours.value} layout {n_ours} and {other.value} {n_other}: the VM's firmware "
                "measures another event sequence",
                register="RTMR0",
                settle=f"the VM's firmware (compare it with {self.fw})",
            )
        )
        return False

    def expected_source(self) -> str:
        from .image import ovmf_variant_with_source

        return ovmf_variant_with_source(self.vm, self.image.info)[1]

    # --- without an event log: whole registers ------------------------------------------------

    def _register_proof(
        self, rtmr: int, changed: str, finding: Finding, unchanged: Iterable[str]
    ) -> Finding:
        rest = [label for label in unchanged if label != changed]
        n = len(rest)
        return attrs.evolve(
            finding,
            message=f"{finding.message}: RTMR{rtmr} recomputed with it reproduces the actual "
            f"value, which proves its other {n} events equal the expected ones",
            proves_equal=tuple(rest),
        )

    def _rtmr0(self) -> None:
        reg = self.registers["rtmr0"]
        log = self.expected.rtmr_logs[0]
        labels = [e.label for e in log.events]
        base = log.digests
        hob = labels.index(events.TD_HOB)

        def with_hob(digest: bytes) -> bool:
            return replay([digest if k == hob else d for k, d in enumerate(base)]) == reg.actual

        found = self._memory(
            "RTMR0", events.TD_HOB, self._memory_candidates(), self.image.tdvf.td_hob_digest,
            with_hob, "", otherwise=None,
        )  # fmt: skip
        if found is not None:
            self._add(self._register_proof(0, events.TD_HOB, found, labels))
            return
        ours = self.expected.ovmf_variant
        other = _other(ours)
        td_hob = base[hob]
        alt = rtmr0_digests(other, td_hob, self.expected.acpi_tables)
        if replay(alt) == reg.actual:
            self._add(
                Finding(
                    "ovmf_variant",
                    f"ovmf_variant: the VM's OVMF measured the {other.value} layout (config "
                    f"resolved {ours.value}, from {self.expected_source()}): RTMR0 recomputed "
                    "with it reproduces the actual value, which proves every event of that "
                    "layout equal",
                    "proven",
                    "ovmf_variant",
                    other.value,
                    "RTMR0",
                    proves_equal=tuple(s.label for s in RTMR0_LAYOUTS[other]),
                )
            )
            return
        smbios_tried: tuple[str, ...] = ()
        if events.SMBIOS_HANDOFF in labels:
            at = labels.index(events.SMBIOS_HANDOFF)
            tables = self._smbios_search(
                lambda d: replay([d if k == at else x for k, x in enumerate(base)]) == reg.actual
            )
            if tables is not None and tables.match is not None:
                proof = self._smbios_found(tables)
                self._add(self._register_proof(0, events.SMBIOS_HANDOFF, proof, labels))
                return
            smbios_tried = (tables.describe(),) if tables is not None else ()
        self._add(
            Finding(
                "rtmr0",
                "rtmr0: RTMR0 differs, and no single change tried reproduces it; without the "
                "event log the differing event cannot be identified",
                register="RTMR0",
                tried=(
                    f"{MEMORY_TRIED} (TD HOB)",
                    f"the {other.value} OVMF layout",
                    f"ACPI as given ({self.acpi.description})",
                    *smbios_tried,
                ),
                settle="the VM's event log (the GetQuote response's event_log, or the CCEL "
                "table) identifies the differing event",
            )
        )

    def _rtmr1(self) -> None:
        reg = self.registers["rtmr1"]
        log = self.expected.rtmr_logs[1]
        rest = log.digests[1:]
        labels = [e.label for e in log.events]
        found = self._kernel_memory(lambda d: replay([d, *rest]) == reg.actual, "RTMR1")
        if found is not None:
            self._add(self._register_proof(1, events.KERNEL_AUTHENTICODE, found, labels))
            return
        self._add(
            Finding(
                "rtmr1",
                "rtmr1: RTMR1 differs and no memory size reproduces it; its only event that "
                f"depends on the image is the kernel's, so most likely the VM booted another "
                f"kernel than {self.kernel}, or an initrd of another size than {self.initrd} "
                f"({self.image.initrd_size} bytes; QEMU writes the size into the kernel's header)",
                register="RTMR1",
                tried=(f"{MEMORY_TRIED} below 2.75G (initrd placement)",),
                settle="the VM's event log (its kernel event records the image length)",
            )
        )

    def _rtmr2(self) -> None:
        reg = self.registers["rtmr2"]
        initrd = self.expected.rtmr_logs[2].digests[1]
        found = self._cmdline("RTMR2", lambda d: replay([d, initrd]) == reg.actual, None)
        if found is not None and found.proven:
            self._add(
                self._register_proof(2, events.CMDLINE, found, [events.CMDLINE, events.INITRD])
            )
            return
        self._add(
            Finding(
                "rtmr2",
                "rtmr2: RTMR2 differs; without the event log it cannot be told whether the "
                f"kernel command line or the initrd ({self.initrd}) differs",
                register="RTMR2",
                tried=(
                    f"{len(cmdline_variants(self.image.info.cmdline))} spellings of the "
                    "command line",
                ),
                settle="the VM's event log (its RTMR2 events are the command line and the initrd)",
            )
        )

    # --- searches (the candidates are in reproduce.py) ---------------------------------------

    def _memory_candidates(self) -> list[tuple[str, int]]:
        ev_vm = self.evidence.vm_config
        claimed = None if ev_vm is None else ev_vm.memory_size
        return memory_candidates(self.vm.memory_size, claimed)

    def _memory(
        self,
        register: str,
        label: str,
        candidates: list[tuple[str, int]],
        digest_for: Callable[[int], bytes],
        reproduces: Callable[[bytes], bool],
        why: str,
        *,
        otherwise: str | None,
        settle: str | None = None,
    ) -> Finding | None:
        said = format_memory_size(self.vm.memory_size)
        found = first_reproducing(candidates, digest_for, reproduces)
        if found is not None:
            return Finding(
                label,
                f"{label}: the VM ran with memory_size={found[0]} (config says {said}{why})",
                "proven",
                "memory_size",
                found[0],
                register,
            )
        if otherwise is None:
            return None
        return Finding(label, otherwise, register=register, tried=(MEMORY_TRIED,), settle=settle)

    def _kernel_memory(self, reproduces: Callable[[bytes], bool], register: str) -> Finding | None:
        return self._memory(
            register,
            events.KERNEL_AUTHENTICODE,
            kernel_memory_candidates(self._memory_candidates()),
            self.image.kernel_digest,
            reproduces,
            "; QEMU places the initrd by memory size",
            otherwise=None,
        )

    def _cmdline(
        self, register: str, reproduces: Callable[[bytes], bool], ev: EventCheck | None
    ) -> Finding | None:
        variants = cmdline_variants(self.image.info.cmdline)
        found = first_reproducing(variants, checked_cmdline_digest, reproduces)
        if found is not None:
            name, text = found
            return Finding(
                "cmdline",
                f"cmdline: the VM measured {name}: {text!r}",
                "proven",
                "kernel_cmdline",
                text,
                register,
            )
        if ev is None:
            return None
        return Finding(
            "cmdline",
            f"cmdline: the VM's kernel command line is not this image's "
            f"{self.image.files.cmdline!r}: its digest differs (no spelling of it tried "
            "reproduces the VM's)",
            "proven",
            register=register,
            tried=(f"{len(variants)} spellings of the command line",),
            settle="the VM's kernel command line (/proc/cmdline inside the VM)",
            lead=False,
        )

    # --- notes ---------------------------------------------------------------------------------

    def _acpi_note(self) -> None:
        if self.acpi.kind == "log":
            self._add(
                Finding(
                    "acpi",
                    "acpi: the three ACPI digests were taken from the VM's own event log, not "
                    "verified: RTMR0's other events are judged, its ACPI events are not",
                    "proven",
                    register="RTMR0",
                    settle="the ACPI tables of the VM's configuration (the dstack-acpi-tables "
                    "dumper, or --acpi-tables FILE)",
                    lead=False,
                )
            )
        elif not self.acpi.judged:
            self._add(
                Finding(
                    "acpi",
                    "acpi: RTMR0 is not judged: "
                    + self.acpi.description.removeprefix("ACPI not judged: "),
                    "proven",
                    register="RTMR0",
                    settle="the dstack-acpi-tables dumper, --acpi-tables FILE, or the VM's event "
                    "log (its three ACPI digests)",
                    lead=False,
                )
            )


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _other(variant: OvmfVariant) -> OvmfVariant:
    if variant is OvmfVariant.PRE202505:
        return OvmfVariant.STABLE202505
    return OvmfVariant.PRE202505


def _opt(value: object) -> str:
    return "unset" if value is None else str(value).lower()
