"""The documented Slurm recipe, submitted unchanged to a real single-node Slurm (scripts/slurm-single-node.sh):
``sbatch`` the array, ``sbatch --dependency=afterany:`` the merge; merged scores equal an unsharded run's, and a
task cancelled mid-run resumes from the result cache when its index is submitted again.

Skipped where no such cluster runs and none can be started (no Slurm installed, or not root). Only this
script's cluster is used, never a machine's own Slurm: the jobs read the test's temporary folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "scripts" / "slurm-single-node.sh"
RECIPES = ROOT / "docs" / "cluster"
CONF = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
MARK = "# written by flexharness scripts/slurm-single-node.sh"
# The documented overrides for a small CPU-only partition: no GPU line, one core and little memory per task.
SMALL = ("--gres=none", "--cpus-per-task=1", "--mem=3G")
FINISHED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE"}
WAIT_S = 900.0   # a bound, not a measurement: the test takes under two minutes on two cores, more when shared
TRAIN = ("train: {epochs: 3, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0, 1, 2], "
         "max_train_samples: 320, max_eval_samples: 64}")
TWO = "tasks:\n" + "".join(f"  - {{name: t{i}, dataset: reviews, metric: accuracy}}\n" for i in range(2))

pytestmark = pytest.mark.slurm


def _ours() -> bool:
    return CONF.is_file() and MARK in CONF.read_text(encoding="utf-8", errors="replace").splitlines()


def _answers() -> bool:
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and any(s.startswith(("idle", "mix", "alloc")) for s in done.stdout.split())


@pytest.fixture(scope="module")
def slurm() -> None:
    """A running single-node cluster written by our script: found, or started when this is root."""
    if shutil.which("sbatch") is None and os.geteuid() != 0:
        pytest.skip("Slurm is not installed (no sbatch) and this is not root: run 'sudo scripts/slurm-single-node.sh'")
    if shutil.which("sbatch") is None:
        pytest.skip("Slurm is not installed (no sbatch): 'scripts/slurm-single-node.sh' installs Debian's "
                    "slurm-wlm and munge and starts a single-node cluster")
    if CONF.exists() and not _ours():
        pytest.skip(f"{CONF} is this machine's own Slurm, not the single-node test cluster: not submitting to it")
    if not (_ours() and _answers()):
        if os.geteuid() != 0:
            pytest.skip("no single-node Slurm is running and starting one needs root: 'sudo scripts/slurm-single-node.sh'")
        started = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=300)
        if started.returncode != 0:
            pytest.skip(f"scripts/slurm-single-node.sh could not start Slurm: {started.stderr.strip()[-300:]}")


def _sbatch(*args: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(["sbatch", "--parsable", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def _states(job: str) -> dict[str, str]:
    """Each task's state (``JOB_INDEX`` or ``JOB``), array tasks one by one."""
    done = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i %T"], capture_output=True,
                          text=True, timeout=30)
    return dict(line.split()[:2] for line in done.stdout.splitlines() if line.strip())


def _wait(job: str, until: float) -> dict[str, str]:
    """The tasks' final states; the job is cancelled and the test fails past the deadline."""
    while True:
        states = _states(job)
        if states and set(states.values()) <= FINISHED:
            return states
        if time.monotonic() > until:
            subprocess.run(["scancel", job], timeout=30)
            pytest.fail(f"job {job} still {states} after the bounded wait")
        time.sleep(0.3)


def _scores(doc: dict) -> list[tuple]:
    return [(c["id"], c["model"], c["seeds"], c["score"], c["status"]) for c in doc["cases"]]


def _records(shared: Path, nodeids: set[str]) -> list[Path]:
    folder = shared / "pytest-cache" / "d" / "flexharness-results"
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            if json.loads(path.read_text())["nodeid"] in nodeids:
                found.append(path)
        except (ValueError, KeyError):  # not renamed into place yet: never, records are written atomically
            continue
    return found


def test_recipe_on_a_real_slurm_merges_to_the_unsharded_scores_and_resumes(slurm: None, pytester: pytest.Pytester,
                                                                           suite_text) -> None:
    until = time.monotonic() + WAIT_S
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=TRAIN))
    pytester.runpytest("toy.flex.yaml", "-p", "no:cacheprovider", "--flex-json=whole.json").assert_outcomes(passed=6)
    whole = _scores(json.loads((pytester.path / "whole.json").read_text()))
    python_path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    path = os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"]))  # this pytest, this flexharness
    base = {**os.environ, "PATH": path, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1", "SHARDS": "2", "SUITES": "toy.flex.yaml"}

    def run(name: str) -> tuple[dict[str, str], str, Path]:
        shared = pytester.path / name
        env = {**base, "SHARED": str(shared)}
        array = _sbatch(*SMALL, "--array=0-1", str(RECIPES / "slurm-array.sh"), env=env, cwd=pytester.path)
        return env, array, shared

    env, array, shared = run("first")
    merge = _sbatch(f"--dependency=afterany:{array}", str(RECIPES / "merge.sh"), env=env, cwd=pytester.path)
    assert set(_wait(array, until).values()) == {"COMPLETED"}
    assert _wait(merge, until) == {merge: "COMPLETED"}
    assert _scores(json.loads((shared / "results" / "results.json").read_text())) == whole
    second = json.loads((shared / "results" / "shard-2.json").read_text())
    lost = {item for suite in second["suites"] for item in suite["items"]}
    assert len(lost) == 3  # one case, three seeds

    # A second run, its own shared folder: cancel task 1 once it has finished one item, resubmit that index.
    env, array, shared = run("second")
    while not _records(shared, lost):
        assert time.monotonic() < until and _states(array).get(f"{array}_1") not in FINISHED, _states(array)
        time.sleep(0.1)
    subprocess.run(["scancel", f"{array}_1"], check=True, timeout=30)
    assert _wait(array, until)[f"{array}_1"] == "CANCELLED"
    kept = len(_records(shared, lost))
    assert 1 <= kept < len(lost), "the task had finished before it was cancelled"
    rerun = _sbatch(*SMALL, "--array=1", str(RECIPES / "slurm-array.sh"), env=env, cwd=pytester.path)
    merge = _sbatch(f"--dependency=afterany:{rerun}", str(RECIPES / "merge.sh"), env=env, cwd=pytester.path)
    assert _wait(rerun, until) == {f"{rerun}_1": "COMPLETED"} and _wait(merge, until) == {merge: "COMPLETED"}
    resumed = json.loads((shared / "results" / "shard-2.json").read_text())
    assert sum(c["cached_items"] for c in resumed["cases"]) == kept  # only the lost items were fine-tuned again
    assert _scores(json.loads((shared / "results" / "results.json").read_text())) == whole
