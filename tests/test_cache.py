"""The result cache: reruns reuse finished records, changes rerun only what they touch, a kill loses little."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flexharness.axes import AXES
from flexharness.engine.models import cpu_only_torch, model_identity
from flexharness.files import path_fingerprint
from flexharness.harness.storage import RESULTS_DIR
from flexharness.store.keys import canonical_case
from flexharness.axes import load_suite

FAST = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
        "max_train_samples: 64, max_eval_samples: 64}")
TWO = """tasks:
  - {name: polarity, dataset: reviews, metric: accuracy}
  - {name: polarity_f1, dataset: reviews, metric: [f1, accuracy]}
"""


def _doc(pytester: pytest.Pytester, name: str) -> dict:
    return json.loads((pytester.path / name).read_text())


def _scores(doc: dict) -> dict[str, dict]:
    return {c["name"]: c["seeds"] for c in doc["cases"]}


def _cached(doc: dict) -> dict[str, bool]:
    return {c["name"]: c["cached"] for c in doc["cases"]}


def test_rerun_reuses_records_and_a_changed_key_reruns_only_its_case(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=FAST))
    pytester.runpytest("--flex-json=first.json").assert_outcomes(passed=2)
    second = pytester.runpytest("--flex-json=second.json", "-v")
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(["*tasks/polarity[[]seed0] PASSED (cached)*",
                                 "2 of 2 items reused from the result cache*"])
    first, again = _doc(pytester, "first.json"), _doc(pytester, "second.json")
    assert _cached(first) == {"polarity": False, "polarity_f1": False}
    assert _cached(again) == {"polarity": True, "polarity_f1": True}
    assert _scores(again) == _scores(first)

    changed = TWO.replace("metric: [f1, accuracy]}", "metric: [f1, accuracy], train: {learning_rate: 1.0e-3}}")
    pytester.makefile(".flex.yaml", toy=suite_text(changed, train=FAST))
    pytester.runpytest("--flex-json=third.json").assert_outcomes(passed=2)
    assert _cached(_doc(pytester, "third.json")) == {"polarity": True, "polarity_f1": False}

    fresh = pytester.runpytest("--flex-no-cache", "--flex-json=fresh.json")
    fresh.assert_outcomes(passed=2)
    assert "reused from the result cache" not in fresh.stdout.str()
    assert _cached(_doc(pytester, "fresh.json")) == {"polarity": False, "polarity_f1": False}
    assert _scores(_doc(pytester, "fresh.json")) == _scores(_doc(pytester, "third.json"))

    cleared = pytester.runpytest("--cache-clear", "--flex-json=cleared.json", "-k", "polarity_f1")
    cleared.assert_outcomes(passed=1)
    assert _cached(_doc(pytester, "cleared.json")) == {"polarity_f1": False}


def test_sigkill_mid_suite_then_rerun_recomputes_only_unfinished_items(pytester: pytest.Pytester, suite_text) -> None:
    four = "tasks:\n" + "".join(f"  - {{name: t{i}, dataset: reviews, metric: accuracy}}\n" for i in range(4))
    pytester.makefile(".flex.yaml", toy=suite_text(four, train=FAST))
    results = pytester.path / ".pytest_cache" / "d" / RESULTS_DIR
    with open(pytester.path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "toy.flex.yaml", "-q"], cwd=pytester.path,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while not list(results.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (pytester.path / "killed.log").read_text()
    finished = {json.loads(p.read_text())["nodeid"] for p in results.glob("*.json")}  # whole files only
    assert 1 <= len(finished) < 4

    rerun = pytester.runpytest("--flex-json=out.json")
    rerun.assert_outcomes(passed=4)
    rerun.stdout.fnmatch_lines([f"{len(finished)} of 4 items reused from the result cache*"])
    reused = {c["id"] + "[seed0]" for c in _doc(pytester, "out.json")["cases"] if c["cached"]}
    assert reused == finished


def test_model_fingerprint_follows_contents_not_paths_or_mtimes(tiny_model: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_model, tmp_path / "copy")  # new mtimes, same bytes
    assert path_fingerprint(copy) == path_fingerprint(tiny_model)
    assert model_identity(str(copy)) == model_identity(str(tiny_model))
    config = copy / "config.json"
    stat = config.stat()
    text = config.read_text()
    assert '"hidden_act": "gelu"' in text
    config.write_text(text.replace('"hidden_act": "gelu"', '"hidden_act": "relu"'))
    assert config.stat().st_size == stat.st_size  # same size ...
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and same mtime: only the bytes differ
    assert path_fingerprint(copy) != path_fingerprint(tiny_model)


def test_hub_model_identity_is_the_commit_in_the_local_hub_cache(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    code = ("import json; from flexharness.engine.models import model_identity; "
            "print(json.dumps([model_identity('org/tiny'), model_identity('org/absent')]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert json.loads(out.stdout) == [{"hub": "org/tiny", "revision": "0123abcd"}, None]


def test_case_identity_ignores_its_line_and_the_other_seeds(suite_text, tmp_path: Path) -> None:
    one = tmp_path / "one.flex.yaml"
    one.write_text(suite_text(TWO))
    two = tmp_path / "elsewhere" / "two.flex.yaml"  # another folder: another checkout
    two.parent.mkdir()
    two.write_text(suite_text("\n\n" + TWO).replace("seeds: [0]", "seeds: [0, 1, 2]"))
    a, b = load_suite(one).cases[0], load_suite(two).cases[0]
    assert (a.line, a.train.seeds, a.dataset.base_dir) != (b.line, b.train.seeds, b.dataset.base_dir)
    assert canonical_case(a) == canonical_case(b)
    three = tmp_path / "three.flex.yaml"
    three.write_text(suite_text(TWO).replace("batch_size: 16", "batch_size: 8"))
    assert canonical_case(load_suite(three).cases[0]) != canonical_case(a)


GOOD = {"score": 0.5, "metrics": {"accuracy": 0.5}, "seed": 0, "device": "cpu", "train_examples": 10,
        "eval_examples": 4}
BAD_RECORDS = {
    "list": [GOOD], "no-record": {"nodeid": "x"}, "score-text": {**GOOD, "score": "0.9"},
    "score-bool": {**GOOD, "score": True}, "no-metrics": {k: v for k, v in GOOD.items() if k != "metrics"},
    "metrics-list": {**GOOD, "metrics": [0.5]}, "metric-text": {**GOOD, "metrics": {"accuracy": "high"}},
    "other-seed": {**GOOD, "seed": 7}, "negative-count": {**GOOD, "train_examples": -1},
    "device-number": {**GOOD, "device": 0},
}


def _entry(key: str, record) -> dict:
    return {"key": key, "nodeid": "toy.flex.yaml::tasks/polarity[seed0]", "record": record}


def test_only_records_of_the_right_shape_are_reused(suite_text, tmp_path: Path) -> None:
    from flexharness.store.records import entry_problem
    from flexharness.suite.reader import expand

    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(TWO))
    suite = load_suite(path)
    planned = expand(suite, ("m",))[0]
    assert entry_problem(_entry("k", GOOD), "k", planned) is None
    assert entry_problem(_entry("k", {**GOOD, "score": None, "metrics": {}}), "k", planned) is None  # failed metric
    assert entry_problem(_entry("other", GOOD), "k", planned) == "stored under another key"
    for name, bad in BAD_RECORDS.items():
        entry = bad if name == "no-record" else _entry("k", bad)
        assert entry_problem(entry, "k", planned), name


def test_a_record_of_the_wrong_shape_is_recomputed_and_overwritten_with_one_warning(
        pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=FAST))
    pytester.runpytest("--flex-json=first.json").assert_outcomes(passed=2)
    stored = sorted((pytester.path / ".pytest_cache" / "d" / RESULTS_DIR).glob("*.json"))
    assert len(stored) == 2
    for path, bad in zip(stored, (BAD_RECORDS["score-text"], BAD_RECORDS["no-metrics"])):
        entry = json.loads(path.read_text())
        path.write_text(json.dumps({**entry, "record": bad}))  # valid JSON: reused forever before
    damaged = pytester.runpytest("--flex-json=second.json")
    damaged.assert_outcomes(passed=2)  # pytest may add its own warnings (assertion rewriting of a reimport)
    assert damaged.stdout.str().count("CacheRecordWarning: result cache: ignored the record") == 2
    damaged.stdout.fnmatch_lines(["*CacheRecordWarning: result cache: ignored the record *.json for "
                                  "tasks/polarity*[[]seed0]: *; recomputing it"])
    assert _cached(_doc(pytester, "second.json")) == {"polarity": False, "polarity_f1": False}
    assert _scores(_doc(pytester, "second.json")) == _scores(_doc(pytester, "first.json"))
    again = pytester.runpytest("--flex-json=third.json")
    again.assert_outcomes(passed=2)
    assert "CacheRecordWarning" not in again.stdout.str()
    assert _cached(_doc(pytester, "third.json")) == {"polarity": True, "polarity_f1": True}


def test_every_local_source_is_in_the_key_by_content(tiny_model: Path, tmp_path: Path) -> None:
    """Files, a save_to_disk folder, a local folder given as hub path, a --flex-data-dir mirror, the model."""
    import datasets

    from flexharness.store.keys import result_key
    from flexharness.suite.reader import expand
    from toy import sentiment_rows, write_csv

    model = shutil.copytree(tiny_model, tmp_path / "model")
    write_csv(tmp_path / "files" / "train.csv", sentiment_rows(40))
    write_csv(tmp_path / "hubdir" / "train.csv", sentiment_rows(40))
    datasets.Dataset.from_list(sentiment_rows(40)).save_to_disk(str(tmp_path / "disk"))
    datasets.Dataset.from_list(sentiment_rows(40)).save_to_disk(str(tmp_path / "mirror" / "org" / "set" / "default"))
    suite = tmp_path / "toy.flex.yaml"
    suite.write_text(f"suite: toy\nmodel: {model}\ntrain: {{seeds: [0]}}\ndatasets:\n"
                     "  files: {files: {train: files/train.csv}, label: label}\n"
                     "  disk: {disk: disk, label: label}\n"
                     f"  hubdir: {{hub: {{path: {tmp_path / 'hubdir'}}}, label: label}}\n"
                     "  mirror: {hub: {path: org/set}, label: label}\n"
                     "tasks:\n" + "".join(f"  - {{name: {n}, dataset: {n}, metric: accuracy}}\n"
                                          for n in ("files", "disk", "hubdir", "mirror")))

    def keys() -> dict[str, str]:
        planned = expand(load_suite(suite, {}, str(tmp_path / "mirror")), (str(model),))
        return {p.case.name: result_key(p, "cpu", AXES.get(p.case.axis).keyed_as(p.case))[0] for p in planned}

    before = keys()
    assert all(before.values()) and len(set(before.values())) == 4
    changes = {"files": tmp_path / "files" / "train.csv", "hubdir": tmp_path / "hubdir" / "train.csv",
               "disk": next((tmp_path / "disk").glob("*.arrow")),
               "mirror": next((tmp_path / "mirror" / "org" / "set" / "default").glob("*.arrow"))}
    for name, changed in changes.items():
        data = bytearray(changed.read_bytes())
        data[-1] ^= 1  # one bit, same size
        changed.write_bytes(bytes(data))
        after = keys()
        assert after[name] != before[name], name  # a miss for the case that reads it ...
        assert {k: v for k, v in after.items() if k != name} == {k: v for k, v in before.items() if k != name}
        before = after  # ... and for no other
    (model / "config.json").write_text((model / "config.json").read_text().replace('"gelu"', '"relu"'))
    assert set(keys().values()).isdisjoint(before.values())  # the model's folder: every case misses


def test_a_rerun_from_the_cache_never_imports_torch(pytester: pytest.Pytester, suite_text) -> None:
    """A warm rerun pays only the harness's own start-up: every record comes from the cache, and with a torch
    built for the CPU alone the device is known without importing torch (``models.cpu_only_torch``)."""
    if not cpu_only_torch():
        pytest.skip("this torch has an accelerator backend: telling whether a GPU is there imports torch")
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=FAST))
    pytester.makeconftest("import sys\n\ndef pytest_unconfigure(config):\n"
                          "    open('imported.txt', 'w').write(str('torch' in sys.modules))\n")
    pytester.runpytest_subprocess("-p", "no:hypothesispytest").assert_outcomes(passed=2)
    assert (pytester.path / "imported.txt").read_text() == "True"
    warm = pytester.runpytest_subprocess("-p", "no:hypothesispytest", "--flex-report-dir", "report")
    warm.assert_outcomes(passed=2)
    warm.stdout.fnmatch_lines(["2 of 2 items reused from the result cache*"])
    assert (pytester.path / "imported.txt").read_text() == "False"


@pytest.mark.parametrize(("version", "cpu_only"), [
    ("cuda: Optional[str] = None\nhip: Optional[str] = None\nxpu: Optional[str] = None\n", True),
    ("cuda: Optional[str] = '12.8'\nhip: Optional[str] = None\nxpu: Optional[str] = None\n", False),
    ("cuda = None\nhip = '6.3.42131'\nxpu = None\n", False),
    ("cuda = None\n", False),   # a version.py that does not name every backend proves nothing
])
def test_a_cpu_only_torch_is_told_from_its_version_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        version: str, cpu_only: bool) -> None:
    import importlib.machinery
    import importlib.util

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text(version)
    spec = importlib.machinery.ModuleSpec("torch", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "torch")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    monkeypatch.setattr(sys, "platform", "linux")
    assert cpu_only_torch.__wrapped__() is cpu_only
