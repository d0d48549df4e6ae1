"""The fusion axis end to end: ingredients trained once and shared, ensembles from stored outputs, soups."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from flexharness.axes import load_suite
from flexharness.errors import SuiteError
from flexharness.results import predictions
from flexharness.rules import metrics
from toy import sentiment_rows, write_jsonl

TRAIN = "train: {epochs: 3, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0]}"
TASK = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
# The task is in the domain of its own data (the same dataset and filter); forum and forum-phone are other domains.
DOMAINS = """domains:
  metric: accuracy
  members:
    reviews: {dataset: reviews}
    forum: {dataset: forum}
    forum-phone: {dataset: forum, where: {text: {matches: phone}}}
"""


@pytest.fixture
def domains_text(suite_text, tmp_path_factory: pytest.TempPathFactory):
    """Suite YAML with a second source, ``forum``, beside ``reviews``; one epoch, so that the runs differ."""
    forum = write_jsonl(tmp_path_factory.mktemp("forum") / "forum.jsonl", sentiment_rows(200, seed=7))
    return lambda body: suite_text(body, TRAIN.replace("epochs: 3", "epochs: 2")).replace("datasets:\n",
                                                        f"datasets:\n  forum:\n    files: {{train: {forum}}}\n")


def fusion(extra: str = "", methods: str = "[ensemble, uniform_soup, greedy_soup]", runs: str = "3") -> str:
    return TASK + f"fusion: {{task: polarity, methods: {methods}, runs: {runs}}}\n" + extra


def _doc(pytester: pytest.Pytester, name: str) -> dict:
    return json.loads((pytester.path / name).read_text())


def _fused(doc: dict) -> dict[str, dict]:
    return {c["method"]: c for c in doc["cases"] if c["axis"] == "fusion"}


def _ingredients(cache: Path) -> dict[int, dict]:
    """The stored ingredient runs by seed, read from the result cache's files."""
    found = {}
    for path in (cache / "flexharness-results").glob("*.json"):
        entry = json.loads(path.read_text())
        if "[run-seed" in entry["nodeid"]:
            found[entry["record"]["seed"]] = entry["record"]
    return found


def test_ensemble_soups_gain_gate_and_a_fully_cached_rerun(pytester: pytest.Pytester, suite_text) -> None:
    gates = "gates:\n  fusion: {gain: {min: -1.0}}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(fusion(gates), TRAIN))
    result = pytester.runpytest("-v", "--flex-json=out.json", "--flex-report-dir=report")
    result.assert_outcomes(passed=1 + 3 + 1)
    result.stdout.fnmatch_lines(["*fusion/polarity-ensemble[[]seeds0-1-2] PASSED*",
                                 "fusion (gain: *", "task *model *method *",
                                 "polarity *ensemble *3 *3x", "polarity *greedy_soup *1x",
                                 "PASS*fusion/gain.min*"])
    doc = _doc(pytester, "out.json")
    fused = _fused(doc)
    assert sum(len(c["trained_runs"]) for c in fused.values()) == 3  # each run trained once, then shared
    cache = pytester.path / ".pytest_cache" / "d"
    runs = _ingredients(cache)
    assert sorted(runs) == [0, 1, 2] and len(list((cache / "flexharness-weights").glob("*.safetensors"))) == 3
    arrays = [predictions.load(cache / "flexharness-outputs", runs[s]["outputs"]) for s in (0, 1, 2)]
    split = runs[0]["eval_split"]
    mean = np.mean([a[split]["outputs"] for a in arrays], axis=0)  # by hand, from the stored files
    labels = arrays[0][split]["labels"]
    ensemble = fused["ensemble"]
    assert ensemble["score"] == pytest.approx(metrics.score(("accuracy",), labels, mean.argmax(-1))[0])
    assert ensemble["single_scores"] == {str(s): runs[s]["score"] for s in (0, 1, 2)}
    assert ensemble["best_single"] == max(runs[s]["score"] for s in (0, 1, 2))
    assert ensemble["gain"] == pytest.approx(ensemble["score"] - ensemble["best_single"])
    assert ensemble["inference_cost"] == 3 and fused["uniform_soup"]["inference_cost"] == 1
    greedy = fused["greedy_soup"]
    assert greedy["held_out_score"] >= greedy["best_single_held_out"]  # greedy never drops below its first run
    assert 1 <= len(greedy["used"]) <= 3 and greedy["used"][0] == max(
        (0, 1, 2), key=lambda s: runs[s]["splits"]["fusion held-out"]["score"])
    assert all(c["interval"] is not None for c in fused.values())  # per-example outputs travel like a task's
    assert (pytester.path / "report" / f"fusion-toy-{Path(str(doc['cases'][0]['model'])).name}.png").is_file()
    assert "### Fusion" in (pytester.path / "report" / "summary.md").read_text()

    again = pytester.runpytest("-v", "--flex-json=again.json")
    again.assert_outcomes(passed=5)
    again.stdout.fnmatch_lines(["*fusion/polarity-greedy_soup[[]seeds0-1-2] PASSED (cached)*"])
    assert {m: c["score"] for m, c in _fused(_doc(pytester, "again.json")).items()} == \
           {m: c["score"] for m, c in fused.items()}

    pytester.makefile(".flex.yaml", toy=suite_text(fusion("gates:\n  fusion: {gain: {min: 1.0}}\n"), TRAIN))
    failing = pytester.runpytest()
    failing.assert_outcomes(passed=4, failed=1)
    failing.stdout.fnmatch_lines(["FAIL*fusion/gain.min: gain.min = *required >= 1: FAILED"])


