"""bf16 fine-tuning throughput on a GPU, as a fraction of the bf16 matmul peak measured in the same run.

Run on a machine with a CUDA GPU (no hub needed: a BERT-base-sized model is built from a config,
with random weights; throughput does not depend on the weights):

    python benchmarks/bench_gpu.py

The FLOP count is the one of bench_finetune.py: 6 * N * L per example of L real tokens plus the
attention term 12 * layers * d * L^2, on real (unpadded) tokens only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flexharness.engine import train  # noqa: E402
from flexharness.engine.data import Encoded  # noqa: E402
from flexharness.spec import TrainConfig  # noqa: E402


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
    torch.cuda.synchronize()
    start = time.perf_counter()
    stats = train.fine_tune(model, data, recipe, 0, "cuda", 0, regression=False)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    flops = 6 * dense * data.lengths.sum() + 12 * config.num_hidden_layers * config.hidden_size * (data.lengths**2).sum()
    achieved = flops / seconds / 1e12
    print(f"{torch.cuda.get_device_name()}: bf16 matmul peak {peak:.0f} TFLOP/s")
    print(f"BERT-base fine-tuning, {args.examples} tweet-length examples, batch {args.batch_size}: {seconds:.1f} s, "
          f"{data.lengths.sum() / seconds:,.0f} real tokens/s, {stats.steps / seconds:.1f} steps/s, "
          f"{achieved:.0f} TFLOP/s = {achieved / peak:.1%} of the bf16 peak")


if __name__ == "__main__":
    main()
