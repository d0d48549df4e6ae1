"""The efficiency axis: how little training data does the model need?

Each task named under ``efficiency:`` is fine-tuned on nested training subsets of growing size
(``rules.curves.nested_subsets``: stratified, each inside the next, drawn with the fixed data seed) and
always scored on the task's own evaluation rows; each (task, size) is a case, each seed an item. Per task and
model the controller reports the learning curve, its area over log size (AULC), the smallest size that
reaches ``target`` × the largest size's score, and between models the data advantage
(``efficiency_stats``), from the results document alone, so ``flexharness merge`` decides alike.
docs/efficiency.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from flexharness.axes import efficiency_report as stats
from flexharness.axes.base import Axis, RunContext
from flexharness.axes.tasks import read_tasks
from flexharness.engine import runner
from flexharness.errors import DataError
from flexharness.rules import curves
from flexharness.suite.reader import TRAIN_ROWS, SuiteContext, check_expansion, read_train
from flexharness.suite.schema import Reader
from flexharness.suite.spec import Case

SECTION_KEYS = ("task", "tasks", "sizes", "seeds", "target", "train")
SMALL = 128                    # sizes up to this many examples get the larger default seed list
SMALL_SEEDS = (0, 1, 2, 3, 4)  # few examples: the run-to-run spread is large, so more seeds
LARGE_SEEDS = (0, 1, 2)
DATA_SEED = 0                  # the subsets depend on it, never on the training seed: every seed and model sees the same rows


class EfficiencyAxis(Axis):
    key = "efficiency"
    gate_stats = ("aulc",)
    document_keys = ("efficiency", "efficiency_advantage")
    report = stats

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        """One case per (task, size): the task's recipe (and the section's ``train``), a seed list per size."""
        reader = top.child("efficiency")
        reader.only(SECTION_KEYS)
        tasks = _tasks(reader, context.cases)
        sizes = _sizes(reader)
        seeds = reader.seeds("seeds")
        check_expansion(reader, None, len(tasks) * len(sizes) * len(seeds or SMALL_SEEDS),
                        "items (tasks x sizes x seeds)")
        target = reader.typed("target", float, 0.9, check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
        cases = []
        for task in tasks:
            train = read_train(reader.child("train"), task.train)
            limit = train.max_train_samples
            if limit is not None and sizes[-1] > limit:
                raise reader.error("sizes", f"size {sizes[-1]} is larger than the {limit} training examples task "
                                            f"'{task.name}' keeps (max_train_samples); drop it or raise the limit")
            dataset = replace(task.dataset, eval_splits=task.dataset.eval_splits[:1])
            for size in sizes:
                size_seeds = seeds or (SMALL_SEEDS if size <= SMALL else LARGE_SEEDS)
                cases.append(replace(task, axis=self.key, name=f"{task.name}@n={size}", dataset=dataset,
                                     train=replace(train, seeds=size_seeds), line=reader.line_of("sizes"),
                                     params=(("task", task.name), (TRAIN_ROWS, size), ("target", target),
                                             ("task_dataset", task.dataset))))
        return tuple(cases)

    def cache_case(self, case: Case) -> Case:
        """The tasks case when the size is all the task keeps (``max_train_samples``): the same rows, the same
        record. Otherwise the case without what cannot change a record (the target, the other sizes)."""
        params = dict(case.params)
        if params["size"] == case.train.max_train_samples:
            return replace(case, axis="tasks", name=params["task"], dataset=params["task_dataset"], line=0, params=())
        return replace(case, params=(("task", params["task"]), ("size", params["size"])))

    def run(self, case: Case, model: str, seed: int, context: RunContext) -> dict[str, Any]:

        size = dict(case.params)[TRAIN_ROWS]

        def rows(labels: np.ndarray) -> np.ndarray:
            if size > len(labels):
                raise _too_few(case, len(labels))
            return curves.nested_subsets(labels, [size], DATA_SEED)[size]

        return runner.run_case(self.cache_case(case), model, seed, context.device_option,
                               context.trust_remote_code, context.progress, train_rows=rows)

    def check_record(self, case: Case, record: Mapping[str, Any]) -> None:
        """A point of the curve is the size it names: a record (the tasks item's, say) trained on fewer rows fails."""
        found = record.get("train_examples")
        if isinstance(found, int) and found != dict(case.params)[TRAIN_ROWS]:
            raise _too_few(case, found)

    def case_fields(self, case: Case, records: list[dict[str, Any]]) -> dict[str, Any]:
        params = dict(case.params)
        counts = sorted({r["train_examples"] for r in records if r and r.get("train_examples") is not None})
        return {"task": params["task"], "size": params["size"], "target": params["target"],
                "train_examples": counts[0] if len(counts) == 1 else (counts or None)}


def _too_few(case: Case, available: int) -> DataError:
    params = dict(case.params)
    return DataError(f"size {params[TRAIN_ROWS]} is larger than the {available} training examples task "
                     f"'{params['task']}' has (after its filters and max_train_samples); drop the size or add data",
                     case.dataset.origin, case.line, "efficiency.sizes")


def _tasks(reader: Reader, cases: tuple[Case, ...]) -> list[Case]:
    """The named cases of the tasks axis (``task:`` or ``tasks:``, a name or a list), in the order given."""
    if reader.has("task") and reader.has("tasks"):
        raise reader.error("tasks", "give either 'task' or 'tasks', not both")
    return read_tasks(reader, cases, "tasks" if reader.has("tasks") else "task",
                      none="learning curves are drawn for tasks: add a 'tasks:' list first")


def _sizes(reader: Reader) -> tuple[int, ...]:
    """At least two distinct positive training sizes, ascending (an area needs two points)."""
    raw = reader.raw("sizes")
    if raw is None:
        raise reader.error("sizes", "required: the training sizes of the curve, e.g. [32, 128, 512, 2048]")
    if not isinstance(raw, list) or len(raw) < 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in raw) or len(set(raw)) != len(raw):
        raise reader.error("sizes", "expected a list of at least two distinct positive integers, "
                                    "e.g. [32, 128, 512, 2048]")
    return tuple(sorted(raw))
