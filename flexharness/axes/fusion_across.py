"""Fusion across models on the controller: which runs of *different* models, combined, beat the best single run.

Per (suite, task) evaluated with two or more models, the library is every fusion run of every model (one per
(model, seed)); greedy ensemble selection (Caruana et al. 2004, ``rules.selection``) chooses a weighted
multiset of them on the rows the fusion section chooses on (its held-out slice, or ``choose_on``), never on the
evaluation split; the chosen output ensemble (the task kind's ``ensemble`` of the stored outputs: probabilities
or values averaged, tags voted) is then scored on the evaluation split against the best single run (the one
chosen first), with the paired test of ``results.significance`` on the evaluation examples, and on every other
stored split. A kind whose ensemble reads more than the outputs (extractive QA: each window's logits, windows
of one model's tokenization) is refused, with the reason.

It needs the runs' per-example outputs, which only items have: every fusion item keeps those of its runs, on
every split, as fields of its own evaluation split's outputs (:func:`pack_runs`), so they travel to the
controller and into ``RESULTS.predictions.npz`` like any item's outputs, and ``flexharness merge`` rebuilds
the section from the shards' files. Soups are never made across models: averaging weights needs runs that left
one pre-trained initialisation (Wortsman et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from flexharness.engine import kinds, soup
from flexharness.errors import DataError
from flexharness.names import model_label
from flexharness.results.significance import CaseKey, SeedOutputs, Settings, measure_outputs, paired_test
from flexharness.rules.selection import MAX_STEPS, greedy_selection

KEY = "fusion_across_models"
AXIS = "fusion"
RUNS = "fusion-runs:"   # the prefix of the fields that hold a fusion item's runs
NO_SOUP = ("no soup across models: averaging weights needs runs fine-tuned from one pre-trained initialisation "
           "(Wortsman et al. 2022), so only output ensembles combine different models")


def run_field(split: str, part: str) -> str:
    """The field of one split of a fusion item's runs: ``labels``, ``digest`` or a seed (that run's outputs);
    hex-encoded like ``predictions.column_field``, so that any split name makes a safe array name."""
    return RUNS + "\x00".join((split, part)).encode("utf-8", "surrogatepass").hex()


def pack_runs(runs: Sequence[soup.Ingredient]) -> dict[str, np.ndarray]:
    """The per-example outputs of every run, on every split it was scored on, as fields of one stored split;
    a split whose runs saw different examples is a ``DataError``."""
    fields: dict[str, np.ndarray] = {}
    for split in runs[0].arrays:
        digests = {run.record["splits"][split]["eval_digest"] for run in runs}
        if len(digests) != 1:
            raise DataError(f"the runs to fuse were scored on different examples of '{split}' ({len(digests)} "
                            "different digests); clear the cache with --cache-clear")
        fields[run_field(split, "labels")] = np.asarray(runs[0].arrays[split]["labels"])
        fields[run_field(split, "digest")] = np.array(digests.pop())
        fields |= {run_field(split, str(run.seed)): np.asarray(run.arrays[split]["outputs"]) for run in runs}
    return fields


@dataclass(frozen=True)
class SplitRuns:
    """One split of a model's runs: its labels, its examples' digest and each run's outputs by seed."""

    labels: np.ndarray
    digest: str
    outputs: Mapping[int, np.ndarray]


def unpack_runs(fields: Mapping[str, Any]) -> dict[str, SplitRuns]:
    """The runs :func:`pack_runs` stored, by split; empty when a stored item holds none."""
    parts: dict[str, dict[str, Any]] = {}
    for name, value in fields.items():
        if name.startswith(RUNS):
            split, _, part = bytes.fromhex(name[len(RUNS):]).decode("utf-8", "surrogatepass").partition("\x00")
            parts.setdefault(split, {})[part] = value
    return {split: SplitRuns(found["labels"], str(found["digest"]),
                             {seed: found[str(seed)] for seed in sorted(int(k) for k in found if k.isdigit())})
            for split, found in parts.items() if {"labels", "digest"} <= set(found)}


