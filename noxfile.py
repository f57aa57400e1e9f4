"""Developer sessions: `nox -s lint tests`, `nox -s docs` for the site, `nox -s bench`.

Install nox with the `dev` extra (`pip install -e '.[dev]'`). `nox -s tests -P 3.13` runs the
suite on another installed Python (`-P`/`--force-python`: the sessions name no Python of
their own, so `-p` would select none).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]

LINT_PATHS = ("src", "tests", "bench", "fuzz", "docs", "noxfile.py")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("ruff", "format", "--check", *LINT_PATHS)
    session.run("ruff", "check", *LINT_PATHS)
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
def bench(session: nox.Session) -> None:
    """The performance table of bench/README.md (arguments after -- go to the script)."""
    session.install("-e", ".[cli]")
    session.run("python", "bench/bench_measure.py", *session.posargs)


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
