"""MkDocs hook: render the Sphinx roles of the Google-style docstrings as code.

The docstrings cross-reference with Sphinx roles (``:class:`UnlearningModule```,
``:func:`~unlearn_pl.evaluation.evaluate```), which mkdocstrings leaves as text
(``:class:<code>UnlearningModule</code>``). This drops the role and, as Sphinx does for a
leading ``~``, shows only the last component of the path.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):<code>(~?)([^<]*)</code>")


def _code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_code, html)
