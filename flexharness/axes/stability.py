"""The stability axis: does the model adapt without per-task tuning?

Each task named under ``stability:`` is fine-tuned over a grid of settings (learning rates, batch sizes,
epochs) and seeds; each (task, setting) is a case, each seed an item. An item is the tasks item of the same
recipe (:meth:`StabilityAxis.cache_case`), so a grid that holds the suite's own recipe reuses those records.
Per task the controller reports the setting means, the best setting, the spread across settings, the failure
rate against the majority-class score and the expected best score over k trials (``stability_stats``), from
the results document alone, so ``flexharness merge`` decides what one run decides. docs/stability.md.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from flexharness.axes import stability_report as stats
from flexharness.axes.base import Axis, RunContext
from flexharness.axes.tasks import read_tasks
from flexharness.engine import runner
from flexharness.suite.reader import SETTING, SuiteContext, check_expansion
from flexharness.suite.schema import Reader, non_negative
from flexharness.suite.spec import Case

SECTION_KEYS = ("tasks", "learning_rates", "batch_sizes", "epochs", "seeds", "margin")
GRID = (("learning_rates", "learning_rate", "lr", float), ("batch_sizes", "batch_size", "bs", int),
        ("epochs", "epochs", "ep", int))   # (suite key, train field, label in case names, type)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
STATS = ("failure_rate", "spread")


class StabilityAxis(Axis):
    key = "stability"
    gate_stats = STATS
    document_keys = ("stability", "stability_majority")
    report = stats

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        """One case per (task, setting); the setting overrides the task's own train config."""
        reader = top.child("stability")
        reader.only(SECTION_KEYS)
        tasks = read_tasks(reader, context.cases)
        grid = [(field, label, values) for key, field, label, kind in GRID
                if (values := _values(reader, key, kind)) is not None]
        seeds = _seeds(reader)
        margin = reader.typed("margin", float, 0.0, check=non_negative)
        check_expansion(reader, None, math.prod([len(tasks), len(seeds), *(len(v) for _, _, v in grid)]),
                        "items (tasks x settings x seeds)")
        cases = []
        for task in tasks:
            for setting in _settings(grid):
                train = replace(task.train, seeds=seeds, **{field: value for field, _, value in setting})
                name = f"{task.name}@{','.join(f'{label}={_label(value)}' for _, label, value in setting)}" \
                    if setting else f"{task.name}@recipe"
                params = (("task", task.name), (SETTING, tuple((f, v) for f, _, v in setting)),
                          ("margin", margin), ("task_dataset", task.dataset))
                cases.append(replace(task, axis=self.key, name=name, train=train, line=reader.line, params=params,
                                     dataset=replace(task.dataset, eval_splits=task.dataset.eval_splits[:1])))
        return tuple(cases)

    def check_gates(self, gates: Reader, cases: tuple[Case, ...]) -> None:
        for stat in STATS:
            if gates.has(stat):
                bounds = gates.child(stat)
                if bounds.has("min"):
                    raise bounds.error("min", f"{stat} is a worst-case bound: it takes only 'max'")

    def cache_case(self, case: Case) -> Case:
        """The tasks case with this setting: the same record, the same key, exactly when the recipes match."""
        params = dict(case.params)
        return replace(case, axis="tasks", name=params["task"], dataset=params["task_dataset"], line=0, params=())

    def run(self, case: Case, model: str, seed: int, context: RunContext) -> dict[str, Any]:

        return runner.run_case(self.cache_case(case), model, seed, context.device_option,
                               context.trust_remote_code, context.progress)

    def case_fields(self, case: Case, records: list[dict[str, Any]]) -> dict[str, Any]:
        params = dict(case.params)
        return {"task": params["task"], "setting": dict(params["setting"]), "margin": params["margin"]}


def _values(reader: Reader, key: str, kind: type) -> tuple[Any, ...] | None:
    """A grid dimension: a non-empty list of distinct positive numbers (None when the key is absent)."""
    if not reader.has(key):
        return None
    raw = reader.raw(key)
    items = raw if isinstance(raw, list) else [raw]
    example = "[1.0e-5, 2.0e-5, 5.0e-5]" if kind is float else "[16, 32]"
    values = [Reader({key: item}, reader.path, reader.prefix, reader.line_of(key)).typed(key, kind)
              for item in items] if items else []
    if not values or any(v <= 0 for v in values):
        raise reader.error(key, f"expected a non-empty list of numbers greater than 0, e.g. {example}")
    labels = [_label(v) for v in values]
    if len(set(labels)) != len(labels):
        raise reader.error(key, f"values must be distinct (as case names write them: {', '.join(labels)})")
    return tuple(values)


def _seeds(reader: Reader) -> tuple[int, ...]:
    return reader.seeds("seeds") or DEFAULT_SEEDS


def _settings(grid: list[tuple[str, str, tuple[Any, ...]]]) -> list[tuple[tuple[str, str, Any], ...]]:
    """Every combination of the grid's values, the first dimension varying slowest; one empty setting without a grid."""
    settings: list[tuple[tuple[str, str, Any], ...]] = [()]
    for field, label, values in grid:
        settings = [s + ((field, label, v),) for s in settings for v in values]
    return settings


def _label(value: float | int) -> str:
    """A setting value as case names write it: learning rates as 2e-05 or 2.5e-05 (no '.' for 1e-3: pytest's
    verbose lines show a '.' in a test name as '::'), integers as they are."""
    if isinstance(value, int):
        return str(value)
    mantissa, _, exponent = f"{value:.6e}".partition("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"
