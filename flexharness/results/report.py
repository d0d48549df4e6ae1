"""Rendering a results document: the terminal summary, the Markdown report, the report folder.

Axis-specific sections come in as ``sections`` (functions of the document), so
this module stays free of any one axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from flexharness import names
from flexharness.names import model_labels
from flexharness.results.markdown import escaped
from flexharness.results.compare import (comparison_lines, comparison_markdown, interval_text, ranking_lines,
                                         ranking_markdown)
from flexharness.results import html, slice_report
from flexharness.results.io import write_atomic
from flexharness.results.plots import write_plots

Section = Callable[[dict[str, Any]], list[str]]
Plotter = Callable[[dict[str, Any], Path], list[Path]]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def labeller(doc: Mapping[str, Any]) -> Callable[[str], str]:
    """Model labels no two models of the document share (``m1/tiny`` and ``m2/tiny``, not ``tiny`` twice)."""
    labels = model_labels(c["model"] for c in doc["cases"])
    return lambda ref: labels.get(ref) or names.model_label(ref)


def summary_lines(doc: dict[str, Any], sections: Sequence[Section] = ()) -> list[str]:
    """Cases (score ± seed std), P_avg / σ_P per axis, the ranking, the axes' ``sections``, gate verdicts."""
    lines: list[str] = []
    cases = doc["cases"]
    if not cases:
        return ["no flexharness cases ran"]
    model_label = labeller(doc)
    width = max(len(f"{c['axis']}/{c['name']}") for c in cases) + 2
    intervals = any(c.get("interval") for c in cases)
    ci_head = f"  {'95 % CI':<18}" if intervals else ""
    lines.append(f"{'case':<{width}}{'model':<24}{'metric':<18}{'score':>8}  {'± seed std':<12}{'n seeds':>7}"
                 f"{ci_head}".rstrip())
    for c in cases:
        seeds = len(c["seeds"])
        std = "" if c["seed_std"] is None else f"± {c['seed_std']:.4f}"
        score = _fmt(c["score"]) if c["score"] is not None else c["status"].upper()
        ci = f"  {interval_text(c.get('interval')):<18}" if intervals else ""
        lines.append((f"{c['axis'] + '/' + c['name']:<{width}}{model_label(c['model'])[:23]:<24}"
                      f"{c['metric'][:17]:<18}{score:>8}  {std:<12}{seeds:>7}{ci}"
                      f"{'  cached' if c.get('cached') else ''}").rstrip())
    lines.append("")
    ci_head = f"  {'P_avg 95 % CI':<18}" if any(a.get("p_avg_interval") for a in doc["aggregates"]) else ""
    lines.append(f"{'suite':<20}{'model':<24}{'axis':<13}{'n':>4}{'P_avg':>9}{'σ_P':>9}{'seed std':>10}{ci_head}".rstrip())
    for a in doc["aggregates"]:
        note = f"  ({a['missing']} without score)" if a["missing"] else ""
        ci = f"  {interval_text(a.get('p_avg_interval')):<18}" if ci_head else ""
        lines.append((f"{a['suite'][:19]:<20}{model_label(a['model'])[:23]:<24}{a['axis']:<13}{a['n']:>4}"
                      f"{_fmt(a['p_avg']):>9}{_fmt(a['sigma_p']):>9}{_fmt(a['mean_seed_std']):>10}{ci}{note}").rstrip())
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
    doc = escaped(doc)
    model_label = labeller(doc)
    cases = ["| case | model | metric | score | ± seed std | 95 % CI | status |", "|---|---|---|---:|---:|---|---|"]
    for c in doc["cases"]:
        cases.append(f"| {c['axis']}/{c['name']} | {model_label(c['model'])} | {c['metric']} | {_fmt(c['score'])} | "
                     f"{_fmt(c['seed_std'])} | {interval_text(c.get('interval'))} | {c['status']} |")
    aggregates = ["| suite | model | axis | n | P_avg | P_avg 95 % CI | σ_P | σ_P 95 % CI |",
                  "|---|---|---|---:|---:|---|---:|---|"]
    for a in doc["aggregates"]:
        aggregates.append(f"| {a['suite']} | {model_label(a['model'])} | {a['axis']} | {a['n']} | {_fmt(a['p_avg'])} | "
                          f"{interval_text(a.get('p_avg_interval'))} | {_fmt(a['sigma_p'])} | "
                          f"{interval_text(a.get('sigma_p_interval'))} |")
    gates = []
    if doc["gates"]:
        gates = ["| gate | suite | model | verdict | detail |", "|---|---|---|---|---|"]
        gates += [f"| {g['name']} | {g['suite']} | {model_label(g['model'])} | "
                  f"{'pass' if g['passed'] else '**FAIL**'} | {g['message']} |" for g in doc["gates"]]
    return {"cases": cases, "aggregates": aggregates, "ranking": ranking_markdown(doc),
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
