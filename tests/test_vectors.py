"""Every golden vector of ../shared/vectors/measure.json, field by field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeDumper, load_vectors, shared_path

from dstack_mr import ConfigError, Machine

VECTORS = load_vectors()

#: What each error vector's reference message says, as this library words it.
ERRORS = {
    "err-qemu-7": "unsupported QEMU version 7.2.0",
    "err-bad-qemu-version": "expected exactly 3 parts (MAJOR.MINOR.PATCH), got 2",
    "err-cpu-0": "cpu_count must be an integer in 1..=4294967295 (u32), got 0",
    "err-share-mode": "host_share_mode must be one of '', '9p', 'vhd', 'vvfat', got 'nfs'",
}


def _machine(vector: dict[str, Any], inputs: Path) -> Machine:
    files = vector["inputs"]
    return Machine(
        firmware=str(inputs / files["firmware"]),
        kernel=str(inputs / files["kernel"]),
        initrd=str(inputs / files["initrd"]),
        kernel_cmdline=vector["cmdline"],
        **vector["machine"],
    )


def test_vectors_present() -> None:
    shared_path("vectors", "measure.json")
    assert len(VECTORS) >= 30
    assert sorted(v["name"] for v in VECTORS if "expected_error" in v) == sorted(ERRORS)


@pytest.mark.parametrize("vector", VECTORS, ids=[str(v["name"]) for v in VECTORS])
def test_vector(vector: dict[str, Any], fake_dumper: FakeDumper) -> None:
    inputs = shared_path("inputs")
    fake_dumper.serve(inputs / vector["inputs"]["acpi_tables"])

    if "expected_error" in vector:
        # Raised when the Machine is made (e.g. QEMU 7.x) or when it is measured.
        with pytest.raises(ConfigError, match=re.escape(ERRORS[vector["name"]])):
            _machine(vector, inputs).measure_with_logs()
        assert fake_dumper.calls() == []  # rejected before QEMU would run
        return

    machine = _machine(vector, inputs)

    details = machine.measure_with_logs()
    want = vector["expected"]
    got = details.measurements.to_dict()
    assert got == {k: want[k] for k in ("mrtd", "rtmr0", "rtmr1", "rtmr2")}
    for rtmr, (log, want_log) in enumerate(zip(details.rtmr_logs, want["rtmr_logs"], strict=True)):
        assert [d.hex() for d in log.digests] == want_log, f"RTMR{rtmr} events"
        assert log.value.hex() == want[f"rtmr{rtmr}"]
    assert details.acpi_tables.tables_digest.hex() == want["acpi"]["tables_sha384"]
    assert details.acpi_tables.rsdp.hex() == want["acpi"]["rsdp"]
    assert details.acpi_tables.loader_digest.hex() == want["acpi"]["loader_sha384"]

    placeholders = {"{firmware}": machine.firmware, "{kernel}": machine.kernel}
    expected_calls = [
        {"argv": [placeholders.get(a, a) for a in call["argv"]], "compat_ver": call["compat_ver"]}
        for call in want["dumper_calls"]
    ]
    assert fake_dumper.calls() == expected_calls
    assert list(details.invocation.argv) == expected_calls[0]["argv"]


def test_real_dumper_when_installed() -> None:
    """With dstack's real dstack-acpi-tables on PATH, a vector machine measures end to end.

    RTMR0 then reflects real QEMU tables (the vectors used a stub), so only what does not
    depend on ACPI is compared with the golden values.
    """
    import shutil

    program = shutil.which("dstack-acpi-tables")
    if program is None or Path(program).resolve().parent == Path(__file__).resolve().parent / "bin":
        pytest.skip("the real dstack-acpi-tables dumper is not installed")
    inputs = shared_path("inputs")  # skips first when ../shared is absent
    vector = next(v for v in VECTORS if v["name"] == "default-2cpu-2g")
    details = _machine(vector, inputs).measure_with_logs()
    want = vector["expected"]
    assert details.measurements.mrtd.hex() == want["mrtd"]
    assert details.measurements.rtmr1.hex() == want["rtmr1"]
    assert details.measurements.rtmr2.hex() == want["rtmr2"]
    assert len(details.acpi_tables.loader) == 4096 and details.acpi_tables.rsdp[:8] == b"RSD PTR "
