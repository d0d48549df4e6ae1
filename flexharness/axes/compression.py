"""The compression axis: prune or quantize, fine-tune or not, score what survives.

The suite section and the results are here; the methods themselves (how each
is written and how it runs) are in ``flexharness.engine.compress``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from flexharness.axes.base import Axis, RunContext
from flexharness.engine import compress
from flexharness.files import output_name
from flexharness.names import model_label, model_labels
from flexharness.results import plots
from flexharness.schema import Reader, case_name, did_you_mean, nfc
from flexharness.spec import Case
from flexharness.suite import SuiteContext, read_train, task_named

SECTION_KEYS = ("task", "relative", "train", "methods")
CASE_KEYS = ("measured_sparsity", "params", "size_mb", "linear_mb", "latency_ms", "dense_score",
             "compressed_score", "retention", "dense_params", "dense_size_mb", "dense_latency_ms")


class CompressionAxis(Axis):
    key = "compression"

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        return _cases(top, context.cases)

    def run(self, case: Case, model: str, seed: int, context: RunContext) -> dict[str, Any]:
        kept = context.store.kept(case, model, seed) if context.store else None
        return compress.run_compression_case(case, model, seed, context.device_option, context.trust_remote_code,
                                             context.progress, kept)

    def starts_from(self, case: Case) -> Case | None:
        return case  # its data, metrics and train settings are the dense model's (cache.training_recipe)

    def check_model(self, case: Case, model_type: str) -> str | None:
        return compress.supports(dict(case.params), str(case.train.method), model_type)

    def case_fields(self, case: Case, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The method as asked, measures averaged over seeds."""
        params = dict(case.params)
        fields = {"method": params["method"], "sparsity": params.get("sparsity"), "relative": params["relative"]}
        for key in CASE_KEYS:
            values = [r[key] for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            fields[key] = sum(values) / len(values) if values else None
        fresh = [DENSE_FROM.get(r.get("dense_reused"), "trained") for r in records if not r.get("cached")]
        fields["dense_from"] = {source: fresh.count(source) for source in dict.fromkeys(fresh)}
        return fields

    def terminal_lines(self, doc: Mapping[str, Any]) -> list[str]:
        return _table_lines(doc)

    def markdown_lines(self, doc: Mapping[str, Any]) -> list[str]:
        rows = [_row(c) for c in doc["cases"] if c["axis"] == self.key]
        if not rows:
            return []
        return ["", "| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2),
                *("| " + " | ".join(row) + " |" for row in rows)]

    def plots(self, doc: Mapping[str, Any], directory: Path) -> list[Path]:
        models = dict.fromkeys(c["model"] for c in doc["cases"] if _plottable(c))
        labels = model_labels(c["model"] for c in doc["cases"])
        return [_plot(doc, model, directory / output_name("compression", labels[model])) for model in models]


def _cases(top: Reader, tasks: tuple[Case, ...]) -> tuple[Case, ...]:
    """The ``compression:`` section: one case per method entry, one per sparsity for a list."""
    reader = top.child("compression")
    reader.only(SECTION_KEYS)
    base = _task(reader, tasks)
    relative = reader.typed("relative", bool, True)
    if relative and not base.higher_is_better:
        raise reader.error("relative", f"retention needs a higher-is-better metric and '{base.metric}' is not; "
                                       "set 'relative: false'")
    config = read_train(reader.child("train"), base.train)
    dataset = replace(base.dataset, eval_splits=base.dataset.eval_splits[:1])  # scored on the task's first split
    items = reader.raw("methods")
    if not isinstance(items, list) or not items:
        raise reader.error("methods", "expected a non-empty list, e.g. "
                                      "[{method: magnitude, sparsity: [0.3, 0.6]}, {method: int8}]")
    cases, seen = [], {}
    for index, item in enumerate(items):
        entry = Reader(item, reader.path, f"{reader.key('methods')}[{index}]", reader.line_of("methods"))
        for name, params in _entries(entry):
            if name in seen:
                raise entry.error(None, f"duplicate compression case '{name}' (first on line {seen[name]}); "
                                        "add 'name:' to tell them apart")
            seen[name] = entry.line
            cases.append(replace(base, axis="compression", name=name, train=config, line=entry.line, dataset=dataset,
                                 params=tuple(params.items()) + (("relative", relative), ("task", base.name))))
    return tuple(cases)


def _task(reader: Reader, tasks: tuple[Case, ...]) -> Case:
    return task_named(reader, "task", reader.typed("task", str, required=True), tasks)


def _entries(entry: Reader) -> list[tuple[str, dict[str, Any]]]:
    name = entry.typed("method", str, required=True)
    if name not in compress.METHODS:
        raise entry.error("method", f"unknown method '{name}'{did_you_mean(name, compress.METHODS)}; "
                                    f"known: {', '.join(compress.METHODS)}")
    method = compress.METHODS[name]
    entry.only(("method", "name", *method.keys))
    custom = entry.typed("name", str, check=case_name)
    custom = nfc(custom) if custom else custom
    variants = method.parse(entry)
    result = []
    for params in variants:
        label = method.label(params)
        if custom:
            label = custom if len(variants) == 1 else f"{custom}-{compress.percent(params['sparsity'])}"
        result.append((label, {"method": name, **params}))
    return result


DENSE_FROM = {"disk": "loaded", "memo": "memory", True: "memory"}   # a record's dense_reused (True: before 'disk')


def _dense_line(cases: list[Mapping[str, Any]]) -> list[str]:
    """Where the items run now got their dense model: fine-tuned, loaded from kept weights, or in memory."""
    counts = {"trained": 0, "loaded": 0, "memory": 0}
    for c in cases:
        for source, n in (c.get("dense_from") or {}).items():
            counts[source] = counts.get(source, 0) + n
    if not sum(counts.values()):
        return []
    return [f"dense models of the items run: {counts['trained']} fine-tuned, {counts['loaded']} loaded from kept "
            f"weights, {counts['memory']} already in memory"]


COLUMNS = ("case", "model", "asked", "measured", "score", "dense", "retained", "params", "MB",
                       "ms/ex")


def _row(c: Mapping[str, Any]) -> list[str]:
    def num(key: str, spec: str) -> str:
        return "-" if c.get(key) is None else format(c[key], spec)

    params = "-" if c.get("params") is None else f"{c['params'] / 1e6:.2f}M"
    return [c["name"], model_label(c["model"]), num("sparsity", ".2f"), num("measured_sparsity", ".3f"),
            num("compressed_score", ".4f"), num("dense_score", ".4f"), num("retention", ".4f"), params,
            num("size_mb", ".1f"), num("latency_ms", ".3f")]


def _table_lines(doc: Mapping[str, Any]) -> list[str]:
    """What each compression case kept: sparsity asked and measured, scores, size and latency."""
    cases = [c for c in doc["cases"] if c["axis"] == "compression"]
    if not cases:
        return []
    table = [list(COLUMNS), *map(_row, cases)]
    widths = [max(len(row[i]) for row in table) + 2 for i in range(len(COLUMNS))]
    lines = ["".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                     for i, (cell, width) in enumerate(zip(row, widths))) for row in table]
    return ["", "compression (score: the compressed model's metric; retained: score / dense score)", *lines,
            *_dense_line(cases)]



