"""The transfer matrix of the domains axis, on the controller: source × target scores,
in-domain and cross-domain means, the transfer gap and its gate.

Pure functions (no pytest, no torch). Item records become raw per-seed entries
(:func:`raw_sections`); the matrix is then built from the results document
alone (:func:`from_document`), so a pytest run and ``flexharness merge`` take
the same path. The diagonal is the in-domain case score itself; an
off-diagonal entry is the mean over seeds of the source items' cross-domain
scores. The gap is in-domain mean minus cross-domain mean, turned round for
lower-is-better metrics so that a positive gap is always a loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from flexharness.files import output_name
from flexharness.names import model_label, model_labels
from flexharness.results import plots as plotting
from flexharness.results.table import Table
from flexharness.rules.aggregate import GateResult, mean
from flexharness.axes.base import Scored

TARGETS = "transfer_targets"   # Case.params key: every domain of the section, in suite order
GAP_GATE = "domains/transfer_gap.max"
Seeds = Mapping[str, "float | None"]   # seed → score; None where the item has no score


@dataclass(frozen=True)
class Matrix:
    """One (suite, model)'s transfer matrix; rows are the source domains that ran."""

    suite: str
    model: str
    metric: str
    higher_is_better: bool
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    scores: Mapping[tuple[str, str], float | None]
    seeds: Mapping[tuple[str, str], Mapping[str, float | None]]
    sizes: Mapping[str, Mapping[str, int | None]]

    def _values(self, diagonal: bool) -> list[float | None]:
        return [v for (s, t), v in self.scores.items() if (s == t) == diagonal]

    @property
    def missing(self) -> int:
        return sum(v is None for v in self.scores.values())

    @property
    def in_domain(self) -> float | None:
        values = self._values(True)
        return mean(values) if values and None not in values else None

    @property
    def cross_domain(self) -> float | None:
        values = self._values(False)
        return mean(values) if values and None not in values else None

    @property
    def gap(self) -> float | None:
        if self.in_domain is None or self.cross_domain is None:
            return None
        loss = self.in_domain - self.cross_domain
        return loss if self.higher_is_better else -loss


def sections(scored: Iterable[Scored]) -> dict[str, list[dict[str, Any]]]:
    """Per-seed cross-domain scores and per-(suite, model) heads from the records of the sections with transfer.

    ``transfer`` holds one entry per (source, other target) with its seeds; ``transfer_summary``
    one head per (suite, model) naming the targets, the metric and the domains' sizes.
    :func:`from_document` turns them into matrices.
    """
    groups: dict[tuple[str, str], list[Scored]] = {}
    for member in scored:
        if dict(member.spec.params).get(TARGETS):
            groups.setdefault((member.case.suite, member.case.model), []).append(member)
    cross, heads = [], []
    for (suite, model), members in groups.items():
        targets = tuple(d.name for d in dict(members[0].spec.params)[TARGETS])
        sizes: dict[str, dict[str, int | None]] = {t: {"train": None, "eval": None} for t in targets}
        for member in members:
            source, records = member.case.name, member.records
            cross += [{"suite": suite, "model": model, "source": source, "target": target, "in_domain": False,
                       "seeds": {seed: _finite(((r or {}).get("transfer") or {}).get(target))
                                 for seed, r in records.items()}}
                      for target in targets if target != source]
            _note_sizes(sizes, source, [r for r in records.values() if r])
        heads.append({"suite": suite, "model": model, "metric": members[0].spec.metric,
                      "higher_is_better": members[0].case.higher_is_better, "targets": list(targets),
                      "domains": sizes})
    return {"transfer": cross, "transfer_summary": heads}


