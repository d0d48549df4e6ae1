"""The axes of flexharness: one module per question, one :class:`Axis` interface, one registry.

``load_suite`` and ``check_suite`` read and check a suite file with every
registered axis, so the pytest side, the command line and the tests never name
an axis themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flexharness.axes import slicing
from flexharness.axes.base import Axis, RunContext, Scored
from flexharness.axes.registry import AXES, Registry, RegistryError
from flexharness.engine.kinds import KINDS
from flexharness.errors import SuiteError
from flexharness.spec import Case, Suite
from flexharness import suite as suite_file

__all__ = ["AXES", "Axis", "Registry", "RegistryError", "RunContext", "Scored", "check_suite", "load_suite"]


def load_suite(path: str | Path, overrides: Mapping[str, Any] | None = None, hub_mirror: str | None = None) -> Suite:
    """Load and validate one suite file; every registered axis reads its own section, every task kind its
    datasets' own keys."""
    return suite_file.load_suite(path, list(AXES), overrides, hub_mirror, KINDS)


def check_suite(suite: Suite, cache: Any = None) -> None:
    """The collection-time checks of the axes the suite uses (they may read data, not models)."""
    for case in suite.cases:
        _check_other_kinds(suite, case)
        KINDS.get(case.kind).check_data(case)
    for key in dict.fromkeys(case.axis for case in suite.cases):
        AXES.get(key).check(suite, cache)
    slicing.check(suite)


def _check_other_kinds(suite: Suite, case: Case) -> None:
    """A model of one task kind cannot be scored on another kind's rows (a tagger on multiple-choice items)."""
    for other in AXES.get(case.axis).cache_inputs(case):
        if other.kind != case.kind:
            raise SuiteError(suite.path, case.line, f"{case.axis}.{case.name}",
                             f"dataset '{other.name}' is 'kind: {other.kind}', and this case's model is a "
                             f"{case.kind} model of dataset '{case.dataset.name}': it cannot be scored on "
                             "another kind's rows; give all domains datasets of one kind")

