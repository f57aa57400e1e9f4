"""Developer sessions: `nox -s lint tests`, and `nox -s docs` for the documentation site."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "fuzz", "docs", "noxfile.py")
    session.run("ruff", "check", "src", "tests", "bench", "fuzz", "docs", "noxfile.py")
    session.run("mypy", "src")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site with warnings as errors (into site/, or the directory given after --),
    then execute the example notebook and check the pages against the code."""
    session.install("-e", ".[test,docs]")
    out = session.posargs[0] if session.posargs else "site"
    session.run("mkdocs", "build", "--strict", "-d", out)
    session.run("pytest", "-q", "tests/test_docs.py", env={"DSTACK_MR_DOCS_REQUIRED": "1"})


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing with mutmut, one core module at a time (docs/testing.md):
    `nox -s mutation -- tdvf kernel`, or every module when none is named. Slow (minutes per
    module on 2 cores); results accumulate in mutants/ and `-- report` prints the scores."""
    session.install("-e", ".[test]", "mutmut>=3.3,<4")
    args = session.posargs or ["run"]
    if args[0] not in ("run", "recheck", "report"):
        args = ["run", *args]
    session.run("python", "bench/mutation.py", *args)
