"""Calibration on the controller: the tasks axis's ECE and Brier score in a table, and gates on them.

``gates: {tasks: {ece: {max: X}, brier: {max: Y}}}`` bounds the worst (largest; ``min``: the smallest) value
over a (suite, model)'s task cases; a case without probabilities (regression) makes the gate incomplete.
"""

from __future__ import annotations

from typing import Any, Mapping

from flexharness.names import model_label
from flexharness.rules.aggregate import GateResult
from flexharness.rules.calibration import ECE_BINS, FIELDS


def gates(doc: Mapping[str, Any], gate_specs: Mapping[str, Mapping[str, Any]], axis: str) -> list[GateResult]:
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
    name = f"{axis}/{stat}.{bound}"
    missing = [c["name"] for c in cases if c.get(stat) is None]
    if missing:
        message = f"incomplete: {len(missing)} of {len(cases)} cases have no {stat} ({', '.join(missing)})"
        return GateResult(name, False, None, threshold, message, suite, model)
    worst = (max if bound == "max" else min)(cases, key=lambda c: c[stat])
    passed = worst[stat] <= threshold if bound == "max" else worst[stat] >= threshold
    message = (f"{stat}.{bound} = {worst[stat]:.4f} ({worst['name']}), required "
               f"{'<=' if bound == 'max' else '>='} {threshold:g}: {'ok' if passed else 'FAILED'}")
    return GateResult(name, passed, worst[stat], threshold, message, suite, model)


def lines(doc: Mapping[str, Any], axis: str) -> list[str]:
    rows = [c for c in doc["cases"] if c["axis"] == axis and c.get("ece") is not None]
    if not rows:
        return []
    width = max(len(f"{c['name']} [{model_label(c['model'])}]") for c in rows) + 2
    return ["", f"calibration ({axis}: ECE over {ECE_BINS} equal-width confidence bins, Brier score; mean over "
                f"seeds, lower is better)", f"{'case':<{width}}{'ECE':>8}{'Brier':>8}",
            *(f"{c['name'] + ' [' + model_label(c['model']) + ']':<{width}}{c['ece']:>8.4f}{c['brier']:>8.4f}"
              for c in rows)]
