"""mkdocs hook: show the Sphinx roles used in docstrings as plain code.

The library's docstrings use reST roles (``:class:`Machine```); Markdown renders those as
``:class:<code>Machine</code>``. This drops the role prefix (and a leading ``~`` meaning
"show the last component"), leaving the code span.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj):<code>(~?)([^<]*)</code>")


def strip_roles(html: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2)
        return f"<code>{name}</code>"

    return _ROLE.sub(repl, html)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return strip_roles(html)
