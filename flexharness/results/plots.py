"""PNG plots of a results document (matplotlib, headless Agg backend, imported on use).

Two summary plots: per suite a *flexibility map* (P_avg against σ_P, one point per
model and axis, both with their bootstrap intervals), and the per-case scores as
horizontal grouped bars, models side by side, one panel per (suite, axis) so that
metrics of different scales never share an axis. Names go into legends and tick
labels, never as text over the data, so they cannot overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from flexharness.files import output_name, replace_atomically
from flexharness.names import model_label

PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
BAR = 0.8  # height of one case's group of bars


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    save(fig, path, bbox_inches="tight")
    plt.close(fig)
    return path


def save(fig: Any, path: Path, **options: Any) -> Path:
    """Write a figure as PNG, whole or not at all, and never through a link already at ``path``."""
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, **options))
    return path


def save_laid_out(fig: Any, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` (:func:`save`), and free it: how every axis's plot ends."""
    fig.tight_layout()
    save(fig, path)
    pyplot().close(fig)
    return path


def per_task(entries: Sequence[Mapping[str, Any]], kind: str, directory: Path,
             draw: Callable[[list[Mapping[str, Any]], Path], Path]) -> list[Path]:
    """One ``KIND-SUITE-TASK.png`` per (suite, task) of ``entries``, each drawn from that pair's entries."""
    tasks: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for entry in entries:
        tasks.setdefault((entry["suite"], entry["task"]), []).append(entry)
    return [draw(members, directory / output_name(kind, suite, task)) for (suite, task), members in tasks.items()]


def colours(doc: Mapping[str, Any]) -> dict[str, str]:
    """One colour per model, in the order the results list them, the same in every plot."""
    models = dict.fromkeys(c["model"] for c in doc["cases"])
    return {model: PALETTE[i % len(PALETTE)] for i, model in enumerate(models)}


def error_bar(centre: float, interval: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """(below, above) distances of an interval's ends from ``centre``; never negative."""
    if not interval:
        return None
    return max(0.0, centre - interval["low"]), max(0.0, interval["high"] - centre)


def flexibility_map(doc: Mapping[str, Any], suite: str, path: Path) -> Path:
    """P_avg (y) against σ_P (x) per (model, axis) of one suite: up and to the left is more flexible."""
    plt = pyplot()
    rows = [a for a in doc["aggregates"] if a["suite"] == suite and a["p_avg"] is not None]
    axis_names = list(dict.fromkeys(a["axis"] for a in rows))
    markers = {axis: MARKERS[i % len(MARKERS)] for i, axis in enumerate(axis_names)}
    palette = colours(doc)
    order = list(palette)
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for a in rows:
        y, x = error_bar(a["p_avg"], a.get("p_avg_interval")), error_bar(a["sigma_p"], a.get("sigma_p_interval"))
        size = max(5.0, 14.0 - 3.0 * order.index(a["model"]))  # later models smaller: equal points nest as rings
        ax.errorbar(a["sigma_p"], a["p_avg"], yerr=None if y is None else [[y[0]], [y[1]]],
                    xerr=None if x is None else [[x[0]], [x[1]]], fmt=markers[a["axis"]], markersize=size,
                    color=palette.get(a["model"], "grey"), ecolor=palette.get(a["model"], "grey"), elinewidth=1.2,
                    capsize=4, alpha=0.85, markeredgecolor="black", markeredgewidth=0.6)
    ax.set_xlabel("σ_P: spread of the case scores (lower is more even)")
    ax.set_ylabel("P_avg: mean case score")
    ax.set_xlim(left=min([0.0] + [ax.get_xlim()[0]]))
    ax.margins(x=0.08, y=0.08)
    ax.grid(True, alpha=0.3)
    fig.suptitle(f"flexibility map: {suite}", fontsize=11)
    ax.set_title(_direction_note(rows), fontsize=8, color="dimgray")
    _map_legends(ax, rows, markers, palette)
    return _save(plt, fig, path)


def _direction_note(rows: Sequence[Mapping[str, Any]]) -> str:
    lower = sorted({a["axis"] for a in rows if not a.get("higher_is_better", True)})
    note = "↖ up and to the left is more flexible: high P_avg, low σ_P"
    if lower:
        note += f" (↙ for {', '.join(lower)}: lower is better)"
    intervals = any(a.get("p_avg_interval") or a.get("sigma_p_interval") for a in rows)
    return note + ("\nbars: 95 % bootstrap intervals" if intervals else "\nno intervals in these results")


def _map_legends(ax: Any, rows: Sequence[Mapping[str, Any]], markers: Mapping[str, str],
                 palette: Mapping[str, str]) -> None:
    """Two legends beside the plot: colour = model, marker = axis."""
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(a["model"] for a in rows))
    fig = ax.figure
    fig.legend([Line2D([], [], marker="o", linestyle="", color=palette.get(m, "grey"), markersize=8)
                for m in models], [model_label(m) for m in models], title="model (colour)",
               loc="outside right upper", fontsize=8, title_fontsize=9)
    fig.legend([Line2D([], [], marker=markers[axis], linestyle="", color="black", markerfacecolor="white",
                       markersize=8) for axis in markers], list(markers), title="axis (marker)",
               loc="outside right lower", fontsize=8, title_fontsize=9)


