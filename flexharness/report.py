"""Rendering results: the terminal summary and the results JSON file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from flexharness.compare import ranking_lines, ranking_markdown
from flexharness.models import model_label
from flexharness.transfer import markdown_lines, table_lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """Cases (score ± seed std), then P_avg / σ_P per axis, then gate verdicts."""
    lines: list[str] = []
    cases = doc["cases"]
    if not cases:
        return ["no flexharness cases ran"]
    width = max(len(f"{c['axis']}/{c['name']}") for c in cases) + 2
    lines.append(f"{'case':<{width}}{'model':<24}{'metric':<18}{'score':>8}  {'± seed std':<12}{'n seeds':>7}")
    for c in cases:
        seeds = len(c["seeds"])
        std = "" if c["seed_std"] is None else f"± {c['seed_std']:.4f}"
        score = _fmt(c["score"]) if c["score"] is not None else c["status"].upper()
        lines.append(f"{c['axis'] + '/' + c['name']:<{width}}{model_label(c['model'])[:23]:<24}{c['metric'][:17]:<18}"
                     f"{score:>8}  {std:<12}{seeds:>7}{'  cached' if c.get('cached') else ''}")
    lines += compression_lines(doc)
    lines.append("")
    lines.append(f"{'suite':<20}{'model':<24}{'axis':<13}{'n':>4}{'P_avg':>9}{'σ_P':>9}{'seed std':>10}")
    for a in doc["aggregates"]:
        note = f"  ({a['missing']} without score)" if a["missing"] else ""
        lines.append(f"{a['suite'][:19]:<20}{model_label(a['model'])[:23]:<24}{a['axis']:<13}{a['n']:>4}"
                     f"{_fmt(a['p_avg']):>9}{_fmt(a['sigma_p']):>9}{_fmt(a['mean_seed_std']):>10}{note}")
    lines += ranking_lines(doc)
    lines += table_lines(doc)
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


COMPRESSION_COLUMNS = ("case", "model", "asked", "measured", "score", "dense", "retained", "params", "MB",
                       "ms/ex")


def _compression_row(c: dict[str, Any]) -> list[str]:
    def num(key: str, spec: str) -> str:
        return "-" if c.get(key) is None else format(c[key], spec)

    params = "-" if c.get("params") is None else f"{c['params'] / 1e6:.2f}M"
    return [c["name"], model_label(c["model"]), num("sparsity", ".2f"), num("measured_sparsity", ".3f"),
            num("compressed_score", ".4f"), num("dense_score", ".4f"), num("retention", ".4f"), params,
            num("size_mb", ".1f"), num("latency_ms", ".3f")]


def compression_lines(doc: dict[str, Any]) -> list[str]:
    """What each compression case kept: sparsity asked and measured, scores, size and latency."""
    rows = [_compression_row(c) for c in doc["cases"] if c["axis"] == "compression"]
    if not rows:
        return []
    table = [list(COMPRESSION_COLUMNS), *rows]
    widths = [max(len(row[i]) for row in table) + 2 for i in range(len(COMPRESSION_COLUMNS))]
    lines = ["".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                     for i, (cell, width) in enumerate(zip(row, widths))) for row in table]
    return ["", "compression (score: the compressed model's metric; retained: score / dense score)", *lines]


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file, even if the run is killed mid-write."""
    doc = json_safe(doc)
    write_atomic(path, lambda handle: json.dump(doc, handle, indent=2, sort_keys=False, allow_nan=False))


def json_safe(value: Any) -> Any:
    """NaN and infinities become null (no score): strict JSON, and one odd metric never loses the file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_atomic(path: str | Path, write: Callable[[Any], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def markdown(doc: dict[str, Any]) -> str:
    """A summary fit for a CI step summary: cases, aggregates, gates."""
    out = ["# flexharness results", ""]
    verdict = all(g["passed"] for g in doc["gates"])
    out += [f"**{'PASSED' if verdict else 'FAILED'}**: {sum(g['passed'] for g in doc['gates'])} of "
            f"{len(doc['gates'])} gates passed, {len(doc['cases'])} cases.", ""]
    out += ["| case | model | metric | score | ± seed std | status |", "|---|---|---|---:|---:|---|"]
    for c in doc["cases"]:
        out.append(f"| {c['axis']}/{c['name']} | {model_label(c['model'])} | {c['metric']} | {_fmt(c['score'])} | "
                   f"{_fmt(c['seed_std'])} | {c['status']} |")
    compression = [_compression_row(c) for c in doc["cases"] if c["axis"] == "compression"]
    if compression:
        out += ["", "| " + " | ".join(COMPRESSION_COLUMNS) + " |", "|---|---|" + "---:|" * 8]
        out += ["| " + " | ".join(row) + " |" for row in compression]
    out += ["", "| suite | model | axis | n | P_avg | σ_P |", "|---|---|---|---:|---:|---:|"]
    for a in doc["aggregates"]:
        out.append(f"| {a['suite']} | {model_label(a['model'])} | {a['axis']} | {a['n']} | {_fmt(a['p_avg'])} | "
                   f"{_fmt(a['sigma_p'])} |")
    out += ranking_markdown(doc)
    out += markdown_lines(doc)
    if doc["gates"]:
        out += ["", "| gate | suite | model | verdict | detail |", "|---|---|---|---|---|"]
        for g in doc["gates"]:
            out.append(f"| {g['name']} | {g['suite']} | {model_label(g['model'])} | "
                       f"{'pass' if g['passed'] else '**FAIL**'} | {g['message']} |")
    notes = run_notes(doc)
    return "\n".join(out + ([""] + [f"_{n}_" for n in notes] if notes else [])) + "\n"


def write_report_dir(directory: str | Path, doc: dict[str, Any]) -> list[Path]:
    """Markdown summary and PNG plots; returns the files written."""
    from flexharness.plots import write_plots

    directory = Path(directory)
    summary = directory / "summary.md"
    write_atomic(summary, lambda handle: handle.write(markdown(doc)))
    return [summary, *write_plots(doc, directory)]
