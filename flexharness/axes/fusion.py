"""The fusion axis: do several fine-tuned runs of a task, combined, beat the best one alone?

One case per (task, method) under ``fusion:``; one item per (task, method, model), deterministic given its
ingredients: the task's runs (one per seed) fine-tuned on its training rows minus a held-out slice. An
item finds each ingredient in the result cache by the ingredient's own key, and trains and stores the
ones that are missing, so the items of one section share them (also across xdist workers and reruns).
The arithmetic of the methods is in ``flexharness.engine.soup``; docs/fusion.md says why it is built so.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from flexharness.axes.base import Axis, RunContext
from flexharness.engine import runner, soup
from flexharness.errors import FlexError
from flexharness.names import model_label
from flexharness.results import plots, predictions
from flexharness.rules.aggregate import GateResult
from flexharness.schema import Reader, did_you_mean, open_fraction
from flexharness.spec import Case, Planned
from flexharness.suite import COMBINES_SEEDS, SuiteContext, read_tasks, read_train

SECTION_KEYS = ("task", "methods", "runs", "held_out", "shared_head", "train")
HEAD_SEED = 0   # the head initialisation every ingredient shares under ``shared_head: true``
RECORD_FIELDS = ("single_scores", "best_single", "mean_single", "gain", "used", "inference_cost", "held_out_score",
                 "best_single_held_out", "held_out_examples", "trained_runs")
_TRAINED_HERE: set[str] = set()   # ingredient keys this process trained: reused even under --flex-no-cache


class FusionAxis(Axis):
    key = "fusion"
    gate_stats = ("gain",)

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        reader = top.child("fusion")
        reader.only(SECTION_KEYS)
        tasks = read_tasks(reader, context.cases, "task", twice="tasks must be distinct", every_by_default=True,
                           none="fusion combines runs of tasks: add a 'tasks:' list first")
        methods = _methods(reader)
        held_out = reader.typed("held_out", float, 0.1, check=open_fraction)
        shared = reader.typed("shared_head", bool, True)
        runs = _runs(reader)
        line = reader.line_of("methods") if reader.has("methods") else reader.line
        cases = []
        for task in tasks:
            train = read_train(reader.child("train"), task.train)
            train = replace(train, seeds=runs) if runs else train
            dataset = replace(task.dataset, eval_splits=task.dataset.eval_splits[:1])  # the task's first split
            cases += [replace(task, axis=self.key, name=f"{task.name}-{method}", train=train, dataset=dataset,
                              line=line, params=((COMBINES_SEEDS, True), ("task", task.name), ("method", method),
                                                 ("held_out", held_out), ("shared_head", shared),
                                                 ("keep_weights", any(m in soup.SOUPS for m in methods))))
                      for method in methods]
        return tuple(cases)

    def run(self, case: Case, model: str, seed: int, context: RunContext) -> dict[str, Any]:
        if context.store is None:
            raise FlexError("the fusion axis needs a store for its runs (RunContext.store); run it through pytest")
        params = dict(case.params)
        recipe = ingredient_case(case)
        trained: list[int] = []
        ingredients = [_ingredient(recipe, model, s, params["keep_weights"], context, trained)
                       for s in case.train.seeds]
        record = soup.fuse(case, model, params["method"], ingredients, context.device_option,
                           context.trust_remote_code)
        return {**record, "trained_runs": trained}

    def case_fields(self, case: Case, records: list[dict[str, Any]]) -> dict[str, Any]:
        params = dict(case.params)
        found = records[0] if records else {}
        return {"task": params["task"], "method": params["method"], "runs": list(case.train.seeds),
                "shared_head": params["shared_head"], "held_out": params["held_out"],
                **{key: found.get(key) for key in RECORD_FIELDS}}

    def finish(self, doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
        return gain_gates(doc, gate_specs)

    def terminal_lines(self, doc: Mapping[str, Any]) -> list[str]:
        rows = [_row(c) for c in doc["cases"] if c["axis"] == self.key]
        if not rows:
            return []
        table = [list(COLUMNS), *rows]
        widths = [max(len(row[i]) for row in table) + 2 for i in range(len(COLUMNS))]
        return ["", "fusion (gain: fused score minus the best single run's; cost: inference relative to one model)",
                *("".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                  for row in table)]

    def markdown_lines(self, doc: Mapping[str, Any]) -> list[str]:
        rows = [_row(c) for c in doc["cases"] if c["axis"] == self.key]
        if not rows:
            return []
        return ["", "### Fusion", "", "| " + " | ".join(COLUMNS) + " |", "|---|---|---|" + "---:|" * (len(COLUMNS) - 3),
                *("| " + " | ".join(row) + " |" for row in rows)]

    def plots(self, doc: Mapping[str, Any], directory: Path) -> list[Path]:
        groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for c in doc["cases"]:
            if c["axis"] == self.key and c["score"] is not None and c.get("single_scores"):
                groups.setdefault((c["suite"], c["model"]), []).append(c)
        return [_plot(cases, directory / f"fusion-{suite}-{model_label(model)}.png")
                for (suite, model), cases in groups.items()]


def ingredient_case(case: Case) -> Case:
    """The run a fusion case combines, as a case of its own: its result-cache key does not depend on the
    method, so the ensemble and the soups of one task share their ingredients."""
    params = dict(case.params)
    return replace(case, name=params["task"], params=(("ingredient_of", params["task"]),
                                                      ("held_out", params["held_out"]),
                                                      ("head_seed", HEAD_SEED if params["shared_head"] else None)))


def _ingredient(recipe: Case, model: str, seed: int, keep_weights: bool, context: RunContext,
                trained: list[int]) -> soup.Ingredient:
    """The stored run when its record, outputs and (for soups) weights are all there, else a fresh one, stored."""
    store = context.store
    planned = Planned(f"fusion/{recipe.name}[run-seed{seed}]", recipe, model, seed)
    key = store.key(planned)
    weights = store.weights / f"{key}.safetensors" if keep_weights else None
    if store.records.reuse or key in _TRAINED_HERE:
        record = store.records.get(key, planned)
        arrays = predictions.load(store.outputs, key) if record else None
        if record and arrays and (weights is None or weights.is_file()):
            return soup.Ingredient(seed, record, arrays, weights)
    head = dict(recipe.params)["head_seed"]
    record, state = soup.train_ingredient(recipe, model, seed, head, dict(recipe.params)["held_out"],
                                          context.device_option, context.trust_remote_code, context.progress)
    per_example = record.pop(runner.PER_EXAMPLE)
    if weights is not None:
        soup.save_weights(weights, state)
    predictions.save(store.outputs, key, per_example)
    store.records.put(key, planned.name, {**record, "outputs": key, "cached": False})
    _TRAINED_HERE.add(key)
    trained.append(seed)
    return soup.Ingredient(seed, record, per_example, weights)


def _methods(reader: Reader) -> tuple[str, ...]:
    methods = reader.str_or_list("methods", soup.METHODS)
    for method in methods:
        if method not in soup.METHODS:
            raise reader.error("methods", f"unknown method '{method}'{did_you_mean(method, soup.METHODS)}; "
                                          f"known: {', '.join(soup.METHODS)}")
    if len(set(methods)) != len(methods):
        raise reader.error("methods", "methods must be distinct")
    return methods


def _runs(reader: Reader) -> tuple[int, ...] | None:
    """``runs: 5`` (seeds 0–4) or ``runs: [0, 3, 7]``; None: the task's seeds."""
    raw = reader.raw("runs")
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return tuple(range(raw))
    if isinstance(raw, list) and raw and len(set(raw)) == len(raw) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw):
        return tuple(raw)
    raise reader.error("runs", "expected a number of runs (seeds 0, 1, ...), e.g. 5, or a list of distinct "
                               "non-negative seeds, e.g. [0, 1, 2]")


