"""A model's results in the Hub's formats: ``.eval_results/*.yaml`` entries and the model card's ``model-index``.

huggingface_hub's own classes build both (``EvalResultEntry`` with
``eval_result_entries_to_yaml``; ``EvalResult`` with ``ModelCardData``), so what
is written is what the Hub reads. One entry per case and per aggregate (P_avg
and σ_P of each axis). Neither format has a field for a metric's direction:
a lower-is-better score says so in the entry's ``notes`` and, in the model
index, in ``metric_args: {lower_is_better: true}``. Nothing is uploaded.
"""

from __future__ import annotations

from typing import Any, Mapping

from flexharness.errors import FlexError
from flexharness.names import model_label

TASK_TYPES = {"sequence_classification": "text-classification", "token_classification": "token-classification",
              "extractive_qa": "question-answering", "multiple_choice": "multiple-choice"}
SOURCE = "flexharness"


class HubExportError(FlexError):
    """The results cannot be written in the Hub's formats as asked (no such model, several models)."""


def pick_model(doc: Mapping[str, Any], model: str | None) -> str:
    """The model whose results are exported: the only one, or the one named (by reference or short label)."""
    models = list(dict.fromkeys(c["model"] for c in doc["cases"]))
    if model is None:
        if len(models) != 1:
            raise HubExportError(f"the results hold {len(models)} models; name one with --hub-model "
                                 f"({', '.join(model_label(m) for m in models) or 'none'})")
        return models[0]
    found = [m for m in models if model in (m, model_label(m))]
    if len(found) != 1:
        raise HubExportError(f"--hub-model {model!r}: {'no' if not found else 'more than one'} model of the "
                             f"results is named so ({', '.join(model_label(m) for m in models)})")
    return found[0]


def _dataset(case: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """(id, config, revision): the hub path where the data came from the hub, else the suite's dataset name."""
    dataset = case.get("dataset") or {}
    hub = dataset.get("hub") or {}
    if hub.get("path"):
        return hub["path"], hub.get("name"), hub.get("revision")
    return dataset.get("name") or case["suite"], None, None


def _direction(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


def _scored(doc: Mapping[str, Any], model: str) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    cases = [c for c in doc["cases"] if c["model"] == model and c["score"] is not None]
    aggregates = [a for a in doc["aggregates"] if a["model"] == model]
    return cases, aggregates


def eval_result_entries(doc: Mapping[str, Any], model: str) -> list[Any]:
    """``EvalResultEntry`` per scored case and per aggregate statistic of ``model``."""
    from huggingface_hub import EvalResultEntry

    cases, aggregates = _scored(doc, model)
    date = doc.get("created")
    entries = []
    for case in cases:
        dataset_id, _, revision = _dataset(case)
        seeds = ", ".join(s for s, v in case["seeds"].items() if v is not None)
        entries.append(EvalResultEntry(
            dataset_id=dataset_id, task_id=f"{case['suite']}/{case['axis']}/{case['name']}", value=case["score"],
            dataset_revision=revision, date=date,
            notes=f"{SOURCE} {case['metric']} ({_direction(case['higher_is_better'])}), mean over seeds {seeds}"))
    for row in aggregates:
        for stat, higher in (("p_avg", row["higher_is_better"]), ("sigma_p", False)):
            if row[stat] is not None:
                entries.append(EvalResultEntry(
                    dataset_id=f"{SOURCE}/{row['suite']}", task_id=f"{row['axis']}/{stat}", value=row[stat],
                    date=date, notes=f"{SOURCE} {stat} over {row['n']} {row['axis']} cases ({_direction(higher)})"))
    return entries


def eval_results_yaml(doc: Mapping[str, Any], model: str) -> str:
    """The text of an ``.eval_results/NAME.yaml`` file."""
    import yaml
    from huggingface_hub import eval_result_entries_to_yaml

    return yaml.safe_dump(eval_result_entries_to_yaml(eval_result_entries(doc, model)), sort_keys=False,
                          allow_unicode=True)


def model_card_results(doc: Mapping[str, Any], model: str) -> list[Any]:
    """``EvalResult`` (the model card's ``model-index``) per scored case and per aggregate statistic.

    The model index groups metrics by task type and dataset: the metric's name says which case it scores."""
    from huggingface_hub import EvalResult

    cases, aggregates = _scored(doc, model)
    kinds: dict[tuple[str, str], set[str]] = {}
    results = []
    for case in cases:
        dataset_id, config, revision = _dataset(case)
        task_type = TASK_TYPES.get(case.get("kind") or "sequence_classification", "text-classification")
        kinds.setdefault((case["suite"], case["axis"]), set()).add(task_type)
        results.append(EvalResult(
            task_type=task_type, task_name=f"{SOURCE} suite {case['suite']}", dataset_type=dataset_id,
            dataset_name=dataset_id, dataset_config=config,
            dataset_revision=revision, metric_type=case["metric"], metric_value=case["score"],
            metric_name=f"{case['axis']}/{case['name']} {case['metric']}",
            metric_args=None if case["higher_is_better"] else {"lower_is_better": True}))
    for row in aggregates:
        types = kinds.get((row["suite"], row["axis"])) or {"text-classification"}
        for stat, higher in (("p_avg", row["higher_is_better"]), ("sigma_p", False)):
            if row[stat] is not None:
                results.append(EvalResult(
                    task_type=sorted(types)[0], task_name=f"{SOURCE} suite {row['suite']}",
                    dataset_type=f"{SOURCE}/{row['suite']}", dataset_name=f"{row['suite']} (all datasets of the axis)",
                    metric_type=stat, metric_value=row[stat], metric_name=f"{row['axis']} {stat} ({row['n']} cases)",
                    metric_args=None if higher else {"lower_is_better": True}))
    return results


def model_card_yaml(doc: Mapping[str, Any], model: str) -> str:
    """The model card's metadata block (``---`` YAML ``---``) holding ``model-index``."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(model_name=model_label(model), eval_results=model_card_results(doc, model))
    return f"---\n{data.to_yaml()}\n---\n"
