"""The probe axis: what the pretrained weights already know, layer by layer, without fine-tuning.

One case per task named under ``probe:`` (the tasks axis defines the tasks). An
item runs the pretrained model once over the task's training and evaluation
rows (``engine.features``), fits a linear probe on every layer's pooled
features, scores each with the task's own metric, and adds the pre-screen
scores of the last layer — LogME and cosine k-NN, each with its cost in
seconds (``rules.prescreen``). The case score is the best layer's probe score.
The document-level part (gap to fine-tuning, Kendall track record, model
ranking, reports and plots) lives in ``probe_report``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from flexharness.axes import probe_report
from flexharness.axes.base import Axis, RunContext
from flexharness.axes.tasks import read_tasks
from flexharness.engine import features, kinds, runner
from flexharness.errors import DataError
from flexharness.rules import metrics, prescreen
from flexharness.suite.reader import SuiteContext, read_train
from flexharness.suite.schema import Reader, did_you_mean
from flexharness.suite.spec import Case

SECTION_KEYS = ("tasks", "pooling", "layers", "train")
POOLINGS = ("mean", "first")
PRESCREEN_BY = ("logme", "knn")


class ProbeAxis(Axis):
    key = "probe"
    document_keys = probe_report.DOCUMENT_KEYS
    report = probe_report

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        reader = top.child("probe")
        reader.only(SECTION_KEYS)
        tasks = read_tasks(reader, context.cases, none="the probe reads its tasks from the 'tasks:' section, and the "
                           "suite has none; add a 'tasks:' list", twice="task names must be distinct",
                           every_by_default=True)
        pooling = reader.typed("pooling", str, "mean", check=lambda v: None if v in POOLINGS else
                               f"unknown pooling '{v}'{did_you_mean(v, POOLINGS)}; use mean or first")
        layers = _layers(reader)
        cases = []
        for task in tasks:
            refusal = kinds.of(task).no_probe
            if refusal:
                raise reader.error("tasks", f"task '{task.name}' is {task.kind}: {refusal}; probe sequence "
                                            "classification tasks only")
            config = read_train(reader.child("train"), task.train)
            if not reader.child("train").has("seeds"):
                config = replace(config, seeds=config.seeds[:1])  # deterministic given its seed: one is enough
            params = (("task", task.name), ("finetuned", task.scored_names[0]), ("pooling", pooling),
                      ("layers", layers))
            cases.append(replace(task, axis=self.key, train=config, line=reader.line, params=params,
                                 dataset=replace(task.dataset, eval_splits=task.dataset.eval_splits[:1])))
        return tuple(cases)

    def add_options(self, group: Any, parser: Any) -> None:
        """The seconds-fast pre-screen: run only this axis's items and rank the models (docs/probe.md)."""
        group.addoption("--flex-prescreen-only", action="store_true", default=None,
                        help="run only the probe axis's items (frozen features, no fine-tuning); deselect the rest")
        group.addoption("--flex-prescreen-top", metavar="K", help="name the K best models by the pre-screen")
        group.addoption("--flex-prescreen-by", metavar="logme|knn", help="what ranks the models (default: logme)")
        parser.addini("flex_prescreen_only", "default for --flex-prescreen-only", type="bool", default=False)
        for name in ("prescreen_top", "prescreen_by"):
            parser.addini(f"flex_{name}", f"default for --flex-{name.replace('_', '-')}", default=None)

    def read_options(self, value: Any) -> dict[str, Any]:
        by = value("prescreen_by") or "logme"
        if by not in PRESCREEN_BY:
            raise ValueError(f"--flex-prescreen-by: expected one of {', '.join(PRESCREEN_BY)}, got {by!r}")
        top = value("prescreen_top")
        if top not in (None, "") and not (str(top).isdigit() and int(top) > 0):
            raise ValueError(f"--flex-prescreen-top: expected a positive integer, got {top!r}")
        return {"only": bool(value("prescreen_only")), "by": by, "top": int(top) if top not in (None, "") else None}

    def selects(self, case: Case, options: Mapping[str, Any]) -> bool | None:
        return case.axis == self.key if options.get("only") else None

    def nothing_selected(self, options: Mapping[str, Any]) -> str | None:
        if not options.get("only"):
            return None
        return ("--flex-prescreen-only keeps only the items of 'probe:' sections, and the suites collected have "
                "none: add a 'probe:' section (see docs/prescreen.md) or drop the option")

    def run_settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"prescreen": {"top": options.get("top"), "by": options.get("by", "logme")}}

    def run(self, case: Case, model: str, seed: int, context: RunContext) -> dict[str, Any]:

        inputs = runner.case_inputs(case, model, context.trust_remote_code)
        found = features.frozen_features(inputs, model, case.train.eval_batch_size, context.device_option,
                                         context.trust_remote_code)
        return {**probe_fields(case, found, inputs.train.labels, inputs.eval.labels, inputs.regression, seed),
                "seed": seed, "device": found.device, "features": found.fields(), **runner.example_counts(inputs)}

    def case_fields(self, case: Case, records: list[dict[str, Any]]) -> dict[str, Any]:
        params = dict(case.params)
        return {"task": params["task"], "pooling": params["pooling"],
                "best_layer": records[0].get("best_layer") if records else None}


