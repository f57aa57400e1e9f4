"""Lite verification: a VM's expected MRTD and RTMR0-2 without its image and without QEMU.

Inputs: the VM's ``vm_config`` (its ``tdx_measurement`` checked against ``os_image_hash`` by
:func:`dstack_mr.measurement_doc.verify_material`), and the three RTMR0 ACPI digests from the
VM's own event log. What comes out:

- MRTD: the document's two-pass candidate when the resolved QEMU options say two-pass page
  adds (QEMU 8.x, or ``qemu_single_pass_add_pages`` passed unchanged, as the verifier does),
  else the single-pass one;
- RTMR0: the 13-event pre202505 layout, TD HOB rebuilt from the witness for ``memory_size``,
  the ACPI events *as the log states them* -- so RTMR0 vouches for everything but the ACPI
  tables, which are taken from the log, not verified;
- RTMR1: the document's kernel Authenticode digest and the four fixed events. That digest is
  for QEMU's high-memory initrd placement, which QEMU also uses for exactly 2 GiB; for any
  other size below 0xB0000000 lite cannot vouch for RTMR1 and refuses;
- RTMR2: the document's cmdline and initrd digests.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from . import events
from .acpi import AcpiTables, build_tables
from .acpi_log import ACPI_EVENT_NAMES, AcpiDigests
from .config import OvmfVariant, VmConfig
from .declarations import image_dir_hash
from .errors import ConfigError, EvidenceError, MeasurementDocumentError
from .eventlog import EV_PLATFORM_CONFIG_FLAGS, Event
from .image import vm_machine as image_vm_machine
from .kernel import STABLE_MIN_MEMORY
from .machine import (
    AcpiDigestsLike,
    Machine,
    MeasurementDetails,
    RtmrLog,
    TdxMeasurements,
    rtmr0_inputs,
)
from .measurement_doc import (
    COMPAT_2G_MEMORY,
    MeasurementDocument,
    lite_memory_supported,
    verify_material,
)

__all__ = [
    "ImageCrossCheck",
    "builtin_acpi_tables",
    "cross_check_image",
    "lite_acpi_digests_from_log",
    "measure_from_document",
    "measure_lite",
    "vm_machine",
]

_ACPI_PAYLOAD = b"ACPI DATA"
_FROM_LOG = "taken from the event log (not verified: lite mode)"
_FROM_DOC = "from measurement.tdx.cbor"
_FROM_MODEL = "from the built-in model of dstack's QEMU for this vm_config (verified)"


def lite_acpi_digests_from_log(events: Iterable[Event]) -> AcpiDigests:
    """The digests of the RTMR0 ``ACPI DATA`` events, chosen by name as upstream's verifier
    does: exactly three such events, exactly one of each name, 48-byte digests."""
    rtmr0 = [e for e in events if e.imr == 0]
    acpi = [
        e
        for e in rtmr0
        if e.event_type == EV_PLATFORM_CONFIG_FLAGS and e.event_payload == _ACPI_PAYLOAD
    ]
    if len(acpi) != 3:
        raise EvidenceError(
            f"lite verification needs exactly 3 RTMR0 'ACPI DATA' events in the event log; "
            f"found {len(acpi)} among {len(rtmr0)} RTMR0 events"
        )
    digests = []
    for name in ACPI_EVENT_NAMES:
        named = [e for e in acpi if e.event == name]
        if len(named) != 1:
            raise EvidenceError(
                f"lite verification needs exactly one RTMR0 'ACPI DATA' event named {name!r}; "
                f"found {len(named)}"
            )
        if len(named[0].digest) != 48:
            raise EvidenceError(
                f"RTMR0 event {name!r} has a {len(named[0].digest)}-byte digest, expected 48"
            )
        digests.append(named[0].digest)
    loader, rsdp, tables = digests
    return AcpiDigests(loader, rsdp, tables)


#: What each per-machine digest is in lite mode: where it was taken from.
_LITE_NOTES = {
    events.TD_HOB: "from the document's TD HOB witness and memory_size",
    events.ACPI_LOADER: _FROM_LOG,
    events.ACPI_RSDP: _FROM_LOG,
    events.ACPI_TABLES: _FROM_LOG,
    events.KERNEL_AUTHENTICODE: f"{_FROM_DOC} (kernel_authenticode)",
    events.CMDLINE: f"{_FROM_DOC} (cmdline_sha384)",
    events.INITRD: f"{_FROM_DOC} (initrd_sha384)",
}
_LITE_NOTES_BUILTIN_ACPI = {
    **_LITE_NOTES,
    events.ACPI_LOADER: _FROM_MODEL,
    events.ACPI_RSDP: _FROM_MODEL,
    events.ACPI_TABLES: _FROM_MODEL,
}


def _relabel(log: RtmrLog, acpi_from_log: bool) -> RtmrLog:
    notes = _LITE_NOTES if acpi_from_log else _LITE_NOTES_BUILTIN_ACPI
    return attrs.evolve(
        log,
        events=tuple(
            attrs.evolve(e, varies_with=notes.get(e.label, e.varies_with)) for e in log.events
        ),
    )


def vm_machine(vm: VmConfig) -> Machine:
    """The Machine of ``vm`` for what lite needs of it: QEMU's options and dumper argv (no
    image paths: they are never read)."""
    return image_vm_machine(vm, ovmf_variant=OvmfVariant.PRE202505)


def builtin_acpi_tables(vm: VmConfig) -> AcpiTables:
    """``vm``'s ACPI tables from the built-in model of dstack's QEMU
    (:class:`dstack_mr.acpi_model.QemuAcpiModel`): with them, lite mode verifies RTMR0's ACPI
    events instead of taking them from the log. Raises :class:`ConfigError` for a
    configuration the model does not cover (a QEMU version, ``swtpm``)."""
    from .acpi_model import QemuAcpiModel

    model = QemuAcpiModel()
    blob = model.acpi_tables(vm_machine(vm).dumper_invocation())
    return build_tables(blob, source=model.source_name)


def measure_from_document(
    doc: MeasurementDocument, vm: VmConfig, acpi: AcpiDigestsLike
) -> MeasurementDetails:
    """Expected MRTD and RTMR0-2 of ``vm`` from an (already verified) measurement document
    and the three ACPI digests; the result's ``mode`` is ``"lite"``. ACPI digests whose
    ``source`` is ``"log"`` are labelled as taken from the log; tables computed for the
    configuration (:func:`builtin_acpi_tables`) as verified."""
    if not lite_memory_supported(vm.memory_size):
        raise ConfigError(
            f"memory_size {vm.memory_size:#x}: lite verification needs exactly 2 GiB "
            f"({COMPAT_2G_MEMORY:#x}) or at least {STABLE_MIN_MEMORY:#x} bytes, because the "
            "document's kernel digest is for that initrd placement; verify this VM with its "
            "image instead"
        )
    if vm.ovmf_variant is not None and vm.ovmf_variant is not doc.ovmf_variant:
        raise MeasurementDocumentError(
            f"vm_config.ovmf_variant is {vm.ovmf_variant.value!r} but the measurement document "
            f"says {doc.ovmf_variant.value!r}"
        )
    from_log = acpi.source == "log"
    opts = vm_machine(vm).versioned_options()
    variant = OvmfVariant.PRE202505
    rtmr0, rtmr1, rtmr2 = (
        _relabel(log, from_log)
        for log in events.labelled_logs(
            variant,
            {
                **rtmr0_inputs(doc.witness.td_hob_digest(vm.memory_size), acpi),
                events.KERNEL_AUTHENTICODE: doc.kernel_authenticode,
                events.CMDLINE: doc.cmdline_sha384,
                events.INITRD: doc.initrd_sha384,
            },
        )
    )
    return MeasurementDetails(
        measurements=TdxMeasurements(
            doc.mrtd(opts.two_pass_add_pages), rtmr0.value, rtmr1.value, rtmr2.value
        ),
        rtmr_logs=(rtmr0, rtmr1, rtmr2),
        acpi_tables=acpi,
        invocation=None,
        options=opts,
        ovmf_variant=variant,
        mode="lite",
        acpi_from_log=from_log,
    )


def measure_lite(vm: VmConfig, events: Iterable[Event]) -> MeasurementDetails:
    """The whole lite path: check ``vm.tdx_measurement`` against ``vm.os_image_hash``, take
    the ACPI digests from ``events`` and measure."""
    if vm.tdx_measurement is None:
        raise ConfigError(
            "vm_config has no tdx_measurement: lite verification needs the image's "
            "measurement document; give the image directory instead"
        )
    doc = verify_material(vm.tdx_measurement, vm.os_image_hash)
    return measure_from_document(doc, vm, lite_acpi_digests_from_log(events))


@attrs.frozen
class ImageCrossCheck:
    """A lite document against an image directory: which fields the image reproduces.

    ``differing`` names the document fields the image's own document does not equal (empty:
    the image is the one the document describes, as far as TDX measures it);
    ``image_hash_matches`` compares the directory's own hash
    (:func:`dstack_mr.declarations.image_dir_hash`: the SHA-256 of ``sha256sum.txt``, else
    ``digest.txt``) with ``os_image_hash`` (None when the directory names no usable hash).
    """

    image_dir: str
    differing: tuple[str, ...]
    image_hash_matches: bool | None

    @property
    def same_image(self) -> bool:
        return not self.differing and self.image_hash_matches is not False


def cross_check_image(doc: MeasurementDocument, vm: VmConfig, image_dir: str) -> ImageCrossCheck:
    """Build the document of ``image_dir`` and compare it with ``doc`` field by field."""
    from .measurement_doc import build_document

    built = build_document(image_dir)
    differing = tuple(
        f.name
        for f in attrs.fields(MeasurementDocument)
        if getattr(doc, f.name) != getattr(built, f.name)
    )
    # The same image hash verify and diagnose compare os_image_hash with.
    found = image_dir_hash(image_dir)
    matches = None if found is None else found[0] == vm.os_image_hash
    return ImageCrossCheck(image_dir, differing, matches)
