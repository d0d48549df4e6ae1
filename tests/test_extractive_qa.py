"""Extractive QA end to end through pytest: the data layouts, the axes it runs on, stored answers, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_squad import official_v2
from toy import write_csv, write_jsonl
from toy_qa import flat, qa_rows

TRAIN = "train: {epochs: 4, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], max_length: 32}"


@pytest.fixture(scope="module")
def qa_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same kind of questions as SQuAD v1.1 JSONL, v2.0 Parquet (a third unanswerable) and flat CSV."""
    import datasets

    root = tmp_path_factory.mktemp("qa")
    v2 = root / "v2.parquet"
    datasets.Dataset.from_list(qa_rows(240, seed=1, unanswerable=0.3)).to_parquet(str(v2))
    return {"v1": write_jsonl(root / "v1.jsonl", qa_rows(240)), "v2": v2,
            "flat": write_csv(root / "flat.csv", flat(qa_rows(200, seed=2)))}


def suite(model: Path, files: dict[str, Path], body: str, train: str = TRAIN, extra: str = "") -> str:
    return f"""suite: qa
model: {model}
{train}
datasets:
  v1: {{kind: extractive_qa, files: {{train: {files['v1']}}}, doc_stride: 8}}
  v2: {{kind: extractive_qa, files: {{train: {files['v2']}}}, doc_stride: 8, null_threshold: 0.0}}
  flat: {{kind: extractive_qa, files: {{train: {files['flat']}}}, answer_text: answer, answer_start: start}}
{extra}{body}"""


TASKS = """tasks:
  - {name: squad, dataset: v1, metric: [squad_f1, exact_match]}
  - {name: squad2, dataset: v2, metric: squad_f1}
  - {name: flat, dataset: flat, metric: exact_match}
  - {name: sentiment, dataset: reviews, metric: accuracy}
stability:
  tasks: [squad]
  learning_rates: [3.0e-3, 1.0e-6]
  seeds: [0]
efficiency:
  task: squad
  sizes: [20, 120]
  seeds: [0]
gates:
  tasks: {p_avg: {min: 0.5}}
"""


def test_qa_tasks_learn_and_store_the_answers_they_are_scored_on(pytester: pytest.Pytester, tiny_model: Path,
                                                                 qa_files: dict[str, Path], toy_csv: Path) -> None:
    text = suite(tiny_model, qa_files, TASKS, extra=f"  reviews: {{files: {{train: {toy_csv}}}, label: label}}\n")
    pytester.makefile(".flex.yaml", qa=text)
    result = pytester.runpytest("--flex-json=out.json")
    result.assert_outcomes(passed=9)
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = {(c["axis"], c["name"]): c for c in doc["cases"]}
    squad = cases["tasks", "squad"]
    assert squad["score"] > 0.9 and squad["interval"]["low"] > 0.8
    assert cases["tasks", "flat"]["score"] > 0.9
    v2 = cases["tasks", "squad2"]["metrics"]
    assert {"has_answer_f1", "no_answer_f1", "has_answer_exact", "no_answer_exact"} <= set(v2)
    assert cases["tasks", "squad2"]["score"] > 0.7
    assert cases["stability", "squad@lr=1e-06"]["score"] < cases["stability", "squad@lr=3e-03"]["score"] - 0.3
    small, large = cases["efficiency", "squad@n=20"], cases["efficiency", "squad@n=120"]
    assert small["train_examples"] == 20 and large["train_examples"] == 120   # questions, not windows
    recomputed = _recomputed(pytester.path / "out.predictions.npz")
    for name in ("squad", "squad2", "flat"):
        for metric, value in cases["tasks", name]["metrics"].items():
            if metric in ("exact_match", "squad_f1"):
                assert recomputed[name][metric] == pytest.approx(value)


