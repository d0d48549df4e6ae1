"""Fine-tuned weights kept on disk (safetensors), so that a model is fine-tuned once and loaded after that.

Fusion keeps its ingredients' weights for the soups; a task's fine-tuned model is kept when another item
of the run starts from it (compression's dense model), so neither another xdist worker nor a rerun trains
it again. A :class:`Kept` file is trained under its lock: an item that finds another process training the
same model waits for it and loads the result instead of training it a second time.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from flexharness.files import replace_atomically

METADATA_KEY = "flexharness"   # safetensors metadata: JSON of the training run's record fields


STATE = "state"   # record key of a run's fine-tuned weights (``state_of``) on their way to a store; never stored in it


class DamagedWeightsWarning(UserWarning):
    """Kept weights could not be read or did not fit the model; the model was fine-tuned again."""


def state_of(model: Any) -> dict[str, Any]:
    """The model's weights as CPU tensors of their own (no shared storage: safetensors refuses shared tensors)."""
    return {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in model.state_dict().items()}


def save_weights(path: Path, weights: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """safetensors, written to a temporary name and renamed: two workers writing one run leave one whole file."""
    from safetensors.torch import save_file

    replace_atomically(path, lambda tmp: save_file(dict(weights), tmp, metadata=dict(metadata) if metadata else None))


def load_weights(path: Path) -> dict[str, Any] | None:
    """The weights at ``path``; None when the file is missing or damaged (the run is then trained again)."""
    return _read(path)[0]


def usable(path: Path, what: str) -> bool:
    """Whether kept weights at ``path`` can be loaded; a damaged file is one warning (``what`` is trained again
    and the file replaced), the same policy as :meth:`Kept.load_into`."""
    if not path.is_file():
        return False
    if _read(path)[0] is None:
        warnings.warn(DamagedWeightsWarning(f"kept weights {path.name} ignored (not a readable safetensors file); "
                                            f"fine-tuning {what} again and replacing them"), stacklevel=2)
        return False
    return True


def _read(path: Path) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(weights or None, metadata) of a safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}, dict(handle.metadata() or {})
    except (OSError, SafetensorError):
        return None, {}


def _check_fits(state: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """ValueError unless ``state`` has the model's tensors, names and shapes: checked before loading, since
    ``load_state_dict`` would fill part of the model before refusing the rest."""
    if set(state) != set(expected):
        raise ValueError(f"{len(set(expected) ^ set(state))} tensor names differ from the model's")
    wrong = next((name for name, tensor in expected.items() if tuple(state[name].shape) != tuple(tensor.shape)), None)
    if wrong is not None:
        raise ValueError(f"'{wrong}' has shape {tuple(state[wrong].shape)}, the model {tuple(expected[wrong].shape)}")


@dataclass(frozen=True)
class Kept:
    """Where one fine-tuning run's weights are kept; ``reuse`` False (``--flex-no-cache``) loads only files in
    ``written`` (those its store wrote in this process), and still writes them."""

    path: Path
    reuse: bool = True
    written: set[Path] = field(default_factory=set, compare=False)

    @contextmanager
    def claimed(self) -> Iterator[None]:
        """Hold these weights' lock while loading or training them: another process training the same model
        finishes (and saves) first. The operating system drops the lock of a process that dies."""
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            yield

    def load_into(self, model: Any) -> dict[str, Any] | None:
        """Load the kept weights into ``model``: the training run's record fields, or None (absent, or damaged:
        then a warning, and the caller fine-tunes and saves again)."""
        if not self.path.exists() or not (self.reuse or self.path in self.written):
            return None
        state, metadata = _read(self.path)
        try:
            if state is None:
                raise ValueError("not a readable safetensors file")
            fields = json.loads(metadata[METADATA_KEY])
            if not isinstance(fields, dict):
                raise ValueError(f"its '{METADATA_KEY}' metadata is not a mapping")
            _check_fits(state, model.state_dict())
        except (KeyError, ValueError) as exc:
            why = f"no '{METADATA_KEY}' metadata" if isinstance(exc, KeyError) else str(exc).splitlines()[0][:200]
            warnings.warn(DamagedWeightsWarning(f"kept weights {self.path.name} ignored ({why}); fine-tuning the "
                                                "model again and replacing them"), stacklevel=2)
            return None
        model.load_state_dict(state)
        return fields

    def save(self, model: Any, fields: Mapping[str, Any]) -> None:
        """Keep ``model``'s weights with ``fields`` (what its training run recorded)."""
        save_weights(self.path, state_of(model), {METADATA_KEY: json.dumps(dict(fields), sort_keys=True)})
        self.written.add(self.path)
