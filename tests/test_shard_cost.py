"""Shards balanced by cost: a suite mixing a tiny BERT and a 7B Llama (a config.json only: nothing is loaded)
splits by estimated FLOPs to within 20 % of 1/N, where examples × epochs put the whole 7B on one shard; the
measured plan is fixed by the first task, for every task and every rerun."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flexharness.engine.cost import TRAIN_FLOPS, Size, body_size, item_flops
from flexharness.rules import shards
from flexharness.harness.scaleout import assign_shards
from flexharness.suite.spec import TrainConfig

LLAMA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
            "max_position_embeddings": 4096}
SIZES = (40, 80, 120, 160, 200, 240, 280, 320)   # training rows of the eight cases
CASES = "tasks:\n" + "".join(f"  - {{name: t{i}, dataset: reviews, metric: accuracy, train: "
                              f"{{max_train_samples: {n}}}}}\n" for i, n in enumerate(SIZES))
TRAIN = "train: {epochs: 1, batch_size: 16, seeds: [0, 1], max_length: 32, max_eval_samples: 32}"
LINE = re.compile(r"flexharness: shard (\d)/(\d): (\d+) of (\d+) items, ([\d.]+)% of the (\w+) cost "
                  r"\(largest shard ([\d.]+)%, ideal ([\d.]+)%\)")


def test_parameter_counts_from_configs_match_the_published_sizes() -> None:
    llama = body_size(LLAMA_7B)
    assert 6.4e9 < llama.params + 2 * 32000 * 4096 < 6.8e9   # Llama-2-7B: 6.74B with both embedding tables
    minilm = body_size({"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
                        "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 30522})
    assert 10e6 < minilm.params < 11e6                        # all-MiniLM-L6-v2: 22.7M, 11.7M of them embeddings
    gqa = body_size({**LLAMA_7B, "num_key_value_heads": 8})
    assert gqa.params < llama.params and not body_size(None).known and body_size({}).params == body_size(None).params
    full = item_flops(llama, TrainConfig(max_train_samples=100, max_eval_samples=1))
    lora = item_flops(llama, TrainConfig(max_train_samples=100, max_eval_samples=1, method="lora"))
    assert lora / full == pytest.approx(TRAIN_FLOPS["lora"] / TRAIN_FLOPS["full"], rel=0.02)


def test_a_tiny_and_a_7b_model_share_the_shards_by_estimated_cost(pytester: pytest.Pytester, suite_text,
                                                                  tiny_model: Path) -> None:
    big = pytester.path / "llama-7b"
    big.mkdir()
    (big / "config.json").write_text(json.dumps(LLAMA_7B))
    pytester.makefile(".flex.yaml", toy=suite_text(CASES, train=TRAIN))
    for count in (2, 4):
        chosen, largest = [], []
        for k in range(1, count + 1):
            result = pytester.runpytest("--collect-only", "-q", f"--model={tiny_model}", f"--model={big}",
                                        f"--flex-shard={k}/{count}")
            line = next(LINE.search(text) for text in result.stdout.lines if LINE.search(text))
            assert (int(line[1]), int(line[2]), int(line[4]), line[6]) == (k, count, 32, "estimated")
            largest.append(float(line[7]) / 100)
            chosen.append({text for text in result.stdout.lines if "::tasks/" in text})
            assert int(line[3]) == len(chosen[-1])
        assert len(set().union(*chosen)) == 32 == sum(map(len, chosen))   # a partition of the run
        assert len(set(largest)) == 1 and largest[0] <= 1.2 / count        # every task computed the same plan
        assert all(any("llama-7b" in text for text in shard) for shard in chosen)   # the 7B on every shard


def test_examples_times_epochs_put_the_7b_on_one_shard_the_estimate_does_not() -> None:
    tiny, llama = Size(16_384, 2, 32), body_size(LLAMA_7B)
    groups = {(model, rows): item_flops(size, TrainConfig(max_train_samples=rows, max_length=32))
              for model, size in (("tiny", tiny), ("7b", llama)) for rows in SIZES}
    by_examples = assign_shards({g: float(g[1]) for g in groups}, 2)
    by_estimate = assign_shards(groups, 2)
    assert max(shards.shares(groups, by_examples, 2)) > 0.95   # today's plan, judged by the estimate
    assert max(shards.shares(groups, by_estimate, 2)) <= 1.2 / 2


def test_measured_rates_turn_estimates_into_seconds_and_cached_items_cost_nothing() -> None:
    assert shards.rate([(2.0, 1e9), (4.0, 1e9), (100.0, 1e9), (0.0, 5.0)]) == 4e-9
    costs = shards.calibrated({"a": 1e9, "b": 1e9, "c": 1e9, "d": 1e9},
                              {"a": "tiny", "b": "big", "c": "other", "d": "big"}, {"tiny": 1e-6, "big": 1e-9},
                              cached=["d"])
    assert costs["a"] == pytest.approx(1000.0) and costs["b"] == pytest.approx(1.0)
    assert costs["c"] == pytest.approx((1e-6 + 1e-9) / 2 * 1e9) and costs["d"] == shards.CACHED_COST


FAST = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0, 1], "
        "max_train_samples: 32, max_eval_samples: 32}")
THREE = "tasks:\n" + "".join(f"  - {{name: t{i}, dataset: reviews, metric: accuracy}}\n" for i in range(3))


def test_the_measured_plan_is_fixed_by_the_first_task_for_all_of_them(pytester: pytest.Pytester,
                                                                      suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(THREE, train=FAST))
    pytester.runpytest("-k", "t0").assert_outcomes(passed=2, deselected=4)   # earlier records: t0's two seeds
    refused = pytester.runpytest("--collect-only", "--flex-shard=1/2", "--flex-shard-by=measured")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--flex-shard-by measured keeps the run's shard plan beside the shard files*"])

    def task(k: int, count: int = 2) -> pytest.RunResult:
        return pytester.runpytest("--collect-only", "-q", f"--flex-shard={k}/{count}", "--flex-shard-by=measured",
                                  f"--flex-json=run/shard-{k}.json")

    first = task(1)
    line = next(LINE.search(text) for text in first.stdout.lines if LINE.search(text))
    assert line[6] == "measured"
    plan = json.loads((pytester.path / "run" / "plan.json").read_text())
    assert plan["count"] == 2 and len(plan["items"]) == 6 and sorted(set(plan["shards"].values())) == [0, 1]
    pytester.runpytest("-k", "t1").assert_outcomes(passed=2, deselected=4)  # the cache changes while the run goes
    second = task(2)
    ran = [{t for t in result.stdout.lines if "::tasks/" in t} for result in (first, second)]
    assert ran == [{n for n, s in plan["shards"].items() if s == k} for k in (0, 1)]   # both read the one plan
    other = task(1, count=3)
    assert other.ret == pytest.ExitCode.USAGE_ERROR
    other.stderr.fnmatch_lines(["*plan.json: the shard plan of another run (other items or another N)*"])
