"""MkDocs hook: the runtime's docstrings cite names Sphinx-style (``:class:`Bundle```, ``:func:`embed```).

mkdocstrings renders the name as code and leaves the role in front of it (``:class:<code>Bundle</code>``);
this drops the role, so the page shows the name alone.
"""
from __future__ import annotations

import re

ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|obj|exc):(?=<code>)")


def on_page_content(html, page, config, files):
    return ROLE.sub("", html)
