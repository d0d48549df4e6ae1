"""The :class:`Axis` interface: everything one question of flexharness needs, in one class.

An axis is a template (as mteb's ``AbsTask`` is): the pytest side, the suite
reader, the result cache, the session and the reports run the shared loop and
call these methods for the axis's own part. Every method but :meth:`Axis.parse`
and :meth:`Axis.run` has a default that does nothing, so a new axis writes only
what it adds. An axis reaches the harness through one line in
``flexharness.axes.registry``; suites name it by its key, never by code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

from flexharness.engine.weights import Kept
from flexharness.results import table
from flexharness.results.significance import CaseKey, SeedOutputs, Settings
from flexharness.rules.aggregate import CaseScore, GateResult
from flexharness.store.keys import KeyedAs
from flexharness.store.runs import StoredRun
from flexharness.suite.reader import SuiteContext
from flexharness.suite.schema import Reader
from flexharness.suite.spec import Case, DatasetSpec, Planned, Suite

ProgressFn = Callable[[dict[str, Any]], None]


class Store(Protocol):
    """Where an item's runs are found again or computed and kept: the one cached-run path of every axis.

    ``run`` returns the stored run of ``planned`` (its record, and as asked its per-example outputs, with the
    ``output_fields`` the caller reads, and the file of its fine-tuned weights: the store's own, or
    ``weights_at`` where the run keeps them itself) or computes it with ``compute`` and stores it first;
    ``kept`` is where the weights of a case's plain fine-tune are kept for another item to start from.
    """

    def run(self, planned: Planned, nodeid: str, compute: Callable[[], dict[str, Any]],
            keyed_as: KeyedAs = KeyedAs(), with_outputs: bool = False, with_weights: bool = False,
            output_fields: tuple[str, ...] = (), weights_at: Path | None = None) -> StoredRun: ...

    def kept(self, case: Case, model: str, seed: int) -> Kept | None: ...


@dataclass(frozen=True)
class RunContext:
    """How the pytest side asks an axis to run one item."""

    device_option: str = "auto"
    trust_remote_code: bool = False
    progress: ProgressFn | None = None
    store: Store | None = None   # runs an item makes for itself (fusion's ingredients), kept weights
    keep_weights: bool = False   # an item of this run starts from this item's fine-tuned model: keep its weights


@dataclass(frozen=True)
class Scored:
    """One scored case of a run with the records of its items (one per seed; None where an item has none)."""

    case: CaseScore
    spec: Case
    records: Mapping[str, dict[str, Any] | None]   # seed -> the item's record when it passed


class Axis:
    """One axis: its suite section, how an item runs, what it adds to results, reports and plots."""

    key: ClassVar[str]                              # suite section, marker, and the first part of case ids
    gate_stats: ClassVar[tuple[str, ...]] = ()      # statistics besides p_avg/sigma_p that gates.<key> may bound
    document_keys: ClassVar[tuple[str, ...]] = ()   # top-level results-JSON lists this axis owns
    expands_methods: ClassVar[bool] = False         # a ``method`` list under ``train:`` becomes one case each
    report: ClassVar[ModuleType | None] = None      # the controller-side module: sections, finish, tables, plots

    # ---- the suite: read at collection, in milliseconds, without data or models -------------------

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        """The cases of this axis's section ``top.raw(self.key)``; errors are ``top.error(...)``."""
        raise NotImplementedError

    def check_gates(self, gates: Reader, cases: tuple[Case, ...]) -> None:
        """Validate this axis's own statistics under ``gates.<key>`` (raise ``gates.error(...)``)."""

    def check(self, suite: Suite, cache: Any = None) -> None:
        """Collection-time checks that need more than the YAML (``cache`` is pytest's ``config.cache``)."""

    def check_model(self, case: Case, model_type: str) -> str | None:
        """Why ``case`` cannot run on a model of this architecture (``config.model_type``), or None."""
        return None

    # ---- the command line: options of its own, and which items of a run it leaves out ---------------

    def add_options(self, group: Any, parser: Any) -> None:
        """Declare this axis's own command-line options and ini keys (pytest's option group and parser)."""

    def read_options(self, value: Callable[[str], Any]) -> dict[str, Any]:
        """This axis's option values, checked; ``value(name)`` is ``--flex-NAME`` or the ini key ``flex_NAME``.
        Raise ``ValueError`` with the message for a bad value (it becomes a usage error)."""
        return {}

    def selects(self, case: Case, options: Mapping[str, Any]) -> bool | None:
        """False to deselect an item of ``case`` (any axis's) from the run, given this axis's own options;
        None when this axis has no say."""
        return None

    def nothing_selected(self, options: Mapping[str, Any]) -> str | None:
        """Why this axis's options leave a run with no items (a usage error), or None when they do not say."""
        return None

    def run_settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """What this axis's options add to each suite's entry of the results JSON (for merge and reports)."""
        return {}

    # ---- one item: runs in a worker, returns a record of plain builtins ---------------------------

    def cache_inputs(self, case: Case) -> tuple[DatasetSpec, ...]:
        """Datasets an item reads besides ``case.dataset``: their contents join the result-cache key."""
        return ()

    def cache_case(self, case: Case) -> Case:
        """The case whose result-cache key an item of ``case`` shares: an item identical to another axis's
        item (the same recipe on the same data) returns that axis's case, so the two reuse one record."""
        return case

    def keyed_as(self, case: Case) -> KeyedAs:
        """What this axis adds to the result-cache key of an item of ``case`` (:meth:`cache_case`,
        :meth:`cache_inputs`)."""
        return KeyedAs(self.cache_case(case), self.cache_inputs(case))

    def run(self, case: Case, model: str, seed: int, context: RunContext) -> dict[str, Any]:
        """Fine-tune (or not) and score one (case, model, seed); the record needs ``score``."""
        raise NotImplementedError

    def check_record(self, case: Case, record: Mapping[str, Any]) -> None:
        """Raise a ``FlexError`` when a record, fresh or reused from the cache (perhaps another axis's, see
        :meth:`cache_case`), did not measure what ``case`` names: a verdict never depends on the cache."""

    def trains(self, case: Case) -> Case | None:
        """The case whose plain fine-tune an item of ``case`` runs and can keep the weights of, when
        ``RunContext.keep_weights`` asks (``cache.training_recipe`` tells two such fine-tunes apart), or None."""
        return None

    def starts_from(self, case: Case) -> Case | None:
        """The case whose plain fine-tune an item of ``case`` starts from (compression: the dense model), or
        None: an item that :meth:`trains` the same recipe, model and seed in this run keeps its weights."""
        return None

    # ---- the results document: built on the controller from item records --------------------------

    def case_fields(self, case: Case, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Extra keys of one case in the results JSON, from its items' records."""
        return {}

    # ---- the results document and its reports: the axis's ``report`` module, on the controller -----
    # (``sections``, ``finish``, ``tables`` and ``plots``, each a function of the module; none without one)

    def sections(self, scored: Sequence[Scored]) -> dict[str, list[dict[str, Any]]]:
        """This axis's ``document_keys`` lists as raw entries from item records (finished by :meth:`finish`)."""
        return self.report.sections(scored) if self.report else {}

    def from_outputs(self, doc: dict[str, Any], outputs: Mapping[CaseKey, SeedOutputs], settings: Settings) -> None:
        """Add to ``doc`` what this axis computes from the items' per-example ``outputs`` (fusion across models),
        before :meth:`finish` gates it; a pytest run and ``flexharness merge`` hand in the same outputs."""

    def finish(self, doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
        """Rebuild this axis's sections of ``doc`` from the document alone and return its own gates.

        The same call serves a pytest run and ``flexharness merge``, so both decide alike.
        """
        return self.report.finish(doc, gate_specs) if self.report else []

    def terminal_lines(self, doc: Mapping[str, Any]) -> list[str]:
        """Lines of this axis's section in the terminal summary (after the aggregates)."""
        return table.terminal_lines(self.report.tables(doc)) if self.report else []

    def markdown_lines(self, doc: Mapping[str, Any]) -> list[str]:
        """The same tables in the Markdown report."""
        return table.markdown_lines(self.report.tables(doc)) if self.report else []

    def plots(self, doc: Mapping[str, Any], directory: Path) -> list[Path]:
        """PNG files of this axis written under ``directory``."""
        return self.report.plots(doc, directory) if self.report else []
