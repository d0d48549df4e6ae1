"""pytest hooks only; each hook delegates to the module that owns the concern."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flexharness.axes import AXES
from flexharness.engine import energy, tracking
from flexharness.errors import FlexError
from flexharness.harness import interrupts, scaleout
from flexharness.harness import options as opts
from flexharness.harness.collect import RESULT_PROPERTY, TRACKING_KEY, SuiteFile, mark_weight_keepers, plan_entries
from flexharness.harness.gates import report_gates
from flexharness.harness.options import OPTIONS_KEY, options_of
from flexharness.harness.session import Controller
from flexharness.harness.storage import OUTPUTS_INPUT, OUTPUTS_KEY, outputs_dir, results_dir
from flexharness.names import model_label
from flexharness.results import frames, predictions
from flexharness.store.keys import result_key
from flexharness.results.io import write_json
from flexharness.results.present import summary_lines, write_report_dir
from flexharness.results.verdict import outputs_beside
from flexharness.rules import baseline as base


def pytest_addoption(parser: pytest.Parser) -> None:
    opts.add_options(parser, AXES)


def pytest_configure(config: pytest.Config) -> None:
    for key in AXES.keys():  # keys only: no axis module is imported to declare its marker
        config.addinivalue_line("markers", f"{key}: flexharness case of the {key} axis")
    config.addinivalue_line("markers", "flex: any flexharness case")
    config.stash[OPTIONS_KEY] = opts.parse(config, AXES)
    if hasattr(config, "workerinput"):
        # before anything initialises CUDA in this worker
        scaleout.pin_gpu(config.workerinput, per_worker=config.stash[OPTIONS_KEY].devices or 1)
        if LOG_INPUT in config.workerinput:
            config.stash[TRACKING_KEY] = tracking.Target.from_json(config.workerinput[LOG_INPUT])
    else:
        config.pluginmanager.register(ControllerHooks(config), "flexharness-controller")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    patterns = options_of(parent.config).patterns
    if any(fnmatch.fnmatch(file_path.name, pattern) for pattern in patterns):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)  # after -k / -m, so the shards split what will really run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items[:], deselected = _selected(items, options_of(config).axes)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    if deselected and not items:
        _refuse_empty(options_of(config).axes)
    shard = options_of(config).shard
    if shard:
        scaleout.remember_plan(config, plan_entries(items))  # the whole run, for merge to check
        items[:], deselected, config.stash[scaleout.LINE_KEY] = scaleout.cut_shard(  # earlier runs' seconds:
            items, options_of(config), results_dir(config), _key_of)                   # --flex-shard-by measured
        if deselected:
            config.hook.pytest_deselected(items=deselected)


def _key_of(planned: Any, device: str) -> tuple[str | None, str | None]:
    return result_key(planned, device, AXES.get(planned.case.axis).keyed_as(planned.case))


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    """The shard plan's line: this shard's items and share of the run's cost, and how even the cut is."""
    return [config.stash[scaleout.LINE_KEY]] if scaleout.LINE_KEY in config.stash else []


def pytest_collection_finish(session: pytest.Session) -> None:
    """The items that will run are known (after -k, -m and --flex-shard): which keep their weights for others."""
    mark_weight_keepers(session.items)


def _selected(items: list[pytest.Item], axis_options: dict[str, Any]) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, deselected): an axis's own options may leave items of the run out (``Axis.selects``)."""
    def kept(item: pytest.Item) -> bool:
        planned = getattr(item, "planned", None)
        return planned is None or all(AXES.get(key).selects(planned.case, values) is not False
                                      for key, values in axis_options.items())

    return [i for i in items if kept(i)], [i for i in items if not kept(i)]


def _refuse_empty(axis_options: dict[str, Any]) -> None:
    """A usage error when an axis's options deselected every item: the option, not the suites, is wrong."""
    reasons = [AXES.get(key).nothing_selected(values) for key, values in axis_options.items()]
    if any(reasons):
        raise pytest.UsageError("; ".join(r for r in reasons if r))


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, Any] | None:
    """``PASSED (cached)`` in verbose output for items reused from the result cache."""
    if report.when == "call" and report.passed and _cached(report):
        return "passed", ".", ("PASSED (cached)", {"green": True})
    return None


def _cached(report: pytest.TestReport) -> bool:
    raw = dict(report.user_properties).get(RESULT_PROPERTY)
    return bool(raw) and json.loads(raw).get("cached") is True


