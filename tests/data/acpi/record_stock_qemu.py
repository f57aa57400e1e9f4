"""Record stock QEMU's ACPI fw_cfg files for random dumper configurations.

This is the development oracle of the pure-Python model (``dstack_mr.acpi_model``): Debian's
stock QEMU 7.2, driven over qtest by ``$DSTACK_MR_SHARED/acpi/qemu_fwcfg_dump.py``, for a
seeded random set of machine configurations. The output is one xz-compressed JSON line per
configuration holding the tables blob with its zero padding trimmed, and the SHA-384 of the
three files QEMU serves (loader, RSDP, padded tables), so the test can check the model without
QEMU.

    apt-get install qemu-system-x86 ovmf
    DSTACK_MR_SHARED=/work/shared python tests/data/acpi/record_stock_qemu.py [--count 400]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import lzma
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "stock-qemu-7.2.jsonl.xz"
SEED = 20261126


def load_dumper() -> Any:
    shared = Path(os.environ.get("DSTACK_MR_SHARED", HERE.parents[3] / "shared"))
    path = shared / "acpi" / "qemu_fwcfg_dump.py"
    spec = importlib.util.spec_from_file_location("qemu_fwcfg_dump", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_config(rng: random.Random) -> dict[str, Any]:
    """One configuration; ranges cover what dstack deploys plus the edges of QEMU's logic."""
    cpu = rng.choice([1, 2, 2, 4, 4, 8, 8, 16, 32, rng.randint(1, 64), rng.randint(1, 160)])
    mem_mb = rng.choice(
        [512, 1024, 2048, 2048, 2815, 2816, 3072, 4096, 8192, 16384, 65536, 262144,
         rng.randint(256, 4096), rng.randint(4096, 131072)]
    )  # fmt: skip
    hugepages = rng.random() < 0.15
    if hugepages:
        mem_mb = min(mem_mb, 16384)
    version = rng.choice(["8.0.0", "8.2.2", "9.0.0", "9.1.0", "9.2.1"])
    gpus = rng.choice([0, 0, 0, 1, 2, rng.randint(0, 8)])
    return {
        "cpu_count": cpu,
        "memory_size": mem_mb << 20,
        "qemu_version": version,
        "pic": rng.choice([None, None, True, False]),
        "smm": rng.random() < 0.3,
        "hugepages": hugepages,
        "num_gpus": gpus,
        "num_nvswitches": rng.choice([0, 0, 0, 1, rng.randint(0, 4)]),
        "hotplug_off": rng.random() < 0.35,
        "pci_hole64_size": rng.choice(
            [None, None, 1 << 30, 1 << 35, 1 << 40, rng.randint(1, 1 << 44) & ~0xFFF]
        ),
        "root_verity": rng.random() < 0.8,
        "host_share_mode": rng.choice(["", "9p", "9p", "vhd", "vvfat"]),
        "num_nics": rng.choice([1, 1, 1, 1, 0, 2, 3]),
        "num_verity_volumes": rng.choice([0, 0, 0, 0, 1, 2]),
    }


def dumper_argv(dumper: Any, cfg: dict[str, Any]) -> list[str]:
    """What dstack gives its own dumper for this machine (no stock-QEMU substitutions)."""
    argv, _ = dumper.dstack_argv(**_machine(cfg), stock=False)
    return list(argv)


def _machine(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "cpu": cfg["cpu_count"],
        "mem_mb": cfg["memory_size"] >> 20,
        "qemu_version": cfg["qemu_version"],
        "pic": cfg["pic"],
        "smm": cfg["smm"],
        "gpus": cfg["num_gpus"],
        "nvswitches": cfg["num_nvswitches"],
        "hotplug_off": cfg["hotplug_off"],
        "pci_hole64_size": cfg["pci_hole64_size"],
        "hugepages": cfg["hugepages"],
        "root_verity": cfg["root_verity"],
        "host_share_mode": cfg["host_share_mode"],
        "nics": cfg["num_nics"],
        "volumes": cfg["num_verity_volumes"],
    }


def record(dumper: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    blobs = dumper.dump(**_machine(cfg))
    tables: bytes = blobs["tables"]
    return {
        "config": cfg,
        "argv": dumper_argv(dumper, cfg),
        "tables": base64.b64encode(tables.rstrip(b"\0")).decode(),
        "tables_size": len(tables),
        "sha384": {k: hashlib.sha384(blobs[k]).hexdigest() for k in ("loader", "rsdp", "tables")},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=400)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    dumper = load_dumper()
    version = subprocess.run(
        [dumper.QEMU, "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    rng = random.Random(a.seed)
    lines = [json.dumps({"qemu": version, "seed": a.seed, "count": a.count})]
    for i in range(a.count):
        cfg = random_config(rng)
        try:
            entry = record(dumper, cfg)
        except RuntimeError as exc:  # QEMU refused the machine: keep it, the model must too
            entry = {"config": cfg, "error": str(exc).strip().splitlines()[-1]}
        lines.append(json.dumps(entry, sort_keys=True))
        print(f"{i + 1}/{a.count}", json.dumps(cfg), file=sys.stderr)
    a.out.write_bytes(lzma.compress(("\n".join(lines) + "\n").encode(), preset=9))


if __name__ == "__main__":
    main()
