"""The fusion axis: do several fine-tuned runs of a task, combined, beat the best one alone?

One case per (task, method) under ``fusion:``; one item per (task, method, model), deterministic given its
ingredients: the task's runs (one per seed) fine-tuned on its training rows minus a held-out slice. An
item finds each ingredient in the result cache by the ingredient's own key, and trains and stores the
ones that are missing, so the items of one section share them (also across xdist workers and reruns).
With a ``domains:`` section, the runs and the fused models are also scored on the evaluation split of
each domain other than the task's own (``soup.OTHER_DOMAINS``). The arithmetic of the methods is in ``flexharness.engine.soup``; docs/fusion.md says why it is built so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flexharness.axes import fusion_report
from flexharness.axes.base import Axis, RunContext
from flexharness.axes.domains import Domain
from flexharness.axes.tasks import read_tasks
from flexharness.engine import kinds, soup
from flexharness.engine.weights import STATE
from flexharness.errors import FlexError
from flexharness.store.keys import KeyedAs
from flexharness.suite.reader import COMBINES_SEEDS, SuiteContext, check_expansion, read_train
from flexharness.suite.schema import Reader, did_you_mean, open_fraction
from flexharness.suite.spec import Case, DatasetSpec, Planned

SECTION_KEYS = ("task", "methods", "runs", "held_out", "shared_head", "train")
HEAD_SEED = 0   # the head initialisation every ingredient shares under ``shared_head: true``
RECORD_FIELDS = ("single_scores", "best_single", "mean_single", "gain", "used", "inference_cost", "ensemble_method",
                 "held_out_score", "best_single_held_out", "held_out_examples", "other_domains", "ood_gain",
                 "trained_runs")


class FusionAxis(Axis):
    key = "fusion"
    gate_stats = tuple(fusion_report.GATED)
    report = fusion_report

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        reader = top.child("fusion")
        reader.only(SECTION_KEYS)
        tasks = read_tasks(reader, context.cases, "task", twice="tasks must be distinct", every_by_default=True,
                           none="fusion combines runs of tasks: add a 'tasks:' list first")
        methods = _methods(reader)
        held_out = reader.typed("held_out", float, 0.1, check=open_fraction)
        shared = reader.typed("shared_head", bool, True)
        runs = _runs(reader)
        check_expansion(reader, "runs" if runs else None,
                        len(tasks) * (len(methods) + (len(runs) if runs else 0)), "items (tasks x (methods + runs))")
        line = reader.line_of("methods") if reader.has("methods") else reader.line
        domains = [Domain(c.name, c.dataset, c.where, c.line) for c in context.cases if c.axis == "domains"]
        cases = []
        for task in tasks:
            train = read_train(reader.child("train"), task.train)
            train = replace(train, seeds=tuple(runs)) if runs else train
            dataset = replace(task.dataset, eval_splits=task.dataset.eval_splits[:1])  # the task's first split
            others = tuple(d for d in domains if (d.dataset, d.where) != (task.dataset, task.where))
            params = ((COMBINES_SEEDS, True), ("task", task.name), ("held_out", held_out), ("shared_head", shared),
                      ("keep_weights", any(m in soup.SOUPS for m in methods)),
                      *(((soup.OTHER_DOMAINS, others),) if others else ()))  # absent: the keys of before domains
            cases += [replace(task, axis=self.key, name=f"{task.name}-{method}", train=train, dataset=dataset,
                              line=line, params=(*params[:2], ("method", method), *params[2:],
                                                 *_ensemble_method(task, method))) for method in methods]
        return tuple(cases)

    def check_gates(self, gates: Reader, cases: tuple[Case, ...]) -> None:
        if not gates.has("ood_gain"):
            return
        alone = [c.name for c in cases if c.axis == self.key and not dict(c.params).get(soup.OTHER_DOMAINS)]
        if alone:
            raise gates.error("ood_gain", f"fusion case '{alone[0]}' has no other domain to be scored on: an "
                                          "out-of-domain gain needs a 'domains:' section with a domain besides the "
                                          "task's own")

    def cache_inputs(self, case: Case) -> tuple[DatasetSpec, ...]:
        return other_datasets(case)

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


def other_datasets(case: Case) -> tuple[DatasetSpec, ...]:
    """The other domains' datasets (their evaluation splits are scored): in the keys of runs and items."""
    others = dict(case.params).get(soup.OTHER_DOMAINS, ())
    return tuple(dict.fromkeys(d.dataset for d in others if d.dataset != case.dataset))


def ingredient_case(case: Case) -> Case:
    """The run a fusion case combines, as a case of its own: its result-cache key does not depend on the
    method, so the ensemble and the soups of one task share their ingredients."""
    params = dict(case.params)
    others = params.get(soup.OTHER_DOMAINS)
    return replace(case, name=params["task"], params=(("ingredient_of", params["task"]),
                                                      ("held_out", params["held_out"]),
                                                      ("head_seed", HEAD_SEED if params["shared_head"] else None),
                                                      *(((soup.OTHER_DOMAINS, others),) if others else ())))


def _ingredient(recipe: Case, model: str, seed: int, keep_weights: bool, context: RunContext,
                trained: list[int]) -> soup.Ingredient:
    """The stored run when its record, outputs and (for soups) weights are all there, else a fresh one, stored:
    through the store's one cached-run path, so the items of one section share their ingredients."""
    planned = Planned(f"fusion/{recipe.name}[run-seed{seed}]", recipe, model, seed)
    params = dict(recipe.params)

    def compute() -> dict[str, Any]:
        record, state = soup.train_ingredient(recipe, model, seed, params["head_seed"], params["held_out"],
                                              context.device_option, context.trust_remote_code, context.progress)
        return {**record, STATE: state}

    stored = context.store.run(planned, planned.name, compute, KeyedAs(inputs=other_datasets(recipe)),
                               with_outputs=True, with_weights=keep_weights,
                               output_fields=kinds.of(recipe).ensemble_fields)
    if not stored.record["cached"]:
        trained.append(seed)
    return soup.Ingredient(seed, stored.record, stored.outputs or {}, stored.weights)


def _ensemble_method(task: Case, method: str) -> tuple[tuple[str, str], ...]:
    """The case parameter that puts an ensemble's method in its key where the ensemble reads more than the
    runs' stored outputs (QA's start and end logits, which replaced a vote over the runs' answers): an item
    cached with the vote is computed again. Absent elsewhere: those items keep the keys they had."""
    kind = kinds.of(task)
    return (("ensemble_method", kind.ensemble_method),) if method == "ensemble" and kind.ensemble_fields else ()


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
    """``runs: 5`` (seeds 0–4, counted before they are built) or ``runs: [0, 3, 7]``; None: the task's seeds."""
    raw = reader.raw("runs")
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise reader.error("runs", "expected a number of runs (seeds 0, 1, ...), e.g. 5, or a list of distinct "
                                       "non-negative seeds, e.g. [0, 1, 2]")
        return tuple(range(check_expansion(reader, "runs", raw, "runs")))
    return reader.seeds("runs")