def _layers(reader: Reader) -> str | tuple[int, ...]:
    """``all`` (the default) or a list of distinct hidden-state indices, 0 being the embedding output."""
    value = reader.raw("layers", "all")
    if value == "all":
        return "all"
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (not isinstance(value, list) or not value or len(set(value)) != len(value)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise reader.error("layers", "expected 'all' or a list of distinct layer indices, e.g. [0, 3, 6] "
                                     "(0 is the embedding output, N the last of N transformer layers)")
    return tuple(sorted(value))


def layer_indices(layers: str | tuple[int, ...], available: int, case: Case) -> list[int]:
    """The hidden states to probe; a layer the model does not have is a clear error, not an IndexError."""
    if layers == "all":
        return list(range(available))
    missing = [layer for layer in layers if layer >= available]
    if missing:
        raise DataError(f"the model has {available - 1} transformer layers (hidden states 0..{available - 1}, 0 is "
                        f"the embedding output), so layer{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(map(str, missing))} cannot be probed; fix 'probe.layers'",
                        case.dataset.origin, case.line, "probe.layers")
    return list(layers)


def probe_fields(case: Case, found: Any, train_y: np.ndarray, eval_y: np.ndarray, regression: bool,
                 seed: int) -> dict[str, Any]:
    """Per-layer probe scores (the task's metric), the best layer, and the last layer's pre-screen scores."""
    params = dict(case.params)
    pooling = params["pooling"]
    layers = layer_indices(params["layers"], found.num_layers, case)
    train_x, eval_x = found.train[pooling], found.eval[pooling]
    scores, per_metric, strengths, start = [], [], [], time.perf_counter()
    for layer in layers:
        result = prescreen.linear_probe(train_x[layer], train_y, eval_x[layer], eval_y, regression, seed)
        score, named = metrics.score(case.metrics, eval_y, result.predictions)
        scores.append(score)
        per_metric.append(named)
        strengths.append(result.strength)
    probe_seconds = time.perf_counter() - start
    best = probe_report.best_index(scores, case.higher_is_better)
    last = found.num_layers - 1
    return {"score": scores[best], "metrics": per_metric[best], "pooling": pooling, "layers": layers,
            "layer_scores": scores, "best_layer": layers[best], "strengths": strengths,
            "probe_seconds": round(probe_seconds, 4), "forward_seconds": round(found.seconds, 4),
            "prescreen_layer": last,
            **_prescreen(train_x[last], train_y, eval_x[last], eval_y, regression)}


def _prescreen(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
               regression: bool) -> dict[str, Any]:
    """LogME on the training rows and k-NN on the eval rows, each timed; None where a score is undefined."""
    start = time.perf_counter()
    try:
        logme: float | None = prescreen.logme(train_x, train_y, regression)
    except ValueError:  # all-zero features, or labels an exact linear function of them: evidence unbounded
        logme = None
    middle = time.perf_counter()
    knn = (prescreen.knn_pearson(train_x, train_y, eval_x, eval_y) if regression
           else prescreen.knn_accuracy(train_x, train_y, eval_x, eval_y))
    end = time.perf_counter()
    return {"logme": logme, "logme_seconds": round(middle - start, 4), "knn": knn,
            "knn_metric": "pearson" if regression else "accuracy", "knn_k": prescreen.DEFAULT_K,
            "knn_seconds": round(end - middle, 4)}
