"""The probe axis on the controller: per (suite, model, task) probe entries, the gap to fine-tuning,
the pre-screen's Kendall track record, the model ranking for ``--flex-prescreen-only``, reports and plots.

Pure functions of plain data (no pytest, no torch). Item records become raw
per-seed entries (:func:`raw_sections`); :func:`finish` rebuilds every section
from the results document alone, so a pytest run and ``flexharness merge``
decide alike and finishing twice changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from flexharness.axes import probe_choice
from flexharness.files import output_name
from flexharness.names import model_label
from flexharness.results import plots as plot_helpers
from flexharness.results.table import Table
from flexharness.rules.aggregate import GateResult, mean
from flexharness.rules.prescreen import kendall_track_record, top_k
from flexharness.axes.base import Scored

DOCUMENT_KEYS = ("probes", "probe_track_record", "prescreen", probe_choice.KEY)
PRESCREENS = ("logme", "knn")                 # what a model ranking may be by
TRACKED = ("logme", "knn", "probe")           # what the track record correlates with fine-tuning
SEED_KEYS = ("layers", "layer_scores", "best_layer", "logme", "logme_seconds", "knn", "knn_metric",
             "knn_seconds", "forward_seconds", "probe_seconds", "prescreen_layer", "train_examples",
             "eval_examples")
MEANS = ("logme", "knn", "logme_seconds", "knn_seconds", "forward_seconds", "probe_seconds")


def best_index(scores: Sequence[float], higher_is_better: bool) -> int:
    """The best layer's position; the earliest of equal scores (the cheaper, shallower layer)."""
    pick = max if higher_is_better else min
    return scores.index(pick(scores))


def sections(scored: Iterable[Scored]) -> dict[str, list[dict[str, Any]]]:
    """One raw ``probes`` entry per scored probe case, its seeds' records cut to what the entry needs."""
    entries = []
    for member in scored:
        params = dict(member.spec.params)
        entries.append({
            "suite": member.case.suite, "model": member.case.model, "task": params["task"],
            "finetuned_case": params["finetuned"], "metric": member.spec.metric,
            "higher_is_better": member.case.higher_is_better, "pooling": params["pooling"],
            "seeds": {seed: {k: r.get(k) for k in SEED_KEYS} if r else None for seed, r in member.records.items()},
        })
    return {"probes": entries}


