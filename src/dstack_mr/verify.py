"""The whole verdict on a dstack VM: quote signature and TCB, event log, measurements, app.

:func:`verify` runs, in order, the checks dstack's verifier runs and returns a
:class:`VerificationResult` shaped like its response (``is_valid``, ``reason``, ``details``
with ``quote_verified``, ``event_log_verified``, ``os_image_hash_verified``,
``acpi_tables_verified``, ``tcb_status``, ``advisory_ids``, ``report_data``, ``app_info``),
plus every step's own outcome in ``details.checks``:

1. ``quote`` — signature chain and collateral, offline with dcap-qvl (:mod:`dstack_mr.dcap`);
   without collateral the signature is *not checked* and the result cannot be valid;
2. ``tcb`` — the TCB status against the policy (default: UpToDate only);
3. ``td_attributes`` — no debug TD, no SEAM signer or service TD (dstack's ``validate_tcb``);
4. ``report_data`` — equal to the expected value, when one is given;
5. ``event_log`` — each RTMR's events replay to the quote's register, and RTMR3's runtime
   events carry the digests of their payloads;
6. ``measurements`` — MRTD and RTMR0-2 recomputed equal the quote's: from an image directory
   (legacy; the ACPI tables are recomputed too), or, for a VM whose VmConfig says
   ``tdx_attestation_variant = lite``, from its measurement document with the three ACPI
   digests taken from the event log (not verified, as in dstack's verifier);
   ``os_image_hash`` — the VmConfig's image hash is that image's (legacy: sha256 of the
   image's ``sha256sum.txt``; lite: the hash that binds ``sha256sum.txt`` and the document);
7. ``app_info`` — read from RTMR3 once the log is verified.

``is_valid`` is true when no check failed and the quote and TCB checks passed; a check that
could not run (no event log, no image) is ``not_checked`` and named in the report, never
silently counted as passed. ``details.warnings`` names what is suspect in inputs that
still let every check run (a truncated kernel in the image, unknown VmConfig keys); it does
not change the verdict, and the JSON carries it only when non-empty.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import attrs

from .acpi import AcpiSource
from .appinfo import AppInfo, KeyProvider, app_info, runtime_events
from .attestation import Attestation
from .collateral import Collateral, ValidityWindow
from .config import TdxAttestationVariant, VmConfig
from .dcap import QuoteVerdict, TcbPolicy, quote_fmspc, to_utc, verify_quote
from .declarations import image_dir_hash
from .digest import replay
from .errors import ConfigError, EvidenceError, MeasurementDocumentError
from .eventlog import Event, runtime_event_digest
from .evidence import Evidence
from .image import Image, ovmf_variant_with_source
from .machine import TdxMeasurements
from .measurement_doc import MeasurementDocument
from .quote import TdxQuote

__all__ = [
    "FAILED",
    "NOT_CHECKED",
    "PASSED",
    "Check",
    "VerificationDetails",
    "VerificationResult",
    "verify",
]

PASSED = "passed"
FAILED = "failed"
NOT_CHECKED = "not_checked"
_REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2")


def _differing_registers(expected: TdxMeasurements, quote: TdxQuote) -> list[str]:
    """Upper-case names of the boot registers where ``expected`` and the quote disagree."""
    return [r.upper() for r in _REGISTERS if getattr(expected, r) != getattr(quote, r)]


def _iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@attrs.frozen
class Check:
    """One verification step: ``status`` is passed, failed or not_checked."""

    name: str
    status: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message}


@attrs.frozen
class VerificationDetails:
    quote_verified: bool
    event_log_verified: bool
    os_image_hash_verified: bool
    acpi_tables_verified: bool
    tcb_status: str | None
    tcb_accepted: bool
    advisory_ids: tuple[str, ...]
    report_data: bytes | None
    app_info: AppInfo | None
    key_provider: KeyProvider | None
    verified_at: dt.datetime
    collateral_window: ValidityWindow | None
    fmspc: str | None
    accepted_tcb: tuple[str, ...]
    checks: tuple[Check, ...]
    #: What is suspect in the inputs though every check could run (e.g. a truncated kernel
    #: in the image, unknown VmConfig keys); in the JSON only when there are some.
    warnings: tuple[str, ...] = ()

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        window = self.collateral_window
        out: dict[str, Any] = {
            "quote_verified": self.quote_verified,
            "event_log_verified": self.event_log_verified,
            "os_image_hash_verified": self.os_image_hash_verified,
            "acpi_tables_verified": self.acpi_tables_verified,
            "report_data": None if self.report_data is None else self.report_data.hex(),
            "tcb_status": self.tcb_status,
            "tcb_accepted": self.tcb_accepted,
            "accepted_tcb_statuses": list(self.accepted_tcb),
            "advisory_ids": list(self.advisory_ids),
            "key_provider": None
            if self.key_provider is None
            else {"name": self.key_provider.name, "id": self.key_provider.id},
            "app_info": None if self.app_info is None else self.app_info.to_dict(),
            "verified_at": _iso(self.verified_at),
            "collateral_valid_from": None if window is None else _iso(window.not_before),
            "collateral_valid_until": None if window is None else _iso(window.not_after),
            "fmspc": self.fmspc,
            "checks": [c.to_dict() for c in self.checks],
        }
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@attrs.frozen
class VerificationResult:
    """dstack-verifier's response shape: ``is_valid``, ``reason`` (None when valid), ``details``."""

    is_valid: bool
    reason: str | None
    details: VerificationDetails

    @property
    def exit_code(self) -> int:
        return 0 if self.is_valid else 1

    def to_dict(self) -> dict[str, Any]:
        return {"is_valid": self.is_valid, "details": self.details.to_dict(), "reason": self.reason}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _as_evidence(evidence: Evidence | Attestation | TdxQuote) -> Evidence:
    if isinstance(evidence, Evidence):
        return evidence
    if isinstance(evidence, Attestation):
        return Evidence.from_attestation(evidence)
    if isinstance(evidence, TdxQuote):
        return Evidence(quote=evidence, sources=("quote",))
    raise EvidenceError(
        f"verify: expected Evidence, Attestation or TdxQuote, got {type(evidence).__name__}"
    )


