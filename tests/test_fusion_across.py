"""Fusion across models: greedy ensemble selection over the runs of several models, chosen on held-out rows,
scored and tested paired on the evaluation examples, from the stored per-example outputs only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from flexharness.axes import AXES, fusion_across, load_suite
from flexharness.engine.kinds import KINDS as KINDS_REGISTRY
from flexharness.engine.soup import HELD_OUT
from flexharness.errors import SuiteError
from flexharness.results import frames, predictions, verdict
from flexharness.results.io import read_results
from flexharness.rules import metrics
from flexharness.rules.selection import MAX_STEPS, greedy_selection
from toy import build_tiny_bert, build_zoo, choice_rows, sentiment_rows, tagged_rows, write_csv, write_jsonl
from toy_qa import qa_rows

TRAIN = ("train: {epochs: 3, learning_rate: 2.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_eval_samples: 120, max_length: 16}")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two candidates of one tiny checkpoint: its first layer and a random-weight copy of the whole."""
    source = build_tiny_bert(tmp_path_factory.mktemp("across-source"), layers=2)
    return build_zoo(source, tmp_path_factory.mktemp("across-zoo"), (1,))


def _suite(model: Path, data: Path, fusion: str, gates: str = "") -> str:
    return (f"suite: across\nmodel: {model}\n{TRAIN}\ndatasets:\n  reviews: {{files: {{train: {data}}}, label: label}}\n"
            "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
            f"fusion: {{task: polarity, {fusion}}}\n{gates}")


def _runs(cache: Path, doc: dict) -> dict[tuple[str, int], dict[str, dict[str, np.ndarray]]]:
    """Every stored fusion run's per-example outputs, by (model, seed), read from the result cache's files."""
    model_of = {c["model_fingerprint"]: c["model"] for c in doc["cases"]}
    found = {}
    for path in (cache / "flexharness-results").glob("*.json"):
        record = json.loads(path.read_text())
        if "[run-seed" in record["nodeid"]:
            record = record["record"]
            found[model_of[record["model_fingerprint"]], record["seed"]] = predictions.load(
                cache / "flexharness-outputs", record["outputs"])
    return found


def _caruana(library: list[tuple[str, int]], outputs: dict, labels: np.ndarray) -> list[int]:
    """Greedy ensemble selection written out: best single run, then additions while the accuracy rises."""
    def accuracy(chosen: list[int]) -> float:
        mean = np.mean([outputs[library[i]] for i in chosen], axis=0)
        return float(np.mean(mean.argmax(-1) == labels))

    chosen = [max(range(len(library)), key=lambda i: (accuracy([i]), -i))]
    while len(chosen) <= MAX_STEPS:
        value, best = max((accuracy([*chosen, i]), -i) for i in range(len(library)))
        if value <= accuracy(chosen):
            break
        chosen.append(-best)
    return chosen


