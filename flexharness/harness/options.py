"""Command-line options and ini keys: declared once, parsed and checked once.

Each option can also be set by an ini key of the same name with ``flex_``
(``--flex-epochs`` ↔ ``flex_epochs``); the command line wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pytest

from flexharness.engine.tracking import TRACKERS
from flexharness.harness.scaleout import SHARD_BY, parse_shard
from flexharness.results.io import unwritable
from flexharness.rules.baseline import Tolerance, parse_tolerance
from flexharness.suite.reader import TRAIN_METHODS
from flexharness.suite.schema import seed_problem
from flexharness.suite.spec import PRECISIONS

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_PATTERN = "*.flex.yaml"
DEFAULT_PROGRESS_S = 30.0
DEFAULT_BOOTSTRAP = 1000
CORRECTIONS = ("holm", "bh")
DEFAULT_LOG_DIR = "flexharness-logs"


@dataclass(frozen=True)
class Options:
    models: tuple[str, ...]
    json_path: str | None
    report_dir: str | None
    data_dir: str | None
    seeds: tuple[int, ...] | None
    epochs: int | None
    max_train_samples: int | None
    device: str
    trust_remote_code: bool
    patterns: tuple[str, ...]
    baseline: str | None = None
    save_baseline: str | None = None
    tolerance: Tolerance | None = None
    no_cache: bool = False
    shard: tuple[int, int] | None = None
    shard_by: str = "estimate"
    progress: float = DEFAULT_PROGRESS_S
    bootstrap: int = DEFAULT_BOOTSTRAP
    correction: str = "holm"
    precision: str | None = None
    method: str | None = None
    export_dir: str | None = None
    log: tuple[str, ...] = ()
    log_dir: str = DEFAULT_LOG_DIR
    energy: bool = False
    devices: int | None = None
    axes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)   # each axis's own options, by key

    def train_overrides(self) -> dict[str, Any]:
        """The train keys that the command line forces on every case."""
        overrides: dict[str, Any] = {}
        if self.seeds is not None:
            overrides["seeds"] = self.seeds
        if self.epochs is not None:
            overrides["epochs"] = self.epochs
        if self.max_train_samples is not None:
            overrides["max_train_samples"] = self.max_train_samples
        if self.precision is not None:
            overrides["precision"] = self.precision
        if self.method is not None:
            overrides["method"] = self.method
        if self.devices is not None:
            overrides["devices"] = self.devices
        return overrides



OPTIONS_KEY = pytest.StashKey["Options"]()


def options_of(config: pytest.Config) -> Options:
    """The options parsed once at configure time (kept in ``config.stash``)."""
    return config.stash[OPTIONS_KEY]


def add_options(parser: pytest.Parser, axes: Iterable[Any] = ()) -> None:
    group = parser.getgroup("flexharness", "flexharness: model flexibility evaluation")
    group.addoption("--model", action="append", default=[], metavar="NAME_OR_PATH",
                    help="model to evaluate (hub id, local directory or pkg://PACKAGE/PATH); repeatable; "
                         "overrides the suite's 'model'")
    group.addoption("--flex-json", metavar="PATH", help="write the results JSON here")
    group.addoption("--flex-report-dir", metavar="DIR", help="write a Markdown summary and PNG plots here")
    group.addoption("--flex-export", metavar="DIR",
                    help="write the results as tidy Parquet tables here (pandas and pyarrow: the export extra)")
    group.addoption("--flex-data-dir", metavar="DIR",
                    help="local copies of hub datasets (DIR/PATH/NAME, made with save_to_disk), used before the hub")
    group.addoption("--flex-seeds", metavar="0,1,2", help="seeds for every case, overriding the suites")
    group.addoption("--flex-epochs", metavar="N", help="epochs for every case, overriding the suites")
    group.addoption("--flex-max-train-samples", metavar="N", help="cap on training examples per case")
    group.addoption("--flex-device", metavar="auto|cpu|cuda", help="where to fine-tune (default: auto)")
    group.addoption("--flex-trust-remote-code", action="store_true", default=None,
                    help="allow models whose code lives in their repository to run it (off by default)")
    group.addoption("--flex-precision", metavar="auto|fp32|bf16",
                    help="training precision for every case, overriding the suites (auto: bf16 on CUDA, fp32 on CPU)")
    group.addoption("--flex-method", metavar="full|lora|head",
                    help="how every case fine-tunes, overriding the suites: all weights, a LoRA adapter, the head only")
    group.addoption("--flex-devices-per-item", metavar="N",
                    help="fine-tune each item data-parallel over N processes (GPUs on CUDA), overriding the "
                         "suites' 'devices'; with -n, each xdist worker gets N GPUs")
    add_ci_options(group)
    add_statistics_options(group)
    for axis in axes:
        axis.add_options(group, parser)
    add_log_options(group, parser)
    parser.addini("flex_models", "models to evaluate, one per line", type="linelist", default=[])
    parser.addini("flex_suite_patterns", "glob patterns of suite files", type="args", default=[DEFAULT_PATTERN])
    for name in ("json", "report_dir", "export", "data_dir", "seeds", "epochs", "max_train_samples", "device",
                 "precision", "method", "devices_per_item", *CI_OPTIONS, *STATISTICS_OPTIONS):
        parser.addini(f"flex_{name}", f"default for --flex-{name.replace('_', '-')}", default=None)
    parser.addini("flex_trust_remote_code", "default for --flex-trust-remote-code", type="bool", default=False)
    parser.addini("flex_no_cache", "default for --flex-no-cache", type="bool", default=False)


CI_OPTIONS = ("baseline", "save_baseline", "tolerance", "shard", "shard_by", "progress")


def add_ci_options(group: Any) -> None:
    """Regression gates, the result cache, sharding and progress (docs/ci.md)."""
    group.addoption("--flex-baseline", metavar="PATH",
                    help="add regression gates against this baseline (or results) JSON")
    group.addoption("--flex-save-baseline", metavar="PATH", help="write this run's scores as a baseline JSON")
    group.addoption("--flex-tolerance", metavar="abs:0.02|rel:0.05",
                    help="regression tolerance, overriding the suites' gates.regression (default abs:0)")
    group.addoption("--flex-no-cache", action="store_true", default=None,
                    help="recompute every item instead of reusing the result cache (results are stored again)")
    group.addoption("--flex-shard", metavar="K/N",
                    help="run only shard K of N (balanced, deterministic); join the shards with flexharness merge")
    group.addoption("--flex-shard-by", metavar="estimate|measured",
                    help="balance shards by estimated FLOPs (default), or by seconds measured in the result cache, "
                         "the plan then fixed by the first task in plan.json beside --flex-json (docs/cluster.md)")
    group.addoption("--flex-progress", metavar="SECONDS",
                    help=f"progress line interval when output is not a terminal (default {DEFAULT_PROGRESS_S:g}); "
                         "0 turns progress off")


def add_log_options(group: Any, parser: pytest.Parser) -> None:
    """Experiment trackers (docs/export.md)."""
    group.addoption("--flex-log", action="append", default=[], metavar="mlflow|tensorboard|wandb",
                    help="log every item (recipe, loss curve, metrics) and the session to this tracker; repeatable")
    group.addoption("--flex-log-dir", metavar="DIR",
                    help=f"where the trackers write (default {DEFAULT_LOG_DIR}): mlflow.db, tensorboard/, wandb/")
    parser.addini("flex_log", "default for --flex-log (trackers, separated by spaces)", type="args", default=[])
    parser.addini("flex_log_dir", "default for --flex-log-dir", default=None)
    group.addoption("--flex-energy", action="store_true", default=None,
                    help="measure each item's energy with codecarbon, offline (an estimate where no counters exist)")
    parser.addini("flex_energy", "default for --flex-energy", type="bool", default=False)


def _log_options(config: pytest.Config) -> dict[str, Any]:
    trackers = tuple(dict.fromkeys(config.getoption("flex_log") or config.getini("flex_log")))
    for name in trackers:
        _one_of(name, TRACKERS, "--flex-log")
    return {"log": trackers, "log_dir": _value(config, "log_dir") or DEFAULT_LOG_DIR,
            "energy": bool(_value(config, "energy"))}


STATISTICS_OPTIONS = ("bootstrap", "correction")


def add_statistics_options(group: Any) -> None:
    """Confidence intervals and model comparisons (docs/statistics.md)."""
    group.addoption("--flex-bootstrap", metavar="N",
                    help=f"bootstrap resamples for intervals and paired tests (default {DEFAULT_BOOTSTRAP}); 0 turns "
                         "them off")
    group.addoption("--flex-correction", metavar="holm|bh",
                    help="multiple-comparison correction of the paired tests: holm (default) or bh")


def _statistics_options(config: pytest.Config) -> dict[str, Any]:
    text, correction = _value(config, "bootstrap"), _value(config, "correction") or "holm"
    if correction not in CORRECTIONS:
        raise pytest.UsageError(f"--flex-correction: expected holm or bh, got {correction!r}")
    if text in (None, ""):
        return {"bootstrap": DEFAULT_BOOTSTRAP, "correction": correction}
    try:
        resamples = int(text)
    except (TypeError, ValueError):
        resamples = -1
    if not 0 <= resamples <= 100_000:
        raise pytest.UsageError(f"--flex-bootstrap: expected 0 (off) or a number of resamples up to 100000, got "
                                f"{text!r}")
    return {"bootstrap": resamples, "correction": correction}


def _value(config: pytest.Config, name: str) -> Any:
    cli = config.getoption(f"flex_{name}")
    return cli if cli is not None else config.getini(f"flex_{name}")


def _positive_int(text: Any, option: str) -> int | None:
    if text in (None, ""):
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value <= 0:
        raise pytest.UsageError(f"{option}: expected a positive integer, got {text!r}")
    return value


def _one_of(text: Any, allowed: Iterable[str], option: str) -> str | None:
    """``text`` when it is one of ``allowed``; None when not given; a usage error naming ``option`` otherwise."""
    if text in (None, ""):
        return None
    if text not in allowed:
        raise pytest.UsageError(f"{option}: expected one of {', '.join(allowed)}, got {text!r}")
    return str(text)


def _seeds(text: Any) -> tuple[int, ...] | None:
    if text in (None, ""):
        return None
    try:
        seeds = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        seeds = []
    problem = seed_problem(seeds)
    if problem:
        raise pytest.UsageError(f"--flex-seeds: {problem.replace('[0, 1, 2]', '0,1,2')}, got {str(text)[:80]!r}")
    return tuple(seeds)


def parse(config: pytest.Config, axes: Iterable[Any] = ()) -> Options:
    """Read and check every option; a bad value is a usage error before anything runs."""
    device = _one_of(_value(config, "device") or "auto", DEVICES, "--flex-device")
    models = tuple(config.getoption("model") or config.getini("flex_models"))
    return Options(
        models=models,
        json_path=_value(config, "json") or None,
        report_dir=_value(config, "report_dir") or None,
        export_dir=_value(config, "export") or None,
        data_dir=_value(config, "data_dir") or None,
        seeds=_seeds(_value(config, "seeds")),
        epochs=_positive_int(_value(config, "epochs"), "--flex-epochs"),
        max_train_samples=_positive_int(_value(config, "max_train_samples"), "--flex-max-train-samples"),
        device=device,
        trust_remote_code=bool(_value(config, "trust_remote_code")),
        patterns=tuple(config.getini("flex_suite_patterns")),
        precision=_one_of(_value(config, "precision"), PRECISIONS, "--flex-precision"),
        method=_one_of(_value(config, "method"), TRAIN_METHODS, "--flex-method"),
        devices=_positive_int(_value(config, "devices_per_item"), "--flex-devices-per-item"),
        **_ci_options(config),
        **_statistics_options(config),
        axes=_axis_options(config, axes),
        **_log_options(config),
    )


def _axis_options(config: pytest.Config, axes: Iterable[Any]) -> dict[str, Mapping[str, Any]]:
    """Each axis reads and checks its own options (``Axis.read_options``)."""
    found = {}
    for axis in axes:
        try:
            found[axis.key] = axis.read_options(lambda name: _value(config, name))
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    return found


def _ci_options(config: pytest.Config) -> dict[str, Any]:
    values = {name: _value(config, name) or None for name in CI_OPTIONS}
    if values["shard"] and values["save_baseline"]:
        raise pytest.UsageError("--flex-save-baseline needs the whole suite: merge the shards with "
                                "'flexharness merge ... -o merged.json' and use merged.json as the baseline")
    shard_by = values["shard_by"] or "estimate"
    if shard_by not in SHARD_BY:
        raise pytest.UsageError(f"--flex-shard-by: expected estimate or measured, got {str(shard_by)[:40]!r}")
    if shard_by == "measured" and values["shard"] and not _value(config, "json"):
        raise pytest.UsageError("--flex-shard-by measured keeps the run's shard plan beside the shard files: "
                                "give --flex-json (one folder per run, shared by every task)")
    try:
        tolerance = parse_tolerance(values["tolerance"]) if values["tolerance"] else None
        shard = parse_shard(values["shard"]) if values["shard"] else None
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    return {"baseline": values["baseline"], "save_baseline": values["save_baseline"], "tolerance": tolerance,
            "no_cache": bool(_value(config, "no_cache")), "shard": shard, "shard_by": shard_by,
            "progress": _seconds(values["progress"])}


def _seconds(text: Any) -> float:
    if text is None:
        return DEFAULT_PROGRESS_S
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = -1.0
    if not 0 <= value < float("inf"):
        raise pytest.UsageError(f"--flex-progress: expected 0 or more seconds, got {text!r}")
    return value


def check_outputs(options: Options) -> None:
    """Fail before any fine-tuning when an output cannot be written, not after the last case."""
    for option, target, folder in (("--flex-json", options.json_path, False),
                                   ("--flex-save-baseline", options.save_baseline, False),
                                   ("--flex-report-dir", options.report_dir, True),
                                   ("--flex-export", options.export_dir, True),
                                   ("--flex-log-dir", options.log_dir if options.log else None, True)):
        problem = unwritable(target, folder) if target else None
        if problem:
            raise pytest.UsageError(f"{option}: cannot write {target}: {problem}")