def _td_attributes(quote: TdxQuote) -> Check:
    problems = []
    if quote.td_attributes[0] & 0x01:
        problems.append("the TD runs in debug mode (TD_ATTRIBUTES.DEBUG set)")
    if quote.mrsignerseam != bytes(48):
        problems.append("MRSIGNERSEAM is not zero (not Intel's TDX module)")
    if quote.mr_servicetd is not None and quote.mr_servicetd != bytes(48):
        problems.append("MRSERVICETD is not zero")
    if problems:
        return Check("td_attributes", FAILED, "; ".join(problems))
    return Check("td_attributes", PASSED, "production TD (no debug, Intel TDX module)")


def _payload_measured(event: Event) -> bool:
    # Recomputed here rather than trusting Event.payload_consistent: an Event may be built
    # by the caller, and dstack's verifier likewise derives RTMR3 digests from payloads.
    try:
        return event.digest in (
            runtime_event_digest(event.event, event.event_payload, 1),
            runtime_event_digest(event.event, event.event_payload, 2),
        )
    except UnicodeEncodeError:
        return False


def _event_log(quote: TdxQuote, events: tuple[Event, ...] | None, stripped: bool) -> Check:
    """RTMR3 must replay (the app identity is read from it); RTMR0-2 must replay too, unless
    the evidence is dstack's SCALE attestation, whose boot log is stripped by design (the
    measurement check judges those registers)."""
    if events is None:
        return Check("event_log", NOT_CHECKED, "no event log given")
    runtime = [e for e in events if e.imr == 3]
    if replay(e.digest for e in runtime) != quote.rtmr3:
        return Check(
            "event_log",
            FAILED,
            f"the event log's RTMR3 events ({len(runtime)}) do not replay to the quote's RTMR3: "
            "trimmed or altered, so the app identity cannot be read from them",
        )
    inconsistent = [e.event for e in runtime_events(events) if not _payload_measured(e)]
    if inconsistent:
        return Check(
            "event_log",
            FAILED,
            "RTMR3 events whose digest is not that of their payload: " + ", ".join(inconsistent),
        )
    bad = []
    for imr in range(3):
        mine = [e for e in events if e.imr == imr]
        if replay(e.digest for e in mine) != quote.rtmr[imr]:
            bad.append(f"RTMR{imr} ({len(mine)} events)")
    if bad and not stripped:
        return Check(
            "event_log",
            FAILED,
            f"the event log does not replay to the quote's {', '.join(bad)}: trimmed or altered",
        )
    derived = sum(e.digest_derived for e in events)
    note = f" ({derived} runtime digests recomputed from payloads)" if derived else ""
    if bad:
        return Check(
            "event_log",
            PASSED,
            f"the RTMR3 events ({len(runtime)}) replay to the quote's RTMR3{note}; the "
            f"attestation's boot log is stripped ({', '.join(bad)} not replayable), so RTMR0-2 "
            "rest on the measurement check",
        )
    return Check("event_log", PASSED, f"{len(events)} events replay to the quote's RTMR0-3{note}")


