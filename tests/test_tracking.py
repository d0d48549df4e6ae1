"""Experiment trackers, read back with their own readers after real pytest runs: every item a run nested under the
session's, a loss and learning-rate curve with one point per training step, the case's numbers, the session's
aggregates, gates and files; under pytest-xdist too (each worker logs its own items, none lost or twice)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

import mlflow
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
import pytest
import torch.utils.tensorboard  # noqa: F401
import wandb  # noqa: F401
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# The trackers' libraries are imported here, once, for the reason tests/conftest.py imports datasets: pytester's
# in-process runs forget the modules they imported, and SQLAlchemy imported a second time is broken.

TRAIN = ("train: {epochs: 2, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.5, seeds: [0, 1], "
         "max_train_samples: 200, max_eval_samples: 32}")
STEPS = list(range(1, 27))   # 200 examples in batches of 16: 13 steps an epoch, two epochs (losses read at 20 and 26)
ONE = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\ngates:\n  tasks: {p_avg: {min: 0.0}}\n"
TWO = ONE.replace("gates:", "  - {name: topic, dataset: reviews, metric: macro_f1}\ngates:")
WANDB_BLOCK, WANDB_HEADER = 32768, 7


def mlflow_runs(directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, Any]:
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(uri), mlflow.search_runs(experiment_names=["flexharness"])


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``.wandb`` file (a LevelDB-style log of 32 KiB blocks, records in chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks = WANDB_HEADER, b""
    while pos + WANDB_HEADER <= len(data):
        if WANDB_BLOCK - pos % WANDB_BLOCK < WANDB_HEADER:
            pos += WANDB_BLOCK - pos % WANDB_BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + WANDB_HEADER])
        if kind == 0 and length == 0:
            break
        chunks += data[pos + WANDB_HEADER:pos + WANDB_HEADER + length]
        pos += WANDB_HEADER + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def wandb_run(folder: Path) -> dict[str, Any]:
    """Name, config, history rows and summary of one offline run folder."""
    found: dict[str, Any] = {"history": [], "summary": {}}
    for record in wandb_records(next(folder.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["name"] = record.run.display_name
            found["group"] = record.run.run_group
            found["config"] = {u.key: json.loads(u.value_json) for u in record.run.config.update}
        elif kind == "history":
            found["history"].append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                                     for i in record.history.item})
        elif kind == "summary":
            found["summary"] |= {"/".join(u.nested_key) or u.key: json.loads(u.value_json)
                                 for u in record.summary.update}
    return found


def test_every_item_is_a_run_with_its_loss_curve_in_mlflow_tensorboard_and_wandb(
        pytester: pytest.Pytester, suite_text, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=TRAIN))
    result = pytester.runpytest("-p", "no:cacheprovider", "--flex-json=out.json", "--flex-log=mlflow",
                                "--flex-log=tensorboard", "--flex-log=wandb", "--flex-log-dir=logs")
    result.assert_outcomes(passed=3)
    doc = json.loads((pytester.path / "out.json").read_text())
    seeds = doc["cases"][0]["seeds"]
    logs = pytester.path / "logs"

    client, runs = mlflow_runs(logs, monkeypatch)
    session = runs[runs["tags.flexharness.kind"] == "session"]
    items = runs[runs["tags.flexharness.kind"] == "item"]
    assert len(session) == 1 and len(items) == 2
    assert set(items["tags.mlflow.parentRunId"]) == {session["run_id"].iloc[0]}
    assert sorted(items["tags.mlflow.runName"]) == ["toy.flex.yaml::tasks/polarity[seed0]",
                                                    "toy.flex.yaml::tasks/polarity[seed1]"]
    for _, run in items.iterrows():
        loss = client.get_metric_history(run["run_id"], "train/loss")
        rate = client.get_metric_history(run["run_id"], "train/learning_rate")
        assert sorted(m.step for m in loss) == STEPS and sorted(m.step for m in rate) == STEPS
        assert max(m.value for m in rate) == pytest.approx(3.0e-3)  # warm-up to the peak, then down
        assert run["metrics.score"] == seeds[run["params.seed"]]
        assert run["params.train.learning_rate"] == "0.003" and run["metrics.trainable_params"] > 0
        assert run["status"] == "FINISHED"
    row = session.iloc[0]
    assert row["metrics.p_avg/toy/tiny-bert0/tasks"] == pytest.approx(doc["aggregates"][0]["p_avg"])
    assert row["metrics.gate/toy/tiny-bert0/tasks/p_avg.min"] == 1.0
    assert {"results.json", "summary.md", "index.html"} <= {a.path for a in client.list_artifacts(row["run_id"])}

    sessions = list((logs / "tensorboard").iterdir())
    assert len(sessions) == 1 and len(list(sessions[0].iterdir())) == 3   # the session's folder and one per item
    for folder in sessions[0].glob("toy.flex.yaml*"):
        events = EventAccumulator(str(folder))
        events.Reload()
        assert [e.step for e in events.Scalars("train/loss")] == STEPS
        assert len(events.Scalars("train/learning_rate")) == len(STEPS)
        assert events.Scalars("score")[0].value == pytest.approx(seeds[folder.name[-2]])

    found = [wandb_run(folder) for folder in (logs / "wandb").glob("offline-run-*")]
    assert len(found) == 3 and len({run["group"] for run in found}) == 1
    for run in (r for r in found if r["name"].startswith("toy.flex.yaml")):
        assert [row["_step"] for row in run["history"]] == STEPS
        assert all("train/loss" in row and "train/learning_rate" in row for row in run["history"])
        assert run["config"]["train.learning_rate"] == 0.003
        assert run["summary"]["score"] == pytest.approx(seeds[str(run["config"]["seed"])])


def test_under_xdist_each_worker_logs_its_own_items_once(
        pytester: pytest.Pytester, suite_text, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=TRAIN))
    result = pytester.runpytest("-p", "no:cacheprovider", "-n", "2", "--flex-log=mlflow", "--flex-log-dir=logs")
    result.assert_outcomes(passed=5)
    _, runs = mlflow_runs(pytester.path / "logs", monkeypatch)
    session = runs[runs["tags.flexharness.kind"] == "session"]
    items = runs[runs["tags.flexharness.kind"] == "item"]
    assert len(session) == 1
    assert sorted(items["tags.mlflow.runName"]) == [f"toy.flex.yaml::tasks/{name}[seed{seed}]"
                                                    for name in ("polarity", "topic") for seed in (0, 1)]
    assert set(items["tags.mlflow.parentRunId"]) == {session["run_id"].iloc[0]}
    assert set(items["status"]) == {"FINISHED"}


def test_a_tracker_that_is_not_known_is_a_usage_error(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=TRAIN))
    result = pytester.runpytest("-p", "no:cacheprovider", "--flex-log=neptune")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--flex-log: expected one of mlflow, tensorboard, wandb, got 'neptune'"])


def test_a_tracker_without_its_library_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from flexharness.engine import tracking

    monkeypatch.setitem(tracking.MODULES, "wandb", ("wandb", "flexharness_no_such_module"))
    with pytest.raises(tracking.TrackerUnavailable, match=r"^--flex-log wandb needs flexharness_no_such_module: "
                                                          r"pip install 'flexharness\[wandb\]'$"):
        tracking.check(["mlflow", "wandb"])