def test_greedy_ensemble_selection_over_two_models_equals_a_computation_from_the_stored_outputs(
        pytester: pytest.Pytester, zoo: list[Path], tmp_path: Path) -> None:
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(400))
    gates = "gates:\n  fusion: {across_gain: {min: -1.0}}\n"
    pytester.makefile(".flex.yaml", across=_suite(zoo[0], data, "methods: ensemble, runs: 2", gates))
    models = [f"--model={m}" for m in zoo]
    result = pytester.runpytest(*models, "-v", "--flex-json=out.json", "--flex-report-dir=report")
    result.assert_outcomes(passed=2 + 2 + 1)
    result.stdout.fnmatch_lines(["*gates/fusion/across_gain::min PASSED*",
                                 "fusion across models (greedy ensemble selection *",
                                 "*suite *task *chosen on *chosen (weight) *best single *",
                                 "*across *polarity *fusion held-out *", "no soup across models: *",
                                 "PASS  across [[]all models[]] fusion/across_gain.min: gain.min = *"])
    doc = json.loads((pytester.path / "out.json").read_text())
    [entry] = doc["fusion_across_models"]
    assert entry["refused"] is None and entry["models"] == [str(m) for m in zoo]

    runs = _runs(pytester.path / ".pytest_cache" / "d", doc)
    library = [(str(model), seed) for model in zoo for seed in (0, 1)]
    assert sorted(runs) == sorted(library)
    split = entry["eval_split"]
    held, evaluation = ({key: runs[key][s]["outputs"] for key in library} for s in (HELD_OUT, split))
    labels = {s: runs[library[0]][s]["labels"] for s in (HELD_OUT, split)}
    chosen = _caruana(library, held, labels[HELD_OUT])
    weights = {library[i]: chosen.count(i) for i in dict.fromkeys(chosen)}
    assert [(c["model"], c["seed"], c["weight"]) for c in entry["chosen"]] == [
        (m, s, w) for (m, s), w in weights.items()]
    ensemble = np.mean([evaluation[library[i]] for i in chosen], axis=0).argmax(-1)
    single = evaluation[library[chosen[0]]].argmax(-1)
    y = labels[split]
    assert entry["score"] == pytest.approx(metrics.score(("accuracy",), y, ensemble)[0])
    assert (entry["best_single"]["model"], entry["best_single"]["seed"]) == library[chosen[0]]
    assert entry["best_single"]["score"] == pytest.approx(float(np.mean(single == y)))
    assert entry["gain"] == pytest.approx(float(np.mean(ensemble == y) - np.mean(single == y)))
    only_single, only_ensemble = int(((single == y) & (ensemble != y)).sum()), int(((ensemble == y) & (single != y)).sum())
    discordant = only_single + only_ensemble
    assert entry["test"] == "McNemar exact"
    assert entry["p_value"] == pytest.approx(binomtest(only_ensemble, discordant, 0.5).pvalue if discordant else 1.0)
    assert entry["forward_passes"] == len(weights) and entry["models_used"] == len({m for m, _ in weights})
    params = {c["model"]: c["total_params"] for c in doc["cases"] if c["axis"] == "fusion"}
    assert entry["total_params"] == sum(params[m] for m, _ in weights)

    table = frames.frames(pytester.path / "out.json")["fusion_across_models"]
    assert table.loc[0, "task"] == "polarity" and table.loc[0, "gain"] == pytest.approx(entry["gain"])
    summary = (pytester.path / "report" / "summary.md").read_text()
    assert "### Fusion across models" in summary and "Fusion across models" in (
        pytester.path / "report" / "index.html").read_text()

    merged = verdict.merged([(str(pytester.path / "out.json"), read_results(str(pytester.path / "out.json")))],
                            list(AXES))
    assert merged["fusion_across_models"] == doc["fusion_across_models"]   # from the file beside it alone

    with np.load(pytester.path / "out.predictions.npz", allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    index = json.loads(str(arrays["index"]))
    other = next(n for n, meta in enumerate(index) if meta["model"] == str(zoo[1]) and meta["axis"] == "fusion")
    field = fusion_across.run_field(split, "digest")
    arrays[f"{other}/{field}"] = np.array("0000000000000000")   # the random model scored on other examples
    np.savez(pytester.path / "out.predictions.npz", **arrays)
    merged = verdict.merged([(str(pytester.path / "out.json"), read_results(str(pytester.path / "out.json")))],
                            list(AXES))
    [refused] = merged["fusion_across_models"]
    assert "were scored on different examples of" in refused["refused"] and refused.get("score") is None
    gate = next(g for g in merged["gates"] if g["name"] == "fusion/across_gain.min")
    assert not gate["passed"] and "different examples" in gate["message"]

    pytester.makefile(".flex.yaml", across=_suite(zoo[0], data, "methods: ensemble, runs: 2, across_models: true",
                                                  gates))
    alone = pytester.runpytest(f"--model={zoo[0]}", "--flex-json=alone.json")
    alone.assert_outcomes(passed=2, failed=1)   # one model's items, cached; the gate has nothing to judge
    [entry] = json.loads((pytester.path / "alone.json").read_text())["fusion_across_models"]
    assert "needs at least 2 models" in entry["refused"]
    alone.stdout.fnmatch_lines(["*across/polarity: not computed: fusion across models needs at least 2 models*"])


def test_one_model_without_the_key_has_no_section(pytester: pytest.Pytester, tiny_model: Path, tmp_path: Path
                                                  ) -> None:
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(200))
    pytester.makefile(".flex.yaml", across=_suite(tiny_model, data, "methods: ensemble, runs: 1"))
    result = pytester.runpytest("-m", "fusion", "--flex-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert json.loads((pytester.path / "out.json").read_text())["fusion_across_models"] == []
    assert "fusion across models" not in result.stdout.str()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1), min_size=7, max_size=7), min_size=1, max_size=5),
       st.lists(st.integers(0, 1), min_size=7, max_size=7), st.booleans())
