"""Fusion of fine-tuned runs: ingredients trained on training data minus a held-out slice, their output
ensemble, and model soups (weights averaged, Wortsman et al. 2022) scored as one model.

An ingredient is one fine-tuning run of a task (one seed) on the task's training rows minus a
deterministic, stratified held-out slice; it is scored on the task's evaluation split, on that
slice and on the evaluation split of each other domain of the suite (``OTHER_DOMAINS``), keeps
what its kind's output ensemble reads (``TaskKind.ensemble_arrays``: QA's start and end logits),
and its weights are kept (safetensors) for the soups. Greedy soup chooses ingredients by their
score on the slice, never on an evaluation split. With ``held_out: 0`` the ingredients are the tasks
runs (all training rows) and greedy choices are made on another evaluation split of the task
(``choose_on``, :func:`choice_split`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from flexharness.engine import data, kinds, models, runner, train
from flexharness.engine.faults import OutOfMemoryAsFailure
from flexharness.engine.weights import load_weights, state_of
from flexharness.errors import DataError
from flexharness.suite.spec import Case, DatasetSpec, Filter

HELD_OUT = "fusion held-out"   # the split name of the held-out slice in records and outputs files
OTHER_DOMAINS = "other_domains"  # case param: the domains (name, dataset, where) the runs are also scored on
METHODS = ("ensemble", "uniform_soup", "greedy_soup")
SOUPS = ("uniform_soup", "greedy_soup")
CHOOSING = ("greedy_soup",)   # methods that choose runs on rows they were not trained on (``choice_split``)


@dataclass(frozen=True)
class Ingredient:
    """One finished run: its record, its per-example arrays per split, and where its weights are (soups)."""

    seed: int
    record: Mapping[str, Any]
    arrays: Mapping[str, Mapping[str, np.ndarray]]
    weights: Path | None = None

    def score(self, split: str) -> float:
        return self.record["splits"][split]["score"]


def domain_split(name: str) -> str:
    """The split name of another domain's evaluation split in records and outputs files."""
    return f"domain {name}"


def runs_are_task_runs(case: Case) -> bool:
    """``held_out: 0``: the runs are the tasks axis's own runs of the task's recipe, not runs trained here."""
    return dict(case.params)["held_out"] == 0


def choice_split(case: Case) -> str | None:
    """The split runs are chosen on: the held-out slice, or with ``held_out: 0`` (the runs are the tasks runs)
    the evaluation split ``choose_on`` names; None when there is none (then nothing is chosen)."""
    return dict(case.params).get("choose_on") if runs_are_task_runs(case) else HELD_OUT


def fusion_data(case: Case) -> data.Prepared:
    """The rows the runs of a fusion case were scored on: with a held-out slice, :func:`ingredient_data`; with
    ``held_out: 0``, the task's own (every evaluation split of its dataset, ``task_dataset``)."""
    params = dict(case.params)
    if runs_are_task_runs(case):
        return runner.prepare(replace(case, dataset=params["task_dataset"]))
    return ingredient_data(case, params["held_out"])


def ingredient_data(case: Case, fraction: float) -> data.Prepared:
    """The case's rows with a stratified ``fraction`` of its training rows moved into a held-out split, and
    the evaluation split of each of its other domains after those two.

    Fixed by the data alone (never by the seed): every ingredient of a task holds out the same slice.
    """
    cap = case.train
    others = tuple(dict(case.params).get(OTHER_DOMAINS, ()))
    return _held_out(case.dataset, case.where, case.label_kind, cap.max_train_samples, cap.max_eval_samples, fraction,
                     others, case.kind)


@functools.lru_cache(maxsize=8)
def _held_out(spec: DatasetSpec, where: tuple[Filter, ...], kind: str, max_train: int | None,
              max_eval: int | None, fraction: float, others: tuple[Any, ...] = (),
              task_kind: str = kinds.DEFAULT) -> data.Prepared:
    """One object per data setting, so the tokenized copy (``runner._encoded``) is shared by every item.

    ``others`` hold ``name``, ``dataset`` and ``where`` (the domains axis's members); each is prepared as the
    domains axis prepares it, and its labels are mapped to this task's label order. ``task_kind`` reads the rows.
    """
    reader = kinds.KINDS.get(task_kind)
    prepared = reader.prepare(spec, where, kind, max_train, max_eval)
    rest, taken, _ = data.hold_out(prepared.train, fraction, kind, reader.train_labels(prepared.train),
                                   reader.hold_out_texts(prepared.train))
    if len(rest) < max(2, prepared.num_labels):
        raise DataError(f"only {len(rest)} training examples are left after holding out {fraction:g} for "
                        "greedy soup; lower 'fusion.held_out' or add data", *spec.locate())
    evals = [prepared.evals[0], (HELD_OUT, taken)]
    for domain in others:
        try:
            other = reader.prepare(domain.dataset, domain.where, kind, max_train, max_eval)
        except DataError as exc:
            raise DataError(f"other domain '{domain.name}': {exc}") from None
        evals.append((domain_split(domain.name), reader.relabelled(other, prepared.label_names, "the fusion task",
                                                                   f"domain '{domain.name}'")))
    return data.Prepared(rest, tuple(evals), prepared.label_names, prepared.held_out_copies)


