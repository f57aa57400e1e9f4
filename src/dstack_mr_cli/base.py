"""What every ``dstack-mr`` command shares: the typer/click base, ``--debug``, error mapping.

Commands are declared with :class:`App` (a ``typer.Typer``) so each one accepts ``--debug``
and the ``true|false`` options' bare aliases, whoever adds the command. Library errors become
one line on stderr and exit code 2; ``--debug`` adds the traceback, never another exit code.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

import click
import typer
import typer.core
import typer.main
import typer.models

from dstack_mr import DstackMrError

EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2

#: The metavar of options that take ``true|false`` (as the reference's clap options do).
BOOL_METAVAR = "true|false"


class State:
    """Process-wide CLI settings made by options before any command body runs."""

    debug = False


class _ArgumentWithHelp(typer.core.TyperArgument):
    # typer < 0.25 sets ``help`` before calling click's Argument.__init__, which from click
    # 8.5 takes ``help`` itself and resets it to None: every argument's help vanished.
    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, help=help, **kwargs)
        self.help = help


typer.main.TyperArgument = _ArgumentWithHelp  # type: ignore[attr-defined]


def _set_debug(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        State.debug = True


def debug_option() -> click.Option:
    return click.Option(
        ["--debug"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_debug,
        help="On an error, also print the traceback (the exit code stays the same).",
    )


class Command(typer.core.TyperCommand):
    """A typer command that also takes ``--debug`` and bare ``--FLAG`` for ``--FLAG true``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(debug_option())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_bool_aliases(self.params, args))

    def format_arguments(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Nothing: typer's options section already lists the arguments (click 8.5+ would
        print them a second time as "Positional arguments")."""


# Words taken as the option's value (so that "--smm TRUE" is reported as a bad value).
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def expand_bool_aliases(params: list[click.Parameter], args: list[str]) -> list[str]:
    """``--smm`` alone means ``--smm=true`` for options taking ``true|false``.

    Rewritten before parsing so that a bare flag never swallows the argument after it.
    """
    names = {
        name
        for p in params
        if isinstance(p, click.Option) and p.metavar == BOOL_METAVAR
        for name in p.opts
    }
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        following = args[i + 1] if i + 1 < len(args) else None
        bare = arg in names and (following or "").lower() not in _BOOL_WORDS
        out.append(f"{arg}=true" if bare else arg)
    return out


def _command_name(info: typer.models.CommandInfo) -> str:
    assert info.callback is not None
    return info.name or typer.main.get_command_name(info.callback.__name__)


class Group(typer.core.TyperGroup):
    """A typer group that loads a command only when it is looked up: the module declaring it
    is imported then (``App(command_modules=...)``), and its declaration becomes click
    parameters then, so that ``dstack-mr measure`` neither imports nor builds ``diagnose``'s
    and ``verify``'s modules and dozens of options. ``commands`` loads them all."""

    app: App  # set on the per-app subclass App makes

    @property  # type: ignore[override]
    def commands(self) -> dict[str, click.Command]:
        for name in self.list_commands(None):  # type: ignore[arg-type]
            self._build(name)
        return self._built

    @commands.setter
    def commands(self, value: Any) -> None:
        self._built: dict[str, click.Command] = dict(value)

    def _declaration(self, name: str) -> typer.models.CommandInfo | None:
        return next((i for i in self.app.deferred if _command_name(i) == name), None)

    def _build(self, name: str) -> click.Command | None:
        if name not in self._built:
            info = self._declaration(name)
            if info is None and name in self.app.command_modules:
                importlib.import_module(self.app.command_modules[name])
                info = self._declaration(name)
            if info is not None:
                self._built[name] = typer.main.get_command_from_info(
                    info,
                    pretty_exceptions_short=self.app.pretty_exceptions_short,
                    rich_markup_mode=self.app.rich_markup_mode,
                )
        return self._built.get(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._build(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Commands declared in the app's own module first (``measure``), then those of
        ``command_modules`` in its order, imported or not, then any other."""
        lazy = self.app.command_modules
        declared = [_command_name(info) for info in self.app.deferred]
        names = [name for name in declared if name not in lazy] + list(lazy)
        return names + [name for name in [*declared, *self._built] if name not in names]


class App(typer.Typer):
    """``typer.Typer`` whose commands are :class:`Command` unless a command says otherwise,
    built lazily by :class:`Group` (the app needs a callback, so that typer makes a group).

    ``command_modules`` maps a command's name to the module that declares it (with
    ``@app.command``); the module is imported when the command is first looked up.
    """

    def __init__(self, *, command_modules: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        group: type[Group] = type("AppGroup", (Group,), {})
        super().__init__(cls=group, **kwargs)
        group.app = self
        #: The commands' declarations, in registration order; typer's list stays empty.
        self.deferred: list[typer.models.CommandInfo] = []
        self.command_modules: dict[str, str] = dict(command_modules or {})

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        kwargs.setdefault("cls", Command)
        register: Callable[[Any], Any] = super().command(*args, **kwargs)

        def decorator(f: Any) -> Any:
            result = register(f)
            self.deferred.append(self.registered_commands.pop())
            return result

        return decorator


def bool_option(name: str, help: str) -> Any:
    """An option taking ``true|false`` (the bare ``name`` means true)."""
    return typer.Option(name, metavar=BOOL_METAVAR, help=f"{help} Bare {name} means true.")


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    # clap's bool parser: exactly "true" or "false".
    if value not in ("true", "false"):
        raise typer.BadParameter(f"{value!r} is not 'true' or 'false'")
    return value == "true"


@contextmanager
def library_errors() -> Iterator[None]:
    """Turn the library's errors into one line on stderr and exit code 2."""
    try:
        yield
    except DstackMrError as exc:
        _fail(str(exc))


@contextmanager
def write_errors(path: object) -> Iterator[None]:
    """Turn an OSError writing ``path`` into one line on stderr and exit code 2, as
    :func:`library_errors` does for the library's errors (``--debug``: the traceback too)."""
    try:
        yield
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror}")


def _fail(message: str) -> NoReturn:
    """Called in an ``except`` block: the traceback when ``--debug``, then ``error: ...``."""
    if State.debug:
        traceback.print_exc(file=sys.stderr)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT) from None
