"""Out of memory must cost one item, never the run.

A case that runs out of memory fails with a hint and leaves its memory free
for the next case.
"""

from __future__ import annotations

import traceback
from typing import Any

from flexharness.errors import TrainingError, first_line
from flexharness.spec import TrainConfig


class OutOfMemoryAsFailure:
    """Turn an out-of-memory error into a :class:`TrainingError` that says what to lower.

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
        import torch

        if not isinstance(exc, torch.OutOfMemoryError):
            return False
        reason = first_line(exc, "out of memory")
        traceback.clear_frames(tb)
        exc.__traceback__ = None
        del exc, tb
        config = self.config
        raise TrainingError(
            f"out of memory ({reason[:200]}) at batch_size {config.batch_size}, "
            f"eval_batch_size {config.eval_batch_size}, max_length {config.max_length}; "
            "lower 'batch_size' (or 'eval_batch_size') or 'max_length' under 'train:', train fewer weights "
            "('method: lora' or 'method: head'), set 'gradient_checkpointing: true', or run on a larger device"
        ) from None
