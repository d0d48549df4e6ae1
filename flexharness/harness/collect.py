"""pytest nodes: a suite file collects into one item per (model, case, seed).

Items only compute: they put their record into ``user_properties`` and never
touch session state, so the controller sees the same thing with or without
pytest-xdist.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import pytest

from flexharness.axes import AXES, RunContext, check_suite, load_suite, slicing
from flexharness.engine import diskcache, energy, tracking
from flexharness.engine.models import (
    ENCODER_DECODER_ADVICE,
    architecture,
    resolve_device,
)
from flexharness.errors import FlexError, SuiteError, Unavailable, first_line
from flexharness.harness import progress, scaleout, storage
from flexharness.harness.options import Options, options_of
from flexharness.store.keys import digest, training_recipe
from flexharness.suite.reader import check_max_length, expand, run_seeds
from flexharness.suite.resources import suite_relative
from flexharness.suite.spec import Planned, Suite
from flexharness.suite.yamlio import Located, load_yaml

RESULT_PROPERTY = "flex_result"  # a JSON string: readable in JUnit XML, parsed back by the controller
SUITE_FILES = pytest.StashKey[dict[str, str]]()  # suite name -> the file that first used it in this run
TRACKING_KEY = pytest.StashKey[Any]()  # the ``engine.tracking.Target`` items log under (with --flex-log)


def suite_models(suite: Suite, options: Options) -> tuple[str, ...]:
    """``--model`` wins over the suite's ``model``; one of them must be there."""
    models = options.models or ((suite.model,) if suite.model else ())
    if not models:
        raise SuiteError(suite.path, None, "model", "no model to evaluate: set 'model' in the suite or pass --model")
    seen: dict[str, str] = {}
    for model in models:  # --model is relative to the working directory
        same = seen.setdefault(suite_relative(model, Path.cwd()), model)
        if same != model or models.count(model) > 1:
            raise SuiteError(suite.path, None, "model", f"--model names one model twice ('{same}' and '{model}'); "
                                                        "its items would share ids and results: give it once")
    return models


def plan(path: Any, options: Options) -> tuple[Suite, list[Planned]]:
    suite = load_suite(path, options.train_overrides(), options.data_dir)
    models = suite_models(suite, options)
    for model in models:
        check_model(suite, model)
    check_max_length(suite, models)
    return suite, expand(suite, models)


def check_model(suite: Suite, model: str) -> None:
    """What the model's architecture cannot do fails at collection: encoder-decoders, a method a case asks of it.

    Only models on this machine are checked (their ``config.json``); a hub model not downloaded yet is
    checked when it loads.
    """

    config = architecture(model)
    if config is None:
        return
    model_type = str(config.get("model_type", "unknown"))
    if config.get("is_encoder_decoder"):
        raise SuiteError(suite.path, None, "model", f"'{model}' is an encoder-decoder model ('{model_type}'); "
                                                    f"{ENCODER_DECODER_ADVICE}")
    for case in suite.cases:
        complaint = AXES.get(case.axis).check_model(case, model_type)
        if complaint:
            raise SuiteError(suite.path, case.line, f"{case.axis}/{case.name}", f"model '{model}': {complaint}")


def claim_name(names: dict[str, str], suite: Suite) -> None:
    """Refuse a suite whose name another file of the run already uses: their cases and gates would merge."""
    first = names.setdefault(suite.name, str(suite.path))
    if first != str(suite.path):
        data = load_yaml(suite.path)
        line = data.line_of("suite") if isinstance(data, Located) else None
        raise SuiteError(suite.path, line, "suite", f"the name '{suite.name}' is already used by {first} in this "
                                                    "run; their cases would be aggregated and gated as one suite: "
                                                    "give each suite file its own name")


def mark_weight_keepers(items: list[pytest.Item]) -> None:
    """Ask an item to keep its fine-tuned weights when another item of the run starts from the same fine-tune
    (a compression case's dense model is its task's; a fusion soup over the tasks runs starts from one per
    seed): that item loads them instead of training them again.

    Only then: a fine-tuned model is as large as the pretrained one, and most items have no taker.
    """
    def recipe(case: Any, planned: Planned) -> tuple[str, str, int]:
        return digest(training_recipe(case)), planned.model, planned.seed

    ours = [item for item in items if isinstance(item, CaseItem)]
    wanted = set()
    for item in ours:
        start = AXES.get(item.planned.case.axis).starts_from(item.planned.case)
        if start is not None:
            wanted |= {recipe(start, replace(item.planned, seed=seed)) for seed in run_seeds(item.planned)}
    for item in ours:
        trained = AXES.get(item.planned.case.axis).trains(item.planned.case)
        item.keep_weights = trained is not None and recipe(trained, item.planned) in wanted


