"""What one item will cost before it runs, from the model's ``config.json`` and the case's train settings.

Shards (``--flex-shard``) are cut by this estimate so that a suite mixing a 22M-parameter encoder with a
7B decoder does not put equal work on items that differ 300-fold. Training costs about 6 FLOPs per
parameter and token (forward 2, backward through the activations 2, weight gradients 2; Kaplan et al.
2020), plus attention's term that grows with the sequence length. No weights are loaded and torch is not
imported: the architecture's dimensions give the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from flexharness.suite.spec import TrainConfig

DEFAULT_TRAIN_ROWS = 10_000   # a case without max_train_samples: the estimate's guess of its training rows
DEFAULT_EVAL_ROWS = 1_000
# A model not on this machine yet (a hub id not downloaded): BERT-base's size, said so in the plan line.
UNKNOWN = {"layers": 12, "hidden": 768, "params": 85_000_000}
# FLOPs per parameter and token for each train method: LoRA computes no weight gradients of the frozen
# body; the head method runs the body forward only.
TRAIN_FLOPS = {"full": 6.0, "lora": 4.0, "head": 2.0}
GATED_MLP = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "gemma2", "gemma3_text",
             "phi3", "olmo", "olmo2", "cohere", "granite", "starcoder2", "deepseek_v3")
_HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_HEADS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
_INNER = ("intermediate_size", "n_inner", "ffn_dim", "hidden_dim", "d_ff")


@dataclass(frozen=True)
class Size:
    """A transformer body's dimensions: non-embedding parameters (the ones a token's compute touches)."""

    params: int
    layers: int
    hidden: int
    known: bool = True


def _first(config: Mapping[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def body_size(config: Mapping[str, Any] | None) -> Size:
    """Non-embedding parameters from a ``config.json``: attention (grouped key/value heads counted) and the MLP
    (three matrices when gated, as in Llama); the embeddings are a lookup, not compute."""
    hidden = _first(config or {}, _HIDDEN)
    layers = _first(config or {}, _LAYERS)
    if config is None or hidden is None or layers is None:
        return Size(UNKNOWN["params"], UNKNOWN["layers"], UNKNOWN["hidden"], known=False)
    heads = _first(config, _HEADS) or 1
    head_dim = _first(config, ("head_dim",)) or max(1, hidden // heads)
    kv_heads = _first(config, ("num_key_value_heads",)) or heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    inner = _first(config, _INNER) or 4 * hidden
    mlp = (3 if str(config.get("model_type", "")) in GATED_MLP else 2) * hidden * inner
    return Size(layers * (attention + mlp), layers, hidden)


def item_flops(size: Size, train: TrainConfig) -> float:
    """Training and evaluation FLOPs of one (case, seed) item, with rows × max_length tokens per example
    (an upper bound: batches are padded to their longest example, not to max_length)."""
    method = train.method if isinstance(train.method, str) else "full"
    per_token = 2.0 * size.params + 2.0 * size.layers * train.max_length * size.hidden   # one forward pass
    rows = train.max_train_samples or DEFAULT_TRAIN_ROWS
    evals = train.max_eval_samples or DEFAULT_EVAL_ROWS
    training = TRAIN_FLOPS.get(method, TRAIN_FLOPS["full"]) / 2.0 * per_token * rows * train.epochs
    return (training + per_token * evals) * train.max_length
