"""PNG plots of a results document (matplotlib, headless Agg backend, imported on use)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

from flexharness.names import model_label


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def case_scores(doc: dict[str, Any], path: Path) -> Path:
    """Per-case scores with seed error bars, one colour per axis, one panel per model."""
    plt = pyplot()
    models = list(dict.fromkeys(c["model"] for c in doc["cases"]))
    fig, axes = plt.subplots(len(models), 1, figsize=(max(6, 0.5 * len(doc["cases"]) + 3), 3.2 * len(models)),
                             squeeze=False)
    palette = ("tab:blue", "tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:cyan")
    colours = dict(zip(dict.fromkeys(c["axis"] for c in doc["cases"]), palette))
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
    plt = pyplot()
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


def file_name(*parts: str) -> str:
    """A PNG file name from parts, with anything odd in them replaced."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", part) for part in parts) + ".png"


def write_plots(doc: dict[str, Any], directory: Path,
                plotters: Sequence[Callable[[dict[str, Any], Path], list[Path]]] = ()) -> list[Path]:
    """The cases and axes plots, then each of ``plotters`` (the axes' own plots)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not doc["cases"]:
        return []
    written = [case_scores(doc, directory / "cases.png"), axes_summary(doc, directory / "axes.png")]
    for plot in plotters:
        written += plot(doc, directory)
    return written
