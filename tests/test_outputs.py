"""Outputs: an unwritable path fails at start-up, before any fine-tuning; a write that fails at the end keeps
the summary and fails the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flexharness.cli import main

CHEAP = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_train_samples: 32, max_eval_samples: 32}")
ONE = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"

# Removes the folder of the results file after the start-up check, as a disk filling up or a cleanup job would.
LATE_CONFTEST = '''
from pathlib import Path


def pytest_runtest_teardown(item):
    Path("late").write_text("a file where the run expects a folder")
'''


@pytest.mark.parametrize("option", ["--flex-json=blocker/out.json", "--flex-save-baseline=blocker/base.json",
                                    "--flex-report-dir=blocker", "--flex-json=."])
def test_an_unwritable_output_is_a_usage_error_before_anything_runs(
        pytester: pytest.Pytester, suite_text, option: str) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=CHEAP))
    (pytester.path / "blocker").write_text("a file, not a folder")
    result = pytester.runpytest("-p", "no:cacheprovider", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    name, _, target = option.partition("=")
    why = "it is a folder, not a file" if target == "." else "blocker is not a folder"
    if name == "--flex-report-dir":
        why = "it is a file, not a folder"
    result.stderr.fnmatch_lines([f"*{name}: cannot write {target}: {why}"])
    assert "collected" not in result.stdout.str()  # nothing was collected, let alone fine-tuned


def test_a_write_that_fails_at_the_end_keeps_the_summary_and_fails_the_run(
        pytester: pytest.Pytester, suite_text) -> None:
    pytester.makeconftest(LATE_CONFTEST)
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=CHEAP))
    result = pytester.runpytest("-p", "no:cacheprovider", "--flex-json=late/out.json", "--flex-report-dir=report")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*flexharness summary*", "tasks/polarity *accuracy*",
                                 "ERROR --flex-json: cannot write late/out.json: File exists (late); the results above were not saved there"])
    assert (pytester.path / "report" / "summary.md").is_file()  # the other outputs are still written


def test_commands_check_their_outputs_first_and_keep_the_summary_when_a_write_fails(
        pytester: pytest.Pytester, suite_text, capsys) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=CHEAP))
    pytester.runpytest("-p", "no:cacheprovider", "--flex-json=run.json").assert_outcomes(passed=1)
    (pytester.path / "blocker").write_text("a file, not a folder")
    for argv in (["report", "absent.json", "--markdown", "blocker/s.md"],
                 ["compare", "absent.json", "absent.json", "--markdown", "blocker/s.md"],
                 ["merge", "absent.json", "--output", "blocker/m.json"],
                 ["merge", "absent.json", "-o", "m.json", "--junitxml", "blocker/j.xml"]):
        assert main(argv) == 2  # the output is refused before the (missing) input is even read
        option = argv[-2]
        assert f"flexharness {argv[0]}: {option}: cannot write {argv[-1]}: blocker is not a folder" \
               in capsys.readouterr().err
    # -o writes the file 'merged' first; then 'merged/summary.md' cannot be: the summary is printed all the same
    assert main(["merge", "run.json", "-o", "merged", "--markdown", "merged/summary.md"]) == 2
    out, err = capsys.readouterr()
    assert "tasks/polarity" in out and "P_avg" in out
    assert "flexharness merge: cannot write merged" in err and "the summary above was not saved there" in err
    assert json.loads(Path("merged").read_text())["cases"][0]["name"] == "polarity"