def _legacy_measurements(
    quote: TdxQuote, vm: VmConfig, image: Image, acpi: AcpiSource | None
) -> tuple[Check, Check, tuple[str, ...]]:
    """The measurements and os_image_hash checks, and the warnings measuring the image gave."""
    variant, _source = ovmf_variant_with_source(vm, image.info)
    details = image.measure(vm, acpi, variant)
    expected = details.measurements
    differ = _differing_registers(expected, quote)
    where = image.files.directory
    if differ:
        measured = Check(
            "measurements",
            FAILED,
            f"{', '.join(differ)} differ from image {where} with this VmConfig "
            "(run 'dstack-mr diagnose' for the event-by-event comparison)",
        )
    else:
        measured = Check(
            "measurements", PASSED, f"MRTD and RTMR0-2 equal image {where} with this VmConfig"
        )
    found = image_dir_hash(image.files.directory)
    if differ:
        hashed = Check("os_image_hash", FAILED, "the measurements do not match the image")
    elif not vm.os_image_hash:
        hashed = Check(
            "os_image_hash", PASSED, f"image {where} (the VmConfig names no os_image_hash)"
        )
    elif found is None:
        hashed = Check(
            "os_image_hash",
            NOT_CHECKED,
            f"image {where} has no sha256sum.txt or digest.txt to compare os_image_hash "
            f"{vm.os_image_hash.hex()} with; the measurements match the image given",
        )
    elif found[0] != vm.os_image_hash:
        hashed = Check(
            "os_image_hash",
            FAILED,
            f"os_image_hash {vm.os_image_hash.hex()} is not image {where} ({found[1]} is "
            f"{found[0].hex()})",
        )
    else:
        hashed = Check(
            "os_image_hash", PASSED, f"os_image_hash {found[0].hex()} is image {where} ({found[1]})"
        )
    return measured, hashed, details.warnings


def _lite_measurements(
    quote: TdxQuote,
    vm: VmConfig,
    events: tuple[Event, ...] | None,
    document: MeasurementDocument | None,
) -> tuple[Check, Check]:
    from .lite import lite_acpi_digests_from_log, measure_from_document
    from .measurement_doc import verify_material

    if document is not None:
        doc = document
        hashed = Check(
            "os_image_hash",
            NOT_CHECKED,
            "the measurement document was given directly, not bound to an os_image_hash",
        )
    elif vm.tdx_measurement is None:
        return (
            Check(
                "measurements",
                FAILED,
                "the VmConfig says lite attestation but carries no tdx_measurement",
            ),
            Check("os_image_hash", NOT_CHECKED, "no measurement document to bind it to"),
        )
    else:
        try:
            doc = verify_material(vm.tdx_measurement, vm.os_image_hash)
        except MeasurementDocumentError as exc:
            return (
                Check("measurements", NOT_CHECKED, "the measurement document is not trusted"),
                Check("os_image_hash", FAILED, str(exc)),
            )
        hashed = Check(
            "os_image_hash",
            PASSED,
            f"os_image_hash {vm.os_image_hash.hex()} binds sha256sum.txt and measurement.tdx.cbor",
        )
    if events is None:
        return (
            Check("measurements", NOT_CHECKED, "lite needs the event log's ACPI digests"),
            hashed,
        )
    try:
        acpi = lite_acpi_digests_from_log(events)
        expected = measure_from_document(doc, vm, acpi).measurements
    except ConfigError as exc:
        return Check("measurements", NOT_CHECKED, str(exc)), hashed
    except (EvidenceError, MeasurementDocumentError) as exc:
        return Check("measurements", FAILED, str(exc)), hashed
    differ = _differing_registers(expected, quote)
    if differ:
        failed = "the measurements do not match the document this os_image_hash names"
        return (
            Check(
                "measurements",
                FAILED,
                f"{', '.join(differ)} differ from the measurement document with this VmConfig "
                "(run 'dstack-mr diagnose' for the event-by-event comparison)",
            ),
            Check("os_image_hash", FAILED, failed) if hashed.status == PASSED else hashed,
        )
    return (
        Check(
            "measurements",
            PASSED,
            "MRTD and RTMR0-2 equal the measurement document's with this VmConfig (lite: the "
            "three ACPI digests are taken from the event log, the tables are not verified)",
        ),
        hashed,
    )


