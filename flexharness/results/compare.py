"""Reading results side by side: models ranked per axis, and two runs compared case by case.

Plain functions of results documents (the ``--flex-json`` contract), shared by
the terminal summary, the Markdown report and the ``flexharness`` command.
"""

from __future__ import annotations

from typing import Any, Mapping

from flexharness.names import model_label
from flexharness.results.markdown import escape, escaped
from flexharness.results.slice_report import compare_entries
from flexharness.rules import stats


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def interval_text(interval: Mapping[str, Any] | None) -> str:
    """``[low, high]`` of a bootstrap interval, or nothing where there is none."""
    return "" if not interval else f"[{interval['low']:.4f}, {interval['high']:.4f}]"


def ranking(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per (suite, axis) evaluated with several models: the models from best to worst P_avg.

    Best honours the metric's direction; a model whose P_avg is incomplete is
    listed last, without a rank. Where the run compared every pair's P_avg on the
    same examples, models whose difference is not significant (adjusted p ≥ 0.05)
    share a rank range ("1–2"); the HELM win rate stands beside.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for a in doc["aggregates"]:
        groups.setdefault((a["suite"], a["axis"]), []).append(a)
    wins = {(w["suite"], w["axis"], w["model"]): w["win_rate"] for w in doc.get("win_rates") or []}
    result = []
    for (suite, axis), rows in groups.items():
        if len(rows) < 2:
            continue
        higher = rows[0].get("higher_is_better", True)
        sign = -1.0 if higher else 1.0
        ordered = sorted(rows, key=lambda a: (a["p_avg"] is None, sign * (a["p_avg"] or 0.0)))
        labels = _rank_labels(doc, suite, axis, ordered, higher)
        result.append({"suite": suite, "axis": axis, "tied_by_test": labels is not None, "models": [
            {"rank": i + 1 if a["p_avg"] is not None else None,
             "rank_label": (labels or {}).get(a["model"], str(i + 1) if a["p_avg"] is not None else "-"),
             "model": a["model"], "p_avg": a["p_avg"], "sigma_p": a["sigma_p"], "n": a["n"],
             "missing": a.get("missing", 0), "win_rate": wins.get((suite, axis, a["model"]))}
            for i, a in enumerate(ordered)]})
    return result


def _rank_labels(doc: Mapping[str, Any], suite: str, axis: str, rows: list[Mapping[str, Any]],
                 higher: bool) -> dict[str, str] | None:
    """Rank ranges from the adjusted P_avg tests, when every pair of complete models has one."""
    scores = {a["model"]: a["p_avg"] for a in rows if a["p_avg"] is not None}
    tests = {(c["model_a"], c["model_b"]): c["p_adjusted"] for c in doc.get("comparisons") or []
             if (c["suite"], c["axis"], c["case"]) == (suite, axis, "P_avg")}
    pairs = [(a, b) for i, a in enumerate(scores) for b in list(scores)[i + 1:]]
    if len(scores) < 2 or any((a, b) not in tests and (b, a) not in tests for a, b in pairs):
        return None
    return {model: r.label for model, r in stats.rank_ranges(scores, tests, higher_is_better=higher).items()}


def ranking_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = []
    for group in ranking(doc):
        how = "rank ranges from paired tests" if group["tied_by_test"] else "by P_avg"
        lines += ["", f"ranking: {group['suite']} / {group['axis']} ({how}, σ_P and win rate beside it)"]
        for row in group["models"]:
            rank = f"{row['rank_label']}." if row["rank"] else "-"
            note = f"  ({row['missing']} of {row['n']} cases without score)" if row["missing"] else ""
            win = "" if row["win_rate"] is None else f"  win rate {row['win_rate']:.2f}"
            lines.append(f"  {rank:<6}{model_label(row['model'])[:30]:<32}P_avg {_fmt(row['p_avg'])}  "
                         f"σ_P {_fmt(row['sigma_p'])}{win}{note}")
    return lines


def ranking_markdown(doc: Mapping[str, Any]) -> list[str]:
    out = []
    for group in ranking(doc):
        out += ["", f"### Ranking: {group['suite']} / {group['axis']}", "",
                "| rank | model | P_avg | σ_P | win rate | cases |", "|---:|---|---:|---:|---:|---:|"]
        for row in group["models"]:
            win = "-" if row["win_rate"] is None else f"{row['win_rate']:.2f}"
            out.append(f"| {row['rank_label'] if row['rank'] else '-'} | {model_label(row['model'])} | "
                       f"{_fmt(row['p_avg'])} | {_fmt(row['sigma_p'])} | {win} | {row['n'] - row['missing']}/{row['n']} |")
    return out


def _comparison_cells(c: Mapping[str, Any]) -> list[str]:
    verdict = "significant" if c["p_adjusted"] < 0.05 else "not significant"
    return [f"{c['axis']}/{c['case']}" if c["case"] != "P_avg" else f"{c['axis']} P_avg",
            f"{model_label(c['model_b'])} − {model_label(c['model_a'])}", f"{c['difference']:+.4f}",
            f"[{c['low']:+.4f}, {c['high']:+.4f}]", f"{c['p_value']:.4g}", f"{c['p_adjusted']:.4g}", c["test"],
            f"{c['mde']:.4f}", verdict]


COMPARISON_COLUMNS = ("case", "B − A", "difference", "95 % CI", "p", "p adjusted", "test", "MDE", "")


def comparison_lines(doc: Mapping[str, Any]) -> list[str]:
    """Paired differences between models on the same examples (docs/statistics.md)."""
    rows = [_comparison_cells(c) for c in doc.get("comparisons") or []]
    if not rows:
        return []
    correction = {"holm": "Holm", "bh": "Benjamini–Hochberg"}.get(doc["comparisons"][0].get("correction"), "Holm")
    table = [list(COMPARISON_COLUMNS), *rows]
    widths = [max(len(row[i]) for row in table) + 2 for i in range(len(COMPARISON_COLUMNS))]
    return ["", f"model comparisons (paired on the same examples; p adjusted with {correction} per suite and axis)",
            *("".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)]


def comparison_markdown(doc: Mapping[str, Any]) -> list[str]:
    rows = [_comparison_cells(c) for c in doc.get("comparisons") or []]
    if not rows:
        return []
    return ["", "### Model comparisons (paired)", "", "| " + " | ".join(COMPARISON_COLUMNS[:-1]) + " | verdict |",
            "|---|---|---:|---|---:|---:|---|---:|---|", *("| " + " | ".join(row) + " |" for row in rows)]


def _single_model(doc: Mapping[str, Any]) -> bool:
    models: dict[str, set[str]] = {}
    for case in doc["cases"]:
        models.setdefault(case["suite"], set()).add(case["model"])
    return all(len(found) <= 1 for found in models.values())


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Cases, their difficulty slices (``CASE[SLICE]``) and aggregates of two runs matched up, with B − A and
    whether B is better.

    Rows match on suite, axis and case name, and on the model too unless each
    run evaluated one model per suite (then comparing two models is the point).
    """
    by_model = not (_single_model(a) and _single_model(b))

    def key(row: Mapping[str, Any], name: str) -> tuple:
        return (row["suite"], row["model"] if by_model else "", row["axis"], row.get(name, ""))

    return {"cases": _pair(a["cases"], b["cases"], lambda r: key(r, "name"), "score", "interval"),
            "slices": _pair(compare_entries(a), compare_entries(b), lambda r: key(r, "name"), "score", "interval"),
            "aggregates": _pair(a["aggregates"], b["aggregates"], lambda r: key(r, "axis"), "p_avg", "p_avg_interval")}


def _pair(left: list, right: list, key: Any, field: str, interval: str) -> list[dict[str, Any]]:
    """Rows matched by ``key``: each side's ``field`` as ``a``/``b`` and its ``interval`` (or None) beside it."""
    rows: dict[tuple, dict[str, Any]] = {}
    for side, entries in (("a", left), ("b", right)):
        for entry in entries:
            row = rows.setdefault(key(entry), {"suite": entry["suite"], "axis": entry["axis"],
                                               "name": entry.get("name", "P_avg"), "a": None, "b": None,
                                               "a_interval": None, "b_interval": None,
                                               "higher_is_better": entry.get("higher_is_better", True)})
            row[side] = entry.get(field)
            row[f"{side}_interval"] = entry.get(interval)
            row[f"model_{side}"] = entry["model"]
    for row in rows.values():
        row["delta"] = row["b"] - row["a"] if row["a"] is not None and row["b"] is not None else None
        row["verdict"] = _verdict(row)
    return list(rows.values())


def _verdict(row: Mapping[str, Any]) -> str:
    if "model_a" not in row:
        return "only in B"
    if "model_b" not in row:
        return "only in A"
    if row["delta"] is None:
        return "no score"
    if row["delta"] == 0:
        return "same"
    return "better" if (row["delta"] > 0) == row["higher_is_better"] else "worse"


INTERVAL_NOTE = ("95 % CI: each run's own bootstrap interval. Overlap is no test of B − A: "
                 "for a paired test, evaluate both models in one run.")


def compare_lines(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str]) -> list[str]:
    """Both runs side by side; each side's 95 % interval beside its score where the results have one."""
    result = compare(a, b)
    width = max([len(f"{r['axis']}/{r['name']}") for r in result["cases"] + result["slices"]] + [10]) + 2
    cis = any(r["a_interval"] or r["b_interval"] for rows in result.values() for r in rows)

    def cells(a_cell: str, a_ci: str, b_cell: str, b_ci: str) -> str:
        return (f"{a_cell:>9}  {a_ci:<18}{b_cell:>9}  {b_ci:<18}" if cis else f"{a_cell:>9}{b_cell:>9}")

    lines = [f"A = {names[0]}", f"B = {names[1]}", "",
             f"{'case':<{width}}{cells('A', 'A 95 % CI', 'B', 'B 95 % CI')}{'B - A':>10}  verdict"]
    for rows in (result["cases"], *([result["slices"]] if result["slices"] else []), result["aggregates"]):
        for r in rows:
            row = cells(_fmt(r["a"]), interval_text(r["a_interval"]), _fmt(r["b"]), interval_text(r["b_interval"]))
            name = f"{r['axis']}/{r['name']}"
            lines.append(f"{name:<{width}}{row}{_fmt(r['delta'], signed=True):>10}  {r['verdict']}")
        lines.append("")
    if cis:
        lines += [INTERVAL_NOTE, ""]
    lines += _gate_changes(a, b)
    return lines


