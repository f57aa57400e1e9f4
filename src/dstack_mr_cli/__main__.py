"""`python -m dstack_mr_cli`: the same as the `dstack-mr` console script."""

from .entry import run

run()
