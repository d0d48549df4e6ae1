"""Spreading a suite: shards over machines (``--flex-shard K/N``), GPUs and CPU threads over xdist workers.

Sharding must give every runner the same answer without talking to the
others: the share is a pure function of the collected items, computed the
same way on every machine, and all seeds of a case stay on one shard so a
shard's results hold whole cases.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any, Hashable, Mapping, Sequence

import pytest

DEFAULT_TRAIN_SAMPLES = 10_000  # the cost estimate of a case without max_train_samples
PLAN_KEY = pytest.StashKey[list]()  # node ids of the whole run, before the shard was cut
MAX_SHARDS = 1000  # a CI matrix wider than this is a typo; each shard costs the controller a slot


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` → (2, 4); raises ValueError with the rule."""
    match = re.fullmatch(r"\s*0*(\d{1,9})\s*/\s*0*(\d{1,9})\s*", str(text))
    if match and int(match[2]) > MAX_SHARDS:
        raise ValueError(f"--flex-shard: at most {MAX_SHARDS} shards, got N = {match[2]}; use fewer shards")
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"--flex-shard: expected K/N with 1 <= K <= N <= {MAX_SHARDS}, e.g. 2/4, "
                         f"got {str(text)[:40]!r}")
    return int(match[1]), int(match[2])


def assign_shards(costs: Mapping[Hashable, float], count: int) -> dict[Hashable, int]:
    """Greedy longest-first: each group, most expensive first, goes to the least loaded shard (0-based).

    Ties are broken by the group's text so the answer never depends on dict
    order. No shard ends more than one group's cost above the lightest one.
    """
    loads = [0.0] * count
    result = {}
    for group in sorted(costs, key=lambda g: (-costs[g], str(g))):
        shard = min(range(count), key=lambda i: (loads[i], i))
        loads[shard] += costs[group]
        result[group] = shard
    return result


def item_cost(train: Any) -> float:
    """Estimated work of one (case, seed) item: train examples × epochs."""
    return float((train.max_train_samples or DEFAULT_TRAIN_SAMPLES) * train.epochs)


def select_shard(items: Sequence[Any], index: int, count: int) -> tuple[list[Any], list[Any]]:
    """(kept, deselected) for shard ``index`` of ``count`` (1-based), items in their collected order."""
    groups: dict[str, list[Any]] = {}
    costs: dict[str, float] = {}
    for item in items:
        planned = getattr(item, "planned", None)
        if planned is None:
            key, cost = item.nodeid, 1.0
        else:
            key = f"{item.nodeid.split('::', 1)[0]}::{planned.model}::{planned.case.axis}/{planned.case.name}"
            cost = item_cost(planned.case.train)
        groups.setdefault(key, []).append(item)
        costs[key] = costs.get(key, 0.0) + cost
    shards = assign_shards(costs, count)
    chosen = {id(item) for key, members in groups.items() if shards[key] == index - 1 for item in members}
    return [i for i in items if id(i) in chosen], [i for i in items if id(i) not in chosen]


PLAN_OUTPUT = "flexharness_plan"  # the workeroutput key an xdist worker sends the plan back under


def remember_plan(config: Any, nodeids: list[list[str]]) -> None:
    """Keep the run's items before the shard is cut: ``flexharness merge`` checks the shards add up to them."""
    if hasattr(config, "workerinput"):
        config.workeroutput[PLAN_OUTPUT] = nodeids
    else:
        config.stash[PLAN_KEY] = nodeids


def visible_gpus(environ: Mapping[str, str]) -> list[str]:
    """GPU ids this process may use, without initialising CUDA (so a worker can still be pinned)."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def worker_index(workerinput: Mapping[str, Any]) -> int:
    return int(str(workerinput["workerid"]).lstrip("gw"))


def pin_gpu(workerinput: Mapping[str, Any], environ: Any = os.environ) -> str | None:
    """Give xdist worker ``gwN`` GPU ``N mod count`` when several are visible; returns the GPU id or None."""
    gpus = visible_gpus(environ)
    if len(gpus) < 2:
        return None
    gpu = gpus[worker_index(workerinput) % len(gpus)]
    environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_cpu(workerinput: Mapping[str, Any] | None, device: str, environ: Mapping[str, str] = os.environ) -> None:
    """On CPU, each of W xdist workers takes cores // W threads, unless OMP_NUM_THREADS says otherwise."""
    if workerinput is None or device != "cpu" or "OMP_NUM_THREADS" in environ:
        return
    import torch

    torch.set_num_threads(max(1, cpu_cores() // int(workerinput.get("workercount", 1))))

