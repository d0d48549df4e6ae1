"""Tokenize once: the array cache (``engine.diskcache``) on a large synthetic dataset, offline.

Run (the lead's numbers use the default 100,000 rows; ``--rows 5000`` is a smoke run):

    python benchmarks/bench_tokenize.py [--rows 100000] [--workers 2]

Builds a CSV of random words and a tiny random-weight BERT with its tokenizer, then prints, in one run:
  - tokenizing the prepared rows without the cache, cold through the cache (tokenize, hash, write),
    and warm (load from disk), with the cold/warm ratio;
  - a ``-n WORKERS`` pytest-xdist run of a suite of two tasks on that data: each item's ``tokenize``
    record entry (computed, disk or memory, seconds; a ``disk`` item's seconds include waiting for the
    other worker to finish tokenizing), and whether it tokenized once;
  - a rerun with another ``max_length``, which must tokenize again (once).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TRAIN = ("train: {{epochs: 1, learning_rate: 1.0e-3, batch_size: 256, eval_batch_size: 512, warmup_ratio: 0.0, "
         "seeds: [0], max_length: {max_length}}}")
TASKS = ("datasets:\n  words: {{files: {{train: {data}}}, label: label, eval_fraction: 0.1}}\n"
         "tasks:\n  - {{name: first, dataset: words, metric: accuracy}}\n"
         "  - {{name: second, dataset: words, metric: macro_f1}}\n")


def write_data(path: Path, rows: int) -> None:
    """Sentences of 5 to 40 words drawn from the tiny model's vocabulary; the label is one word's presence."""
    from toy import NEGATIVE, NEUTRAL, POSITIVE, TOPICS

    words, rng = NEUTRAL + TOPICS + POSITIVE + NEGATIVE, random.Random(0)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("text,label\n")
        for _ in range(rows):
            text = [rng.choice(words) for _ in range(rng.randint(5, 40))]
            handle.write(f"{' '.join(text)},{'yes' if 'good' in text else 'no'}\n")


def engine_timings(model: Path, data: Path, cache: Path) -> None:
    """Cold against warm, in this process: the in-process memory is dropped before the warm load."""
    import numpy as np

    from flexharness.engine import data as data_mod
    from flexharness.engine import diskcache, models, runner
    from flexharness.suite.spec import DatasetSpec

    spec = DatasetSpec(name="words", files=(("train", str(data)),), label="label", eval_fraction=0.1)
    prepared = data_mod.prepare(spec, (), "classification", None, None)
    tokenizer = models.load_tokenizer(str(model))
    data_mod.encode(prepared.train.take(np.arange(100)), tokenizer, 64)   # warm-up, not measured
    start = time.perf_counter()
    data_mod.encode(prepared.train, tokenizer, 64)
    for _, examples in prepared.evals:
        data_mod.encode(examples, tokenizer, 64)
    plain = time.perf_counter() - start
    with diskcache.using(cache):
        cold = runner._encoded(prepared, str(model), 64, False)
        runner._tokenized.cache_clear()
        warm = runner._encoded(prepared, str(model), 64, False)
    print(f"tokenize {len(prepared.train) + len(prepared.eval)} rows: without the cache {plain:.2f} s; "
          f"cold {cold.seconds:.2f} s ({cold.source}); warm {warm.seconds:.2f} s ({warm.source}); "
          f"cold/warm ratio {cold.seconds / warm.seconds:.1f}")


def xdist_run(root: Path, model: Path, data: Path, max_length: int, workers: int, label: str) -> None:
    suite = f"suite: words\nmodel: {model}\n{TRAIN.format(max_length=max_length)}\n{TASKS.format(data=data)}"
    (root / "words.flex.yaml").write_text(suite, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-n", str(workers),
                           "--junitxml=junit.xml", "words.flex.yaml"], cwd=root, env=env, capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:])
        raise SystemExit(f"{label}: pytest exited with {done.returncode}")
    tokenize = {}
    for case in ET.parse(root / "junit.xml").iter("testcase"):
        for prop in case.iter("property"):
            if prop.get("name") == "flex_result":
                tokenize[case.get("name")] = json.loads(prop.get("value"))["tokenize"]
    computed = sum(entry["source"] == "computed" for entry in tokenize.values())
    entries = "; ".join(f"{name}: {e['source']} {e['seconds']:.2f} s" for name, e in sorted(tokenize.items()))
    print(f"{label} (-n {workers}, max_length {max_length}, {seconds:.1f} s): {entries}; "
          f"tokenized once: {computed == 1}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic CSV (at least 1,000)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers")
    args = parser.parse_args()
    from toy import build_tiny_bert

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_bert(root / "model")
        data = root / "words.csv"
        write_data(data, max(args.rows, 1000))
        engine_timings(model, data, root / "engine-cache")
        xdist_run(root, model, data, 48, args.workers, "first run")
        xdist_run(root, model, data, 32, args.workers, "rerun, another max_length")


if __name__ == "__main__":
    main()
