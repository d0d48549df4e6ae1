"""Hub-format results read back with huggingface_hub's own readers: one entry per case and per aggregate statistic,
dataset ids and revisions of hub data, the direction of lower-is-better statistics. Nothing is uploaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import parse_eval_result_entries
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from flexharness.cli import main
from flexharness.results.io import write_json


REVISION = "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c"


def results() -> dict:
    """Two models; one case on hub data (path, config, revision), one on a local file, one failed."""
    hub = {"name": "sst2", "hub": {"path": "nyu-mll/glue", "name": "sst2", "revision": REVISION}}
    local = {"name": "reviews", "hub": {}}
    cases, aggregates = [], []
    for model, shift in (("org/first-model", 0.0), ("second", 0.1)):
        for name, dataset, score in (("sst2", hub, 0.9 - shift), ("reviews", local, 0.7 - shift),
                                     ("broken", local, None)):
            cases.append({"suite": "glue", "model": model, "axis": "tasks", "name": name, "metric": "accuracy",
                          "higher_is_better": True, "kind": "sequence_classification", "dataset": dataset,
                          "seeds": {"0": score, "1": score}, "score": score, "seed_std": 0.0,
                          "status": "passed" if score is not None else "error"})
        aggregates.append({"suite": "glue", "model": model, "axis": "tasks", "n": 3, "missing": 1,
                           "p_avg": None, "sigma_p": None, "mean_seed_std": 0.0, "higher_is_better": True})
        aggregates.append({"suite": "glue", "model": model, "axis": "compression", "n": 2, "missing": 0,
                           "p_avg": 0.95 - shift, "sigma_p": 0.02, "mean_seed_std": 0.0, "higher_is_better": True})
    return {"version": 1, "created": "2026-12-02T12:00:00+00:00", "cases": cases, "aggregates": aggregates,
            "gates": []}


def test_eval_results_and_model_index_read_back_with_huggingface_hub(tmp_path: Path, capsys) -> None:
    write_json(tmp_path / "r.json", results())
    assert main(["export", str(tmp_path / "r.json"), "--hub-yaml", str(tmp_path / "first.yaml"),
                 "--hub-card", str(tmp_path / "README.md"), "--hub-model", "first-model"]) == 0
    entries = parse_eval_result_entries(yaml.safe_load((tmp_path / "first.yaml").read_text()))
    assert [(e.dataset_id, e.task_id, e.value, e.dataset_revision) for e in entries] == [
        ("nyu-mll/glue", "glue/tasks/sst2", 0.9, REVISION),
        ("reviews", "glue/tasks/reviews", 0.7, None),
        ("flexharness/glue", "compression/p_avg", 0.95, None),
        ("flexharness/glue", "compression/sigma_p", 0.02, None)]   # no score, no entry: the failed case, the tasks P_avg
    assert "lower is better" in entries[-1].notes and "higher is better" in entries[0].notes
    assert all(e.date == "2026-12-02T12:00:00+00:00" for e in entries)

    name, found = model_index_to_eval_results(metadata_load(tmp_path / "README.md")["model-index"])
    assert name == "first-model"
    by_metric = {r.metric_name: r for r in found}
    assert set(by_metric) == {"tasks/sst2 accuracy", "tasks/reviews accuracy", "compression p_avg (2 cases)",
                              "compression sigma_p (2 cases)"}
    sst2 = by_metric["tasks/sst2 accuracy"]
    assert (sst2.task_type, sst2.dataset_type, sst2.dataset_config, sst2.dataset_revision, sst2.metric_type,
            sst2.metric_value) == ("text-classification", "nyu-mll/glue", "sst2", REVISION, "accuracy", 0.9)
    assert by_metric["compression sigma_p (2 cases)"].metric_args == {"lower_is_better": True}
    assert by_metric["compression p_avg (2 cases)"].metric_args is None


def test_several_models_need_one_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_json(tmp_path / "r.json", results())
    assert main(["export", str(tmp_path / "r.json"), "--hub-yaml", str(tmp_path / "x.yaml")]) == 2
    assert ("flexharness export: the results hold 2 models; name one with --hub-model (first-model, second)"
            in capsys.readouterr().err)
    assert main(["export", str(tmp_path / "r.json"), "--hub-yaml", str(tmp_path / "x.yaml"), "--hub-model", "x"]) == 2
    assert "--hub-model 'x': no model of the results is named so" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()
    assert main(["export", str(tmp_path / "r.json")]) == 2
    assert "say what to write" in capsys.readouterr().err
