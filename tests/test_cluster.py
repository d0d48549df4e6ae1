"""The cluster recipes in docs/cluster/ run as written: Slurm array tasks and the merge, here on a tiny BERT,
and the Kubernetes Jobs run the very same commands."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from flexharness.cli import main

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "cluster"
FAST = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0, 1], "
        "max_train_samples: 32, max_eval_samples: 32}")
TWO = "tasks:\n" + "".join(f"  - {{name: t{i}, dataset: reviews, metric: accuracy}}\n" for i in range(2))
GATES = "gates:\n  tasks: {p_avg: {min: 0.0}, sigma_p: {max: 1.0}}\n"
RECORDER = "#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$RECORD\"\n"


def _command(script: str, env: dict[str, str], cwd: Path, bash_args: tuple[str, ...] = ()) -> list[str]:
    """Run a recipe under bash as the scheduler would, with its final ``pytest`` or ``flexharness`` recorded
    instead of started (so the test runs it in this process, without paying for the imports again)."""
    shims = cwd / "recorders"
    shims.mkdir(exist_ok=True)
    for program in ("pytest", "flexharness"):
        (shims / program).write_text(RECORDER)
        (shims / program).chmod(0o755)
    record = cwd / "command.bin"
    record.unlink(missing_ok=True)
    env = {**env, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)}
    done = subprocess.run(["bash", *(bash_args or (str(RECIPES / script),))], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and record.exists(), done.stderr
    return record.read_bytes().decode().split("\0")[:-1]


def _scores(doc: dict) -> list[tuple]:
    return [(c["id"], c["model"], c["seeds"], c["score"], c["status"]) for c in doc["cases"]]


def test_slurm_array_tasks_and_merge_give_the_unsharded_scores_and_resume(pytester: pytest.Pytester, suite_text,
                                                                          capsys: pytest.CaptureFixture) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO + GATES, train=FAST))
    shared = pytester.path / "shared"
    results = shared / "results"
    env = {"PATH": os.environ["PATH"], "SHARED": str(shared), "SHARDS": "2", "SUITES": "toy.flex.yaml"}

    def task(index: int) -> pytest.RunResult:
        return pytester.runpytest(*_command("slurm-array.sh", {**env, "SLURM_ARRAY_TASK_ID": str(index)},
                                            pytester.path))

    def merge() -> int:
        argv = _command("merge.sh", env, pytester.path)
        assert argv[0] == "merge"
        return main(argv)

    for index in (0, 1):
        task(index).assert_outcomes(passed=2, deselected=2)
    records = shared / "pytest-cache" / "d" / "flexharness-results"
    assert len(list(records.glob("*.json"))) == 4  # 2 cases x 2 seeds, in the shared cache_dir
    assert not (pytester.path / ".pytest_cache").exists()
    assert merge() == 0
    merged = json.loads((results / "results.json").read_text())
    assert {(g["name"], g["passed"]) for g in merged["gates"]} == {("tasks/p_avg.min", True),
                                                                     ("tasks/sigma_p.max", True)}
    assert (results / "summary.md").is_file() and (results / "gates.xml").is_file()
    pytester.runpytest("toy.flex.yaml", "-p", "no:cacheprovider", "--flex-json=whole.json").assert_outcomes(passed=6)
    whole = json.loads((pytester.path / "whole.json").read_text())
    assert _scores(merged) == _scores(whole) and len(whole["cases"]) == 2

    # Task 1 was killed: its shard file is lost and one of its two items never finished. Rerun that index only.
    items = [item for suite in json.loads((results / "shard-2.json").read_text())["suites"] for item in suite["items"]]
    (results / "shard-2.json").unlink()
    next(p for p in records.glob("*.json") if json.loads(p.read_text())["nodeid"] == items[0]).unlink()
    capsys.readouterr()
    assert merge() == 2 and "missing shard 2/2" in capsys.readouterr().err
    task(1).assert_outcomes(passed=2, deselected=2)
    rerun = json.loads((results / "shard-2.json").read_text())
    assert sum(c["cached_items"] for c in rerun["cases"]) == len(items) - 1 == 1  # only the lost item trained again
    assert merge() == 0
    assert _scores(json.loads((results / "results.json").read_text())) == _scores(whole)


def _job(name: str, shared: Path) -> tuple[dict, dict, dict[str, str]]:
    """The Job, its container, and the container's environment with ``/shared`` moved to ``shared``."""
    job = yaml.safe_load((RECIPES / name).read_text())
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"].replace("/shared", str(shared)) for e in container["env"]}
    return job, container, env


def _run_job(container: dict, env: dict[str, str], cwd: Path) -> list[str]:
    assert container["command"] == ["bash", "-c"]
    return _command("", env, cwd, ("-c", *container["args"]))


def test_kubernetes_jobs_run_the_slurm_commands(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    job, shard, env = _job("k8s-indexed-job.yaml", shared)
    assert job["spec"]["completionMode"] == "Indexed"
    shards = job["spec"]["completions"]
    assert int(env["SHARDS"]) == shards and shard["resources"]["limits"]["nvidia.com/gpu"] == 1
    slurm = (RECIPES / "slurm-array.sh").read_text()
    assert f"#SBATCH --array=0-{shards - 1}\n" in slurm and "#SBATCH --gres=gpu:1\n" in slurm
    base = {"PATH": os.environ["PATH"]}
    for index in range(shards):  # the Slurm defaults and the Job's environment make the same command
        k8s = _run_job(shard, {**base, **env, "JOB_COMPLETION_INDEX": str(index)}, tmp_path)
        assert k8s == _command("slurm-array.sh", {**base, "SHARED": str(shared / "flexharness"),
                                                  "SLURM_ARRAY_TASK_ID": str(index)}, tmp_path)
        assert f"--flex-shard={index + 1}/{shards}" in k8s
    merge_job, merger, merge_env = _job("k8s-merge-job.yaml", shared)
    assert merge_job["spec"]["template"]["spec"]["volumes"] == job["spec"]["template"]["spec"]["volumes"]
    assert _run_job(merger, {**base, **merge_env}, tmp_path) == _command(
        "merge.sh", {**base, "SHARED": str(shared / "flexharness")}, tmp_path)


def test_the_multi_gpu_job_runs_the_same_command_with_one_item_over_its_gpus(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    _, one, one_env = _job("k8s-indexed-job.yaml", shared)
    job, many, env = _job("k8s-indexed-job-multi-gpu.yaml", shared)
    devices = int(env["DEVICES"])
    assert devices == many["resources"]["limits"]["nvidia.com/gpu"] > 1
    assert job["spec"]["completions"] == int(env["SHARDS"])
    assert any(m["mountPath"] == "/dev/shm" for m in many["volumeMounts"])
    base = {"PATH": os.environ["PATH"], "JOB_COMPLETION_INDEX": "1"}
    assert _run_job(many, {**base, **env}, tmp_path) == [*_run_job(one, {**base, **one_env}, tmp_path),
                                                        f"--flex-devices-per-item={devices}"]
