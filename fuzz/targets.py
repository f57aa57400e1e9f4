"""The fuzz targets: each parser, plus a property its accepted results must have.

Rejecting input with a :class:`dstack_mr.DstackMrError` is fine; any other exception, or an
accepted input whose result breaks the property, is a finding. The properties are:

- tdvf: MRTD of both page-add orders is 48 bytes; the TD HOB is a well-formed HOB list whose
  end pointer is consistent, and its digest is the SHA-384 of it.
- kernel: the fast path (patch and hash only the first 64 KiB) equals the full patched copy.
- acpi: loader and RSDP have their fixed shapes and the RSDP points at the RSDT; a cached
  source returns what the uncached one does.
- quote: parsing the hex form of the accepted bytes gives the same quote (round trip); the
  registers are the body's bytes at their documented offsets.
- ccel / JSON log: every event names an RTMR 0-3 and a 48-byte digest; a JSON log written
  back out and parsed again gives the same events (round trip).
- vmconfig: ``from_json(to_dict())`` gives the same VmConfig (round trip).
- snp_attestation (SCALE VersionedAttestation, SNP report, vm_config JSON, measurement.snp.cbor):
  MEASUREMENT / HOST_DATA are the report's bytes at their offsets; a carried
  measurement.snp.cbor re-encodes to a document that decodes to the same value.
- snp_cbor: the same round trip for a bare measurement.snp.cbor; small documents measure.
- sev_ovmf: the parsed firmware ends at 4 GiB and its ovmf_hash is that of its bytes.

Used by ``atheris_harness.py`` (coverage-guided) and by tests/test_fuzz_targets.py (which
runs every target on its seeds and on hypothesis data, so a target that cannot import or
whose property is wrong fails the ordinary test run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable

from dstack_mr import (
    AcpiTablesBlob,
    DstackMrError,
    VmConfig,
    acpi,
    ccel,
    eventlog,
    kernel,
    quote,
    snp,
    tdvf,
)
from dstack_mr.acpi import CachedAcpiSource, DumperInvocation
from dstack_mr.snp_attestation import parse_snp_attestation
from dstack_mr.snp_document import SnpImageMeasurement

#: (initrd size, guest memory) pairs for the kernel target, hostile ones included.
KERNEL_SIZES = ((1234567, 2 << 30), (0, 0xB000_0000), (0x37FF_FFFF, 1 << 20), (3, (1 << 64) - 1))


def fuzz_tdvf(data: bytes, _variant: int) -> None:
    parsed = tdvf.parse(data)
    for two_pass in (True, False):
        assert len(parsed.mrtd(two_pass)) == 48
    for memory in (2 << 30, 0xB000_0000):
        hob = parsed.td_hob(memory)
        assert hob[:4] == b"\x01\x00\x38\x00" and (len(hob) - 56) % 48 == 0 and len(hob) > 56
        assert all(hob[i : i + 4] == b"\x03\x00\x30\x00" for i in range(56, len(hob), 48))
        end = int.from_bytes(hob[48:56], "little")
        assert end == (parsed.td_hob_base + len(hob) + 8) % (1 << 64)
        assert parsed.td_hob_digest(memory) == hashlib.sha384(hob).digest()


def fuzz_kernel(data: bytes, variant: int) -> None:
    initrd_size, memory = KERNEL_SIZES[variant % len(KERNEL_SIZES)]
    fast = kernel.patched_kernel_digest(data, initrd_size, memory)
    full = kernel.authenticode_sha384(kernel.patch(data, initrd_size, memory))
    assert fast == full


def fuzz_acpi(data: bytes, _variant: int) -> None:
    tables = acpi.build_tables(data)
    assert len(tables.loader) == acpi.LOADER_SIZE and len(tables.rsdp) == 20
    assert tables.rsdp.startswith(b"RSD PTR \0BOCHS \0")
    rsdt = int.from_bytes(tables.rsdp[16:20], "little")
    assert data[rsdt : rsdt + 4] == b"RSDT"
    assert tables.tables == data
    inv = DumperInvocation(("-m", "2048M"), "9.1.0")
    cached = CachedAcpiSource(AcpiTablesBlob(data))
    assert cached.acpi_tables(inv) == cached.acpi_tables(inv) == data


def fuzz_quote(data: bytes, _variant: int) -> None:
    q = quote.parse_quote(data)
    assert quote.parse_quote(q.raw.hex()) == q
    body = 48 if q.version == 4 else 54
    assert q.mrtd == q.raw[body + 136 : body + 184]
    assert q.rtmr == tuple(q.raw[body + 328 + 48 * i : body + 376 + 48 * i] for i in range(4))
    assert q.signed_length <= len(q.raw) and not q.raw[q.signed_length :].strip(b"\0")


def _check_events(events: tuple[eventlog.Event, ...]) -> None:
    for e in events:
        assert 0 <= e.imr <= 3 and len(e.digest) == 48


def fuzz_ccel(data: bytes, _variant: int) -> None:
    _check_events(ccel.parse_ccel(data))


def fuzz_json_event_log(data: bytes, _variant: int) -> None:
    events = eventlog.parse_json_event_log(data)
    _check_events(events)
    again = eventlog.parse_json_event_log(
        json.dumps(
            [
                {
                    "imr": e.imr,
                    "event_type": e.event_type,
                    "digest": e.digest.hex(),
                    "event": e.event,
                    "event_payload": e.event_payload.hex(),
                }
                for e in events
            ]
        )
    )
    fields = [(e.imr, e.event_type, e.digest, e.event, e.event_payload) for e in events]
    assert [(e.imr, e.event_type, e.digest, e.event, e.event_payload) for e in again] == fields


def fuzz_vmconfig(data: bytes, _variant: int) -> None:
    vm = VmConfig.from_json(data)
    assert VmConfig.from_json(json.dumps(vm.to_dict())) == vm


def _snp_round_trip(img: SnpImageMeasurement) -> None:
    assert SnpImageMeasurement.from_cbor(img.to_cbor()) == img


def fuzz_snp_attestation(data: bytes, _variant: int) -> None:
    att = parse_snp_attestation(data)
    if att is None:
        return
    assert att.report.raw[0x90:0xC0] == att.report.measurement
    assert att.report.raw[0xC0:0xE0] == att.report.host_data
    if att.vm_config is not None and att.vm_config.sev_snp_measurement is not None:
        _snp_round_trip(att.vm_config.measurement_document().image)


def fuzz_snp_cbor(data: bytes, variant: int) -> None:
    img = SnpImageMeasurement.from_cbor(data)
    _snp_round_trip(img)
    # Measuring is linear in the sections' pages (up to 2^24): only small documents here.
    if sum(-(-s.size // 4096) for s in img.ovmf_sections) <= 4096:
        with contextlib.suppress(DstackMrError):
            m = img.launch_inputs(1 + variant % 8, "EPYC-v4", 1).measure()
            assert len(m.measurement) == 48


def fuzz_sev_ovmf(data: bytes, _variant: int) -> None:
    fw = snp.SnpOvmf.parse(data)
    assert fw.gpa + fw.size == 1 << 32
    assert fw.ovmf_hash == snp.snp_ovmf_hash(data)
    assert len(fw.sections) <= snp.MAX_OVMF_SECTIONS


TARGETS: tuple[Callable[[bytes, int], None], ...] = (
    fuzz_tdvf,
    fuzz_kernel,
    fuzz_acpi,
    fuzz_quote,
    fuzz_ccel,
    fuzz_json_event_log,
    fuzz_vmconfig,
    fuzz_snp_attestation,
    fuzz_snp_cbor,
    fuzz_sev_ovmf,
)
