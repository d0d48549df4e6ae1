"""The tasks axis: one case per task under ``tasks:``, each fine-tuned and scored with its metric."""

from __future__ import annotations

from typing import Any

from flexharness.axes import tasks_report
from flexharness.axes.base import Axis, RunContext
from flexharness.engine import runner
from flexharness.rules.calibration import FIELDS
from flexharness.suite.reader import SuiteContext, dataset_ref, read_filters, read_metrics, read_slices, read_train
from flexharness.suite.schema import Reader, case_name, did_you_mean, nfc
from flexharness.suite.spec import Case

TASK_KEYS = ("name", "dataset", "metric", "where", "train", "slices")


class TasksAxis(Axis):
    key = "tasks"
    expands_methods = True
    report = tasks_report
    gate_stats = FIELDS   # ece, brier: bounds on the worst case's calibration (axes/tasks_report.py)

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


def read_tasks(reader: Reader, cases: tuple[Case, ...], key: str = "tasks", *, none: str | None = None,
               twice: str = "each task may be named once", every_by_default: bool = False) -> list[Case]:
    """The cases of the tasks axis that ``key`` names (a name or a list), in the order given: how a section
    of another axis finds its tasks. ``none``: the error when the suite has no tasks at all (else an unknown
    name's error says 'none defined'); ``every_by_default``: every task when ``key`` is absent (else required)."""
    by_name = {c.name: c for c in cases if c.axis == TasksAxis.key}
    if none is not None and not by_name:
        raise reader.error(None, none)
    names = reader.str_or_list(key, required=not every_by_default) or tuple(by_name)
    found = [task_named(reader, key, name, cases) for name in names]
    if len(set(names)) != len(names):
        raise reader.error(key, twice)
    return found


def task_named(reader: Reader, key: str, name: str, cases: tuple[Case, ...]) -> Case:
    """The case of the tasks axis called ``name``; else an error at ``key`` with a did-you-mean."""
    by_name = {c.name: c for c in cases if c.axis == TasksAxis.key}
    if name not in by_name:
        known = ", ".join(by_name) or "none defined"
        raise reader.error(key, f"no case named '{name}' under 'tasks:'{did_you_mean(name, by_name)} "
                                f"(known: {known})")
    return by_name[name]