def test_a_soup_or_ensemble_of_one_run_is_that_run_on_every_domain(pytester: pytest.Pytester, domains_text) -> None:
    pytester.makefile(".flex.yaml", toy=domains_text(TASK + DOMAINS + "fusion: {task: polarity, runs: [4]}\n"))
    pytester.runpytest("-m", "fusion", "--flex-json=out.json").assert_outcomes(passed=3)
    fused = _fused(_doc(pytester, "out.json"))
    single = fused["ensemble"]["single_scores"]["4"]
    assert {m: (c["score"], c["gain"], c["used"]) for m, c in fused.items()} == {
        m: (single, 0.0, [4]) for m in ("ensemble", "uniform_soup", "greedy_soup")}
    run = _ingredients(pytester.path / ".pytest_cache" / "d")[4]
    for method, case in fused.items():
        assert sorted(case["other_domains"]) == ["forum", "forum-phone"] and case["ood_gain"] == 0.0, method
        for domain, found in case["other_domains"].items():
            assert found["score"] == found["best_single"] == run["splits"][f"domain {domain}"]["score"], method


def test_average_of_identical_weights_is_the_same_model(tiny_model: Path) -> None:
    from flexharness.engine import models, soup

    state = models.fresh_model(str(tiny_model), 2, 7).state_dict()
    for copies in (1, 2, 3):
        averaged = soup.average([state] * copies)
        assert all(np.array_equal(averaged[k].numpy(), state[k].numpy()) for k in state)


def test_xdist_and_no_cache_dir_give_the_plain_run(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(fusion(methods="[ensemble, uniform_soup]", runs="2"), TRAIN))
    pytester.runpytest("-m", "fusion", "--flex-json=plain.json").assert_outcomes(passed=2)
    pytester.runpytest("-m", "fusion", "-n", "2", "-p", "no:cacheprovider", "--flex-json=xdist.json").assert_outcomes(
        passed=2)
    plain, xdist = (_fused(_doc(pytester, name)) for name in ("plain.json", "xdist.json"))
    assert {m: c["score"] for m, c in plain.items()} == {m: c["score"] for m, c in xdist.items()}
    assert not any(c["cached"] for c in xdist.values())


