"""bf16 fine-tuning throughput on a GPU, as a fraction of the bf16 matmul peak measured in the same run,
and the share of the time the GPU waits for data.

Run on a machine with a CUDA GPU (no hub needed: a BERT-base-sized model is built from a config,
with random weights; throughput does not depend on the weights):

    python benchmarks/bench_gpu.py

Three numbers besides the throughput:
  - host syncs: synchronizing calls during train.fine_tune, counted with torch's sync debug mode
    (the loop itself syncs once per LOSS_CHECK_STEPS steps; more means a library call syncs);
  - waiting for data: 1 - (the same steps on batches already on the GPU) / (train.fine_tune), both
    timed in this run: the share of fine_tune's time that is not GPU work;
  - the device-only loop's own share of the bf16 peak (what the model and batch size allow).

The FLOP count is the one of bench_finetune.py: 6 * N * L per example of L real tokens plus the
attention term 12 * layers * d * L^2, on real (unpadded) tokens only.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flexharness.engine import train  # noqa: E402
from flexharness.engine.data import Encoded  # noqa: E402
from flexharness.suite.spec import TrainConfig  # noqa: E402


def bf16_peak() -> float:
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (time.perf_counter() - start) / 1e12


def tweet_like(n: int, vocab: int, rng: np.random.Generator) -> Encoded:
    """Token lengths drawn like real tweets (mean ~33, max 128): what dynamic padding meets."""
    lengths = np.clip(rng.gamma(4.0, 8.5, size=n).astype(np.int64) + 4, 4, 128)
    ids = tuple(rng.integers(1000, vocab, size=length) for length in lengths)
    return Encoded(ids, None, lengths, rng.integers(0, 3, size=n))


def flops_of(model, lengths: np.ndarray) -> float:
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    return float(6 * dense * lengths.sum() + 12 * config.num_hidden_layers * config.hidden_size * (lengths**2).sum())


def device_only_seconds(model, data: Encoded, recipe: TrainConfig, device: str = "cuda") -> float:
    """fine_tune's steps (bf16 autocast, loss, backward, clipping, fused AdamW) on batches already on the GPU."""
    import torch

    cuda = device == "cuda"
    batches = train.batch_order(data.lengths, recipe.batch_size, np.random.default_rng(0), recipe.group_by_length)
    ready = [train.to_device(train.host_batch(data, b, 0, pin=cuda, labels=data.labels), device) for b in batches]
    optimizer, scheduler = train._optimizer(model.to(device).train(), recipe, len(ready))
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in ready:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with train.autocast(device, "bf16" if cuda else "fp32"):
            logits = model(**inputs).logits
        train.loss_of(logits, batch["labels"], False).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timed_fine_tune(model, data: Encoded, recipe: TrainConfig) -> tuple[float, int, int]:
    """(seconds, steps, host syncs) of train.fine_tune, syncs counted by torch's sync debug mode."""
    import torch

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        stats = train.fine_tune(model, data, recipe, 0, "cuda", 0, regression=False)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    return seconds, stats.steps, syncs


def main() -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=32768)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "bench_gpu.py needs a CUDA GPU"
    torch.backends.cuda.matmul.allow_tf32 = True
    config = BertConfig(num_labels=3)  # BERT-base: 12 layers, 768 hidden, 110M parameters
    model = BertForSequenceClassification(config)
    data = tweet_like(args.examples, config.vocab_size, np.random.default_rng(0))
    peak = bf16_peak()
    recipe = TrainConfig(batch_size=args.batch_size, learning_rate=2e-5)
    warm = tweet_like(args.batch_size * 20, config.vocab_size, np.random.default_rng(1))
    train.fine_tune(model, warm, recipe, 0, "cuda", 0, regression=False)
    device_only_seconds(model, warm, recipe)
    seconds, steps, syncs = timed_fine_tune(model, data, recipe)
    device_seconds = device_only_seconds(model, data, recipe)
    flops = flops_of(model, data.lengths)
    achieved, device_achieved = flops / seconds / 1e12, flops / device_seconds / 1e12
    print(f"{torch.cuda.get_device_name()}: bf16 matmul peak {peak:.0f} TFLOP/s")
    print(f"BERT-base fine-tuning, {args.examples} tweet-length examples, batch {args.batch_size}: {seconds:.1f} s, "
          f"{data.lengths.sum() / seconds:,.0f} real tokens/s, {steps / seconds:.1f} steps/s, "
          f"{achieved:.0f} TFLOP/s = {achieved / peak:.1%} of the bf16 peak")
    print(f"host syncs during fine_tune: {syncs} in {steps} steps "
          f"(the loss check accounts for {-(-steps // train.LOSS_CHECK_STEPS)})")
    print(f"same steps on batches already on the GPU: {device_seconds:.1f} s, {device_achieved:.0f} TFLOP/s = "
          f"{device_achieved / peak:.1%} of the bf16 peak; fine_tune waits for data "
          f"{max(0.0, 1 - device_seconds / seconds):.1%} of its time")


if __name__ == "__main__":
    main()
