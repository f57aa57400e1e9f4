"""The CCEL / TCG2 crypto-agile binary event log (ACPI CCEL table), read on declared layouts.

The record layouts are those of the TCG PC Client Platform Firmware Profile Specification
(PFP), "Event Log Structures": the log opens with one SHA-1-format ``TCG_PCClientPCREvent``
whose data is the ``TCG_EfiSpecIdEvent`` listing the log's hash algorithms and their digest
sizes; every later record is a ``TCG_PCR_EVENT2`` whose ``TPML_DIGEST_VALUES`` holds one
``TPMT_HA`` (algorithm id, digest) per algorithm. All integers are little-endian.
"""

from __future__ import annotations

import struct

from ._binary import take, u16, u32, uint, unpack
from .errors import EventLogError
from .eventlog import EV_NO_ACTION, RTMR_COUNT, Event, event_type_name
from .registry import U32_MAX

__all__ = [
    "PCR_EVENT2_HEADER",
    "PCR_EVENT_HEADER",
    "SPEC_ID_ALGORITHM",
    "SPEC_ID_EVENT",
    "SPEC_ID_SIGNATURE",
    "parse_ccel",
]

#: TCG_PCClientPCREvent, the log's first record: pcrIndex, eventType, a SHA-1 digest[20],
#: eventDataSize. Its event data (at offset 32) is the spec-ID event.
PCR_EVENT_HEADER = struct.Struct("<II20sI")
#: TCG_EfiSpecIdEvent up to its algorithm table: signature[16], platformClass,
#: specVersionMinor, specVersionMajor, specErrata, uintnSize, numberOfAlgorithms. Then
#: numberOfAlgorithms TCG_EfiSpecIdEventAlgorithmSize entries, a vendorInfoSize byte and
#: the vendor info.
SPEC_ID_EVENT = struct.Struct("<16sIBBBBI")
#: TCG_EfiSpecIdEventAlgorithmSize: algorithmId, digestSize.
SPEC_ID_ALGORITHM = struct.Struct("<HH")
#: TCG_PCR_EVENT2 up to its digests: pcrIndex, eventType, TPML_DIGEST_VALUES.count. Each
#: digest is a TPMT_HA (a u16 hashAlg, then the digest); then a u32 eventSize and the data.
PCR_EVENT2_HEADER = struct.Struct("<III")
#: The start of every record (pcrIndex, eventType): all it takes to recognise the end.
_RECORD_KEY = struct.Struct("<II")

_ALG_SHA384 = 0x000C
_KNOWN_DIGEST_SIZES = {0x0004: 20, 0x000B: 32, 0x000C: 48, 0x000D: 64, 0x0012: 32}
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
# A handful of hash algorithms exist; more entries than this is corruption, not a platform.
_MAX_ALGORITHMS = 16
_MAX_DIGEST_SIZE = 128


def _spec_id_algorithms(data: bytes) -> tuple[dict[int, int], int]:
    """Algorithm id -> digest size from the header's TCG_EfiSpecIdEvent, and the offset of
    the first TCG_PCR_EVENT2 record."""
    what = "CCEL spec-ID event"
    _pcr, event_type, _sha1, size = unpack(
        PCR_EVENT_HEADER, data, 0, f"{what} header", EventLogError
    )
    if event_type != EV_NO_ACTION:
        raise EventLogError(f"{what}: first event is not EV_NO_ACTION; not a crypto-agile log")
    body = take(data, PCR_EVENT_HEADER.size, size, f"{what} data", EventLogError)
    sig = take(body, 0, len(SPEC_ID_SIGNATURE), f"{what} signature", EventLogError)
    if sig != SPEC_ID_SIGNATURE:
        raise EventLogError(f"{what}: signature {sig!r} is not 'Spec ID Event03'")
    *_, count = unpack(SPEC_ID_EVENT, body, 0, what, EventLogError)
    if not 1 <= count <= _MAX_ALGORITHMS:
        raise EventLogError(f"{what}: implausible numberOfAlgorithms {count}")
    algs: dict[int, int] = {}
    for k in range(count):
        off = SPEC_ID_EVENT.size + SPEC_ID_ALGORITHM.size * k
        alg, dsize = unpack(SPEC_ID_ALGORITHM, body, off, f"{what} algorithm {k}", EventLogError)
        expected = _KNOWN_DIGEST_SIZES.get(alg)
        if alg in algs or (expected is not None and dsize != expected):
            raise EventLogError(f"{what}: bad entry {k} (algorithm {alg:#06x} size {dsize})")
        if not 0 < dsize <= _MAX_DIGEST_SIZE:
            raise EventLogError(f"{what}: algorithm {alg:#06x} has digest size {dsize}")
        algs[alg] = dsize
    vendor_at = SPEC_ID_EVENT.size + SPEC_ID_ALGORITHM.size * count
    vendor = uint(body, vendor_at, 1, f"{what} vendorInfoSize", EventLogError)
    take(body, vendor_at + 1, vendor, f"{what} vendorInfo", EventLogError)
    if _ALG_SHA384 not in algs:
        raise EventLogError(f"{what}: the log carries no SHA-384 digests (algorithms {algs})")
    return algs, PCR_EVENT_HEADER.size + size


