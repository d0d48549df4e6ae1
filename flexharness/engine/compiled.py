"""torch.compile for the training forward pass, compiled once per process and reused by every case.

A compiled graph is only worth its compile time when many cases share it. So the model is an
argument of the compiled function, not a constant captured in it: dynamo lifts a module's parameters
into graph inputs, and a fresh copy of the same architecture (the next case, the next seed) runs the
graph compiled for the first one. Dynamic padding gives every batch its own width, and every new
shape is a new graph; batches are therefore padded up to a multiple of ``BUCKET`` tokens, which bounds
the graphs to ``max_length / BUCKET`` widths (times two batch sizes: the full one and the last one).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

BUCKET = 16          # sequence lengths are padded up to a multiple of this under compile
GRAPH_LIMIT = 64     # graphs dynamo may keep for the forward function: widths × batch sizes × train/eval


@functools.lru_cache(maxsize=1)
def compiled_forward() -> Callable[[Any, dict[str, Any]], Any]:
    """``forward(model, batch) -> logits``, compiled lazily on first call; one per process."""
    import torch

    def forward(model: Any, batch: dict[str, Any]) -> Any:
        return model(**batch).logits

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, GRAPH_LIMIT)
    return torch.compile(forward, dynamic=False)


def bucketed_forward(pad_id: int, max_length: int) -> Callable[[Any, dict[str, Any]], Any]:
    """The compiled forward on batches padded to a bucket: what ``train.fine_tune(forward=...)`` takes."""
    forward = compiled_forward()
    return lambda model, batch: forward(model, bucketed(batch, pad_id, max_length))


def bucketed(batch: dict[str, Any], pad_id: int, max_length: int) -> dict[str, Any]:
    """The batch right-padded to the next multiple of ``BUCKET`` (at most ``max_length``); masks hide the pad."""
    import torch.nn.functional as F

    width = batch["input_ids"].shape[1]
    target = max(width, min(-(-width // BUCKET) * BUCKET, max_length))
    if target == width:
        return batch
    extra = (0, target - width)
    return {name: F.pad(value, extra, value=pad_id if name == "input_ids" else 0) if value.dim() == 2 else value
            for name, value in batch.items()}
