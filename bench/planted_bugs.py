#!/usr/bin/env python3
"""Hand-planted bugs that the tests must catch WITHOUT ../shared (docs/testing.md).

mutmut does not mutate decorated functions: properties (``RegisterCheck.status``,
``DiagnoseReport.ok``, ...) and the typer commands that map CLI options to the library. This
script covers them, and replays the bugs issue 16 found surviving: each bug is a one-line
source edit, applied to a copy of ``src/`` that shadows the installed package; the fast,
data-independent tests then run with ``DSTACK_MR_SHARED`` pointing nowhere, and must fail.

    python bench/planted_bugs.py            # every bug; exit status 1 if any survives
    python bench/planted_bugs.py 3 7        # only these (1-based)
"""

# ruff: noqa: E501 (one bug per line reads best)

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/test_boundaries.py",
    "tests/test_verdicts.py",
    "tests/test_evidence_shapes.py",
    "tests/test_cli.py",
]

CLI, DIAG = "src/dstack_mr_cli/main.py", "src/dstack_mr/diagnose.py"
DCMD = "src/dstack_mr_cli/diagnose_cmd.py"
EVF, IMAGE = "src/dstack_mr/evidence_files.py", "src/dstack_mr/image.py"

#: (file, original text, planted text): one bug each.
BUGS: list[tuple[str, str, str]] = [
    # issue 16's survivors
    (DIAG, 'return "match" if self.actual == self.expected else', 'return "match" if self.actual[:-1] == self.expected[:-1] else'),
    (DIAG, 'return "match" if self.expected == self.actual else', 'return "match" if self.expected[:-1] == self.actual[:-1] else'),
    (DCMD, '("rtmr2", actual_rtmr2),', '("rtmr2", actual_rtmr1),'),
    ("src/dstack_mr/machine.py", "            if self.two_pass_add_pages is None\n            else self.two_pass_add_pages,", "            if self.two_pass_add_pages is None\n            else self.two_pass_add_pages or qemu8,"),
    ("src/dstack_mr/reproduce.py", "range(MEMORY_STEP, limit + 1, MEMORY_STEP)", "range(MEMORY_STEP, limit, MEMORY_STEP)"),
    (DIAG, "if not all(r.matches for r in self.replay if r.imr < 3):", "if not all(r.matches for r in self.replay):"),
    ("src/dstack_mr/eventlog.py", "consistent = digest == derived or (", "consistent = digest == runtime_event_digest(name, payload, 1) or ("),
    ("src/dstack_mr/tdvf.py", "if memory_size >= HIGH_MEMORY_THRESHOLD:", "if memory_size > HIGH_MEMORY_THRESHOLD:"),
    ("src/dstack_mr/kernel.py", "if memory_size < STABLE_MIN_MEMORY else", "if memory_size <= STABLE_MIN_MEMORY else"),
    ("src/dstack_mr/acpi.py", "    if pci_hole64_size is not None:\n        args +=", "    if pci_hole64_size is None:\n        args +="),
    # properties (not reached by mutmut)
    (DIAG, "return self.replayed == self.reference", "return self.replayed[:-1] == self.reference[:-1]"),
    (DIAG, 'if any(e.status in ("mismatch", "missing", "extra") for e in self.events):', 'if any(e.status == "mismatch" for e in self.events):'),
    (DIAG, 'if any(r.status == "mismatch" for r in self.registers):', 'if any(r.status == "mismatch" for r in self.registers[1:]):'),
    ("src/dstack_mr/acpi.py", "return sha384(self.loader)", "return sha384(self.loader[:-1])"),
    ("src/dstack_mr/tdvf.py", "return self.memory_data_size // PAGE_SIZE", "return self.raw_data_size // PAGE_SIZE"),
    ("src/dstack_mr/tdvf.py", "                base = s.memory_address", "                pass"),
    # the CLI's option-to-library mapping (typer commands are not reached by mutmut)
    (CLI, 'cpu_count=_u32(cpu, "--cpu"),', 'cpu_count=_u32(cpu, "--cpu") or 1,'),
    (CLI, "memory_size=_memory(memory),", "memory_size=2 << 30,"),
    (CLI, "two_pass_add_pages=_opt_bool(two_pass_add_pages),", "two_pass_add_pages=None,"),
    (CLI, "pic=_opt_bool(pic),", "pic=None,"),
    (CLI, "smm=parse_bool(smm),", "smm=False,"),
    (CLI, "hugepages=parse_bool(hugepages),", "hugepages=False,"),
    (CLI, 'num_gpus=_u32(num_gpus, "--num-gpus"),', 'num_gpus=_u32(num_nvswitches, "--num-gpus"),'),
    (CLI, 'num_nvswitches=_u32(num_nvswitches, "--num-nvswitches"),', 'num_nvswitches=_u32(num_gpus, "--num-nvswitches"),'),
    (CLI, "hotplug_off=parse_bool(hotplug_off),", "hotplug_off=False,"),
    (CLI, "root_verity=parse_bool(root_verity),", "root_verity=True,"),
    (CLI, "qemu_version=qemu_version,", "qemu_version=None,"),
    (CLI, "host_share_mode=host_share_mode,", 'host_share_mode="",'),
    (IMAGE, "    if forced is not None:\n        return VariantResolution(forced,", "    if forced is not None and os_version is None:\n        return VariantResolution(forced,"),
    (DCMD, '("mrtd", actual_mrtd),', '("mrtd", actual_rtmr0),'),
    (DCMD, '("rtmr0", actual_rtmr0),', '("rtmr0", actual_mrtd),'),
    (DCMD, '("rtmr1", actual_rtmr1),', '("rtmr1", actual_rtmr2),'),
    (DCMD, "    raise typer.Exit(report.exit_code)", "    raise typer.Exit(0)"),
    (EVF, "evidence = evidence.merge(Evidence(events=events, sources=(f\"event log {where}\",)))", "pass"),
    # import-time code (RTMR layouts, typer options): mutmut's forked runs never execute it
    ("src/dstack_mr/uefi.py", 'len(name).to_bytes(8, "little")', 'len(utf16le(name)).to_bytes(8, "little")'),
    ("src/dstack_mr/uefi.py", "(4 + len(data)).to_bytes(2", "(len(data)).to_bytes(2"),
    ("src/dstack_mr/uefi.py", "        device_path_node(0x04, 0x07, fv.bytes_le)\n        + device_path_node(0x04, 0x06, file.bytes_le)", "        device_path_node(0x04, 0x06, file.bytes_le)\n        + device_path_node(0x04, 0x07, fv.bytes_le)"),
    ("src/dstack_mr/uefi.py", '        + b"\\0\\0"\n        + file_path', "        + file_path"),
    ("src/dstack_mr/uefi.py", 'e.to_bytes(2, "little") for e in entries', 'e.to_bytes(2, "big") for e in entries'),
    ("src/dstack_mr/events.py", '"fixed: empty EFI variable", efi_variable_digest(vendor, name)', '"fixed: empty EFI variable", efi_variable_digest(vendor, name.lower())'),
    ("src/dstack_mr_cli/base.py", 'BOOL_METAVAR = "true|false"', 'BOOL_METAVAR = "BOOL"'),
]  # fmt: skip


def run(index: int, file: str, old: str, new: str) -> bool:
    """True when the tests catch the bug."""
    with tempfile.TemporaryDirectory(prefix="dstack-mr-planted-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src)
        path = Path(tmp) / file
        text = path.read_text()
        if text.count(old) != 1:
            print(f"#{index}: cannot plant: {old!r} occurs {text.count(old)} times in {file}")
            return False
        path.write_text(text.replace(old, new))
        env = {**os.environ, "PYTHONPATH": str(src), "DSTACK_MR_SHARED": str(Path(tmp) / "none")}
        env.pop("DSTACK_MR_SHARED_REQUIRED", None)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
    caught = result.returncode == 1
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    print(f"#{index} {'caught' if caught else 'SURVIVED'}: {file}: {new.strip()[:70]!r} ({last})")
    return caught


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip())
        print(f"\n{len(BUGS)} bugs planted in: {', '.join(sorted({f for f, _, _ in BUGS}))}")
        return 0
    chosen = [int(a) for a in argv] or range(1, len(BUGS) + 1)
    survived = [i for i in chosen if not run(i, *BUGS[i - 1])]
    print(f"{len(chosen) - len(survived)} of {len(chosen)} planted bugs caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
