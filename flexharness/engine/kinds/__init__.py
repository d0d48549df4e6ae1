"""The task kinds of flexharness: one module per kind behind :class:`TaskKind`, one ordered registry.

Suites name a kind with a dataset's ``kind:`` key; the key's module is
imported on first use. ``KINDS`` is handed to the suite reader as a parameter
(``flexharness.axes.load_suite``), so the reader knows no kind and imports no
engine. A plugin or a test adds a kind with ``KINDS.register(key, "module:Class")``.
"""

from __future__ import annotations

from flexharness.engine.kinds.base import TaskKind
from flexharness.suite.registry import Registry, RegistryError
from flexharness.suite.spec import Case

DEFAULT = "sequence_classification"
BUILT_IN = {
    "sequence_classification": "flexharness.engine.kinds.sequence_classification:SequenceClassification",
    "token_classification": "flexharness.engine.kinds.token_classification:TokenClassification",
    "multiple_choice": "flexharness.engine.kinds.multiple_choice:MultipleChoice",
    "extractive_qa": "flexharness.engine.kinds.extractive_qa:ExtractiveQA",
}

__all__ = ["DEFAULT", "KINDS", "RegistryError", "TaskKind", "of"]

KINDS: Registry[TaskKind] = Registry(BUILT_IN, TaskKind, "task kind")


def of(case: Case) -> TaskKind:
    """The kind that runs ``case``."""
    return KINDS.get(case.kind)
