"""The tasks axis: one case per task under ``tasks:``, each fine-tuned and scored with its metric."""

from __future__ import annotations

from typing import Any

from flexharness.axes.base import Axis, RunContext
from flexharness.engine import runner
from flexharness.schema import Reader, case_name, nfc
from flexharness.spec import Case
from flexharness.suite import SuiteContext, dataset_ref, read_filters, read_metrics, read_slices, read_train

TASK_KEYS = ("name", "dataset", "metric", "where", "train", "slices")


class TasksAxis(Axis):
    key = "tasks"

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        items = top.raw("tasks") or []
        if not isinstance(items, list):
            raise top.error("tasks", "expected a list of tasks, each a mapping with 'name', 'dataset' and 'metric'")
        cases, seen = [], {}
        for index, item in enumerate(items):
            reader = Reader(item, top.path, f"tasks[{index}]", top.line_of("tasks"))
            reader.only(TASK_KEYS)
            name = nfc(reader.typed("name", str, required=True, check=case_name))
            if name in seen:
                raise reader.error("name", f"duplicate case name '{name}' (first on line {seen[name]})")
            seen[name] = reader.line
            cases.append(Case(
                suite=context.name, axis=self.key, name=name, dataset=dataset_ref(reader, context.datasets),
                metrics=read_metrics(reader), train=read_train(reader.child("train"), context.defaults),
                where=read_filters(reader.child("where")), line=reader.line, slices=read_slices(reader, "slices"),
            ))
        return tuple(cases)

    def run(self, case: Case, model: str, seed: int, context: RunContext) -> dict[str, Any]:
        kept = context.store.kept(case, model, seed) if context.keep_weights and context.store else None
        return runner.run_case(case, model, seed, context.device_option, context.trust_remote_code, context.progress,
                               kept=kept)

    def trains(self, case: Case) -> Case | None:
        return case
