"""Frozen features: one forward pass of the pretrained encoder over a task's examples, pooled per layer.

The probe axis asks what the pretrained weights already hold, so nothing here
trains: the model runs once under ``torch.inference_mode`` over the training
and the first evaluation split (the rows a fine-tuning case of the same task
sees), and every hidden state is pooled two ways — the mean over real tokens
and the first token (``[CLS]`` for BERT-style models). The result is kept per
process for each (prepared data, model, max length, device), so several probe
cases over the same data pay for one pass.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexharness.engine import data as data_mod
from flexharness.engine import models, train

POOLINGS = ("mean", "first")


@dataclass(frozen=True, eq=False)
class Features:
    """Pooled hidden states: ``train[pooling]`` is (layers, rows, hidden); layer 0 is the embeddings."""

    train: dict[str, np.ndarray]
    eval: dict[str, np.ndarray]
    seconds: float        # the forward passes, tokenization excluded
    device: str

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
    model = models.fresh_model(model_ref, prepared.num_labels, 0, trust_remote_code).base_model
    start = time.perf_counter()
    try:
        train_features = encode_pooled(model, encoded_train, batch_size, device, pad_id)
        eval_features = encode_pooled(model, encoded_eval, batch_size, device, pad_id)
    finally:
        del model
        train.release_memory()
    return Features(train_features, eval_features, time.perf_counter() - start, device)


def frozen_features(inputs: Any, model_ref: str, batch_size: int, device_option: str = "auto",
                    trust_remote_code: bool = False) -> Features:
    """Features of ``inputs`` (a ``runner.Inputs``) from the pretrained ``model_ref``, computed once per process."""
    device = models.resolve_device(device_option)
    return _features(inputs.prepared, inputs.train, inputs.eval, model_ref, batch_size, device, inputs.pad_id,
                     trust_remote_code)
