"""The compression axis: prune or quantize, fine-tune or not, score what survives.

The suite section and the case fields are here, the table and the plot in
``compression_report``; the methods themselves (how each is written and how it
runs) are in ``flexharness.engine.compress``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from flexharness.axes import compression_choice, compression_report
from flexharness.axes.base import Axis, RunContext
from flexharness.axes.tasks import task_named
from flexharness.engine import compress
from flexharness.suite.reader import SuiteContext, read_train
from flexharness.suite.schema import Reader, case_name, did_you_mean, nfc
from flexharness.suite.spec import Case

SECTION_KEYS = ("task", "relative", "train", "methods", "choose")
CASE_KEYS = ("measured_sparsity", "params", "size_mb", "linear_mb", "latency_ms", "dense_score",
             "compressed_score", "retention", "dense_params", "dense_size_mb", "dense_latency_ms")


class CompressionAxis(Axis):
    key = "compression"
    report = compression_report
    document_keys = compression_choice.DOCUMENT_KEYS

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
        return fields | compression_choice.case_fields(dict(params.get("choose") or ()), records)


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
    choose = compression_choice.read_choose(reader)
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
                                 params=tuple(params.items()) + (("relative", relative), ("task", base.name))
                                 + ((("choose", choose),) if choose else ())))
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
