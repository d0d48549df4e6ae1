"""Faults during a run cost one item, never the run: divergence, out of memory, unloadable
models, an unreachable hub, a crashed xdist worker, Ctrl-C and SIGTERM. Each is injected for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flexharness.engine import hub

CHEAP = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_train_samples: 64, max_eval_samples: 64}")
TWO_TASKS = """tasks:
  - {name: first, dataset: reviews, metric: accuracy}
  - {name: second, dataset: reviews, metric: accuracy}
gates:
  tasks: {p_avg: {min: 0.1}}
"""


def read_json(pytester: pytest.Pytester, name: str = "out.json") -> dict:
    return json.loads((pytester.path / name).read_text())


def test_divergence_fails_its_item_naming_step_and_learning_rate(pytester: pytest.Pytester, suite_text) -> None:
    body = TWO_TASKS.replace("metric: accuracy}\n  - {name: second",
                             "metric: accuracy, train: {learning_rate: 1.0e+6}}\n  - {name: second")
    pytester.makefile(".flex.yaml", toy=suite_text(body, train=CHEAP))
    result = pytester.runpytest("-p", "no:cacheprovider", "--flex-json=out.json")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "tasks/first (model *, seed 0): training diverged: loss is nan at step * (epoch 1, learning rate * at that "
        "step, 'learning_rate: 1e+06'); lower 'learning_rate' or check the labels",
        "gate tasks/p_avg.min (toy, model *): incomplete: 1 of 2 tasks cases have no score*",
    ])
    assert "Traceback" not in result.stdout.str()
    doc = read_json(pytester)
    assert [(c["name"], c["status"], c["score"] is None) for c in doc["cases"]] == [
        ("first", "failed", True), ("second", "passed", False)]
    assert doc["aggregates"][0]["p_avg"] is None and doc["aggregates"][0]["missing"] == 1


OOM_CONFTEST = '''
import weakref
from pathlib import Path

import torch

import flexharness.engine.models as models

_original = models.fresh_model
_seen = []


def _out_of_memory(module, args, output):
    RAISE


def _fresh_model(*args, **kwargs):
    model = _original(*args, **kwargs)
    if not _seen:  # the first case only: a forward hook that runs out of memory once
        _seen.append(weakref.ref(model))
        model.register_forward_hook(_out_of_memory)
    return model


def pytest_configure(config):
    models.fresh_model = _fresh_model


def pytest_unconfigure(config):
    models.fresh_model = _original


def pytest_runtest_setup(item):
    if _seen:  # before the next case: is the failed case's model gone, without any help from the test?
        Path("freed.txt").write_text(str(_seen[0]() is None))
'''


OUT_OF_MEMORY = {  # what is raised inside the model's forward pass -> the reason the message quotes
    "cuda": ('raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")',
             "CUDA out of memory. Tried to allocate 20.00 GiB (injected)"),
    "cpu": ("torch.empty(1 << 50, dtype=torch.uint8)  # a real allocation failure of torch's CPU allocator",
            "*DefaultCPUAllocator: can't allocate memory: you tried to allocate 1125899906842624 bytes*"),
}


@pytest.mark.parametrize("device", sorted(OUT_OF_MEMORY))
def test_out_of_memory_fails_one_item_with_a_hint_and_frees_its_memory(
        pytester: pytest.Pytester, suite_text, device: str) -> None:
    statement, reason = OUT_OF_MEMORY[device]
    pytester.makeconftest(OOM_CONFTEST.replace("RAISE", statement))
    pytester.makefile(".flex.yaml", toy=suite_text(TWO_TASKS, train=CHEAP))
    result = pytester.runpytest("-p", "no:cacheprovider", "--flex-json=out.json")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        f"tasks/first (model *, seed 0): out of memory ({reason}) at batch_size 16, eval_batch_size 128, "
        "max_length 128; lower 'batch_size' (or 'eval_batch_size') or 'max_length' under 'train:', "
        "train fewer weights ('method: lora' or 'method: head'), set 'gradient_checkpointing: true', "
        "or run on a larger device",
        "gate tasks/p_avg.min (toy, model *): incomplete: 1 of 2 tasks cases have no score*",
    ])
    assert (pytester.path / "freed.txt").read_text() == "True"  # pytest keeps the failure; not its frames
    assert [c["status"] for c in read_json(pytester)["cases"]] == ["failed", "passed"]


def test_a_model_that_cannot_be_loaded_fails_its_items_not_the_session(
        pytester: pytest.Pytester, suite_text, tiny_model: Path) -> None:
    broken = pytester.mkdir("broken-model")
    (broken / "config.json").write_text("{ this is not json")
    pytester.makefile(".flex.yaml", toy=suite_text(TWO_TASKS, train=CHEAP))
    result = pytester.runpytest("-p", "no:cacheprovider", "--flex-json=out.json", f"--model={tiny_model}",
                                f"--model={broken}", "--model=./no/such/model")
    result.assert_outcomes(passed=3, failed=6)  # per model: 2 cases and 1 gate
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        f"tasks/first (model {broken}, seed 0): cannot load model '{broken}': *. Check that the folder holds a "
        "model and its tokenizer saved with save_pretrained() and that no file is damaged",
        f"tasks/second (model {broken}, seed 0): cannot load model '{broken}': *",
        "tasks/first (model ./no/such/model, seed 0): model './no/such/model': no such directory; pass --model a "
        "model directory, a hub id or pkg://PACKAGE/PATH",
    ])
    assert "INTERNALERROR" not in result.stdout.str() and "Traceback" not in result.stdout.str()
    gates = {(g["model"], g["passed"], g["message"].split(" ")[0]) for g in read_json(pytester)["gates"]}
    assert gates == {(str(tiny_model), True, "p_avg.min"), (str(broken), False, "incomplete:"),
                     ("./no/such/model", False, "incomplete:")}


HUB_TASKS = """datasets:
  a: {hub: {path: flexharness-test/absent, name: a}}
  b: {hub: {path: flexharness-test/absent, name: b}}