def finish(doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """The ``transfer`` and ``transfer_summary`` lists rebuilt from the document, and the gap gates."""
    found = from_document(doc)
    doc["transfer"], doc["transfer_summary"] = entries(found), summaries(found)
    return gap_gates(found, gate_specs)


def from_document(doc: Mapping[str, Any]) -> list[Matrix]:
    """The matrices of a merged results document: the files' per-seed entries joined, the diagonal
    taken from the merged cases, so N shards give the matrix of one run."""
    cross: dict[tuple[str, str], dict[tuple[str, str], dict[str, float | None]]] = {}
    for e in doc.get("transfer", []):
        if not e["in_domain"]:
            cross.setdefault((e["suite"], e["model"]), {}).setdefault((e["source"], e["target"]), {}).update(e["seeds"])
    heads: dict[tuple[str, str], dict[str, Any]] = {}
    for summary in doc.get("transfer_summary", []):
        head = heads.setdefault((summary["suite"], summary["model"]), {**summary, "domains": {}})
        for name, size in summary["domains"].items():
            known = head["domains"].setdefault(name, {"train": None, "eval": None})
            head["domains"][name] = {k: known[k] if known[k] is not None else size[k] for k in known}
    result = []
    for (suite, model), head in heads.items():
        diagonal = {c["name"]: c["seeds"] for c in doc["cases"]
                    if c["axis"] == "domains" and c["suite"] == suite and c["model"] == model}
        result.append(_assemble(suite, model, head["metric"], head["higher_is_better"], tuple(head["targets"]),
                                diagonal, cross.get((suite, model), {}), head["domains"]))
    return result


def _assemble(suite: str, model: str, metric: str, higher_is_better: bool, targets: tuple[str, ...],
              diagonal: Mapping[str, Seeds], cross: Mapping[tuple[str, str], Seeds],
              sizes: Mapping[str, Mapping[str, int | None]]) -> Matrix:
    """Rows for the sources that ran, in suite order; an entry is the mean over its seeds, None if one is missing."""
    sources = tuple(t for t in targets if t in diagonal)
    seeds = {(s, t): dict(diagonal[s] if s == t else cross.get((s, t)) or {k: None for k in diagonal[s]})
             for s in sources for t in targets}
    scores = {key: mean(v.values()) if v and None not in v.values() else None for key, v in seeds.items()}
    return Matrix(suite, model, metric, higher_is_better, sources, targets, scores, seeds, sizes)


def _note_sizes(sizes: dict[str, dict[str, int | None]], source: str, records: list[dict[str, Any]]) -> None:
    """Per-domain example counts, from the source's own record and what other domains saw of it."""
    if not records:
        return
    sizes[source] = {"train": records[0].get("train_examples"), "eval": records[0].get("eval_examples")}
    for target, n in (records[0].get("transfer_eval_examples") or {}).items():
        if sizes[target]["eval"] is None:
            sizes[target]["eval"] = n


def _finite(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def gap_gates(found: list[Matrix], gates_of: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """``gates: {domains: {transfer_gap: {max: X}}}`` for each (suite, model); incomplete when scores are missing."""
    results = []
    for m in found:
        threshold = (gates_of.get(m.suite, {}).get("domains") or {}).get("transfer_gap", {}).get("max")
        if threshold is None:
            continue
        if m.gap is None:
            message = (f"incomplete: {m.missing} of {len(m.scores)} transfer scores are missing; "
                       "transfer_gap cannot be computed")
            results.append(GateResult(GAP_GATE, False, None, threshold, message, m.suite, m.model))
            continue
        passed = m.gap <= threshold
        message = (f"transfer_gap = {m.gap:.4f} (in-domain {m.in_domain:.4f}, cross-domain {m.cross_domain:.4f}), "
                   f"required <= {threshold:g}: {'ok' if passed else 'FAILED'}")
        results.append(GateResult(GAP_GATE, passed, m.gap, threshold, message, m.suite, m.model))
    return results


def entries(found: list[Matrix]) -> list[dict[str, Any]]:
    """The results JSON ``transfer`` list: every (suite, model, source, target) with its mean score."""
    return [{"suite": m.suite, "model": m.model, "source": s, "target": t, "score": m.scores[(s, t)],
             "in_domain": s == t, "seeds": dict(m.seeds[(s, t)])}
            for m in found for s in m.sources for t in m.targets]


def summaries(found: list[Matrix]) -> list[dict[str, Any]]:
    """The results JSON ``transfer_summary`` list: means, gap and domain sizes per (suite, model)."""
    return [{"suite": m.suite, "model": m.model, "metric": m.metric, "higher_is_better": m.higher_is_better,
             "sources": list(m.sources), "targets": list(m.targets), "in_domain": m.in_domain,
             "cross_domain": m.cross_domain, "transfer_gap": m.gap, "missing": m.missing,
             "domains": {t: dict(m.sizes[t]) for t in m.targets}} for m in found]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _count(value: int | None) -> str | None:
    """A size in a score column: written as text, so the column's ``.4f`` does not make it ``400.0000``."""
    return None if value is None else str(value)


def tables(doc: Mapping[str, Any]) -> list[Table]:
    """One transfer matrix per (suite, model): a row per source with its training size, a row of eval sizes."""
    return [_matrix_table(doc, summary) for summary in doc.get("transfer_summary", [])]


def _matrix_table(doc: Mapping[str, Any], summary: Mapping[str, Any]) -> Table:
    scores = {(e["source"], e["target"]): e["score"] for e in doc["transfer"]
              if e["suite"] == summary["suite"] and e["model"] == summary["model"]}
    sizes, targets = summary["domains"], summary["targets"]
    rows = [(s, *(f"[{_fmt(scores[(s, t)])}]" if s == t else scores[(s, t)] for t in targets), sizes[s]["train"])
            for s in summary["sources"]]
    rows.append(("eval n", *(_count(sizes[t]["eval"]) for t in targets), ""))
    direction = "" if summary["higher_is_better"] else ", lower is better"
    name = f"{summary['suite']} [{model_label(summary['model'])}], {summary['metric']}"
    return Table(f"transfer matrix: {name} (rows: fine-tuned on, columns: scored on, [diagonal] = in-domain)",
                 ("fine-tuned on \\ scored on", *targets, "train n"), tuple(rows),
                 text=("fine-tuned on \\ scored on",), formats=dict.fromkeys(targets, ".4f"),
                 heading=f"Transfer: {name}",
                 notes=(f"in-domain mean {_fmt(summary['in_domain'])}, cross-domain mean "
                        f"{_fmt(summary['cross_domain'])}, transfer gap {_fmt(summary['transfer_gap'])} "
                        f"(positive = lost off-domain{direction})",))


def plots(doc: Mapping[str, Any], directory: Path) -> list[Path]:
    """One PNG per (suite, model) transfer matrix."""
    labels = model_labels(c["model"] for c in doc["cases"])
    return [_heatmap(doc, s, directory / output_name("transfer", s["suite"], labels.get(s["model"], s["model"])))
            for s in doc.get("transfer_summary", [])]


def _heatmap(doc: Mapping[str, Any], summary: Mapping[str, Any], path: Path) -> Path:
    """One model's transfer matrix: rows fine-tuned on, columns scored on; missing scores left blank."""
    import numpy as np

    plt = plotting.pyplot()
    sources, targets = summary["sources"], summary["targets"]
    scores = {(e["source"], e["target"]): e["score"] for e in doc["transfer"]
              if e["suite"] == summary["suite"] and e["model"] == summary["model"]}
    grid = np.array([[np.nan if scores[(s, t)] is None else scores[(s, t)] for t in targets] for s in sources])
    fig, ax = plt.subplots(figsize=(1.1 * len(targets) + 3, 0.8 * len(sources) + 2))
    image = ax.imshow(grid, cmap="viridis" if summary["higher_is_better"] else "viridis_r")
    for (row, col), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(col, row, f"{value:.3f}", ha="center", va="center", color="white", fontsize=9,
                    fontweight="bold" if sources[row] == targets[col] else "normal")
    ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("scored on (target domain)")
    ax.set_ylabel("fine-tuned on (source)")
    gap = summary["transfer_gap"]
    ax.set_title(f"{model_label(summary['model'])}: {summary['metric']}, transfer gap "
                 f"{'-' if gap is None else f'{gap:.3f}'}", fontsize=10)
    fig.colorbar(image, ax=ax)
    return plotting.save_laid_out(fig, path)
