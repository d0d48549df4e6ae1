"""The stability axis on the controller: per-task summaries, their gates, tables and plots.

Pure functions of the results document (no pytest, no torch): a task's summary is built from its
(task, setting) cases in ``doc["cases"]`` and the majority-class score the items measured
(``doc["stability_majority"]``), so a pytest run and ``flexharness merge`` give the same summaries.
The rules themselves are ``flexharness.rules.curves``; docs/stability.md defines every number.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from flexharness.files import output_name
from flexharness.names import model_label
from flexharness.results import plots as plotting
from flexharness.rules import curves
from flexharness.rules.aggregate import GateResult, mean

if TYPE_CHECKING:
    from flexharness.axes.base import Scored

Key = tuple[str, str, str]   # (suite, model, task)
SHOWN_K = (1, 2, 3, 5, 10, 20, 50, 100)
NONE_WITHOUT_SCORES = ("best_setting", "best_score", "spread", "sigma", "grid_mean", "failed", "failure_rate")


def majority_entries(scored: Iterable[Scored]) -> list[dict[str, Any]]:
    """One entry per (suite, model, task) with the majority-class score its items' records carry (None if none)."""
    found: dict[Key, float | None] = {}
    for member in scored:
        key = (member.case.suite, member.case.model, dict(member.spec.params)["task"])
        values = [r["majority_score"] for r in member.records.values() if r and r.get("majority_score") is not None]
        if found.get(key) is None:
            found[key] = values[0] if values else None
    return [{"suite": s, "model": m, "task": t, "majority_score": v} for (s, m, t), v in found.items()]


