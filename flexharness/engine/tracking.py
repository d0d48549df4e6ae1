"""Experiment trackers behind one seam: MLflow, TensorBoard and W&B, each through its own client library.

A run of pytest is one *session*; each item (one case, model and seed) is one
tracker run inside it (an MLflow run nested under the session's run, a
TensorBoard folder under the session's folder, a W&B run in the session's
group). Everything a worker needs to log its own items travels as one JSON
string (:class:`Target`), so plain runs, pytest-xdist workers and shards log
the same way: each process opens runs for the items it runs, and only the
controller opens the session's run. Nothing is sent anywhere: MLflow writes a
local SQLite store, TensorBoard event files, W&B its offline run folders.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from flexharness.errors import FlexError

TRACKERS = ("mlflow", "tensorboard", "wandb")
MODULES = {"mlflow": ("mlflow", "sqlalchemy", "alembic"), "tensorboard": ("tensorboard",), "wandb": ("wandb",)}
EXPERIMENT = "flexharness"
Step = tuple[int, float, float]    # (optimiser step, training loss, learning rate at that step)


class TrackerUnavailable(FlexError):
    """A tracker was asked for whose client library is not installed."""


class RunLog(Protocol):
    """One tracker run: the curves, the final numbers and files of one item or of the session."""

    def steps(self, points: Sequence[Step]) -> None: ...

    def metrics(self, values: Mapping[str, float]) -> None: ...

    def artifacts(self, folder: Path) -> None: ...

    def close(self, status: str) -> None: ...


@dataclass(frozen=True)
class Target:
    """Where and under which session a process logs: plain data, sent to xdist workers as JSON."""

    trackers: tuple[str, ...]
    directory: str
    session: str
    parents: dict[str, str] = field(default_factory=dict)   # tracker -> the session's run id (MLflow)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Target":
        raw = json.loads(text)
        return cls(tuple(raw["trackers"]), raw["directory"], raw["session"], dict(raw["parents"]))


def check(trackers: Sequence[str]) -> None:
    """Raise :class:`TrackerUnavailable` for a tracker whose library is missing (asked at start-up)."""
    import importlib.util

    for name in trackers:
        missing = [module for module in MODULES[name] if importlib.util.find_spec(module) is None]
        if missing:
            raise TrackerUnavailable(f"--flex-log {name} needs {', '.join(missing)}: "
                                     f"pip install 'flexharness[{name}]'")


def session_id() -> str:
    """A name no other session shares: the time, then the process id (shards start at the same second)."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


def start_session(target: Target) -> tuple[Target, list[RunLog]]:
    """The session's runs (controller only) and the target the workers log their items under."""
    logs: dict[str, RunLog] = {name: _OPEN[name](target, "session", {"session": target.session}, True)
                               for name in target.trackers}
    parents = {name: log.run_id for name, log in logs.items() if isinstance(log, MlflowRun)}
    return replace(target, parents=parents), list(logs.values())


def item_runs(target: Target | None, name: str, params: Mapping[str, Any]) -> list[RunLog]:
    """One run per tracker for the item ``name`` (its node id), with ``params`` (the recipe)."""
    if target is None:
        return []
    return [_OPEN[tracker](target, name, params, False) for tracker in target.trackers]


def with_steps(runs: Sequence[RunLog], progress: Callable[[dict[str, Any]], None] | None
               ) -> Callable[[dict[str, Any]], None] | None:
    """The training loop's progress callback, also handing each read loss to ``runs`` (no extra host sync)."""
    if not runs:
        return progress

    def both(event: dict[str, Any]) -> None:
        if event.get("losses"):
            for run in runs:
                run.steps(event["losses"])
        if progress:
            progress(event)

    return both


