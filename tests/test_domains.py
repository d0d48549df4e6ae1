"""The domains axis end to end: one fine-tuning per (domain, seed), the transfer matrix, the gap and its gate."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from flexharness.errors import SuiteError
from flexharness.axes import load_suite
from toy import failed_testcases, sentiment_rows, write_csv, write_jsonl

TRAIN = "train: {epochs: 3, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0, 1]}"
# The toy sentences each carry one topic word (flight, phone, car, game): natural domains.
DOMAINS = """domains:
  dataset: reviews
  metric: accuracy
  transfer: true
  members:
    flight: {{where: {{text: {{matches: flight}}}}}}
    phone: {{where: {{text: {{matches: phone}}}}}}
    rest: {{where: {{text: {{matches: "^(?!.*(flight|phone))"}}}}}}
{extra}"""


def junit_records(path: Path) -> dict[str, dict]:
    """Each item's record, read back from the JUnit XML property it travelled in."""
    records = {}
    for case in ET.parse(path).iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if "flex_result" in props:
            records[case.get("name")] = json.loads(props["flex_result"])
    return records


def test_matrix_diagonal_gap_and_one_fine_tuning_per_domain_and_seed(
        pytester: pytest.Pytester, suite_text, tmp_path: Path) -> None:
    other = write_jsonl(tmp_path / "forum.jsonl", sentiment_rows(200, seed=7))
    extra = "    forum: {dataset: forum}\ngates:\n  domains: {transfer_gap: {max: 1.0}, p_avg: {min: 0.0}}\n"
    text = suite_text(DOMAINS.format(extra=extra), TRAIN).replace(
        "datasets:\n", f"datasets:\n  forum:\n    files: {{train: {other}}}\n")
    pytester.makefile(".flex.yaml", toy=text)
    result = pytester.runpytest("-m", "domains", "--flex-json=out.json", "--junitxml=junit.xml",
                                "--flex-report-dir=report")
    result.assert_outcomes(passed=4 * 2 + 2)  # one item per (domain, seed), no item per target; two gates
    result.stdout.fnmatch_lines(["*transfer matrix: toy*", "flight * [[]0.*", "eval n *",
                                 "in-domain mean *, cross-domain mean *, transfer gap *",
                                 "PASS*domains/transfer_gap.max*"])
    eval_sizes = [line for line in result.outlines if line.startswith("eval n")]
    assert eval_sizes and all(re.fullmatch(r"eval n( +\d+)+", line.rstrip()) for line in eval_sizes), eval_sizes
    doc = json.loads((pytester.path / "out.json").read_text())
    records = junit_records(pytester.path / "junit.xml")
    names = ["flight", "phone", "rest", "forum"]
    assert sorted(records) == sorted(f"domains/{d}[seed{s}]" for d in names for s in (0, 1))
    for name, record in records.items():  # each item scored its model on every other domain, itself excluded
        assert sorted(record["transfer"]) == sorted(set(names) - {record["domain"]}), name
    matrix = {(e["source"], e["target"]): e["score"] for e in doc["transfer"]}
    assert sorted(matrix) == sorted((s, t) for s in names for t in names)
    case_scores = {c["name"]: c["score"] for c in doc["cases"]}
    for s in names:
        assert matrix[(s, s)] == case_scores[s]
        for t in set(names) - {s}:
            seeds = [records[f"domains/{s}[seed{k}]"]["transfer"][t] for k in (0, 1)]
            assert math.isclose(matrix[(s, t)], sum(seeds) / 2)
    (summary,) = doc["transfer_summary"]
    diagonal = [matrix[(s, s)] for s in names]
    off = [v for (s, t), v in matrix.items() if s != t]
    assert math.isclose(summary["in_domain"], sum(diagonal) / 4)
    assert math.isclose(summary["cross_domain"], sum(off) / 12)
    assert math.isclose(summary["transfer_gap"], summary["in_domain"] - summary["cross_domain"])
    assert math.isclose(doc["aggregates"][0]["p_avg"], summary["in_domain"])
    assert summary["domains"]["forum"] == {"train": 160, "eval": 40}
    assert {c["name"]: c["domain"] for c in doc["cases"]} == {n: n for n in names}
    (heatmap,) = (pytester.path / "report").glob("transfer-toy-*.png")
    assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### Transfer: toy" in (pytester.path / "report" / "summary.md").read_text()