def plan_entries(items: Sequence[Any]) -> list[list[str]]:
    """Every item of the whole run as ``[node id, model, case fingerprint]``: ids alone omit the model of a run
    with one, so a shard (even one left with no items) says which models and suite versions its run had."""
    from flexharness.store.keys import case_fingerprint

    entries = []
    for item in items:
        planned = getattr(item, "planned", None)
        entries.append([item.nodeid, planned.model, case_fingerprint(planned.case)] if planned else [item.nodeid, "", ""])
    return entries


class SuiteFile(pytest.File):
    """A ``*.flex.yaml`` file; invalid suites become a one-paragraph collection error."""

    def collect(self):
        try:
            suite, planned = plan(self.path, options_of(self.config))
            claim_name(self.config.stash.setdefault(SUITE_FILES, {}), suite)
            check_suite(suite, getattr(self.config, "cache", None))
        except SuiteError as exc:
            raise self.CollectError(str(exc)) from None
        for item in planned:
            yield CaseItem.from_parent(self, name=item.name, planned=item)


class CaseItem(pytest.Item):
    """Fine-tunes and scores one case for one model and seed."""

    def __init__(self, *, planned: Planned, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.planned = planned
        self.keep_weights = False   # set by ``mark_weight_keepers`` once the run's items are known
        case = planned.case
        self.add_marker(case.axis)
        self.add_marker("flex")

    def runtest(self) -> None:
        options = options_of(self.config)
        device = resolve_device(options.device)
        scaleout.share_cpu(getattr(self.config, "workerinput", None), device)
        store = storage.store_of(self.config, device, reuse=not options.no_cache)
        runs = tracking.item_runs(self.config.stash.get(TRACKING_KEY, None), self.nodeid, self._params())
        context = RunContext(options.device, options.trust_remote_code,
                             tracking.with_steps(runs, progress.for_item(self.config, self.name, options.progress)),
                             store, self.keep_weights)
        planned = self.planned
        axis = AXES.get(planned.case.axis)
        arrays = None if options.no_cache else storage.arrays_dir(self.config)  # token ids, features (diskcache)

        def compute() -> dict[str, Any]:
            if not options.energy:
                return axis.run(planned.case, planned.model, planned.seed, context)
            found: dict[str, Any] = {}
            with energy.measured(found):
                record = axis.run(planned.case, planned.model, planned.seed, context)
            return {**record, **found}

        try:
            with diskcache.using(arrays):
                record = store.run(planned, self.nodeid, compute, axis.keyed_as(planned.case)).record
                axis.check_record(planned.case, record)
                slicing.add_inputs(store.outputs, record, planned.case, planned.model, options.trust_remote_code)
        except BaseException as exc:
            for run in runs:
                run.close("skipped" if isinstance(exc, Unavailable) else "failed")
            if isinstance(exc, Unavailable):
                pytest.skip(str(exc))
            raise
        for run in runs:
            run.metrics(tracking.record_metrics(record))
            run.close("passed")
        self.user_properties.append(("score", record["score"]))
        self.user_properties.append((RESULT_PROPERTY, json.dumps(record, sort_keys=True)))

    def _params(self) -> dict[str, Any]:
        """What a tracker shows as the item's parameters: the case, model, seed and its whole recipe."""
        from dataclasses import asdict

        case = self.planned.case
        return {"suite": case.suite, "model": self.planned.model, "axis": case.axis, "case": case.name,
                "seed": self.planned.seed, **{f"train.{k}": v for k, v in asdict(case.train).items()}}

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """Our errors as one line; anyone else's as a short located one, the traceback behind -v / --tb=long."""
        planned = self.planned
        where = f"{planned.case.axis}/{planned.case.name} (model {planned.model}, seed {planned.seed})"
        if isinstance(excinfo.value, FlexError):
            return f"{where}: {excinfo.value}"
        option = self.config.option
        if option.verbose > 0 or option.tbstyle in ("long", "native"):
            return super().repr_failure(excinfo, style=style)
        reason = first_line(excinfo.value, "no message")[:300]
        file = self.nodeid.split("::")[0]
        return (f"{file}:{planned.case.line}: {where}: unexpected {excinfo.typename}: {reason}\n"
                "(not a flexharness error: rerun with -v or --tb=long for the traceback, and please report it "
                "if the suite and data look right)")

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, self.planned.case.line - 1, self.name
