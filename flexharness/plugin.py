"""pytest hooks only; each hook delegates to the module that owns the concern."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flexharness import interrupts, scaleout
from flexharness import options as opts
from flexharness.axes import AXES
from flexharness.cache import OUTPUTS_INPUT, OUTPUTS_KEY, outputs_dir
from flexharness.collect import RESULT_PROPERTY, SuiteFile, mark_weight_keepers, plan_entries
from flexharness.gates import report_gates
from flexharness.options import OPTIONS_KEY, options_of
from flexharness.present import summary_lines, write_report_dir
from flexharness.results import predictions
from flexharness.results.io import write_json
from flexharness.rules import baseline as base
from flexharness.session import Controller
from flexharness.verdict import outputs_beside


def pytest_addoption(parser: pytest.Parser) -> None:
    opts.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for key in AXES.keys():  # keys only: no axis module is imported to declare its marker
        config.addinivalue_line("markers", f"{key}: flexharness case of the {key} axis")
    config.addinivalue_line("markers", "flex: any flexharness case")
    config.stash[OPTIONS_KEY] = opts.parse(config)
    if hasattr(config, "workerinput"):
        scaleout.pin_gpu(config.workerinput)  # before anything initialises CUDA in this worker
    else:
        config.pluginmanager.register(ControllerHooks(config), "flexharness-controller")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    patterns = options_of(parent.config).patterns
    if any(fnmatch.fnmatch(file_path.name, pattern) for pattern in patterns):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)  # after -k / -m, so the shards split what will really run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if options_of(config).prescreen_only:
        items[:], deselected = _prescreen_only(items)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        if deselected and not items:
            raise pytest.UsageError("--flex-prescreen-only keeps only the items of 'probe:' sections, and the "
                                    "suites collected have none: add a 'probe:' section (see docs/prescreen.md) "
                                    "or drop the option")
    shard = options_of(config).shard
    if shard:
        scaleout.remember_plan(config, plan_entries(items))  # the whole run, for merge to check
        items[:], deselected = scaleout.select_shard(items, *shard)
        if deselected:
            config.hook.pytest_deselected(items=deselected)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The items that will run are known (after -k, -m and --flex-shard): which keep their weights for others."""
    mark_weight_keepers(session.items)


def _prescreen_only(items: list[pytest.Item]) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, deselected): flexharness items of every axis but the probe go; other tests stay."""
    def fine_tuning(item: pytest.Item) -> bool:
        planned = getattr(item, "planned", None)
        return planned is not None and planned.case.axis != "probe"

    return [i for i in items if not fine_tuning(i)], [i for i in items if fine_tuning(i)]


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, Any] | None:
    """``PASSED (cached)`` in verbose output for items reused from the result cache."""
    if report.when == "call" and report.passed and _cached(report):
        return "passed", ".", ("PASSED (cached)", {"green": True})
    return None


def _cached(report: pytest.TestReport) -> bool:
    raw = dict(report.user_properties).get(RESULT_PROPERTY)
    return bool(raw) and json.loads(raw).get("cached") is True


class ControllerHooks:
    """Hooks of the main process (never an xdist worker): results in, gates and reports out."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        options = options_of(config)
        try:
            baseline = base.load(options.baseline) if options.baseline else None
        except base.BaselineError as exc:
            raise pytest.UsageError(f"--flex-baseline: {exc}") from None
        opts.check_outputs(options)
        self.controller = Controller(config.rootpath, options, baseline=baseline, outputs=outputs_dir(config),
                                     baseline_outputs=outputs_beside([options.baseline]) if baseline else {})
        self.collect_errors: list[str] = []
        self.write_errors: list[str] = []
        self.previous_sigterm = interrupts.install_sigterm_handler()

    def pytest_unconfigure(self) -> None:
        interrupts.restore_sigterm_handler(self.previous_sigterm)
        if OUTPUTS_KEY in self.config.stash:  # a temporary folder of this run (no cache): its copy is beside the JSON
            shutil.rmtree(self.config.stash[OUTPUTS_KEY], ignore_errors=True)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[OUTPUTS_INPUT] = str(outputs_dir(self.config))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(report.nodeid)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.config.pluginmanager.hasplugin("dsession"):
            self.controller.expect(item.nodeid for item in session.items)
            self.controller.planned = self.config.stash.get(scaleout.PLAN_KEY, None)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Under xdist the workers collect: each sends the run's plan back when it finishes."""
        planned = (getattr(node, "workeroutput", None) or {}).get(scaleout.PLAN_OUTPUT)
        if planned is not None:
            self.controller.planned = list(planned)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.controller.expect(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.controller.record(report)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        if interrupts.only_suite_errors(self.collect_errors, options_of(self.config).patterns):
            session.config.option.continue_on_collection_errors = True  # the exit status still says failed
        if self.config.option.collectonly:
            return (yield)
        # Gates are test results too: count them so that progress ends at 100 %. Under xdist the
        # controller learns the items during the loop, so the count is added after it.
        under_xdist = self.config.pluginmanager.hasplugin("dsession")
        if self.controller.items and not under_xdist:
            session.testscollected += len(self.controller.compute_gates())
        result = yield
        if self.controller.items:
            if under_xdist:
                session.testscollected += len(self.controller.compute_gates())
            report_gates(self.config, self.controller)
        return result

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        options = options_of(self.config)
        if self.config.option.collectonly or (not self.controller.items and not options.shard):
            return
        if not self.controller.items and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            session.exitstatus = pytest.ExitCode.OK  # a shard left empty by a wide CI matrix; merge checks the whole
        self.controller.compute_gates()  # again: after an interruption the gates were never reported
        doc = self.controller.document()
        writes = ((options.json_path, "--flex-json", lambda: self._write_with_outputs(options.json_path, doc)),
                  (options.save_baseline, "--flex-save-baseline",
                   lambda: self._write_with_outputs(options.save_baseline, base.make(doc))),
                  (options.report_dir, "--flex-report-dir", lambda: write_report_dir(options.report_dir, doc)))
        for target, option, write in writes:
            try:
                if target:
                    write()
            except OSError as exc:  # the disk filled up or the folder went away after the start-up check
                culprit = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(target) else ""
                self.write_errors.append(f"{option}: cannot write {target}: {exc.strerror or exc}{culprit}")
        if self.write_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _write_with_outputs(self, path: str, doc: dict[str, Any]) -> None:
        """A results or baseline file, and the per-example outputs beside it (``PATH.predictions.npz``)."""
        write_json(path, doc)
        predictions.write_beside(path, self.controller.outputs_entries())

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.controller.items and not self.config.option.collectonly:
            terminalreporter.write_sep("=", "flexharness summary")
            for line in summary_lines(self.controller.document()):
                terminalreporter.write_line(line)
        for line in self.write_errors:
            terminalreporter.write_line(f"ERROR {line}; the results above were not saved there", red=True)
