"""Developer sessions: `nox -s lint tests`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "fuzz", "noxfile.py")
    session.run("ruff", "check", "src", "tests", "bench", "fuzz", "noxfile.py")
    session.run("mypy", "src")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)
