"""A TDX quote's signature and TCB status, checked offline with dcap-qvl, and the TCB policy.

dcap-qvl (Phala's Rust DCAP verifier, ``pip install 'dstack-mr[verify]'``) checks the quote's
ECDSA signature, the QE report and its signature by the PCK key, the PCK chain up to Intel's
root, the collateral's signatures, CRLs and dates, and matches the platform against the TCB
info. It reports degraded platforms (OutOfDate, ...) as *success* with a status string; the
decision whether such a status is acceptable is made here, by :class:`TcbPolicy`, which
accepts only UpToDate unless told otherwise (fail closed, like dstack's KMS).

Before dcap-qvl runs, three things it would not say clearly are checked here: that a PCK
chain shipped with the collateral is the quote's own (dcap-qvl would prefer the collateral's,
letting a quote pass on another machine's chain), that the collateral is for the quote's
platform (FMSPC), and that the verification time is inside the collateral's validity window.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

import attrs

from .collateral import Collateral, ValidityWindow, parse_collateral, pem_certificates
from .errors import CollateralError, ConfigError, MissingExtraError, QuoteError
from .quote import TdxQuote, parse_quote_signature

__all__ = [
    "TCB_STATUSES",
    "QuoteVerdict",
    "TcbPolicy",
    "fetch_collateral",
    "normalize_tcb_status",
    "quote_fmspc",
    "to_utc",
    "verify_quote",
]

#: Intel's TCB status names (TCB info v3), best first.
TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
_BY_KEY = {s.lower(): s for s in TCB_STATUSES}
# Spellings seen in other verifiers' outputs (Intel QVL's enum names, dcap-qvl's docs).
_BY_KEY.update(
    {
        "ok": "UpToDate",
        "tcblevelok": "UpToDate",
        "swhardening": "SWHardeningNeeded",
        "configurationandswhardening": "ConfigurationAndSWHardeningNeeded",
        "outofdateconfiguration": "OutOfDateConfigurationNeeded",
        "tcboutofdate": "OutOfDate",
        "tcbrevoked": "Revoked",
        "tcbconfigurationneeded": "ConfigurationNeeded",
        "tcbswhardeningneeded": "SWHardeningNeeded",
    }
)


def normalize_tcb_status(status: str) -> str | None:
    """Intel's name for a TCB status however it is spelled (``OUT_OF_DATE``, ``out-of-date``,
    ``OutOfDate``), or None when it is not one."""
    key = re.sub(r"[^a-z]", "", status.lower())
    for prefix in ("sgxqlqvresult", "sgxqlqv", "status"):
        key = key.removeprefix(prefix)
    return _BY_KEY.get(key)


@attrs.frozen
class TcbPolicy:
    """Which TCB statuses are acceptable. Default: UpToDate only.

    Revoked can never be accepted.
    """

    accepted: frozenset[str] = frozenset({"UpToDate"})

    @classmethod
    def from_names(cls, names: str | Iterable[str]) -> TcbPolicy:
        """From a comma-separated list or an iterable of status names (any spelling)."""
        items = names.split(",") if isinstance(names, str) else list(names)
        out = set()
        for raw in items:
            name = raw.strip()
            if not name:
                continue
            status = normalize_tcb_status(name)
            if status is None:
                raise ConfigError(
                    f"unknown TCB status {name!r}; known: {', '.join(TCB_STATUSES[:-1])}"
                )
            if status == "Revoked":
                raise ConfigError("a Revoked TCB cannot be accepted")
            out.add(status)
        if not out:
            raise ConfigError("the accepted TCB status list is empty")
        return cls(frozenset(out))

    def accepts(self, status: str | None) -> bool:
        return status is not None and status in self.accepted

    def names(self) -> list[str]:
        return [s for s in TCB_STATUSES if s in self.accepted]


def to_utc(at: dt.datetime | int | float | None) -> dt.datetime:
    """A verification time as an aware UTC datetime: ``None`` is now, numbers are Unix
    seconds, a naive datetime is taken as UTC."""
    if at is None:
        return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    if isinstance(at, (int, float)) and not isinstance(at, bool):
        return dt.datetime.fromtimestamp(at, dt.timezone.utc)
    if not isinstance(at, dt.datetime):
        raise ConfigError(f"verification time: expected a datetime, got {type(at).__name__}")
    return (
        at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at.astimezone(dt.timezone.utc)
    )


@attrs.frozen
class QuoteVerdict:
    """What the quote's signature check and TCB evaluation found.

    ``verified`` means the signature chain and collateral checked out (whatever the TCB
    status); ``accepted`` additionally means the status is in the policy.
    """

    verified: bool
    at: dt.datetime
    status: str | None = None
    raw_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    accepted: bool = False
    policy: TcbPolicy = TcbPolicy()
    fmspc: str | None = None
    collateral_fmspc: str | None = None
    tcb_evaluation_data_number: int | None = None
    window: ValidityWindow | None = None
    error: str | None = None

    @property
    def message(self) -> str:
        if not self.verified:
            return f"quote verification failed: {self.error}"
        advisories = f" (advisories: {', '.join(self.advisory_ids)})" if self.advisory_ids else ""
        if not self.accepted:
            return (
                f"TCB status {self.status} is not accepted (accepted: "
                f"{', '.join(self.policy.names())}){advisories}"
            )
        return f"quote signature verified; TCB status {self.status}{advisories}"


def _dcap_qvl() -> Any:
    try:
        import dcap_qvl
    except ImportError:
        raise MissingExtraError(
            "quote verification needs dcap-qvl: pip install 'dstack-mr[verify]'"
        ) from None
    return dcap_qvl


def quote_fmspc(quote: TdxQuote) -> str | None:
    """The platform (FMSPC, upper-case hex) named by the quote's PCK certificate, or None
    when dcap-qvl is not installed or the certificate cannot be read."""
    try:
        qvl = _dcap_qvl()
    except MissingExtraError:
        return None
    try:
        return str(qvl.parse_quote(quote.raw[: quote.signed_length]).fmspc()).upper()
    except ValueError:
        return None


def _chain_problem(quote: TdxQuote, collateral: Collateral) -> str | None:
    try:
        sig = parse_quote_signature(quote)
    except QuoteError as exc:
        return f"cannot read the quote's certification data: {exc}"
    if sig.pck_chain is None:
        return (
            f"the quote carries no PCK certificate chain (certification data type "
            f"{sig.cert_type}); only quotes with an embedded chain (type 6 with 5) are supported"
        )
    if collateral.pck_certificate_chain is None:
        return None
    try:
        ours = pem_certificates(sig.pck_chain, "the quote's PCK chain")
    except CollateralError as exc:
        return str(exc)
    theirs = pem_certificates(collateral.pck_certificate_chain, "collateral pck_certificate_chain")
    if ours != theirs:
        which = "leaf certificates differ" if ours[0] != theirs[0] else "issuers differ"
        return (
            f"the collateral's pck_certificate_chain is not the quote's own PCK chain "
            f"({which}); a verifier using it would judge another machine's certificate. Remove "
            "the field or supply the quote's chain"
        )
    return None


def verify_quote(
    quote: TdxQuote,
    collateral: Collateral,
    at: dt.datetime | int | float | None = None,
    policy: TcbPolicy | None = None,
) -> QuoteVerdict:
    """Check ``quote``'s signature and TCB status against ``collateral`` at time ``at``.

    Never raises for an invalid quote or collateral content: the verdict says what failed.
    Raises :class:`MissingExtraError` when dcap-qvl is not installed and
    :class:`CollateralError` when the collateral's dated fields cannot be read.
    """
    qvl = _dcap_qvl()
    when = to_utc(at)
    policy = policy or TcbPolicy()
    window = collateral.validity()
    failed = QuoteVerdict(
        False,
        when,
        policy=policy,
        window=window,
        collateral_fmspc=collateral.fmspc,
        tcb_evaluation_data_number=collateral.tcb_evaluation_data_number,
    )
    raw = quote.raw[: quote.signed_length]
    problem = _chain_problem(quote, collateral)
    if problem is not None:
        return attrs.evolve(failed, error=problem)
    try:
        fmspc = str(qvl.parse_quote(raw).fmspc()).upper()
    except ValueError as exc:
        return attrs.evolve(failed, error=f"cannot read the platform (FMSPC) from the quote: {exc}")
    if collateral.fmspc is not None and collateral.fmspc != fmspc:
        return attrs.evolve(
            failed,
            fmspc=fmspc,
            error=f"the collateral is for FMSPC {collateral.fmspc}, the quote's platform is "
            f"FMSPC {fmspc}: collateral for FMSPC {fmspc} is not available here",
        )
    if not window.contains(when):
        limit = window.limiting(when)
        iso = when.isoformat().replace("+00:00", "Z")
        if when > window.not_after:
            what = f"expired at {window.not_after.isoformat().replace('+00:00', 'Z')}"
        else:
            what = f"is not valid before {window.not_before.isoformat().replace('+00:00', 'Z')}"
        return attrs.evolve(
            failed,
            fmspc=fmspc,
            error=f"the collateral {what} ({limit.name if limit else 'window'}); verification "
            f"time {iso}. Fetch current collateral or verify at a time inside its window",
        )
    dcap_collateral = qvl.QuoteCollateralV3(
        collateral.pck_crl_issuer_chain,
        collateral.root_ca_crl,
        collateral.pck_crl,
        collateral.tcb_info_issuer_chain,
        collateral.tcb_info,
        collateral.tcb_info_signature,
        collateral.qe_identity_issuer_chain,
        collateral.qe_identity,
        collateral.qe_identity_signature,
    )
    try:
        report = qvl.verify(raw, dcap_collateral, int(when.timestamp()))
    except ValueError as exc:
        # dcap-qvl's errors are anyhow chains over several lines ("...\n\nCaused by:\n  X").
        lines = (line.strip() for line in str(exc).splitlines())
        text = "; ".join(line for line in lines if line and line != "Caused by:")
        return attrs.evolve(failed, fmspc=fmspc, error=f"dcap-qvl: {text}")
    raw_status = str(report.status)
    status = normalize_tcb_status(raw_status) or raw_status
    return attrs.evolve(
        failed,
        verified=True,
        status=status,
        raw_status=raw_status,
        advisory_ids=tuple(str(a) for a in report.advisory_ids),
        accepted=policy.accepts(status),
        fmspc=fmspc,
    )


def fetch_collateral(pccs_url: str, quote: TdxQuote, timeout: float = 30.0) -> Collateral:
    """Fetch the quote's collateral from a PCCS (or Intel PCS) at ``pccs_url`` with
    dcap-qvl's client. Never called implicitly: verification is offline unless asked.

    Raises :class:`CollateralError` when the service cannot be reached or answers badly.
    """
    import asyncio

    qvl = _dcap_qvl()
    if not pccs_url.startswith(("http://", "https://")):
        raise CollateralError(f"PCCS URL {pccs_url!r}: expected an http:// or https:// URL")
    raw = quote.raw[: quote.signed_length]

    async def fetch() -> Any:
        return await asyncio.wait_for(qvl.get_collateral(pccs_url, raw), timeout)

    try:
        fetched = asyncio.run(fetch())
    except (ValueError, RuntimeError, OSError, asyncio.TimeoutError) as exc:
        detail = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc)
        raise CollateralError(f"cannot fetch collateral from {pccs_url}: {detail}") from None
    collateral = parse_collateral(fetched)
    return attrs.evolve(collateral, source=f"PCCS {pccs_url}")
