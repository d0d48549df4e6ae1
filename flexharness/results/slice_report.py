"""Difficulty slices in the reports: terminal lines, a Markdown table, a bar chart per sliced case, and the
rows ``flexharness compare`` matches up."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flexharness.files import output_name
from flexharness.names import model_label
from flexharness.results import table
from flexharness.results.table import Table


def _sliced(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in doc["cases"] if c.get("slices")]


def _recombination(entry: Mapping[str, Any]) -> str:
    if entry.get("note"):
        return entry["note"]
    kind = "= the case score (the metric is a mean over examples)" if entry["additive"] else \
        "(not the case score: the metric is no mean over examples)"
    recombined = "-" if entry["recombined"] is None else f"{entry['recombined']:.4f}"
    return f"count-weighted mean {recombined} {kind}"


def tables(doc: Mapping[str, Any]) -> list[Table]:
    """A table per sliced case: slice, range, count, score; and what the recombination means."""
    found = []
    for c in _sliced(doc):
        entry = c["slices"]
        name = f"{c['axis']}/{c['name']}"
        rows = tuple((s["name"], _range(s), s["n"], s["score"]) for s in entry["slices"])
        found.append(Table(f"slices {name} [{model_label(c['model'])}] by {entry['by']}",
                           ("slice", "range", "n", "score"), rows, text=("slice", "range"), formats={"score": ".4f"},
                           heading=f"{name} ({model_label(c['model'])}, {c['metric']}, by {entry['by']})",
                           notes=(_recombination(entry),)))
    return found


def terminal_lines(doc: Mapping[str, Any]) -> list[str]:
    return table.terminal_lines(tables(doc))


def markdown_lines(doc: Mapping[str, Any]) -> list[str]:
    found = tables(doc)
    return ["", "## Difficulty slices", *table.markdown_lines(found)] if found else []


def _range(row: Mapping[str, Any]) -> str:
    if row.get("low") is None:
        return ""
    return f"{row['low']:g}" if row["low"] == row["high"] else f"{row['low']:g} – {row['high']:g}"


def compare_entries(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every slice of every case as a row named ``CASE[SLICE]``, for matching two runs."""
    return [{"suite": c["suite"], "model": c["model"], "axis": c["axis"], "name": f"{c['name']}[{s['name']}]",
             "score": s["score"], "higher_is_better": c["higher_is_better"]}
            for c in _sliced(doc) for s in c["slices"]["slices"]]


def plots(doc: Mapping[str, Any], directory: Path) -> list[Path]:
    """One PNG per (suite, sliced case): score per slice, models side by side, the count under each slice."""
    from flexharness.results.plots import colours, pyplot, save

    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for c in _sliced(doc):
        if c["slices"]["slices"]:
            groups.setdefault((c["suite"], c["axis"], c["name"]), []).append(c)
    palette = colours(doc)
    written = []
    for (suite, axis, name), cases in groups.items():
        plt = pyplot()
        names = list(dict.fromkeys(s["name"] for c in cases for s in c["slices"]["slices"]))
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) * len(cases) ** 0.5 + 2), 3.6),
                               layout="constrained")
        width = 0.8 / len(cases)
        for j, c in enumerate(cases):
            rows = {s["name"]: s for s in c["slices"]["slices"]}
            xs = [i + (j - (len(cases) - 1) / 2) * width for i in range(len(names))]
            heights = [rows[n]["score"] if n in rows and rows[n]["score"] is not None else 0.0 for n in names]
            ax.bar(xs, heights, width * 0.9, color=palette.get(c["model"], "grey"), label=model_label(c["model"]))
            if c["score"] is not None:
                ax.axhline(c["score"], color=palette.get(c["model"], "grey"), linestyle="--", linewidth=1)
        counts = {n: max((s["n"] for c in cases for s in c["slices"]["slices"] if s["name"] == n), default=0)
                  for n in names}
        ax.set_xticks(range(len(names)), [f"{n}\nn={counts[n]}" for n in names], fontsize=8)
        ax.set_ylabel(f"score ({cases[0]['metric']})")
        ax.set_title(f"{suite} / {axis}/{name}: score by {cases[0]['slices']['by']} (dashed: whole case)",
                     fontsize=9, loc="left")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(1.0, 0.0))
        path = directory / output_name("slices", suite, axis, name)
        save(fig, path, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
