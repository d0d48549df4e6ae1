"""The controller's state: which items the run holds, what their reports said, what the gates decide.

It learns about items only from node ids (collection) and test reports, so a
plain run and a pytest-xdist run take the same path. It reloads each suite
file named by the node ids to know cases and gates: suites are plain data and
parse in milliseconds.
"""

from __future__ import annotations

import datetime
import fnmatch
import importlib.metadata
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from flexharness import aggregate as agg
from flexharness.collect import RESULT_PROPERTY, plan
from flexharness.compress import case_fields as compression_fields
from flexharness.errors import SuiteError
from flexharness.metrics import METRICS
from flexharness.options import Options
from flexharness.suite import Planned, Suite

RESULTS_VERSION = 1


@dataclass
class ItemState:
    suite: Suite
    file: str
    planned: Planned
    status: str = "not run"
    record: dict[str, Any] | None = None


@dataclass
class Controller:
    """Results in (from reports), aggregates, gates and the results document out."""

    rootpath: Path
    options: Options
    items: dict[str, ItemState] = field(default_factory=dict)
    gates: list[agg.GateResult] = field(default_factory=list)
    _plans: dict[str, dict[str, tuple[Suite, Planned]]] = field(default_factory=dict)

    def expect(self, nodeids: Iterable[str]) -> None:
        """Register the items this run will execute (after deselection)."""
        for nodeid in nodeids:
            file, sep, name = nodeid.partition("::")
            if not sep or not any(fnmatch.fnmatch(Path(file).name, p) for p in self.options.patterns):
                continue
            planned = self._plan(file).get(name)
            if planned and nodeid not in self.items:
                self.items[nodeid] = ItemState(planned[0], file, planned[1])

    def _plan(self, file: str) -> dict[str, tuple[Suite, Planned]]:
        if file not in self._plans:
            try:
                suite, planned = plan(self.rootpath / file, self.options)
            except SuiteError:
                planned, suite = [], None
            self._plans[file] = {p.name: (suite, p) for p in planned}
        return self._plans[file]

    def record(self, report: Any) -> None:
        state = self.items.get(report.nodeid)
        if state is None:
            return
        if report.when == "call":
            state.status = report.outcome
            raw = dict(report.user_properties).get(RESULT_PROPERTY)
            state.record = json.loads(raw) if raw else None
        elif report.failed:
            state.status, state.record = "error", None
        elif report.skipped and report.when == "setup":
            state.status = "skipped"

    def case_scores(self) -> list[tuple[str, agg.CaseScore, list[ItemState]]]:
        """One CaseScore per (suite, model, case) with the items behind it; skipped items are left out."""
        groups: dict[tuple, list[ItemState]] = {}
        for state in self.items.values():
            if state.status == "skipped":
                continue
            case = state.planned.case
            groups.setdefault((state.file, state.planned.model, case.axis, case.name), []).append(state)
        result = []
        for (file, model, _, _), states in groups.items():
            case = states[0].planned.case
            seeds = {str(s.planned.seed): _finite((s.record or {}).get("score")) if s.status == "passed" else None
                     for s in states}
            result.append((file, agg.CaseScore(case.suite, model, case.axis, case.name,
                                               case.higher_is_better, seeds), states))
        return result

    def compute_gates(self) -> list[agg.GateResult]:
        cases = self.case_scores()
        aggregates = agg.aggregate(c for _, c, _ in cases)
        suites = {c.suite: states[0].suite for _, c, states in cases}
        gates = []
        for summary in aggregates:
            spec = suites[summary.suite].gates.get(summary.axis)
            if spec:
                gates.extend(agg.axis_gates(summary, spec))
        for (suite_name, model) in dict.fromkeys((c.suite, c.model) for _, c, _ in cases):
            threshold = suites[suite_name].gates.get("case_min")
            if threshold is not None:
                members = [c for _, c, _ in cases if c.suite == suite_name and c.model == model]
                gates.append(agg.case_min_gate(members, threshold, suite_name, model))
        self.gates = gates
        return gates

    def suite_file(self, suite_name: str) -> str:
        return next(s.file for s in self.items.values() if s.suite.name == suite_name)

    def document(self) -> dict[str, Any]:
        """The results JSON of the public contract."""
        cases = self.case_scores()
        aggregates = agg.aggregate(c for _, c, _ in cases)
        return {
            "version": RESULTS_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": self._environment(),
            "cases": [_case_json(file, case, states) for file, case, states in cases],
            "transfer": [],
            "aggregates": [{"suite": a.suite, "model": a.model, "axis": a.axis, "n": a.n, "missing": a.missing,
                            "p_avg": a.p_avg, "sigma_p": a.sigma_p, "mean_seed_std": a.mean_seed_std,
                            "higher_is_better": a.higher_is_better} for a in aggregates],
            "gates": [{"name": g.name, "suite": g.suite, "model": g.model, "passed": g.passed, "value": g.value,
                       "threshold": g.threshold, "message": g.message} for g in self.gates],
        }

    def _environment(self) -> dict[str, Any]:
        versions = {}
        for package in ("flexharness", "torch", "transformers", "datasets", "pytest"):
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                versions[package] = None
        devices = sorted({s.record["device"] for s in self.items.values() if s.record})
        return {"python": platform.python_version(), "platform": platform.platform(), **versions,
                "devices": devices, "device_option": self.options.device}


def _case_json(file: str, case: agg.CaseScore, states: list[ItemState]) -> dict[str, Any]:
    planned = states[0].planned.case
    statuses = {s.status for s in states}
    status = "error" if "error" in statuses else "failed" if statuses - {"passed"} else "passed"
    records = [s.record for s in states if s.record]
    return {
        "id": f"{file}::{case.axis}/{case.name}", "suite": case.suite, "model": case.model, "axis": case.axis,
        "name": case.name, "metric": planned.metric, "higher_is_better": METRICS[planned.metrics[0]].higher_is_better,
        "seeds": dict(case.seed_scores), "score": case.score, "seed_std": case.seed_std, "status": status,
        "cached": bool(records) and all(r.get("cached", False) for r in records),
        "items": {s.planned.name: s.status for s in states},
        "metrics": _mean_metrics(records),
        "train_examples": records[0]["train_examples"] if records else None,
        "eval_examples": records[0]["eval_examples"] if records else None,
        **(compression_fields(planned, records) if case.axis == "compression" else {}),
    }


def _finite(value: Any) -> float | None:
    """A score JSON can hold: NaN and infinities mean 'no score'."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _mean_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    names = records[0]["metrics"] if records else {}
    return {name: agg.mean(r["metrics"][name] for r in records) for name in names}