def case_scores(doc: Mapping[str, Any], path: Path) -> Path:
    """Every case's score, models side by side, with its interval (or ± seed std where there is none)."""
    plt = pyplot()
    panels = _panels(doc)
    sizes = [len(cases) for _, cases in panels]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, height_ratios=sizes,
                             figsize=(8, 1.2 * len(panels) + sum(0.45 * s * _models_in(doc) ** 0.5 for s in sizes)))
    palette = colours(doc)
    kinds: set[str] = set()
    for ax, ((suite, axis), names) in zip(axes[:, 0], panels):
        cases = [c for c in doc["cases"] if (c["suite"], c["axis"]) == (suite, axis)]
        kinds |= _grouped_bars(ax, cases, names, palette)
        ax.set_title(f"{suite} / {axis}", fontsize=10, loc="left")
        ax.set_xlabel(_score_label(cases), fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    _bar_legend(fig, axes[0, 0], palette, kinds)
    fig.tight_layout()
    return _save(plt, fig, path)


def _score_label(cases: Sequence[Mapping[str, Any]]) -> str:
    metrics = ", ".join(sorted({c["metric"] for c in cases}))
    return f"retention: compressed / dense {metrics}" if all(c.get("relative") for c in cases) else f"score ({metrics})"


def _models_in(doc: Mapping[str, Any]) -> int:
    return len({c["model"] for c in doc["cases"]})


def _panels(doc: Mapping[str, Any]) -> list[tuple[tuple[str, str], list[str]]]:
    """(suite, axis) and its case names, in the order of the results."""
    found: dict[tuple[str, str], list[str]] = {}
    for c in doc["cases"]:
        names = found.setdefault((c["suite"], c["axis"]), [])
        if c["name"] not in names:
            names.append(c["name"])
    return list(found.items())


def _grouped_bars(ax: Any, cases: Sequence[Mapping[str, Any]], names: list[str],
                  palette: Mapping[str, str]) -> set[str]:
    """Horizontal bars, one group per case (top to bottom), one bar per model; returns the error-bar kinds."""
    models = [model for model in palette if any(c["model"] == model for c in cases)]
    height = BAR / len(models)
    kinds = set()
    for j, model in enumerate(models):
        for c in cases:
            if c["model"] != model:
                continue
            y = names.index(c["name"]) + (j - (len(models) - 1) / 2) * height
            if c["score"] is None:
                ax.text(0, y, f" {model_label(model)}: no score ({c['status']})", va="center", fontsize=7,
                        color="firebrick")
                continue
            ax.barh(y, c["score"], height=height * 0.9, color=palette.get(model, "grey"))
            kind, err = _case_error(c)
            if err:
                kinds.add(kind)
                ax.errorbar(c["score"], y, xerr=[[err[0]], [err[1]]], fmt="none", capsize=3, elinewidth=1,
                            ecolor="black" if kind == "interval" else "dimgray",
                            linestyle="-" if kind == "interval" else "--")
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first case at the top
    return kinds


def _case_error(case: Mapping[str, Any]) -> tuple[str, tuple[float, float] | None]:
    found = error_bar(case["score"], case.get("interval"))
    if found:
        return "interval", found
    std = case.get("seed_std")
    return "seed std", (std, std) if std else None


def _bar_legend(fig: Any, ax: Any, palette: Mapping[str, str], kinds: set[str]) -> None:
    """Colour = model; the error-bar kinds that occur, said in words."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(color=colour) for colour in palette.values()]
    labels = [model_label(model) for model in palette]
    if "interval" in kinds:
        handles.append(Line2D([], [], color="black"))
        labels.append("95 % bootstrap interval")
    if "seed std" in kinds:
        handles.append(Line2D([], [], color="dimgray", linestyle="--"))
        labels.append("± seed std (no interval)")
    ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.08), ncol=2, fontsize=8, frameon=False)




def write_plots(doc: dict[str, Any], directory: Path) -> list[Path]:
    """The flexibility maps (one per suite with a P_avg) and the cases plot; the axes add their own."""
    directory.mkdir(parents=True, exist_ok=True)
    if not doc["cases"]:
        return []
    suites = dict.fromkeys(a["suite"] for a in doc["aggregates"] if a["p_avg"] is not None)
    written = [flexibility_map(doc, suite, directory / output_name("flexibility", suite)) for suite in suites]
    return written + [case_scores(doc, directory / "cases.png")]
