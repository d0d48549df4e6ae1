"""Where this run keeps what items make: folders beside pytest's cache, and one store per process.

Records, per-example outputs, fine-tuned weights and token/feature arrays live under pytest's cache
directory (``.pytest_cache/d/flexharness-*``), so ``--cache-clear`` empties them and a CI cache step can
carry them between runs. Without a cache directory (``-p no:cacheprovider``) they live in a temporary folder
of this run, made by the controller and handed to xdist workers through ``workerinput``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from flexharness.store.records import Records
from flexharness.store.runs import ItemStore

RESULTS_DIR = "flexharness-results"
OUTPUTS_DIR = "flexharness-outputs"
WEIGHTS_DIR = "flexharness-weights"    # fine-tuned weights: soup ingredients (fusion), dense models (compression)
ARRAYS_DIR = "flexharness-arrays"      # token ids and frozen features (engine.diskcache)
OUTPUTS_INPUT = "flex_outputs_dir"     # xdist workerinput key: the run's outputs folder without a cache
OUTPUTS_KEY = pytest.StashKey[Path]()
STORE_KEY = pytest.StashKey[ItemStore]()


def outputs_dir(config: pytest.Config) -> Path:
    """Where items keep per-example outputs: beside the result cache, else this run's temporary folder."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return cache.mkdir(OUTPUTS_DIR)
    given = (getattr(config, "workerinput", None) or {}).get(OUTPUTS_INPUT)
    if given:
        return Path(given)
    if OUTPUTS_KEY not in config.stash:
        config.stash[OUTPUTS_KEY] = Path(tempfile.mkdtemp(prefix="flexharness-outputs-"))
    return config.stash[OUTPUTS_KEY]


def results_dir(config: pytest.Config) -> Path | None:
    """The result cache's records folder; None without a cache directory (then no earlier run left any)."""
    cache = getattr(config, "cache", None)
    return cache.mkdir(RESULTS_DIR) if cache is not None else None


def arrays_dir(config: pytest.Config) -> Path:
    """Where token ids and frozen features are kept (``engine.diskcache``): beside the result cache, so later
    runs reuse them; else in the run's outputs folder, shared by xdist workers."""
    cache = getattr(config, "cache", None)
    return cache.mkdir(ARRAYS_DIR) if cache is not None else outputs_dir(config) / "arrays"


def store_of(config: pytest.Config, device: str, reuse: bool) -> ItemStore:
    """This process's store (kept in ``config.stash``: it remembers which runs it computed)."""
    if STORE_KEY not in config.stash:
        outputs = outputs_dir(config)
        cache = getattr(config, "cache", None)
        if cache is not None:
            records, weights = cache.mkdir(RESULTS_DIR), cache.mkdir(WEIGHTS_DIR)
        else:
            records, weights = outputs / "records", outputs / "weights"
            records.mkdir(exist_ok=True)
            weights.mkdir(exist_ok=True)
        config.stash[STORE_KEY] = ItemStore(Records(records), outputs, weights, device, reuse)
    return config.stash[STORE_KEY]
