"""The fusion axis on the controller: its gates, its terminal and Markdown tables, its plot.

Pure functions of the results document (no pytest, no torch), so a pytest run and
``flexharness merge`` report alike. The in-domain table has one row per (task, model, method);
where the fusion cases were also scored on other domains, a second table has one row per
(task, model, method, other domain) and the first gains an ``ood gain`` column. Fusion across
models (``fusion_across``: built from the items' outputs before these run) has a table of its own,
one row per (suite, task), and one per other split it was scored on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from flexharness.axes.base import Scored
from flexharness.axes.fusion_across import KEY as ACROSS, NO_SOUP
from flexharness.engine.soup import METHODS
from flexharness.files import output_name
from flexharness.names import model_label, model_labels
from flexharness.results import plots as plotting
from flexharness.results.table import Cell, Table
from flexharness.rules.aggregate import GateResult, worst_case_gate

AXIS = "fusion"
GATED = {"gain": "gain", "ood_gain": "out-of-domain gain"}
ACROSS_GATED = {"across_gain": "gain of fusion across models"}   # per suite: one entry per task, over all models
ACROSS_COLUMNS = ("suite", "task", "chosen on", "chosen (weight)", "best single", "single score", "score", "gain",
                  "p", "models", "passes", "params")
ACROSS_TITLE = ("fusion across models (greedy ensemble selection on the split chosen on; best single: the run "
                "chosen first there; gain and p: paired on the evaluation examples)")
ACROSS_FORMATS = {"single score": ".4f", "score": ".4f", "gain": "+.4f", "p": ".3g"}
ACROSS_SPLIT_COLUMNS = ("suite", "task", "split", "n", "single score", "score", "gain")
COLUMNS = ("task", "model", "method", "runs", "best single", "mean single", "score", "gain", "used", "cost")
OOD_COLUMNS = ("task", "model", "method", "domain", "n", "best single", "mean single", "score", "gain")
TITLE = "fusion (gain: fused score minus the best single run's; cost: inference relative to one model)"
FORMATS = {"best single": ".4f", "mean single": ".4f", "score": ".4f", "gain": "+.4f", "ood gain": "+.4f"}
OOD_TITLE = ("fusion on the other domains (gain over the best single run on that domain; "
             "ood gain: the mean of these gains)")


def _cases(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in doc["cases"] if c["axis"] == AXIS]


def _with_ood(cases: Sequence[Mapping[str, Any]]) -> bool:
    return any(c.get("other_domains") for c in cases)


def _row(c: Mapping[str, Any], with_ood: bool) -> tuple[Cell, ...]:
    row = (c["task"], model_label(c["model"]), c["method"], len(c["runs"]), c.get("best_single"), c.get("mean_single"),
           c.get("score"), c.get("gain"), None if c.get("used") is None else len(c["used"]),
           None if c.get("inference_cost") is None else f"{c['inference_cost']}x")
    return (*row, c.get("ood_gain")) if with_ood else row


def _ood_rows(cases: Sequence[Mapping[str, Any]]) -> tuple[tuple[Cell, ...], ...]:
    return tuple((c["task"], model_label(c["model"]), c["method"], domain, o["eval_examples"], o["best_single"],
                  o["mean_single"], o["score"], o["gain"])
                 for c in cases for domain, o in (c.get("other_domains") or {}).items())


def sections(scored: Iterable[Scored]) -> dict[str, list[dict[str, Any]]]:
    """Nothing beyond the cases: fusion's results are case fields."""
    return {}


