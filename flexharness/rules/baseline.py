"""Baselines and regression gates: did this run get worse than a saved one?

The rule, per case and per axis P_avg, in the metric's direction: a drop
fails when it goes beyond the tolerance (``abs`` or ``rel`` to the baseline),
and, when both sides have two or more seeds, only when it is also significant
by a one-sided Welch t-test on the seed scores (alpha 0.05 unless the suite
says otherwise). For P_avg the samples are the per-seed means over the common
cases. Everything below takes plain data, so ``flexharness merge`` recomputes
exactly what a pytest run decided.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from flexharness.rules import aggregate as agg
from flexharness.rules import documents
from flexharness.errors import FlexError
from flexharness.files import RESULTS_LIMIT, read_text
from flexharness.names import model_label

KIND = "flexharness-baseline"
VERSION = 1
DEFAULT_ALPHA = 0.05


class BaselineError(FlexError):
    """A baseline file cannot be read or is not a baseline."""


@dataclass(frozen=True)
class Tolerance:
    """How far a score may move in the bad direction before it is a regression."""

    kind: str = "abs"          # "abs": in metric units; "rel": a fraction of the baseline value
    value: float = 0.0
    alpha: float = DEFAULT_ALPHA

    def limit(self, base: float, higher_is_better: bool) -> float:
        margin = self.value if self.kind == "abs" else self.value * abs(base)
        return base - margin if higher_is_better else base + margin

    def describe(self) -> str:
        return f"abs {self.value:g}" if self.kind == "abs" else f"rel {self.value:.4g} ({self.value:.2%})"

    def to_json(self) -> dict[str, float]:
        return {self.kind: self.value, "alpha": self.alpha}


def parse_tolerance(text: str) -> Tolerance:
    """``0.02`` or ``abs:0.02`` (metric units), ``rel:0.05`` or ``5%`` (relative); raises ValueError."""
    raw = str(text).strip()
    kind, _, number = raw.rpartition(":") if ":" in raw else ("abs", "", raw)
    if number.endswith("%"):
        kind, number = "rel", number[:-1]
        scale = 0.01
    else:
        scale = 1.0
    try:
        value = float(number) * scale
    except ValueError:
        value = -1.0
    if kind not in ("abs", "rel") or not value >= 0 or not math.isfinite(value):
        raise ValueError(f"--flex-tolerance: expected abs:0.02, rel:0.05, 5% or a plain number, got {text!r}")
    return Tolerance(kind, value)


def tolerance_of(spec: Mapping[str, float] | None, override: Tolerance | None = None) -> Tolerance:
    """The command line's tolerance wins over the suite's; the suite's alpha is kept either way."""
    spec = spec or {}
    alpha = spec.get("alpha", DEFAULT_ALPHA)
    if override is not None:
        return Tolerance(override.kind, override.value, alpha)
    kind = "rel" if "rel" in spec else "abs"
    return Tolerance(kind, spec.get(kind, 0.0), alpha)


@dataclass(frozen=True)
class Baseline:
    """A saved run: per-seed case scores, with what is needed to tell whether it is comparable."""

    path: str
    harness_version: str | None
    suites: Mapping[str, str | None]                    # suite name -> suite fingerprint
    cases: tuple[agg.CaseScore, ...]
    fingerprints: Mapping[tuple[str, str, str], str] = field(default_factory=dict)        # (suite, axis, name)
    model_prints: Mapping[tuple[str, str], str] = field(default_factory=dict)             # (suite, model)


