"""The ``dstack-mr`` console script: start hashing ``measure``'s initrd, then run the app.

Importing the CLI stack (typer, click, attrs, the library) takes ~0.1 s, and the initrd is
most of the bytes ``measure`` hashes. So before importing any of it, :func:`run` guesses from
the command line which initrd a ``measure`` will hash and hands it to
:func:`dstack_mr.files.prefetch`, which hashes it on a thread meanwhile. The guess is cheap
and may be wrong: the library uses a prefetched digest only for the very file it opens,
unchanged (see :mod:`dstack_mr.files`), so a wrong guess costs work, never a result. This
module imports only the standard library's cheapest parts; keep it so.
"""

from __future__ import annotations

import gc
import os
import stat
import sys

#: What the ``cli`` extra installs; without them the command cannot run.
CLI_DEPENDENCIES = ("typer", "click")
MISSING_CLI = "the command needs the cli extra (typer, click): pip install 'dstack-mr[cli]'"

#: metadata.json is a few hundred bytes (the library refuses more than 1 MiB).
_MAX_METADATA_SIZE = 1 << 20


def measure_initrd(argv: list[str]) -> str | None:
    """The initrd a ``dstack-mr measure`` command line would hash, or None.

    ``argv`` without the program name. Global options other than ``--debug`` and commands
    other than a TDX ``measure`` give None; so does ``--help``. The first argument after
    ``measure`` that names a regular file of at most 1 MiB holding a JSON object with a
    string ``initrd`` is taken as the metadata; the initrd is that name next to it. A name
    that is absolute, has a ``..`` component or leads out of the directory through a symlink
    gives None: the library refuses those, and a guess never reads outside the image.
    """
    args = iter(argv)
    command = next((a for a in args if a != "--debug"), None)
    if command != "measure":
        return None
    rest = list(args)
    if "--snp" in rest or "--help" in rest:
        return None
    for arg in rest:
        if arg.startswith("-"):
            continue
        info = _json_object(arg)
        if info is None:
            continue
        name = info.get("initrd")
        if not isinstance(name, str) or not name or os.path.isabs(name):
            return None
        if ".." in name.replace("\\", "/").split("/"):
            return None
        base = os.path.dirname(arg)
        initrd = os.path.join(base, name)
        # A symlink out of the image directory is refused by the library; never read it here.
        try:
            real_base = os.path.realpath(base or ".")
            inside = os.path.commonpath([real_base, os.path.realpath(initrd)]) == real_base
        except (OSError, ValueError):  # a NUL byte or a lone surrogate in the name
            return None
        return initrd if inside else None
    return None


def _json_object(path: str) -> dict[str, object] | None:
    """The JSON object in ``path`` if it is a small regular file holding one, else None.

    Only a regular file is opened: a FIFO or device given as an argument must not be read
    (or blocked on) by a guess."""
    import json

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_METADATA_SIZE:
            return None
        with open(path, "rb") as f:
            obj = json.loads(f.read(_MAX_METADATA_SIZE + 1))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def run() -> None:
    """Console-script entry point."""
    initrd = measure_initrd(sys.argv[1:])
    if initrd is not None:
        from dstack_mr.files import prefetch

        prefetch(initrd)
    # Importing allocates a great many objects and frees few: the cyclic collector's passes
    # over them are wasted work (~6% of the start-up's CPU time).
    gc.disable()
    try:
        from .main import run as run_app
    except ModuleNotFoundError as exc:
        if exc.name not in CLI_DEPENDENCIES:
            raise
        # The library installed without the CLI's extra: say how to get it, not a traceback.
        sys.stderr.write(f"dstack-mr: {MISSING_CLI}\n")
        sys.exit(2)
    finally:
        gc.enable()
    run_app()
