"""The fine-tuning loop and evaluation, in plain PyTorch.

Dynamic padding and length-grouped batches keep the compute on real tokens;
evaluation sorts by length and runs under ``inference_mode``. AdamW is the fused
kernel on CPUs too, and a CPU run keeps freed blocks in the heap (``engine.allocator``):
together a fifth of a CPU step (docs/speed.md). The forward pass
runs under bf16 autocast on CUDA, and on a CPU with native bf16 instructions when
the case asks for ``precision: bf16`` (see :func:`resolve_precision`). The loss is
checked for non-finite values every ``LOSS_CHECK_STEPS`` steps, not on every step,
so a GPU never waits for the host between steps.
"""

from __future__ import annotations

import contextlib
import functools
import math
import queue
import random
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from flexharness.engine import adapt, allocator
from flexharness.engine.data import Encoded
from flexharness.errors import TrainingError
from flexharness.rules.metrics import predictions_from_outputs
from flexharness.suite.spec import TrainConfig

ProgressFn = Callable[[dict[str, Any]], None]
LENGTH_GROUP_BATCHES = 50  # how many batches share one sort-by-length window
LOSS_CHECK_STEPS = 20      # steps between non-finite checks of the loss (one host sync each)
PREFETCH_BATCHES = 2       # batches a CUDA run prepares ahead, in pinned memory
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 matmuls
CPU_BF16_MIN_SPEEDUP = 1.5  # bf16 over fp32 in bench_finetune.py before `auto` may take bf16 on a CPU
CPU_AUTO_BF16 = False       # measured on an avx512_bf16 CPU: below that speed-up (docs/speed.md)


@dataclass(frozen=True)
class TrainStats:
    steps: int
    seconds: float
    train_tokens: int
    final_loss: float
    precision: str = "fp32"
    method: str = "full"
    trainable_params: int = 0
    total_params: int = 0
    devices: int = 1
    parallel: str = ""   # ddp or fsdp when devices > 1


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
    return to_device(host_batch(data, indices, pad_id, pin=device == "cuda"), device)


def host_batch(data: Encoded, indices: np.ndarray, pad_id: int, pin: bool,
               labels: np.ndarray | None = None) -> dict[str, Any]:
    """A padded batch as CPU tensors (pinned for an asynchronous copy to a GPU), labels included when given."""
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
    batch = {"input_ids": ids, "attention_mask": mask} | ({"token_type_ids": types} if types is not None else {})
    batch |= {"labels": labels[indices]} if labels is not None else {}
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    return {k: v.pin_memory() for k, v in tensors.items()} if pin else tensors


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=device == "cuda") for k, v in batch.items()}


