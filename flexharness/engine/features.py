"""Frozen features: one forward pass of the pretrained encoder over a task's examples, pooled per layer.

The probe axis asks what the pretrained weights already hold, so nothing here
trains: the model runs once under ``torch.inference_mode`` over the training
and the first evaluation split (the rows a fine-tuning case of the same task
sees), and every hidden state is pooled two ways — the mean over real tokens
and the first token (``[CLS]`` for BERT-style models). The result is kept per
process for each (prepared data, model, max length, device), so several probe
cases over the same data pay for one pass, and on disk (``diskcache``, keyed by
the token ids' keys, the model's files, batch size, device and torch version)
for other xdist workers and later runs: every layer is kept, so a changed
``probe.layers`` or ``pooling`` reuses them.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from flexharness.engine import data as data_mod
from flexharness.engine import diskcache, models, train

POOLINGS = ("mean", "first")


@dataclass(frozen=True, eq=False)
class Features:
    """Pooled hidden states: ``train[pooling]`` is (layers, rows, hidden); layer 0 is the embeddings."""

    train: dict[str, np.ndarray]
    eval: dict[str, np.ndarray]
    seconds: float        # the forward passes, tokenization excluded (when they ran, for features from disk)
    device: str
    source: str            # computed, disk or memory (``diskcache``)
    fetch_seconds: float   # what this call spent: the passes, or loading them

    def fields(self) -> dict[str, Any]:
        """The record's ``features`` entry: a run that computed them once says so once."""
        return {"source": self.source, "seconds": round(self.fetch_seconds, 3)}

    @property
    def num_layers(self) -> int:
        """Hidden states per example: the embedding output plus one per transformer layer."""
        return int(self.train[POOLINGS[0]].shape[0])


def pool(hidden_states: Any, mask: Any) -> dict[str, Any]:
    """Mean over real tokens and first token of every layer: {pooling: (layers, batch, hidden)} tensors."""
    import torch

    stacked = torch.stack([h.float() for h in hidden_states])
    weights = mask.to(stacked.dtype)[None, :, :, None]
    mean = (stacked * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1.0)
    return {"mean": mean, "first": stacked[:, :, 0]}


def encode_pooled(model: Any, data: data_mod.Encoded, batch_size: int, device: str,
                  pad_id: int) -> dict[str, np.ndarray]:
    """Pooled features of every example in the original order; batches sorted by length pad little."""
    import torch

    model.to(device).eval()
    order = np.argsort(data.lengths, kind="stable")
    outputs: dict[str, np.ndarray] = {}
    with torch.inference_mode(), train.autocast(device, train.resolve_precision("auto", device, warn=False)):
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            batch = train.collate(data, indices, pad_id, device)
            hidden = model(**batch, output_hidden_states=True).hidden_states
            for name, values in pool(hidden, batch["attention_mask"]).items():
                if name not in outputs:
                    outputs[name] = np.empty((values.shape[0], len(order), values.shape[2]), dtype=np.float32)
                outputs[name][:, indices] = values.cpu().numpy()
    return outputs


@functools.lru_cache(maxsize=4)
def _features(prepared: data_mod.Prepared, encoded_train: data_mod.Encoded, encoded_eval: data_mod.Encoded,
              model_ref: str, batch_size: int, device: str, pad_id: int, trust_remote_code: bool) -> Features:
    import torch

    def compute() -> dict[str, np.ndarray]:
        model = models.fresh_model(model_ref, prepared.num_labels, 0, trust_remote_code).base_model
        start = time.perf_counter()
        try:
            train_features = encode_pooled(model, encoded_train, batch_size, device, pad_id)
            eval_features = encode_pooled(model, encoded_eval, batch_size, device, pad_id)
        finally:
            del model
            train.release_memory()
        return {**{f"train_{k}": v for k, v in train_features.items()},
                **{f"eval_{k}": v for k, v in eval_features.items()},
                "seconds": np.asarray(time.perf_counter() - start)}

    model = models.model_identity(model_ref)   # None for a hub model not downloaded yet: nothing to key on
    key = diskcache.key_of({"kind": "features", "format": 1, "train": encoded_train.key, "eval": encoded_eval.key,
                            "model": model, "batch_size": batch_size, "device": device, "pad_id": pad_id,
                            "torch": torch.__version__}) if model and encoded_train.key and encoded_eval.key else None
    fetched = diskcache.fetch("features", key, compute,
                              lambda arrays: features_problem(arrays, len(encoded_train.lengths),
                                                              len(encoded_eval.lengths)),
                              f"features of {len(encoded_train.lengths)} + {len(encoded_eval.lengths)} examples "
                              f"from {model_ref}")
    arrays = fetched.arrays
    return Features({p: arrays[f"train_{p}"] for p in POOLINGS}, {p: arrays[f"eval_{p}"] for p in POOLINGS},
                    float(arrays["seconds"]), device, fetched.source, fetched.seconds)


def features_problem(arrays: Any, train_rows: int, eval_rows: int) -> str | None:
    """What keeps stored arrays from being the features of these rows, or None."""
    names = {"seconds", *(f"{split}_{p}" for split in ("train", "eval") for p in POOLINGS)}
    if set(arrays) != names:
        return f"holds {', '.join(sorted(arrays)) or 'nothing'} where {', '.join(sorted(names))} was expected"
    if arrays["seconds"].shape != () or arrays["seconds"].dtype.kind != "f":
        return "'seconds' is not one number"
    shapes = {name: arrays[name].shape for name in names - {"seconds"}}
    if any(len(shape) != 3 or arrays[name].dtype != np.float32 for name, shape in shapes.items()):
        return "not (layers, rows, hidden) float32 arrays"
    if {(s[0], s[2]) for s in shapes.values()} != {(shapes["train_mean"][0], shapes["train_mean"][2])}:
        return "poolings or splits of different layer counts or widths"
    if any(shape[1] != (train_rows if name.startswith("train") else eval_rows) for name, shape in shapes.items()):
        return f"not {train_rows} training and {eval_rows} evaluation rows"
    return None


def frozen_features(inputs: Any, model_ref: str, batch_size: int, device_option: str = "auto",
                    trust_remote_code: bool = False) -> Features:
    """Features of ``inputs`` (a ``runner.Inputs``) from the pretrained ``model_ref``: computed once per process,
    and kept on disk (``diskcache``) for other workers and later runs."""
    device = models.resolve_device(device_option)
    hits = _features.cache_info().hits
    found = _features(inputs.prepared, inputs.train, inputs.eval, model_ref, batch_size, device, inputs.pad_id,
                      trust_remote_code)
    return replace(found, source=diskcache.MEMORY, fetch_seconds=0.0) if _features.cache_info().hits > hits else found