def test_gap_gate_fails_the_run_through_a_gate_testcase(pytester: pytest.Pytester, suite_text) -> None:
    extra = "gates:\n  domains: {transfer_gap: {max: -1.0}}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(DOMAINS.format(extra=extra), TRAIN.replace("0, 1", "0")))
    result = pytester.runpytest("--junitxml=junit.xml", "--flex-json=out.json")
    result.assert_outcomes(passed=3, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAILED *::gates/domains/transfer_gap.max*"])
    assert failed_testcases(pytester.path / "junit.xml") == ["gates/domains/transfer_gap.max"]
    (gate,) = json.loads((pytester.path / "out.json").read_text())["gates"]
    summary = json.loads((pytester.path / "out.json").read_text())["transfer_summary"][0]
    assert gate["value"] == summary["transfer_gap"] and not gate["passed"]


def test_lower_is_better_gap_is_cross_minus_in_domain(pytester: pytest.Pytester, suite_text) -> None:
    body = DOMAINS.format(extra="").replace("metric: accuracy", "metric: mse").replace(
        '    rest: {where: {text: {matches: "^(?!.*(flight|phone))"}}}\n', "")
    text = suite_text(body, TRAIN.replace("0, 1", "0")).replace("label: label", "label: score")
    pytester.makefile(".flex.yaml", toy=text)
    pytester.runpytest("--flex-json=out.json").assert_outcomes(passed=2)
    summary = json.loads((pytester.path / "out.json").read_text())["transfer_summary"][0]
    assert summary["higher_is_better"] is False
    assert math.isclose(summary["transfer_gap"], summary["cross_domain"] - summary["in_domain"])


def test_labels_missing_from_a_source_make_the_gap_gate_incomplete(
        pytester: pytest.Pytester, suite_text, tmp_path: Path) -> None:
    three = write_csv(tmp_path / "three.csv", sentiment_rows(150, labels=("positive", "negative", "neutral")))
    body = ("domains:\n  metric: accuracy\n  transfer: true\n  members:\n"
            "    two: {dataset: reviews, where: {text: {matches: flight}}}\n    three: {dataset: three}\n"
            "gates:\n  domains: {transfer_gap: {max: 1.0}}\n")
    text = suite_text(body, TRAIN.replace("0, 1", "0")).replace(
        "datasets:\n", f"datasets:\n  three:\n    files: {{train: {three}}}\n")
    pytester.makefile(".flex.yaml", toy=text)
    result = pytester.runpytest("--flex-json=out.json")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*domains/two*domain 'three' has 1 label value that domain 'two' never shows in "
                                 "training (it has 2 labels)*",
                                 "*transfer_gap.max*incomplete: 2 of 4 transfer scores are missing*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    scores = {(e["source"], e["target"]): e["score"] for e in doc["transfer"]}
    assert scores[("two", "two")] is None and scores[("three", "two")] is not None  # 3-label model scored 2 labels


def test_items_are_one_per_domain_and_seed_with_the_domains_marker(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(DOMAINS.format(extra="") + "tasks:\n"
                                                   "  - {name: polarity, dataset: reviews, metric: accuracy}\n"))
    result = pytester.runpytest("--collect-only", "-q", "-m", "domains", "--flex-seeds=0,1,2")
    result.stdout.fnmatch_lines(["*::domains/flight[[]seed0]", "*::domains/rest[[]seed2]",
                                 "9/12 tests collected (3 deselected)*"])
    assert "gates/" not in result.stdout.str() and "flexharness summary" not in result.stdout.str()


@pytest.mark.parametrize("members, message", [
    ("    tiny: {where: {text: {matches: '^nothing matches this$'}}}",
     "*toy.flex.yaml:17: domains.members.tiny: domain 'tiny': only 0 training examples after filtering "
     "(0 rows of 'train' kept), fewer than the 2 needed (dataset 'reviews' has 2 labels)*"),
    ("    tiny: {dataset: odd}",
     "*domains.members.tiny: domain 'tiny': only 2 training examples after filtering (3 rows of 'train' kept, "
     "1 held out for evaluation), fewer than the 3 needed (dataset 'odd' has 3 labels)*"),
    ("    tiny: {dataset: split, where: {text: {matches: flight}}}",
     "*domain 'tiny': its evaluation split is empty after filtering (0 examples, * for training)*"),
])
def test_too_small_domain_is_a_suite_error_at_collection(pytester: pytest.Pytester, suite_text, tmp_path: Path,
                                                         members: str, message: str) -> None:
    odd = write_csv(tmp_path / "odd.csv", [{"text": "good", "label": "a"}, {"text": "bad", "label": "b"},
                                           {"text": "fine", "label": "c"}])
    train = write_csv(tmp_path / "train.csv", sentiment_rows(60))
    no_flights = write_csv(tmp_path / "eval.csv", [r for r in sentiment_rows(60) if "flight" not in r["text"]])
    datasets = (f"datasets:\n  odd:\n    files: {{train: {odd}}}\n"
                f"  split:\n    files: {{train: {train}, eval: {no_flights}}}\n")
    body = "domains:\n  dataset: reviews\n  metric: accuracy\n  members:\n    flight: {where: {text: {matches: flight}}}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(body + members + "\n").replace("datasets:\n", datasets))
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # other suite files still run
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str()


def test_collection_reads_no_torch_and_caches_domain_sizes(pytester: pytest.Pytester, suite_text,
                                                           tmp_path: Path) -> None:
    data = write_csv(tmp_path / "data.csv", sentiment_rows(200))
    body = DOMAINS.format(extra="").replace("dataset: reviews", "dataset: mine")
    pytester.makefile(".flex.yaml", toy=suite_text(body).replace("datasets:\n", f"datasets:\n  mine:\n"
                                                                              f"    files: {{train: {data}}}\n"))
    pytester.makeconftest("import sys\ndef pytest_collection_finish(session):\n"
                          "    print('LOADED', 'torch' in sys.modules, 'datasets' in sys.modules)\n")
    pytester.runpytest_subprocess("--collect-only", "-q").stdout.fnmatch_lines(["LOADED False True", "3 tests*"])
    pytester.runpytest_subprocess("--collect-only", "-q").stdout.fnmatch_lines(["LOADED False False", "3 tests*"])
    write_csv(data, [r for r in sentiment_rows(200) if "phone" not in r["text"]])  # the cache sees the change
    changed = pytester.runpytest_subprocess("--collect-only", "-q")
    changed.stdout.fnmatch_lines(["*domain 'phone': only 0 training examples*"])


@pytest.mark.parametrize("section, message", [
    ("domains:\n  dataset: reviews\n  metric: accuracy\n  memebrs: {a: {where: {label: positive}}}\n",
     "toy.flex.yaml:11: domains.memebrs: unknown key (did you mean 'members'?)"),
    ("domains:\n  dataset: reviews\n  metric: acuracy\n  members: {a: {where: {label: positive}}}\n",
     "toy.flex.yaml:10: domains.metric: unknown metric 'acuracy' (did you mean 'accuracy'?)"),
    ("domains:\n  dataset: review\n  metric: accuracy\n  members: {a: {where: {label: positive}}}\n",
     "toy.flex.yaml:9: domains.dataset: no dataset named 'review' under 'datasets:' (did you mean 'reviews'?)"),
    ("domains:\n  dataset: reviews\n  metric: accuracy\n  members:\n    a: {}\n",
     "toy.flex.yaml:12: domains.members.a: a domain needs a 'where' filter over the default dataset"),
    ("domains:\n  metric: accuracy\n  members:\n    a: {where: {label: positive}}\n",
     "toy.flex.yaml:11: domains.members.a: no dataset for this domain"),
    ("domains:\n  dataset: reviews\n  metric: accuracy\n  members:\n    a b: {where: {label: positive}}\n",
     "toy.flex.yaml:12: domains.members.a b: a domain name may hold only letters"),
    ("domains:\n  dataset: reviews\n  metric: accuracy\n  transfer: true\n  members:\n"
     "    a: {where: {label: positive}}\n", "toy.flex.yaml:11: domains.transfer: a transfer matrix needs at least two"),
    ("domains:\n  dataset: reviews\n  metric: accuracy\n  members: {a: {where: {label: x}}, b: {where: {label: y}}}\n"
     "gates:\n  domains: {transfer_gap: {max: 0.1}}\n",
     "toy.flex.yaml:13: gates.domains.transfer_gap: a transfer gap needs 'transfer: true'"),
    ("domains:\n  dataset: reviews\n  metric: accuracy\n  transfer: true\n"
     "  members: {a: {where: {label: x}}, b: {where: {label: y}}}\ngates:\n  domains: {transfer_gap: {min: 0.1}}\n",
     "toy.flex.yaml:14: gates.domains.transfer_gap.min: a transfer gap takes only 'max'"),
    ("tasks:\n  - {name: t, dataset: reviews, metric: accuracy}\ngates:\n  domains: {transfer_gap: {max: 0.1}}\n",
     "toy.flex.yaml:11: gates.domains: the suite has no 'domains:' cases, so these gates would never be evaluated"),
])
def test_schema_errors_name_file_line_and_key(suite_text, tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(section))
    with pytest.raises(SuiteError) as excinfo:
        load_suite(path)
    assert str(excinfo.value).startswith(f"{tmp_path}/{message}"), str(excinfo.value)


def test_a_domain_is_scored_on_one_evaluation_split(suite_text, tmp_path: Path) -> None:
    rows, x, y = (write_csv(tmp_path / f"{name}.csv", sentiment_rows(20, seed=i)) for i, name in enumerate("rxy"))
    both = f"  both:\n    files: {{train: {rows}, x: {x}, y: {y}}}\n    eval_split: [x, y]\n"
    section = "domains:\n  dataset: reviews\n  metric: accuracy\n  members:\n    a: {dataset: both}\n"
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(section).replace("datasets:\n", "datasets:\n" + both, 1))
    with pytest.raises(SuiteError, match=r"toy.flex.yaml:15: domains.members.a: dataset 'both' names several "
                                         r"evaluation splits \(x, y\); a domain is scored on one"):
        load_suite(path)


