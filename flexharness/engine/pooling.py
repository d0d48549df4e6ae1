"""How the sequence-classification head reads the encoder: the model's own head, or a pooled linear head.

A checkpoint's own head is not always the model: a sentence-embedding model (all-MiniLM-L6-v2) was trained
through mean pooling, and the ``pooler`` its BERT classifier reads is left over from the original
pre-training. With ``head`` or ``lora`` that stale pooler is frozen, so head-only training measured it
rather than the model. ``pooling`` picks what the head reads:

- ``pooler``: the architecture's own head (today's behaviour; for a decoder, its last real token);
- ``cls`` / ``mean`` / ``last``: the first token, the mean over real tokens, the last real token of the last
  hidden state, into one new linear layer (``classifier``);
- ``auto``: a sentence-transformers pooling config (``modules.json``, ``1_Pooling/config.json``) decides;
  else mean pooling when a BERT-style checkpoint lacks its pooler's weights; else the model's own head.

Resolution reads only the model's files (``config.json``, the pooling config, the checkpoint's tensor names
from its safetensors header), so the result-cache key can hold it without loading a model.
"""

from __future__ import annotations

import functools
import inspect
import json
import struct
from pathlib import Path
from typing import Any

from flexharness.engine.adapt import head_modules
from flexharness.files import RefusedFile, read_text

OWN = "pooler"
POOLED = ("cls", "mean", "last")
# model types whose sequence classifier reads the base model's pooler (a missing pooler is a stale head)
POOLER_HEADS = ("bert", "albert", "ernie", "megatron-bert", "nezha", "roc_bert", "mobilebert")
DECODER_TYPES = ("gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2",
                 "phi", "phi3", "opt", "bloom", "falcon")
_ST_MODES = (("pooling_mode_cls_token", "cls"), ("pooling_mode_lasttoken", "last"),
             ("pooling_mode_mean_tokens", "mean"))
SAFETENSORS_HEADER_LIMIT = 100_000_000
CONFIG_LIMIT = 50_000_000   # bytes of a JSON file read here (a sharded checkpoint's index is the largest)


def is_decoder(config: dict[str, Any]) -> bool:
    architectures = config.get("architectures") or []
    return config.get("model_type") in DECODER_TYPES or any(
        str(name).endswith(("ForCausalLM", "LMHeadModel")) for name in architectures)


def own_pooling(location: str) -> str:
    """What the model's own head pools: ``last`` for a decoder, ``pooler`` for an encoder."""
    config = _json(location, "config.json")
    return "last" if is_decoder(config if isinstance(config, dict) else {}) else OWN


def resolved(asked: str, location: str) -> str:
    """The pooling a case with ``pooling: asked`` trains for the model at ``location`` (a folder or a hub id,
    as ``models.resolve_model`` gives it); ``pooler`` on a decoder is ``last``."""
    own = own_pooling(location)
    if asked == OWN:
        return own
    if asked != "auto":
        return asked
    return _automatic(location) or own


def key_value(asked: str, location: str) -> str | None:
    """The pooling the result-cache key holds: None when it is the model's own head (keys made before
    ``pooling`` existed stay valid), else the resolved value, so ``auto`` that changes what a model trains
    changes its key."""
    found = resolved(asked, location)
    return None if found == own_pooling(location) else found


def _automatic(ref: str) -> str | None:
    config = _json(ref, "config.json")
    config = config if isinstance(config, dict) else {}
    sentence = sentence_transformers_pooling(ref)
    if sentence:
        return sentence
    if config.get("model_type") in POOLER_HEADS:
        names = checkpoint_names(ref)
        if names is not None and not any(".pooler." in f".{name}" for name in names):
            return "mean"
    return None


def sentence_transformers_pooling(ref: str) -> str | None:
    """``cls`` / ``last`` / ``mean`` from a sentence-transformers pooling config; ``mean`` for its other modes
    (max, weighted mean): the closest pooling a linear head here offers. None without one."""
    modules = _json(ref, "modules.json")
    if not isinstance(modules, list):
        return None
    folder = next((m.get("path") for m in modules if isinstance(m, dict)
                   and str(m.get("type", "")).endswith("models.Pooling")), None)
    if folder is None:
        return None
    config = _json(ref, f"{folder}/config.json") if folder else None
    if not isinstance(config, dict):
        return "mean"   # sentence-transformers' own default
    return next((mode for key, mode in _ST_MODES if config.get(key) is True), "mean")