def make(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A baseline document from a results document: scores and identities, no timings."""
    keep = ("suite", "model", "axis", "name", "metric", "higher_is_better", "fingerprint", "model_fingerprint",
            "seeds", "score", "seed_std")
    return {
        "kind": KIND, "version": VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "harness_version": doc.get("environment", {}).get("flexharness"),
        "suites": [{"name": s["name"], "fingerprint": s.get("fingerprint")} for s in doc.get("suites", [])],
        "cases": [{k: c.get(k) for k in keep} for c in doc["cases"]],
        "aggregates": doc["aggregates"],
    }


def parse(doc: Any, path: str) -> Baseline:
    """A baseline from a baseline file or from any results JSON (a merged one too)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise BaselineError(f"{path}: not a flexharness baseline or results file (no 'cases' list)")
    complaint = documents.problem(doc, baseline=True)
    if complaint:
        raise BaselineError(f"{path}: {complaint}; it is not a baseline flexharness wrote")
    cases, prints, models = [], {}, {}
    try:
        for c in doc["cases"]:
            seeds = {str(k): (float(v) if v is not None else None) for k, v in c["seeds"].items()}
            cases.append(agg.CaseScore(c["suite"], c["model"], c["axis"], c["name"], bool(c["higher_is_better"]),
                                       seeds))
            if c.get("fingerprint"):
                prints[(c["suite"], c["axis"], c["name"])] = c["fingerprint"]
            if c.get("model_fingerprint"):
                models[(c["suite"], c["model"])] = c["model_fingerprint"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BaselineError(f"{path}: malformed case entry ({type(exc).__name__}: {exc})") from None
    version = doc.get("harness_version") or (doc.get("environment") or {}).get("flexharness")
    suites = {s["name"]: s.get("fingerprint") for s in doc.get("suites", []) if isinstance(s, dict) and "name" in s}
    return Baseline(str(path), version, suites, tuple(cases), prints, models)


def load(path: str | Path) -> Baseline:
    try:
        text = read_text(path, RESULTS_LIMIT)
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text, parse_constant=documents.strict_constant)
    except ValueError as exc:
        raise BaselineError(f"baseline {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BaselineError(f"baseline {path} nests too deeply to be a baseline") from None
    return parse(doc, str(path))


def to_json(baseline: Baseline) -> dict[str, Any]:
    """The baseline as it travels inside a results document, so that a merge can redo the gates."""
    return {
        "path": baseline.path, "harness_version": baseline.harness_version,
        "suites": [{"name": n, "fingerprint": f} for n, f in baseline.suites.items()],
        "cases": [{"suite": c.suite, "model": c.model, "axis": c.axis, "name": c.name,
                   "higher_is_better": c.higher_is_better, "seeds": dict(c.seed_scores),
                   "fingerprint": baseline.fingerprints.get((c.suite, c.axis, c.name)),
                   "model_fingerprint": baseline.model_prints.get((c.suite, c.model))} for c in baseline.cases],
    }


@dataclass(frozen=True)
class Current:
    """What the regression gates need to know about this run besides its scores."""

    harness_version: str | None
    suites: Mapping[str, str | None]
    tolerances: Mapping[str, Tolerance]
    fingerprints: Mapping[tuple[str, str, str], str] = field(default_factory=dict)
    model_prints: Mapping[tuple[str, str], str] = field(default_factory=dict)
    paired: Mapping[tuple[str, str, str, str], "Paired"] = field(default_factory=dict)   # (suite, model, axis, name)


@dataclass(frozen=True)
class Paired:
    """A paired test of this run against the baseline on the same examples (per-example outputs on both sides)."""

    p_value: float      # one-sided: that this run is worse
    mde: float          # the smallest drop the test would find at this evaluation size (alpha 0.05, power 0.8)


@dataclass(frozen=True)
class Drop:
    failed: bool
    beyond: bool
    limit: float
    p_value: float | None
    test: str = "Welch"


def welch_p(current: Sequence[float], base: Sequence[float], higher_is_better: bool) -> float:
    """One-sided p-value that ``current`` is worse than ``base`` (Welch's unequal-variance t-test).

    With no spread on either side the test is undefined; then any difference
    in the bad direction is taken as certain (p = 0), none as p = 1.
    """
    import warnings

    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        side = "less" if higher_is_better else "greater"
        p = stats.ttest_ind(current, base, equal_var=False, alternative=side).pvalue
    if math.isfinite(p):
        return float(p)
    worse = agg.mean(current) < agg.mean(base) if higher_is_better else agg.mean(current) > agg.mean(base)
    return 0.0 if worse else 1.0


def judge(current: Sequence[float], base: Sequence[float], higher_is_better: bool, tolerance: Tolerance,
          paired: Paired | None = None) -> Drop:
    """Beyond the tolerance, and significant at ``alpha``: a regression.

    Significance comes from the paired test on the same examples when both sides kept per-example
    outputs, else from Welch's test over seeds when both sides have ≥ 2 seeds, else it is not asked.
    """
    limit = tolerance.limit(agg.mean(base), higher_is_better)
    value = agg.mean(current)
    slack = 1e-12 * max(1.0, abs(limit))  # a drop of exactly the tolerance is allowed
    beyond = value < limit - slack if higher_is_better else value > limit + slack
    if paired is not None:
        return Drop(beyond and paired.p_value < tolerance.alpha, beyond, limit, paired.p_value if beyond else None,
                    "paired bootstrap")
    p = welch_p(current, base, higher_is_better) if beyond and len(current) >= 2 and len(base) >= 2 else None
    return Drop(beyond and (p is None or p < tolerance.alpha), beyond, limit, p)


def _message(label: str, current: Sequence[float], base: Sequence[float], drop: Drop, tolerance: Tolerance,
             notes: list[str], paired: Paired | None = None) -> str:
    value, ref = agg.mean(current), agg.mean(base)
    text = (f"{label} {value:.4f} vs baseline {ref:.4f} (change {value - ref:+.4f}, limit {drop.limit:.4f} "
            f"with tolerance {tolerance.describe()}")
    if drop.p_value is not None and paired is not None:
        text += f"; paired bootstrap p = {drop.p_value:.3g} on the same examples, alpha {tolerance.alpha:g}"
    elif drop.p_value is not None:
        text += f"; Welch p = {drop.p_value:.3g} over {len(current)} vs {len(base)} seeds, alpha {tolerance.alpha:g}"
    if paired is not None:
        margin = tolerance.value if tolerance.kind == "abs" else tolerance.value * abs(ref)
        small = " (the tolerance is below it: too few examples to gate this finely)" if margin < paired.mde else ""
        text += f"; minimum detectable effect {paired.mde:.4f}{small}"
    verdict = ("FAILED: regression" if drop.failed
               else "ok: beyond the tolerance but within seed noise" if drop.beyond else "ok")
    return _with_notes(f"{text}): {verdict}", notes)


def _with_notes(text: str, notes: list[str]) -> str:
    return f"[{'; '.join(notes)}] {text}" if notes else text


def _finite(seeds: Mapping[str, float | None]) -> list[float]:
    return [v for v in seeds.values() if v is not None and math.isfinite(v)]


def _case_gate(case: agg.CaseScore, ref: agg.CaseScore | None, tolerance: Tolerance,
               notes: list[str], paired: Paired | None = None) -> agg.GateResult:
    name = f"regression/{case.axis}/{case.name}"
    if ref is None or ref.score is None:
        why = "new case, not in the baseline" if ref is None else "the baseline has no score for this case"
        return agg.GateResult(name, True, case.score, 0.0, _with_notes(f"{why}: nothing compared", notes),
                              case.suite, case.model)
    if case.score is None:
        return agg.GateResult(name, False, None, ref.score, _with_notes(
            "incomplete: the case has no score; cannot compare it with the baseline", notes), case.suite, case.model)
    current, base = _finite(case.seed_scores), _finite(ref.seed_scores)
    drop = judge(current, base, case.higher_is_better, tolerance, paired)
    return agg.GateResult(name, not drop.failed, case.score, drop.limit,
                          _message("score", current, base, drop, tolerance, notes, paired), case.suite, case.model)


def per_seed_means(cases: Sequence[agg.CaseScore]) -> list[float]:
    """P_avg of each seed when every case has the same ≥ 2 seeds; else the plain P_avg alone (no seed test)."""
    seed_sets = {tuple(sorted(c.seed_scores)) for c in cases}
    if len(seed_sets) == 1 and len(seeds := next(iter(seed_sets))) >= 2:
        return [agg.mean(c.seed_scores[s] for c in cases) for s in seeds]
    return [agg.mean(c.score for c in cases)]


def _axis_gate(axis: str, members: list[agg.CaseScore], refs: Mapping[tuple[str, str], agg.CaseScore],
               tolerance: Tolerance, notes: list[str]) -> agg.GateResult:
    suite, model, name = members[0].suite, members[0].model, f"regression/{axis}/p_avg"
    missing = [c for c in members if c.score is None]
    if missing:
        return agg.GateResult(name, False, None, 0.0, _with_notes(
            f"incomplete: {len(missing)} of {len(members)} {axis} cases have no score; P_avg cannot be compared",
            notes), suite, model)
    common = [(c, refs[(axis, c.name)]) for c in members
              if (axis, c.name) in refs and refs[(axis, c.name)].score is not None]
    if not common:
        return agg.GateResult(name, True, None, 0.0, _with_notes(
            f"no {axis} case in common with the baseline: nothing compared", notes), suite, model)
    in_baseline = sum(1 for a, _ in refs if a == axis)
    if len(common) < max(len(members), in_baseline):
        notes = notes + [f"over the {len(common)} {axis} cases both runs scored"]
    current = per_seed_means([c for c, _ in common])
    base = per_seed_means([r for _, r in common])
    drop = judge(current, base, members[0].higher_is_better, tolerance)
    return agg.GateResult(name, not drop.failed, agg.mean(current), drop.limit,
                          _message("P_avg", current, base, drop, tolerance, notes), suite, model)


def _reference(baseline: Baseline, suite: str, model: str, current: Current) -> tuple[list[agg.CaseScore], list[str]]:
    """The baseline cases to compare (suite, model) with, and what makes them a different reference."""
    refs = [c for c in baseline.cases if c.suite == suite and c.model == model]
    other = model
    notes = []
    if not refs:
        models = list(dict.fromkeys(c.model for c in baseline.cases if c.suite == suite))
        if len(models) != 1:
            return [], []
        other = models[0]
        refs = [c for c in baseline.cases if c.suite == suite and c.model == other]
        if model_label(other) != model_label(model):
            notes.append(f"baseline made with model {model_label(other)}, this run evaluates {model_label(model)}")
    before, now = baseline.model_prints.get((suite, other)), current.model_prints.get((suite, model))
    if not notes and before and now and before != now:
        notes.append(f"baseline made with other weights of model {model_label(model)} (fingerprint {before}, "
                     f"now {now})")
    return refs, notes


def _run_notes(baseline: Baseline, suite: str, current: Current) -> list[str]:
    notes = []
    before, now = baseline.harness_version, current.harness_version
    if before and now and before != now:
        notes.append(f"baseline made with flexharness {before}, this run uses {now}")
    before, now = baseline.suites.get(suite), current.suites.get(suite)
    if before and now and before != now:
        notes.append(f"baseline made from another version of suite '{suite}' (fingerprint {before}, now {now})")
    return notes


def regression_gates(cases: Sequence[agg.CaseScore], baseline: Baseline, current: Current) -> list[agg.GateResult]:
    """Per case and per axis P_avg, for every (suite, model) of this run."""
    gates = []
    for suite, model in dict.fromkeys((c.suite, c.model) for c in cases):
        members = [c for c in cases if c.suite == suite and c.model == model]
        refs, model_notes = _reference(baseline, suite, model, current)
        notes = _run_notes(baseline, suite, current) + model_notes
        if not refs:
            gates.append(agg.GateResult("regression", True, None, 0.0, _with_notes(
                f"{baseline.path} holds no cases of suite '{suite}' for this model: nothing compared", notes),
                suite, model))
            continue
        tolerance = current.tolerances.get(suite, Tolerance())
        by_name = {(r.axis, r.name): r for r in refs}
        for case in members:
            before, now = (f.get((suite, case.axis, case.name)) for f in (baseline.fingerprints, current.fingerprints))
            case_notes = notes + (["case configuration changed since the baseline"]
                                  if before and now and before != now else [])
            gates.append(_case_gate(case, by_name.get((case.axis, case.name)), tolerance, case_notes,
                                    current.paired.get((suite, model, case.axis, case.name))))
        for axis in dict.fromkeys(c.axis for c in members):
            gates.append(_axis_gate(axis, [c for c in members if c.axis == axis], by_name, tolerance, notes))
    return gates


def current_run(doc: Mapping[str, Any], paired: Mapping[tuple[str, str, str, str], Paired] | None = None) -> Current:
    """A results document's identities and resolved tolerances (what ``regression_gates`` compares)."""
    suites = doc.get("suites") or []
    return Current(
        harness_version=(doc.get("environment") or {}).get("flexharness"),
        suites={s["name"]: s.get("fingerprint") for s in suites},
        tolerances={s["name"]: tolerance_of((s.get("gates") or {}).get("regression")) for s in suites},
        fingerprints={(c["suite"], c["axis"], c["name"]): c["fingerprint"] for c in doc["cases"]
                      if c.get("fingerprint")},
        model_prints={(c["suite"], c["model"]): c["model_fingerprint"] for c in doc["cases"]
                      if c.get("model_fingerprint")},
        paired=paired or {},
    )
