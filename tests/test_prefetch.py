"""The CLI's early start on ``measure``'s initrd: a guess that costs work, never a result.

``dstack_mr_cli.entry`` guesses the initrd from the command line and
``dstack_mr.files.prefetch`` hashes it ahead of use; ``hash_file`` takes that digest only for
the very file, unchanged, and otherwise hashes the file itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dstack_mr import files
from dstack_mr.errors import ImageError
from dstack_mr.example import write_example_image
from dstack_mr_cli import entry
from dstack_mr_cli.main import app

#: Test files are made this much older than the prefetch's minimum age by sleeping past it
#: (a kernel tick is at most 10 ms; ctime cannot be set back).
MIN_AGE_NS = 50_000_000


@pytest.fixture(autouse=True)
def clean_memo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(files, "PREFETCH_MIN_AGE_NS", MIN_AGE_NS)
    files._memo.clear()
    yield
    for entry_ in list(files._memo.values()):
        entry_.done.wait(10)
    files._memo.clear()


def settled(path: Path, data: bytes) -> Path:
    """``path`` holding ``data``, changed longer ago than the prefetch's minimum age."""
    path.write_bytes(data)
    time.sleep(2 * MIN_AGE_NS / 1e9)
    return path


def wait_for_prefetches() -> list[files._Prefetched]:
    entries = list(files._memo.values())
    for e in entries:
        assert e.done.wait(10)
    return entries


