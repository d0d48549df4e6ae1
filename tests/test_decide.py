"""flexharness compare decides better / worse / not distinguishable from paired tests on the stored outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from flexharness.cli import main
from flexharness.results import predictions
from flexharness.results.compare import compare
from flexharness.rules import stats


def _run(model: str, labels: np.ndarray, predicted: np.ndarray) -> tuple[dict, dict]:
    probs = np.eye(2, dtype=np.float32)[predicted]
    score = float((predicted == labels).mean())
    case = {"id": "x", "suite": "s", "model": model, "axis": "tasks", "name": "t", "metric": "accuracy",
            "higher_is_better": True, "seeds": {"0": score}, "score": score, "seed_std": 0.0, "status": "passed"}
    doc = {"version": 1, "cases": [case], "aggregates": [], "gates": []}
    return doc, {("s", model, "tasks", "t"): {"0": {"labels": labels, "outputs": probs, "digest": "d"}}}


def test_a_paired_test_decides_where_both_runs_have_outputs() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    a_pred = np.where(rng.random(400) < 0.70, labels, 1 - labels)
    better = np.where(rng.random(400) < 0.6, labels, a_pred)                       # fixes many of A's errors
    close = a_pred.copy()
    close[np.flatnonzero(a_pred != labels)[:3]] = labels[np.flatnonzero(a_pred != labels)[:3]]   # fixes 3
    doc_a, out_a = _run("A", labels, a_pred)
    for predicted, verdict in ((better, "better"), (close, "not distinguishable")):
        doc_b, out_b = _run("B", labels, predicted)
        [row] = compare(doc_a, doc_b, (out_a, out_b))["cases"]
        ia = stats.case_interval("accuracy", labels, a_pred[None], key="d")
        ib = stats.case_interval("accuracy", labels, predicted[None], key="d")
        assert row["test"] == "paired bootstrap" and row["verdict"] == verdict
        assert row["p_value"] == stats.paired_difference(ia, ib).p_value
    [untested] = compare(doc_a, _run("B", labels, better)[0])["cases"]
    assert untested["verdict"] == "better (untested)" and untested["test"] == "none"


def test_the_command_reads_the_outputs_beside_each_file(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    runs = {"a": np.where(rng.random(300) < 0.6, labels, 1 - labels), "b": labels.copy()}
    for name, predicted in runs.items():
        doc, outputs = _run(name.upper(), labels, predicted)
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
        [(key, seeds)] = outputs.items()
        meta = {"suite": key[0], "model": key[1], "axis": key[2], "case": key[3], "seed": 0, "digest": "d"}
        predictions.write_beside(tmp_path / f"{name}.json", [(meta, seeds["0"])])
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "better (paired, p = " in capsys.readouterr().out
