"""Scale-out: balanced shards that merge into the unsharded verdict, one GPU and a CPU share per xdist worker."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexharness.axes import AXES
from flexharness.cli import main
from flexharness.results.merge import MergeError
from flexharness.results.verdict import merged
from flexharness.harness.scaleout import assign_shards, parse_shard, pin_gpu, visible_gpus

FAST = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0, 1], "
        "max_train_samples: 32, max_eval_samples: 32}")
THREE = "tasks:\n" + "".join(f"  - {{name: t{i}, dataset: reviews, metric: accuracy}}\n" for i in range(3))
GATES = ("gates:\n  tasks: {p_avg: {min: 0.0}, sigma_p: {max: 1.0}}\n  case_min: 1.01\n"
         "  cases: {tasks/t2: {min: 0.0}}\n  regression: {abs: 0.0}\n")


def test_shard_syntax() -> None:
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0", "1/1000000000", "1/" + "9" * 5000):
        with pytest.raises(ValueError, match="--flex-shard: .*1000"):
            parse_shard(bad)
    assert parse_shard("1000/1000") == (1000, 1000)
    with pytest.raises(ValueError, match="at most 1000 shards, got N = 1001; use fewer shards"):
        parse_shard("1/1001")


@given(costs=st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0.5, 1000), min_size=1, max_size=30),
       count=st.integers(1, 6))
def test_every_group_lands_on_one_shard_balanced_and_independent_of_order(costs: dict, count: int) -> None:
    shards = assign_shards(costs, count)
    assert set(shards) == set(costs) and set(shards.values()) <= set(range(count))
    loads = [sum(c for g, c in costs.items() if shards[g] == k) for k in range(count)]
    assert max(loads) - min(loads) <= max(costs.values()) + 1e-9
    assert assign_shards(dict(reversed(list(costs.items()))), count) == shards


def test_workers_pin_gpus_round_robin_only_when_several_are_visible() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "4, 6,7"}
    assert visible_gpus(env) == ["4", "6", "7"]
    assert pin_gpu({"workerid": "gw4"}, env) == "6" and env["CUDA_VISIBLE_DEVICES"] == "6"
    one = {"CUDA_VISIBLE_DEVICES": "3"}
    assert pin_gpu({"workerid": "gw1"}, one) is None and one["CUDA_VISIBLE_DEVICES"] == "3"


def test_collected_shards_partition_the_items_and_keep_seeds_together(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(THREE, train=FAST))
    chosen = []
    for k in (1, 2):
        result = pytester.runpytest("--collect-only", "-q", f"--flex-shard={k}/2")
        chosen.append({line for line in result.stdout.lines if "::tasks/" in line})
    assert chosen[0] and chosen[1] and not chosen[0] & chosen[1]
    assert len(chosen[0] | chosen[1]) == 6
    for items in chosen:
        cases = {line.split("[")[0] for line in items}
        assert len(items) == 2 * len(cases)  # both seeds of every case
    result = pytester.runpytest("--collect-only", "-q", "--flex-shard=3/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    huge = pytester.runpytest("--collect-only", "-q", "--flex-shard=1/1000000000")
    assert huge.ret == pytest.ExitCode.USAGE_ERROR
    huge.stderr.fnmatch_lines(["*--flex-shard: expected K/N with 1 <= K <= N <= 1000, e.g. 2/4, got '1/1000000000'"])
    empty = pytester.runpytest("--flex-shard=4/4", "--flex-json=empty.json")  # 3 cases cannot fill 4 shards
    assert empty.ret == pytest.ExitCode.OK
    doc = json.loads((pytester.path / "empty.json").read_text())
    assert doc["cases"] == [] and (doc["shard"]["index"], doc["shard"]["count"]) == (4, 4)
    assert len(doc["shard"]["planned"]) == 6  # the whole run: merge checks the shards add up to it
    assert main(["merge", str(pytester.path / "empty.json"), "-o", str(pytester.path / "m.json")]) == 2


def _baseline(pytester: pytest.Pytester) -> None:
    cases = [{"suite": "toy", "model": "m", "axis": "tasks", "name": f"t{i}", "higher_is_better": True,
              "seeds": {"0": 0.0, "1": 0.0}} for i in range(3)]
    (pytester.path / "base.json").write_text(json.dumps({"cases": cases}))


INTERVALS = ("p_avg_interval", "sigma_p_interval", "gate_intervals")  # recomputed only from the outputs files


def _verdict(doc: dict) -> tuple:
    cases = [(c["id"], c["model"], c["seeds"], c["score"], c["seed_std"], c["status"]) for c in doc["cases"]]
    aggregates = [{k: v for k, v in a.items() if k not in INTERVALS} for a in doc["aggregates"]]
    return cases, aggregates, [{k: g[k] for k in sorted(g)} for g in doc["gates"]]


def test_merged_shards_give_the_cases_and_verdicts_of_one_run(pytester: pytest.Pytester, suite_text, capsys) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(THREE + GATES, train=FAST))
    _baseline(pytester)
    whole = pytester.runpytest("--flex-json=whole.json", "--flex-baseline=base.json")
    whole.assert_outcomes(passed=6 + 2 + 1 + 4, failed=1)  # items, axis + case + regression gates; case_min fails
    outcomes = []
    for k in (1, 2):
        shard = pytester.runpytest(f"--flex-shard={k}/2", f"--flex-json=s{k}.json", "--flex-baseline=base.json",
                                   "--flex-no-cache")
        shard.stdout.fnmatch_lines([f"*shard {k}/2: * cases; gates are decided by 'flexharness merge'*"])
        outcomes.append(shard.parseoutcomes())
    assert sorted(o.get("passed") for o in outcomes) == [2, 4] and not any(o.get("failed") for o in outcomes)
    assert sorted(o.get("deselected") for o in outcomes) == [2, 4]

    paths = [str(pytester.path / name) for name in ("s1.json", "s2.json")]
    merged_path = str(pytester.path / "merged.json")
    assert main(["merge", *paths, "-o", merged_path, "--junitxml", str(pytester.path / "m.xml")]) == 1
    assert "FAIL  toy [" in capsys.readouterr().out
    whole_doc = json.loads((pytester.path / "whole.json").read_text())
    merged = json.loads((pytester.path / merged_path).read_text())
    assert _verdict(merged) == _verdict(whole_doc)
    merged_testcases = {tc.get("name") for tc in ET.parse(pytester.path / "m.xml").iter("testcase")}
    assert {"gates/case_min", "gates/cases/tasks/t2.min"} <= merged_testcases

    assert main(["merge", paths[0], "-o", merged_path]) == 2
    assert "missing shard 2/2" in capsys.readouterr().err
    assert main(["merge", paths[0], paths[0], "-o", merged_path]) == 2
    assert "shard 1/2 given twice" in capsys.readouterr().err


def test_runs_split_by_seed_merge_back_into_one(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(THREE + GATES, train=FAST))
    deselected_t2 = pytester.runpytest("--flex-json=whole.json", "-k", "t0 or t1")
    deselected_t2.assert_outcomes(passed=4 + 2, failed=1)  # the floor of t2, which is not run, has no gate
    whole = json.loads((pytester.path / "whole.json").read_text())
    halves = []
    for seed in ("0", "1"):
        half = copy.deepcopy(whole)
        for case in half["cases"]:
            case["seeds"] = {seed: case["seeds"][seed]}
            case["items"] = {k: v for k, v in case["items"].items() if k.endswith(f"seed{seed}]")}
        halves.append((f"seed{seed}.json", half))
    assert _verdict(merged(halves, list(AXES))) == _verdict(whole)
    with pytest.raises(MergeError, match="has seed 0 in both"):
        merged([halves[0], halves[0]], list(AXES))


def test_each_xdist_worker_takes_one_gpu(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_env="import os\n\ndef test_gpu():\n"
                                 "    with open(f\"gpu-{os.environ['PYTEST_XDIST_WORKER']}.txt\", 'w') as f:\n"
                                 "        f.write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))\n")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    pytester.runpytest("-n", "2", "--dist", "each").assert_outcomes(passed=2)
    assert {p.name: p.read_text() for p in pytester.path.glob("gpu-*.txt")} == {"gpu-gw0.txt": "3", "gpu-gw1.txt": "5"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    pytester.runpytest("-n", "2", "--dist", "each").assert_outcomes(passed=2)
    assert {p.read_text() for p in pytester.path.glob("gpu-*.txt")} == {"7"}


def test_xdist_workers_share_the_cpu_cores(pytester: pytest.Pytester, suite_text,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pytester.makefile(".flex.yaml", toy=suite_text("tasks:\n  - {name: t, dataset: reviews, metric: accuracy}\n",
                                                   train=FAST.replace("seeds: [0, 1]", "seeds: [0]")))
    pytester.makeconftest("import os\n\ndef pytest_runtest_teardown(item):\n    import torch\n"
                          "    with open(f\"threads-{os.environ['PYTEST_XDIST_WORKER']}.txt\", 'w') as f:\n"
                          "        f.write(str(torch.get_num_threads()))\n")
    assert pytester.runpytest("-n", "2", "--dist", "each", "--flex-device=cpu").ret == pytest.ExitCode.OK
    expected = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert {p.read_text() for p in pytester.path.glob("threads-*.txt")} == {expected}


def _shards(pytester: pytest.Pytester, *extra: str, shards=(1, 2), xdist: bool = False) -> list[tuple[str, dict]]:
    docs = []
    for k in shards:
        options = [f"--flex-shard={k}/2", f"--flex-json=s{k}.json", *extra] + (["-n", "2"] if xdist and k == 2 else [])
        pytester.runpytest(*options)  # under xdist the workers send the plan back
        docs.append((f"s{k}.json", json.loads((pytester.path / f"s{k}.json").read_text())))
    return docs


def _edited(docs: list[tuple[str, dict]], k: int, edit) -> list[tuple[str, dict]]:
    changed = copy.deepcopy(docs)
    edit(changed[k][1])
    return changed


def test_merge_refuses_shards_that_are_not_parts_of_one_run(pytester: pytest.Pytester, suite_text,
                                                            tiny_model) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(THREE, train=FAST))
    docs = _shards(pytester, xdist=True)
    planned = sorted(f"toy.flex.yaml::tasks/t{i}[seed{s}]" for i in range(3) for s in (0, 1))
    assert [sorted(e[0] for e in doc["shard"]["planned"]) for _, doc in docs] == [planned, planned]
    assert sorted(item for _, doc in docs for suite in doc["suites"] for item in suite["items"]) == planned
    assert len(merged(docs, list(AXES))["cases"]) == 3

    def drop_item(doc: dict) -> None:
        doc["suites"][0]["items"].pop()

    def repeat_item(doc: dict) -> None:
        doc["suites"][0]["items"].append(docs[0][1]["suites"][0]["items"][0])

    refusals = {
        "1 planned item ran in no shard (toy.flex.yaml::tasks/t*): the merged run would lack them": drop_item,
        "item toy.flex.yaml::tasks/* ran in both s1.json and s2.json: the shards overlap": repeat_item,
        "suite 'toy' differs between s1.json and s2.json (fingerprint)*":
            lambda doc: doc["suites"][0].update(fingerprint="0" * 16),
        "s1.json and s2.json are shards of different runs (6 and 7 items planned; e.g. other.flex.yaml::x)*":
            lambda doc: doc["shard"]["planned"].append(["other.flex.yaml::x", "", ""]),
        "s2.json does not say which run it is a shard of*": lambda doc: doc["shard"].pop("planned"),
    }
    for message, edit in refusals.items():
        with pytest.raises(MergeError) as refused:
            merged(_edited(docs, 1, edit), list(AXES))
        assert fnmatch.fnmatch(str(refused.value), message), str(refused.value)

    two_models = _shards(pytester, f"--model={tiny_model}", "--model=" + str(tiny_model) + "/", shards=(2,))
    with pytest.raises(MergeError, match="shards of different runs"):
        merged([docs[0], *two_models], list(AXES))
    pytester.makefile(".flex.yaml", other=suite_text("tasks:\n  - {name: x, dataset: reviews, metric: accuracy}\n",
                                                     train=FAST).replace("suite: toy", "suite: other"))
    with_other = _shards(pytester, shards=(2,))
    with pytest.raises(MergeError, match="shards of different runs"):
        merged([docs[0], *with_other], list(AXES))
    seed_split = [(name, {**doc, "shard": None}) for name, doc in (docs[0], docs[1])]
    seed_split[1][1]["suites"] = [{**seed_split[1][1]["suites"][0], "name": "other"}]
    with pytest.raises(MergeError, match="ran different suites"):
        merged(seed_split, list(AXES))