def _report_data(quote: TdxQuote, expected: bytes | None, stated: bytes | None) -> Check:
    if expected is None and stated is not None:
        # dstack's attestation states its report_data beside the quote; they must agree.
        if quote.report_data != stated:
            return Check(
                "report_data",
                FAILED,
                f"the quote's report_data {quote.report_data.hex()} is not the attestation's "
                f"{stated.hex()}",
            )
        return Check(
            "report_data",
            PASSED,
            "the quote's report_data is the attestation's (no expected value given)",
        )
    if expected is None:
        return Check("report_data", NOT_CHECKED, "no expected report_data given")
    if len(expected) > 64:
        raise EvidenceError(f"expected report_data is {len(expected)} bytes; at most 64")
    # dstack pads shorter user data with zeros to the 64 bytes the quote carries.
    want = expected.ljust(64, b"\0")
    if quote.report_data != want:
        return Check(
            "report_data",
            FAILED,
            f"the quote's report_data {quote.report_data.hex()} is not the expected {want.hex()}",
        )
    return Check("report_data", PASSED, "report_data is the expected value")


def _quote_checks(verdict: QuoteVerdict | None, quote: TdxQuote) -> tuple[Check, Check]:
    if verdict is None:
        return (
            Check(
                "quote",
                NOT_CHECKED,
                "signature not checked: no collateral given; collateral for this quote's "
                f"platform (FMSPC {quote_fmspc(quote) or 'unknown'}) is needed, without it the "
                "quote may be forged",
            ),
            Check("tcb", NOT_CHECKED, "TCB status unknown without collateral"),
        )
    if not verdict.verified:
        return (
            Check("quote", FAILED, verdict.message),
            Check("tcb", NOT_CHECKED, "TCB status unknown: the quote did not verify"),
        )
    advisories = f"; advisories: {', '.join(verdict.advisory_ids)}" if verdict.advisory_ids else ""
    tcb = Check(
        "tcb",
        PASSED if verdict.accepted else FAILED,
        f"TCB status {verdict.status} is "
        + ("accepted" if verdict.accepted else "not accepted")
        + f" (accepted: {', '.join(verdict.policy.names())}){advisories}",
    )
    ted = verdict.tcb_evaluation_data_number
    return (
        Check(
            "quote",
            PASSED,
            f"signature chain to Intel's root verified with collateral for FMSPC {verdict.fmspc}"
            + (f" (TCB evaluation data {ted})" if ted is not None else ""),
        ),
        tcb,
    )


def _app_info(
    quote: TdxQuote, evidence: Evidence, log: Check, vm: VmConfig | None
) -> tuple[AppInfo | None, Check]:
    if log.status != PASSED or evidence.events is None:
        return None, Check("app_info", NOT_CHECKED, "needs a verified RTMR3 event log")
    info = app_info(quote, evidence.events, vm.os_image_hash if vm is not None else b"")
    name = info.key_provider.name if info.key_provider else "none"
    return info, Check(
        "app_info",
        PASSED,
        f"app_id {info.app_id.hex() or '(none)'}, compose_hash "
        f"{info.compose_hash.hex() or '(none)'}, key provider {name}",
    )