def compare_markdown(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str]) -> str:
    a, b, names = escaped(a), escaped(b), (escape(names[0]), escape(names[1]))
    result = compare(a, b)
    cis = any(r["a_interval"] or r["b_interval"] for rows in result.values() for r in rows)
    head = ("| case | A | A 95 % CI | B | B 95 % CI | B − A | verdict |", "|---|---:|---|---:|---|---:|---|") if cis \
        else ("| case | A | B | B − A | verdict |", "|---|---:|---:|---:|---|")
    out = ["# flexharness comparison", "", f"A = `{names[0]}`, B = `{names[1]}`", "", *head]
    for r in result["cases"] + result["slices"] + result["aggregates"]:
        verdict = f"**{r['verdict']}**" if r["verdict"] == "worse" else r["verdict"]
        a_cell = f"{_fmt(r['a'])} | {interval_text(r['a_interval'])}" if cis else _fmt(r["a"])
        b_cell = f"{_fmt(r['b'])} | {interval_text(r['b_interval'])}" if cis else _fmt(r["b"])
        out.append(f"| {r['axis']}/{r['name']} | {a_cell} | {b_cell} | {_fmt(r['delta'], True)} | {verdict} |")
    out += ["", f"_{INTERVAL_NOTE}_"] if cis else []
    changes = _gate_changes(a, b)
    return "\n".join(out + ([""] + [f"- {line}" for line in changes] if changes else [])) + "\n"


def _gate_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Gates whose verdict differs between the runs (matched on name and suite)."""
    before = {(g["suite"], g["name"]): g["passed"] for g in a.get("gates", [])}
    changes = []
    for g in b.get("gates", []):
        old = before.get((g["suite"], g["name"]))
        if old is not None and old != g["passed"]:
            changes.append(f"gate {g['suite']} {g['name']}: {'pass' if old else 'FAIL'} -> "
                           f"{'pass' if g['passed'] else 'FAIL'}")
    return changes
