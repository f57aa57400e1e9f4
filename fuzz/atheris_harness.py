#!/usr/bin/env python3
"""Coverage-guided fuzzing of every byte-level parser in dstack_mr, with atheris (libFuzzer).

    pip install atheris
    python fuzz/atheris_harness.py -atheris_runs=100000        # seeds from ../shared
    python fuzz/atheris_harness.py -max_total_time=60 CORPUS_DIR

The first input byte selects the target (``byte % len(TARGETS)``; for the kernel, ``byte //
len(TARGETS)`` also picks the initrd/memory sizes); the rest is the target's input. The
targets and the property each checks on what it accepts are in ``targets.py``. Any exception
that is not a ``dstack_mr.DstackMrError`` is a crash -- a failed property is an
AssertionError -- and so is a hang (use libFuzzer's ``-timeout=``). With no corpus
directory on the command line a seed corpus is generated from ../shared into
$TMPDIR/dstack-mr-corpus (see ``make_corpus.py``).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
# No fallback: a target module that fails to import must stop the fuzzer, not fuzz nothing.
with atheris.instrument_imports():
    from targets import TARGETS

    from dstack_mr import DstackMrError


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
        import make_corpus

        # Reused across runs, so what one run finds seeds the next.
        corpus = make_corpus.build(Path(tempfile.gettempdir()) / "dstack-mr-corpus")
        print(f"seed corpus: {corpus}", file=sys.stderr)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