def test_deleted_weights_make_the_soup_train_its_runs_again(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(fusion(methods="[ensemble, uniform_soup]", runs="2"), TRAIN))
    pytester.runpytest("-m", "fusion", "--flex-json=first.json").assert_outcomes(passed=2)
    cache = pytester.path / ".pytest_cache" / "d"
    shutil.rmtree(cache / "flexharness-weights")
    for path in (cache / "flexharness-results").glob("*.json"):  # forget the fusion items, keep their runs
        if "seeds0-1]" in json.loads(path.read_text())["nodeid"]:
            path.unlink()
    pytester.runpytest("-m", "fusion", "--flex-json=second.json").assert_outcomes(passed=2)
    first, second = (_fused(_doc(pytester, n)) for n in ("first.json", "second.json"))
    assert second["uniform_soup"]["trained_runs"] + second["ensemble"]["trained_runs"] == [0, 1]
    assert second["uniform_soup"]["score"] == first["uniform_soup"]["score"]
    assert second["ensemble"]["score"] == first["ensemble"]["score"]


@pytest.mark.parametrize("section, message", [
    ("fusion: {task: polarty}", r"toy.flex.yaml:\d+: fusion.task: no case named 'polarty' under 'tasks:' "
                                r"\(did you mean 'polarity'\?\)"),
    ("fusion: {methods: [greedy]}", r"fusion.methods: unknown method 'greedy' \(did you mean 'greedy_soup'\?\)"),
    ("fusion: {runs: 0}", r"fusion.runs: expected a number of runs"),
    ("fusion: {held_out: 1.5}", r"fusion.held_out"),
    ("fusion: {seeds: 3}", r"fusion.seeds: .*"),
    ("fusion: {}\ngates:\n  fusion: {ood_gain: {min: 0.0}}",
     r"gates.fusion.ood_gain: fusion case 'polarity-ensemble' has no other domain to be scored on"),
    ("fusion: {held_out: 0, methods: greedy_soup}",
     r"fusion.methods: greedy_soup chooses runs on rows they were not trained on: with 'held_out: 0' the runs are "
     r"the tasks runs, .* name another evaluation split of the task with 'choose_on'"),
    ("fusion: {held_out: 0, across_models: true}", r"fusion.across_models: greedy ensemble selection chooses runs"),
    ("fusion: {held_out: 0, shared_head: true}", r"fusion.shared_head: with 'held_out: 0' the runs are the tasks "
                                                  r"runs, whose heads start from their own seeds"),
    ("fusion: {choose_on: test}", r"fusion.choose_on: the runs are chosen on their held-out rows"),
    ("fusion: {held_out: 0, choose_on: test}", r"fusion.choose_on: 'test' is not an evaluation split of task "
                                                r"'polarity' besides the first"),
    ("fusion: {across_models: false}\ngates:\n  fusion: {across_gain: {min: 0.0}}",
     r"gates.fusion.across_gain: fusion case 'polarity-ensemble' has 'across_models: false'"),
    ("fusion: {held_out: 0}\ngates:\n  fusion: {ood_gain: {min: 0.0}}",
     r"gates.fusion.ood_gain: .*its runs are the tasks runs \('held_out: 0'\), which are not scored on other"),
])
def test_section_errors_name_file_line_and_key(suite_text, tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(TASK + section + "\n", TRAIN))
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_one_case_per_task_and_method_following_the_seed_override(suite_text, tmp_path: Path) -> None:
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(TASK + "  - {name: other, dataset: reviews, metric: macro_f1}\n"
                               "fusion: {methods: ensemble}\n", TRAIN))
    cases = [c for c in load_suite(path, {"seeds": (3, 5)}).cases if c.axis == "fusion"]
    assert [(c.name, c.train.seeds) for c in cases] == [("polarity-ensemble", (3, 5)), ("other-ensemble", (3, 5))]


