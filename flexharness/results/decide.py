"""Deciding, case by case, whether run B is better than run A, worse, or not distinguishable from it.

A difference of point estimates is no verdict. Where both runs stored per-example outputs for the same
examples (the same evaluation digest), the case is tested paired: both scored on the same bootstrap
resamples of the examples (``rules.stats.paired_difference``), better or worse only when the two-sided
p-value is below ``ALPHA``. Without outputs on both sides, the two runs' own 95 % intervals decide, and only
when they do not overlap (a conservative test). Without either, the verdict is the point estimate's, marked
untested.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

from flexharness.results import significance
from flexharness.rules import stats

ALPHA = 0.05
Outputs = Mapping[significance.CaseKey, significance.SeedOutputs]


def measured(doc: Mapping[str, Any], outputs: Outputs) -> dict[significance.CaseKey, significance.Measured]:
    """The cases of ``doc`` that its outputs reproduce, with their bootstrap intervals (``doc`` is not changed)."""
    return significance.annotate(copy.deepcopy(dict(doc)), outputs) if outputs else {}


def decide(rows: Sequence[dict[str, Any]], a: Mapping[significance.CaseKey, significance.Measured],
           b: Mapping[significance.CaseKey, significance.Measured], alpha: float = ALPHA) -> None:
    """Set each compared row's ``verdict``, ``test`` (paired bootstrap, intervals, none) and ``p_value``."""
    for row in rows:
        row["test"], row["p_value"] = "none", None
        if "model_a" not in row or "model_b" not in row or row["delta"] is None:
            continue
        found_a = a.get((row["suite"], row["model_a"], row["axis"], row["name"]))
        found_b = b.get((row["suite"], row["model_b"], row["axis"], row["name"]))
        if found_a and found_b and found_a.digest == found_b.digest:
            compared = stats.paired_difference(found_a.interval, found_b.interval)
            row["test"], row["p_value"] = "paired bootstrap", compared.p_value
            row["verdict"] = _direction(row) if compared.p_value < alpha else "not distinguishable"
        elif row.get("a_interval") and row.get("b_interval"):
            row["test"] = "intervals"
            apart = (row["a_interval"]["high"] < row["b_interval"]["low"]
                     or row["b_interval"]["high"] < row["a_interval"]["low"])
            row["verdict"] = _direction(row) if apart else "not distinguishable"
        elif row["verdict"] in ("better", "worse"):
            row["verdict"] += " (untested)"


def _direction(row: Mapping[str, Any]) -> str:
    return "better" if (row["delta"] > 0) == row["higher_is_better"] else "worse"
