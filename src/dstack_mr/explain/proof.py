"""The proof rules shared by every explanation: what a log-event proof and a register proof hold."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from ..digest import replay
from .context import ExplainContext
from .finding import Finding


def log_caveat(ctx: ExplainContext, rtmr: int, finding: Finding) -> Finding:
    """A proof against a log event holds for the register only if the log replays."""
    check = ctx.replay.get(rtmr)
    if check is None or check.matches or not finding.proven:
        return finding
    return attrs.evolve(
        finding,
        status="hypothesis",
        message=finding.message + f" (the log does not replay to the {check.reference_source}"
        " value, so its events are not verified)",
    )


def register_proof(rtmr: int, changed: str, finding: Finding, unchanged: Iterable[str]) -> Finding:
    """``finding`` reproduced the whole register: every other event of it is proven equal."""
    rest = [label for label in unchanged if label != changed]
    n = len(rest)
    return attrs.evolve(
        finding,
        message=f"{finding.message}: RTMR{rtmr} recomputed with it reproduces the actual "
        f"value, which proves its other {n} events equal the expected ones",
        proves_equal=tuple(rest),
    )


def replays_to(ctx: ExplainContext, rtmr: int, label: str) -> Callable[[bytes], bool]:
    """Whether RTMR``rtmr`` replayed with the ``label`` event's digest swapped for a candidate
    equals the register's actual value (never, without one)."""
    digests = ctx.expected.rtmr_logs[rtmr].digests
    at = [e.label for e in ctx.expected.rtmr_logs[rtmr].events].index(label)
    actual = ctx.registers[f"rtmr{rtmr}"].actual

    def reproduces(digest: bytes) -> bool:
        return replay([*digests[:at], digest, *digests[at + 1 :]]) == actual

    return reproduces
