"""The CLI stays thin (issue 11): options, one library call, printing.

Read from the source with ast: no CLI module imports a parser of evidence or a judgement's
internals (the library's evidence_files, diagnose_files and text renderers are the way in),
and none reads a file or parses JSON itself.
"""

from __future__ import annotations

import ast

from conftest import ROOT

CLI = ROOT / "src" / "dstack_mr_cli"

#: Parsers and judgement internals the CLI reaches only through the library's entry points.
NOT_FROM_THE_CLI = {
    "dstack_mr.attestation",
    "dstack_mr.cbor",
    "dstack_mr.ccel",
    "dstack_mr.collateral",
    "dstack_mr.diagnose",
    "dstack_mr.eventlog",
    "dstack_mr.event_identity",
    "dstack_mr.explain",
    "dstack_mr.lite_diagnose",
    "dstack_mr.quote",
    "dstack_mr.scale",
    "dstack_mr.snp_attestation",
    "dstack_mr.snp_document",
}
#: Calls that read input or decode it: the library's job.
READS = {"open", "read_bytes", "read_text", "loads", "parse_json"}
#: The console-script shim (i11-perf) reads metadata.json before anything is imported, only
#: to start hashing the initrd early; the library still reads and checks every input itself
#: and uses the early digest only for the very file it opens.
EXEMPT = {"entry"}


def offences(source: str, module: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module in NOT_FROM_THE_CLI:
            found.append(f"{where}: imports {node.module}")
        elif isinstance(node, ast.Import):
            found += [
                f"{where}: imports {a.name}" for a in node.names if a.name in NOT_FROM_THE_CLI
            ]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in READS:
                found.append(f"{where}: calls {name}")
    return found


def test_the_check_sees_each_form() -> None:
    source = """
from dstack_mr.quote import parse_quote
import dstack_mr.eventlog
data = open("x").read()
doc = json.loads(path.read_text())
"""
    found = offences(source, "cli")
    assert len(found) == 5, found


def test_cli_modules_hold_no_parsing() -> None:
    found: list[str] = []
    for path in sorted(CLI.glob("*.py")):
        if path.stem not in EXEMPT:
            found += offences(path.read_text(), path.stem)
    assert not found, "\n".join(found)
