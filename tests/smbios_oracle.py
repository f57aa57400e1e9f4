"""Stock QEMU as an oracle for the SMBIOS model: the configurations, live dumps, recordings.

``python tests/smbios_oracle.py`` re-records ``tests/data/smbios-qemu-7.2.json`` with
``../shared/acpi/qemu_smbios_dump.py`` (needs ``qemu-system-x86_64``: Debian's QEMU 7.2).
"""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

from conftest import load_shared_module

from dstack_mr.smbios import SmbiosInputs

RECORDING = Path(__file__).resolve().parent / "data" / "smbios-qemu-7.2.json"
DSTACK_TYPE1 = "type=1,manufacturer=dstack,product=dstack"

#: cpu x memory x entry point x -smbios type=1 x CPU model: memory sizes straddle the q35
#: 2.75 GiB split, the 16 GiB DIMM size and MiB rounding.
CPUS = (1, 8)
MEMORY_MB = (512, 2048, 2815, 2816, 16385, 65536)
ENTRY_POINTS: tuple[str | None, ...] = (None, "32", "64")
TYPE1: tuple[tuple[str, ...], ...] = ((), (DSTACK_TYPE1,), ("type=1,manufacturer=Acme Corp",))
CPU_MODELS = ("qemu64", "Icelake-Server")


def cases() -> list[dict[str, Any]]:
    rows = []
    for cpu, mem, ep, smbios in itertools.product(CPUS, MEMORY_MB, ENTRY_POINTS, TYPE1):
        rows.append(
            {"cpu": cpu, "mem_mb": mem, "ep": ep, "smbios": list(smbios), "model": "qemu64"}
        )
    # The CPUID words come from the CPU model: a few cases with another one.
    for cpu, mem in ((2, 2048), (8, 16385)):
        for ep in ENTRY_POINTS:
            rows.append(
                {
                    "cpu": cpu,
                    "mem_mb": mem,
                    "ep": ep,
                    "smbios": [DSTACK_TYPE1],
                    "model": CPU_MODELS[1],
                }
            )
    return rows


def inputs_for(case: dict[str, Any], cpuid: tuple[int, int]) -> SmbiosInputs:
    """The model's inputs for one dumped configuration (CPUID words as the CPU model gives)."""
    fields: dict[str, str] = {}
    for arg in case["smbios"]:
        fields.update(kv.split("=", 1) for kv in arg.split(",")[1:])
    return SmbiosInputs(
        qemu_version=(7, 2, 0),
        memory_size=case["mem_mb"] << 20,
        manufacturer=fields.get("manufacturer"),
        product=fields.get("product"),
        cpuid_eax=cpuid[0],
        cpuid_edx=cpuid[1],
        cpu_count=case["cpu"],
        entry_point=case["ep"],
    )


def processor_id(tables: bytes) -> tuple[int, int]:
    """CPUID leaf 1 EAX/EDX from the dump's Type 4 (an input of the model, not an output)."""
    offset = 0
    while tables[offset] != 4:
        offset += tables[offset + 1]
        offset = tables.index(b"\0\0", offset) + 2
    return (
        int.from_bytes(tables[offset + 8 : offset + 12], "little"),
        int.from_bytes(tables[offset + 12 : offset + 16], "little"),
    )


def qemu_version_line() -> str:
    out = subprocess.run(
        ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()[0]


def dumper(shared: Path) -> ModuleType:
    return load_shared_module(shared / "acpi" / "qemu_smbios_dump.py")


def dump(mod: ModuleType, case: dict[str, Any]) -> tuple[bytes, bytes]:
    r = mod.dump_smbios(
        case["cpu"], case["mem_mb"], ep=case["ep"], smbios=case["smbios"], cpu_model=case["model"]
    )
    return r["tables"], r["anchor"]


def record(shared: Path) -> None:
    mod = dumper(shared)
    rows = []
    for case in cases():
        tables, anchor = dump(mod, case)
        rows.append({**case, "tables": tables.hex(), "anchor": anchor.hex()})
    doc = {
        "qemu": qemu_version_line(),
        "source": "../shared/acpi/qemu_smbios_dump.py (fw_cfg etc/smbios/* over qtest)",
        "cases": rows,
    }
    RECORDING.write_text(
        json.dumps(doc, separators=(",", ":")).replace('{"cpu"', '\n{"cpu"') + "\n"
    )


if __name__ == "__main__":
    from conftest import SHARED

    record(SHARED)
