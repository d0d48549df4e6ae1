"""Spreading a suite: shards over machines (``--flex-shard K/N``), GPUs and CPU threads over xdist workers.

Sharding must give every runner the same answer without talking to the
others: by estimate, the share is a pure function of the collected items and
the models' config.json, computed the same way on every machine; by measured
seconds (read from a result cache that fills while the run goes) the first
task writes the plan beside the shard files and the others read it. All seeds
of a case stay on one shard so a shard's results hold whole cases.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import pytest

from flexharness.rules import shards

PLAN_KEY = pytest.StashKey[list]()  # [node id, model, case fingerprint] of the whole run, before the shard was cut
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


def item_estimate(planned: Any) -> float:
    """Estimated FLOPs of one (case, seed) item: the model's size from its config.json (``engine.cost``)."""
    from flexharness.engine.cost import item_flops

    return item_flops(model_size(planned.model), planned.case.train)


@functools.lru_cache(maxsize=64)
def model_size(model: str) -> Any:
    from flexharness.engine.cost import body_size
    from flexharness.engine.models import architecture

    return body_size(architecture(model))


def group_key(item: Any) -> str:
    """Every seed of a case goes to one shard: a shard's results hold whole cases."""
    planned = getattr(item, "planned", None)
    if planned is None:
        return item.nodeid
    return f"{item.nodeid.split('::', 1)[0]}::{planned.model}::{planned.case.axis}/{planned.case.name}"


def item_costs(items: Sequence[Any], measured: Measured | None = None) -> dict[str, float]:
    """Each item's cost by node id: the estimate, or seconds when earlier runs' records calibrate it."""
    ours = [item for item in items if getattr(item, "planned", None) is not None]
    estimates = {item.nodeid: item_estimate(item.planned) for item in ours}
    if measured is not None:
        models = {item.nodeid: item.planned.model for item in ours}
        estimates = shards.calibrated(estimates, models, measured.rates, measured.cached)
    plain = {item.nodeid: min(estimates.values(), default=1.0) * 1e-3 for item in items if item.nodeid not in estimates}
    return {**estimates, **plain}


def case_groups(items: Sequence[Any]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for item in items:
        groups.setdefault(group_key(item), []).append(item.nodeid)
    return groups


def group_costs(groups: Mapping[str, list[str]], costs: Mapping[str, float]) -> dict[str, float]:
    return {group: sum(costs[nodeid] for nodeid in members) for group, members in groups.items()}


def assign_items(items: Sequence[Any], count: int, costs: Mapping[str, float]) -> dict[str, int]:
    """Node id → shard (0-based), whole cases kept together, the most expensive cases placed first."""
    groups = case_groups(items)
    shard_of = assign_shards(group_costs(groups, costs), count)
    return {nodeid: shard_of[group] for group, members in groups.items() for nodeid in members}


def select_shard(items: Sequence[Any], index: int, assignment: Mapping[str, int]) -> tuple[list[Any], list[Any]]:
    """(kept, deselected) for shard ``index`` (1-based) of a plan, items in their collected order."""
    chosen = {item.nodeid for item in items if assignment[item.nodeid] == index - 1}
    return [i for i in items if i.nodeid in chosen], [i for i in items if i.nodeid not in chosen]


SHARD_BY = ("estimate", "measured")
PLAN_FILE = "plan.json"   # beside --flex-json: the plan of a --flex-shard-by measured run, made by its first task
LINE_KEY = pytest.StashKey[str]()


@dataclasses.dataclass(frozen=True)
class Measured:
    """What earlier runs' records say: each model's seconds per estimated FLOP, the items that will not train."""

    rates: dict[str, float]
    cached: frozenset[str]


KeyOf = Callable[[Any, str], tuple]   # (record key, model fingerprint) of an item on a device (store.keys.result_key)


def measure(items: Sequence[Any], results: Path | None, device: str, reuse: bool, key_of: KeyOf) -> Measured:
    """Read the result cache once: records of this run's models on this device give their rates (seconds per
    6·N·tokens of the record); an item whose own record is there will be read, not trained."""
    from flexharness.engine.cost import TRAIN_FLOPS

    ours = [item for item in items if getattr(item, "planned", None) is not None]
    if results is None or not results.is_dir():
        return Measured({}, frozenset())
    keys = {item.nodeid: key_of(item.planned, device) for item in ours}   # (record key, model fingerprint)
    models = {keys[item.nodeid][1]: item.planned.model for item in ours}
    samples: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(results.glob("*.json")):
        record = _record(path)
        model = models.get(record.get("model_fingerprint"))
        if model is None or record.get("device") != device:
            continue
        flops = TRAIN_FLOPS.get(record.get("train_method"), 6.0) * model_size(model).params
        samples.setdefault(model, []).append((_number(record.get("train_seconds")),
                                              flops * _number(record.get("train_tokens"))))
    rates = {model: found for model, pairs in samples.items() if (found := shards.rate(pairs)) is not None}
    cached = [n for n, (key, _) in keys.items() if reuse and key and (results / f"{key}.json").is_file()]
    return Measured(rates, frozenset(cached))


def _record(path: Path) -> dict[str, Any]:
    from flexharness.files import RESULTS_LIMIT, read_text

    try:
        entry = json.loads(read_text(path, RESULTS_LIMIT))
    except (OSError, ValueError):
        return {}
    record = entry.get("record") if isinstance(entry, dict) else None
    return record if isinstance(record, dict) else {}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def frozen_assignment(path: Path, items: Sequence[Any], count: int,
                      compute: Callable[[], dict[str, int]]) -> dict[str, int]:
    """The run's plan as its first task wrote it beside the shard files; computed and written when absent.

    Tasks start at different times and the shared result cache fills while they run, so a plan read from
    it would differ between tasks: the first one to plan fixes it for all of them, and for every rerun.
    """
    from flexharness.files import RESULTS_LIMIT, read_text

    nodeids = [item.nodeid for item in items]
    if not path.exists():
        _create_once(path, {"count": count, "items": nodeids, "shards": compute()})
    try:
        plan = json.loads(read_text(path, RESULTS_LIMIT))
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"{path}: unreadable shard plan ({type(exc).__name__}); delete it when no task "
                                "of its run is left, and run every shard again") from None
    if not isinstance(plan, dict) or plan.get("count") != count or plan.get("items") != nodeids:
        raise pytest.UsageError(f"{path}: the shard plan of another run (other items or another N): give each "
                                "run its own --flex-json folder")
    return plan["shards"]