def prepared_ahead(make: Callable[[np.ndarray], dict[str, Any]], batches: list[np.ndarray],
                   device: str) -> Iterator[dict[str, Any]]:
    """Host batches in order; on CUDA a thread builds the next ones while the GPU works on this one."""
    if device != "cuda":
        yield from (make(indices) for indices in batches)
        return
    ready: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def produce() -> None:
        for indices in batches:
            try:
                item: Any = make(indices)
            except Exception as exc:  # handed to the training thread, which raises it
                item = exc
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set() or isinstance(item, Exception):
                return

    worker = threading.Thread(target=produce, name="flexharness-batches", daemon=True)
    worker.start()
    try:
        for _ in batches:
            item = ready.get()
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = set(handle.read().split())
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: str, warn: bool = True) -> str:
    """The precision a case really runs in: ``auto`` is bf16 on CUDA; on a CPU it is bf16 only where
    ``CPU_AUTO_BF16`` records that ``bench_finetune.py`` showed the rule to hold, else fp32 (docs/speed.md).

    ``bf16`` on a CPU without native bf16 instructions falls back to fp32, with a warning when ``warn``
    (training warns; evaluation and records, which follow it, do not repeat it).
    """
    if precision == "auto":
        native = device == "cpu" and CPU_AUTO_BF16 and cpu_has_native_bf16()
        return "bf16" if device == "cuda" or native else "fp32"
    if precision == "bf16" and device == "cpu" and not cpu_has_native_bf16():
        if warn:
            warnings.warn("precision bf16: this CPU has no native bf16 instructions (avx512_bf16 or amx_bf16), "
                          "where bf16 is many times slower than fp32; running in fp32", RuntimeWarning, stacklevel=2)
        return "fp32"
    return precision


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where the resolved precision asks for it; a no-op context otherwise."""
    import torch

    if precision == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


FLOAT32_MAX = 3.4028234663852886e38
FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # one AdamW kernel a step, as Trainer does; on a CPU 5x the per-tensor loop


def _optimizer(model: Any, config: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    import torch

    if config.learning_rate > FLOAT32_MAX:   # torch would stop with "RuntimeError: ... without overflow"
        raise TrainingError(f"training diverged: 'learning_rate: {config.learning_rate:g}' is beyond the float32 "
                            f"range ({FLOAT32_MAX:.3g}), so the first update would make every weight infinite; "
                            "lower 'learning_rate'")

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if name.endswith(no_decay) else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    device = next(model.parameters()).device.type
    fused = {"fused": True} if device in FUSED_ADAMW_DEVICES else {}
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, **fused)
    warmup = int(config.warmup_ratio * total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(linear_warmup, warmup=warmup,
                                                                                      total=total_steps))


def linear_warmup(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor of transformers' ``get_linear_schedule_with_warmup``: up from 0 over ``warmup``
    steps, then down to 0 at ``total``. Written here because importing that function costs a run about 1 s
    (transformers' trainer utilities, and peft with them)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def loss_of(logits: Any, labels: Any, regression: bool) -> Any:
    import torch.nn.functional as F

    if regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def fine_tune(model: Any, data: Encoded, config: TrainConfig, seed: int, device: str, pad_id: int,
              regression: bool, progress: ProgressFn | None = None, kind: Any = None,
              parallel: Any = None, compiled: Callable[[Any, dict[str, Any]], Any] | None = None) -> TrainStats:
    """Train ``model`` in place; raises :class:`TrainingError` on a non-finite loss.

    ``compiled(model, batch) -> logits`` replaces the model's own call (``engine.compiled.bucketed_forward``).

    Losses stay on the device and are checked every ``LOSS_CHECK_STEPS`` steps (and at the end); the
    error names the first step whose loss was not finite. ``progress`` sees the loss of the last check, and in
    ``losses`` the (step, loss, learning rate) of each step read at this one (none between checks).
    ``devices: N`` above 1 trains in N processes (``engine.distributed``), each of which runs this loop
    with its ``parallel`` place: its share of each batch, gradients averaged by DDP.
    ``kind`` (an ``engine.kinds.TaskKind``) builds the batches and the loss; without one, a sequence
    classifier's (``regression``: mean squared error).
    """
    import time

    import torch

    if config.devices > 1 and parallel is None:
        from flexharness.engine.distributed import fine_tune_parallel

        return TrainStats(**fine_tune_parallel(model, data, config, seed, device, pad_id, regression, kind))
    seed_everything(seed)
    precision = resolve_precision(config.precision, device)
    if device == "cuda":  # TF32 for the fp32 parts that autocast leaves in fp32; never under an explicit fp32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision != "fp32"
    rng = np.random.default_rng(seed)
    allocator.for_device(device)
    model.to(device).train()
    adapted = adapt.prepare(model, config, device)  # method: full, lora or head
    forward = parallel.wrap(model, device) if parallel else model
    steps_per_epoch = math.ceil(len(data.lengths) / config.batch_size)
    optimizer, scheduler = _optimizer(model, config, steps_per_epoch * config.epochs)
    step, seen, start, loss_value = 0, 0, time.perf_counter(), float("nan")
    pending: list[tuple[Any, int, int, float]] = []   # (loss on the device, step, epoch, learning rate)
    for epoch in range(config.epochs):
        batches = batch_order(data.lengths, config.batch_size, rng, config.group_by_length)
        shares = [parallel.share(b) for b in batches] if parallel else [(b, 1.0) for b in batches]
        make = (functools.partial(kind.host_batch, data, pad_id=pad_id, pin=device == "cuda", with_labels=True)
                if kind else functools.partial(host_batch, data, pad_id=pad_id, pin=device == "cuda",
                                               labels=data.labels))
        for indices, (_, weight), host in zip(batches, shares, prepared_ahead(make, [r for r, _ in shares], device)):
            batch = to_device(host, device)
            labels = batch.pop("labels")
            with autocast(device, precision):
                if compiled is not None:
                    logits = compiled(model, batch)
                else:
                    logits = kind.logits(forward(**batch)) if kind else forward(**batch).logits
            loss = kind.loss(logits, labels) if kind else loss_of(logits, labels, regression)
            pending.append((loss.detach(), step + 1, epoch + 1, scheduler.get_last_lr()[0]))
            (loss * weight if parallel else loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(indices)
            read: list[tuple[int, float, float]] = []
            if len(pending) == LOSS_CHECK_STEPS or step == steps_per_epoch * config.epochs:
                read, pending = _checked_losses(pending, config), []
                loss_value = read[-1][1]
            if progress:
                progress({"epoch": epoch + 1, "step": step, "loss": loss_value, "seconds": time.perf_counter() - start,
                          "epochs": config.epochs, "total_steps": steps_per_epoch * config.epochs, "examples": seen,
                          "losses": read})
    loss_value = _checked_losses(pending, config)[-1][1] if pending else loss_value
    adapt.finish(adapted)
    return TrainStats(step, time.perf_counter() - start, int(data.lengths.sum()) * config.epochs, loss_value,
                      precision=precision, method=adapted.method, trainable_params=adapted.trainable,
                      total_params=adapted.total, devices=parallel.world if parallel else 1,
                      parallel=parallel.mode if parallel else "")


def _checked_losses(pending: list[tuple[Any, int, int, float]], config: TrainConfig) -> list[tuple[int, float, float]]:
    """(step, loss, learning rate) of every pending loss, read in one host sync; :class:`TrainingError` at the
    first non-finite one. The caller's progress callback gets them all (``losses``): trackers plot every step."""
    import torch

    values = torch.stack([loss for loss, *_ in pending]).float().cpu()
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        _, step, epoch, rate = pending[first]
        raise TrainingError(f"training diverged: loss is {float(values[first])} at step {step} "
                            f"(epoch {epoch}, learning rate {rate:.3g} at that step, "
                            f"'learning_rate: {config.learning_rate:g}'); lower 'learning_rate' or "
                            "check the labels")
    return [(step, loss, rate) for loss, (_, step, _, rate) in zip(values.tolist(), pending)]


