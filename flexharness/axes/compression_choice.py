"""Choosing a compression on the controller: frontiers of score against cost, and ``choose: {retention: X}``.

Per (suite, model): the dense model and every compression method as points of the compressed score against
size (MB), parameters and measured latency (``engine.latency``: median per example on one fixed batch),
each score with its paired-bootstrap retention interval and each latency with its quartiles; the Pareto
frontier of each (``rules.frontier.pareto``). With ``choose``, the cheapest method (by ``by``) whose
one-sided lower bound of retention keeps the target is the choice, and a gate says whether one did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from flexharness.files import output_name
from flexharness.names import model_label, model_labels
from flexharness.results import plots
from flexharness.rules.aggregate import GateResult
from flexharness.rules.frontier import Point, cheapest_keeping, lower_bound, mean_quantiles, p_below, pareto
from flexharness.suite.schema import Reader, open_fraction, positive

DOCUMENT_KEYS = ("compression_frontier", "compression_choice")
COSTS = ("size_mb", "params", "latency_ms")
CHOOSE_KEYS = ("retention", "by", "confidence")
DENSE = "dense"


def read_choose(reader: Reader) -> tuple[tuple[str, Any], ...] | None:
    """``choose: {retention: 0.97, by: size_mb, confidence: 0.95}`` (``by`` one of ``COSTS``); None without."""
    if not reader.has("choose"):
        return None
    entry = reader.child("choose")
    entry.only(CHOOSE_KEYS)
    target = entry.typed("retention", float, required=True, check=positive)
    by = entry.typed("by", str, "size_mb", check=lambda v: None if v in COSTS else
                     f"expected one of {', '.join(COSTS)}, got {v!r}")
    confidence = entry.typed("confidence", float, 0.95, check=open_fraction)
    return (("retention", target), ("by", by), ("confidence", confidence))


def case_fields(choose: Mapping[str, Any] | None, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Retention percentiles (mean over seeds), its interval and lower bound, measured latency, the choice asked."""
    quantiles = mean_quantiles([r.get("retention_quantiles") or [] for r in records])
    confidence = (choose or {}).get("confidence", 0.95)
    timings = [r["latency"] for r in records if isinstance(r.get("latency"), dict)]
    dense = [r["dense_latency"] for r in records if isinstance(r.get("dense_latency"), dict) and r["dense_latency"]]
    return {"retention_quantiles": quantiles,
            "retention_interval": [lower_bound(quantiles, 0.975), lower_bound(quantiles, 0.025)] if quantiles else None,
            "retention_lower": lower_bound(quantiles, confidence) if quantiles else None,
            "latency": _timing(timings), "dense_latency": _timing(dense), "choose": dict(choose) if choose else None}


