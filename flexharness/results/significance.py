"""Honest statistics of a results document from the items' per-example outputs.

Every case gets a 95 % percentile-bootstrap interval (examples resampled, and
seeds too where there are several), every (suite, model, axis) an interval of
P_avg and σ_P, and every pair of models evaluated on the same examples a paired
difference per case and in P_avg with a p-value (paired bootstrap; McNemar's
exact test for accuracy with one seed per side), adjusted for the number of
comparisons, plus HELM's win rate per axis. docs/statistics.md says exactly what
is resampled and why. Pure functions of plain data: ``flexharness merge`` redoes
them from the outputs files beside the shards.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from flexharness.rules import stats
from flexharness.rules.baseline import Paired
from flexharness.rules.metrics import predictions_from_outputs

CaseKey = tuple[str, str, str, str]          # suite, model, axis, name (as the results JSON names cases)
SeedOutputs = Mapping[str, Mapping[str, Any]]  # seed -> {"labels", "outputs", "digest"}


@dataclass(frozen=True)
class Settings:
    resamples: int = 1000        # 0 turns the statistics off
    seed: int = 0
    confidence: float = 0.95
    correction: str = "holm"     # or "bh"
    alpha: float = 0.05


@dataclass(frozen=True)
class Measured:
    interval: stats.Interval
    digest: str
    labels: np.ndarray
    predictions: np.ndarray     # seeds × examples
    metrics: tuple[str, ...]


def case_key(case: Mapping[str, Any]) -> CaseKey:
    return case["suite"], case["model"], case["axis"], case["name"]


def annotate(doc: dict[str, Any], outputs: Mapping[CaseKey, SeedOutputs], settings: Settings = Settings(),
             gate_specs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[CaseKey, Measured]:
    """Add ``interval`` to cases, ``p_avg_interval``/``sigma_p_interval`` to aggregates, and the
    ``comparisons`` and ``win_rates`` lists. Cases without outputs (old cache entries, retention scores) get
    ``interval: null`` and take no part in comparisons."""
    measured: dict[CaseKey, Measured] = {}
    for case in doc["cases"]:
        found = _measure(case, outputs.get(case_key(case)), settings) if settings.resamples else None
        case["interval"] = _interval_json(found.interval, settings) if found else None
        if found:
            measured[case_key(case)] = found
    for row in doc["aggregates"]:
        row["p_avg_interval"], row["sigma_p_interval"] = _aggregate_intervals(doc, row, measured, settings)
        levels = _gate_levels((gate_specs or {}).get(row["suite"], {}).get(row["axis"]) or {})
        row["gate_intervals"] = {stat: _levels(doc, row, measured, settings, stat, found)
                                 for stat, found in levels.items()}
    doc["comparisons"] = _comparisons(doc, measured, settings)
    doc["win_rates"] = _win_rates(doc)
    return measured


def baseline_tests(doc: Mapping[str, Any], measured: Mapping[CaseKey, Measured],
                   baseline_outputs: Mapping[CaseKey, SeedOutputs], settings: Settings = Settings()
                   ) -> dict[CaseKey, Paired]:
    """One-sided paired tests of this run's cases against the baseline's, where both kept outputs of the
    same examples: the regression gates use them instead of Welch's test over seeds."""
    tests: dict[CaseKey, Paired] = {}
    for case in doc["cases"]:
        key = case_key(case)
        found = measured.get(key)
        reference = _baseline_case(case, baseline_outputs)
        if not found or not reference:
            continue
        base = _measure({**case, "seeds": {seed: 0.0 for seed in reference}, "score": None}, reference, settings,
                        check=False)
        if base is None or base.digest != found.digest:
            continue
        compared = stats.paired_difference(base.interval, found.interval, alpha=settings.alpha)
        worse = compared.replicates >= 0 if case["higher_is_better"] else compared.replicates <= 0
        p_value = (1 + int(worse.sum())) / (compared.replicates.size + 1)
        tests[key] = Paired(min(1.0, p_value), compared.mde)
    return tests


def _baseline_case(case: Mapping[str, Any], baseline_outputs: Mapping[CaseKey, SeedOutputs]) -> SeedOutputs | None:
    """The baseline's outputs of the same case: same model, else the only model of that suite in the baseline."""
    same = baseline_outputs.get(case_key(case))
    if same:
        return same
    others = {k for k in baseline_outputs if (k[0], k[2], k[3]) == (case["suite"], case["axis"], case["name"])}
    return baseline_outputs[others.pop()] if len(others) == 1 else None