tasks:
  - {name: first, dataset: a, metric: accuracy}
  - {name: second, dataset: b, metric: accuracy}
"""


def test_an_unreachable_hub_is_asked_once_per_run(pytester: pytest.Pytester, tiny_model: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The first case waits through the network retries; the second fails at once, in offline mode."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: a machine without network
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    pytester.makefile(".flex.yaml", toy=f"suite: toy\nmodel: {tiny_model}\n{CHEAP}\n{HUB_TASKS}")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    first, second = (line for line in result.stdout.lines if line.startswith("tasks/") and "hub dataset" in line)
    assert "Couldn't reach 'flexharness-test/absent'" in first and hub.OFFLINE_NOTE not in first
    assert "(OfflineModeIsEnabled)" in second and hub.OFFLINE_NOTE in second


CRASH_CONFTEST = '''
import os


def pytest_runtest_call(item):
    if item.name.startswith("tasks/crash"):
        os._exit(3)  # the worker process dies mid-case, as on a segfault or the OOM killer
'''


def test_a_crashed_xdist_worker_loses_only_its_case(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makeconftest(CRASH_CONFTEST)
    body = TWO_TASKS.replace("tasks:\n", "tasks:\n  - {name: crash, dataset: reviews, metric: accuracy}\n")
    pytester.makefile(".flex.yaml", toy=suite_text(body, train=CHEAP))
    result = pytester.runpytest("-p", "no:cacheprovider", "-n", "2", "--flex-json=out.json")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running 'toy.flex.yaml::tasks/crash[[]seed0]'*",
                                 "gate tasks/p_avg.min (toy, model *): incomplete: 1 of 3 tasks cases have no score*"])
    doc = read_json(pytester)
    by_name = {c["name"]: c for c in doc["cases"]}
    assert by_name["crash"]["status"] == "error" and by_name["crash"]["score"] is None
    assert by_name["first"]["score"] is not None and by_name["second"]["score"] is not None
    assert [g["passed"] for g in doc["gates"]] == [False]


INTERRUPT_SUITE = """suite: interrupted
model: {model}
train: {{epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0]}}
datasets:
  reviews: {{files: {{train: {csv}}}}}
tasks:
  - {{name: quick, dataset: reviews, metric: accuracy}}
  - {{name: endless, dataset: reviews, metric: accuracy, train: {{epochs: 100000}}}}
  - {{name: never, dataset: reviews, metric: accuracy}}
gates:
  tasks: {{p_avg: {{min: 0.1}}}}
"""


class Output:
    """Collects a child's output in a thread, so the test can wait for a line without blocking on a pipe."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.chunks: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in iter(proc.stdout.readline, ""):
            self.chunks.append(line)

    def text(self) -> str:
        return "".join(self.chunks)

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert time.monotonic() < deadline, f"{needle!r} never appeared:\n{self.text()}"
            time.sleep(0.2)