def _recomputed(path: Path) -> dict[str, dict[str, float]]:
    """Exact match and F1 of each tasks case from its stored answers and gold answers, by the official rules."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    found = {}
    for number, meta in enumerate(json.loads(str(arrays["index"]))):
        predicted = arrays[f"{number}/outputs"]
        if meta["axis"] != "tasks" or predicted.dtype.kind != "U":
            continue
        golds = [str(g).split("\x1f") if str(g) else [""] for g in arrays[f"{number}/labels"]]
        per_question = [[official_v2(g, str(p)) for g in gold] for gold, p in zip(golds, predicted)]
        found[meta["case"]] = {"exact_match": float(np.mean([max(s[0] for s in q) for q in per_question])),
                               "squad_f1": float(np.mean([max(s[1] for s in q) for q in per_question]))}
    return found


@pytest.mark.parametrize("dataset, body, message", [
    ("answer: x", "", "datasets.v1.answer: unknown key (did you mean 'answers'?)"),
    ("answer_text: a, answers: answers", "", "give 'answers' (SQuAD layout) or 'answer_text' and 'answer_start'"),
    ("answer_start: s", "", "datasets.v1.answer_start: flat answers need both 'answer_text' and 'answer_start'"),
    ("doc_stride: -1", "", "datasets.v1.doc_stride: must be at least 0"),
    ("doc_stride: 40", "", "'doc_stride: 40' must be below 'max_length: 32'"),
    ("null_threshold: .nan", "", "datasets.v1.null_threshold: expected a finite number"),
    ("n_best: 0", "", "datasets.v1.n_best: must be at least 1"),
    ("text: question", "", "is extractive QA, which reads 'question', 'context' and 'answers'"),
    ("", "tasks:\n  - {name: q, dataset: v1, metric: accuracy}\n", "metric 'accuracy' does not score a extractive_qa"),
    ("", "probe:\n  tasks: [q]\n", "task 'q' is extractive_qa: a probe fits a classifier on frozen sentence features"),
    ("", "slices: {by: agreement}\n", "'slices: by: agreement' is not defined for extractive QA"),
])
def test_bad_qa_suites_are_located_errors_at_collection(pytester: pytest.Pytester, qa_files: dict[str, Path],
                                                        dataset: str, body: str, message: str) -> None:
    tasks = "" if body.startswith("tasks:") else "tasks:\n  - {name: q, dataset: v1, metric: squad_f1}\n"
    text = f"""suite: bad
model: some-model
{TRAIN}
datasets:
  v1: {{kind: extractive_qa, files: {{train: {qa_files['v1']}}}{', ' + dataset if dataset else ''}}}
{tasks}{body}"""
    pytester.makefile(".flex.yaml", bad=text)
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret != 0
    out = result.stdout.str()
    assert message in out and "Traceback" not in out
    assert "bad.flex.yaml:" in out


def test_answer_starts_that_miss_their_text_are_counted_at_collection(pytester: pytest.Pytester, tiny_model: Path,
                                                                      tmp_path: Path) -> None:
    rows = qa_rows(40, seed=3)
    for row in rows[:3]:
        row["answers"]["answer_start"] = [row["answers"]["answer_start"][0] + 1]
    files = {"v1": write_jsonl(tmp_path / "shifted.jsonl", rows), "v2": tmp_path / "x", "flat": tmp_path / "y"}
    text = suite(tiny_model, files, "tasks:\n  - {name: q, dataset: v1, metric: squad_f1}\n").replace(
        "  v2:", "  #").replace("  flat:", "  #")
    pytester.makefile(".flex.yaml", qa=text)
    result = pytester.runpytest("--collect-only")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*qa.flex.yaml:5: datasets.v1.kind: split 'train': 3 of 40 answers do not sit where "
                                 "their answer_start says*"])
    assert "Traceback" not in result.stdout.str()


AXES = """tasks:
  - {name: squad, dataset: v1, metric: squad_f1}
domains:
  dataset: v1
  metric: squad_f1
  members:
    first: {where: {topic: [movie, film, the, was, a, plot, actor, show]}}
    second: {where: {topic: [really, quite, it, and, flight, phone, car, game]}}
  transfer: true
compression:
  task: squad
  methods:
    - {method: magnitude, sparsity: [0.5]}
    - {method: heads, fraction: 0.5}
    - {method: layers, keep: 1}
    - {method: int8}
fusion:
  task: squad
  methods: [ensemble, uniform_soup]
  runs: 2
