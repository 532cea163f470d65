"""MkDocs hook: the docstrings' Sphinx-style roles (``:class:`Router```) read as code.

The package's docstrings name other objects with Sphinx roles, which Markdown renders as
``:class:<code>Router</code>``; this drops the role, and the module path after ``~`` as
Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match[str]) -> str:
    short, name = match.group(1), match.group(2)
    if short:
        name = name.replace(" ", "").rsplit(".", 1)[-1]
    return f"<code>{name}</code>"


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub(_plain, html)
