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
from flexharness.spec import Suite
from flexharness import suite as suite_file

__all__ = ["AXES", "Axis", "Registry", "RegistryError", "RunContext", "Scored", "check_suite", "load_suite"]


def load_suite(path: str | Path, overrides: Mapping[str, Any] | None = None, hub_mirror: str | None = None) -> Suite:
    """Load and validate one suite file; every registered axis reads its own section, every task kind its
    datasets' own keys."""
    return suite_file.load_suite(path, list(AXES), overrides, hub_mirror, KINDS)


def check_suite(suite: Suite, cache: Any = None) -> None:
    """The collection-time checks of the axes the suite uses (they may read data, not models)."""
    for case in suite.cases:
        KINDS.get(case.kind).check_data(case)
    for key in dict.fromkeys(case.axis for case in suite.cases):
        AXES.get(key).check(suite, cache)
    slicing.check(suite)