def test_xdist_gives_the_same_transfer_matrix(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(DOMAINS.format(extra=""), TRAIN.replace("0, 1", "0")))
    pytester.runpytest("--flex-json=plain.json").assert_outcomes(passed=3)
    pytester.runpytest("-n", "2", "--flex-json=xdist.json").assert_outcomes(passed=3)
    a, b = (json.loads((pytester.path / name).read_text()) for name in ("plain.json", "xdist.json"))
    assert a["transfer"] == b["transfer"] and len(a["transfer"]) == 9


def test_shards_and_seed_splits_merge_into_the_matrix_and_gap_gate_of_one_run(pytester: pytest.Pytester,
                                                                               suite_text) -> None:
    from flexharness.cli import main

    extra = "gates:\n  domains: {transfer_gap: {max: -1.0}}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(DOMAINS.format(extra=extra), TRAIN))
    pytester.runpytest("--flex-json=whole.json").assert_outcomes(passed=6, failed=1)
    parts = {"shards": [f"--flex-shard={k}/2" for k in (1, 2)], "seeds": [f"--flex-seeds={k}" for k in (0, 1)]}
    whole = json.loads((pytester.path / "whole.json").read_text())
    for kind, options in parts.items():
        paths = []
        for k, option in enumerate(options):  # the items' records come from the result cache of the whole run
            paths.append(str(pytester.path / f"{kind}{k}.json"))
            pytester.runpytest(option, f"--flex-json={paths[-1]}")
        merged_path = str(pytester.path / f"{kind}.json")
        assert main(["merge", *paths, "-o", merged_path]) == 1
        merged = json.loads(Path(merged_path).read_text())
        assert merged["transfer"] == whole["transfer"], kind
        assert merged["transfer_summary"] == whole["transfer_summary"], kind
        assert [(g["name"], g["passed"], g["value"]) for g in merged["gates"]] == \
               [(g["name"], g["passed"], g["value"]) for g in whole["gates"]] == \
               [("domains/transfer_gap.max", False, whole["transfer_summary"][0]["transfer_gap"])]


