"""Checked reading of one YAML mapping: typed keys, defaults, did-you-mean.

Every check raises :class:`SuiteError` pointing at the file, the line and the
dotted key, so a user can fix a suite without reading our code.
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from typing import Any, Callable, Iterable

from flexharness.errors import SuiteError, short_repr
from flexharness.suite.yamlio import Located

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a finite number", bool: "true or false",
               list: "a list", dict: "a mapping"}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Reader:
    """Reads keys of one mapping; ``prefix`` is the dotted path used in messages."""

    def __init__(self, data: Any, path: str, prefix: str = "", line: int = 0) -> None:
        self.path = path
        self.prefix = prefix
        if data is None:
            data = Located()
        if not isinstance(data, dict):
            raise SuiteError(path, line or None, prefix or None,
                             f"expected a mapping of keys to values, got {_describe(data)}")
        self.data = data
        self.line = getattr(data, "line", line) or line

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def line_of(self, name: str) -> int:
        return self.data.line_of(name) if isinstance(self.data, Located) else self.line

    def error(self, name: str | None, message: str) -> SuiteError:
        line = self.line_of(name) if name else self.line
        return SuiteError(self.path, line or None, self.key(name) if name else (self.prefix or None), message)

    def only(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for name in self.data:
            if name not in allowed:
                raise self.error(name, f"unknown key{did_you_mean(name, allowed)}; "
                                       f"allowed here: {', '.join(sorted(allowed))}")

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def required(self, name: str) -> Any:
        if name not in self.data:
            where = f"'{self.prefix}'" if self.prefix else "the top level"
            raise SuiteError(self.path, self.line or None, self.key(name), f"required key missing from {where}")
        return self.data[name]

    def child(self, name: str) -> "Reader":
        reader = Reader(self.data.get(name), self.path, self.key(name), self.line_of(name))
        if name in self.data:
            reader.line = self.line_of(name)  # errors about the whole mapping point at its key
        return reader

    def typed(self, name: str, kind: type, default: Any = None, *, required: bool = False,
              check: Callable[[Any], str | None] | None = None) -> Any:
        """The value of ``name`` as ``kind``; ``check`` returns a complaint or None."""
        if required:
            self.required(name)
        if name not in self.data or self.data[name] is None:
            return default
        value = coerce(self.data[name], kind)
        if value is _INVALID:
            raise self.error(name, f"expected {_TYPE_NAMES[kind]}, got {_describe(self.data[name])}")
        complaint = check(value) if check else None
        if complaint:
            raise self.error(name, complaint)
        return value

    def str_or_list(self, name: str, default: tuple[str, ...] = (), *, required: bool = False) -> tuple[str, ...]:
        if required:
            self.required(name)
        value = self.data.get(name)
        if value is None:
            return default
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
            raise self.error(name, f"expected a string or a non-empty list of strings, got {_describe(value)}")
        return tuple(items)

    def seeds(self, name: str) -> tuple[int, ...] | None:
        """A seed or a list of seeds under ``name`` (None when absent), checked by :func:`seed_problem`."""
        if not self.has(name):
            return None
        raw = self.raw(name)
        seeds = [raw] if isinstance(raw, int) and not isinstance(raw, bool) else raw
        problem = seed_problem(seeds)
        if problem:
            raise self.error(name, problem)
        return tuple(seeds)


_INVALID = object()


SEED_LIMIT = 2 ** 32   # numpy's seeding limit


def seed_problem(seeds: Any) -> str | None:
    """Why ``seeds`` is no list of seeds, or None: the one rule for every place that reads seeds."""
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        return "expected a non-empty list of non-negative integers, e.g. [0, 1, 2]"
    if len(set(seeds)) != len(seeds):
        return "seeds must be distinct"
    if max(seeds) >= SEED_LIMIT:
        return f"seeds must be below 2**32 = {SEED_LIMIT} (numpy's seeding limit)"
    return None


def coerce(value: Any, kind: type) -> Any:
    """Accept what a person would write: ``2e-5`` (a string to YAML 1.1) is a number."""
    if kind is bool:
        return value if isinstance(value, bool) else _INVALID
    if isinstance(value, bool):
        return _INVALID
    if kind is int:
        return value if isinstance(value, int) else _INVALID
    if kind is float:
        try:
            number = float(value) if isinstance(value, (int, float, str)) else math.nan
        except (ValueError, OverflowError):
            return _INVALID
        return number if math.isfinite(number) else _INVALID  # .nan or .inf would pass every check
    return value if isinstance(value, kind) else _INVALID


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {short_repr(value)}"


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def open_fraction(value: float) -> str | None:
    return None if 0 < value < 1 else "must be between 0 and 1 (exclusive)"


HIDDEN = ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")   # controls, format (bidi overrides, zero-width), line separators


def nfc(text: str) -> str:
    """One spelling per name: NFC and NFD forms of one name display alike, so they must be one name."""
    return unicodedata.normalize("NFC", text)


def display_name(name: str) -> str | None:
    """Why a name cannot be shown as it is: a control, bidi or zero-width character would hide or reorder text."""
    hidden = next((ch for ch in name if unicodedata.category(ch) in HIDDEN), None)
    if hidden is not None:
        return (f"must not hold control, bidi or zero-width characters (found U+{ord(hidden):04X}); names are shown "
                "in terminals, reports and test ids")
    return None


def case_name(name: str) -> str | None:
    """Case names become test ids: non-empty, and nothing that breaks a node id or hides text."""
    if not name.strip() or any(bad in name for bad in ("::", "[", "]", "\n", "\r")):
        return "must be a non-empty name without '::', '[', ']' or line breaks (it becomes part of the test id)"
    return display_name(name)
