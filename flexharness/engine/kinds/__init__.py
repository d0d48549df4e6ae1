"""The task kinds of flexharness: one module per kind behind :class:`TaskKind`, one ordered registry.

Suites name a kind with a dataset's ``kind:`` key; the key's module is
imported on first use. ``KINDS`` is handed to the suite reader as a parameter
(``flexharness.axes.load_suite``), so the reader knows no kind and imports no
engine. A plugin or a test adds a kind with ``KINDS.register(key, "module:Class")``.
"""

from __future__ import annotations

import importlib

from flexharness.engine.kinds.base import TaskKind
from flexharness.errors import FlexError
from flexharness.suite.schema import did_you_mean
from flexharness.suite.spec import Case

DEFAULT = "sequence_classification"
BUILT_IN = {
    "sequence_classification": "flexharness.engine.kinds.sequence_classification:SequenceClassification",
    "token_classification": "flexharness.engine.kinds.token_classification:TokenClassification",
    "multiple_choice": "flexharness.engine.kinds.multiple_choice:MultipleChoice",
    "extractive_qa": "flexharness.engine.kinds.extractive_qa:ExtractiveQA",
}

__all__ = ["DEFAULT", "KINDS", "KindRegistry", "KindRegistryError", "TaskKind", "of"]


class KindRegistryError(FlexError):
    """A kind key that is unknown or taken, or a target that is not a kind."""


class KindRegistry:
    """Kind keys in order, each resolved once to a :class:`TaskKind` instance."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._targets = dict(entries)
        self._loaded: dict[str, TaskKind] = {}

    def register(self, key: str, target: str) -> None:
        """Add a kind after the built-in ones; ``target`` is ``"module:ClassName"``."""
        if key in self._targets:
            raise KindRegistryError(f"task kind '{key}' is taken by {self._targets[key]}")
        if ":" not in target:
            raise KindRegistryError(f"task kind '{key}': expected 'module:ClassName', got {target!r}")
        self._targets[key] = target

    def unregister(self, key: str) -> None:
        """Remove a kind added with :meth:`register` (built-in kinds stay)."""
        if key in BUILT_IN:
            raise KindRegistryError(f"task kind '{key}' is built in and cannot be removed")
        self._targets.pop(key, None)
        self._loaded.pop(key, None)

    def keys(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def unknown(self, key: str) -> str | None:
        """Why ``key`` names no kind (with a did-you-mean and the known keys), or None."""
        if key in self._targets:
            return None
        return f"unknown task kind '{key}'{did_you_mean(key, self._targets)}; known: {', '.join(self._targets)}"

    def get(self, key: str) -> TaskKind:
        complaint = self.unknown(key)
        if complaint:
            raise KindRegistryError(complaint)
        if key not in self._loaded:
            module_name, _, attr = self._targets[key].partition(":")
            found = getattr(importlib.import_module(module_name), attr)
            kind = found() if isinstance(found, type) else found
            if not isinstance(kind, TaskKind) or kind.key != key:
                raise KindRegistryError(f"{self._targets[key]} is not a TaskKind with key '{key}'")
            self._loaded[key] = kind
        return self._loaded[key]


KINDS = KindRegistry(BUILT_IN)


def of(case: Case) -> TaskKind:
    """The kind that runs ``case``."""
    return KINDS.get(case.kind)