def section(doc: Mapping[str, Any], outputs: Mapping[CaseKey, SeedOutputs], settings: Settings
            ) -> list[dict[str, Any]]:
    """One entry per (suite, task) of the fusion section with two or more models (or with ``across_models:
    true``): the selection and its scores, or ``refused`` with the reason nothing was computed."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for case in doc["cases"]:
        if case["axis"] == AXIS:
            groups.setdefault((case["suite"], case["task"]), []).append(case)
    entries = []
    for (suite, task), cases in groups.items():
        asked = cases[0].get("across_models")
        models = list(dict.fromkeys(c["model"] for c in cases))
        if asked is False or (asked is None and len(models) < 2):
            continue
        entry = {"suite": suite, "task": task, "kind": cases[0]["kind"], "metric": cases[0]["metric"],
                 "higher_is_better": cases[0]["higher_is_better"], "models": models,
                 "chosen_on": cases[0].get("choice_split"), "eval_split": cases[0].get("eval_split")}
        try:
            entries.append({**entry, **_selected(entry, cases, outputs, settings), "refused": None})
        except Refused as refused:
            entries.append({**entry, "refused": str(refused)})
    return entries


class Refused(Exception):
    """Why fusion across models was not computed for a task (the entry says so; its gate fails)."""


def _selected(entry: Mapping[str, Any], cases: Sequence[Mapping[str, Any]], outputs: Mapping[CaseKey, SeedOutputs],
              settings: Settings) -> dict[str, Any]:
    models, chosen_on, evaluated = entry["models"], entry["chosen_on"], entry["eval_split"]
    if len(models) < 2:
        raise Refused(f"fusion across models needs at least 2 models (pass --model twice or more); this run "
                      f"evaluated {len(models)}")
    kind = kinds.KINDS.get(entry["kind"])
    if kind.ensemble_fields:
        raise Refused(f"the output ensemble of {entry['kind']} ({kind.ensemble_method}) combines what each run keeps "
                      f"besides its outputs ({', '.join(kind.ensemble_fields)}), per window of its own model's "
                      "tokenization: runs of different models cannot be combined from their stored outputs")
    if chosen_on is None:
        raise Refused("no rows to choose runs on: with 'held_out: 0' the runs train on every training row; "
                      "name another evaluation split of the task with 'choose_on', or hold rows out")
    runs = {model: _runs_of(entry["suite"], model, [c for c in cases if c["model"] == model], outputs)
            for model in models}
    splits = _common_splits(runs, (evaluated, chosen_on))
    library = [(model, seed) for model in models for seed in runs[model][evaluated].outputs]
    metrics = tuple(entry["metric"].split("+"))

    def ensemble(split: str, positions: Sequence[int]) -> np.ndarray:
        """In library order, so that the weights alone decide it (a vote's ties go to the earlier run)."""
        return kind.ensemble([{"outputs": runs[library[p][0]][split].outputs[library[p][1]]}
                              for p in sorted(positions)], None)

    def score(split: str, positions: Sequence[int]) -> float:
        return kind.score(metrics, splits[split].labels, ensemble(split, positions))[0]

    higher = entry["higher_is_better"]
    selection = greedy_selection(len(library), lambda positions: score(chosen_on, positions), higher)
    best = selection.chosen[0]
    fused, single = score(evaluated, selection.chosen), score(evaluated, [best])
    params = {model: next((c.get("total_params") for c in cases if c["model"] == model), None) for model in models}
    used = list(dict.fromkeys(selection.chosen))
    return {
        "library": [{"model": m, "seed": s, "chosen_on_score": score(chosen_on, [p]), "score": score(evaluated, [p])}
                    for p, (m, s) in enumerate(library)],
        "chosen": [{"model": library[p][0], "seed": library[p][1], "weight": w} for p, w in selection.weights.items()],
        "steps": len(selection.chosen), "max_steps": MAX_STEPS, "stopped": selection.stopped,
        "chosen_on_score": selection.scores[-1], "chosen_on_examples": len(splits[chosen_on].labels),
        "score": fused, "eval_examples": len(splits[evaluated].labels),
        "best_single": {"model": library[best][0], "seed": library[best][1], "score": single,
                        "chosen_on_score": selection.scores[0]},
        "gain": fused - single if higher else single - fused,
        **_test(metrics, splits[evaluated], ensemble(evaluated, [best]), ensemble(evaluated, selection.chosen),
                higher, settings),
        "models_used": len({library[p][0] for p in used}), "forward_passes": len(used),
        "total_params": _total([params[library[p][0]] for p in used]),
        "best_single_params": params[library[best][0]],
        "other_splits": {split: _other(kind, metrics, found, ensemble(split, selection.chosen),
                                       ensemble(split, [best]), higher)
                         for split, found in splits.items() if split not in (evaluated, chosen_on)},
    }


def _runs_of(suite: str, model: str, cases: Sequence[Mapping[str, Any]], outputs: Mapping[CaseKey, SeedOutputs]
             ) -> dict[str, SplitRuns]:
    """A model's runs of a task, from the first of its fusion items (any method) whose outputs hold them."""
    for case in cases:
        for fields in (outputs.get((suite, model, AXIS, case["name"])) or {}).values():
            found = unpack_runs(fields)
            if found:
                return found
    raise Refused(f"model {model_label(model)}: no fusion item of this task kept its runs' outputs (none passed, "
                  "or they were stored by an earlier flexharness: rerun them with --cache-clear)")


def _common_splits(runs: Mapping[str, Mapping[str, SplitRuns]], needed: Sequence[str]) -> dict[str, SplitRuns]:
    """The splits every model's runs were scored on, each on the same examples with outputs of one shape."""
    first, *others = runs
    names = [s for s in runs[first] if all(s in runs[m] for m in others)]
    missing = [s for s in needed if s not in names]
    if missing:
        raise Refused(f"the runs hold no outputs on '{missing[0]}'")
    for split in names:
        other = next((m for m in others if runs[m][split].digest != runs[first][split].digest), None)
        if other is not None:
            raise Refused(f"models {model_label(first)} and {model_label(other)} were scored on different examples "
                          f"of '{split}' (examples digests {runs[first][split].digest} and "
                          f"{runs[other][split].digest}): an output ensemble combines runs example by example; "
                          "run every model on the same data")
        shapes = {np.shape(o) for m in runs for o in runs[m][split].outputs.values()}
        if len(shapes) > 1:
            raise Refused(f"the runs' outputs on '{split}' have different shapes ({', '.join(map(str, sorted(shapes)))})"
                          "; they cannot be combined example by example")
    return {split: runs[first][split] for split in names}


def _test(metrics: tuple[str, ...], split: SplitRuns, single: np.ndarray, fused: np.ndarray, higher: bool,
          settings: Settings) -> dict[str, Any]:
    """The paired test of the ensemble against the best single run on the evaluation examples (none when the
    statistics are off, ``--flex-bootstrap 0``); the interval is of the gain, turned round like it."""
    if not settings.resamples:
        return {"test": None, "p_value": None, "gain_interval": None}
    left, right = (measure_outputs(metrics, split.labels, [found], split.digest, settings) for found in (single, fused))
    found, test, p_value = paired_test(left, right, settings)
    ends = [found.low, found.high] if higher else [-found.high, -found.low]
    return {"test": test, "p_value": p_value, "gain_interval": ends}


def _other(kind: kinds.TaskKind, metrics: tuple[str, ...], split: SplitRuns, fused: np.ndarray, single: np.ndarray,
           higher: bool) -> dict[str, Any]:
    score, best = kind.score(metrics, split.labels, fused)[0], kind.score(metrics, split.labels, single)[0]
    return {"eval_examples": len(split.labels), "score": score, "best_single": best,
            "gain": score - best if higher else best - score}


def _total(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else int(sum(v for v in values if v is not None))
