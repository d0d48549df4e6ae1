"""Pure aggregation and gate verdicts: P_avg, σ_P and thresholds.

No pytest and no torch here, so every rule can be checked with hypothesis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

@dataclass(frozen=True)
class CaseScore:
    """One case's outcome over its seeds; ``score`` is None when any seed has no result."""

    suite: str
    model: str
    axis: str
    name: str
    higher_is_better: bool
    seed_scores: Mapping[str, float | None]

    @property
    def score(self) -> float | None:
        values = list(self.seed_scores.values())
        if not values or any(v is None or not math.isfinite(v) for v in values):
            return None
        return mean(values)

    @property
    def seed_std(self) -> float | None:
        values = list(self.seed_scores.values())
        if self.score is None:
            return None
        return population_std(values)


@dataclass(frozen=True)
class Aggregate:
    suite: str
    model: str
    axis: str
    n: int
    missing: int
    p_avg: float | None
    sigma_p: float | None
    mean_seed_std: float | None
    higher_is_better: bool


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float | None
    threshold: float
    message: str
    suite: str = ""
    model: str = ""
    extra: dict = field(default_factory=dict)


def mean(values: Iterable[float]) -> float:
    """The mean, kept within [min, max]: dividing a rounded sum can overshoot by an ulp."""
    values = list(values)
    return min(max(math.fsum(values) / len(values), min(values)), max(values))


def population_std(values: Iterable[float]) -> float:
    """σ = sqrt(mean((x - mean)^2)); exactly 0.0 when all values are equal."""
    values = list(values)
    if all(v == values[0] for v in values):
        return 0.0
    centre = mean(values)
    deviations = [v - centre for v in values]
    scale = max(abs(d) for d in deviations)  # > 0: the values differ; scaling keeps tiny squares from underflowing
    std = scale * math.sqrt(math.fsum((d / scale) ** 2 for d in deviations) / len(values))
    return max(std, math.ulp(0.0))  # the values differ, so σ > 0 even where the product underflows


def aggregate(cases: Iterable[CaseScore]) -> list[Aggregate]:
    """One aggregate per (suite, model, axis), in first-seen order."""
    groups: dict[tuple[str, str, str], list[CaseScore]] = {}
    for case in cases:
        groups.setdefault((case.suite, case.model, case.axis), []).append(case)
    result = []
    for (suite, model, axis), members in groups.items():
        scores = [c.score for c in members if c.score is not None]
        stds = [c.seed_std for c in members if c.seed_std is not None]
        missing = len(members) - len(scores)
        complete = missing == 0 and scores
        result.append(Aggregate(
            suite=suite, model=model, axis=axis, n=len(members), missing=missing,
            p_avg=mean(scores) if complete else None,
            sigma_p=population_std(scores) if complete else None,
            mean_seed_std=mean(stds) if stds else None,
            higher_is_better=members[0].higher_is_better,
        ))
    return result


def at_least_as_good(value: float, threshold: float, higher_is_better: bool) -> bool:
    return value >= threshold if higher_is_better else value <= threshold


def _bound_gate(name: str, value: float | None, bound: str, threshold: float,
                higher_is_better: bool, missing_note: str) -> GateResult:
    """``min`` is the worst acceptable value in the metric's direction, ``max`` the literal upper bound."""
    label = name.rsplit("/", 1)[-1]
    if value is None:
        return GateResult(name, False, None, threshold, f"incomplete: {missing_note}; {label} cannot be computed")
    if bound == "min":
        passed = at_least_as_good(value, threshold, higher_is_better)
        op = ">=" if higher_is_better else "<="
        direction = "" if higher_is_better else " (lower is better)"
    else:
        passed = value <= threshold
        op, direction = "<=", ""
    verdict = "ok" if passed else "FAILED"
    return GateResult(name, passed, value, threshold, f"{label} = {value:.4f}, required {op} {threshold:g}{direction}: {verdict}")


def worst_case_gate(name: str, cases: Sequence[Mapping[str, Any]], stat: str, bound: str, threshold: float,
                    suite: str, model: str, missing: str, spec: str = ".4f") -> GateResult:
    """A bound on the worst case of a group: ``min`` on the smallest ``stat``, ``max`` on the largest; incomplete
    (``missing`` names what the cases lack) when a case has none."""
    without = [c["name"] for c in cases if c.get(stat) is None]
    if without:
        message = f"incomplete: {len(without)} of {len(cases)} {missing} ({', '.join(without)})"
        return GateResult(name, False, None, threshold, message, suite, model)
    worst = (min if bound == "min" else max)(cases, key=lambda c: c[stat])
    passed = worst[stat] >= threshold if bound == "min" else worst[stat] <= threshold
    message = (f"{stat}.{bound} = {format(worst[stat], spec)} ({worst['name']}), required "
               f"{'>=' if bound == 'min' else '<='} {threshold:g}: {'ok' if passed else 'FAILED'}")
    return GateResult(name, passed, worst[stat], threshold, message, suite, model)


def floor_gate(name: str, value: float | None, floor: float, higher_is_better: bool, missing_note: str) -> GateResult:
    """A floor in the metric's direction (``min``); fails as incomplete when ``value`` is None."""
    return _bound_gate(name, value, "min", floor, higher_is_better, missing_note)


Bounds = Mapping[str, Mapping[str, "tuple[float, float]"]]   # stat -> confidence level (as text) -> (low, high)