def finish(doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """Fusion's gates; its cases are complete as they are."""
    return gates(doc, gate_specs)


def tables(doc: Mapping[str, Any]) -> list[Table]:
    """The fusion cases, and with out-of-domain scores a table of them per other domain."""
    cases = _cases(doc)
    across = _across_tables(doc)
    if not cases:
        return across
    with_ood = _with_ood(cases)
    found = [Table(TITLE, (*COLUMNS, "ood gain") if with_ood else COLUMNS, tuple(_row(c, with_ood) for c in cases),
                   text=COLUMNS[:3], formats=FORMATS, heading="Fusion")]
    if with_ood:
        found.append(Table(OOD_TITLE, OOD_COLUMNS, _ood_rows(cases), text=OOD_COLUMNS[:4], formats=FORMATS,
                           heading="Other domains: gain over the best single run on that domain"))
    return found + across


def _across_tables(doc: Mapping[str, Any]) -> list[Table]:
    """One row per (suite, task) of fusion across models; a task not computed says why under the table."""
    entries = doc.get(ACROSS) or []
    if not entries:
        return []
    labels = model_labels(c["model"] for c in doc["cases"])
    rows = tuple((e["suite"], e["task"], e["chosen_on"], _chosen(e, labels), _run(e.get("best_single"), labels),
                  (e.get("best_single") or {}).get("score"), e.get("score"), e.get("gain"), e.get("p_value"),
                  e.get("models_used"), e.get("forward_passes"), _params(e.get("total_params")))
                 for e in entries)
    notes = tuple(f"{e['suite']}/{e['task']}: not computed: {e['refused']}" for e in entries if e["refused"])
    found = [Table(ACROSS_TITLE, ACROSS_COLUMNS, rows, text=ACROSS_COLUMNS[:5], formats=ACROSS_FORMATS,
                   heading="Fusion across models", notes=(*notes, NO_SOUP))]
    splits = tuple((e["suite"], e["task"], split, o["eval_examples"], o["best_single"], o["score"], o["gain"])
                   for e in entries for split, o in (e.get("other_splits") or {}).items())
    if splits:
        found.append(Table("fusion across models on the other splits (the same runs and weights)",
                           ACROSS_SPLIT_COLUMNS, splits, text=ACROSS_SPLIT_COLUMNS[:3], formats=ACROSS_FORMATS,
                           heading="Fusion across models on the other splits"))
    return found


def _run(run: Mapping[str, Any] | None, labels: Mapping[str, str]) -> str | None:
    return f"{labels.get(run['model'], model_label(run['model']))} seed {run['seed']}" if run else None


def _chosen(entry: Mapping[str, Any], labels: Mapping[str, str]) -> str | None:
    chosen = entry.get("chosen")
    return ", ".join(f"{_run(c, labels)} x{c['weight']}" for c in chosen) if chosen else None


def _params(count: int | None) -> str | None:
    return None if count is None else f"{count / 1e6:.2f}M" if count >= 10_000 else str(count)


def gates(doc: Mapping[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """``gates: {fusion: {gain: {min: X}, ood_gain: {min: Y}}}``: the smallest (``max``: the largest) gain, or
    out-of-domain gain, of a (suite, model)'s fusion cases; incomplete when a case has none."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in _cases(doc):
        groups.setdefault((c["suite"], c["model"]), []).append(c)
    results = []
    for (suite, model), cases in groups.items():
        spec = gate_specs.get(suite, {}).get(AXIS) or {}
        for stat, words in GATED.items():
            for bound, threshold in (spec.get(stat) or {}).items():
                results.append(_gate(cases, stat, words, bound, threshold, suite, model))
    for suite in dict.fromkeys(c["suite"] for c in _cases(doc)):
        for bound, threshold in (((gate_specs.get(suite) or {}).get(AXIS) or {}).get("across_gain") or {}).items():
            results.append(_across_gate([e for e in doc.get(ACROSS) or [] if e["suite"] == suite], bound,
                                        threshold, suite))
    return results


def _across_gate(entries: list[Mapping[str, Any]], bound: str, threshold: float, suite: str) -> GateResult:
    """``gates: {fusion: {across_gain: {min: X}}}``: the smallest gain of fusion across models over the suite's
    tasks (one gate for all models); incomplete, with the reason, where it was not computed."""
    name = f"{AXIS}/across_gain.{bound}"
    if not entries:
        return GateResult(name, False, None, threshold, "incomplete: no fusion across models was computed (it "
                                                         "needs at least 2 models: pass --model twice or more)", suite)
    refused = next((e for e in entries if e["refused"]), None)
    if refused:
        return GateResult(name, False, None, threshold, f"incomplete: {refused['task']}: {refused['refused']}", suite)
    return worst_case_gate(name, [{**e, "name": e["task"]} for e in entries], "gain", bound, threshold, suite, "",
                           "tasks have no gain of fusion across models", "+.4f")


def _gate(cases: list[Mapping[str, Any]], stat: str, words: str, bound: str, threshold: float, suite: str,
          model: str) -> GateResult:
    return worst_case_gate(f"{AXIS}/{stat}.{bound}", cases, stat, bound, threshold, suite, model,
                           f"fusion cases have no {words}", "+.4f")


def plots(doc: Mapping[str, Any], directory: Path) -> list[Path]:
    """``fusion-SUITE-MODEL.png`` per (suite, model): a panel for the task's own evaluation split and one per
    other domain."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in _cases(doc):
        if c["score"] is not None and c.get("single_scores"):
            groups.setdefault((c["suite"], c["model"]), []).append(c)
    labels = model_labels(c["model"] for c in doc["cases"])
    return [_plot(cases, directory / output_name("fusion", suite, labels.get(model, model)))
            for (suite, model), cases in groups.items()]


Scores = Callable[[Mapping[str, Any]], Mapping[str, Any] | None]


def _plot(cases: list[Mapping[str, Any]], path: Path) -> Path:
    """Single runs, the ensemble and the soups of each task side by side, per evaluation split."""
    domains = list(dict.fromkeys(d for c in cases for d in c.get("other_domains") or {}))
    panels: list[tuple[str, Scores]] = [("own evaluation split" if domains else "", lambda c: c)]
    panels += [(f"domain {d}", lambda c, d=d: (c.get("other_domains") or {}).get(d)) for d in domains]
    plt = plotting.pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 + 4.0 * (len(panels) - 1), 4.2), squeeze=False)
    for ax, (title, scores) in zip(axes[0], panels):
        _panel(ax, cases, scores)
        ax.set_title(title, fontsize=9)
    axes[0][0].set_ylabel(f"score ({cases[0]['metric']})")
    fig.suptitle(f"fusion: {cases[0]['suite']} [{model_label(cases[0]['model'])}] (dotted: best single run)")
    return plotting.save_laid_out(fig, path)


def _panel(ax: Any, cases: list[Mapping[str, Any]], scores: Scores) -> None:
    columns = ["single runs", *METHODS]
    tasks = list(dict.fromkeys(c["task"] for c in cases))
    for number, task in enumerate(tasks):
        mine = [(c, found) for c in cases if c["task"] == task
                if (found := scores(c)) is not None and found.get("score") is not None]
        if not mine:
            continue
        shift = (number - (len(tasks) - 1) / 2) * 0.12
        singles = list(mine[0][1]["single_scores"].values())
        points = [(columns.index(c["method"]) + shift, found["score"]) for c, found in mine]
        dots = ax.scatter([shift] * len(singles), singles, alpha=0.6, label=task)
        ax.scatter(*zip(*points), marker="D", color=dots.get_facecolor()[0])
        ax.axhline(mine[0][1]["best_single"], color=dots.get_facecolor()[0], linestyle=":", linewidth=1)
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    if tasks:
        ax.legend(loc="lower right")
