"""mkdocs hook: render the ``dstack-mr`` CLI reference from the typer app at build time.

``docs/cli.md`` holds the marker ``<!-- cli-reference -->``; this hook replaces it with each
command's ``--help`` text, exactly as a terminal shows it (fixed 88-column width, so the
output does not depend on the machine building the site). No network, no plugin: the help is
whatever ``dstack_mr_cli.main.app`` says, so the page cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- cli-reference -->"
WIDTH = 88


def _help(command: Any, name: str, parent: Any) -> str:
    # Typer builds on its own copy of click: use the command's own Context class.
    ctx = command.context_class(
        command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    return str(command.get_help(ctx)).rstrip()


def cli_reference() -> str:
    """Markdown: one section per command (the group first), each with its full help."""
    import typer.main

    from dstack_mr_cli.main import app

    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="dstack-mr", terminal_width=WIDTH)
    out = ["## dstack-mr", "", "```text", _help(group, "dstack-mr", None), "```", ""]
    for name in group.list_commands(root):  # type: ignore[attr-defined]
        command = group.get_command(root, name)  # type: ignore[attr-defined]
        if command is None or command.hidden:
            continue
        summary = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
        out += [f"## dstack-mr {name}", "", summary, ""]
        out += ["```text", _help(command, name, root), "```", ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())
