"""Task kinds: the registry, the cache keys of existing suites, and each kind end to end."""

from __future__ import annotations

import pytest

from flexharness.cache import case_fingerprint, digest, training_recipe
from flexharness.engine.kinds import KINDS, KindRegistryError
from flexharness.spec import Case, DatasetSpec, Filter, TrainConfig


def _case(**dataset) -> Case:
    spec = DatasetSpec(name="reviews", files=(("train", "data/train.csv"),), base_dir="/x", **dataset)
    return Case(suite="toy", axis="tasks", name="polarity", dataset=spec, metrics=("accuracy",),
                train=TrainConfig(seeds=(0, 1)), where=(Filter("topic", values=("a",)),))


def test_cache_keys_of_existing_suites_are_the_keys_computed_before_kinds_existed() -> None:
    """The hex digests were computed on main before the kind fields were added."""
    case = _case()
    assert (case_fingerprint(case), digest(training_recipe(case))[:16]) == ("0d44a55981ff4a89", "d735422ff289a991")
    pair = DatasetSpec(name="pairs", hub=(("path", "glue"), ("name", "mrpc")), text=("sentence1", "sentence2"))
    lora = Case(suite="s", axis="tasks", name="mrpc", dataset=pair, metrics=("f1", "accuracy"),
                train=TrainConfig(method="lora"))
    assert (case_fingerprint(lora), digest(training_recipe(lora))[:16]) == ("d515c4be02a9636a", "ae5dbc0a2c30b60e")


def test_another_kind_or_columns_change_the_key() -> None:
    base = case_fingerprint(_case())
    assert case_fingerprint(_case(kind="token_classification")) != base
    assert case_fingerprint(_case(columns=(("tokens", "words"),))) != base


def test_the_registry_refuses_taken_and_unknown_kinds() -> None:
    with pytest.raises(KindRegistryError, match="taken"):
        KINDS.register("sequence_classification", "somewhere:Else")
    with pytest.raises(KindRegistryError, match="did you mean 'sequence_classification'"):
        KINDS.get("sequence_clasification")
    with pytest.raises(KindRegistryError, match="module:ClassName"):
        KINDS.register("loose", "no_colon_here")
    assert KINDS.keys()[0] == "sequence_classification"