def _measure(case: Mapping[str, Any], found: SeedOutputs | None, settings: Settings,
             check: bool = True) -> Measured | None:
    """The case's interval from its seeds' outputs, when every scored seed has them for the same examples.

    ``check``: the outputs must reproduce the case's score (else they belong to another score, as a
    compression retention ratio does)."""
    seeds = [seed for seed, score in case["seeds"].items() if score is not None]
    if (check and case["score"] is None) or not found or not seeds or any(seed not in found for seed in seeds):
        return None
    runs = [found[seed] for seed in seeds]
    if len({run["digest"] for run in runs}) != 1 or any(len(run["labels"]) == 0 for run in runs):
        return None
    measured = measure_outputs(tuple(case["metric"].split("+")), runs[0]["labels"],
                               [run["outputs"] for run in runs], runs[0]["digest"], settings)
    if check and not math.isclose(measured.interval.estimate, case["score"], rel_tol=1e-6, abs_tol=1e-6):
        return None  # the case score is not this metric of these outputs (e.g. a retention ratio)
    return measured


def measure_outputs(metrics: tuple[str, ...], labels: np.ndarray, outputs: Sequence[np.ndarray], digest: str,
                    settings: Settings = Settings()) -> Measured:
    """The bootstrap interval of the runs' ``outputs`` (one per seed) on the examples ``digest`` names; the
    same examples under the same settings draw the same resamples, which pairs two measurements."""
    predictions = np.stack([predictions_from_outputs(np.asarray(found)) for found in outputs])
    interval = stats.case_interval(metrics, labels, predictions, key=digest, seed=settings.seed,
                                   n_resamples=settings.resamples, confidence=settings.confidence)
    return Measured(interval, digest, labels, predictions, metrics)


def paired_test(left: Measured, right: Measured, settings: Settings = Settings()
                ) -> tuple[stats.Comparison, str, float]:
    """(right − left with its interval, the test's name, its two-sided p-value) on the same examples:
    McNemar's exact test for accuracy with one run per side, else the paired bootstrap."""
    found = stats.paired_difference(left.interval, right.interval, confidence=settings.confidence,
                                    alpha=settings.alpha)
    if left.metrics == ("accuracy",) and left.predictions.shape[0] == right.predictions.shape[0] == 1:
        return found, "McNemar exact", stats.mcnemar(left.labels, left.predictions, right.predictions).p_value
    return found, "paired bootstrap", found.p_value


def _interval_json(interval: stats.Interval, settings: Settings) -> dict[str, Any]:
    return {"low": interval.low, "high": interval.high, "level": settings.confidence,
            "resamples": settings.resamples}


def _aggregate_intervals(doc: Mapping[str, Any], row: Mapping[str, Any], measured: Mapping[CaseKey, Measured],
                         settings: Settings) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    keys = _member_keys(doc, row)
    if row["p_avg"] is None or not keys or any(k not in measured for k in keys):
        return None, None
    p_avg, sigma_p = stats.aggregate_interval([measured[k].interval for k in keys], confidence=settings.confidence)
    return _interval_json(p_avg, settings), _interval_json(sigma_p, settings)


def _gate_levels(spec: Mapping[str, Any]) -> dict[str, list[float]]:
    """The confidence levels the gates of one axis ask for, per statistic."""
    return {stat: [bounds["confidence"]] for stat, bounds in spec.items()
            if isinstance(bounds, Mapping) and "confidence" in bounds}


def _member_keys(doc: Mapping[str, Any], row: Mapping[str, Any]) -> list[CaseKey]:
    return [case_key(c) for c in doc["cases"]
            if (c["suite"], c["model"], c["axis"]) == (row["suite"], row["model"], row["axis"])]


def _levels(doc: Mapping[str, Any], row: Mapping[str, Any], measured: Mapping[CaseKey, Measured],
            settings: Settings, stat: str, levels: list[float]) -> dict[str, list[float]]:
    """``{"0.95": [low, high]}`` per requested level of one aggregate statistic (empty without intervals)."""
    keys = _member_keys(doc, row)
    if row["p_avg"] is None or not keys or any(k not in measured for k in keys) or not settings.resamples:
        return {}
    found = {}
    for level in levels:
        p_avg, sigma_p = stats.aggregate_interval([measured[k].interval for k in keys], confidence=level)
        chosen = p_avg if stat == "p_avg" else sigma_p
        found[f"{level:g}"] = [chosen.low, chosen.high]
    return found


