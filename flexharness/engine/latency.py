"""Latency measured the way benchmarks measure it: one fixed batch shape, warm-up, repeated timing, median.

Per-example time from an evaluation pass mixes batch shapes (batches sorted by length) and first-call costs;
comparing compression methods needs the same work for each. Every method of a case times the same batch
(the first ``BATCH`` evaluation examples, padded to the longest of them), after ``WARMUP`` untimed calls, over
``REPEATS`` timed calls; the record keeps the median and the quartiles per example, and whether the machine
was loaded (1-minute load average above the cores this process may use), which makes the times suspect.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from flexharness.engine import train
from flexharness.engine.data import Encoded

BATCH = 32
WARMUP = 3
REPEATS = 15


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_load() -> dict[str, Any]:
    """The 1-minute load average against the usable cores; ``loaded`` when it exceeds them."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    usable = cores()
    return {"load_1min": None if load is None else round(load, 2), "cores": usable,
            "loaded": load is not None and load > usable}


def measure(model: Any, data: Encoded, device: str, pad_id: int, precision: str = "auto",
            kind: Any = None) -> dict[str, Any]:
    """Median and quartiles of milliseconds per example for one fixed batch (of the task kind's rows: texts,
    windows, items), with the batch shape and the load before and after (the worse of the two counts)."""
    import torch

    indices = np.arange(min(BATCH, len(data.lengths)))
    batch = (train.to_device(kind.host_batch(data, indices, pad_id, pin=False, with_labels=False), device)
             if kind is not None else train.collate(data, indices, pad_id, device))
    model.to(device).eval()
    before = machine_load()
    times = []
    with torch.inference_mode(), train.autocast(device, train.resolve_precision(precision, device, warn=False)):
        for step in range(WARMUP + REPEATS):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(**batch)
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= WARMUP:
                times.append((time.perf_counter() - start) * 1000.0 / len(indices))
    after = machine_load()
    q1, median, q3 = np.quantile(times, [0.25, 0.5, 0.75])
    return {"median_ms": round(float(median), 4), "q1_ms": round(float(q1), 4), "q3_ms": round(float(q3), 4),
            "batch": [len(indices), int(batch["input_ids"].shape[-1])], "warmup": WARMUP, "repeats": REPEATS,
            "load_1min": max(v for v in (before["load_1min"], after["load_1min"], 0.0) if v is not None),
            "cores": before["cores"], "loaded": before["loaded"] or after["loaded"]}
