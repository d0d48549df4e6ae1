"""Issue 19, suites and data: each class of hostile input is refused at its root, with a located message.

Suite identity, training data used for evaluation, YAML 1.1 booleans and mixed labels, suite-relative
paths, messages that never quote data, alias bombs and unbounded reprs, and what collection can
check of seeds and max_length.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexharness.axes import load_suite
from flexharness.engine import data
from flexharness.errors import DataError, SuiteError, short_repr
from flexharness.suite.spec import DatasetSpec, Filter
from flexharness.suite.yamlio import MAX_VALUES, loads_yaml
from toy import sentiment_rows, write_csv, write_jsonl

SUITE = """suite: {name}
model: {model}
train: {{epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0]}}
datasets:
  reviews:
    files: {{train: {csv}}}
tasks:
  - {{name: polarity, dataset: reviews, metric: accuracy}}
"""


def write_suite(path: Path, tiny_model: Path, csv: Path, name: str = "toy", extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SUITE.format(name=name, model=tiny_model, csv=csv) + extra, encoding="utf-8")
    return path


def suite_error(path: Path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return str(info.value)


# --- 1. suite identity ----------------------------------------------------------------------------


def test_two_suite_files_with_one_name_are_refused_naming_both(
        pytester: pytest.Pytester, tiny_model: Path, toy_csv: Path) -> None:
    first = write_suite(pytester.path / "a.flex.yaml", tiny_model, toy_csv, extra="gates:\n  case_min: 0.99\n")
    write_suite(pytester.path / "b_copy.flex.yaml", tiny_model, toy_csv, extra="gates:\n  case_min: 0.0\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    result.stdout.fnmatch_lines([f"*b_copy.flex.yaml:1: suite: the name 'toy' is already used by {first} in this "
                                 "run; their cases would be aggregated and gated as one suite: give each suite "
                                 "file its own name"])
    assert result.ret != 0


def test_one_model_given_twice_is_refused(pytester: pytest.Pytester, tiny_model: Path, toy_csv: Path) -> None:
    write_suite(pytester.path / "a.flex.yaml", tiny_model, toy_csv)
    os.symlink(tiny_model, pytester.path / "same-model")
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only",
                                "--model", str(tiny_model), "--model", "same-model")
    result.stdout.fnmatch_lines(["*a.flex.yaml: model: --model names one model twice (*); its items would share "
                                 "ids and results: give it once"])
    assert result.ret != 0


# --- 2. training data used for evaluation ---------------------------------------------------------


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_one_file_as_training_and_evaluation_split_is_refused(tmp_path: Path, tiny_model: Path, toy_csv: Path,
                                                            spelling: str) -> None:
    data_dir = tmp_path / "data"
    write_csv(data_dir / "train.csv", sentiment_rows(40))
    os.symlink(data_dir / "train.csv", data_dir / "link.csv")
    other = {"same": "data/train.csv", "dotted": "./data/../data/train.csv", "symlink": "data/link.csv"}[spelling]
    suite = write_suite(tmp_path / "s.flex.yaml", tiny_model, toy_csv)
    suite.write_text(suite.read_text().replace(f"{{train: {toy_csv}}}", f"{{train: data/train.csv, eval: {other}}}"))
    assert suite_error(suite).startswith(
        f"{suite}:6: datasets.reviews.files.eval: the same file as split 'train' ({(data_dir / 'train.csv')}): a model "
        "scored on the rows it was trained on says nothing about flexibility")


def test_an_evaluation_split_of_copied_training_rows_is_refused_and_a_few_copies_are_not(tmp_path: Path) -> None:
    rows = sentiment_rows(100)
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "few.csv", rows[:10] + sentiment_rows(60, seed=7))      # 10 of 70 copied: 14 %
    write_csv(tmp_path / "many.csv", rows[:30] + sentiment_rows(60, seed=7))     # 30 of 90 copied: 33 %
    spec = DatasetSpec(name="reviews", base_dir=str(tmp_path), files=(("train", "train.csv"), ("eval", "few.csv")))
    assert len(data.prepare(spec, (), "classification", None, None).eval) == 70
    many = DatasetSpec(name="reviews", base_dir=str(tmp_path), files=(("train", "train.csv"), ("eval", "many.csv")))
    with pytest.raises(DataError, match=r"dataset 'reviews': 30 of 90 rows of the evaluation split 'eval' \(33%\) "
                                        r"are exact copies of training rows, more than the 20% allowed"):
        data.prepare(many, (), "classification", None, None)


# --- 3. YAML 1.1 booleans and mixed labels --------------------------------------------------------


def test_filter_values_and_label_names_are_read_as_written() -> None:
    doc = loads_yaml("where: {country: [no, se, NO, y, off]}\nlabel_names: [no, yes]\nno: 1\n"
                     "group_by_length: on\nflag: [true, False]\n", "s.yaml")
    assert doc["where"] == {"country": ["no", "se", "NO", "y", "off"]}
    assert doc["label_names"] == ["no", "yes"]
    assert "no" in doc                                    # a key is the name written
    assert doc["group_by_length"] is True and doc["flag"] == [True, False]   # elsewhere YAML 1.1 stands


def test_a_filter_on_the_country_code_no_keeps_norway(tmp_path: Path) -> None:
    rows = [{**row, "country": ("no", "se", "dk")[i % 3]} for i, row in enumerate(sentiment_rows(90))]
    write_csv(tmp_path / "train.csv", rows)
    suite = tmp_path / "s.flex.yaml"
    suite.write_text("suite: nordic\nmodel: m\ndatasets:\n  r: {files: {train: train.csv}}\n"
                     "tasks:\n  - {name: t, dataset: r, metric: accuracy, where: {country: [no, se]}}\n")
    where = load_suite(suite).cases[0].where
    assert where[0].values == ("no", "se")
    prepared = data.prepare(load_suite(suite).cases[0].dataset, where, "classification", None, None)
    assert len(prepared.train) + len(prepared.eval) == 60


def test_labels_mixing_numbers_and_text_name_the_column_and_counts_but_no_value(tmp_path: Path) -> None:
    rows = [{"text": r["text"], "label": (i % 2) if i < 7 else f"SECRET{r['label']}"}
            for i, r in enumerate(sentiment_rows(20))]
    write_jsonl(tmp_path / "train.jsonl", rows)
    spec = DatasetSpec(name="mixed", base_dir=str(tmp_path), files=(("train", "train.jsonl"),))
    with pytest.raises(DataError) as info:
        data.prepare(spec, (), "classification", None, None)
    message = str(info.value)
    assert "label column 'label' of dataset 'mixed' mixes kinds of labels (7 numeric, 13 text)" in message
    assert "SECRET" not in message


# --- 4. relative paths start at the suite's folder ------------------------------------------------


def test_relative_model_hub_and_disk_paths_start_at_the_suite_folder(
        pytester: pytest.Pytester, tiny_model: Path) -> None:
    import datasets

    here = pytester.path / "suites"
    write_csv(here / "hubdata" / "train.csv", sentiment_rows(120))
    datasets.Dataset.from_list(sentiment_rows(120)).save_to_disk(str(here / "saved"))
    os.symlink(tiny_model, here / "model")
    (pytester.path / "hubdata").mkdir()                                  # decoys in the working directory
    (pytester.path / "hubdata" / "train.csv").write_text("nothing,useful\n1,2\n")
    (here / "s.flex.yaml").write_text(
        "suite: rel\nmodel: model\ntrain: {epochs: 2, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0}\n"
        "datasets:\n  h: {hub: {path: hubdata}}\n  d: {disk: saved}\n"
        "tasks:\n  - {name: hub, dataset: h, metric: accuracy}\n  - {name: disk, dataset: d, metric: accuracy}\n")
    suite = load_suite(here / "s.flex.yaml")
    assert suite.model == str((here / "model").resolve())
    assert dict(suite.cases[0].dataset.hub)["path"] == "hubdata"           # as written: the cache key is portable
    result = pytester.runpytest("-p", "no:cacheprovider", "suites/s.flex.yaml")
    result.assert_outcomes(passed=2)


def test_a_hub_id_shadowed_by_a_folder_of_the_working_directory_is_refused(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    write_csv(tmp_path / "cwd" / "glue" / "train.csv", sentiment_rows(20))
    monkeypatch.chdir(tmp_path / "cwd")
    spec = DatasetSpec(name="g", hub=(("path", "glue"),), base_dir=str(tmp_path / "suites"))
    with pytest.raises(DataError, match="'glue' is no folder next to the suite file, so it names a hub dataset, but "
                                        "the working directory holds a folder of that name"):
        data.load_source(spec)


def test_a_model_path_written_as_a_path_names_the_folder_looked_for(tmp_path: Path, toy_csv: Path) -> None:
    suite = write_suite(tmp_path / "s.flex.yaml", Path("MODEL"), toy_csv)
    suite.write_text(suite.read_text().replace("model: MODEL", "model: ./missing-model"))
    assert load_suite(suite).model == str(tmp_path.resolve() / "missing-model")
    suite.write_text(suite.read_text().replace("model: ./missing-model", "model: org/hub-model"))
    assert load_suite(suite).model == "org/hub-model"                       # a hub id stays as written


# --- 5. no data value in a message ----------------------------------------------------------------


def test_messages_about_columns_and_labels_never_quote_the_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", [{"text": r["text"], "SECRET_COLUMN_hunter2": 1, "label": r["label"]}
                                       for r in sentiment_rows(40)])
    write_csv(tmp_path / "eval.csv", [{"text": "x", "SECRET_COLUMN_hunter2": 1, "label": "SECRET_LABEL"}])
    base = DatasetSpec(name="r", base_dir=str(tmp_path), files=(("train", "train.csv"), ("eval", "eval.csv")))
    tries = [(DatasetSpec(name="r", base_dir=str(tmp_path), files=(("train", "train.csv"),), text=("body",)), ()),
             (base, ()),
             (DatasetSpec(name="r", base_dir=str(tmp_path), files=(("train", "train.csv"),)),
              (Filter("label", values=("positive",)),))]
    for spec, where in tries:
        with pytest.raises(DataError) as info:
            data.prepare(spec, where, "classification", None, None)
        message = str(info.value)
        assert "SECRET" not in message and "positive" not in message and "negative" not in message, message


# --- 6. alias bombs and unbounded reprs -----------------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_built(pytester: pytest.Pytester) -> None:
    with pytest.raises(SuiteError, match=f"expands to more than {MAX_VALUES} values through its aliases"):
        loads_yaml(billion_laughs(), "bomb.yaml")
    with pytest.raises(SuiteError, match="an alias refers to a value that contains it"):
        loads_yaml("a: &a [1, *a]\n", "loop.yaml")
    pytester.makefile(".flex.yaml", bomb="suite: bomb\n" + billion_laughs() + "tasks: *a8\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    result.stdout.fnmatch_lines(["*bomb.flex.yaml:*: the YAML expands to more than 100000 values*"])
    assert result.ret != 0


def test_aliases_within_the_budget_still_work() -> None:
    doc = loads_yaml(billion_laughs(4), "ok.yaml")                          # 9**4 = 6561 values
    assert len(doc["a3"]) == 9 and doc["a3"][0][0][0] == ["lol"] * 9


def _nested(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner) | st.dictionaries(st.text(), inner)


@given(st.recursive(st.text() | st.integers() | st.floats(), _nested, max_leaves=200))
def test_short_repr_is_bounded(value: object) -> None:
    assert len(short_repr(value)) <= 80


def test_a_huge_value_in_a_suite_gives_a_short_message(tmp_path: Path, tiny_model: Path, toy_csv: Path) -> None:
    suite = write_suite(tmp_path / "s.flex.yaml", tiny_model, toy_csv)
    suite.write_text(suite.read_text().replace("epochs: 1", "epochs: " + "x" * 1_000_000))
    message = suite_error(suite)
    assert "train.epochs: expected an integer, got str 'xxx" in message and len(message) < 300


# --- 7. seeds and max_length at collection --------------------------------------------------------


def test_seeds_beyond_numpys_limit_are_refused(pytester: pytest.Pytester, tmp_path: Path, tiny_model: Path,
                                              toy_csv: Path) -> None:
    suite = write_suite(tmp_path / "s.flex.yaml", tiny_model, toy_csv)
    suite.write_text(suite.read_text().replace("seeds: [0]", "seeds: [0, 4294967296]"))
    assert suite_error(suite) == (f"{suite}:3: train.seeds: seeds must be below 2**32 = 4294967296 "
                                  "(numpy's seeding limit)")
    write_suite(pytester.path / "a.flex.yaml", tiny_model, toy_csv)
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "--flex-seeds", "4294967296")
    result.stderr.fnmatch_lines(["*--flex-seeds: seeds must be below 2**32 = 4294967296*"])


@pytest.mark.parametrize("section", [
    "stability:\n  tasks: [t]\n  learning_rates: [1.0e-3]\n  seeds: [4294967296]\n",
    "fusion:\n  task: t\n  runs: [0, 4294967296]\n",
    "efficiency:\n  task: t\n  sizes: [20, 40]\n  seeds: [4294967296]\n",
])
def test_every_seed_list_has_the_same_bound(tmp_path: Path, tiny_model: Path, toy_csv: Path, section: str) -> None:
    """One seed rule for every section that reads seeds: a bad one fails at collection, located."""
    suite = tmp_path / "s.flex.yaml"
    suite.write_text(f"suite: s\nmodel: {tiny_model}\ndatasets:\n  d: {{files: {{train: {toy_csv}}}}}\n"
                     f"tasks:\n  - {{name: t, dataset: d, metric: accuracy}}\n{section}")
    assert "seeds must be below 2**32 = 4294967296" in suite_error(suite)


@pytest.mark.parametrize("where, line, key", [
    ("train: {epochs: 1,", 3, "train.max_length"),
    ("  - {name: polarity,", 8, "tasks[[]0].train.max_length"),
], ids=["suite-train", "case-train"])
def test_a_max_length_beyond_the_models_positions_is_refused(
        pytester: pytest.Pytester, tiny_model: Path, toy_csv: Path, where: str, line: int, key: str) -> None:
    text = SUITE.format(name="long", model=tiny_model, csv=toy_csv)
    if where.startswith("train"):
        text = text.replace(where, "train: {max_length: 65, epochs: 1,")
    else:
        text = text.replace("metric: accuracy}", "metric: accuracy, train: {max_length: 512}}")
    pytester.makefile(".flex.yaml", long=text)
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    result.stdout.fnmatch_lines([f"*long.flex.yaml:{line}: {key}: * tokens are more than model "
                                 f"{tiny_model.name} takes (64 positions, from its config.json); use 64 or less"])
    assert json.loads((tiny_model / "config.json").read_text())["max_position_embeddings"] == 64