def record_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of an item's record a tracker shows: score, each metric, timing, parameters."""
    found = {"score": record.get("score"), **{f"metric/{k}": v for k, v in (record.get("metrics") or {}).items()}}
    found |= {key: record.get(key) for key in ("train_seconds", "eval_seconds", "setup_seconds", "steps",
                                                 "final_loss", "trainable_params", "total_params",
                                                 "train_examples", "eval_examples")}
    found["cached"] = 1.0 if record.get("cached") else 0.0
    return {k: float(v) for k, v in found.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def safe_key(text: str) -> str:
    """A metric or folder name every tracker accepts (letters, digits, ``_ - . /``)."""
    return re.sub(r"[^A-Za-z0-9_\-./]+", "_", text).strip("/") or "_"


class MlflowRun:
    """An MLflow run in the SQLite store ``DIR/mlflow.db``, its artifacts under ``DIR/mlflow-artifacts``."""

    def __init__(self, target: Target, name: str, params: Mapping[str, Any], session: bool) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        directory = Path(target.directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
                                   registry_uri=(directory / "mlflow-registry").as_uri())  # no models are registered
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            EXPERIMENT, artifact_location=(directory / "mlflow-artifacts").as_uri())
        tags = {"flexharness.session": target.session, "flexharness.kind": "session" if session else "item"}
        if not session and "mlflow" in target.parents:
            tags["mlflow.parentRunId"] = target.parents["mlflow"]
        run_name = f"session {target.session}" if session else name
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        self.client.log_batch(self.run_id, params=[Param(key, str(value)[:6000]) for key, value in params.items()])

    def steps(self, points: Sequence[Step]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for step, loss, rate in points
                                                    for key, value in (("train/loss", loss),
                                                                       ("train/learning_rate", rate))])

    def metrics(self, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(safe_key(k), v, now, 0) for k, v in values.items()])

    def artifacts(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if status == "passed" else "FAILED")


class TensorBoardRun:
    """Event files in ``DIR/tensorboard/SESSION/ITEM`` (the session's own in ``.../SESSION/session``)."""

    def __init__(self, target: Target, name: str, params: Mapping[str, Any], session: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(target.directory) / "tensorboard" / target.session / safe_key(name).replace("/", "_")
        self.writer = SummaryWriter(log_dir=str(self.folder))
        self.writer.add_text("params", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)

    def steps(self, points: Sequence[Step]) -> None:
        for step, loss, rate in points:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/learning_rate", rate, step)

    def metrics(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(safe_key(key), value, 0)

    def artifacts(self, folder: Path) -> None:
        """TensorBoard keeps no files: the session's text says where they are."""
        self.writer.add_text("artifacts", str(folder.resolve()), 0)

    def close(self, status: str) -> None:
        self.writer.add_text("status", status, 0)
        self.writer.close()


class WandbRun:
    """A W&B run in offline mode (nothing is sent): ``DIR/wandb/offline-run-*``, grouped by session."""

    def __init__(self, target: Target, name: str, params: Mapping[str, Any], session: bool) -> None:
        import wandb

        os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        directory = Path(target.directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=EXPERIMENT, dir=str(directory), mode="offline", group=target.session,
                              name=f"session {target.session}" if session else name, job_type=
                              "session" if session else "item", config=dict(params), reinit="create_new",
                              settings=wandb.Settings(console="off", x_disable_stats=True))

    def steps(self, points: Sequence[Step]) -> None:
        for step, loss, rate in points:
            self.run.log({"train/loss": loss, "train/learning_rate": rate}, step=step)

    def metrics(self, values: Mapping[str, float]) -> None:
        self.run.summary.update({safe_key(k): v for k, v in values.items()})

    def artifacts(self, folder: Path) -> None:
        import wandb

        artifact = wandb.Artifact(f"results-{safe_key(self.run.group or 'run')}".replace("/", "-"), type="results")
        artifact.add_dir(str(folder))
        self.run.log_artifact(artifact)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "passed" else 1)


_OPEN: dict[str, Callable[[Target, str, Mapping[str, Any], bool], RunLog]] = {
    "mlflow": MlflowRun, "tensorboard": TensorBoardRun, "wandb": WandbRun}
