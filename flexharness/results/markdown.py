"""Markdown escaping of a results document: names and messages are user input, and a ``|`` in a case name
must not split a table cell, nor a ``*`` or a backtick turn the rest of a line into markup.

Every Markdown renderer works on :func:`escaped` (the document with its name and message fields escaped
once), so no table builder has to remember it; the HTML page reads those tables back and undoes the escapes
(``html.inline``). Only the fields in :data:`NAMES` change: no renderer compares them with a constant.
"""

from __future__ import annotations

import re
from typing import Any

SPECIAL = re.compile(r"([\\`*\[\]<>|])")
NAMES = frozenset({"suite", "name", "task", "case", "domain", "source", "target", "message", "file", "id"})


def escape(text: str) -> str:
    """``text`` with every character that could break a table cell or open markup backslash-escaped; line
    breaks as spaces."""
    return SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def escaped(value: Any) -> Any:
    """A copy of a results document (or any part of it) with the strings under :data:`NAMES` escaped."""
    if isinstance(value, dict):
        return {k: escape(v) if k in NAMES and isinstance(v, str) else escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escaped(v) for v in value]
    return value