def checkpoint_names(ref: str) -> set[str] | None:
    """Tensor names of a local checkpoint (safetensors, single or sharded); None when they cannot be read."""
    index = _json(ref, "model.safetensors.index.json")
    if isinstance(index, dict) and isinstance(index.get("weight_map"), dict):
        return set(index["weight_map"])
    path = _local(ref, "model.safetensors")
    if path is None:
        return None
    try:
        with path.open("rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            if size > SAFETENSORS_HEADER_LIMIT:
                return None
            header = json.loads(handle.read(size))
    except (OSError, ValueError, struct.error):
        return None
    return {name for name in header if name != "__metadata__"} if isinstance(header, dict) else None


def _local(ref: str, name: str) -> Path | None:
    """One of the model's files on this machine: its folder's, or the local hub cache's."""
    location = Path(ref)
    if location.is_dir():
        found = location / name
        return found if found.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(ref, name)
    except Exception:  # not a valid hub id: loading the model says so
        return None
    return Path(cached) if isinstance(cached, str) else None


def _json(ref: str, name: str) -> Any:
    path = _local(ref, name)
    try:
        return json.loads(read_text(path, CONFIG_LIMIT)) if path else None
    except (OSError, ValueError, RefusedFile):
        return None


def pooled_head(model: Any, pooling: str) -> tuple[Any, tuple[str, ...]]:
    """``model`` reading ``pooling`` into a new linear ``classifier``, and that head's parameter names; the
    model as it is for its own head. The architecture's head modules are removed (and a pooler the new head
    does not read, where the base model can go without one), so parameter counts and sizes are honest."""
    if pooling not in POOLED or pooling == own_pooling_of(model):
        return model, ()
    import torch

    for name in head_modules(model):
        delattr(model, name)
    base = model.base_model
    if getattr(base, "pooler", None) is not None and "add_pooling_layer" in inspect.signature(type(base)).parameters:
        base.pooler = None
    config = model.config
    model.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
    rate = getattr(config, "classifier_dropout", None)
    model.head_dropout = torch.nn.Dropout(rate if rate is not None else getattr(config, "hidden_dropout_prob", 0.1))
    model.__class__ = _pooled_class(type(model), pooling)
    return model, ("classifier.weight", "classifier.bias")


def own_pooling_of(model: Any) -> str:
    return "last" if is_decoder(model.config.to_dict()) else OWN


def pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """(batch, hidden) from the last hidden state: first token, mean over real tokens, or last real token
    (batches are padded on the right)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    import torch

    last = (mask.sum(dim=1) - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@functools.lru_cache(maxsize=None)
def _pooled_class(base: type, pooling: str) -> type:
    """A subclass of the transformers class whose forward pools and classifies; one per (class, pooling), so
    copies, peft wrappers, soups and kept weights all see one structure."""
    from transformers.modeling_outputs import SequenceClassifierOutput

    def forward(self: Any, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                labels: Any = None, **_unused: Any) -> Any:
        """Logits; with ``labels`` also the loss (cross-entropy, or mean squared error for one label) as the
        transformers classifiers give it, so HF Trainer can train this class too."""
        import torch.nn.functional as F

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.base_model(**inputs)[0]
        if attention_mask is None:
            attention_mask = hidden.new_ones(hidden.shape[:2])
        logits = self.classifier(self.head_dropout(pool(hidden, attention_mask, pooling)))
        loss = None
        if labels is not None:
            loss = (F.mse_loss(logits.squeeze(-1).float(), labels.float()) if self.config.num_labels == 1
                    else F.cross_entropy(logits.float(), labels))
        return SequenceClassifierOutput(loss=loss, logits=logits)

    return type(f"{pooling.capitalize()}Pooled{base.__name__}", (base,),
                {"forward": forward, "pooling": pooling, "__module__": __name__})