def _timing(timings: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    if not timings:
        return None
    def avg(key: str) -> float:
        return sum(t[key] for t in timings) / len(timings)
    return {"median_ms": avg("median_ms"), "q1_ms": avg("q1_ms"), "q3_ms": avg("q3_ms"), "batch": timings[0]["batch"],
            "repeats": timings[0]["repeats"], "warmup": timings[0]["warmup"],
            "loaded": any(t["loaded"] for t in timings), "load_1min": max(t["load_1min"] for t in timings),
            "cores": timings[0]["cores"]}


def _groups(doc: Mapping[str, Any]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in doc["cases"]:
        if c["axis"] == "compression" and c.get("compressed_score") is not None:
            groups.setdefault((c["suite"], c["model"]), []).append(c)
    return groups


def _points(cases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The dense model (from the cases' dense fields) and every method, with their costs and intervals."""
    first = cases[0]
    dense_latency = first.get("dense_latency") or {}
    points = [{"name": DENSE, "score": first["dense_score"], "retention": 1.0, "retention_interval": [1.0, 1.0],
               "size_mb": first.get("dense_size_mb"), "params": first.get("dense_params"),
               "latency_ms": dense_latency.get("median_ms"), "latency_iqr": _iqr(dense_latency)}]
    points += [{"name": c["name"], "score": c["compressed_score"], "retention": c.get("retention"),
                "retention_interval": c.get("retention_interval"), "size_mb": c.get("size_mb"),
                "params": c.get("params"), "latency_ms": (c.get("latency") or {}).get("median_ms"),
                "latency_iqr": _iqr(c.get("latency") or {})} for c in cases]
    return points


def _iqr(timing: Mapping[str, Any]) -> list[float] | None:
    return [timing["q1_ms"], timing["q3_ms"]] if timing else None


def frontiers(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per (suite, model): the points and, per cost, the names on the Pareto frontier (cheapest first)."""
    result = []
    for (suite, model), cases in _groups(doc).items():
        points = _points(cases)
        fronts = {cost: pareto([Point(p["name"], p["score"], p[cost]) for p in points if p[cost] is not None])
                  for cost in COSTS}
        loaded = any((c.get("latency") or {}).get("loaded") for c in cases)
        result.append({"suite": suite, "model": model, "points": points, "frontier": fronts, "latency_loaded": loaded})
    return result


def choices(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per (suite, model) with ``choose``: the cheapest method on the frontier of its cost whose retention lower
    bound keeps the target (a method off the frontier is never the choice: another scores as well for less)."""
    fronts = {(f["suite"], f["model"]): f["frontier"] for f in frontiers(doc)}
    result = []
    for (suite, model), cases in _groups(doc).items():
        choose = next((c["choose"] for c in cases if c.get("choose")), None)
        if not choose:
            continue
        by, target = choose["by"], choose["retention"]
        known = {c["name"]: c for c in cases if c.get(_cost_key(by)) is not None and c.get("retention_lower") is not None}
        on_front = set(fronts[(suite, model)][by])
        picked = cheapest_keeping({n: (_cost(c, by), c["retention_lower"]) for n, c in known.items()
                                   if n in on_front}, target)
        result.append({"suite": suite, "model": model, "retention": target, "by": by,
                       "confidence": choose["confidence"], "chosen": picked,
                       "candidates": [{"name": n, "cost": _cost(c, by), "retention": c.get("retention"),
                                       "retention_lower": c["retention_lower"],
                                       "p_below_target": p_below(c["retention_quantiles"], target),
                                       "keeps": c["retention_lower"] >= target, "on_frontier": n in on_front}
                                      for n, c in known.items()]})
    return result


def _cost_key(by: str) -> str:
    return "latency" if by == "latency_ms" else by


def _cost(case: Mapping[str, Any], by: str) -> float:
    return case["latency"]["median_ms"] if by == "latency_ms" else case[by]


def gates(doc: Mapping[str, Any]) -> list[GateResult]:
    """One gate per choice: passed when some method keeps the target."""
    out = []
    for c in doc.get("compression_choice") or []:
        name = f"compression choose retention >= {c['retention']:g} ({model_label(c['model'])})"
        chosen = next((x for x in c["candidates"] if x["name"] == c["chosen"]), None)
        message = (f"{c['chosen']}: cheapest by {c['by']} whose {c['confidence']:.0%} lower bound of retention "
                   f"{chosen['retention_lower']:.4f} keeps {c['retention']:g}" if chosen else
                   f"no method's {c['confidence']:.0%} lower bound of retention keeps {c['retention']:g}"
                   if c["candidates"] else "incomplete: no method has a retention interval")
        out.append(GateResult(name, chosen is not None, chosen["retention_lower"] if chosen else None,
                              c["retention"], message, suite=c["suite"], model=c["model"]))
    return out


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def lines(doc: Mapping[str, Any]) -> list[str]:
    out = []
    for f in doc.get("compression_frontier") or []:
        loaded = " (machine loaded while timing: latencies suspect)" if f["latency_loaded"] else ""
        out.append(f"compression frontier [{model_label(f['model'])}]{loaded}: "
                   + "; ".join(f"{cost}: {' < '.join(names)}" for cost, names in f["frontier"].items()))
    for c in doc.get("compression_choice") or []:
        ranked = ", ".join(f"{x['name']} {_num(x['retention_lower'], '.4f')} (p {_num(x['p_below_target'], '.2f')})"
                           for x in sorted(c["candidates"], key=lambda x: (x["cost"], x["name"])))
        out.append(f"compression choice [{model_label(c['model'])}] retention >= {c['retention']:g} at "
                   f"{c['confidence']:.0%} by {c['by']}: {c['chosen'] or 'none keeps it'} (lower bounds, cheapest "
                   f"first: {ranked})")
    return ([""] + out) if out else []


def plot(doc: Mapping[str, Any], directory: Path) -> list[Path]:
    """Per model: score against size and against latency, the frontier drawn, retention intervals as bars."""
    written = []
    labels = model_labels(c["model"] for c in doc["cases"])
    for f in doc.get("compression_frontier") or []:
        plt = plots.pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, cost, label in ((axes[0], "size_mb", "size (MB)"), (axes[1], "latency_ms", "latency (ms/example)")):
            _draw(ax, f, cost)
            ax.set_xlabel(label)
            ax.set_ylabel("score (task metric)")
        fig.suptitle(f"compression frontier: {model_label(f['model'])}")
        label = labels.get(f["model"], model_label(f["model"]))
        path = directory / output_name("compression-frontier", label)  # beside compression-MODEL.png
        written.append(plots.save_laid_out(fig, path))
    return written


def _draw(ax: Any, f: Mapping[str, Any], cost: str) -> None:
    dense = f["points"][0]["score"]
    for p in f["points"]:
        if p[cost] is None:
            continue
        low, high = p["retention_interval"] or [p["retention"], p["retention"]]
        error = [[dense * (p["retention"] - low)], [dense * (high - p["retention"])]] if low is not None else None
        ax.errorbar(p[cost], p["score"], yerr=error, fmt="o", color="tab:blue", capsize=3)
        ax.annotate(p["name"], (p[cost], p["score"]), textcoords="offset points", xytext=(4, 4), fontsize="small")
    front = [next(p for p in f["points"] if p["name"] == n) for n in f["frontier"][cost]]
    ax.plot([p[cost] for p in front], [p["score"] for p in front], color="tab:red", label="Pareto frontier")
    ax.legend(loc="lower right")
