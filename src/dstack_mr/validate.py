"""One vocabulary of value checks (u32, u64, bool, str, hex, choices) for every input.

Each check returns what is wrong with a value, or None. :func:`attrs_validator` turns one
into an attrs validator raising ConfigError; :func:`cattrs_hook` into a cattrs structure hook
raising ValueError (which the JSON loaders turn into their own error with the field's path);
:func:`require` raises a parser's own error type (the JSON event log's fields).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._binary import from_hex
from .errors import ConfigError, DstackMrError
from .registry import U32_MAX, U64_MAX

#: A check: the problem with a value ("must be ..."), or None when it is fine.
Check = Callable[[object], "str | None"]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def int_range(low: int, high: int, kind: str = "") -> Check:
    """An integer in low..=high (bool, which Python counts as an int, is not one: JSON
    ``true`` must not pass as 1); ``kind`` names the type in the message (``u32``)."""
    named = f" ({kind})" if kind else ""

    def check(value: object) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        return f"must be an integer in {low}..={high}{named}, got {_shown(value)}"

    return check


def integer(limit: int, rust: str) -> Check:
    """An integer in 0..=limit, named after its Rust type."""
    return int_range(0, limit, rust)


u32 = integer(U32_MAX, "u32")
u64 = integer(U64_MAX, "u64")


def boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {_shown(value)}"


def string(value: object) -> str | None:
    return None if isinstance(value, str) else f"must be a string, got {type(value).__name__}"


def hex_string(value: object) -> str | None:
    """Plain even-length hex (serde's hex: no 0x, no spaces)."""
    if isinstance(value, str) and from_hex(value) is not None:
        return None
    return f"must be an even-length hex string (no 0x, no spaces), got {_shown(value)}"


def one_of(choices: tuple[str, ...]) -> Check:
    """One of ``choices`` exactly (no case folding, no stripping)."""
    allowed = ", ".join(repr(c) for c in choices)

    def check(value: object) -> str | None:
        return None if value in choices else f"must be one of {allowed}, got {_shown(value)}"

    return check


def optional(check: Check) -> Check:
    """``check``, or None."""
    return lambda value: None if value is None else check(value)


def require(check: Check, value: object, name: str, error: type[DstackMrError]) -> None:
    """Raise ``error("<name> <problem>")`` when ``check`` finds a problem with ``value``."""
    problem = check(value)
    if problem is not None:
        raise error(f"{name} {problem}")


def attrs_validator(check: Check, name: str, error: type[DstackMrError] = ConfigError) -> Any:
    """An attrs validator: ``error("<name> <problem>")`` (ConfigError unless a module's
    values have their own error type, as SNP's have SnpError)."""

    def validate(_inst: object, _attr: object, value: object) -> None:
        require(check, value, name, error)

    return validate


def cattrs_hook(check: Check, convert: Callable[[Any], Any] = lambda v: v) -> Any:
    """A cattrs structure hook: ValueError(problem), else ``convert(value)``."""

    def hook(value: Any, _type: Any) -> Any:
        problem = check(value)
        if problem is not None:
            raise ValueError(problem)
        return convert(value)

    return hook
