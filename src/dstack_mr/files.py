"""Reading the image's files: size caps, chunked hashing, one wording for unreadable paths,
and the memo of digests hashed ahead of use.

Why the memo exists: ``dstack-mr measure`` spends ~0.1 s importing its CLI stack before it can
hash anything, and the initrd is most of the bytes. So the CLI's entry point guesses, before
it imports typer, which initrd the command will hash and calls :func:`prefetch`, which hashes
it on a thread while the imports run. :func:`hash_file` takes a digest from the memo only when
the file it has open is the very file that was hashed, unchanged: the same device, inode,
size, mtime and ctime when the prefetch opened it, when it finished, and now, after waiting
for it. Otherwise (no prefetch, another file, a changed file, a failed read) it hashes the file
itself, so a wrong guess costs work and never a result. An entry is used once; nothing calls
:func:`prefetch` but the CLI's entry point, so library users never see the memo.

File timestamps are coarse (a clock tick; seconds on some file systems), so a second write
within the tick of the last one may leave mtime and ctime as they were. A file whose ctime is
less than :data:`PREFETCH_MIN_AGE_NS` old when the prefetch opens it is therefore not
prefetched: any later change then gets a ctime that differs from the recorded one.

The prefetch hashes an mmap of the file: one hashlib call releases the GIL once for the whole
file, where chunked reads would wait for the importing thread to hand the GIL back after every
chunk. (A file truncated while mapped would kill the process with SIGBUS, so only the
short-lived CLI process maps; :func:`hash_file` itself reads in chunks.)
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import DstackMrError, ImageError

if TYPE_CHECKING:
    from io import FileIO

#: Real OVMF images are 2-4 MiB and kernels ~10-15 MiB; refuse to slurp absurd files.
MAX_FIRMWARE_SIZE = 256 << 20
MAX_KERNEL_SIZE = 1 << 30
_READ_CHUNK = 1 << 20


def unusable_path_reason(exc: OSError | ValueError) -> str:
    """Why ``exc`` stopped a file operation, worded the same on every Python version."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, UnicodeError):
        return "the path cannot be encoded for the file system (a lone surrogate?)"
    # os functions refuse a NUL in a path; Python 3.13 words it differently from 3.10-3.12.
    if "null" in str(exc):
        return "the path contains a null byte"
    return str(exc)


@contextmanager
def reading(
    path: str | os.PathLike[str], what: str, error: type[DstackMrError] = ImageError
) -> Iterator[None]:
    """Turn an OSError (or the ValueError of a NUL byte in a path) into ``error``."""
    try:
        yield
    except (OSError, ValueError) as exc:
        raise error(
            f"cannot read {what} {os.fspath(path)!r}: {unusable_path_reason(exc)}"
        ) from None


def read_file(
    path: str | os.PathLike[str], what: str, limit: int, error: type[DstackMrError] = ImageError
) -> bytes:
    """The whole file, refusing files over ``limit`` bytes before reading them."""
    with reading(path, what, error), open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise error(f"{what} {os.fspath(path)} is {size} bytes, more than the {limit} allowed")
        # read(n) reserves n bytes up front: ask for what fstat saw (+1 to notice growth).
        data = f.read(size + 1)
        if len(data) > size:
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise error(f"{what} {os.fspath(path)} is more than the {limit} bytes allowed")
    return data


def file_size(path: str, what: str) -> int:
    with reading(path, what):
        return os.stat(path).st_size


def hash_file(path: str, what: str) -> tuple[int, bytes]:
    """(size, SHA-384) of a file, read in chunks so a huge initrd never sits in memory; or
    the prefetched digest of this very file, unchanged (see the module docstring)."""
    with reading(path, what), open(path, "rb", buffering=0) as f:
        identity = _identity(os.fstat(f.fileno()))
        with _memo_lock:
            entry = _memo.pop(identity, None)
        if entry is not None:
            entry.done.wait()
            if entry.result is not None and _identity(os.fstat(f.fileno())) == identity:
                return entry.result
        return _hash_chunks(f)


def _hash_chunks(f: FileIO) -> tuple[int, bytes]:
    h = hashlib.sha384()
    size = 0
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    while n := f.readinto(buf):
        h.update(view[:n])
        size += n
    return size, h.digest()


class BackgroundHash:
    """:func:`hash_file` on a second thread (hashlib and file reads release the GIL), so the
    caller can read and hash the other files meanwhile. A plain thread: ``concurrent.futures``
    costs CLI start-up time for no gain here. Leaving the ``with`` block waits for it."""

    def __init__(self, path: str, what: str) -> None:
        self._result: tuple[int, bytes] | None = None
        self._error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, args=(path, what), name="dstack-mr-hash", daemon=True
        )
        self._thread.start()

    def _run(self, path: str, what: str) -> None:
        try:
            self._result = hash_file(path, what)
        except Exception as exc:  # re-raised by result(), in the caller's thread
            self._error = exc

    def result(self) -> tuple[int, bytes]:
        """(size, SHA-384), or the error :func:`hash_file` raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def __enter__(self) -> BackgroundHash:
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()


# --- the prefetch memo -----------------------------------------------------------------------

#: What identifies a file's content for the memo: st_dev, st_ino, st_size, st_mtime_ns,
#: st_ctime_ns (ctime changes on every write and cannot be set back by a user).
_Identity = tuple[int, int, int, int, int]


def _identity(st: os.stat_result) -> _Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Prefetched:
    """One file being hashed ahead of use; ``result`` is set only if it stayed unchanged."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: tuple[int, bytes] | None = None


#: Files changed more recently than this are not prefetched (see the module docstring): 3 s
#: covers the coarsest timestamps in use (FAT's 2 s; ext3's 1 s; a kernel tick elsewhere).
PREFETCH_MIN_AGE_NS = 3_000_000_000

_memo: dict[_Identity, _Prefetched] = {}
_memo_lock = threading.Lock()


def prefetch(path: str) -> bool:
    """Start hashing the regular file ``path`` on a daemon thread, for :func:`hash_file` to
    pick up. Never raises for a bad path (the real read reports it). True if it started."""
    import mmap
    import stat

    opened = time.time_ns()
    try:
        # O_NONBLOCK: opening a FIFO named by a wrong guess must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):
        return False
    st = os.fstat(fd)
    identity = _identity(st)
    entry = _Prefetched()
    settled = st.st_ctime_ns < opened - PREFETCH_MIN_AGE_NS
    with _memo_lock:
        started = settled and stat.S_ISREG(st.st_mode) and st.st_size > 0 and identity not in _memo
        if started:
            _memo[identity] = entry
    if not started:
        os.close(fd)
        return False

    def run() -> None:
        try:
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            with mmap.mmap(fd, st.st_size, flags=flags, prot=mmap.PROT_READ) as view:
                digest = hashlib.sha384(view).digest()
            if _identity(os.fstat(fd)) == identity:
                entry.result = (st.st_size, digest)
        except (OSError, ValueError, AttributeError):
            pass  # no result: hash_file reads the file itself and reports what is wrong
        finally:
            os.close(fd)
            entry.done.set()

    threading.Thread(target=run, name="dstack-mr-prefetch", daemon=True).start()
    return True
