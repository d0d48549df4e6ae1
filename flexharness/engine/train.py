"""The fine-tuning loop and evaluation, in plain PyTorch.

Dynamic padding and length-grouped batches keep the compute on real tokens;
evaluation sorts by length and runs under ``inference_mode``. On CUDA the
forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from flexharness.engine import adapt
from flexharness.engine.data import Encoded
from flexharness.errors import TrainingError
from flexharness.spec import TrainConfig

ProgressFn = Callable[[dict[str, Any]], None]
LENGTH_GROUP_BATCHES = 50  # how many batches share one sort-by-length window


@dataclass(frozen=True)
class TrainStats:
    steps: int
    seconds: float
    train_tokens: int
    final_loss: float
    method: str = "full"
    trainable_params: int = 0
    total_params: int = 0


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def batch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group_by_length: bool) -> list[np.ndarray]:
    """Shuffled batches; with grouping, each window of 50 batches is sorted by length first."""
    order = rng.permutation(len(lengths))
    if group_by_length:
        window = batch_size * LENGTH_GROUP_BATCHES
        order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, math.ceil(len(order) / window)))])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(data: Encoded, indices: np.ndarray, pad_id: int, device: str) -> dict[str, Any]:
    import torch

    width = int(data.lengths[indices].max())
    ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    types = np.zeros((len(indices), width), dtype=np.int64) if data.token_type_ids is not None else None
    for row, i in enumerate(indices):
        n = data.lengths[i]
        ids[row, :n] = data.input_ids[i]
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = data.token_type_ids[i]
    pin = device == "cuda"
    batch = {"input_ids": ids, "attention_mask": mask} | ({"token_type_ids": types} if types is not None else {})
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    if pin:
        tensors = {k: v.pin_memory() for k, v in tensors.items()}
    return {k: v.to(device, non_blocking=pin) for k, v in tensors.items()}


def _autocast(device: str) -> contextlib.AbstractContextManager:
    import torch

    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _optimizer(model: Any, config: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    import torch
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if name.endswith(no_decay) else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    warmup = int(config.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def _loss(logits: Any, labels: Any, regression: bool) -> Any:
    import torch.nn.functional as F

    if regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def fine_tune(model: Any, data: Encoded, config: TrainConfig, seed: int, device: str, pad_id: int,
              regression: bool, progress: ProgressFn | None = None) -> TrainStats:
    """Train ``model`` in place; raises :class:`TrainingError` on a non-finite loss."""
    import time

    import torch

    seed_everything(seed)
    if device == "cuda":  # TF32 for the fp32 parts that autocast leaves in fp32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rng = np.random.default_rng(seed)
    model.to(device).train()
    adapted = adapt.prepare(model, config, device)  # method: full, lora or head
    steps_per_epoch = math.ceil(len(data.lengths) / config.batch_size)
    optimizer, scheduler = _optimizer(model, config, steps_per_epoch * config.epochs)
    labels = torch.from_numpy(data.labels)
    step, seen, start, loss_value = 0, 0, time.perf_counter(), float("nan")
    for epoch in range(config.epochs):
        for indices in batch_order(data.lengths, config.batch_size, rng, config.group_by_length):
            batch = collate(data, indices, pad_id, device)
            with _autocast(device):
                logits = model(**batch).logits
            loss = _loss(logits, labels[indices].to(device), regression)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(f"training diverged: loss is {loss_value} at step {step + 1} "
                                    f"(epoch {epoch + 1}, learning rate {scheduler.get_last_lr()[0]:.3g} at that step, "
                                    f"'learning_rate: {config.learning_rate:g}'); lower 'learning_rate' or "
                                    "check the labels")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(indices)
            if progress:
                progress({"epoch": epoch + 1, "step": step, "loss": loss_value, "seconds": time.perf_counter() - start,
                          "epochs": config.epochs, "total_steps": steps_per_epoch * config.epochs, "examples": seen})
    adapt.finish(adapted)
    return TrainStats(step, time.perf_counter() - start, int(data.lengths.sum()) * config.epochs, loss_value,
                      adapted.method, adapted.trainable, adapted.total)


def predict(model: Any, data: Encoded, batch_size: int, device: str, pad_id: int, regression: bool) -> np.ndarray:
    """Predictions in the original order; batches are sorted by length so little is padded."""
    import torch

    model.to(device).eval()
    order = np.argsort(data.lengths, kind="stable")
    outputs = np.empty(len(order), dtype=np.float32 if regression else np.int64)
    with torch.inference_mode(), _autocast(device):
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            logits = model(**collate(data, indices, pad_id, device)).logits.float()
            values = logits.squeeze(-1) if regression else logits.argmax(-1)
            outputs[indices] = values.cpu().numpy()
    return outputs


def release_memory() -> None:
    """Return a finished case's memory before the next case starts (GPU memory above all)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