slices: {by: length, bins: 2}
"""


def test_qa_on_domains_compression_and_fusion(pytester: pytest.Pytester, tiny_model: Path,
                                              qa_files: dict[str, Path]) -> None:
    pytester.makefile(".flex.yaml", qa=suite(tiny_model, qa_files, AXES))
    result = pytester.runpytest("--flex-json=out.json")
    result.assert_outcomes(passed=9)
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = {(c["axis"], c["name"]): c for c in doc["cases"]}
    assert {c["kind"] for c in doc["cases"]} == {"extractive_qa"}
    transfer = {(t["source"], t["target"]): t["score"] for t in doc["transfer"]}
    assert transfer["first", "second"] > 0.8 and transfer["second", "first"] > 0.8   # the answers are alike
    compressed = {name: c for (axis, name), c in cases.items() if axis == "compression"}
    assert len(compressed) == 4 and all(c["score"] is not None for c in compressed.values())
    assert cases["fusion", "squad-ensemble"]["score"] > 0.8 and cases["fusion", "squad-uniform_soup"]["score"] > 0.5
    sliced = cases["tasks", "squad"]["slices"]
    assert sliced and len(sliced["slices"]) == 2


FUSION = """tasks:
  - {name: squad2, dataset: v2, metric: [squad_f1, exact_match]}
domains:
  metric: squad_f1
  members:
    own: {dataset: v2}
    plain: {dataset: v1}
