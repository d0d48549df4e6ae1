"""The plugin's own error types, each with a message fit to show a user as is, and how to read others'.

pytest prints these without a traceback (see ``collect.py``), so the message
must say where the problem is and what to do about it.
"""

from __future__ import annotations

import reprlib
from typing import Any, Iterator


class FlexError(Exception):
    """Base class: an expected failure with a plain-language message."""


class SuiteError(FlexError):
    """A suite file is invalid: ``file:line: key: what is wrong``."""

    def __init__(self, path: str, line: int | None, key: str | None, message: str) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.message = message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class DataError(FlexError):
    """A data source cannot be read or does not hold what the suite says.

    Found only once the data is read (at run time), but it still names the
    suite file, line and key to fix when the raiser knows them.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.message = message
        self.path, self.line, self.key = path, line, key
        where = f"{path}:{line}" if path and line else path
        super().__init__(": ".join(part for part in (where, key, message) if part))


class ModelLoadError(FlexError):
    """A model cannot be resolved or loaded."""


class TrainingError(FlexError):
    """Fine-tuning failed in a way the user can act on (divergence, out of memory)."""


class CompressionError(FlexError):
    """A compression method cannot be applied to this model as asked."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or while handling, down to the first error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def first_line(exc: BaseException, fallback: str) -> str:
    """The first line of an error's message: library messages run on with advice of their own."""
    return (str(exc).strip().splitlines() or [fallback])[0]


class Unavailable(FlexError):
    """This device or installation cannot run the item at all (the pytest side reports a skip)."""


class _Bounded(reprlib.Repr):
    """reprlib's size limits, also for dict and list subclasses (reprlib would fall back to the full repr)."""

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, dict) and type(x) is not dict:
            return self.repr_dict(x, level)
        if isinstance(x, list) and type(x) is not list:
            return self.repr_list(x, level)
        return super().repr1(x, level)


_BOUNDED = _Bounded()
_BOUNDED.maxstring = _BOUNDED.maxother = 80
_BOUNDED.maxlist = _BOUNDED.maxtuple = _BOUNDED.maxdict = _BOUNDED.maxset = 5
_BOUNDED.maxlevel = 2


def short_repr(value: Any, limit: int = 80) -> str:
    """A repr for error messages: at most ``limit`` characters, and never built in full first.

    A suite's values may be huge (an aliased list, a long string); a message must
    neither flood the terminal nor spend seconds and gigabytes building the text.
    """
    text = _BOUNDED.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
