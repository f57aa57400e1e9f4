"""Shared fixtures: the ../shared test data and the recording test dumper."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS_BIN = Path(__file__).resolve().parent / "bin"
_SHARED = Path(os.environ.get("DSTACK_MR_SHARED", "../shared"))
SHARED = _SHARED if _SHARED.is_absolute() else (ROOT / _SHARED).resolve()


#: Set (to 1) by .ci/run: there a missing ../shared is a broken checkout, not an optional
#: extra, and the tests that need it must fail rather than skip.
SHARED_REQUIRED = os.environ.get("DSTACK_MR_SHARED_REQUIRED", "") not in ("", "0")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when the data set is absent (failing when
    ``DSTACK_MR_SHARED_REQUIRED=1``)."""
    if not (SHARED / "vectors").is_dir():
        why = f"shared test data not present at {SHARED} (set DSTACK_MR_SHARED)"
        if SHARED_REQUIRED:
            pytest.fail(f"{why}; DSTACK_MR_SHARED_REQUIRED is set", pytrace=False)
        pytest.skip(why)
    return SHARED.joinpath(*parts)


@pytest.fixture
def shared() -> Path:
    return shared_path()


@pytest.fixture
def real() -> Path:
    """../shared/real: captures from real dstack CVMs (skips when absent)."""
    return shared_path("real")


def load_vectors() -> list[dict[str, object]]:
    path = SHARED / "vectors" / "measure.json"
    if not path.is_file():
        if SHARED_REQUIRED:  # an empty parametrisation would skip silently
            raise FileNotFoundError(f"{path} is missing and DSTACK_MR_SHARED_REQUIRED is set")
        return []
    vectors: list[dict[str, object]] = json.loads(path.read_text())
    return vectors


class FakeDumper:
    """Controls tests/bin/dstack-acpi-tables: which blob it prints, what it was called with."""

    def __init__(self, record: Path) -> None:
        self.record = record

    def serve(self, blob: Path) -> None:
        os.environ["FAKE_DUMPER_BLOB"] = str(blob)

    def calls(self) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def reset(self) -> None:
        self.record.unlink(missing_ok=True)


@pytest.fixture
def fake_dumper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDumper]:
    """Put the recording dumper first on PATH, where users' dumpers are found."""
    monkeypatch.delenv("DSTACK_MR_ACPI_DUMPER", raising=False)
    monkeypatch.setenv("PATH", f"{TESTS_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    record = tmp_path / "dumper-calls.jsonl"
    monkeypatch.setenv("FAKE_DUMPER_RECORD", str(record))
    monkeypatch.setenv("FAKE_DUMPER_BLOB", "/nonexistent")
    yield FakeDumper(record)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The example image's metadata.json, written afresh for the test."""
    from dstack_mr.example import write_example_image

    return write_example_image(tmp_path / "img")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The example image as a library Image, shared by a module's tests."""
    from dstack_mr import AcpiTablesFile
    from dstack_mr.example import write_example_image
    from dstack_mr.image import Image, ImageFiles

    meta = write_example_image(tmp_path_factory.mktemp("example") / "img")
    return Image(ImageFiles.from_metadata(meta), AcpiTablesFile(meta.parent / "acpi-tables.bin"))


def qemu_installed() -> bool:
    return shutil.which("qemu-system-x86_64") is not None


def load_shared_module(path: Path) -> ModuleType:
    """A script of ../shared as a module named after its file. Its directory goes on
    ``sys.path``: the SMBIOS dumper imports the fw_cfg dumper beside it."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stock_qemu_dumper() -> Any:
    """../shared/acpi/qemu_fwcfg_dump.py as a module (reads fw_cfg ACPI files out of Debian's
    stock QEMU over qtest); skips when that QEMU and its OVMF are not installed."""
    if not qemu_installed() or not Path("/usr/share/ovmf/OVMF.fd").exists():
        pytest.skip("stock QEMU (qemu-system-x86 + ovmf) is not installed")
    return load_shared_module(shared_path("acpi", "qemu_fwcfg_dump.py"))