def _comparisons(doc: Mapping[str, Any], measured: Mapping[CaseKey, Measured],
                 settings: Settings) -> list[dict[str, Any]]:
    """Every pair of models per (suite, axis): per case, then P_avg; p-values adjusted within each family."""
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], list[str]] = {}
    for c in doc["cases"]:
        models = groups.setdefault((c["suite"], c["axis"]), [])
        if c["model"] not in models:
            models.append(c["model"])
    for (suite, axis), models in groups.items():
        names = list(dict.fromkeys(c["name"] for c in doc["cases"] if (c["suite"], c["axis"]) == (suite, axis)))
        for a, b in itertools.combinations(models, 2):
            family = [_case_row(suite, axis, name, a, b, measured, settings) for name in names]
            rows += _adjusted([r for r in family if r], settings)
        pooled = [_axis_row(suite, axis, names, a, b, measured, settings)
                  for a, b in itertools.combinations(models, 2)]
        rows += _adjusted([r for r in pooled if r], settings)
    return rows


def _case_row(suite: str, axis: str, name: str, a: str, b: str, measured: Mapping[CaseKey, Measured],
              settings: Settings) -> dict[str, Any] | None:
    left, right = measured.get((suite, a, axis, name)), measured.get((suite, b, axis, name))
    if not left or not right or left.digest != right.digest:
        return None
    found, test, p_value = paired_test(left, right, settings)
    return _row(suite, axis, name, a, b, found, test, p_value, len(left.labels))


def _axis_row(suite: str, axis: str, names: list[str], a: str, b: str, measured: Mapping[CaseKey, Measured],
              settings: Settings) -> dict[str, Any] | None:
    left = {n: measured[(suite, a, axis, n)].interval for n in names if (suite, a, axis, n) in measured}
    right = {n: measured[(suite, b, axis, n)].interval for n in names if (suite, b, axis, n) in measured}
    paired = all(measured[(suite, a, axis, n)].digest == measured[(suite, b, axis, n)].digest for n in left
                 if n in right)
    if len(left) != len(names) or len(right) != len(names) or not paired:
        return None
    found = stats.axis_difference(left, right, confidence=settings.confidence, alpha=settings.alpha)
    return _row(suite, axis, "P_avg", a, b, found, "paired bootstrap", found.p_value, None)


def _row(suite: str, axis: str, name: str, a: str, b: str, found: stats.Comparison, test: str, p_value: float,
         examples: int | None) -> dict[str, Any]:
    return {"suite": suite, "axis": axis, "case": name, "model_a": a, "model_b": b,
            "difference": found.difference, "low": found.low, "high": found.high, "p_value": p_value,
            "p_adjusted": p_value, "test": test, "mde": found.mde, "eval_examples": examples}


def _adjusted(rows: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    if rows:
        adjusted = stats.CORRECTIONS[settings.correction]([r["p_value"] for r in rows])
        for row, p in zip(rows, adjusted):
            row["p_adjusted"], row["correction"] = float(p), settings.correction
    return rows


def _win_rates(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """HELM's win rate per (suite, axis) evaluated with several models, from the case scores."""
    rows = []
    groups: dict[tuple[str, str], dict[str, dict[str, float | None]]] = {}
    direction: dict[tuple[str, str], bool] = {}
    for c in doc["cases"]:
        groups.setdefault((c["suite"], c["axis"]), {}).setdefault(c["model"], {})[c["name"]] = c["score"]
        direction[(c["suite"], c["axis"])] = c["higher_is_better"]
    for (suite, axis), scores in groups.items():
        if len(scores) < 2:
            continue
        rates = stats.win_rates(scores, direction[(suite, axis)])
        rows += [{"suite": suite, "axis": axis, "model": model, "win_rate": rate} for model, rate in rates.items()]
    return rows


def gate_bounds(doc: Mapping[str, Any]) -> dict[tuple[str, str, str], dict[str, dict[str, tuple[float, float]]]]:
    """The interval ends that gates with ``confidence`` judge, per (suite, model, axis)."""
    return {(a["suite"], a["model"], a["axis"]): {stat: {level: tuple(ends) for level, ends in found.items()}
                                                 for stat, found in (a.get("gate_intervals") or {}).items()}
            for a in doc["aggregates"]}
