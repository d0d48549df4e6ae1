"""One process of a data-parallel fine-tune (``engine.distributed``), started by ``torch.distributed.run``."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from flexharness.engine import train
from flexharness.engine.kinds import KINDS
from flexharness.engine.distributed import ERROR_PREFIX, JOB, STATS, TRAINED, Parallel


def worker(work: Path) -> None:
    """One process of the launch: join the group, train its share of every batch, rank 0 writes the result."""
    rank = int(os.environ["RANK"])
    try:
        train_share(work, rank)
    except BaseException as exc:   # the item's process quotes it: the launcher's own report names no cause
        (work / f"{ERROR_PREFIX}{rank}.txt").write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
        raise


def train_share(work: Path, rank: int) -> None:
    """Load the job, join the process group (gloo on CPU, NCCL on CUDA), run the loop on this rank's rows."""
    import torch
    import torch.distributed as dist

    job = torch.load(work / JOB, weights_only=False)
    parallel = Parallel(rank, int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]), job["config"].parallel)
    if job["device"] == "cuda":
        torch.cuda.set_device(parallel.local_rank)
    dist.init_process_group("nccl" if job["device"] == "cuda" else "gloo")
    try:
        model = job["model"]
        stats = train.fine_tune(model, job["data"], job["config"], job["seed"], job["device"], job["pad_id"],
                                job["regression"], kind=KINDS.get(job["kind"]) if job.get("kind") else None,
                                parallel=parallel)
        state = parallel.full_state(model)
        if parallel.rank == 0:
            torch.save(state, work / TRAINED)
            (work / STATS).write_text(json.dumps(dataclasses.asdict(stats)), encoding="utf-8")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