def finish(doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """Rebuild ``probes``, ``probe_track_record`` and ``prescreen`` from the document; the probe has no gates."""
    tuned = {(c["suite"], c["model"], c["name"]): c["score"] for c in doc["cases"] if c["axis"] == "tasks"}
    grouped: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in doc.get("probes", []):
        key = (entry["suite"], entry["model"], entry["task"])
        known = grouped.setdefault(key, {**entry, "seeds": {}})
        known["seeds"].update({s: v for s, v in entry["seeds"].items() if v or s not in known["seeds"]})
    doc["probes"] = [_summary(entry, tuned) for entry in grouped.values()]
    settings = {s["name"]: s.get("prescreen") or {} for s in doc.get("suites") or []}
    doc["probe_track_record"] = track_records(doc["probes"])
    doc["prescreen"] = rankings(doc["probes"], settings)
    doc[probe_choice.KEY] = probe_choice.model_choices(doc["probes"], settings)
    return []


def _summary(entry: dict[str, Any], tuned: Mapping[tuple[str, str, str], float | None]) -> dict[str, Any]:
    """Means over the entry's scored seeds, the best layer, and the gap to the fine-tuned task."""
    seeds = [s for s in entry["seeds"].values() if s and s.get("layer_scores")]
    keep = {k: entry[k] for k in ("suite", "model", "task", "finetuned_case", "metric", "higher_is_better",
                                   "pooling", "seeds")}
    if not seeds:
        return {**keep, "layers": [], "layer_scores": [], "best_layer": None, "best_score": None,
                **{k: None for k in MEANS}, "knn_metric": None, "finetuned": None, "gap": None}
    layer_scores = [mean(column) for column in zip(*(s["layer_scores"] for s in seeds))]
    best = best_index(layer_scores, entry["higher_is_better"])
    values = {k: _mean_or_none(s.get(k) for s in seeds) for k in MEANS}
    finetuned = tuned.get((entry["suite"], entry["model"], entry["finetuned_case"]))
    gap = None
    if finetuned is not None:
        gap = finetuned - layer_scores[best] if entry["higher_is_better"] else layer_scores[best] - finetuned
    return {**keep, "layers": seeds[0]["layers"], "layer_scores": layer_scores, "best_layer": seeds[0]["layers"][best],
            "best_score": layer_scores[best], **values, "knn_metric": seeds[0].get("knn_metric"),
            "finetuned": finetuned, "gap": gap}


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    values = list(values)
    return mean(values) if values and None not in values else None


def _oriented(entry: Mapping[str, Any], key: str) -> float | None:
    """A score turned so that higher is better (fine-tuned and probe scores of ``mse`` tasks are negated)."""
    value = entry.get(key)
    return value if value is None or entry["higher_is_better"] else -value


def track_records(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per suite and pre-screen: Kendall τ-b (and p) against fine-tuned scores over its (task, model) pairs."""
    result = []
    for suite in dict.fromkeys(e["suite"] for e in entries):
        members = [e for e in entries if e["suite"] == suite and e["finetuned"] is not None]
        if not members:
            continue
        tuned = {(e["task"], e["model"]): _oriented(e, "finetuned") for e in members}
        for name in TRACKED:
            pre = {(e["task"], e["model"]): _oriented(e, "best_score") if name == "probe" else e[name]
                   for e in members}
            found = kendall_track_record(pre, tuned)
            result.append({"suite": suite, "prescreen": name, "tau": found.tau if found else None,
                           "p_value": found.p_value if found else None, "n": found.n if found else len(members),
                           "pairs": [[t, m, pre[(t, m)], tuned[(t, m)]] for t, m in tuned]})
    return result


def rankings(entries: Sequence[Mapping[str, Any]], settings: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per suite and pre-screen: models by their mean rank over the suite's probed tasks (1 = best).

    Scores are ranked within a task only (LogME is a log density per example and does not compare
    across tasks); a model without a score on a task takes the rank after every scored model.
    ``keep`` is the first ``top`` models of the ranking the run asked for (``--flex-prescreen-top``).
    """
    result = []
    for suite in dict.fromkeys(e["suite"] for e in entries):
        members = [e for e in entries if e["suite"] == suite]
        models = list(dict.fromkeys(e["model"] for e in members))
        chosen = settings.get(suite, {})
        for name in PRESCREENS:
            ranks: dict[str, dict[str, int]] = {m: {} for m in models}
            for task in dict.fromkeys(e["task"] for e in members):
                scores = {m: None for m in models} | {e["model"]: e[name] for e in members if e["task"] == task}
                for position, model in enumerate(top_k(scores, len(scores)), start=1):
                    ranks[model][task] = position
            order = sorted(models, key=lambda m: (mean(ranks[m].values()), m))
            top = chosen.get("top") if chosen.get("by", "logme") == name else None
            result.append({"suite": suite, "by": name, "models": [
                {"model": m, "mean_rank": mean(ranks[m].values()), "ranks": ranks[m]} for m in order],
                "top": top, "keep": order[:top] if top else None})
    return result


# ---- reports ---------------------------------------------------------------------------------------------------


def _layers_text(entry: Mapping[str, Any]) -> str:
    return " ".join(f"[{s:.3f}]" if layer == entry["best_layer"] else f"{s:.3f}"
                    for layer, s in zip(entry["layers"], entry["layer_scores"]))


COLUMNS = ("task", "model", "metric", "probe", "layer", "LogME", "s", "kNN", "s", "forward s", "fine-tuned", "gap")
FORMATS = {"probe": ".4f", "LogME": ".4f", "s": ".3f", "kNN": ".4f", "forward s": ".2f", "fine-tuned": ".4f",
           "gap": "+.4f"}
TITLE = ("probe (frozen pretrained features: linear probe per layer, [best]; LogME and 20-NN on the last layer; "
         "gap = fine-tuned - best probe)")


def tables(doc: Mapping[str, Any]) -> list[Table]:
    """The probe table; each entry's per-layer scores, the track record and the model ranking under it."""
    entries = doc.get("probes") or []
    if not entries:
        return []
    rows = tuple((e["task"], model_label(e["model"]), e["metric"], e["best_score"], e["best_layer"], e["logme"],
                  e["logme_seconds"], e["knn"], e["knn_seconds"], e["forward_seconds"], e["finetuned"], e["gap"])
                 for e in entries)
    layers = tuple(f"  {e['task']} [{model_label(e['model'])}] layers {e['layers'][0]}..{e['layers'][-1]}: "
                   f"{_layers_text(e)}" for e in entries if e["layers"])
    return [Table(TITLE, COLUMNS, rows, text=COLUMNS[:3], formats=FORMATS,
                  heading="Probe: frozen pretrained features", notes=(*layers, *_track_lines(doc),
                                                                      *_ranking_lines(doc),
                                                                      *probe_choice.lines(doc)))]


def _track_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = []
    for t in doc.get("probe_track_record") or []:
        verdict = (f"tau = {t['tau']:+.3f}, p = {t['p_value']:.3g}" if t["tau"] is not None
                   else "undefined (needs 3 pairs and more than one distinct value on each side)")
        lines.append(f"track record {t['suite']}: {t['prescreen']} vs fine-tuned over {t['n']} (task, model) "
                     f"pairs: Kendall {verdict}")
    return lines


def _ranking_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = []
    for r in doc.get("prescreen") or []:
        if len(r["models"]) < 2 and not r["keep"]:
            continue
        order = ", ".join(f"{model_label(m['model'])} ({m['mean_rank']:.2g})" for m in r["models"])
        lines.append(f"pre-screen ranking {r['suite']} by {r['by']} (mean rank over tasks): {order}")
        if r["keep"]:
            lines.append(f"keep for the full run (top {r['top']} by {r['by']}): "
                         + " ".join(f"--model {m}" for m in r["keep"]))
    return lines


def plots(doc: Mapping[str, Any], directory: Path) -> list[Path]:
    """Per suite: probe score per layer (one line per task and model), and pre-screen against fine-tuned."""
    written = []
    for suite in dict.fromkeys(e["suite"] for e in doc.get("probes") or [] if e["layers"]):
        entries = [e for e in doc["probes"] if e["suite"] == suite and e["layers"]]
        written.append(_layer_plot(suite, entries, directory / output_name("probe", "layers", suite)))
        tuned = [e for e in entries if e["finetuned"] is not None]
        if tuned:
            path = directory / output_name("probe", "prescreen", suite)
            written.append(_prescreen_plot(suite, tuned, path))
    return written


def _layer_plot(suite: str, entries: list[Mapping[str, Any]], path: Path) -> Path:
    plt = plot_helpers.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = dict(zip(dict.fromkeys(e["model"] for e in entries), ("-", "--", ":", "-.") * 8))
    for e in entries:
        ax.plot(e["layers"], e["layer_scores"], marker="o", linestyle=styles[e["model"]],
                label=f"{e['task']} ({e['metric']}) [{model_label(e['model'])}]")
    ax.set_xlabel("hidden state (0 = embeddings)")
    ax.set_ylabel("linear probe score (task metric)")
    ax.set_title(f"probe per layer: {suite}")
    ax.legend(fontsize="small")
    return plot_helpers.save_laid_out(fig, path)


def _prescreen_plot(suite: str, entries: list[Mapping[str, Any]], path: Path) -> Path:
    plt = plot_helpers.pyplot()
    fig, axes = plt.subplots(1, len(PRESCREENS), figsize=(10, 4), squeeze=False)
    for ax, name in zip(axes[0], PRESCREENS):
        for e in entries:
            if e[name] is not None:
                ax.scatter(e[name], e["finetuned"])
                ax.annotate(f"{e['task']} [{model_label(e['model'])}]", (e[name], e["finetuned"]), fontsize="small",
                            textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel(f"{name} (frozen, last layer)")
        ax.set_ylabel("fine-tuned score")
    fig.suptitle(f"pre-screen against fine-tuning: {suite}")
    return plot_helpers.save_laid_out(fig, path)
