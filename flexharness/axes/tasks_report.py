"""The tasks axis on the controller: its calibration (ECE and Brier score) in a table, and gates on them.

``gates: {tasks: {ece: {max: X}, brier: {max: Y}}}`` bounds the worst (largest; ``min``: the smallest) value
over a (suite, model)'s task cases; a case without probabilities (regression) makes the gate incomplete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from flexharness.axes.base import Scored
from flexharness.names import model_label
from flexharness.results.table import Table
from flexharness.rules.aggregate import GateResult, worst_case_gate
from flexharness.rules.calibration import ECE_BINS, FIELDS


AXIS = "tasks"


def sections(scored: Iterable[Scored]) -> dict[str, list[dict[str, Any]]]:
    """Nothing beyond the cases: calibration is a case field."""
    return {}


def finish(doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """The ``ece`` and ``brier`` gates of each (suite, model)."""
    axis = AXIS
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in doc["cases"]:
        if c["axis"] == axis:
            groups.setdefault((c["suite"], c["model"]), []).append(c)
    results = []
    for (suite, model), cases in groups.items():
        spec = gate_specs.get(suite, {}).get(axis) or {}
        for stat in FIELDS:
            for bound, threshold in (spec.get(stat) or {}).items():
                results.append(_gate(axis, cases, stat, bound, threshold, suite, model))
    return results


def _gate(axis: str, cases: list[Mapping[str, Any]], stat: str, bound: str, threshold: float, suite: str,
          model: str) -> GateResult:
    return worst_case_gate(f"{axis}/{stat}.{bound}", cases, stat, bound, threshold, suite, model,
                           f"cases have no {stat}")


def tables(doc: Mapping[str, Any]) -> list[Table]:
    """Calibration of each task case with probabilities: ECE and Brier score, mean over seeds."""
    rows = tuple((c["name"], model_label(c["model"]), c["ece"], c["brier"])
                 for c in doc["cases"] if c["axis"] == AXIS and c.get("ece") is not None)
    if not rows:
        return []
    title = (f"calibration ({AXIS}: ECE over {ECE_BINS} equal-width confidence bins, Brier score; mean over seeds, "
             "lower is better)")
    return [Table(title, ("case", "model", "ECE", "Brier"), rows, text=("case", "model"),
                  formats={"ECE": ".4f", "Brier": ".4f"}, heading="Calibration")]


def plots(doc: Mapping[str, Any], directory: Path) -> list[Path]:
    """None: the calibration figures are the table's."""
    return []
