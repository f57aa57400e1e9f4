#!/usr/bin/env python3
"""Coverage-guided fuzzing of every byte-level parser in dstack_mr, with atheris (libFuzzer).

    pip install atheris
    python fuzz/atheris_harness.py -atheris_runs=100000        # seeds from ../shared
    python fuzz/atheris_harness.py -max_total_time=60 CORPUS_DIR

The first input byte selects the target (``byte % len(TARGETS)``; for the kernel, ``byte //
len(TARGETS)`` also picks the initrd/memory sizes); the rest is the target's input. Any
exception that is not a ``dstack_mr.DstackMrError`` is a crash, and so is a hang (use
libFuzzer's ``-timeout=``). With no corpus directory on the command line a seed corpus is
generated from ../shared into $TMPDIR/dstack-mr-corpus (see ``make_corpus.py``).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from dstack_mr import DstackMrError, VmConfig, acpi, kernel, tdvf

    try:  # written concurrently; fuzz them when present
        from dstack_mr import quote as _quote
    except ImportError:
        _quote = None  # type: ignore[assignment]
    try:
        from dstack_mr import eventlog as _eventlog
    except ImportError:
        _eventlog = None  # type: ignore[assignment]

#: (initrd size, guest memory) pairs for the kernel target, hostile ones included.
KERNEL_SIZES = ((1234567, 2 << 30), (0, 0xB000_0000), (0x37FF_FFFF, 1 << 20), (3, (1 << 64) - 1))


def fuzz_tdvf(data: bytes, _variant: int) -> None:
    parsed = tdvf.parse(data)
    parsed.mrtd(True)
    parsed.mrtd(False)
    parsed.td_hob(2 << 30)
    parsed.td_hob(0xB000_0000)


def fuzz_kernel(data: bytes, variant: int) -> None:
    initrd_size, memory = KERNEL_SIZES[variant % len(KERNEL_SIZES)]
    kernel.patched_kernel_digest(data, initrd_size, memory)


def fuzz_acpi(data: bytes, _variant: int) -> None:
    acpi.build_tables(data)


def fuzz_quote(data: bytes, _variant: int) -> None:
    if _quote is not None:
        _quote.parse_quote(data)


def fuzz_ccel(data: bytes, _variant: int) -> None:
    if _eventlog is not None:
        _eventlog.parse_ccel(data)


def fuzz_json_event_log(data: bytes, _variant: int) -> None:
    if _eventlog is not None:
        _eventlog.parse_json_event_log(data)


def fuzz_vmconfig(data: bytes, _variant: int) -> None:
    VmConfig.from_json(data)


TARGETS: tuple[Callable[[bytes, int], None], ...] = (
    fuzz_tdvf,
    fuzz_kernel,
    fuzz_acpi,
    fuzz_quote,
    fuzz_ccel,
    fuzz_json_event_log,
    fuzz_vmconfig,
)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    selector, payload = data[0], data[1:]
    # DstackMrError is the documented way to reject bad input; anything else is a crash.
    with contextlib.suppress(DstackMrError):
        TARGETS[selector % len(TARGETS)](payload, selector // len(TARGETS))


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import make_corpus

        # Reused across runs, so what one run finds seeds the next.
        corpus = make_corpus.build(Path(tempfile.gettempdir()) / "dstack-mr-corpus")
        print(f"seed corpus: {corpus}", file=sys.stderr)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
