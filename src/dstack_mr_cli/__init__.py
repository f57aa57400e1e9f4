"""Command-line interface of dstack-mr.

``main`` holds the app, its shared options and ``measure``; every other command lives in its
own module, which imports ``main`` and registers itself. ``main`` names those modules
(``command_modules``) and imports one only when its command is looked up, so ``dstack-mr
measure`` loads none of them (and there is no import cycle). The console script is
:func:`dstack_mr_cli.entry.run`, which may start hashing a ``measure`` command's initrd before
it imports anything heavy. Importing this package imports nothing.
"""
