"""The one-input searches' candidates (reproduce.py), independent of a diagnosis."""

from __future__ import annotations

from dstack_mr.errors import ConfigError
from dstack_mr.reproduce import (
    MEMORY_LIMIT,
    MEMORY_STEP,
    cmdline_variants,
    first_reproducing,
    kernel_memory_candidates,
    memory_candidates,
)

GIB = 1 << 30


def test_memory_candidates_claimed_first_configured_never() -> None:
    sizes = memory_candidates(2 * GIB, claimed=3 * GIB)
    assert sizes[0] == ("3G", 3 * GIB)
    values = [s for _, s in sizes]
    assert 2 * GIB not in values and len(values) == len(set(values))
    # Every 256 MiB step up to and including the limit, less the configured size.
    assert values[1:3] == [MEMORY_STEP, 2 * MEMORY_STEP] and values[-1] == MEMORY_LIMIT
    assert len(values) == MEMORY_LIMIT // MEMORY_STEP - 1
    assert memory_candidates(2 * GIB, claimed=0)[0] == ("256M", MEMORY_STEP)


def test_kernel_memory_candidates_stop_below_the_initrd_threshold() -> None:
    out = kernel_memory_candidates(memory_candidates(2 * GIB))
    assert out[-1] == ("3G", 3 * GIB)
    assert all(size < 0xB000_0000 for _, size in out[:-1])
    assert ("2816M", 2816 << 20) not in out  # 2.75 GiB: QEMU's threshold itself


def test_first_reproducing_skips_refused_values() -> None:
    def digest(value: int) -> bytes:
        if value == 2:
            raise ConfigError("refused")
        return bytes([value])

    cands = [("one", 1), ("two", 2), ("three", 3)]
    assert first_reproducing(cands, digest, lambda d: d in (b"\x02", b"\x03")) == ("three", 3)
    assert first_reproducing(cands, digest, lambda d: False) is None


def test_cmdline_variants_are_distinct_spellings() -> None:
    variants = cmdline_variants("console=ttyS0 ")
    assert len({text for _, text in variants}) == len(variants) == 7
    assert ("cmdline.rstrip()", "console=ttyS0") in variants
