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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from flexharness.axes import AXES, Scored
from flexharness.errors import SuiteError
from flexharness.harness.collect import RESULT_PROPERTY, plan, suite_models
from flexharness.harness.options import Options
from flexharness.results import predictions, significance, verdict
from flexharness.results.io import RESULTS_VERSION
from flexharness.rules import aggregate as agg
from flexharness.rules import calibration
from flexharness.rules.baseline import Baseline, to_json, tolerance_of
from flexharness.rules.metrics import METRICS
from flexharness.store.keys import case_fingerprint, suite_fingerprint
from flexharness.suite.spec import Planned, Suite


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
    baseline: Baseline | None = None
    outputs: Path | None = None        # the folder of the items' per-example outputs
    baseline_outputs: dict[Any, Any] = field(default_factory=dict)   # the baseline's, from beside its file
    planned: list[str] | None = None  # a shard's whole run (node ids before the cut), for merge
    _plans: dict[str, dict[str, tuple[Suite, Planned]]] = field(default_factory=dict)
    _outputs_memo: dict[str, Any] = field(default_factory=dict)
    _version: int = 0                                   # bumped by every report and every new item
    _memo: tuple[int, dict[str, Any]] | None = None

    def expect(self, nodeids: Iterable[str]) -> None:
        """Register the items this run will execute (after deselection)."""
        for nodeid in nodeids:
            file, sep, name = nodeid.partition("::")
            if not sep or not any(fnmatch.fnmatch(Path(file).name, p) for p in self.options.patterns):
                continue
            planned = self._plan(file).get(name)
            if planned and nodeid not in self.items:
                self.items[nodeid] = ItemState(planned[0], file, planned[1])
                self._version += 1

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
        self._version += 1
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
            for scored_name, split in zip(case.scored_names, case.dataset.eval_splits or (None,)):
                seeds = {str(s.planned.seed): _split_score(s, split, len(case.scored_names) > 1) for s in states}
                result.append((file, agg.CaseScore(case.suite, model, case.axis, scored_name,
                                                   case.higher_is_better, seeds), states))
        return result

    def compute_gates(self) -> list[agg.GateResult]:
        """A shard holds part of each axis: its gates are decided by ``flexharness merge``, not here."""
        self.document()
        return self.gates

    def suites(self) -> dict[str, tuple[str, Suite]]:
        return {s.suite.name: (s.file, s.suite) for s in self.items.values()}

    def gate_specs(self) -> dict[str, dict[str, Any]]:
        """Each suite's gates, the regression tolerance resolved (the command line wins over the suite)."""
        specs = {}
        for name, (_, suite) in self.suites().items():
            specs[name] = dict(suite.gates)
            if self.baseline:
                specs[name]["regression"] = tolerance_of(suite.gates.get("regression"),
                                                         self.options.tolerance).to_json()
        return specs

    def suite_file(self, suite_name: str) -> str:
        return next(s.file for s in self.items.values() if s.suite.name == suite_name)

    def document(self) -> dict[str, Any]:
        """The results JSON of the public contract; aggregates, intervals, axis sections and gates from
        ``verdict``. Rebuilt only when a report arrived since the last call: the bootstrap is not free."""
        if self._memo is not None and self._memo[0] == self._version:
            return self._memo[1]
        cases = self.case_scores()
        scored = [Scored(case, states[0].planned.case, _records(states)) for _, case, states in cases]
        sections: dict[str, list[dict[str, Any]]] = {}
        for axis in AXES:
            found = axis.sections([s for s in scored if s.case.axis == axis.key])
            sections |= {key: found.get(key, []) for key in axis.document_keys}
        doc = {
            "version": RESULTS_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": self._environment(),
            "cases": [_case_json(file, case, states) for file, case, states in cases],
            **sections, "aggregates": [], "gates": [],
            **self._run_json(),
        }
        gates = verdict.recompute(doc, AXES, self.case_outputs(), significance.Settings(
            resamples=self.options.bootstrap, correction=self.options.correction), self.baseline_outputs)
        if self.options.shard:
            doc["gates"], gates = [], []
        self.gates = gates
        self._memo = (self._version, doc)
        return doc

    def case_outputs(self) -> dict[significance.CaseKey, dict[str, dict[str, Any]]]:
        """Per (suite, model, axis, case): seed -> labels, outputs and the examples' digest, where stored."""
        found: dict[significance.CaseKey, dict[str, dict[str, Any]]] = {}
        for _, case, states in self.case_scores():
            split = case.name.partition(":")[2] or None
            for state in states:
                record = state.record or {}
                arrays = self._load_outputs(record.get("outputs"))
                name = split or record.get("eval_split")
                digest = ((record.get("splits") or {}).get(name) or {}).get("eval_digest")
                if arrays and name in arrays and digest:
                    found.setdefault((case.suite, case.model, case.axis, case.name), {})[str(state.planned.seed)] = {
                        **arrays[name], "digest": digest}
        return found

    def _load_outputs(self, name: Any) -> dict[str, dict[str, Any]] | None:
        if not isinstance(name, str) or self.outputs is None:
            return None
        if name not in self._outputs_memo:
            self._outputs_memo[name] = predictions.load(self.outputs, name)
        return self._outputs_memo[name]

    def outputs_entries(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The per-example outputs of this run's cases, for the file beside the results JSON."""
        return [({"suite": key[0], "model": key[1], "axis": key[2], "case": key[3], "seed": seed,
                  "digest": arrays["digest"]}, arrays)
                for key, seeds in self.case_outputs().items() for seed, arrays in seeds.items()]

    def _run_json(self) -> dict[str, Any]:
        """What a merge needs to redo aggregates and gates: suites with gate specs, the baseline, the shard."""
        specs = self.gate_specs()
        suites = [{"name": name, "file": file, "fingerprint": suite_fingerprint(suite.cases),
                   "cases": [scored for c in suite.cases for scored in c.scored_ids],
                   "models": list(suite_models(suite, self.options)), "gates": specs[name],
                   "slices": {scored: {"by": c.slices.by, "bins": c.slices.bins,
                                       **({"values": list(c.slices.values)} if c.slices.values else {}),
                                       **({"edges": list(c.slices.edges)} if c.slices.edges else {})}
                              for c in suite.cases if c.slices for scored in c.scored_ids},
                   **{key: value for axis in AXES
                      for key, value in axis.run_settings(self.options.axes.get(axis.key, {})).items()},
                   "items": sorted(nodeid for nodeid, state in self.items.items() if state.suite.name == name)}
                  for name, (file, suite) in self.suites().items()]
        shard = self.options.shard
        return {"suites": suites, "baseline": to_json(self.baseline) if self.baseline else None,
                "shard": {"index": shard[0], "count": shard[1], "planned": self.planned} if shard else None}

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
    status = next((s for s in ("error", "failed", "not run") if s in statuses), "passed")  # "not run": interrupted
    records = [s.record for s in states if s.record]
    split = case.name[len(planned.name) + 1:] if case.name != planned.name else None
    split_records = [r["splits"][split] for r in records] if split else records
    return {
        "id": f"{file}::{case.axis}/{case.name}", "suite": case.suite, "model": case.model, "axis": case.axis,
        "name": case.name, "kind": planned.kind, "metric": planned.metric, "higher_is_better": METRICS[planned.metrics[0]].higher_is_better,
        "seeds": dict(case.seed_scores), "score": case.score, "seed_std": case.seed_std, "status": status,
        "cached": bool(records) and all(r.get("cached", False) for r in records),
        "cached_items": sum(1 for r in records if r.get("cached")),
        "fingerprint": case_fingerprint(planned),
        "model_fingerprint": records[0].get("model_fingerprint") if records else None,
        "items": {s.planned.name: s.status for s in states},
        "metrics": _mean_metrics(split_records),
        "train_examples": records[0]["train_examples"] if records else None,
        "eval_examples": split_records[0]["eval_examples"] if records else None,
        "held_out_copies": records[0].get("held_out_copies") if records else None,
        "train_method": str(planned.train.method),  # full | lora | head, and the parameters it trained
        "trainable_params": records[0].get("trainable_params") if records else None,
        "total_params": records[0].get("total_params") if records else None,
        "pooling": records[0].get("pooling") if records else None,   # what the classification head read
        **calibration.mean_fields(split_records),
        "train_seconds": agg.mean(r.get("train_seconds") or 0.0 for r in records) if records else None,
        "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(planned.train).items()},
        "dataset": {"name": planned.dataset.name, "hub": dict(planned.dataset.hub)},
        "per_seed": _seed_runs(states, split),
        **AXES.get(case.axis).case_fields(planned, records),
    }


RUN_FIELDS = ("precision", "device", "train_seconds", "eval_seconds", "setup_seconds", "steps", "final_loss",
              "train_tokens", "cached", "energy_kwh", "energy_measured", "energy_source")


def _seed_runs(states: list[ItemState], split: str | None) -> dict[str, dict[str, Any]]:
    """Seed -> that item's own score, metrics and timing: tables and trackers show each run, not the mean."""
    runs = {}
    for state in states:
        record = state.record or {}
        scored = record["splits"][split] if split and record else record
        runs[str(state.planned.seed)] = {"status": state.status, "score": _finite(scored.get("score")),
                                         "metrics": dict(scored.get("metrics") or {}),
                                         **{key: record.get(key) for key in RUN_FIELDS}}
    return runs


def _records(states: list[ItemState]) -> dict[str, dict[str, Any] | None]:
    """Seed -> the item's record, None unless the item passed."""
    return {str(s.planned.seed): s.record if s.status == "passed" else None for s in states}


def _split_score(state: ItemState, split: str | None, per_split: bool) -> float | None:
    """The item's score for one evaluation split (its only one unless the case has several)."""
    if state.status != "passed" or not state.record:
        return None
    record = state.record["splits"][split] if per_split else state.record
    return _finite(record.get("score"))


def _finite(value: Any) -> float | None:
    """A score JSON can hold: NaN and infinities mean 'no score'."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _mean_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    names = records[0]["metrics"] if records else {}
    return {name: agg.mean(r["metrics"][name] for r in records) for name in names}
