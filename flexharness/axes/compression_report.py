"""The compression axis on the controller: the table of what each case kept, and the plot of score against
sparsity. Pure functions of the results document (no pytest, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from flexharness.axes import compression_choice
from flexharness.axes.base import Scored
from flexharness.files import output_name
from flexharness.names import model_label, model_labels
from flexharness.results import plots as plotting
from flexharness.results.table import Cell, Table
from flexharness.rules.aggregate import GateResult

AXIS = "compression"


def _dense_line(cases: list[Mapping[str, Any]]) -> list[str]:
    """Where the items run now got their dense model: fine-tuned, loaded from kept weights, or in memory."""
    counts = {"trained": 0, "loaded": 0, "memory": 0}
    for c in cases:
        for source, n in (c.get("dense_from") or {}).items():
            counts[source] = counts.get(source, 0) + n
    if not sum(counts.values()):
        return []
    return [f"dense models of the items run: {counts['trained']} fine-tuned, {counts['loaded']} loaded from kept "
            f"weights, {counts['memory']} already in memory"]


COLUMNS = ("case", "model", "asked", "measured", "score", "dense", "retained", "params", "MB", "ms/ex")
FORMATS = {"asked": ".2f", "measured": ".3f", "score": ".4f", "dense": ".4f", "retained": ".4f", "MB": ".1f",
           "ms/ex": ".3f"}
TITLE = "compression (score: the compressed model's metric; retained: score / dense score)"


def _row(c: Mapping[str, Any]) -> tuple[Cell, ...]:
    params = None if c.get("params") is None else f"{c['params'] / 1e6:.2f}M"
    return (c["name"], model_label(c["model"]), c.get("sparsity"), c.get("measured_sparsity"),
            c.get("compressed_score"), c.get("dense_score"), c.get("retention"), params, c.get("size_mb"),
            c.get("latency_ms"))


def sections(scored: Iterable[Scored]) -> dict[str, list[dict[str, Any]]]:
    """Nothing beyond the cases: compression's measures are case fields."""
    return {}


def finish(doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """The frontiers and the ``choose:`` choices, rebuilt from the document; each choice is a gate."""
    doc["compression_frontier"] = compression_choice.frontiers(doc)
    doc["compression_choice"] = compression_choice.choices(doc)
    return compression_choice.gates(doc)


def tables(doc: Mapping[str, Any]) -> list[Table]:
    """What each compression case kept: sparsity asked and measured, scores, size and latency."""
    cases = [c for c in doc["cases"] if c["axis"] == AXIS]
    if not cases:
        return []
    return [Table(TITLE, COLUMNS, tuple(map(_row, cases)), text=COLUMNS[:2], formats=FORMATS, heading="Compression",
                  notes=(*_dense_line(cases), *compression_choice.lines(doc)))]


def plots(doc: Mapping[str, Any], directory: Path) -> list[Path]:
    """``compression-MODEL.png`` per model: score (or retention) against the sparsity measured."""
    models = dict.fromkeys(c["model"] for c in doc["cases"] if _plottable(c))
    labels = model_labels(c["model"] for c in doc["cases"])
    return ([_plot(doc, model, directory / output_name("compression", labels[model])) for model in models]
            + compression_choice.plot(doc, directory))


def _plot(doc: Mapping[str, Any], model: str, path: Path) -> Path:
    """Score (or retention) against the fraction of encoder weights zeroed or removed.

    Magnitude pruning draws one line per variant, starting at the dense model;
    the other methods are labelled points.
    """
    plt = plotting.pyplot()
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
    return plotting.save_laid_out(fig, path)


def _plottable(case: dict[str, Any]) -> bool:
    return case["axis"] == AXIS and case["score"] is not None and case.get("measured_sparsity") is not None
