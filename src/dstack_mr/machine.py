"""A dstack CVM's launch configuration and its expected TDX measurements.

:class:`Machine` carries every setting the reference's ``Machine`` has. ``measure()`` and
``measure_with_logs()`` read the image files and return MRTD and RTMR0-2, the latter with
every event digest, labelled.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs

from . import acpi as acpi_mod
from . import events, pci_slots, uefi, validate
from . import kernel as kernel_mod
from . import tdvf as tdvf_mod
from .acpi import AcpiSource, AcpiTables, DumperInvocation
from .acpi_log import AcpiDigests
from .config import OvmfVariant, parse_version_triple
from .digest import short_hex
from .errors import ConfigError, ImageError
from .events import MeasuredEvent as MeasuredEvent  # re-exported: part of this API
from .events import RtmrLog as RtmrLog  # re-exported: part of this API

# The file readers live in .files; re-exported for modules that imported them from here.
from .files import MAX_FIRMWARE_SIZE as MAX_FIRMWARE_SIZE
from .files import MAX_KERNEL_SIZE as MAX_KERNEL_SIZE
from .files import BackgroundHash
from .files import file_size as file_size
from .files import hash_file as hash_file
from .files import read_file as read_file
from .files import reading as reading
from .registry import U32_MAX
from .uefi import cmdline_digest

if TYPE_CHECKING:  # the SMBIOS model loads only for a machine that computes the event
    from .smbios import SmbiosInputs, SmbiosOptions

DEFAULT_QEMU_VERSION = (9, 1, 0)
MIN_QEMU_VERSION = (8, 0, 0)
MIB = 1024 * 1024


def _ranged(name: str, low: int, high: int, why: str) -> Any:
    return validate.attrs_validator(validate.int_range(low, high, why), name)


# Each count is first checked alone against a cheap bound, so a u32 count never builds a
# billion-entry argv; whether the counts fit together is the PCI slot check (_check_slot_layout).
_PORTS = "PCIe root ports, chassis 0-255"
_FUNCTIONS = "q35 PCI functions, 32 slots x 8"


def _typed(check: validate.Check, name: str, optional: bool = False) -> Any:
    return validate.attrs_validator(validate.optional(check) if optional else check, name)


_u64 = functools.partial(_typed, validate.u64)
_flag = functools.partial(_typed, validate.boolean)
_text = functools.partial(_typed, validate.string)


def _whole_mib(_inst: object, _attr: object, value: int) -> None:
    if value < MIB or value % MIB:
        raise ConfigError(
            f"memory_size {value} must be a positive whole number of MiB (QEMU is given -m in MiB)"
        )


def _path(value: str | os.PathLike[str]) -> str:
    try:
        return os.fspath(value)
    except TypeError:
        raise ConfigError(f"expected a file path, got {type(value).__name__}") from None


def _variant(value: object) -> OvmfVariant:
    try:
        return OvmfVariant(value)
    except ValueError:
        raise ConfigError(
            f"ovmf_variant must be 'pre202505' or 'stable202505', got {value!r}"
        ) from None


def _smbios_options(value: object) -> str | None:
    if value is None:
        return None
    from .smbios import SmbiosOptions

    if isinstance(value, SmbiosOptions):
        return None
    return f"must be None or a SmbiosOptions, got {value!r}"


@functools.lru_cache(maxsize=256)
def _check_slot_layout(
    *,
    hugepages: bool,
    num_gpus: int,
    num_nvswitches: int,
    num_nics: int,
    num_verity_volumes: int,
    root_verity: bool,
    host_share_mode: str,
) -> None:
    """Lay out the dumper argv's PCI devices as QEMU does; raise SlotError if one has no slot.

    The argv places every device by first free slot (no ``addr=``) except the hugepages
    pxb-pcie expander, pinned at slot 0x10; :func:`pci_slots.assign_slots` lays it out as
    QEMU does. Only these arguments change the device list: the counts, hugepages (the
    expander), root_verity (hd0's virtio-blk-pci, else an IDE -cdrom) and host_share_mode
    (hd2's virtio-blk-pci or the -virtfs virtio-9p-pci). The QEMU version changes
    ``QEMU_ACPI_COMPAT_VER``, not the machine type (always plain q35); cpu_count,
    memory_size, smm, pic, hotplug_off, pci_hole64_size and the paths add no device, so
    they are fixed here and the result is cached per layout (an error is raised, never
    cached). Checked against stock QEMU at every edge.
    """
    argv = acpi_mod.dumper_invocation(
        cpu_count=1,
        memory_size=MIB,
        firmware="",
        kernel="",
        root_verity=root_verity,
        smm=False,
        pic=False,
        qemu_version=DEFAULT_QEMU_VERSION,
        hugepages=hugepages,
        num_gpus=num_gpus,
        num_nvswitches=num_nvswitches,
        hotplug_off=False,
        pci_hole64_size=None,
        host_share_mode=host_share_mode,
        num_nics=num_nics,
        num_verity_volumes=num_verity_volumes,
    ).argv
    pci_slots.assign_slots(pci_slots.devices_in_argv(argv))


@attrs.frozen
class VersionedOptions:
    """Settings whose defaults follow the QEMU version (8.x: pic on, two-pass page add)."""

    version: tuple[int, int, int]
    pic: bool
    two_pass_add_pages: bool

    @property
    def version_str(self) -> str:
        return "{}.{}.{}".format(*self.version)


@attrs.frozen
class Machine:
    """Everything that determines a dstack CVM's MRTD and RTMR0-2 (the reference's Machine).

    ``firmware``, ``kernel`` and ``initrd`` are paths; ``kernel_cmdline`` is measured as is
    (the CLI appends `` initrd=initrd`` to the image's cmdline, like the reference).
    ``None`` means "not set": the value then follows from ``qemu_version`` (default 9.1.0).
    """

    cpu_count: int = attrs.field(validator=_ranged("cpu_count", 1, U32_MAX, "u32"))
    memory_size: int = attrs.field(validator=[_u64("memory_size"), _whole_mib])
    firmware: str = attrs.field(converter=_path)
    kernel: str = attrs.field(converter=_path)
    initrd: str = attrs.field(converter=_path)
    kernel_cmdline: str = attrs.field(validator=_text("kernel_cmdline"))
    two_pass_add_pages: bool | None = attrs.field(
        default=None, validator=_flag("two_pass_add_pages", True)
    )
    pic: bool | None = attrs.field(default=None, validator=_flag("pic", True))
    qemu_version: str | None = attrs.field(default=None, validator=_text("qemu_version", True))
    smm: bool = attrs.field(default=False, validator=_flag("smm"))
    pci_hole64_size: int | None = attrs.field(default=None, validator=_u64("pci_hole64_size", True))
    hugepages: bool = attrs.field(default=False, validator=_flag("hugepages"))
    num_gpus: int = attrs.field(
        default=0, validator=_ranged("num_gpus", 0, acpi_mod.MAX_PASSTHROUGH_PORTS, _PORTS)
    )
    num_nvswitches: int = attrs.field(
        default=0,
        validator=[
            _ranged("num_nvswitches", 0, acpi_mod.MAX_PASSTHROUGH_PORTS, _PORTS),
        ],
    )
    hotplug_off: bool = attrs.field(default=False, validator=_flag("hotplug_off"))
    #: Upstream dstack's extra devices; the defaults reproduce the reference's argv exactly.
    num_nics: int = attrs.field(
        default=1, validator=_ranged("num_nics", 0, acpi_mod.MAX_BLOCK_AND_NET_DEVICES, _FUNCTIONS)
    )
    num_verity_volumes: int = attrs.field(
        default=0,
        validator=[
            _ranged("num_verity_volumes", 0, acpi_mod.MAX_BLOCK_AND_NET_DEVICES, _FUNCTIONS),
        ],
    )
    #: A software TPM: refused (ConfigError) wherever ACPI tables are measured.
    swtpm: bool = attrs.field(default=False, validator=_flag("swtpm"))
    root_verity: bool = attrs.field(default=True, validator=_flag("root_verity"))
    host_share_mode: str = attrs.field(
        default="",
        validator=[
            _text("host_share_mode"),
            validate.attrs_validator(validate.one_of(acpi_mod.SHARE_MODES), "host_share_mode"),
        ],
    )
    ovmf_variant: OvmfVariant = attrs.field(default=OvmfVariant.PRE202505, converter=_variant)
    #: stable202505 only: compute the SMBIOS event (RTMR0 event 13) with these assumptions
    #: instead of using the reference's constant (right for 2 GiB on QEMU 8.2.2 only).
    smbios: SmbiosOptions | None = attrs.field(
        default=None, validator=validate.attrs_validator(_smbios_options, "smbios")
    )
    # Resolved once, at construction: an unusable qemu_version fails here, not mid-measure.
    _options: VersionedOptions = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_options", self._resolve_options())
        self._check_slots()

    def _check_slots(self) -> None:
        """Refuse device counts QEMU could not start the dumper argv with (no free PCI slot)."""
        try:
            _check_slot_layout(
                hugepages=self.hugepages,
                num_gpus=self.num_gpus,
                num_nvswitches=self.num_nvswitches,
                num_nics=self.num_nics,
                num_verity_volumes=self.num_verity_volumes,
                root_verity=self.root_verity,
                host_share_mode=self.host_share_mode,
            )
        except pci_slots.SlotError as exc:
            raise ConfigError(self._slot_message(exc)) from None

    def _slot_message(self, exc: pci_slots.SlotError) -> str:
        # Which count lands where is acpi.dumper_invocation's order: disks and NICs first,
        # then (hugepages) the GPUs' root ports behind the expander, else on pcie.0, then the
        # NVSwitches' root ports on pcie.0. The devices every machine has are the remainder.
        counts = {
            "num_gpus": self.num_gpus,
            "num_nvswitches": self.num_nvswitches,
            "num_nics": self.num_nics,
            "num_verity_volumes": self.num_verity_volumes,
        }
        behind_expander = self.hugepages and self.num_gpus > 0
        if exc.bus != pci_slots.ROOT_BUS:
            fields = ["num_gpus"]
        elif exc.pinned is not None:
            fields = ["num_nics", "num_verity_volumes"]
        else:
            fields = [f for f in counts if not (f == "num_gpus" and behind_expander)]
        counted = sum(counts[f] for f in fields)
        others = exc.need - counted
        named = " + ".join(f"{f} {counts[f]}" for f in fields if counts[f])
        if not named or others < 0:
            return str(exc)
        where = exc.bus
        if exc.pinned is not None:
            where += (
                f" below slot {exc.pinned:#x}, where hugepages pins the GPUs' pxb-pcie expander"
            )
        room = (
            f"q35 leaves {exc.free} there beside its chipset"
            if exc.bus == pci_slots.ROOT_BUS
            else f"the bus has {exc.free}"
        )
        if others:
            room += f" and this machine's other devices take {others}"
        return (
            f"{named} need {counted} PCI slots on {where}; {exc.free - others} are free "
            f"({room}): QEMU gives each device of the dumper argv a slot of its own, so it "
            "could not start this machine"
        )

    def _invocation(self, swtpm: bool) -> DumperInvocation:
        opts = self.versioned_options()
        return acpi_mod.dumper_invocation(
            cpu_count=self.cpu_count,
            memory_size=self.memory_size,
            firmware=self.firmware,
            kernel=self.kernel,
            root_verity=self.root_verity,
            smm=self.smm,
            pic=opts.pic,
            qemu_version=opts.version,
            hugepages=self.hugepages,
            num_gpus=self.num_gpus,
            num_nvswitches=self.num_nvswitches,
            hotplug_off=self.hotplug_off,
            pci_hole64_size=self.pci_hole64_size,
            host_share_mode=self.host_share_mode,
            num_nics=self.num_nics,
            num_verity_volumes=self.num_verity_volumes,
            swtpm=swtpm,
        )

    def __repr__(self) -> str:
        # Settings left at their defaults are omitted: a repr shows what makes this machine.
        parts = []
        for f in attrs.fields(type(self)):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if f.default is attrs.NOTHING or value != f.default:
                shown = value.value if isinstance(value, OvmfVariant) else value
                parts.append(f"{f.name}={shown!r}")
        return f"Machine({', '.join(parts)})"

    def versioned_options(self) -> VersionedOptions:
        """pic / two-pass as the QEMU version sets them (resolved when the Machine was made)."""
        return self._options

    def _resolve_options(self) -> VersionedOptions:
        """Resolve pic / two-pass from the QEMU version; reject QEMU older than 8.0.0."""
        version = DEFAULT_QEMU_VERSION
        if self.qemu_version is not None:
            try:
                version = parse_version_triple(self.qemu_version)
            except ConfigError as exc:
                raise ConfigError(f"invalid qemu_version: {exc}") from None
        if version < MIN_QEMU_VERSION:
            raise ConfigError(
                "unsupported QEMU version {}.{}.{}: dstack-mr models QEMU 8.0.0 and later".format(
                    *version
                )
            )
        qemu8 = MIN_QEMU_VERSION <= version < (9, 0, 0)
        return VersionedOptions(
            version=version,
            pic=qemu8 if self.pic is None else self.pic,
            two_pass_add_pages=qemu8
            if self.two_pass_add_pages is None
            else self.two_pass_add_pages,
        )

    def dumper_invocation(self) -> DumperInvocation:
        """The exact argv and ``QEMU_ACPI_COMPAT_VER`` the reference gives the dumper."""
        return self._invocation(swtpm=self.swtpm)

    def smbios_inputs(self) -> SmbiosInputs | None:
        """The SMBIOS model's inputs when ``smbios`` is set (else None: the constant)."""
        if self.smbios is None:
            return None
        return self.smbios.inputs(
            self.memory_size, self.versioned_options().version, self.cpu_count
        )

    def measure(self, acpi: AcpiSource | None = None) -> TdxMeasurements:
        return self.measure_with_logs(acpi).measurements

    def measure_with_logs(self, acpi: AcpiSource | None = None) -> MeasurementDetails:
        """Read the image files and compute every register and event.

        ``acpi`` supplies the ACPI tables; by default the ``dstack-acpi-tables`` dumper runs.
        """
        # The initrd is usually most of the bytes: hash it on a second thread while this one
        # does firmware, kernel and ACPI. The kernel patch needs only the initrd's size,
        # which stat gives up front.
        initrd_size = file_size(self.initrd, "initrd")
        with BackgroundHash(self.initrd, "initrd") as pending:

            def initrd_digest() -> bytes:
                size, digest = pending.result()
                if size != initrd_size:
                    raise ImageError(
                        f"initrd {self.initrd} changed size while being read "
                        f"({initrd_size} -> {size} bytes)"
                    )
                return digest

            firmware = read_file(self.firmware, "firmware", MAX_FIRMWARE_SIZE)
            kernel = read_file(self.kernel, "kernel", MAX_KERNEL_SIZE)
            return compute(
                self,
                tdvf_mod.parse(firmware),
                kernel,
                initrd_size,
                initrd_digest,
                acpi if acpi is not None else acpi_mod.AcpiDumper(),
            )


@attrs.frozen
class TdxMeasurements:
    mrtd: bytes = attrs.field(repr=short_hex)
    rtmr0: bytes = attrs.field(repr=short_hex)
    rtmr1: bytes = attrs.field(repr=short_hex)
    rtmr2: bytes = attrs.field(repr=short_hex)

    def to_dict(self) -> dict[str, str]:
        """Hex strings under the reference's JSON keys."""
        return {k: getattr(self, k).hex() for k in ("mrtd", "rtmr0", "rtmr1", "rtmr2")}

    def _repr_html_(self) -> str:
        from .render import measurements_html

        return measurements_html(self)


class AcpiDigestsLike(Protocol):
    """The three RTMR0 ACPI digests: :class:`AcpiTables` has them, and so has a set taken
    from an event log."""

    @property
    def loader_digest(self) -> bytes: ...
    @property
    def rsdp_digest(self) -> bytes: ...
    @property
    def tables_digest(self) -> bytes: ...
    @property
    def source(self) -> str: ...


@attrs.frozen
class MeasurementDetails:
    """Registers, labelled event logs, the ACPI blobs and dumper call behind them.

    ``mode`` is ``"lite"`` for results computed from a measurement document
    (:func:`dstack_mr.lite.measure_from_document`): then ``acpi_tables`` holds only the three
    digests, taken from the VM's event log (``acpi_from_log``), and no dumper ran
    (``invocation`` is None).
    """

    measurements: TdxMeasurements
    rtmr_logs: tuple[RtmrLog, RtmrLog, RtmrLog] = attrs.field(repr=False)
    #: The tables measured, or only their three digests when those were given instead.
    acpi_tables: AcpiTables | AcpiDigestsLike = attrs.field(repr=False)
    invocation: DumperInvocation | None = attrs.field(repr=False)
    options: VersionedOptions
    ovmf_variant: OvmfVariant
    mode: Literal["legacy", "lite"] = "legacy"
    acpi_from_log: bool = False
    #: What a reader must know about this result (e.g. which SMBIOS event digest was used).
    notes: tuple[str, ...] = ()
    #: The inputs of the computed SMBIOS event; None when the reference's constant was used.
    smbios_inputs: SmbiosInputs | None = None
    #: Inputs measured as the reference measures them but probably not what was meant
    #: (e.g. a kernel cut short after its headers). Empty when all is well.
    warnings: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        from .render import details_html

        return details_html(self)


def rtmr0_inputs(
    td_hob_digest: bytes, tables: AcpiDigestsLike, smbios_digest: bytes | None = None
) -> dict[str, bytes]:
    """The per-machine digests RTMR0 takes: the TD HOB and QEMU's three ACPI blobs, and a
    computed SMBIOS event (``smbios_digest``) where it replaces the reference's constant."""
    inputs = {
        events.TD_HOB: td_hob_digest,
        events.ACPI_LOADER: tables.loader_digest,
        events.ACPI_RSDP: tables.rsdp_digest,
        events.ACPI_TABLES: tables.tables_digest,
    }
    if smbios_digest is not None:
        inputs[events.SMBIOS_HANDOFF] = smbios_digest
    return inputs


def rtmr0_digests(
    variant: OvmfVariant, td_hob_digest: bytes, tables: AcpiDigestsLike
) -> list[bytes]:
    """RTMR0 event digests with the reference's SMBIOS constant."""
    return events.layout_digests(events.RTMR0_LAYOUTS[variant], rtmr0_inputs(td_hob_digest, tables))


def compute(
    machine: Machine,
    tdvf: tdvf_mod.Tdvf,
    kernel: bytes,
    initrd_size: int,
    initrd_digest: bytes | Callable[[], bytes],
    acpi: AcpiSource | AcpiDigests,
    *,
    mrtd: bytes | None = None,
    cmdline_sha384: bytes | None = None,
    kernel_digest: Callable[[bytes, int, int], bytes] = kernel_mod.patched_kernel_digest,
    kernel_warnings: tuple[str, ...] | None = None,
) -> MeasurementDetails:
    """Measure from already-loaded inputs (callers may pass cached MRTD / cmdline digests).

    ``initrd_digest`` may be a callable, resolved only when RTMR2 is built, so the initrd can
    still be hashing while everything else is computed. ``acpi`` may be the three ACPI digests
    themselves (:class:`~dstack_mr.acpi_log.AcpiDigests`) instead of a source of tables.
    ``kernel_warnings``, if the caller has them, are :func:`kernel_warnings_of` ``kernel``.
    """
    opts = machine.versioned_options()
    if mrtd is None:
        mrtd = tdvf.mrtd(opts.two_pass_add_pages)
    td_hob = tdvf.td_hob_digest(machine.memory_size)
    # Digests given (e.g. from the VM's log) measure no tables, so nothing runs and nothing
    # is refused (a swtpm VM's ACPI is refused only where tables are measured).
    invocation: DumperInvocation | None = None
    tables: AcpiTables | AcpiDigests
    if isinstance(acpi, AcpiDigests):
        tables = acpi
    else:
        invocation = machine.dumper_invocation()
        tables = acpi_mod.build_tables(
            acpi.acpi_tables(invocation), source=acpi_mod.source_name(acpi)
        )
    smbios_inputs, smbios_digest, notes = _smbios_event(machine, opts)
    kernel_sha384 = kernel_digest(kernel, initrd_size, machine.memory_size)
    if cmdline_sha384 is None:
        cmdline_sha384 = checked_cmdline_digest(machine.kernel_cmdline)
    if callable(initrd_digest):
        initrd_digest = initrd_digest()
    rtmr0, rtmr1, rtmr2 = events.labelled_logs(
        machine.ovmf_variant,
        {
            **rtmr0_inputs(td_hob, tables, smbios_digest),
            events.KERNEL_AUTHENTICODE: kernel_sha384,
            events.CMDLINE: cmdline_sha384,
            events.INITRD: initrd_digest,
        },
    )

    return MeasurementDetails(
        measurements=TdxMeasurements(mrtd, rtmr0.value, rtmr1.value, rtmr2.value),
        rtmr_logs=(rtmr0, rtmr1, rtmr2),
        acpi_tables=tables,
        invocation=invocation,
        options=opts,
        ovmf_variant=machine.ovmf_variant,
        warnings=kernel_warnings if kernel_warnings is not None else kernel_warnings_of(kernel),
        acpi_from_log=isinstance(acpi, AcpiDigests),
        notes=notes,
        smbios_inputs=smbios_inputs,
    )


def _smbios_event(
    machine: Machine, opts: VersionedOptions
) -> tuple[SmbiosInputs | None, bytes | None, tuple[str, ...]]:
    """(inputs, digest, notes) of the stable202505 SMBIOS event; the digest is None when the
    reference's constant stands."""
    if machine.ovmf_variant is not OvmfVariant.STABLE202505:
        return None, None, () if machine.smbios is None else (uefi.NO_SMBIOS_EVENT_NOTE,)
    if machine.smbios is None:
        # The reference's constant stands; its note is uefi's, so smbios is not imported.
        return None, None, (uefi.smbios_seed_note(machine.memory_size, opts.version),)
    from . import smbios as smbios_mod

    inputs = machine.smbios_inputs()
    assert inputs is not None  # machine.smbios is set
    return inputs, smbios_mod.event_digest(inputs), (smbios_mod.computed_note(inputs),)


def kernel_warnings_of(kernel: bytes) -> tuple[str, ...]:
    """What a result says about the kernel file itself (a truncated download)."""
    return tuple(w for w in (kernel_mod.truncation_warning(kernel),) if w)


def checked_cmdline_digest(cmdline: str) -> bytes:
    try:
        return cmdline_digest(cmdline)
    except UnicodeEncodeError:
        raise ConfigError(
            "kernel command line contains a lone UTF-16 surrogate; it cannot be measured"
        ) from None
