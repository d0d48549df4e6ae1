"""PNG plots of a results document (matplotlib, headless Agg backend, imported on use)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flexharness.models import model_label


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def case_scores(doc: dict[str, Any], path: Path) -> Path:
    """Per-case scores with seed error bars, one colour per axis, one panel per model."""
    plt = _pyplot()
    models = list(dict.fromkeys(c["model"] for c in doc["cases"]))
    fig, axes = plt.subplots(len(models), 1, figsize=(max(6, 0.5 * len(doc["cases"]) + 3), 3.2 * len(models)),
                             squeeze=False)
    colours = {"tasks": "tab:blue", "domains": "tab:green", "compression": "tab:orange"}
    for ax, model in zip(axes[:, 0], models):
        cases = [c for c in doc["cases"] if c["model"] == model]
        ax.bar(range(len(cases)), [c["score"] or 0.0 for c in cases], yerr=[c["seed_std"] or 0.0 for c in cases],
               color=[colours.get(c["axis"], "grey") for c in cases], capsize=3)
        ax.set_xticks(range(len(cases)), [f"{c['axis']}/{c['name']}" for c in cases], rotation=30, ha="right")
        ax.set_ylabel("score (mean over seeds)")
        ax.set_title(model_label(model))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def axes_summary(doc: dict[str, Any], path: Path) -> Path:
    """P_avg per (model, axis) with σ_P as the error bar: the flexibility picture at a glance."""
    plt = _pyplot()
    rows = [a for a in doc["aggregates"] if a["p_avg"] is not None]
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(rows) + 2), 3.5))
    ax.bar(range(len(rows)), [a["p_avg"] for a in rows], yerr=[a["sigma_p"] for a in rows], capsize=4,
           color="tab:purple")
    ax.set_xticks(range(len(rows)), [f"{model_label(a['model'])}\n{a['axis']}" for a in rows])
    ax.set_ylabel("P_avg (error bar: σ_P)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def transfer_heatmap(doc: dict[str, Any], summary: dict[str, Any], path: Path) -> Path:
    """One model's transfer matrix: rows fine-tuned on, columns scored on; missing scores left blank."""
    import numpy as np

    plt = _pyplot()
    sources, targets = summary["sources"], summary["targets"]
    scores = {(e["source"], e["target"]): e["score"] for e in doc["transfer"]
              if e["suite"] == summary["suite"] and e["model"] == summary["model"]}
    grid = np.array([[np.nan if scores[(s, t)] is None else scores[(s, t)] for t in targets] for s in sources])
    fig, ax = plt.subplots(figsize=(1.1 * len(targets) + 3, 0.8 * len(sources) + 2))
    image = ax.imshow(grid, cmap="viridis" if summary["higher_is_better"] else "viridis_r")
    for (row, col), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(col, row, f"{value:.3f}", ha="center", va="center", color="white", fontsize=9,
                    fontweight="bold" if sources[row] == targets[col] else "normal")
    ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("scored on (target domain)")
    ax.set_ylabel("fine-tuned on (source)")
    gap = summary["transfer_gap"]
    ax.set_title(f"{model_label(summary['model'])}: {summary['metric']}, transfer gap "
                 f"{'-' if gap is None else f'{gap:.3f}'}", fontsize=10)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _file_name(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", part) for part in parts) + ".png"


def write_plots(doc: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    if not doc["cases"]:
        return []
    written = [case_scores(doc, directory / "cases.png"), axes_summary(doc, directory / "axes.png")]
    written += [transfer_heatmap(doc, s, directory / _file_name("transfer", s["suite"], model_label(s["model"])))
                for s in doc.get("transfer_summary", [])]
    for model in dict.fromkeys(c["model"] for c in doc["cases"] if _plottable(c)):
        written.append(compression(doc, model, directory / f"compression-{model_label(model)}.png"))
    return written


def compression(doc: dict[str, Any], model: str, path: Path) -> Path:
    """Score (or retention) against the fraction of encoder weights zeroed or removed.

    Magnitude pruning draws one line per variant, starting at the dense model;
    the other methods are labelled points.
    """
    plt = _pyplot()
    cases = [c for c in doc["cases"] if c["model"] == model and _plottable(c)]
    relative = all(c.get("relative") for c in cases)
    dense = 1.0 if relative else cases[0]["dense_score"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    lines: dict[str, list[dict[str, Any]]] = {}
    for c in cases:
        if c["method"] == "magnitude":
            lines.setdefault(c["name"].rsplit("-", 1)[0], []).append(c)
        else:
            ax.scatter(c["measured_sparsity"], c["score"], marker="D", color="tab:red", zorder=3)
            offset = (5, -12) if len(ax.texts) % 2 == 0 else (5, 4)  # neighbours' labels alternate above and below
            ax.annotate(c["name"], (c["measured_sparsity"], c["score"]), textcoords="offset points", xytext=offset)
    for label, members in lines.items():
        members.sort(key=lambda c: c["measured_sparsity"])
        ax.plot([0.0] + [c["measured_sparsity"] for c in members], [dense] + [c["score"] for c in members],
                marker="o", label=label)
    ax.scatter([0.0], [dense], marker="*", s=120, color="black", zorder=4, label="dense")
    ax.set_xlabel("encoder Linear weights zeroed or removed (measured)")
    ax.set_ylabel("retention (compressed / dense)" if relative else f"score ({cases[0]['metric']})")
    ax.set_title(f"compression: {model_label(model)}")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plottable(case: dict[str, Any]) -> bool:
    return case["axis"] == "compression" and case["score"] is not None and case.get("measured_sparsity") is not None