def joined_majority(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Entries of several files (shards) joined: one per (suite, model, task), a known score wins over None."""
    found: dict[Key, float | None] = {}
    for e in entries:
        key = (e["suite"], e["model"], e["task"])
        if found.get(key) is None:
            found[key] = e["majority_score"]
    return [{"suite": s, "model": m, "task": t, "majority_score": v} for (s, m, t), v in found.items()]


def summaries(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The results JSON ``stability`` list: one summary per (suite, model, task), settings in suite order."""
    majority = {(e["suite"], e["model"], e["task"]): e["majority_score"] for e in doc.get("stability_majority", [])}
    groups: dict[Key, list[Mapping[str, Any]]] = {}
    for case in doc["cases"]:
        if case["axis"] == "stability":
            groups.setdefault((case["suite"], case["model"], case["task"]), []).append(case)
    return [_summary(key, cases, majority.get(key)) for key, cases in groups.items()]


def _summary(key: Key, cases: list[Mapping[str, Any]], majority: float | None) -> dict[str, Any]:
    hib, margin = cases[0]["higher_is_better"], cases[0]["margin"]
    runs = [v for c in cases for v in c["seeds"].values()]
    head = {"suite": key[0], "model": key[1], "task": key[2], "metric": cases[0]["metric"], "higher_is_better": hib,
            "margin": margin, "majority_score": majority, "runs": len(runs), "missing": sum(v is None for v in runs),
            "settings": [_setting(c, majority, margin, hib) for c in cases]}
    if head["missing"]:
        return {**head, **dict.fromkeys(NONE_WITHOUT_SCORES), "expected_max": [], "expected_best_setting": []}
    found = curves.setting_summary({c["name"]: list(c["seeds"].values()) for c in cases}, hib)
    failed = sum(curves.failed_runs(runs, majority, margin, hib)) if majority is not None else None
    return {**head, "best_setting": found.best, "best_score": found.best_score, "spread": found.spread,
            "sigma": found.sigma, "grid_mean": mean(found.means.values()), "failed": failed,
            "failure_rate": None if failed is None else failed / len(runs),
            "expected_max": curves.expected_max(runs, len(runs), hib),
            "expected_best_setting": curves.expected_best_setting(list(found.means.values()), hib)}


def _setting(case: Mapping[str, Any], majority: float | None, margin: float, hib: bool) -> dict[str, Any]:
    seeds = case["seeds"]
    complete = case["score"] is not None and majority is not None
    return {"case": case["name"], "setting": case["setting"], "mean": case["score"], "seed_std": case["seed_std"],
            "seeds": dict(seeds), "runs": len(seeds),
            "failed": sum(curves.failed_runs(list(seeds.values()), majority, margin, hib)) if complete else None}


def gates(found: list[dict[str, Any]], specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """``gates: {stability: {failure_rate: {max: X}, spread: {max: Y}}}`` per (suite, model)."""
    results = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in found:
        groups.setdefault((s["suite"], s["model"]), []).append(s)
    for (suite, model), members in groups.items():
        spec = (specs.get(suite, {}).get("stability") or {})
        for stat, rule in (("failure_rate", _failure_gate), ("spread", _spread_gate)):
            threshold = (spec.get(stat) or {}).get("max")
            if threshold is not None:
                results.append(rule(members, threshold, suite, model))
    return results


def _incomplete(members: list[dict[str, Any]]) -> str | None:
    missing, runs = sum(s["missing"] for s in members), sum(s["runs"] for s in members)
    if missing:
        return f"incomplete: {missing} of {runs} stability runs have no score"
    unknown = [s["task"] for s in members if s["majority_score"] is None]
    if unknown:
        return (f"incomplete: the majority-class score of {', '.join(unknown)} is unknown (records cached by an "
                "older flexharness); rerun with --flex-no-cache")
    return None


def _failure_gate(members: list[dict[str, Any]], threshold: float, suite: str, model: str) -> GateResult:
    name = "stability/failure_rate.max"
    problem = _incomplete(members)
    if problem:
        return GateResult(name, False, None, threshold, f"{problem}; failure_rate cannot be computed", suite, model)
    failed, runs = sum(s["failed"] for s in members), sum(s["runs"] for s in members)
    rate, passed = failed / runs, failed / runs <= threshold
    per_task = ", ".join(f"{s['task']} {s['failed']}/{s['runs']}" for s in members)
    return GateResult(name, passed, rate, threshold, f"failure_rate = {rate:.4f} ({failed} of {runs} runs failed: "
                      f"{per_task}), required <= {threshold:g}: {'ok' if passed else 'FAILED'}", suite, model)


def _spread_gate(members: list[dict[str, Any]], threshold: float, suite: str, model: str) -> GateResult:
    name = "stability/spread.max"
    if any(s["spread"] is None for s in members):
        missing, runs = sum(s["missing"] for s in members), sum(s["runs"] for s in members)
        return GateResult(name, False, None, threshold, f"incomplete: {missing} of {runs} stability runs have no "
                          "score; spread cannot be computed", suite, model)
    worst = max(members, key=lambda s: s["spread"])
    passed = worst["spread"] <= threshold
    return GateResult(name, passed, worst["spread"], threshold,
                      f"spread = {worst['spread']:.4f} (largest, task {worst['task']}; best setting "
                      f"{worst['best_setting']}), required <= {threshold:g}: {'ok' if passed else 'FAILED'}",
                      suite, model)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _title(s: Mapping[str, Any]) -> str:
    rule = "<=" if s["higher_is_better"] else ">="
    edge = None if s["majority_score"] is None else \
        s["majority_score"] + (s["margin"] if s["higher_is_better"] else -s["margin"])
    return (f"{s['suite']} [{model_label(s['model'])}] {s['task']}, {s['metric']}: majority-class score "
            f"{_fmt(s['majority_score'])}, a run fails at score {rule} {_fmt(edge)}")


def _rows(s: Mapping[str, Any]) -> list[list[str]]:
    rows = [["setting", "mean", "± seed std", "failed"]]
    for e in s["settings"]:
        label = e["case"].split("@", 1)[1] + (" (best)" if e["case"] == s["best_setting"] else "")
        failed = "-" if e["failed"] is None else f"{e['failed']}/{e['runs']}"
        rows.append([label, _fmt(e["mean"]), _fmt(e["seed_std"]), failed])
    return rows


def _captions(s: Mapping[str, Any]) -> list[str]:
    if s["spread"] is None:
        return [f"{s['missing']} of {s['runs']} runs have no score: no summary"]
    rate = "-" if s["failure_rate"] is None else f"{s['failure_rate']:.4f} ({s['failed']} of {s['runs']} runs)"
    shown = [k for k in SHOWN_K if k < len(s["expected_max"])] + [len(s["expected_max"])]
    runs = "  ".join(f"k={k} {s['expected_max'][k - 1]:.4f}" for k in shown)
    settings = "  ".join(f"k={k} {v:.4f}" for k, v in enumerate(s["expected_best_setting"], start=1))
    return [f"grid mean {s['grid_mean']:.4f}, best {s['best_setting'].split('@', 1)[1]} {s['best_score']:.4f}, "
            f"spread {s['spread']:.4f} (σ {s['sigma']:.4f}), failure rate {rate}",
            f"expected best of k runs: {runs}", f"expected best of k settings (all seeds each): {settings}"]


def table_lines(doc: Mapping[str, Any]) -> list[str]:
    """Per task and model: the setting table and its summary lines, for the terminal."""
    lines: list[str] = []
    for s in doc.get("stability", []):
        rows = _rows(s)
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
        lines += ["", f"stability: {_title(s)}"]
        lines += ["".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                  for r in rows]
        lines += _captions(s)
    return lines


def markdown_lines(doc: Mapping[str, Any]) -> list[str]:
    """The same tables in Markdown."""
    lines: list[str] = []
    for s in doc.get("stability", []):
        rows = _rows(s)
        lines += ["", f"### Stability: {_title(s)}", "", f"| {' | '.join(rows[0])} |", "|---|---:|---:|---:|"]
        lines += [f"| {' | '.join(r)} |" for r in rows[1:]]
        lines += ["", *(f"{c}." for c in _captions(s))]
    return lines


def plots(doc: Mapping[str, Any], directory: Path) -> list[Path]:
    """One PNG per (suite, task): setting means with seed spread, and the expected best score against k."""
    tasks: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for s in doc.get("stability", []):
        tasks.setdefault((s["suite"], s["task"]), []).append(s)
    return [_plot(members, directory / output_name("stability", suite, task))
            for (suite, task), members in tasks.items()]


def _plot(members: list[Mapping[str, Any]], path: Path) -> Path:
    plt = plotting.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in members:
        colour = _draw_settings(left, s)
        if s["expected_max"]:
            per_setting = s["runs"] // len(s["settings"])
            right.plot(range(1, len(s["expected_max"]) + 1), s["expected_max"], color=colour,
                       label=f"{model_label(s['model'])}: best of k runs")
            right.plot([k * per_setting for k in range(1, len(s["expected_best_setting"]) + 1)],
                       s["expected_best_setting"], "s--", color=colour,
                       label=f"{model_label(s['model'])}: best of k/{per_setting} settings")
    first = members[0]
    left.set_xlabel("learning rate" if _by_learning_rate(first) else "setting")
    left.set_ylabel(f"{first['metric']} (mean ± seed std; dots: runs; dotted: majority class)")
    left.set_title(f"{first['suite']}: {first['task']}", fontsize=10)
    left.legend(fontsize=8)
    right.set_xlabel("training runs spent (k)")
    right.set_ylabel(f"expected best {first['metric']}")
    right.set_title("expected best score (Dodge et al. 2019)", fontsize=10)
    right.legend(fontsize=8)
    fig.tight_layout()
    plotting.save(fig, path)
    plt.close(fig)
    return path


def _by_learning_rate(summary: Mapping[str, Any]) -> bool:
    return all(list(e["setting"]) == ["learning_rate"] for e in summary["settings"])


def _draw_settings(ax: Any, s: Mapping[str, Any]) -> Any:
    """One model's setting means with seed σ, its runs as dots and its majority-class score; returns its colour."""
    settings = [e for e in s["settings"] if e["mean"] is not None]
    by_lr = _by_learning_rate(s)
    x = [e["setting"]["learning_rate"] if by_lr else i for i, e in enumerate(settings)]
    line = ax.errorbar(x, [e["mean"] for e in settings], yerr=[e["seed_std"] for e in settings], marker="o",
                       capsize=3, label=model_label(s["model"]))
    colour = line[0].get_color()
    for xi, e in zip(x, settings):
        ax.scatter([xi] * len(e["seeds"]), list(e["seeds"].values()), s=10, alpha=0.4, color=colour)
    if s["majority_score"] is not None:
        ax.axhline(s["majority_score"], linestyle=":", color=colour, alpha=0.7)
    if by_lr:
        ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(settings)), [e["case"].split("@", 1)[1] for e in settings], rotation=30, ha="right")
    return colour