@pytest.fixture
def chunk_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files hash_file read itself (rather than taking from the memo)."""
    calls: list[str] = []
    real = files._hash_chunks

    def spy(f: Any) -> tuple[int, bytes]:
        calls.append(f.name)
        return real(f)

    monkeypatch.setattr(files, "_hash_chunks", spy)
    return calls


def digest(data: bytes) -> tuple[int, bytes]:
    return len(data), hashlib.sha384(data).digest()


def test_the_prefetched_digest_of_the_unchanged_file_is_used(
    tmp_path: Path, chunk_reads: list[str]
) -> None:
    data = os.urandom(3 << 20)
    path = settled(tmp_path / "initrd", data)
    assert files.prefetch(str(path))
    assert not files.prefetch(str(path))  # one entry per file
    assert files.hash_file(str(path), "initrd") == digest(data)
    assert chunk_reads == [] and files._memo == {}
    # used once: a second read hashes the file itself
    assert files.hash_file(str(path), "initrd") == digest(data)
    assert chunk_reads == [str(path)]


@pytest.mark.parametrize("how", ["in place", "renamed over", "grown"])
def test_a_file_changed_after_the_prefetch_is_hashed_again(
    tmp_path: Path, chunk_reads: list[str], how: str
) -> None:
    path = settled(tmp_path / "initrd", b"a" * 100_000)
    assert files.prefetch(str(path))
    [entry_] = wait_for_prefetches()
    assert entry_.result == digest(b"a" * 100_000)
    new = b"b" * (100_001 if how == "grown" else 100_000)
    if how == "renamed over":
        (tmp_path / "new").write_bytes(new)
        os.replace(tmp_path / "new", path)
    else:
        with open(path, "r+b") as f:
            f.write(new)
    assert files.hash_file(str(path), "initrd") == digest(new)
    assert chunk_reads == [str(path)]


def test_a_file_changed_while_it_is_prefetched_gives_no_digest(
    tmp_path: Path, chunk_reads: list[str]
) -> None:
    path = settled(tmp_path / "initrd", b"a" * 100_000)

    class WriteThenHash:
        @staticmethod
        def sha384(data: Any = b"") -> Any:
            if not isinstance(data, bytes):  # the prefetch's mmap
                with open(path, "r+b") as f:
                    f.write(b"b")
            return hashlib.sha384(data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "hashlib", WriteThenHash)
        assert files.prefetch(str(path))
        [entry_] = wait_for_prefetches()
    assert entry_.result is None
    assert files.hash_file(str(path), "initrd") == digest(b"b" + b"a" * 99_999)
    assert chunk_reads == [str(path)]


def test_a_file_changed_while_hash_file_waits_is_hashed_again(
    tmp_path: Path, chunk_reads: list[str]
) -> None:
    path = settled(tmp_path / "initrd", b"a" * 100_000)
    assert files.prefetch(str(path))
    [entry_] = wait_for_prefetches()

    class WriteOnWait:
        """The prefetch finishing while the file is rewritten in place (same size)."""

        def wait(self, timeout: float | None = None) -> bool:
            with open(path, "r+b") as f:
                f.write(b"b")
            return True

    entry_.done = WriteOnWait()  # type: ignore[assignment]
    assert files.hash_file(str(path), "initrd") == digest(b"b" + b"a" * 99_999)
    assert chunk_reads == [str(path)]


def test_another_file_is_not_served_from_the_memo(tmp_path: Path, chunk_reads: list[str]) -> None:
    data = os.urandom(100_000)
    guessed = settled(tmp_path / "guessed", data)
    other = tmp_path / "other"
    other.write_bytes(data)  # same bytes, another file
    assert files.prefetch(str(guessed))
    assert files.hash_file(str(other), "initrd") == digest(data)
    assert chunk_reads == [str(other)]
    assert len(files._memo) == 1  # the guess is left unused


def test_a_recently_changed_file_is_not_prefetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "PREFETCH_MIN_AGE_NS", 3_000_000_000)
    path = tmp_path / "initrd"
    path.write_bytes(b"fresh")
    assert not files.prefetch(str(path))
    assert files._memo == {}


def test_only_existing_non_empty_regular_files_are_prefetched(tmp_path: Path) -> None:
    settled(tmp_path / "empty", b"")
    os.mkfifo(tmp_path / "fifo")  # must not block waiting for a writer
    time.sleep(2 * MIN_AGE_NS / 1e9)
    for name in ("missing", "empty", "fifo", "."):
        assert not files.prefetch(str(tmp_path / name)), name
    assert not files.prefetch("bad\0path")
    assert files._memo == {}


def test_a_failed_prefetch_leaves_the_read_to_hash_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_reads: list[str]
) -> None:
    import mmap

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no mmap here")

    monkeypatch.setattr(mmap, "mmap", refuse)
    path = settled(tmp_path / "initrd", b"x" * 1000)
    assert files.prefetch(str(path))
    assert files.hash_file(str(path), "initrd") == digest(b"x" * 1000)
    assert chunk_reads == [str(path)]


def test_background_hash_reraises_in_the_caller(tmp_path: Path) -> None:
    with (
        pytest.raises(ImageError, match="cannot read initrd"),
        files.BackgroundHash(str(tmp_path / "missing"), "initrd") as pending,
    ):
        pending.result()


# --- the guess --------------------------------------------------------------------------------


def write_metadata(directory: Path, obj: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "metadata.json"
    path.write_text(json.dumps(obj))
    return path


def test_the_guess_finds_the_initrd_next_to_the_metadata(tmp_path: Path) -> None:
    meta = str(write_metadata(tmp_path / "img", {"initrd": "sub/initrd.img", "kernel": "k"}))
    tables = tmp_path / "tables.bin"
    tables.write_bytes(b"\x00RSDT binary")
    want = os.path.join(str(tmp_path / "img"), "sub/initrd.img")
    for argv in (
        ["measure", meta],
        ["--debug", "measure", "-c", "2", "-m", "2G", "--acpi-tables", str(tables), meta],
        ["measure", "--json", meta, "--debug"],
    ):
        assert entry.measure_initrd(argv) == want, argv


def test_no_guess_for_other_commands_or_unusable_metadata(tmp_path: Path) -> None:
    meta = str(write_metadata(tmp_path / "img", {"initrd": "initrd.img"}))
    assert entry.measure_initrd([]) is None
    assert entry.measure_initrd(["--version"]) is None
    assert entry.measure_initrd(["diagnose", meta]) is None
    assert entry.measure_initrd(["measure", "--snp", meta]) is None
    assert entry.measure_initrd(["measure", "--help", meta]) is None
    assert entry.measure_initrd(["measure", str(tmp_path / "missing.json")]) is None
    assert entry.measure_initrd(["measure", str(tmp_path)]) is None  # a directory
    for i, obj in enumerate(
        [
            ["initrd"],
            {"initrd": 1},
            {"initrd": ""},
            {"initrd": "/etc/passwd"},
            {"initrd": "../other/initrd"},
            {"initrd": "a/../../initrd"},
            {"initrd": "nul\u0000byte"},
            {"initrd": "escape"},  # a symlink out of the directory
        ]
    ):
        bad = str(write_metadata(tmp_path / f"bad{i}", obj))
        (tmp_path / f"bad{i}" / "escape").symlink_to(tmp_path / "img" / "initrd.img")
        assert entry.measure_initrd(["measure", bad]) is None, obj
    for name, content in [("text", b"not json"), ("deep", b"[" * 100_000), ("bin", b"\xff\xfe")]:
        (tmp_path / name).write_bytes(content)
        assert entry.measure_initrd(["measure", str(tmp_path / name)]) is None, name
    # a lone surrogate is a valid (surrogate-escaped) file name: guessed, then not found
    odd = str(write_metadata(tmp_path / "odd", {"initrd": "lone\udc80surrogate"}))
    assert not files.prefetch(entry.measure_initrd(["measure", odd]) or "")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"initrd": "i", "pad": "x" * (1 << 20)}))
    assert entry.measure_initrd(["measure", str(big)]) is None
    os.mkfifo(tmp_path / "fifo")  # never opened: a guess must not read or block on it
    assert entry.measure_initrd(["measure", str(tmp_path / "fifo"), meta]) == os.path.join(
        str(tmp_path / "img"), "initrd.img"
    )


# --- the console script -----------------------------------------------------------------------


def test_the_console_script_measures_with_the_prefetch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    chunk_reads: list[str],
) -> None:
    meta = write_example_image(tmp_path / "img")
    tables = meta.parent / "acpi-tables.bin"
    time.sleep(2 * MIN_AGE_NS / 1e9)
    started: list[str] = []
    real_prefetch = files.prefetch
    monkeypatch.setattr(files, "prefetch", lambda p: started.append(p) or real_prefetch(p))
    argv = ["dstack-mr", "measure", "--json", "--acpi-tables", str(tables), str(meta)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        entry.run()
    assert exit_.value.code in (0, None)
    prefetched = json.loads(capsys.readouterr().out)
    plain = CliRunner().invoke(app, argv[1:])  # no prefetch
    assert plain.exit_code == 0, plain.output
    assert prefetched == json.loads(plain.stdout)
    assert started == [str(meta.parent / "initramfs.cpio.gz")]
    # the prefetched run took the initrd from the memo; the plain one hashed it itself
    assert chunk_reads == [str(meta.parent / "initramfs.cpio.gz")] and files._memo == {}


_ENTRY = """
import json, sys
from dstack_mr import files
files.PREFETCH_MIN_AGE_NS = -10**12  # the image was just written; nothing changes it here
from dstack_mr_cli.entry import run
sys.argv[0] = "dstack-mr"
try:
    run()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def test_python_m_and_the_console_script_load_no_other_command(tmp_path: Path) -> None:
    meta = write_example_image(tmp_path / "img")
    tables = str(meta.parent / "acpi-tables.bin")
    argv = ["measure", "--json", "--acpi-tables", tables, str(meta)]
    result = subprocess.run(
        [sys.executable, "-c", _ENTRY, *argv], capture_output=True, text=True, timeout=120
    )
    modules = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert "mmap" in modules  # the prefetch ran
    assert not {m for m in modules if m.endswith("_cmd")}, sorted(modules)
    plain = subprocess.run(
        [sys.executable, "-m", "dstack_mr_cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert json.loads(result.stdout) == json.loads(plain.stdout)