def test_other_domains_scored_by_runs_ensemble_and_soups_from_stored_outputs(
        pytester: pytest.Pytester, domains_text, tiny_model: Path) -> None:
    from flexharness.engine import data, runner, soup

    gates = "gates:\n  fusion: {gain: {min: -1.0}, ood_gain: {min: -1.0}}\n"
    section = "fusion: {task: polarity, methods: [ensemble, uniform_soup], runs: 2}\n"
    pytester.makefile(".flex.yaml", toy=domains_text(TASK + DOMAINS + section + gates))
    result = pytester.runpytest("-v", "-m", "fusion", "--flex-json=out.json", "--flex-report-dir=report")
    result.assert_outcomes(passed=2 + 2)
    result.stdout.fnmatch_lines(["fusion (gain: *", "task *model *method *gain *used *cost *ood gain",
                                 "fusion on the other domains *", "task *model *method *domain *n *best single *",
                                 "polarity *ensemble *forum-phone *", "PASS*fusion/ood_gain.min*"])
    fused = _fused(_doc(pytester, "out.json"))
    cache = pytester.path / ".pytest_cache" / "d"
    runs = _ingredients(cache)
    arrays = {s: predictions.load(cache / "flexharness-outputs", runs[s]["outputs"]) for s in (0, 1)}
    suite = load_suite(pytester.path / "toy.flex.yaml")
    for domain in ("forum", "forum-phone"):
        split = f"domain {domain}"
        member = next(c for c in suite.cases if c.axis == "domains" and c.name == domain)
        rows = data.prepare(member.dataset, member.where, member.kind, None, None)
        assert runs[0]["splits"][split]["eval_digest"] == runner.examples_digest(rows.eval)  # the domain's own rows
        labels = arrays[0][split]["labels"]
        mean = np.mean([arrays[s][split]["outputs"] for s in (0, 1)], axis=0)  # by hand, from the stored files
        ensemble = fused["ensemble"]["other_domains"][domain]
        assert ensemble["score"] == pytest.approx(metrics.score(("accuracy",), labels, mean.argmax(-1))[0])
        singles = {str(s): runs[s]["splits"][split]["score"] for s in (0, 1)}
        for case in fused.values():
            found = case["other_domains"][domain]
            assert found["single_scores"] == singles and found["best_single"] == max(singles.values())
            assert found["mean_single"] == pytest.approx(np.mean(list(singles.values())))
            assert found["gain"] == pytest.approx(found["score"] - found["best_single"])
    for path in (cache / "flexharness-results").glob("*.json"):  # each fused item's stored outputs give its scores
        entry = json.loads(path.read_text())
        if "[run-seed" not in entry["nodeid"]:
            stored = predictions.load(cache / "flexharness-outputs", entry["record"]["outputs"])
            for domain, found in entry["record"]["other_domains"].items():
                pair = stored[f"domain {domain}"]
                if entry["record"]["method"] == "ensemble":
                    runs_mean = np.mean([arrays[s][f"domain {domain}"]["outputs"] for s in (0, 1)], axis=0)
                    assert np.allclose(pair["outputs"], runs_mean, atol=1e-6)
                assert found["score"] == metrics.score(("accuracy",), pair["labels"],
                                                       metrics.predictions_from_outputs(pair["outputs"]))[0]
    for case in fused.values():
        assert "reviews" not in case["other_domains"]  # the task's own domain is not another one
        assert case["ood_gain"] == pytest.approx(np.mean([o["gain"] for o in case["other_domains"].values()]))
    assert "Other domains" in (pytester.path / "report" / "summary.md").read_text()
    assert (pytester.path / "report" / f"fusion-toy-{tiny_model.name}.png").is_file()

    spec = next(c for c in suite.cases if c.name == "polarity-ensemble")
    copies = [soup.Ingredient(s, runs[0], arrays[0]) for s in (0, 1, 2)]  # one run three times
    splits, _ = soup.ensemble(spec, str(tiny_model), copies)
    assert {n: e["score"] for n, e in splits.items()} == {n: e["score"] for n, e in runs[0]["splits"].items()}


SEEDS = TRAIN.replace("seeds: [0]", "seeds: [0, 1]")
REUSE = "fusion: {task: polarity, held_out: 0, methods: [ensemble, uniform_soup]}\n"


def _trained(cache: Path) -> list[dict]:
    """The stored records of every fine-tune: a record holds training times only where its item trained."""
    records = [json.loads(path.read_text())["record"] for path in (cache / "flexharness-results").glob("*.json")]
    return [r for r in records if (r.get("train_seconds") or 0) > 0]


