"""``python -m dstack_mr`` runs the CLI."""

from dstack_mr_cli.main import run

run()
