"""The probe axis's model choice on the controller: the pre-screen judged per task across candidate models.

``probe_model_choice`` in the results JSON holds, per suite and pre-screen, each task's Kendall τ-b and
weighted τ (with p-values) of the pre-screen's scores against the fine-tuned scores of the models run on
that task, the top-1 hit and the regret of ``--flex-prescreen-top K``, and their means over tasks
(``rules.model_choice``). Rebuilt from the ``probes`` entries alone, like the other probe sections.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from flexharness.names import model_label
from flexharness.rules.model_choice import MIN_MODELS, mean_or_none, task_choice

KEY = "probe_model_choice"
TRACKED = ("logme", "knn", "probe")


def _oriented(entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return value if value is None or entry["higher_is_better"] else -value


def _prescreen_value(entry: Mapping[str, Any], name: str) -> float | None:
    return _oriented(entry, "best_score") if name == "probe" else entry.get(name)


def model_choices(entries: Sequence[Mapping[str, Any]], settings: Mapping[str, Mapping[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Per suite and pre-screen: every task's agreement and regret, and their means over tasks."""
    result = []
    for suite in dict.fromkeys(e["suite"] for e in entries):
        members = [e for e in entries if e["suite"] == suite and e["finetuned"] is not None]
        top = settings.get(suite, {}).get("top")
        for name in TRACKED:
            tasks = [_task_entry(task, [e for e in members if e["task"] == task], name, top)
                     for task in dict.fromkeys(e["task"] for e in members)]
            if tasks:
                result.append(_summary(suite, name, top, tasks))
    return result


def _task_entry(task: str, members: Sequence[Mapping[str, Any]], name: str, top: int | None) -> dict[str, Any]:
    pre = {e["model"]: _prescreen_value(e, name) for e in members}
    tuned = {e["model"]: _oriented(e, "finetuned") for e in members}
    found = task_choice(pre, tuned, (1, top) if top else (1,))
    scores = [[m, pre[m], tuned[m]] for m in sorted(pre)]
    if found is None:
        return {"task": task, "n_models": len(members), "tau": None, "p_value": None, "weighted_tau": None,
                "weighted_p_value": None, "top1_hit": None, "regret_top1": None, "regret_top_k": None,
                "scores": scores}
    return {"task": task, "n_models": found.n_models, "tau": found.tau, "p_value": found.p_value,
            "weighted_tau": found.weighted_tau, "weighted_p_value": found.weighted_p_value,
            "top1_hit": found.top1_hit, "regret_top1": found.regret[1],
            "regret_top_k": found.regret.get(top) if top else None, "scores": scores}


def _summary(suite: str, name: str, top: int | None, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    judged = [t for t in tasks if t["top1_hit"] is not None]
    return {"suite": suite, "prescreen": name, "k": top, "n_tasks": len(judged),
            "mean_tau": mean_or_none([t["tau"] for t in judged]),
            "mean_weighted_tau": mean_or_none([t["weighted_tau"] for t in judged]),
            "top1_hit_rate": mean_or_none([float(t["top1_hit"]) for t in judged]),
            "mean_regret_top1": mean_or_none([t["regret_top1"] for t in judged]),
            "mean_regret_top_k": mean_or_none([t["regret_top_k"] for t in judged]) if top else None,
            "tasks": tasks}


def _num(value: float | None, spec: str = "+.3f") -> str:
    return "-" if value is None else format(value, spec)


def lines(doc: Mapping[str, Any]) -> list[str]:
    """One line per (suite, pre-screen) and one per task: what the model choice can be trusted for."""
    out = []
    for c in doc.get(KEY) or []:
        if not c["n_tasks"]:
            models = max((t["n_models"] for t in c["tasks"]), default=0)
            out.append(f"model choice {c['suite']} by {c['prescreen']}: undefined (a task needs {MIN_MODELS} "
                       f"models scored by the pre-screen and fine-tuned; the most here is {models})")
            continue
        top = (f", top-{c['k']} regret {_num(c['mean_regret_top_k'], '.4f')}" if c["k"] else "")
        out.append(f"model choice {c['suite']} by {c['prescreen']} over {c['n_tasks']} task(s), within each task: "
                   f"Kendall tau {_num(c['mean_tau'])}, weighted tau {_num(c['mean_weighted_tau'])} (means), "
                   f"top-1 hit rate {_num(c['top1_hit_rate'], '.2f')}, top-1 regret "
                   f"{_num(c['mean_regret_top1'], '.4f')}{top}")
        for t in c["tasks"]:
            if t["top1_hit"] is None:
                continue
            best = max(t["scores"], key=lambda s: (s[1] is not None, s[1] if s[1] is not None else 0.0))
            out.append(f"  {t['task']}: {t['n_models']} models, tau {_num(t['tau'])} (p {_num(t['p_value'], '.3g')}), "
                       f"weighted tau {_num(t['weighted_tau'])} (p {_num(t['weighted_p_value'], '.3g')}), "
                       f"first choice {model_label(best[0])} {'is' if t['top1_hit'] else 'is not'} the fine-tuned best")
    return ([""] + out) if out else []