def train_ingredient(case: Case, model_ref: str, seed: int, head_seed: int | None, fraction: float,
                     device_option: str, trust_remote_code: bool = False,
                     progress: train.ProgressFn | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(record with ``runner.PER_EXAMPLE``, fine-tuned weights on the CPU) of one ingredient run.

    The head starts from ``head_seed`` when given (shared by all ingredients, so soups average heads that
    began alike), else from ``seed``; the batch order and dropout always follow ``seed``.
    """
    inputs = runner.case_inputs(case, model_ref, trust_remote_code, ingredient_data(case, fraction))
    device = models.resolve_device(device_option)
    model = runner.fresh_model(case, inputs, model_ref, seed if head_seed is None else head_seed, trust_remote_code)
    try:
        with OutOfMemoryAsFailure(case.train):
            stats = train.fine_tune(model, inputs.train, case.train, seed, device, inputs.pad_id, inputs.regression,
                                    progress, inputs.kind)
            splits, per_example = runner.score_splits(model, case, inputs, device, for_ensemble=True)
        weights = state_of(model)
    finally:
        del model
        train.release_memory()
    first = splits[inputs.prepared.eval_split]
    return {"score": first["score"], "metrics": first["metrics"], "seed": seed, "head_seed": head_seed,
            "device": device, **runner.example_counts(inputs), "splits": splits, **runner.train_fields(stats),
            "pooling": models.pooling_of(case.train.pooling, model_ref), runner.PER_EXAMPLE: per_example}, weights


def average(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The uniform average of state dicts, accumulated in float64 (identical runs average to themselves
    exactly); integer buffers such as position ids are taken from the first."""
    import torch

    first = states[0]
    return {name: (sum(s[name].to(torch.float64) for s in states) / len(states)).to(tensor.dtype)
            if tensor.is_floating_point() else tensor.clone() for name, tensor in first.items()}


def _labels(ingredients: Sequence[Ingredient], split: str) -> tuple[np.ndarray, str]:
    """The split's labels and examples' digest, the same for every ingredient (else they cannot be fused)."""
    digests = {i.record["splits"][split]["eval_digest"] for i in ingredients}
    if len(digests) != 1:
        raise DataError(f"the runs to fuse were scored on different examples of '{split}' ({len(digests)} "
                        "different digests); clear the cache with --cache-clear")
    return ingredients[0].arrays[split]["labels"], digests.pop()


def ensemble(case: Case, model_ref: str, ingredients: Sequence[Ingredient],
             trust_remote_code: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(splits, per-example arrays) of the output ensemble, the kind's ``ensemble`` of the runs' stored arrays:
    the mean of their probabilities (or values); for QA the mean of their start and end logits, post-processed
    over each split's windows (tokenized as the runs were: the only reason the data is read here)."""
    kind = kinds.of(case)
    encoded = dict(runner.case_inputs(case, model_ref, trust_remote_code, fusion_data(case)).evals
                   ) if kind.ensemble_fields else {}
    splits, per_example = {}, {}
    for split in ingredients[0].arrays:
        labels, digest = _labels(ingredients, split)
        outputs = kind.ensemble([i.arrays[split] for i in ingredients], encoded.get(split))
        splits[split] = runner.split_entry(case, labels, outputs, digest)
        per_example[split] = {"labels": labels, "outputs": outputs}
    return splits, per_example


def at_least_as_good(case: Case, new: float, old: float) -> bool:
    return new >= old if case.higher_is_better else new <= old


def soup(case: Case, model_ref: str, ingredients: Sequence[Ingredient], greedy: bool, device_option: str,
         trust_remote_code: bool = False) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """(splits, per-example arrays, seeds used) of a uniform soup, or of a greedy one (Wortsman et al. 2022,
    Algorithm 1: runs by held-out score, best first; each kept only if the soup's held-out score does not drop)."""
    inputs = runner.case_inputs(case, model_ref, trust_remote_code, fusion_data(case))
    device = models.resolve_device(device_option)
    states = {i.seed: load_weights(i.weights) if i.weights else None for i in ingredients}
    damaged = [str(i.weights) for i in ingredients if states[i.seed] is None]
    if damaged:
        raise DataError(f"cannot read the weights of {len(damaged)} run(s) ({damaged[0]}); delete them, or run "
                        "with --cache-clear, and they are trained again")
    model = runner.fresh_model(case, inputs, model_ref, 0, trust_remote_code)
    try:
        def held_out_score(seeds: Sequence[int]) -> float:
            model.load_state_dict(average([states[s] for s in seeds]))
            held = dict(inputs.evals)[choice_split(case)]
            outputs = train.predict_outputs(model, held, case.train.eval_batch_size, device, inputs.pad_id,
                                            inputs.regression, kind=inputs.kind)
            return inputs.kind.score(case.metrics, held.labels, outputs)[0]

        used = [i.seed for i in ingredients]
        if greedy:
            used = greedy_selection(case, ingredients, held_out_score)
        model.load_state_dict(average([states[s] for s in used]))
        splits, per_example = runner.score_splits(model, case, inputs, device)
    finally:
        model = None   # the last reference (the closure above shares it), dropped before the memory is released
        train.release_memory()
    return splits, per_example, used


def greedy_selection(case: Case, ingredients: Sequence[Ingredient],
                     held_out_score: Callable[[Sequence[int]], float]) -> list[int]:
    """The seeds of the greedy soup: best held-out run first, then each run that does not lower the score."""
    split = choice_split(case)
    ranked = sorted(ingredients, key=lambda i: i.score(split), reverse=case.higher_is_better)
    used, best = [ranked[0].seed], ranked[0].score(split)
    for candidate in ranked[1:]:
        score = held_out_score([*used, candidate.seed])
        if at_least_as_good(case, score, best):
            used, best = [*used, candidate.seed], score
    return used


def fuse(case: Case, model_ref: str, method: str, ingredients: Sequence[Ingredient], device_option: str,
         trust_remote_code: bool = False) -> dict[str, Any]:
    """The record of one fusion item: the fused model's scores, the single runs' and the gain over the best."""
    start = time.perf_counter()
    if method == "ensemble":
        splits, per_example = ensemble(case, model_ref, ingredients, trust_remote_code)
        used = [i.seed for i in ingredients]
    else:
        splits, per_example, used = soup(case, model_ref, ingredients, method == "greedy_soup", device_option,
                                         trust_remote_code)
    split, chosen_on = ingredients[0].record["eval_split"], choice_split(case)
    best_held = max if case.higher_is_better else min
    first = ingredients[0].record
    others = {domain.name: against_singles(case, ingredients, splits, domain_split(domain.name))
              for domain in dict(case.params).get(OTHER_DOMAINS, ())}
    return {
        "metrics": splits[split]["metrics"], "seed": ingredients[0].seed,
        "device": models.resolve_device(device_option), "method": method,
        "train_examples": first["train_examples"], "eval_split": split,
        "num_labels": first["num_labels"], "splits": splits, **against_singles(case, ingredients, splits, split),
        "used": used, "inference_cost": len(used) if method == "ensemble" else 1,
        **({"ensemble_method": kinds.of(case).ensemble_method} if method == "ensemble" else {}),
        **({"held_out_score": splits[chosen_on]["score"],
            "best_single_held_out": best_held(i.score(chosen_on) for i in ingredients),
            "held_out_examples": splits[chosen_on]["eval_examples"]} if chosen_on else {}),
        **({"other_domains": others, "ood_gain": float(np.mean([o["gain"] for o in others.values()]))}
           if others else {}),
        "fusion_seconds": round(time.perf_counter() - start, 3), runner.PER_EXAMPLE: per_example,
    }


def against_singles(case: Case, ingredients: Sequence[Ingredient], splits: Mapping[str, Any],
                    split: str) -> dict[str, Any]:
    """The fused score on ``split``, each run's, the best and the mean of them, and the gain over the best
    (turned round for lower-is-better metrics, so a positive gain always means fusion helps)."""
    singles = {str(i.seed): i.score(split) for i in ingredients}
    best = max(singles.values()) if case.higher_is_better else min(singles.values())
    score = splits[split]["score"]
    return {"score": score, "single_scores": singles, "best_single": best,
            "mean_single": float(np.mean(list(singles.values()))),
            "gain": score - best if case.higher_is_better else best - score,
            "eval_examples": splits[split]["eval_examples"]}
