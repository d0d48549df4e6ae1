"""Every entry of docs/errors.md, for real: a broken suite beside a good one, through pytester.

Each broken suite must fail with one plain message naming file, line and key
and saying what to do, no traceback, while the good suite still runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flexharness.cli import main
from toy import sentiment_rows, write_csv

BASE = """suite: bad
model: {model}
train: {{epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0]}}
datasets:
  reviews:
    files: {{train: {csv}}}
    label: label
tasks:
  - name: polarity
    dataset: reviews
    metric: accuracy
"""

# (id, text to replace in BASE, replacement, expected "line: key: message" after "bad.flex.yaml:")
COLLECTION_ERRORS = [
    ("malformed-yaml", "    dataset: reviews", "    dataset: [reviews",
     "11: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence started on line 10); "
     "check indentation and quoting"),
    ("duplicate-key", "    metric: accuracy", "    metric: accuracy\n    metric: f1",
     "12: metric: duplicate key (first defined on line 11); remove one of them"),
    ("unknown-key", "epochs: 1,", "epoch: 1,",
     "3: train.epoch: unknown key (did you mean 'epochs'?); allowed here: batch_size, devices, epochs, *"),
    ("unknown-task-key", "    metric: accuracy", "    metric: accuracy\n    wher: {label: [positive]}",
     "12: tasks[[]0].wher: unknown key (did you mean 'where'?); allowed here: dataset, metric, name, slices, train, where"),
    ("wrong-type", "epochs: 1,", "epochs: two,", "3: train.epochs: expected an integer, got str 'two'"),
    ("unknown-precision", "epochs: 1,", "epochs: 1, precision: bf61,",
     "3: train.precision: expected one of auto, fp32, bf16, got 'bf61' (did you mean 'bf16'?)"),
    ("wrong-type-list", "seeds: [0]", "seeds: [zero]",
     "3: train.seeds: expected a non-empty list of non-negative integers, e.g. [[]0, 1, 2]"),
    ("out-of-range", "learning_rate: 3.0e-3", "learning_rate: -3.0e-3",
     "3: train.learning_rate: must be greater than 0"),
    ("out-of-range-fraction", "    label: label", "    label: label\n    eval_fraction: 1.5",
     "8: datasets.reviews.eval_fraction: must be between 0 and 1 (exclusive)"),
    ("not-finite", "learning_rate: 3.0e-3", "learning_rate: .inf",
     "3: train.learning_rate: expected a finite number, got float inf"),
    ("unknown-metric", "metric: accuracy", "metric: acuracy",
     "11: tasks[[]0].metric: unknown metric 'acuracy' (did you mean 'accuracy'?); known: accuracy, f1, *"),
    ("duplicate-case", "    metric: accuracy",
     "    metric: accuracy\n  - {name: polarity, dataset: reviews, metric: f1}",
     "12: tasks[[]1].name: duplicate case name 'polarity' (first on line 9)"),
    ("unknown-dataset", "dataset: reviews", "dataset: review",
     "10: tasks[[]0].dataset: no dataset named 'review' under 'datasets:' (did you mean 'reviews'?) (known: reviews)"),
    ("missing-file", "{train: {csv}}", "{train: data/nothere.csv}",
     "6: datasets.reviews.files.train: file not found: */data/nothere.csv "
     "(relative paths start at the suite file's folder)"),
    ("file-is-a-folder", "{train: {csv}}", "{train: folder.csv}",
     "6: datasets.reviews.files.train: */folder.csv is not a file; give the path of a file"),
    ("bad-regex", "    metric: accuracy", "    metric: accuracy\n    where: {text: {matches: '(good'}}",
     "12: tasks[[]0].where.text.matches: invalid regular expression '(good': missing ), unterminated subpattern*"),
    ("python-tag", "suite: bad", "suite: !!python/object/apply:os.system ['touch pwned']",
     "1: unsupported YAML tag (could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'); suites are plain data*"),
    ("missing-required", "suite: bad\n", "", "1: suite: required key missing from the top level"),
    ("mixed-directions", "    metric: accuracy", "    metric: [accuracy, mse]",
     "11: tasks[[]0].metric: metrics of one case must all be classification or all regression, *"),
    ("two-sources", "    label: label", "    label: label\n    hub: {path: glue}",
     "5: datasets.reviews: give exactly one source: 'files', 'hub' or 'disk'"),
    ("eval-split-is-train", "    label: label", "    label: label\n    eval_split: train",
     "8: datasets.reviews.eval_split: 'train' is the training split: scores on training data say nothing "
     "about flexibility; name other splits, or drop 'eval_split' to hold out 'eval_fraction'"),
    ("duplicate-label-names", "    label: label", "    label: label\n    label_names: [good, good]",
     "8: datasets.reviews.label_names: label names must be distinct"),
    ("bad-case-name", "name: polarity", "name: 'a::b'",
     "9: tasks[[]0].name: must be a non-empty name without '::', '[[]', ']' or line breaks *"),
    ("negative-sigma-gate", "    metric: accuracy", "    metric: accuracy\ngates:\n  tasks: {sigma_p: {max: -0.1}}",
     "13: gates.tasks.sigma_p.max: must be 0 or more"),
    ("unknown-case-gate", "    metric: accuracy",
     "    metric: accuracy\ngates:\n  cases:\n    tasks/polarty: {min: 0.6}",
     "14: gates.cases.tasks/polarty: no such case (did you mean 'tasks/polarity'?); "
     "the cases of this suite are: tasks/polarity"),
]


CHEAP = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_train_samples: 32, max_eval_samples: 32}")


@pytest.fixture
def good_suite(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", good=suite_text("tasks:\n  - {name: fine, dataset: reviews, metric: accuracy}\n",
                                                    train=CHEAP))


def write_bad(pytester: pytest.Pytester, tiny_model: Path, toy_csv: Path, old: str, new: str) -> None:
    text = BASE.format(model=tiny_model, csv=toy_csv)
    old = old.replace("{csv}", str(toy_csv))
    assert old in text
    pytester.makefile(".flex.yaml", bad=text.replace(old, new, 1))


def assert_plain(output: str) -> None:
    """No traceback and none of our source lines: the message is the whole story."""
    assert "Traceback" not in output
    assert not re.search(r"flexharness/(?!tests/)(?:[a-z_]+/)*[a-z_]+\.py", output)  # a frame in our source
    assert "\nE   " not in output


@pytest.mark.parametrize("old, new, expected", [c[1:] for c in COLLECTION_ERRORS],
                         ids=[c[0] for c in COLLECTION_ERRORS])
def test_collection_error_names_file_line_key_and_the_good_suite_still_collects(
        pytester: pytest.Pytester, good_suite, tiny_model: Path, toy_csv: Path, old: str, new: str,
        expected: str) -> None:
    (pytester.path / "folder.csv").mkdir()
    write_bad(pytester, tiny_model, toy_csv, old, new)
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # failed, not "interrupted": the good suite goes on
    result.stdout.fnmatch_lines(["good.flex.yaml::tasks/fine[[]seed0]", "*ERROR collecting bad.flex.yaml*",
                                 f"*/bad.flex.yaml:{expected}"])
    assert_plain(result.stdout.str())
    assert not (pytester.path / "pwned").exists()


def test_validate_checks_suites_as_collection_does_and_lists_cases_and_gates(
        pytester: pytest.Pytester, good_suite, tiny_model: Path, toy_csv: Path, capsys) -> None:
    write_bad(pytester, tiny_model, toy_csv, "    metric: accuracy",
              "    metric: accuracy\ngates:\n  cases:\n    tasks/polarty: {min: 0.6}")
    good, bad = (str(pytester.path / f"{name}.flex.yaml") for name in ("good", "bad"))
    assert main(["validate", good]) == 0
    assert main(["validate", good, bad]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok      {good}: suite 'toy', 1 cases (tasks), 1 items per model")
    assert out[1].strip() == "tasks/fine: accuracy (classification, higher is better), seeds [0]"
    assert out[2].strip() == "gates: none"
    assert out[-1].startswith(f"INVALID {bad}:14: gates.cases.tasks/polarty: no such case")
    write_bad(pytester, tiny_model, toy_csv, "    metric: accuracy",
              "    metric: accuracy\ngates:\n  tasks: {p_avg: {min: 0.5}}\n  case_min: 0.4\n"
              "  cases: {tasks/polarity: {min: 0.75}}")
    assert main(["validate", bad]) == 0
    assert capsys.readouterr().out.splitlines()[-2].strip() == (
        "gates: tasks/p_avg.min 0.5, case_min 0.4, cases/tasks/polarity.min 0.75")


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_other_suites_still_run_and_the_run_fails(pytester: pytest.Pytester, good_suite, tiny_model: Path,
                                                  toy_csv: Path, workers: list[str]) -> None:
    write_bad(pytester, tiny_model, toy_csv, "epochs: 1,", "epoch: 1,")
    result = pytester.runpytest("-p", "no:cacheprovider", *workers)
    result.assert_outcomes(passed=1, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*/bad.flex.yaml:3: train.epoch: unknown key (did you mean 'epochs'?)*",
                                 "*flexharness summary*", "tasks/fine *accuracy*"])


def test_a_broken_python_test_module_still_interrupts_as_pytest_always_did(
        pytester: pytest.Pytester, good_suite) -> None:
    pytester.makepyfile(test_broken="import nonexistent_module_xyz\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)


def test_an_empty_or_undecodable_suite_file(pytester: pytest.Pytester, good_suite) -> None:
    pytester.makefile(".flex.yaml", empty="")
    (pytester.path / "latin.flex.yaml").write_bytes("suite: caf\xe9\n".encode("latin-1"))
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    result.assert_outcomes(errors=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*/empty.flex.yaml: suite: required key missing from the top level",
        "*/latin.flex.yaml: cannot read the suite file (*utf-8*); save it as UTF-8",
    ])


def _labels_file(directory: Path) -> Path:
    rows = sentiment_rows(30)
    rows[3] = {**rows[3], "label": "neutral"}
    return write_csv(directory / "eval_with_neutral.csv", rows)


# (id, replacements in BASE, expected "line: key: message" after "bad.flex.yaml:"); found once data is read
DATA_ERRORS = [
    ("missing-text-column", [("    label: label", "    label: label\n    text: body")],
     "8: datasets.reviews.text: split 'train' has no column 'body' (3 columns, none of that name); "
     "name a column the data has"),
    ("column-differs-in-case", [("    label: label", "    label: label\n    text: Text")],
     "8: datasets.reviews.text: split 'train' has no column 'Text' (3 columns, none of that name; one differs "
     "from it only in case or spaces); name a column the data has"),
    ("missing-label-column", [("    label: label", "    label: sentiment")],
     "7: datasets.reviews.label: split 'train' has no column 'sentiment' (3 columns, none of that name); *"),
    ("missing-where-column", [("    metric: accuracy", "    metric: accuracy\n    where: {topic: [car]}")],
     "12: tasks[[]0].where.topic: split 'train' has no column 'topic' (3 columns, none of that name); *"),
    ("unseen-eval-labels", [("{train: {csv}}", "{train: {csv}, eval: {eval}}")],
     "7: datasets.reviews.label: split 'eval': 1 label value (1 rows) never appear in training, which has 2 "
     "labels; filter them out with 'where' or list every label in 'label_names'"),
    ("mixed-label-kinds", [("{train: {csv}}", "{train: mixed.csv}")],
     "7: datasets.reviews.label: split 'train': label column 'label' of dataset 'reviews' mixes kinds of labels "
     "(20 numeric, 20 text); they would count as different classes: write every label the same way"),
    ("eval-copies-train", [("{train: {csv}}", "{train: {csv}, eval: copy.csv}")],
     "5: datasets.reviews: dataset 'reviews': 400 of 400 rows of the evaluation split 'eval' (100%) are exact "
     "copies of training rows, more than the 20% allowed; *"),
    ("empty-after-filtering", [("    metric: accuracy", "    metric: accuracy\n    where: {label: [neutral]}")],
     "12: tasks[[]0].where.label: only 0 training examples after filtering (need at least 2); "
     "loosen 'where' or add data"),
    ("empty-regex-filter", [("    metric: accuracy", "    metric: accuracy\n    where: {text: {matches: zebra}}")],
     "12: tasks[[]0].where.text: only 0 training examples after filtering*"),
    ("undecodable-file", [("{train: {csv}}", "{train: latin.csv}")],
     "6: datasets.reviews.files: cannot decode the data as utf-8 (*); set 'encoding' to the files' encoding, "
     "e.g. 'encoding: latin-1'"),
    ("unreadable-file", [("{train: {csv}}", "{train: garbage.parquet}")],
     "6: datasets.reviews.files: cannot read the data: *; check that the files are valid CSV, JSON or Parquet"),
    ("f1-on-three-labels", [("{train: {csv}}", "{train: three.csv}"), ("metric: accuracy", "metric: f1")],
     "9: metric: metric 'f1' is binary (label id 1 is positive) but the data has 3 labels; use 'macro_f1'"),
    ("missing-train-split", [("    label: label", "    label: label\n    train_split: training")],
     "8: datasets.reviews.train_split: no split 'training' (has: train); set 'train_split' to one of them"),
]


@pytest.mark.parametrize("edits, expected", [c[1:] for c in DATA_ERRORS], ids=[c[0] for c in DATA_ERRORS])
def test_data_error_fails_its_item_naming_file_line_key(
        pytester: pytest.Pytester, good_suite, tiny_model: Path, toy_csv: Path, edits, expected: str) -> None:
    (pytester.path / "latin.csv").write_bytes("text,label\ncaf\xe9 good,positive\nbad,negative\n".encode("latin-1"))
    (pytester.path / "garbage.parquet").write_bytes(b"this is not parquet at all")
    write_csv(pytester.path / "three.csv", sentiment_rows(30, labels=("positive", "negative", "neutral")))
    write_csv(pytester.path / "mixed.csv", [{**row, "label": i % 2 if i < 20 else row["label"]}
                                            for i, row in enumerate(sentiment_rows(40))])
    (pytester.path / "copy.csv").write_bytes(toy_csv.read_bytes())
    text = BASE.format(model=tiny_model, csv=toy_csv)
    for old, new in edits:
        old = old.replace("{csv}", str(toy_csv))
        new = new.replace("{csv}", str(toy_csv)).replace("{eval}", str(_labels_file(pytester.path)))
        assert old in text
        text = text.replace(old, new, 1)
    pytester.makefile(".flex.yaml", bad=text + "gates:\n  tasks: {p_avg: {min: 0.1}}\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)  # the good case passes; the bad case and its gate fail
    result.stdout.fnmatch_lines([f"tasks/polarity (model *, seed 0): */bad.flex.yaml:{expected}"])
    result.stdout.fnmatch_lines(["gate tasks/p_avg.min (bad, model *): incomplete: 1 of 1 tasks cases have no score*"])
    assert_plain(result.stdout.str())


def test_keys_merged_in_with_yaml_anchors_may_be_overridden(tmp_path: Path, toy_csv: Path) -> None:
    from flexharness.axes import load_suite

    suite = tmp_path / "merge.flex.yaml"
    suite.write_text(f"suite: m\ntrain: &base {{epochs: 1, batch_size: 8}}\n"
                     f"datasets:\n  reviews: {{files: {{train: {toy_csv}}}}}\n"
                     "tasks:\n  - name: a\n    dataset: reviews\n    metric: accuracy\n"
                     "    train:\n      <<: *base\n      epochs: 2\n")
    (case,) = load_suite(suite).cases
    assert (case.train.epochs, case.train.batch_size) == (2, 8)
