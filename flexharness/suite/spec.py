"""The suite's data model: frozen dataclasses every part of flexharness shares.

A leaf module (plain data, no I/O): the suite reader builds these, axes expand
them into cases, the engine runs them and the result cache hashes them. Field
names and order are part of the result cache key (see ``cache.canonical_case``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from flexharness.rules.metrics import METRICS

PRECISIONS = ("auto", "fp32", "bf16")
PARALLEL_MODES = ("ddp", "fsdp")   # how ``devices`` processes share an item: replicas, or shards of the model
POOLINGS = ("auto", "cls", "pooler", "mean", "last")   # what the classification head reads (engine.pooling)
FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning hyperparameters; every field is a suite key under ``train:``."""

    epochs: int = 1
    learning_rate: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 128
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seeds: tuple[int, ...] = (0,)
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    group_by_length: bool = True
    precision: str = "auto"        # PRECISIONS; auto: bf16 on CUDA, fp32 on CPU
    method: str | tuple[str, ...] = "full"        # full | lora | head; a list expands a task into one case each
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] | None = None   # None: the architecture's default (engine.adapt)
    gradient_checkpointing: bool = False
    devices: int = 1               # processes (GPUs) that fine-tune one item together (engine.distributed)
    parallel: str = "ddp"          # PARALLEL_MODES
    pooling: str = "auto"          # POOLINGS; auto: the model's own head unless its checkpoint never trained it


@dataclass(frozen=True)
class Filter:
    """Keep rows whose ``column`` is one of ``values``, or matches the regex ``matches``."""

    column: str
    values: tuple[Any, ...] | None = None
    matches: str | None = None
    key: str = field(default="", compare=False)     # dotted suite key, for run-time errors
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: tuple[tuple[str, str], ...] = ()      # (split, path as written)
    hub: tuple[tuple[str, str], ...] = ()        # (path|name|revision, value)
    disk: str | None = None                      # a datasets.save_to_disk folder
    base_dir: str = "."
    format: str | None = None
    encoding: str | None = None
    text: tuple[str, ...] = ("text",)
    label: str = "label"
    label_names: tuple[str, ...] | None = None
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ()           # empty: found by name, or held out
    eval_fraction: float = 0.2
    hub_mirror: str | None = None               # --flex-data-dir: local save_to_disk copies of hub datasets
    kind: str = "sequence_classification"       # the task kind its rows are (flexharness.engine.kinds)
    columns: tuple[tuple[str, Any], ...] = ()   # the kind's own keys (tokens, tags, choices, ...), as it read them
    origin: str = field(default="", compare=False)   # the suite file, for run-time errors
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False)  # key → line; "" is the mapping

    def locate(self, key: str | None = None) -> tuple[str, int | None, str]:
        """(file, line, dotted key) of one of this dataset's keys, for a :class:`DataError`."""
        lines = dict(self.lines)
        line = lines.get(key or "", lines.get(""))
        return self.origin, line, f"datasets.{self.name}.{key}" if key else f"datasets.{self.name}"


@dataclass(frozen=True)
class SliceSpec:
    """How to cut a case's evaluation examples into difficulty slices (``slices: {by: ..., bins: N}``).

    ``by`` is ``length`` (token-length quantiles), ``agreement`` (the share of the run's models and seeds
    that got an example right) or the name of a column of the data, whose slices the suite names (``values``
    or ``edges``): a slice name is never a value read from the data.
    """

    by: str
    bins: int = 3
    values: tuple[str | int | float | bool, ...] | None = None   # a column's slices: these values, the rest 'other'
    edges: tuple[float, ...] | None = None                     # or: a numeric column cut at these edges
    key: str = field(default="slices", compare=False)    # dotted suite key, for errors
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Case:
    """One scored unit of an axis; expanded into one pytest item per (model, seed)."""

    suite: str
    axis: str
    name: str
    dataset: DatasetSpec
    metrics: tuple[str, ...]
    train: TrainConfig
    where: tuple[Filter, ...] = ()
    line: int = 0
    params: tuple[tuple[str, Any], ...] = ()
    slices: SliceSpec | None = field(default=None, compare=False)   # reads the stored outputs: no cache-key part

    @property
    def kind(self) -> str:
        """The task kind (``sequence_classification``, ``token_classification``, ...): its dataset's."""
        return self.dataset.kind

    @property
    def label_kind(self) -> str:
        """``classification`` or ``regression``: what the case's metrics score."""
        return METRICS[self.metrics[0]].kind

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metrics[0]].higher_is_better

    @property
    def metric(self) -> str:
        return "+".join(self.metrics)

    @property
    def scored_names(self) -> tuple[str, ...]:
        """One scored case per evaluation split when the dataset names several (MNLI matched/mismatched)."""
        splits = self.dataset.eval_splits
        return tuple(f"{self.name}:{split}" for split in splits) if len(splits) > 1 else (self.name,)

    @property
    def scored_ids(self) -> tuple[str, ...]:
        """``AXIS/NAME`` of each scored case, as the summary table, gates and results name them."""
        return tuple(f"{self.axis}/{name}" for name in self.scored_names)


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    description: str = ""
    model: str | None = None
    cases: tuple[Case, ...] = ()
    gates: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Planned:
    """One pytest item to be: a case for one model and one seed."""

    name: str
    case: Case
    model: str
    seed: int