def _is_end(data: bytes, off: int) -> bool:
    if len(data) - off < _RECORD_KEY.size:
        # Too short for another record header: fine only if it is padding.
        rest = data[off:]
        return rest.strip(b"\0") == b"" or rest.strip(b"\xff") == b""
    mr_index, event_type = _RECORD_KEY.unpack_from(data, off)
    return mr_index == U32_MAX or (mr_index == 0 and event_type in (0, U32_MAX))


def parse_ccel(data: bytes) -> tuple[Event, ...]:
    """Parse a raw CCEL / TCG2 crypto-agile event log (as read from the ACPI CCEL table).

    CCEL's MR index is 1-based for RTMRs (1 = RTMR0 .. 4 = RTMR3; 0 would be MRTD); events
    get ``imr = index - 1``. EV_NO_ACTION records are skipped because they are never
    extended. Parsing stops at the 0xFF or zero padding after the last record.
    """
    data = bytes(data)
    algs, off = _spec_id_algorithms(data)
    events: list[Event] = []
    n = 0
    while off < len(data) and not _is_end(data, off):
        where = f"CCEL record {n} at offset {off:#x}"
        mr_index, event_type, count = unpack(
            PCR_EVENT2_HEADER,
            data,
            off,
            f"{where} header (MR index, event type, digest count)",
            EventLogError,
        )
        if not 1 <= count <= len(algs):
            raise EventLogError(
                f"{where}: digest count {count} (the spec-ID event lists {len(algs)} algorithms)"
            )
        p = off + PCR_EVENT2_HEADER.size
        sha384_digest: bytes | None = None
        seen: set[int] = set()
        for k in range(count):
            alg = u16(data, p, f"{where} digest {k} algorithm", EventLogError)
            if alg not in algs or alg in seen:
                raise EventLogError(
                    f"{where}: digest {k} algorithm {alg:#06x} is "
                    + ("repeated" if alg in seen else "not in the spec-ID algorithm table")
                )
            seen.add(alg)
            digest = take(data, p + 2, algs[alg], f"{where} digest {k}", EventLogError)
            if alg == _ALG_SHA384:
                sha384_digest = digest
            p += 2 + algs[alg]
        size = u32(data, p, f"{where} event size", EventLogError)
        payload = take(data, p + 4, size, f"{where} event data", EventLogError)
        off = p + 4 + size
        n += 1
        if event_type == EV_NO_ACTION:
            continue
        if sha384_digest is None:
            raise EventLogError(f"{where}: no SHA-384 digest")
        if not 1 <= mr_index <= RTMR_COUNT:
            raise EventLogError(
                f"{where}: MR index {mr_index} is not an RTMR (CCEL uses 1..4 for RTMR0..3; "
                "0 is MRTD, which no event extends)"
            )
        events.append(
            Event(mr_index - 1, event_type, sha384_digest, event_type_name(event_type), payload)
        )
    return tuple(events)
