#!/usr/bin/env python3
"""Mutation testing of the core modules with mutmut, one module at a time (docs/testing.md).

    python bench/mutation.py run tdvf kernel      # mutate and test these modules
    python bench/mutation.py run --sample 100 acpi  # a deterministic sample of ~100 mutants
    python bench/mutation.py recheck [MODULE...]  # test the not-killed mutants again
    python bench/mutation.py report               # score per module from mutmut's cache

``nox -s mutation -- MODULE...`` does both. mutmut's configuration is ``[tool.mutmut]`` in
pyproject.toml; results accumulate in ``mutants/`` (git-ignored), so modules can be run one
at a time, when CPU is free. Each mutant runs only the tests that reach its function.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

#: The measured core, as mutmut names its mutants (``package.module.x_function__mutmut_N``;
#: methods are ``xǁClassǁmethod``). Where only part of a module is in scope, its functions
#: are listed: the ACPI argv and loader (not the subprocess runner), the event-log parsers and
#: replay (not the human-readable payload descriptions), diagnose's comparison, verdict and
#: memory search (not the wording of its findings).
MODULES: dict[str, tuple[str, ...]] = {
    "tdvf": ("dstack_mr.tdvf.*",),
    "kernel": ("dstack_mr.kernel.*",),
    "uefi": ("dstack_mr.uefi.*", "dstack_mr.events.*"),
    "acpi": tuple(
        f"dstack_mr.acpi.{f}__mutmut_*"
        for f in (
            "x_dumper_invocation",
            "x__passthrough_port",
            "x_find_tables",
            "x_find_table",
            "x__name",
            "x__allocate",
            "x__add_pointer",
            "x__add_checksum",
            "x_build_tables",
            "xǁAcpiTablesFileǁacpi_tables",
            "xǁCachedAcpiSourceǁ__init__",
            "xǁCachedAcpiSourceǁacpi_tables",
        )
    ),
    # short_hex is a display helper; parse_quote_signature belongs to `verify` (its tests).
    "digest": tuple(
        f"dstack_mr.digest.{f}__mutmut_*" for f in ("x_sha384", "x_extend", "x_replay", "x_utf16le")
    ),
    "quote": tuple(
        f"dstack_mr.quote.{f}__mutmut_*"
        for f in ("x__decode_hex", "x__looks_like_hex_text", "x__to_bytes", "x_parse_quote")
    ),
    # The event-log group keeps its name across the split of eventlog.py into eventlog
    # (JSON log, replay), ccel (binary log) and attestation (response shapes).
    "eventlog": tuple(
        f"dstack_mr.{f}__mutmut_*"
        for f in (
            "eventlog.x_runtime_event_digest",
            "eventlog.x_replay_imr",
            "eventlog.x_replay_all",
            "eventlog.x__hex_field",
            "eventlog.x__json_event",
            "eventlog.x_parse_json_event_log",
            "ccel.x__spec_id_algorithms",
            "ccel.x__is_end",
            "ccel.x_parse_ccel",
            "attestation.x__obj_from_json",
            "attestation.x__registers",
            "attestation.x__quote_field",
            "attestation.x__event_log_field",
            "attestation.x_parse_attestation",
        )
    ),
    "diagnose": tuple(
        f"dstack_mr.diagnose.{f}__mutmut_*"
        for f in (
            "x_diagnose",
            "x_replay_checks",
            "x__check",
            "x__align",
            "xǁ_Explainerǁ_event",
            "xǁ_Explainerǁ_differs",
            "xǁ_Explainerǁ_reproduces",
            "xǁ_Explainerǁ_search",
            "xǁ_Explainerǁ_memory_candidates",
            "xǁ_Explainerǁ_td_hob",
            "xǁ_Explainerǁ_by_memory",
        )
    )
    # The memory-size search moved to explain.py after the measured run (docs/testing.md),
    # its candidates and first-reproducing loop from there to reproduce.py, and the rest to
    # explain/memory.py when explain.py was split by concept (issue 11).
    + tuple(
        f"dstack_mr.explain.*{f}__mutmut_*"
        for f in ("_memory_candidates", "_search", "_reproduces", "_differs", "_td_hob")
    )
    + ("dstack_mr.explain.memory.*", "dstack_mr.reproduce.*")
    # Evidence and its part checks moved from diagnose.py to evidence.py.
    + tuple(
        f"dstack_mr.evidence.{f}__mutmut_*"
        for f in (
            "x_parse_register_hex",
            "xǁEvidenceǁactual",
            "xǁEvidenceǁmerge",
            "xǁEvidenceǁfrom_attestation",
        )
    ),
    "cli": (
        "dstack_mr_cli.main.*",
        "dstack_mr_cli.diagnose_cmd.*",
        "dstack_mr_cli.base.x_parse_bool*",
        # What the CLI assembled itself until issue 11 moved it into the library.
        "dstack_mr.evidence_files.*",
        "dstack_mr.diagnose_files.*",
    ),
}

KILLED = {"killed", "caught by type check"}
#: What recheck and survivors leave alone: mutants already killed, and those never run.
SETTLED = ("killed", "not checked")
_LINE = re.compile(r"^\s*(\S+): (.+)$")


def module_of(name: str) -> str | None:
    from fnmatch import fnmatchcase

    for module, patterns in MODULES.items():
        if any(fnmatchcase(name, p) for p in patterns):
            return module
    return None


def results() -> dict[str, str]:
    """Every generated mutant's name and status, from mutmut's cache."""
    out = subprocess.run(
        ["mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    return {m[1]: m[2] for m in map(_LINE.match, out.splitlines()) if m is not None}


def report() -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {m: Counter() for m in MODULES}
    for name, status in results().items():
        module = module_of(name)
        if module is not None:
            counts[module][status] += 1
    return counts


def _number(name: str) -> tuple[str, int]:
    head, _, n = name.rpartition("__mutmut_")
    return head, int(n)


def sample(module: str, size: int) -> list[str]:
    """Every k-th mutant of ``module`` (in source order), about ``size`` of them: a
    deterministic sample, so a rerun tests the same mutants."""
    names = sorted((n for n in results() if module_of(n) == module), key=_number)
    step = max(1, -(-len(names) // size))
    return names[::step]


def print_report(counts: dict[str, Counter[str]]) -> None:
    print(f"{'module':<10} {'mutants':>7} {'killed':>7} {'survived':>8} {'other':>6}  score")
    for module, c in counts.items():
        total = sum(c.values())
        killed = sum(c[s] for s in KILLED)
        checked = total - c["not checked"]
        other = checked - killed - c["survived"]
        score = f"{100 * killed / checked:.1f} %" if checked else "-"
        print(f"{module:<10} {total:>7} {killed:>7} {c['survived']:>8} {other:>6}  {score}")


def main(argv: list[str]) -> int:
    if argv and argv[0] == "recheck":
        # Test again every mutant that was not killed (after adding tests).
        again = [n for n, s in results().items() if s not in SETTLED
                 and module_of(n) in (argv[1:] or MODULES)]  # fmt: skip
        children = os.environ.get("MUTMUT_CHILDREN", "1")
        if again:
            subprocess.run(["mutmut", "run", "--max-children", children, *again], check=False)
        argv = ["report"]
    if argv and argv[0] == "survivors":
        # Each mutant that was not killed, with its one-line change (for docs/testing.md).
        for name, status in sorted(results().items(), key=lambda kv: _number(kv[0])):
            if status in SETTLED or module_of(name) is None:
                continue
            diff = subprocess.run(["mutmut", "show", name], capture_output=True, text=True)
            change = [ln[1:].strip() for ln in diff.stdout.splitlines()
                      if ln[:1] in "-+" and ln[:3] not in ("---", "+++")]  # fmt: skip
            print(f"{name} [{status}]: {' -> '.join(change)}")
        return 0
    if not argv or argv[0] not in ("run", "report"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "run":
        size = 0
        if len(argv) > 2 and argv[1] == "--sample":
            size, argv = int(argv[2]), [argv[0], *argv[3:]]
        modules = argv[1:] or list(MODULES)
        unknown = [m for m in modules if m not in MODULES]
        if unknown:
            print(f"unknown module(s) {unknown}; choose from {list(MODULES)}", file=sys.stderr)
            return 2
        children = os.environ.get("MUTMUT_CHILDREN", "1")  # the machine is shared
        mutmut = ["mutmut", "run", "--max-children", children]
        if size and not Path("mutants").is_dir():
            # Generate the mutants (and the test map) without testing any, to sample them.
            subprocess.run([*mutmut, "no-such-mutant"], check=False)
        # One mutmut run for all of them: each run first runs the whole selection once.
        names = [n for m in modules for n in (sample(m, size) if size else MODULES[m])]
        print(f"--- mutating {', '.join(modules)}", flush=True)
        subprocess.run([*mutmut, *names], check=False)
    print_report(report())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
