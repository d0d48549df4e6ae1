"""The cost of logging the training curve: the fine-tuning loop with and without a tracker on its callback.

Run (with --steps 300 --repeats 3 it took 9 minutes at load average 16 on 2 shared cores):

    python benchmarks/bench_tracking.py [--steps 400] [--repeats 3]

A random-weight BERT (2 layers, hidden 64) fine-tunes on random token ids, three ways interleaved per
repeat: (a) no callback, (b) the tracking seam handing each read loss to a list, (c) a TensorBoard event
file (``engine.tracking.TensorBoardRun``). Prints seconds per step and the ratio of (b) and (c) to (a),
measured in the same run. The loop reads the losses back every 20 steps either way, so (b) and (c) add
no host sync, only the tracker's own writes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Collected:
    """A run that keeps the points: what the seam costs without any tracker library."""

    def __init__(self) -> None:
        self.points: list = []

    def steps(self, points) -> None:
        self.points.extend(points)


def model_and_data(examples: int):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from flexharness.engine.data import Encoded

    torch.manual_seed(0)
    config = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, num_labels=2)
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 48, examples)
    data = Encoded(tuple(rng.integers(5, 500, n) for n in lengths), None, lengths, rng.integers(0, 2, examples))
    return (lambda: BertForSequenceClassification(config)), data


def timed(make_model, data, recipe, progress) -> float:
    from flexharness.engine import train

    model = make_model()
    start = time.perf_counter()
    train.fine_tune(model, data, recipe, 0, "cpu", 0, regression=False, progress=progress)
    return time.perf_counter() - start


def main() -> None:
    import torch

    from flexharness.engine import tracking
    from flexharness.suite.spec import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4)
    make_model, data = model_and_data(args.steps * recipe.batch_size)
    seconds: dict[str, list[float]] = {"a none": [], "b seam": [], "c tensorboard": []}
    with tempfile.TemporaryDirectory() as tmp:
        target = tracking.Target(("tensorboard",), tmp, "bench")
        for repeat in range(args.repeats):
            seconds["a none"].append(timed(make_model, data, recipe, None))
            collected = Collected()
            seconds["b seam"].append(timed(make_model, data, recipe, tracking.with_steps([collected], None)))
            assert len(collected.points) == args.steps
            board = tracking.TensorBoardRun(target, f"run{repeat}", {}, False)
            seconds["c tensorboard"].append(timed(make_model, data, recipe, tracking.with_steps([board], None)))
            board.close("passed")
    base = statistics.median(seconds["a none"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<15} {median / args.steps * 1000:7.2f} ms/step  ratio to (a) {median / base:.3f}  "
              f"(median of {len(values)})")


if __name__ == "__main__":
    main()