def test_greedy_selection_only_adds_what_improves_and_starts_from_the_best_run(
        votes: list[list[int]], labels: list[int], higher: bool) -> None:
    """Runs predict 0/1 per example; the ensemble is the mean vote; scores are accuracy (or error rate)."""
    runs, y = np.array(votes, dtype=float), np.array(labels)

    def score(chosen: list[int]) -> float:
        accuracy = float(np.mean((runs[chosen].mean(0) > 0.5) == y))
        return accuracy if higher else 1 - accuracy

    found = greedy_selection(len(runs), score, higher)
    singles = [score([i]) for i in range(len(runs))]
    assert found.scores[0] == (max if higher else min)(singles)
    assert found.chosen[0] == singles.index(found.scores[0])   # ties go to the earlier run
    assert all((b > a) if higher else (b < a) for a, b in zip(found.scores, found.scores[1:]))
    assert len(found.chosen) == len(found.scores) <= MAX_STEPS + 1
    assert found.scores[-1] == score(list(found.chosen))
    assert sum(found.weights.values()) == len(found.chosen)
    if found.stopped == "no improvement":
        best = [score([*found.chosen, i]) for i in range(len(runs))]
        assert not any((b > found.scores[-1]) if higher else (b < found.scores[-1]) for b in best)


KINDS = {
    "token_classification": ("{kind: token_classification, files: {train: data.jsonl}}", "entity_f1",
                             lambda: tagged_rows(240)),
    "multiple_choice": ("{kind: multiple_choice, files: {train: data.jsonl}, context: context, question: stem, "
                        "choices: choices}", "accuracy", lambda: choice_rows(240)),
    "extractive_qa": ("{kind: extractive_qa, files: {train: data.jsonl}, doc_stride: 8}", "squad_f1",
                      lambda: qa_rows(240)),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_fuses_across_models_with_its_own_ensemble_or_says_why_not(pytester: pytest.Pytester,
                                                                              zoo: list[Path], kind: str) -> None:
    """Tags are voted and choice probabilities averaged: the selected runs' ensemble, recomputed by the kind from
    the stored runs with the selection's weights, is the section's score. QA's ensemble averages window logits,
    which each model cuts with its own tokenizer: refused, with the reason."""
    dataset, metric, rows = KINDS[kind]
    write_jsonl(pytester.path / "data.jsonl", rows())
    text = (f"suite: fused\nmodel: {zoo[0]}\n{TRAIN.replace('16}', '32}')}\ndatasets:\n  d: {dataset}\n"
            f"tasks:\n  - {{name: t, dataset: d, metric: {metric}}}\nfusion: {{methods: ensemble, runs: 2}}\n")
    pytester.makefile(".flex.yaml", fused=text)
    pytester.runpytest(*(f"--model={m}" for m in zoo), "-m", "fusion", "--flex-json=out.json").assert_outcomes(
        passed=2)
    doc = json.loads((pytester.path / "out.json").read_text())
    [entry] = doc["fusion_across_models"]
    assert entry["kind"] == kind
    if kind == "extractive_qa":
        assert "cannot be combined from their stored outputs" in entry["refused"] and "score" not in entry
        (pytester.path / "reuse.flex.yaml").write_text(text.replace("runs: 2", "runs: 2, held_out: 0"))
        with pytest.raises(SuiteError, match=r"fusion.methods: the ensemble of task 't' \(extractive_qa\) averages "
                                             r"what its runs keep besides their outputs"):
            load_suite(pytester.path / "reuse.flex.yaml")
        return
    assert entry["refused"] is None
    runs = _runs(pytester.path / ".pytest_cache" / "d", doc)
    reader = KINDS_REGISTRY.get(kind)
    split = entry["eval_split"]
    weights = {(c["model"], c["seed"]): c["weight"] for c in entry["chosen"]}
    order = [str(m) for m in zoo]
    chosen = [{"outputs": runs[key][split]["outputs"]} for key in sorted(runs, key=lambda k: (order.index(k[0]), k[1]))
              for _ in range(weights.get(key, 0))]
    labels = runs[next(iter(runs))][split]["labels"]
    assert entry["score"] == pytest.approx(reader.score((metric,), labels, reader.ensemble(chosen, None))[0])
    best = entry["best_single"]
    assert best["score"] == pytest.approx(reader.score((metric,), labels,
                                                       runs[best["model"], best["seed"]][split]["outputs"])[0])