def axis_gates(agg: Aggregate, spec: Mapping[str, Mapping[str, float]], intervals: Bounds | None = None
               ) -> list[GateResult]:
    """Gates ``p_avg`` and ``sigma_p`` (each with ``min``/``max``) for one aggregate.

    A stat with ``confidence: C`` is judged by the end of its C bootstrap interval that is worst for the
    bound (the lower end of P_avg against a floor, the upper end against a ceiling): it passes only when
    the whole interval clears the threshold. ``intervals`` holds those ends; without them the gate is
    incomplete.
    """
    results = []
    note = f"{agg.missing} of {agg.n} {agg.axis} cases have no score"
    values = {"p_avg": agg.p_avg, "sigma_p": agg.sigma_p}
    for stat in ("p_avg", "sigma_p"):
        bounds = dict(spec.get(stat) or {})
        confidence = bounds.pop("confidence", None)
        for bound, threshold in bounds.items():
            name = f"{agg.axis}/{stat}.{bound}"
            # σ_P is a spread: it has no direction, so its bounds are literal.
            hib = agg.higher_is_better if stat == "p_avg" else True
            if confidence is None:
                gate = _bound_gate(name, values[stat], bound, threshold, hib, note)
            else:
                gate = _confident_gate(name, values[stat], bound, threshold, hib, note, confidence,
                                       ((intervals or {}).get(stat) or {}).get(f"{confidence:g}"))
            results.append(GateResult(**{**gate.__dict__, "suite": agg.suite, "model": agg.model}))
    return results


def _confident_gate(name: str, value: float | None, bound: str, threshold: float, higher_is_better: bool,
                    missing_note: str, confidence: float, interval: "tuple[float, float] | None") -> GateResult:
    label = f"{name.rsplit('/', 1)[-1]} at {confidence:.0%} confidence"
    if value is None:
        return GateResult(name, False, None, threshold, f"incomplete: {missing_note}; {label} cannot be computed")
    if interval is None:
        return GateResult(name, False, None, threshold,
                          f"incomplete: no {confidence:.0%} interval (it needs every case's per-example outputs and "
                          f"--flex-bootstrap above 0); {label} cannot be judged")
    low, high = interval
    from_below = bound == "min" and higher_is_better
    worst, end = (low, "lower") if from_below else (high, "upper")
    if bound == "min":
        passed, op = at_least_as_good(worst, threshold, higher_is_better), ">=" if higher_is_better else "<="
    else:
        passed, op = worst <= threshold, "<="
    return GateResult(name, passed, worst, threshold,
                      f"{label}: {end} end {worst:.4f} of [{low:.4f}, {high:.4f}] (estimate {value:.4f}), "
                      f"required {op} {threshold:g}: {'ok' if passed else 'FAILED'}")


def case_min_gate(cases: list[CaseScore], threshold: float, suite: str, model: str) -> GateResult:
    """Every case must be at least ``threshold`` good, in its own metric's direction."""
    name = "case_min"
    missing = [c.name for c in cases if c.score is None]
    if missing:
        return GateResult(name, False, None, threshold,
                          f"incomplete: {len(missing)} of {len(cases)} cases have no score ({', '.join(missing)})",
                          suite, model)
    failing = [c for c in cases if not at_least_as_good(c.score, threshold, c.higher_is_better)]
    worst = min(cases, key=lambda c: c.score if c.higher_is_better else -c.score) if cases else None
    value = worst.score if worst else None
    if failing:
        names = ", ".join(f"{c.axis}/{c.name} = {c.score:.4f}" for c in failing)
        return GateResult(name, False, value, threshold, f"below {threshold:g}: {names}", suite, model)
    return GateResult(name, True, value, threshold,
                      f"all {len(cases)} cases reach {threshold:g} (worst {value:.4f}): ok" if cases else "no cases",
                      suite, model)


def case_gate(case: CaseScore, floor: float) -> GateResult:
    """One case's own floor, in its metric's direction; named ``cases/AXIS/NAME.min``."""
    gate = _bound_gate(f"cases/{case.axis}/{case.name}.min", case.score, "min", floor, case.higher_is_better,
                       "the case has no score")
    return GateResult(**{**gate.__dict__, "suite": case.suite, "model": case.model})


def suite_gates(cases: list[CaseScore], specs: Mapping[str, Mapping],
                intervals: Mapping[tuple[str, str, str], Bounds] | None = None) -> list[GateResult]:
    """Axis gates, ``case_min`` and per-case floors of every (suite, model), from the suites' ``gates:`` specs.

    A case named in ``cases`` but not in this run (deselected with ``-k``/``-m``) has no gate.
    ``intervals`` maps (suite, model, axis) to the interval ends that gates with ``confidence`` need.
    """
    gates = []
    for summary in aggregate(cases):
        spec = specs.get(summary.suite, {}).get(summary.axis)
        if spec:
            gates.extend(axis_gates(summary, spec, (intervals or {}).get((summary.suite, summary.model, summary.axis))))
    for suite, model in dict.fromkeys((c.suite, c.model) for c in cases):
        members = [c for c in cases if c.suite == suite and c.model == model]
        threshold = specs.get(suite, {}).get("case_min")
        if threshold is not None:
            gates.append(case_min_gate(members, threshold, suite, model))
        floors = specs.get(suite, {}).get("cases") or {}
        gates.extend(case_gate(c, floors[f"{c.axis}/{c.name}"]) for c in members if f"{c.axis}/{c.name}" in floors)
    return gates
