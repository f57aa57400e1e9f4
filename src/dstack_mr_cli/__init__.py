"""Command-line interface of dstack-mr.

``main`` holds the app, its shared options and ``measure``; every other command lives in its
own module, which imports ``main`` and registers itself. Importing the package imports them all
here, so ``main`` never imports its command modules (no import cycle). ``--help`` lists
``measure`` first, then the others in the order imported (alphabetical, as sorted here).
"""

from . import diagnose_cmd, example_cmd, main, measurement_cmd, verify_cmd  # noqa: F401

__all__ = ["main"]
