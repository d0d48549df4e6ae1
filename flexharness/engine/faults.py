"""Out of memory must cost one item, never the run.

A case that runs out of memory fails with a hint and leaves its memory free
for the next case.
"""

from __future__ import annotations

import traceback
from typing import Any

from flexharness.errors import TrainingError, causes, first_line
from flexharness.suite.spec import TrainConfig

# How torch's CPU allocator (and Windows' c10 allocator) words a failed allocation: a plain RuntimeError.
CPU_OOM_MARKERS = ("DefaultCPUAllocator: can't allocate memory", "not enough memory")


def out_of_memory(exc: BaseException | None) -> BaseException | None:
    """The out-of-memory error in ``exc``'s chain, if any: a device's OutOfMemoryError, a CPU allocation
    failure (a RuntimeError) or Python's MemoryError."""
    import torch

    for error in causes(exc) if exc is not None else ():
        if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
            return error
        if isinstance(error, RuntimeError) and any(m in str(error) for m in CPU_OOM_MARKERS):
            return error
    return None


class OutOfMemoryAsFailure:
    """Turn an out-of-memory error (of any device, the CPU too) into a :class:`TrainingError` naming what to lower.

    The error's traceback holds every frame of the failed step (model, activations,
    optimizer state, and closures over the model), and pytest keeps the last failure
    alive in ``sys.last_value``. Dropping that traceback, rather than chaining it, is
    what lets the memory go before the next case.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        found = out_of_memory(exc)
        if found is None:
            return False
        reason = first_line(found, "out of memory")
        for error in list(causes(exc)):
            if error.__traceback__ is not None:
                traceback.clear_frames(error.__traceback__)
            error.__traceback__ = None
        traceback.clear_frames(tb)
        del exc, tb, found, error
        config = self.config
        raise TrainingError(
            f"out of memory ({reason[:200]}) at batch_size {config.batch_size}, "
            f"eval_batch_size {config.eval_batch_size}, max_length {config.max_length}; "
            "lower 'batch_size' (or 'eval_batch_size') or 'max_length' under 'train:', train fewer weights "
            "('method: lora' or 'method: head'), set 'gradient_checkpointing: true', or run on a larger device"
        ) from None