def predict(model: Any, data: Encoded, batch_size: int, device: str, pad_id: int, regression: bool,
            precision: str = "auto", kind: Any = None) -> np.ndarray:
    """Predicted class ids (or values, for regression) in the original order."""
    return predictions_from_outputs(predict_outputs(model, data, batch_size, device, pad_id, regression, precision,
                                                    kind))


def predict_outputs(model: Any, data: Encoded, batch_size: int, device: str, pad_id: int,
                    regression: bool, precision: str = "auto", kind: Any = None) -> np.ndarray:
    """Class probabilities (examples × labels), or the predicted value (examples × 1), in the original order.

    Batches are sorted by length so little is padded. Probabilities rather than ids: ensembles
    average them, and per-example statistics need the ids they give. With ``kind`` (an
    ``engine.kinds.TaskKind``) the kind's batches and outputs: ``kind.gather`` of each row's ``row_outputs``.
    """
    import torch

    if kind is not None:
        return kind.gather(data, predict_rows(model, data, batch_size, device, pad_id, precision, kind))
    allocator.for_device(device)
    model.to(device).eval()
    order = np.argsort(data.lengths, kind="stable")
    outputs: np.ndarray | None = None
    with torch.inference_mode(), autocast(device, resolve_precision(precision, device, warn=False)):
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            logits = model(**collate(data, indices, pad_id, device)).logits.float()
            values = logits if regression else logits.softmax(-1)
            if outputs is None:
                outputs = np.empty((len(order), values.shape[-1]), dtype=np.float32)
            outputs[indices] = values.cpu().numpy()
    return outputs if outputs is not None else np.empty((0, 1), dtype=np.float32)


def predict_rows(model: Any, data: Encoded, batch_size: int, device: str, pad_id: int, precision: str,
                 kind: Any) -> list[Any]:
    """``kind.row_outputs`` of every row of ``data``, predicted in length order, handed back in their own order
    (before ``kind.gather``: a run an output ensemble combines keeps more of them, ``kind.ensemble_arrays``)."""
    import torch

    allocator.for_device(device)
    model.to(device).eval()
    order = np.argsort(data.lengths, kind="stable")
    rows: list[Any] = [None] * len(order)
    with torch.inference_mode(), autocast(device, resolve_precision(precision, device, warn=False)):
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            batch = to_device(kind.host_batch(data, indices, pad_id, pin=device == "cuda", with_labels=False), device)
            for index, row in zip(indices, kind.row_outputs(kind.logits(model(**batch)), batch)):
                rows[index] = row
    return rows


def release_memory() -> None:
    """Return a finished case's memory before the next case starts (GPU memory above all)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