def _create_once(path: Path, plan: dict[str, Any]) -> None:
    """Write ``path`` unless another task did first: a linked temporary file, so readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".plan-", delete=False, encoding="utf-8") as tmp:
        json.dump(plan, tmp)
    try:
        os.link(tmp.name, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp.name)


def cut_shard(items: Sequence[Any], options: Any, results: Path | None,
              key_of: KeyOf) -> tuple[list[Any], list[Any], str]:
    """(kept, deselected, the plan's line) for the shard ``--flex-shard`` names, by estimate or by the seconds
    the result cache (``results``, None without one) holds."""
    from flexharness.engine.models import resolve_device

    index, count = options.shard
    measured = None
    if options.shard_by == "measured":
        measured = measure(items, results, resolve_device(options.device), not options.no_cache, key_of)
    costs = item_costs(items, measured)

    def plan() -> dict[str, int]:
        return assign_items(items, count, costs)

    plan_path = Path(options.json_path).parent / PLAN_FILE if measured else None
    assignment = frozen_assignment(plan_path, items, count, plan) if plan_path else plan()
    kept, deselected = select_shard(items, index, assignment)
    groups = case_groups(items)
    fractions = shards.shares(group_costs(groups, costs), {g: assignment[m[0]] for g, m in groups.items()}, count)
    guessed = sorted({i.planned.model for i in items if getattr(i, "planned", None) is not None
                      and not model_size(i.planned.model).known})
    return kept, deselected, shards.plan_line(index, count, fractions, len(kept), len(items), options.shard_by,
                                              guessed)


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


def pin_gpu(workerinput: Mapping[str, Any], environ: Any = os.environ, per_worker: int = 1) -> str | None:
    """Give xdist worker ``gwN`` GPU ``N mod count`` when several are visible (``per_worker`` consecutive ones
    for items fine-tuned over several devices); returns the GPU ids or None."""
    gpus = visible_gpus(environ)
    if len(gpus) < 2 or len(gpus) <= per_worker:
        return None
    slots = len(gpus) // per_worker
    start = worker_index(workerinput) % slots * per_worker
    pinned = ",".join(gpus[start:start + per_worker])
    environ["CUDA_VISIBLE_DEVICES"] = pinned
    return pinned


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_cpu(workerinput: Mapping[str, Any] | None, device: str, environ: Mapping[str, str] = os.environ) -> None:
    """On CPU, each of W xdist workers takes cores // W threads, unless OMP_NUM_THREADS says otherwise."""
    if workerinput is None or device != "cpu" or "OMP_NUM_THREADS" in environ:
        return
    import torch

    torch.set_num_threads(max(1, cpu_cores() // int(workerinput.get("workercount", 1))))