COLUMNS = ("task", "model", "method", "runs", "best single", "mean single", "score", "gain", "used", "cost")


def _row(c: Mapping[str, Any]) -> list[str]:
    def num(key: str, spec: str) -> str:
        return "-" if c.get(key) is None else format(c[key], spec)

    used = "-" if c.get("used") is None else str(len(c["used"]))
    cost = "-" if c.get("inference_cost") is None else f"{c['inference_cost']}x"
    return [c["task"], model_label(c["model"]), c["method"], str(len(c["runs"])), num("best_single", ".4f"),
            num("mean_single", ".4f"), num("score", ".4f"), num("gain", "+.4f"), used, cost]


def gain_gates(doc: Mapping[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """``gates: {fusion: {gain: {min: X}}}``: the smallest gain of a (suite, model)'s fusion cases (``max``: the
    largest); incomplete when a case has no gain."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in doc["cases"]:
        if c["axis"] == "fusion":
            groups.setdefault((c["suite"], c["model"]), []).append(c)
    results = []
    for (suite, model), cases in groups.items():
        for bound, threshold in ((gate_specs.get(suite, {}).get("fusion") or {}).get("gain") or {}).items():
            name = f"fusion/gain.{bound}"
            missing = [c["name"] for c in cases if c.get("gain") is None]
            if missing:
                message = f"incomplete: {len(missing)} of {len(cases)} fusion cases have no gain ({', '.join(missing)})"
                results.append(GateResult(name, False, None, threshold, message, suite, model))
                continue
            pick = min if bound == "min" else max
            worst = pick(cases, key=lambda c: c["gain"])
            passed = worst["gain"] >= threshold if bound == "min" else worst["gain"] <= threshold
            message = (f"gain.{bound} = {worst['gain']:+.4f} ({worst['name']}), required "
                       f"{'>=' if bound == 'min' else '<='} {threshold:g}: {'ok' if passed else 'FAILED'}")
            results.append(GateResult(name, passed, worst["gain"], threshold, message, suite, model))
    return results


def _plot(cases: list[Mapping[str, Any]], path: Path) -> Path:
    """Single runs, the ensemble and the soups of each task side by side."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    columns = ["single runs", *soup.METHODS]
    tasks = list(dict.fromkeys(c["task"] for c in cases))
    for number, task in enumerate(tasks):
        mine = [c for c in cases if c["task"] == task]
        shift = (number - (len(tasks) - 1) / 2) * 0.12
        singles = list(mine[0]["single_scores"].values())
        points = [(columns.index(c["method"]) + shift, c["score"]) for c in mine]
        line = ax.scatter([shift] * len(singles), singles, alpha=0.6, label=task)
        ax.scatter(*zip(*points), marker="D", color=line.get_facecolor()[0])
        ax.axhline(mine[0]["best_single"], color=line.get_facecolor()[0], linestyle=":", linewidth=1)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel(f"score ({cases[0]['metric']})")
    ax.set_title(f"fusion: {cases[0]['suite']} [{model_label(cases[0]['model'])}] (dotted: best single run)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