fusion: {task: squad2, methods: [ensemble], runs: [0, 1]}
"""


def _stored(cache: Path, nodeid: str) -> tuple[dict, dict]:
    """The record and per-example arrays of the one stored run whose node id ends with ``nodeid``."""
    from flexharness.results import predictions

    found = [json.loads(p.read_text())["record"] for p in (cache / "flexharness-results").glob("*.json")
             if json.loads(p.read_text())["nodeid"].endswith(nodeid)]
    assert len(found) == 1, nodeid
    return found[0], predictions.load(cache / "flexharness-outputs", found[0]["outputs"])


def test_qa_ensembles_post_process_the_mean_of_the_runs_start_and_end_logits(
        pytester: pytest.Pytester, tiny_model: Path, qa_files: dict[str, Path]) -> None:
    from flexharness.axes import load_suite
    from flexharness.engine import qa_spans, runner, soup
    from flexharness.engine.kinds.extractive_qa import LOGITS
    from flexharness.results import predictions
    from flexharness.rules import metrics

    train = TRAIN.replace("epochs: 4", "epochs: 1").replace("max_length: 32", "max_length: 32, max_train_samples: 80, "
                                                                              "max_eval_samples: 30")
    pytester.makefile(".flex.yaml", qa=suite(tiny_model, qa_files, FUSION, train))
    pytester.runpytest("-m", "fusion", "--flex-json=two.json").assert_outcomes(passed=1)
    cache = pytester.path / ".pytest_cache" / "d"
    runs = {s: _stored(cache, f"fusion/squad2[run-seed{s}]") for s in (0, 1)}
    record, fused = _stored(cache, "fusion/squad2-ensemble[seeds0-1]")
    case = json.loads((pytester.path / "two.json").read_text())["cases"][0]
    assert record["ensemble_method"] == case["ensemble_method"] == "mean_start_end_logits"
    assert record["trained_runs"] == [0, 1]
    spec = next(c for c in load_suite(pytester.path / "qa.flex.yaml").cases if c.name == "squad2-ensemble")
    windows = dict(runner.case_inputs(spec, str(tiny_model), False,
                                      soup.ingredient_data(spec, dict(spec.params)["held_out"])).evals)
    assert set(fused) == set(windows) == {record["eval_split"], soup.HELD_OUT, "domain plain"}
    for split, encoded in windows.items():
        settings = encoded.settings

        def answers(logits: np.ndarray) -> list[str]:
            return list(qa_spans.best_answers(logits[..., 0], logits[..., 1], encoded, settings.with_null,
                                              settings.null_threshold, settings.n_best,
                                              settings.max_answer_length).texts)

        stored = [runs[s][1][split][LOGITS] for s in (0, 1)]
        assert all(logits.dtype == np.float16 and logits.shape == (*encoded.offsets.shape[:2], 2) for logits in stored)
        for seed, logits in zip((0, 1), stored):   # each run's answers come from the logits it keeps
            assert list(runs[seed][1][split]["outputs"]) == answers(logits.astype(np.float32))
        mean = (stored[0].astype(np.float32) + stored[1].astype(np.float32)) / 2   # by hand, from the stored files
        assert list(fused[split]["outputs"]) == answers(mean)
        assert LOGITS not in fused[split]   # the ensemble stores answers, as any item
        labels = fused[split]["labels"]
        assert record["splits"][split]["score"] == pytest.approx(
            metrics.score(spec.metrics, labels, np.array(answers(mean)))[0])
    assert settings.with_null is False and windows[record["eval_split"]].settings.with_null   # v1 and v2 rules

    pytester.runpytest("-m", "fusion", "--flex-seeds", "1").assert_outcomes(passed=1)
    one, alone = _stored(cache, "fusion/squad2-ensemble[seeds1]")
    assert one["trained_runs"] == [] and one["gain"] == 0.0 and one["score"] == one["single_scores"]["1"]
    assert all(np.array_equal(alone[split]["outputs"], runs[1][1][split]["outputs"]) for split in windows)

    # A run stored without the logits (as before they were kept) is trained again, never voted on.
    ingredient = runs[1][0]["outputs"]
    predictions.save(cache / "flexharness-outputs", ingredient,
                     {split: {k: v for k, v in arrays.items() if k != LOGITS} for split, arrays in runs[1][1].items()})
    for path in (cache / "flexharness-results").glob("*.json"):
        if json.loads(path.read_text())["nodeid"].endswith("[seeds1]"):
            path.unlink()
    pytester.runpytest("-m", "fusion", "--flex-seeds", "1").assert_outcomes(passed=1)
    again, alone_again = _stored(cache, "fusion/squad2-ensemble[seeds1]")
    assert again["trained_runs"] == [1] and again["ensemble_method"] == "mean_start_end_logits"
    assert all(np.array_equal(alone_again[split]["outputs"], alone[split]["outputs"]) for split in windows)
    assert all(LOGITS in arrays for arrays in predictions.load(cache / "flexharness-outputs", ingredient).values())


@pytest.mark.parametrize("family", ["gpt2"])
def test_decoder_lms_answer_with_their_qa_head_and_every_method(pytester: pytest.Pytester, tmp_path: Path,
                                                                qa_files: dict[str, Path], family: str) -> None:
    from toy import build_tiny_decoder

    model = build_tiny_decoder(tmp_path / family, family)
    body = ("tasks:\n  - {name: squad, dataset: v1, metric: squad_f1,"
            " train: {epochs: 6, learning_rate: 5.0e-3, method: [full, lora, head]}}\n")
    pytester.makefile(".flex.yaml", qa=suite(model, qa_files, body))
    result = pytester.runpytest("--flex-json=out.json")
    result.assert_outcomes(passed=3)
    cases = {c["name"]: c for c in json.loads((pytester.path / "out.json").read_text())["cases"]}
    assert cases["squad-full"]["score"] > 0.6
    full, lora, head = (cases[f"squad-{m}"]["trainable_params"] for m in ("full", "lora", "head"))
    assert head < lora < full


def test_squad_suite_collects_offline_without_torch(pytester: pytest.Pytester) -> None:
    import shutil

    shutil.copy(Path(__file__).resolve().parents[1] / "suites" / "squad.flex.yaml", pytester.path)
    pytester.makeconftest("import sys\ndef pytest_collection_finish(session):\n"
                          "    print('TORCH-IMPORTED' if 'torch' in sys.modules else 'TORCH-ABSENT')\n")
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    result.stdout.fnmatch_lines(["squad.flex.yaml::tasks/squad[[]seed0]", "squad.flex.yaml::tasks/squad_v2[[]seed0]",
                                 "TORCH-ABSENT", "2 tests collected*"])


def test_fusions_held_out_slice_keeps_every_context_on_one_side(tmp_path: Path, tiny_model: Path,
                                                               qa_files: dict[str, Path]) -> None:
    """As the task's own hold-out does: a run chosen on a passage it was trained on would be chosen on its memory."""
    from flexharness.axes import load_suite
    from flexharness.engine import soup

    asked = ("what was good", "which word was good", "name the good word")
    rows = [dict(row, id=f"{row['id']}-{n}", question=question.replace("good", "bad") if "bad" in row["question"]
                 else question) for row in qa_rows(60, seed=4) for n, question in enumerate(asked)]
    files = dict(qa_files, v1=write_jsonl(tmp_path / "shared.jsonl", rows))
    (tmp_path / "qa.flex.yaml").write_text(suite(tiny_model, files, """tasks:
  - {name: squad, dataset: v1, metric: squad_f1}
fusion: {task: squad, methods: [ensemble], runs: [0, 1], held_out: 0.3}
"""))
    case = next(c for c in load_suite(tmp_path / "qa.flex.yaml").cases if c.axis == "fusion")
    prepared = soup.ingredient_data(case, 0.3)
    held = dict(prepared.evals)[soup.HELD_OUT]
    assert len(set(held.contexts)) < len(held.contexts)          # contexts with several questions were held out
    assert not set(held.contexts) & set(prepared.train.contexts)  # and none of them was trained on
