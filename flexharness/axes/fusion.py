"""The fusion axis: do several fine-tuned runs of a task, combined, beat the best one alone?

One case per (task, method) under ``fusion:``; one item per (task, method, model), deterministic given its
ingredients: the task's runs (one per seed) fine-tuned on its training rows minus a held-out slice, or with
``held_out: 0`` the tasks axis's own runs of the same recipe (:func:`task_run_case`: one key, so no run is
fine-tuned twice). An item finds each ingredient in the result cache by the ingredient's own key, and trains
and stores the ones that are missing, so the items of one section share them (also across xdist workers and
reruns). With a ``domains:`` section, the runs and the fused models are also scored on the evaluation split
of each domain other than the task's own (``soup.OTHER_DOMAINS``). Every item keeps its runs' per-example
outputs, so that the controller can fuse runs of different models (``fusion_across``). The arithmetic of the
methods is in ``flexharness.engine.soup``; docs/fusion.md says why it is built so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from flexharness.axes import fusion_across, fusion_report
from flexharness.axes.base import Axis, RunContext, Store
from flexharness.axes.domains import Domain
from flexharness.axes.tasks import read_tasks
from flexharness.engine import kinds, runner, soup
from flexharness.engine.runner import PER_EXAMPLE
from flexharness.engine.weights import STATE
from flexharness.errors import FlexError
from flexharness.results.significance import CaseKey, SeedOutputs, Settings
from flexharness.store.keys import KeyedAs
from flexharness.suite.reader import COMBINES_SEEDS, SuiteContext, check_expansion, read_train
from flexharness.suite.schema import Reader, did_you_mean, fraction
from flexharness.suite.spec import Case, DatasetSpec, Planned

SECTION_KEYS = ("task", "methods", "runs", "held_out", "shared_head", "choose_on", "across_models", "train")
COMBINED_RUNS = "combined_runs"   # in an item's key only: the seeds of the runs it combines
HEAD_SEED = 0   # the head initialisation every ingredient shares under ``shared_head: true``
RECORD_FIELDS = ("single_scores", "best_single", "mean_single", "gain", "used", "inference_cost", "ensemble_method",
                 "held_out_score", "best_single_held_out", "held_out_examples", "other_domains", "ood_gain",
                 "trained_runs", "eval_split")


class FusionAxis(Axis):
    key = "fusion"
    gate_stats = (*fusion_report.GATED, *fusion_report.ACROSS_GATED)
    document_keys = (fusion_across.KEY,)
    report = fusion_report

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        reader = top.child("fusion")
        reader.only(SECTION_KEYS)
        tasks = read_tasks(reader, context.cases, "task", twice="tasks must be distinct", every_by_default=True,
                           none="fusion combines runs of tasks: add a 'tasks:' list first")
        held_out = reader.typed("held_out", float, 0.1, check=fraction)
        reused = held_out == 0   # the runs are the tasks runs of the same recipe
        shared = _shared_head(reader, reused)
        choose_on = _choose_on(reader, reused, tasks)
        methods = _methods(reader, choose_on is not None or not reused)
        across = reader.typed("across_models", bool)
        if across and reused and choose_on is None:
            raise reader.error("across_models", f"greedy ensemble selection chooses runs on rows they were not "
                                                f"trained on: {NO_CHOICE}")
        _check_reuse(reader, reused, methods, tasks)
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
            # absent at their defaults: the keys of before domains, reuse and fusion across models
            params = ((COMBINES_SEEDS, True), ("task", task.name), ("held_out", held_out), ("shared_head", shared),
                      ("keep_weights", any(m in soup.SOUPS for m in methods)),
                      *(((soup.OTHER_DOMAINS, others),) if others and not reused else ()),
                      *((("task_dataset", task.dataset),) if reused else ()),
                      *((("choose_on", choose_on),) if choose_on else ()),
                      *((("across_models", across),) if across is not None else ()))
            cases += [replace(task, axis=self.key, name=f"{task.name}-{method}", train=train, dataset=dataset,
                              line=line, params=(*params[:2], ("method", method), *params[2:],
                                                 *_ensemble_method(task, method))) for method in methods]
        return tuple(cases)

    def cache_case(self, case: Case) -> Case:
        """The item's key names every run it combines: the key of a case drops its seed list and an item's seed is
        its first run only, so without this ``runs: 3`` would reuse the record ``runs: 2`` made."""
        return replace(case, params=(*case.params, (COMBINED_RUNS, tuple(case.train.seeds))))

    def check_gates(self, gates: Reader, cases: tuple[Case, ...]) -> None:
        mine = [c for c in cases if c.axis == self.key]
        if gates.has("ood_gain"):
            alone = [c for c in mine if not dict(c.params).get(soup.OTHER_DOMAINS)]
            if alone:
                why = ("its runs are the tasks runs ('held_out: 0'), which are not scored on other domains"
                       if soup.runs_are_task_runs(alone[0]) else "an out-of-domain gain needs a 'domains:' "
                       "section with a domain besides the task's own")
                raise gates.error("ood_gain", f"fusion case '{alone[0].name}' has no other domain to be scored on: "
                                              f"{why}")
        if gates.has("across_gain"):
            off = [c for c in mine if dict(c.params).get("across_models") is False]
            if off:
                raise gates.error("across_gain", f"fusion case '{off[0].name}' has 'across_models: false': there is "
                                                 "no fusion across models to gate; remove the gate or the key")

    def cache_inputs(self, case: Case) -> tuple[DatasetSpec, ...]:
        return other_datasets(case)

    def run(self, case: Case, model: str, seed: int, context: RunContext) -> dict[str, Any]:
        if context.store is None:
            raise FlexError("the fusion axis needs a store for its runs (RunContext.store); run it through pytest")
        params = dict(case.params)
        trained: list[int] = []
        ingredients = [_ingredient(case, model, s, params["keep_weights"], context.store, context, trained)
                       for s in case.train.seeds]
        record = soup.fuse(case, model, params["method"], ingredients, context.device_option,
                           context.trust_remote_code)
        if not kinds.of(case).ensemble_fields:   # runs of other models combine with these from their outputs
            record[PER_EXAMPLE][record["eval_split"]] |= fusion_across.pack_runs(ingredients)
        return {**record, "trained_runs": trained, "total_params": ingredients[0].record.get("total_params")}

    def starts_from(self, case: Case) -> Case | None:
        """With ``held_out: 0`` and a soup, the tasks run of each seed keeps its weights for the soup to average."""
        params = dict(case.params)
        return task_run_case(case) if soup.runs_are_task_runs(case) and params["keep_weights"] else None

    def case_fields(self, case: Case, records: list[dict[str, Any]]) -> dict[str, Any]:
        params = dict(case.params)
        found = records[0] if records else {}
        return {"task": params["task"], "method": params["method"], "runs": list(case.train.seeds),
                "shared_head": params["shared_head"], "held_out": params["held_out"],
                "runs_from": "tasks" if soup.runs_are_task_runs(case) else "fusion",
                "choose_on": params.get("choose_on"),
                "choice_split": soup.choice_split(case), "across_models": params.get("across_models"),
                **{key: found.get(key) for key in RECORD_FIELDS}}

    def from_outputs(self, doc: dict[str, Any], outputs: Mapping[CaseKey, SeedOutputs], settings: Settings) -> None:
        doc[fusion_across.KEY] = fusion_across.section(doc, outputs, settings)


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


def task_run_case(case: Case) -> Case:
    """With ``held_out: 0``, the run a fusion case combines is the tasks case with the fusion section's recipe:
    the same result-cache key as the tasks item (and the stability item) of that recipe, so it is stored once."""
    params = dict(case.params)
    return replace(case, axis="tasks", name=params["task"], dataset=params["task_dataset"], line=0, params=())


def _ingredient(case: Case, model: str, seed: int, keep_weights: bool, store: Store, context: RunContext,
                trained: list[int]) -> soup.Ingredient:
    """The stored run when its record, outputs and (for soups) weights are all there, else a fresh one, stored:
    through the store's one cached-run path, so the items of one section (and with ``held_out: 0`` the tasks
    items) share their runs."""
    if soup.runs_are_task_runs(case):
        recipe = task_run_case(case)
        planned = Planned(f"tasks/{recipe.name}[seed{seed}]", recipe, model, seed)
        kept = store.kept(recipe, model, seed) if keep_weights else None
        stored = store.run(
            planned, planned.name, lambda: runner.run_case(recipe, model, seed, context.device_option,
                                                           context.trust_remote_code, context.progress, kept=kept),
            KeyedAs(recipe), with_outputs=True, with_weights=kept is not None,
            weights_at=kept.path if kept is not None else None)
    else:
        recipe = ingredient_case(case)
        planned = Planned(f"fusion/{recipe.name}[run-seed{seed}]", recipe, model, seed)
        params = dict(recipe.params)

        def compute() -> dict[str, Any]:
            record, state = soup.train_ingredient(recipe, model, seed, params["head_seed"], params["held_out"],
                                                  context.device_option, context.trust_remote_code, context.progress)
            return {**record, STATE: state}

        stored = store.run(planned, planned.name, compute, KeyedAs(inputs=other_datasets(recipe)),
                           with_outputs=True, with_weights=keep_weights, output_fields=kinds.of(recipe).ensemble_fields)
    if not stored.record["cached"] and stored.record.get("weights_reused") != "disk":
        trained.append(seed)
    return soup.Ingredient(seed, stored.record, stored.outputs or {}, stored.weights)


def _ensemble_method(task: Case, method: str) -> tuple[tuple[str, str], ...]:
    """The case parameter that puts an ensemble's method in its key where the ensemble reads more than the
    runs' stored outputs (QA's start and end logits, which replaced a vote over the runs' answers): an item
    cached with the vote is computed again. Absent elsewhere: those items keep the keys they had."""
    kind = kinds.of(task)
    return (("ensemble_method", kind.ensemble_method),) if method == "ensemble" and kind.ensemble_fields else ()


NO_CHOICE = ("with 'held_out: 0' the runs are the tasks runs, trained on every training row, and the evaluation "
             "split is not chosen on: name another evaluation split of the task with 'choose_on', or hold rows out "
             "with 'held_out' (e.g. 0.1)")


def _check_reuse(reader: Reader, reused: bool, methods: tuple[str, ...], tasks: list[Case]) -> None:
    """The tasks runs keep their outputs only: a kind whose ensemble reads more (QA's window logits) needs runs
    of fusion's own for an ensemble."""
    needing = next((t for t in tasks if kinds.of(t).ensemble_fields), None) if reused and "ensemble" in methods \
        else None
    if needing is not None:
        kind = kinds.of(needing)
        raise reader.error("methods" if reader.has("methods") else "held_out",
                           f"the ensemble of task '{needing.name}' ({kind.key}) averages what its runs keep besides "
                           f"their outputs ({', '.join(kind.ensemble_fields)}), which the tasks runs do not keep: "
                           "leave 'ensemble' out of 'methods', or hold rows out with 'held_out' (e.g. 0.1)")


def _shared_head(reader: Reader, reused: bool) -> bool:
    """Shared by default for runs of fusion's own; the tasks runs' heads start from their own seeds."""
    shared = reader.typed("shared_head", bool, not reused)
    if shared and reused:
        raise reader.error("shared_head", "with 'held_out: 0' the runs are the tasks runs, whose heads start from "
                                          "their own seeds; a shared head needs runs of fusion's own: set "
                                          "'shared_head: false', or hold rows out with 'held_out'")
    return shared


def _choose_on(reader: Reader, reused: bool, tasks: list[Case]) -> str | None:
    """``choose_on: SPLIT``: another evaluation split of every task, for greedy choices over the tasks runs."""
    split = reader.typed("choose_on", str)
    if split is None:
        return None
    if not reused:
        raise reader.error("choose_on", "the runs are chosen on their held-out rows; 'choose_on' names the split "
                                        "to choose on when they are the tasks runs ('held_out: 0')")
    for task in tasks:
        splits = task.dataset.eval_splits
        if split not in splits[1:]:
            raise reader.error("choose_on", f"'{split}' is not an evaluation split of task '{task.name}' besides "
                                            f"the first ('{splits[0] if splits else 'test'}', which fusion is "
                                            f"scored on); its evaluation splits: {', '.join(splits) or 'one'}")
    return split


def _methods(reader: Reader, can_choose: bool) -> tuple[str, ...]:
    """The methods named, or all that can run: without rows to choose on, greedy soup cannot."""
    possible = soup.METHODS if can_choose else tuple(m for m in soup.METHODS if m not in soup.CHOOSING)
    methods = reader.str_or_list("methods", possible)
    for method in methods:
        if method not in soup.METHODS:
            raise reader.error("methods", f"unknown method '{method}'{did_you_mean(method, soup.METHODS)}; "
                                          f"known: {', '.join(soup.METHODS)}")
        if method not in possible:
            raise reader.error("methods", f"{method} chooses runs on rows they were not trained on: {NO_CHOICE}")
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

