"""Rendering a results document: the terminal summary, the Markdown report, the report folder.

Axis-specific sections come in as ``sections`` (functions of the document), so
this module stays free of any one axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from flexharness import names
from flexharness.names import model_labels
from flexharness.results.compare import (comparison_lines, comparison_markdown, interval_text, ranking_lines,
                                         ranking_markdown)
from flexharness.results import html, slice_report, table
from flexharness.results.io import write_atomic
from flexharness.results.plots import write_plots
from flexharness.results.table import Table

Section = Callable[[dict[str, Any]], list[str]]
Plotter = Callable[[dict[str, Any], Path], list[Path]]


def case_table(doc: dict[str, Any]) -> Table:
    """Every case: its score (mean over seeds) ± seed std, the seeds run, its interval where it has one."""
    model_label = labeller(doc)
    cases = doc["cases"]
    intervals = any(c.get("interval") for c in cases)
    columns = ("case", "model", "metric", "score", "± seed std", "n seeds", *(("95 % CI",) if intervals else ()),
               "status")
    rows = tuple((f"{c['axis']}/{c['name']}", model_label(c["model"]), c["metric"], c["score"], c["seed_std"],
                  len(c["seeds"]), *((interval_text(c.get("interval")),) if intervals else ()),
                  c["status"] + (", cached" if c.get("cached") else "")) for c in cases)
    return Table("", columns, rows, text=("case", "model", "metric", "95 % CI", "status"),
                 formats={"score": ".4f", "± seed std": ".4f"})


def aggregate_table(doc: dict[str, Any]) -> Table:
    """P_avg and σ_P per (suite, model, axis), with their intervals where the run has them."""
    model_label = labeller(doc)
    aggregates = doc["aggregates"]
    p_ci = any(a.get("p_avg_interval") for a in aggregates)
    s_ci = any(a.get("sigma_p_interval") for a in aggregates)
    columns = ("suite", "model", "axis", "n", "without score", "P_avg", *(("P_avg 95 % CI",) if p_ci else ()), "σ_P",
               *(("σ_P 95 % CI",) if s_ci else ()), "seed std")
    rows = tuple((a["suite"], model_label(a["model"]), a["axis"], a["n"], a["missing"], a["p_avg"],
                  *((interval_text(a.get("p_avg_interval")),) if p_ci else ()), a["sigma_p"],
                  *((interval_text(a.get("sigma_p_interval")),) if s_ci else ()), a["mean_seed_std"])
                 for a in aggregates)
    return Table("", columns, rows, text=("suite", "model", "axis", "P_avg 95 % CI", "σ_P 95 % CI"),
                 formats={"P_avg": ".4f", "σ_P": ".4f", "seed std": ".4f"})


def gate_table(doc: dict[str, Any]) -> Table:
    """Every gate with its verdict and the numbers behind it."""
    model_label = labeller(doc)
    rows = tuple((g["name"], g["suite"], model_label(g["model"]), "pass" if g["passed"] else "FAIL", g["message"])
                 for g in doc["gates"])
    return Table("", ("gate", "suite", "model", "verdict", "detail"), rows,
                 text=("gate", "suite", "model", "verdict", "detail"))


def labeller(doc: Mapping[str, Any]) -> Callable[[str], str]:
    """Model labels no two models of the document share (``m1/tiny`` and ``m2/tiny``, not ``tiny`` twice); a gate
    over every model (no model of its own: fusion across models) is ``all models``."""
    labels = model_labels(c["model"] for c in doc["cases"])
    return lambda ref: labels.get(ref) or names.model_label(ref) or "all models"


def summary_lines(doc: dict[str, Any], sections: Sequence[Section] = ()) -> list[str]:
    """Cases (score ± seed std), P_avg / σ_P per axis, the ranking, the axes' ``sections``, gate verdicts."""
    if not doc["cases"]:
        return ["no flexharness cases ran"]
    model_label = labeller(doc)
    lines = table.terminal_lines([case_table(doc), aggregate_table(doc)])[1:]
    lines += ranking_lines(doc)
    lines += comparison_lines(doc)
    for section in sections:
        lines += section(doc)
    lines += slice_report.terminal_lines(doc)
    if doc["gates"]:
        lines.append("")
        for g in doc["gates"]:
            lines.append(f"{'PASS' if g['passed'] else 'FAIL'}  {g['suite']} [{model_label(g['model'])}] "
                         f"{g['name']}: {g['message']}")
    notes = run_notes(doc)
    return lines + ([""] + notes if notes else [])


def run_notes(doc: dict[str, Any]) -> list[str]:
    """How the run was made: reused cache records, the shard it covers, the files it was merged from."""
    notes = []
    total = sum(len(c.get("items", {})) for c in doc["cases"])
    cached = sum(c.get("cached_items", 0) for c in doc["cases"])
    if cached:
        notes.append(f"{cached} of {total} items reused from the result cache "
                     "(--flex-no-cache or --cache-clear recomputes them)")
    if doc.get("shard"):
        notes.append(f"shard {doc['shard']['index']}/{doc['shard']['count']}: {len(doc['cases'])} cases; "
                     "gates are decided by 'flexharness merge' over all shards")
    if doc.get("merged_from"):
        notes.append(f"merged from {len(doc['merged_from'])} results files")
    return notes


def markdown_parts(doc: dict[str, Any], sections: Sequence[Section] = ()) -> dict[str, list[str]]:
    """The Markdown report's pieces by name, shared by ``summary.md`` and ``index.html``."""
    gates = table.markdown_lines([gate_table(doc)])[1:] if doc["gates"] else []
    return {"cases": table.markdown_lines([case_table(doc)])[1:],
            "aggregates": table.markdown_lines([aggregate_table(doc)])[1:], "ranking": ranking_markdown(doc),
            "comparisons": comparison_markdown(doc),
            "sections": [line for section in sections for line in section(doc)] + slice_report.markdown_lines(doc),
            "gates": gates, "notes": [f"_{n}_" for n in run_notes(doc)]}


def markdown(doc: dict[str, Any], sections: Sequence[Section] = ()) -> str:
    """A summary fit for a CI step summary: cases, aggregates, the axes' ``sections``, gates."""
    parts = markdown_parts(doc, sections)
    verdict = all(g["passed"] for g in doc["gates"])
    out = ["# flexharness results", "",
           f"**{'PASSED' if verdict else 'FAILED'}**: {sum(g['passed'] for g in doc['gates'])} of "
           f"{len(doc['gates'])} gates passed, {len(doc['cases'])} cases.", ""]
    out += parts["cases"] + [""] + parts["aggregates"] + parts["ranking"] + parts["comparisons"] + parts["sections"]
    out += ([""] + parts["gates"] if parts["gates"] else [])
    return "\n".join(out + ([""] + parts["notes"] if parts["notes"] else [])) + "\n"


def write_report_dir(directory: str | Path, doc: dict[str, Any], sections: Sequence[Section] = (),
                     plotters: Sequence[Plotter] = ()) -> list[Path]:
    """``summary.md``, the PNG plots and ``index.html`` (all of them on one page); returns the files written."""
    directory = Path(directory)
    summary = directory / "summary.md"
    write_atomic(summary, lambda handle: handle.write(markdown(doc, sections)))
    overview = write_plots(doc, directory)
    own = [path for plot in (*plotters, slice_report.plots) for path in plot(doc, directory)] if doc["cases"] else []
    index = directory / "index.html"
    text = html.page(doc, markdown_parts(doc, sections), overview, own)
    write_atomic(index, lambda handle: handle.write(text))
    return [summary, *overview, *own, index]
