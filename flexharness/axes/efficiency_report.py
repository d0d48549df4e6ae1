"""The efficiency axis on the controller: learning curves, AULC, the target size, data advantage, gates, plots.

Pure functions of the results document (no pytest, no torch): a curve is built from the (task, size) cases in
``doc["cases"]``, so a pytest run and ``flexharness merge`` give the same summaries. The rules themselves are
``flexharness.rules.curves``; docs/efficiency.md defines every number.
"""

from __future__ import annotations

import dataclasses
import math
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from flexharness.axes.base import Scored
from flexharness.names import model_label
from flexharness.results import plots as plotting
from flexharness.results.table import Table
from flexharness.rules import curves
from flexharness.rules.aggregate import GateResult, at_least_as_good

Key = tuple[str, str, str]   # (suite, model, task)
ADVANTAGE_FIELDS = ("mean_log2_ratio", "mean_extra_examples", "ratio_at_top", "score_low", "score_high")


def sections(scored: Iterable[Scored]) -> dict[str, list[dict[str, Any]]]:
    """Nothing raw: the curves are built from the cases by :func:`finish`."""
    return {"efficiency": [], "efficiency_advantage": []}


def finish(doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """The curves and the pairwise data advantages rebuilt from the cases, and the gates."""
    doc["efficiency"] = summaries(doc)
    doc["efficiency_advantage"] = advantages(doc["efficiency"])
    return gates(doc["efficiency"], gate_specs)


def summaries(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The results JSON ``efficiency`` list: one learning curve per (suite, model, task), sizes ascending."""
    groups: dict[Key, list[Mapping[str, Any]]] = {}
    for case in doc["cases"]:
        if case["axis"] == "efficiency":
            groups.setdefault((case["suite"], case["model"], case["task"]), []).append(case)
    return [_summary(key, sorted(cases, key=lambda c: c["size"])) for key, cases in groups.items()]


def _summary(key: Key, cases: list[Mapping[str, Any]]) -> dict[str, Any]:
    first = cases[0]
    hib, target = first["higher_is_better"], first["target"]
    curve = [{"size": c["size"], "case": c["name"], "score": c["score"], "seed_std": c["seed_std"],
              "seeds": dict(c["seeds"]), "train_examples": c.get("train_examples")} for c in cases]
    head = {"suite": key[0], "model": key[1], "task": key[2], "metric": first["metric"], "higher_is_better": hib,
            "target": target, "curve": curve, "missing": [p["size"] for p in curve if p["score"] is None]}
    if head["missing"] or len(curve) < 2:
        return {**head, "aulc": None, "final_score": None, "target_size": None}
    sizes, scores = [p["size"] for p in curve], [p["score"] for p in curve]
    return {**head, "aulc": curves.aulc(sizes, scores), "final_score": scores[-1],
            "target_size": curves.smallest_size_reaching(sizes, scores, target, hib)}


def advantages(found: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Between every two models of a (suite, task), in run order: how many more examples ``model_b`` needs than
    ``model_a`` for the same score (``rules.curves.data_advantage`` over the sizes both curves have)."""
    tasks: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for s in found:
        tasks.setdefault((s["suite"], s["task"]), []).append(s)
    entries = []
    for (suite, task), members in tasks.items():
        for a, b in combinations(members, 2):
            entries.append({"suite": suite, "task": task, "model_a": a["model"], "model_b": b["model"],
                            **_advantage(a, b)})
    return entries


def _advantage(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    none = dict.fromkeys(ADVANTAGE_FIELDS)
    if a["aulc"] is None or b["aulc"] is None:
        return {**none, "note": "incomplete: a curve has sizes without a score"}
    score_b = {p["size"]: p["score"] for p in b["curve"]}
    shared = [p["size"] for p in a["curve"] if p["size"] in score_b]
    if len(shared) < 2:
        return {**none, "note": "the curves share fewer than two sizes"}
    score_a = {p["size"]: p["score"] for p in a["curve"]}
    with np.errstate(all="ignore"):   # a non-finite result is caught below, with a note instead of a warning
        found = curves.data_advantage(shared, [score_a[n] for n in shared], [score_b[n] for n in shared],
                                      a["higher_is_better"])
    if found is None:
        return {**none, "note": "the curves reach no common range of scores"}
    values = dataclasses.asdict(found)
    if not all(math.isfinite(v) for v in values.values()):   # score steps too small for floating point
        return {**none, "note": "the curves' score steps are too small to interpolate"}
    return {**values, "note": None}


def gates(found: list[dict[str, Any]], specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """``gates: {efficiency: {aulc: {min: X}}}`` (or ``max``) per (suite, model): the worst task's AULC."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in found:
        groups.setdefault((s["suite"], s["model"]), []).append(s)
    results = []
    for (suite, model), members in groups.items():
        for bound, threshold in (((specs.get(suite, {}).get("efficiency") or {}).get("aulc")) or {}).items():
            results.append(_aulc_gate(members, bound, threshold, suite, model))
    return results


def _aulc_gate(members: list[dict[str, Any]], bound: str, threshold: float, suite: str, model: str) -> GateResult:
    name = f"efficiency/aulc.{bound}"
    missing = [f"{s['task']}@n={n}" for s in members for n in s["missing"]]
    if missing:
        points = sum(len(s["curve"]) for s in members)
        return GateResult(name, False, None, threshold, f"incomplete: {len(missing)} of {points} curve points have "
                          f"no score ({', '.join(missing)}); aulc cannot be computed", suite, model)
    short = [s["task"] for s in members if s["aulc"] is None]
    if short:
        return GateResult(name, False, None, threshold, f"incomplete: the curve of {', '.join(short)} has fewer than "
                          "two sizes in this run; aulc cannot be computed", suite, model)
    hib = members[0]["higher_is_better"]
    floor = bound == "min"   # min: the worst acceptable AULC in the metric's direction (as for p_avg); max: literal
    worst = (min if floor and hib else max)(members, key=lambda s: s["aulc"])
    passed = at_least_as_good(worst["aulc"], threshold, hib) if floor else worst["aulc"] <= threshold
    direction = " (lower is better)" if floor and not hib else ""
    return GateResult(name, passed, worst["aulc"], threshold,
                      f"aulc.{bound} = {worst['aulc']:.4f} (task {worst['task']}), required "
                      f"{'>=' if floor and hib else '<='} {threshold:g}{direction}: {'ok' if passed else 'FAILED'}",
                      suite, model)


def _title(s: Mapping[str, Any]) -> str:
    return f"{s['suite']} [{model_label(s['model'])}] {s['task']}, {s['metric']}"


def _table(s: Mapping[str, Any], after: tuple[str, ...]) -> Table:
    rows = tuple((p["size"], p["score"], p["seed_std"], len(p["seeds"])) for p in s["curve"])
    return Table(f"efficiency: {_title(s)}", ("size", "mean", "± seed std", "seeds"), rows,
                 formats={"mean": ".4f", "± seed std": ".4f"}, heading=f"Efficiency: {_title(s)}",
                 notes=(_caption(s), *after))


def _caption(s: Mapping[str, Any]) -> str:
    if s["aulc"] is None:
        return f"no summary: sizes without a score: {', '.join(map(str, s['missing'])) or '-'}"
    reached = "none (the largest size's score is not positive)" if s["target_size"] is None else str(s["target_size"])
    return (f"AULC {s['aulc']:.4f} over log size; smallest size reaching {s['target']:g} × the score at "
            f"n={s['curve'][-1]['size']} ({s['final_score']:.4f}): {reached}")


def _advantage_line(e: Mapping[str, Any]) -> str:
    head = f"data advantage {e['task']}: {model_label(e['model_a'])} over {model_label(e['model_b'])}"
    if e["mean_log2_ratio"] is None:
        return f"{head}: - ({e['note']})"
    return (f"{head}: {2 ** e['mean_log2_ratio']:.2f}x fewer examples on average (log2 ratio "
            f"{e['mean_log2_ratio']:+.2f}, {e['mean_extra_examples']:+.0f} examples), {e['ratio_at_top']:.2f}x at score "
            f"{e['score_high']:.4f}; over scores {e['score_low']:.4f}..{e['score_high']:.4f}")


def tables(doc: Mapping[str, Any]) -> list[Table]:
    """Per task and model: the curve table and its summary; the data advantages under the last one."""
    found = doc.get("efficiency", [])
    advantages_found = tuple(_advantage_line(e) for e in doc.get("efficiency_advantage", []))
    return [_table(s, advantages_found if i == len(found) - 1 else ()) for i, s in enumerate(found)]


def plots(doc: Mapping[str, Any], directory: Path) -> list[Path]:
    """One PNG per (suite, task): score against training size on a log axis, seed σ as error bars, one line
    per model."""
    return plotting.per_task(doc.get("efficiency", []), "efficiency", directory, _plot)


def _plot(members: list[Mapping[str, Any]], path: Path) -> Path:
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for s in members:
        points = [p for p in s["curve"] if p["score"] is not None]
        label = model_label(s["model"]) + ("" if s["aulc"] is None else f" (AULC {s['aulc']:.3f})")
        ax.errorbar([p["size"] for p in points], [p["score"] for p in points],
                    yerr=[p["seed_std"] or 0.0 for p in points], marker="o", capsize=3, label=label)
    first = members[0]
    ax.set_xscale("log")
    sizes = sorted({p["size"] for s in members for p in s["curve"]})
    ax.set_xticks(sizes, [str(size) for size in sizes])   # the sizes run, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("training examples (log scale)")
    ax.set_ylabel(f"{first['metric']} (mean ± seed std)")
    ax.set_title(f"learning curve: {first['suite']}: {first['task']}", fontsize=10)
    ax.legend(fontsize=8)
    return plotting.save_laid_out(fig, path)