LOG_INPUT = "flexharness_log"   # workerinput key: the tracking target (JSON) the workers log their items under


def _start_logging(config: pytest.Config) -> list[tracking.RunLog]:
    """With --flex-log: the session's runs, and the target every item (here or in a worker) logs under."""
    options = options_of(config)
    if not options.log or config.option.collectonly:
        return []
    try:
        tracking.check(options.log)
    except tracking.TrackerUnavailable as exc:
        raise pytest.UsageError(str(exc)) from None
    target, runs = tracking.start_session(tracking.Target(options.log, options.log_dir, tracking.session_id()))
    config.stash[TRACKING_KEY] = target
    return runs


def _require(check: Any, prefix: str = "") -> None:
    """A missing optional library is a usage error at start-up, not a lost table or a failed item at the end."""
    try:
        check()
    except FlexError as exc:
        raise pytest.UsageError(f"{prefix}{exc}") from None


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
        if options.export_dir:
            _require(lambda: frames.require("parquet"), "--flex-export: ")
        if options.energy:
            _require(energy.check)
        self.controller = Controller(config.rootpath, options, baseline=baseline, outputs=outputs_dir(config),
                                     baseline_outputs=outputs_beside([options.baseline]) if baseline else {})
        self.collect_errors: list[str] = []
        self.write_errors: list[str] = []
        self.previous_sigterm = interrupts.install_sigterm_handler()
        self.session_runs = _start_logging(config)

    def pytest_unconfigure(self) -> None:
        interrupts.restore_sigterm_handler(self.previous_sigterm)
        for run in self.session_runs:  # a session that ran no flexharness item still ends its tracker runs
            run.close("passed")
        if OUTPUTS_KEY in self.config.stash:  # a temporary folder of this run (no cache): its copy is beside the JSON
            shutil.rmtree(self.config.stash[OUTPUTS_KEY], ignore_errors=True)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[OUTPUTS_INPUT] = str(outputs_dir(self.config))
        if TRACKING_KEY in self.config.stash:
            node.workerinput[LOG_INPUT] = self.config.stash[TRACKING_KEY].to_json()

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
                  (options.report_dir, "--flex-report-dir", lambda: write_report_dir(options.report_dir, doc, AXES)),
                  (options.export_dir, "--flex-export", lambda: frames.write(
                      frames.frames_of(doc, self.controller.outputs_entries()), options.export_dir)))
        for target, option, write in writes:
            try:
                if target:
                    write()
            except OSError as exc:  # the disk filled up or the folder went away after the start-up check
                culprit = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(target) else ""
                self.write_errors.append(f"{option}: cannot write {target}: {exc.strerror or exc}{culprit}")
        if self.session_runs:
            self._log_session(doc)
        if self.write_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _log_session(self, doc: dict[str, Any]) -> None:
        """Aggregates and gates as the session run's metrics; results JSON, Markdown and plots as its files."""
        target = self.config.stash[TRACKING_KEY]
        folder = Path(target.directory) / "sessions" / target.session
        write_json(folder / "results.json", doc)
        write_report_dir(folder, doc, AXES)
        values = {f"{stat}/{a['suite']}/{model_label(a['model'])}/{a['axis']}": a[stat]
                  for a in doc["aggregates"] for stat in ("p_avg", "sigma_p") if a[stat] is not None}
        values |= {f"gate/{g['suite']}/{model_label(g['model'])}/{g['name']}": float(g["passed"])
                   for g in doc["gates"]}
        status = "passed" if all(g["passed"] for g in doc["gates"]) else "failed"
        for run in self.session_runs:
            run.metrics(values)
            run.artifacts(folder)
            run.close(status)
        self.session_runs = []

    def _write_with_outputs(self, path: str, doc: dict[str, Any]) -> None:
        """A results or baseline file, and the per-example outputs beside it (``PATH.predictions.npz``)."""
        write_json(path, doc)
        predictions.write_beside(path, self.controller.outputs_entries())

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.controller.items and not self.config.option.collectonly:
            terminalreporter.write_sep("=", "flexharness summary")
            for line in summary_lines(self.controller.document(), AXES):
                terminalreporter.write_line(line)
        for line in self.write_errors:
            terminalreporter.write_line(f"ERROR {line}; the results above were not saved there", red=True)