def test_case_fingerprints_do_not_depend_on_the_checkout_folder(suite_text, tmp_path: Path) -> None:
    from flexharness.store.keys import case_fingerprint

    prints = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        write_csv(tmp_path / folder / "reviews.csv", sentiment_rows(40))
        text = DOMAINS.format(extra="")
        path = tmp_path / folder / "toy.flex.yaml"
        path.write_text(f"suite: toy\nmodel: m\ndatasets:\n  reviews: {{files: {{train: reviews.csv}}}}\n{text}")
        prints.append([case_fingerprint(c) for c in load_suite(path).cases])
    assert prints[0] == prints[1] and len(set(prints[0])) == 3


def test_a_damaged_domain_size_entry_is_counted_again_with_one_warning(pytester: pytest.Pytester,
                                                                       suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(DOMAINS.format(extra="")))
    pytester.runpytest("--collect-only", "-q").stdout.fnmatch_lines(["3 tests collected*"])
    entries = sorted((pytester.path / ".pytest_cache" / "v" / "flexharness" / "domain-sizes").iterdir())
    assert len(entries) == 3
    for entry, bad in zip(entries, ([], {"train": "many", "labels": 2, "eval": 1, "matched": 1, "held_out": 0},
                                    {"train": 5, "labels": True, "eval": 1, "matched": 1, "held_out": 0})):
        entry.write_text(json.dumps(bad))  # valid JSON, wrong shape
    damaged = pytester.runpytest("--collect-only", "-q")
    damaged.stdout.fnmatch_lines(["3 tests collected*"])
    assert damaged.stdout.str().count("SizesCacheWarning: domain-size cache: ignored the damaged entry") == 3
    again = pytester.runpytest("--collect-only", "-q")  # overwritten: no warning any more
    again.stdout.fnmatch_lines(["3 tests collected*"])
    assert "SizesCacheWarning" not in again.stdout.str()
