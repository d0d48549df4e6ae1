"""One item fine-tuned by several processes: data-parallel (DDP, or FSDP's shards) through torch's own launcher.

``train: {devices: N}`` (or ``--flex-devices-per-item N``) makes the item's process hand its fresh model
and tokenized data to ``python -m torch.distributed.run --standalone --nproc-per-node N``: every process
holds the model, takes its slice of each batch, and DDP averages the gradients, so each step is the
step one process would take on the whole batch (dropout draws aside). Rank 0 writes the trained
weights back; the item evaluates, caches and reports as always: one item, one record. With
``parallel: fsdp`` each process keeps only its shard of the weights, gradients and optimizer state
(FSDP2's ``fully_shard``, one unit per transformer block), for a model whose full fine-tuning does not
fit one device; the steps are the same. CUDA runs use
NCCL, one GPU per process; the CPU uses gloo (cores shared among the processes). Rendezvous is on
localhost: no traffic leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexharness.errors import TrainingError

JOB = "job.pt"          # the fresh model and everything fine_tune needs, for every process
TRAINED = "trained.pt"  # rank 0's trained weights
STATS = "stats.json"
ERROR_PREFIX = "error-"  # error-RANK.txt: what stopped a process
LOG_TAIL = 2000         # characters of the processes' output a failure quotes
TIMEOUT_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Parallel:
    """This process's place among ``world`` data-parallel processes."""

    rank: int
    world: int
    local_rank: int
    mode: str = "ddp"     # spec.PARALLEL_MODES

    def share(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """(this rank's rows of ``batch``, the weight of its mean loss): after DDP averages the gradients over
        ranks, the step is that of the mean loss over the whole batch. A rank left without a row (a last
        batch smaller than the world) runs one row at weight 0, as DDP needs every rank to step."""
        rows = batch[self.rank::self.world]
        if len(rows) == 0:
            return batch[:1], 0.0
        return rows, len(rows) * self.world / len(batch)

    def wrap(self, model: Any, device: str) -> Any:
        """What the loop calls: a DDP replica, or under FSDP the model itself, sharded in place (each
        transformer block its own unit, gathered for its forward and backward only, then the rest)."""
        if self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in transformer_blocks(model):
                fully_shard(block)
            fully_shard(model)
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.local_rank] if device == "cuda" else None)

    def full_state(self, model: Any) -> dict[str, Any]:
        """The trained weights on the CPU, whole (gathered from every rank under FSDP: all ranks call it)."""
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v.cpu() for k, v in model.state_dict().items()}


def transformer_blocks(model: Any) -> list[Any]:
    """The children of the outermost ``ModuleList``s: a transformer's layers (``encoder.layer``, ``model.layers``)."""
    import torch

    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    outer = [m for name, m in lists if not any(name.startswith(f"{other}.") for other, _ in lists)]
    return [block for blocks in outer for block in blocks]


def fine_tune_parallel(model: Any, data: Any, config: Any, seed: int, device: str, pad_id: int,
                       regression: bool, kind: Any = None) -> dict[str, Any]:
    """Train ``model`` in place with ``config.devices`` processes; returns rank 0's ``TrainStats`` fields."""
    import torch

    _check_devices(config.devices, device)
    with tempfile.TemporaryDirectory(prefix="flexharness-ddp-") as folder:
        work = Path(folder)
        torch.save({"model": model.cpu(), "data": data, "config": config, "seed": seed, "device": device,
                    "pad_id": pad_id, "regression": regression, "kind": kind.key if kind else None}, work / JOB)
        _launch(work, config.devices, device)
        model.load_state_dict(torch.load(work / TRAINED, map_location="cpu"))
        return json.loads((work / STATS).read_text(encoding="utf-8"))


def _check_devices(devices: int, device: str) -> None:
    if device != "cuda":
        return
    import torch

    if torch.cuda.device_count() < devices:
        raise TrainingError(f"'devices: {devices}' asks for {devices} GPUs per item, but this process sees "
                            f"{torch.cuda.device_count()}; ask the scheduler for {devices} GPUs per task "
                            "(or per xdist worker: --flex-devices-per-item), or lower 'devices'")


def _launch(work: Path, devices: int, device: str) -> None:
    """torch's launcher, ``devices`` processes on this machine; a failure quotes what stopped the first process
    that failed (``error-RANK.txt``), else the end of the launcher's output."""
    import flexharness

    package_root = str(Path(flexharness.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
    if device != "cuda" and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // devices))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
               f"--nproc-per-node={devices}", "-m", "flexharness.engine.ddp_worker", str(work)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0 or not (work / TRAINED).is_file():
        errors = sorted(work.glob(f"{ERROR_PREFIX}*.txt"))
        cause = (f"rank {errors[0].stem.removeprefix(ERROR_PREFIX)}: {errors[0].read_text(encoding='utf-8')}"
                 if errors else (done.stdout + done.stderr).strip())
        raise TrainingError(f"data-parallel fine-tuning over {devices} processes failed (exit {done.returncode}):"
                            f"\n{cause[-LOG_TAIL:]}")