def run_and_signal(directory: Path, signum: int, *args: str) -> tuple[int, str]:
    """Run pytest in a child process, send ``signum`` once the quick case has passed; (exit status, output)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-v", *args, "run.flex.yaml"], cwd=directory, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    try:
        output.wait_for("PASSED", 300)  # the quick case has finished
        time.sleep(2)  # well inside the endless case's fine-tuning
        proc.send_signal(signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output.thread.join(timeout=10)
    return proc.returncode, output.text()


@pytest.mark.parametrize("signum, workers", [(signal.SIGTERM, []), (signal.SIGINT, []), (signal.SIGTERM, ["-n", "1"])],
                         ids=["SIGTERM", "SIGINT", "SIGTERM-xdist"])
def test_a_signal_mid_suite_stops_cleanly_and_keeps_every_finished_case(
        tmp_path: Path, tiny_model: Path, toy_csv: Path, signum: int, workers: list[str]) -> None:
    (tmp_path / "run.flex.yaml").write_text(INTERRUPT_SUITE.format(model=tiny_model, csv=toy_csv))
    status, text = run_and_signal(tmp_path, signum, "-p", "no:cacheprovider", "--flex-json=out.json", *workers)
    assert status == pytest.ExitCode.INTERRUPTED, text
    assert "INTERNALERROR" not in text, text
    assert "flexharness summary" in text and "KeyboardInterrupt" in text, text
    doc = json.loads((tmp_path / "out.json").read_text())
    cases = {c["name"]: (c["status"], c["score"] is not None) for c in doc["cases"]}
    assert cases == {"quick": ("passed", True), "endless": ("not run", False), "never": ("not run", False)}
    (gate,) = doc["gates"]
    assert not gate["passed"] and gate["message"].startswith("incomplete: 2 of 3 tasks cases have no score")


def test_a_rerun_after_sigkill_recomputes_only_what_was_lost(tmp_path: Path, tiny_model: Path,
                                                              toy_csv: Path) -> None:
    (tmp_path / "run.flex.yaml").write_text(INTERRUPT_SUITE.format(model=tiny_model, csv=toy_csv))
    status, text = run_and_signal(tmp_path, signal.SIGKILL)
    assert status == -signal.SIGKILL, text
    rerun = subprocess.run([sys.executable, "-m", "pytest", "-v", "-k", "not endless", "--flex-json=out.json",
                            "run.flex.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "tasks/quick[seed0] PASSED (cached)" in rerun.stdout, rerun.stdout
    cases = {c["name"]: c["cached"] for c in json.loads((tmp_path / "out.json").read_text())["cases"]}
    assert cases == {"quick": True, "never": False}


def _custom_handler(signum: int, frame: object) -> None:
    """Stands for a handler an embedding program installed."""


def test_the_sigterm_handler_replaces_only_the_default_and_is_restored() -> None:
    from flexharness.harness.interrupts import install_sigterm_handler, restore_sigterm_handler

    outer = signal.getsignal(signal.SIGTERM)  # this very run's plugin installed its own
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        previous = install_sigterm_handler()
        assert previous is signal.SIG_DFL
        with pytest.raises(KeyboardInterrupt, match="received signal SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
        restore_sigterm_handler(previous)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, _custom_handler)
        assert install_sigterm_handler() is None
        assert signal.getsignal(signal.SIGTERM) is _custom_handler
    finally:
        signal.signal(signal.SIGTERM, outer)


FOREIGN_CONFTEST = '''
import flexharness.engine.models as models

_original = models.fresh_model


def _deep_inside(module, args, output):
    raise ValueError("setting an array element with a sequence.\\nsecond line of a library's own advice")


def _fresh_model(*args, **kwargs):
    model = _original(*args, **kwargs)
    model.register_forward_hook(_deep_inside)
    return model


def pytest_configure(config):
    models.fresh_model = _fresh_model


def pytest_unconfigure(config):
    models.fresh_model = _original
'''


def test_a_foreign_error_is_one_located_line_with_the_traceback_behind_tb_long(
        pytester: pytest.Pytester, suite_text) -> None:
    pytester.makeconftest(FOREIGN_CONFTEST)
    pytester.makefile(".flex.yaml", toy=suite_text("tasks:\n  - {name: first, dataset: reviews, metric: accuracy}\n",
                                                   train=CHEAP))
    short = pytester.runpytest("-p", "no:cacheprovider")
    short.assert_outcomes(failed=1)
    short.stdout.fnmatch_lines([
        "toy.flex.yaml:9: tasks/first (model *, seed 0): unexpected ValueError: setting an array element with "
        "a sequence.",
        "(not a flexharness error: rerun with -v or --tb=long for the traceback, and please report it if the "
        "suite and data look right)"])
    assert "_deep_inside" not in short.stdout.str() and "second line" not in short.stdout.str()
    assert len(short.stdout.lines) < 60
    for flag in ("--tb=long", "-v"):
        full = pytester.runpytest("-p", "no:cacheprovider", flag)
        full.assert_outcomes(failed=1)
        full.stdout.fnmatch_lines(["*def _deep_inside(module, args, output):*", "E * ValueError: setting an array*"])