def verify(
    evidence: Evidence | Attestation | TdxQuote,
    collateral: Collateral | None = None,
    *,
    at: dt.datetime | int | float | None = None,
    policy: TcbPolicy | None = None,
    image: Image | None = None,
    vm_config: VmConfig | None = None,
    acpi: AcpiSource | None = None,
    document: MeasurementDocument | None = None,
    report_data: bytes | None = None,
) -> VerificationResult:
    """Verify a dstack VM's evidence. See the module docstring for the steps.

    ``at`` is the verification time (default now). The measurements are checked against
    ``image`` (legacy, with the evidence's or the given ``vm_config``), else against
    ``document`` (a trusted ``measurement.tdx.cbor``; lite), else — when the VmConfig says
    lite — against the document in its ``tdx_measurement``; a legacy VmConfig without an
    image is not checked (its document is not used, as in dstack's verifier).
    ``report_data`` is the value the quote must carry (shorter values are zero-padded to 64
    bytes, as dstack pads them).
    Raises :class:`~dstack_mr.errors.DstackMrError` subclasses only for unusable input.
    """
    ev = _as_evidence(evidence)
    # dstack's SCALE attestation (the only shape that states report_data) strips the boot log.
    stated = evidence.report_data if isinstance(evidence, Attestation) else None
    quote = ev.quote
    if quote is None:
        raise EvidenceError("verify needs a quote: the evidence carries none")
    when = to_utc(at)
    policy = policy or TcbPolicy()
    verdict = verify_quote(quote, collateral, when, policy) if collateral is not None else None
    vm = vm_config or ev.vm_config

    quote_check, tcb_check = _quote_checks(verdict, quote)
    checks = [
        quote_check,
        tcb_check,
        _td_attributes(quote),
        _report_data(quote, report_data, stated),
    ]
    log = _event_log(quote, ev.events, stripped=stated is not None)
    checks.append(log)
    acpi_verified = False
    warnings = list(ev.warnings)
    if vm is None:
        what = "no image given (--image-dir)" if image is None else "no VmConfig"
        checks.append(Check("measurements", NOT_CHECKED, f"{what}; the evidence has no VmConfig"))
        checks.append(Check("os_image_hash", NOT_CHECKED, "no VmConfig"))
    elif image is not None:
        measured, hashed, measure_warnings = _legacy_measurements(quote, vm, image, acpi)
        checks += [measured, hashed]
        warnings += measure_warnings
        acpi_verified = measured.status == PASSED
    elif document is not None or vm.tdx_attestation_variant is TdxAttestationVariant.LITE:
        checks += _lite_measurements(quote, vm, ev.events, document)
    else:
        note = (
            " (its tdx_measurement is not used for a legacy boot: that would skip the ACPI tables)"
            if vm.tdx_measurement is not None
            else ""
        )
        checks.append(
            Check("measurements", NOT_CHECKED, f"legacy attestation: no image given{note}")
        )
        checks.append(Check("os_image_hash", NOT_CHECKED, "no image given"))
    info, info_check = _app_info(quote, ev, log, vm)
    checks.append(info_check)

    failed = [c for c in checks if c.status == FAILED]
    if failed:
        reason: str | None = failed[0].message
    elif quote_check.status != PASSED:
        reason = quote_check.message
    else:
        reason = None
    by_name = {c.name: c for c in checks}
    details = VerificationDetails(
        quote_verified=quote_check.status == PASSED,
        event_log_verified=log.status == PASSED,
        os_image_hash_verified=by_name["os_image_hash"].status == PASSED,
        acpi_tables_verified=acpi_verified,
        tcb_status=verdict.status if verdict else None,
        tcb_accepted=bool(verdict and verdict.accepted),
        advisory_ids=verdict.advisory_ids if verdict else (),
        report_data=quote.report_data,
        app_info=info,
        key_provider=info.key_provider if info else None,
        verified_at=when,
        collateral_window=verdict.window if verdict else None,
        fmspc=verdict.fmspc if verdict and verdict.fmspc else quote_fmspc(quote),
        accepted_tcb=tuple(policy.names()),
        checks=tuple(checks),
        warnings=tuple(warnings),
    )
    return VerificationResult(reason is None, reason, details)