def test_fusion_over_the_tasks_runs_fine_tunes_each_task_and_seed_once(pytester: pytest.Pytester, suite_text
                                                                       ) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TASK + REUSE, SEEDS))
    pytester.runpytest("--flex-json=out.json").assert_outcomes(passed=2 + 2)
    doc = _doc(pytester, "out.json")
    tasks = next(c for c in doc["cases"] if c["axis"] == "tasks")
    fused = _fused(doc)
    cache = pytester.path / ".pytest_cache" / "d"
    assert tasks["cached_items"] == 0 and sorted(r["seed"] for r in _trained(cache)) == [0, 1]
    assert all(c["trained_runs"] == [] and c["runs_from"] == "tasks" for c in fused.values())   # found, not trained
    assert fused["ensemble"]["single_scores"] == {seed: run["score"] for seed, run in tasks["per_seed"].items()}
    assert len(list((cache / "flexharness-weights").glob("*.safetensors"))) == 2   # kept by the tasks items
    assert fused["uniform_soup"]["used"] == [0, 1] and fused["ensemble"]["held_out_score"] is None

    pytester.runpytest("--cache-clear", "-m", "fusion", "--flex-json=fusion.json").assert_outcomes(passed=2)
    first = _fused(_doc(pytester, "fusion.json"))
    assert first["ensemble"]["trained_runs"] + first["uniform_soup"]["trained_runs"] == [0, 1]
    pytester.runpytest("-m", "tasks", "--flex-json=tasks.json").assert_outcomes(passed=2)
    later = next(c for c in _doc(pytester, "tasks.json")["cases"] if c["axis"] == "tasks")
    assert later["cached_items"] == 2 and sorted(r["seed"] for r in _trained(cache)) == [0, 1]
    assert first["ensemble"]["single_scores"] == {seed: run["score"] for seed, run in later["per_seed"].items()}


def test_greedy_soup_over_the_tasks_runs_chooses_on_the_split_it_names(pytester: pytest.Pytester, tiny_model: Path,
                                                                      tmp_path: Path) -> None:
    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", sentiment_rows(n, seed=i))
             for i, (split, n) in enumerate((("train", 240), ("validation", 60), ("test", 60)))}
    pytester.makefile(".flex.yaml", toy=f"suite: toy\nmodel: {tiny_model}\n{SEEDS}\ndatasets:\n  reviews:\n"
                                        f"    files: {{{', '.join(f'{s}: {p}' for s, p in files.items())}}}\n"
                                        "    label: label\n    eval_split: [test, validation]\n" + TASK +
                                        "fusion: {task: polarity, held_out: 0, choose_on: validation, "
                                        "methods: greedy_soup}\n")
    pytester.runpytest("--flex-json=out.json", "-p", "no:cacheprovider").assert_outcomes(passed=2 + 1)
    doc = _doc(pytester, "out.json")
    greedy = _fused(doc)["greedy_soup"]
    chosen_on = next(c for c in doc["cases"] if c["name"] == "polarity:validation")
    on_test = next(c for c in doc["cases"] if c["name"] == "polarity:test")
    assert greedy["choice_split"] == "validation" and greedy["eval_split"] == "test"
    assert greedy["single_scores"] == {seed: run["score"] for seed, run in on_test["per_seed"].items()}
    best = max(chosen_on["per_seed"], key=lambda seed: chosen_on["per_seed"][seed]["score"])
    assert greedy["used"][0] == int(best) and greedy["best_single_held_out"] == chosen_on["per_seed"][best]["score"]
    assert greedy["held_out_score"] >= greedy["best_single_held_out"]


def test_xdist_workers_wait_for_a_run_another_is_fine_tuning(pytester: pytest.Pytester, suite_text) -> None:
    """An ensemble over the tasks runs keeps no weights, so only the store's lock per key keeps two workers from
    fine-tuning one (task, seed): every fine-tune is a tasks item that was not cached or a seed a fusion item
    trained, and there are exactly as many as seeds."""
    section = "fusion: {task: polarity, held_out: 0, methods: ensemble}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(TASK + section, SEEDS))
    pytester.runpytest("-n", "2", "--flex-json=out.json").assert_outcomes(passed=2 + 1)
    doc = _doc(pytester, "out.json")
    tasks = next(c for c in doc["cases"] if c["axis"] == "tasks")
    fine_tunes = [int(s) for s, run in tasks["per_seed"].items() if not run["cached"]] + \
        _fused(doc)["ensemble"]["trained_runs"]
    assert sorted(fine_tunes) == [0, 1]