def _plot(doc: Mapping[str, Any], model: str, path: Path) -> Path:
    """Score (or retention) against the fraction of encoder weights zeroed or removed.

    Magnitude pruning draws one line per variant, starting at the dense model;
    the other methods are labelled points.
    """
    plt = plots.pyplot()
    cases = [c for c in doc["cases"] if c["model"] == model and _plottable(c)]
    relative = all(c.get("relative") for c in cases)
    dense = 1.0 if relative else cases[0]["dense_score"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    lines: dict[str, list[dict[str, Any]]] = {}
    for c in cases:
        if c["method"] == "magnitude":
            lines.setdefault(c["name"].rsplit("-", 1)[0], []).append(c)
        else:
            ax.scatter(c["measured_sparsity"], c["score"], marker="D", color="tab:red", zorder=3)
            offset = (5, -12) if len(ax.texts) % 2 == 0 else (5, 4)  # neighbours' labels alternate above and below
            ax.annotate(c["name"], (c["measured_sparsity"], c["score"]), textcoords="offset points", xytext=offset)
    for label, members in lines.items():
        members.sort(key=lambda c: c["measured_sparsity"])
        ax.plot([0.0] + [c["measured_sparsity"] for c in members], [dense] + [c["score"] for c in members],
                marker="o", label=label)
    ax.scatter([0.0], [dense], marker="*", s=120, color="black", zorder=4, label="dense")
    ax.set_xlabel("encoder Linear weights zeroed or removed (measured)")
    ax.set_ylabel("retention (compressed / dense)" if relative else f"score ({cases[0]['metric']})")
    ax.set_title(f"compression: {model_label(model)}")
    ax.legend(loc="lower left")
    fig.tight_layout()
    plots.save(fig, path)
    plt.close(fig)
    return path


def _plottable(case: dict[str, Any]) -> bool:
    return case["axis"] == "compression" and case["score"] is not None and case.get("measured_sparsity") is not None
