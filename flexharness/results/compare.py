"""Reading results side by side: models ranked per axis, and two runs compared case by case.

Plain functions of results documents (the ``--flex-json`` contract), shared by
the terminal summary, the Markdown report and the ``flexharness`` command.
"""

from __future__ import annotations

from typing import Any, Mapping

from flexharness.names import model_label
from flexharness.results import decide, table
from flexharness.results.slice_report import compare_entries
from flexharness.results.table import Table
from flexharness.rules import stats


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


def ranking_tables(doc: Mapping[str, Any]) -> list[Table]:
    """One table per (suite, axis) with several models: rank (a range where tests tie), P_avg, σ_P, win rate."""
    found = []
    for group in ranking(doc):
        how = "rank ranges from paired tests" if group["tied_by_test"] else "by P_avg"
        rows = tuple((f"{row['rank_label']}." if row["rank"] else None, model_label(row["model"]), row["p_avg"],
                      row["sigma_p"], row["win_rate"], f"{row['n'] - row['missing']}/{row['n']}")
                     for row in group["models"])
        found.append(Table(f"ranking: {group['suite']} / {group['axis']} ({how}, σ_P and win rate beside it)",
                           ("rank", "model", "P_avg", "σ_P", "win rate", "cases"), rows, text=("rank", "model"),
                           formats={"P_avg": ".4f", "σ_P": ".4f", "win rate": ".2f"},
                           heading=f"Ranking: {group['suite']} / {group['axis']}"))
    return found


def ranking_lines(doc: Mapping[str, Any]) -> list[str]:
    return table.terminal_lines(ranking_tables(doc))


def ranking_markdown(doc: Mapping[str, Any]) -> list[str]:
    return table.markdown_lines(ranking_tables(doc))


COMPARISON_COLUMNS = ("case", "B − A", "difference", "95 % CI", "p", "p adjusted", "test", "MDE", "verdict")


def comparison_tables(doc: Mapping[str, Any]) -> list[Table]:
    """Paired differences between models on the same examples (docs/statistics.md)."""
    found = doc.get("comparisons") or []
    if not found:
        return []
    correction = {"holm": "Holm", "bh": "Benjamini–Hochberg"}.get(found[0].get("correction"), "Holm")
    rows = tuple((f"{c['axis']}/{c['case']}" if c["case"] != "P_avg" else f"{c['axis']} P_avg",
                  f"{model_label(c['model_b'])} − {model_label(c['model_a'])}", c["difference"],
                  f"[{c['low']:+.4f}, {c['high']:+.4f}]", c["p_value"], c["p_adjusted"], c["test"], c["mde"],
                  "significant" if c["p_adjusted"] < 0.05 else "not significant") for c in found)
    return [Table(f"model comparisons (paired on the same examples; p adjusted with {correction} per suite and axis)",
                  COMPARISON_COLUMNS, rows, text=("case", "B − A", "95 % CI", "test", "verdict"),
                  formats={"difference": "+.4f", "p": ".4g", "p adjusted": ".4g", "MDE": ".4f"},
                  heading="Model comparisons (paired)")]


def comparison_lines(doc: Mapping[str, Any]) -> list[str]:
    return table.terminal_lines(comparison_tables(doc))


def comparison_markdown(doc: Mapping[str, Any]) -> list[str]:
    return table.markdown_lines(comparison_tables(doc))


def _single_model(doc: Mapping[str, Any]) -> bool:
    models: dict[str, set[str]] = {}
    for case in doc["cases"]:
        models.setdefault(case["suite"], set()).add(case["model"])
    return all(len(found) <= 1 for found in models.values())


def compare(a: Mapping[str, Any], b: Mapping[str, Any], outputs: tuple[decide.Outputs, decide.Outputs] | None = None
            ) -> dict[str, list[dict[str, Any]]]:
    """Cases, their difficulty slices (``CASE[SLICE]``) and aggregates of two runs matched up, with B − A and
    whether B is better, worse or not distinguishable (``results.decide``; ``outputs``: each run's per-example
    outputs, for paired tests).

    Rows match on suite, axis and case name, and on the model too unless each
    run evaluated one model per suite (then comparing two models is the point).
    """
    by_model = not (_single_model(a) and _single_model(b))

    def key(row: Mapping[str, Any], name: str) -> tuple:
        return (row["suite"], row["model"] if by_model else "", row["axis"], row.get(name, ""))

    result = {"cases": _pair(a["cases"], b["cases"], lambda r: key(r, "name"), "score", "interval"),
              "slices": _pair(compare_entries(a), compare_entries(b), lambda r: key(r, "name"), "score", "interval"),
              "aggregates": _pair(a["aggregates"], b["aggregates"], lambda r: key(r, "axis"), "p_avg",
                                  "p_avg_interval")}
    found = (decide.measured(a, outputs[0]), decide.measured(b, outputs[1])) if outputs else ({}, {})
    for rows in result.values():
        decide.decide(rows, *found)
    return result


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


INTERVAL_NOTE = ("95 % CI: each run's own bootstrap interval. Verdict: a paired bootstrap test (p < 0.05) where "
                 "both runs stored outputs for the same examples, else non-overlapping intervals; "
                 "'(untested)' marks a point estimate alone.")


def compare_table(a: Mapping[str, Any], b: Mapping[str, Any],
                  outputs: tuple[decide.Outputs, decide.Outputs] | None = None) -> Table:
    """Both runs side by side, cases, slices and aggregates; each side's 95 % interval where the results have one;
    the verdict from a paired test on the stored outputs, else from the intervals."""
    result = compare(a, b, outputs)
    cis = any(r["a_interval"] or r["b_interval"] for rows in result.values() for r in rows)
    columns = ("case", "A", "A 95 % CI", "B", "B 95 % CI", "B − A", "verdict") if cis else \
        ("case", "A", "B", "B − A", "verdict")
    rows = tuple((f"{r['axis']}/{r['name']}", r["a"], *((interval_text(r["a_interval"]),) if cis else ()), r["b"],
                  *((interval_text(r["b_interval"]),) if cis else ()), r["delta"], r["verdict"] + _test(r))
                 for r in result["cases"] + result["slices"] + result["aggregates"])
    return Table("", columns, rows, text=("case", "A 95 % CI", "B 95 % CI", "verdict"),
                 formats={"A": ".4f", "B": ".4f", "B − A": "+.4f"}, notes=(INTERVAL_NOTE,) if cis else ())


def compare_lines(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str],
                  outputs: tuple[decide.Outputs, decide.Outputs] | None = None) -> list[str]:
    """The comparison table for the terminal, after the two files' names; then the gates that changed."""
    changes = _gate_changes(a, b)
    return [f"A = {names[0]}", f"B = {names[1]}", *table.terminal_lines([compare_table(a, b, outputs)]),
            *([""] + changes if changes else [])]


def _test(row: Mapping[str, Any]) -> str:
    """How the verdict was reached: the paired test's p-value, or the intervals."""
    if row.get("test") == "paired bootstrap":
        return f" (paired, p = {row['p_value']:.3g})"
    return " (intervals)" if row.get("test") == "intervals" else ""


def compare_markdown(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str],
                     outputs: tuple[decide.Outputs, decide.Outputs] | None = None) -> str:
    changes = _gate_changes(a, b)
    out = ["# flexharness comparison", "", f"A = `{names[0]}`, B = `{names[1]}`",
           *table.markdown_lines([compare_table(a, b, outputs)])]
    return "\n".join(out + ([""] + [f"- {table.escape(line)}" for line in changes] if changes else [])) + "\n"


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
