"""How a case adapts the pretrained model: all weights, a LoRA adapter, or the head on a frozen encoder.

``prepare`` turns the fresh copy into what the method trains, in place: the
optimizer then sees only the parameters that require a gradient. LoRA goes
through peft, which injects the adapter layers into the model object itself,
so the training loop calls the model as before; ``finish`` merges the adapter
back into the weights, which leaves a plain transformers model that
evaluation and the compression methods handle like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flexharness.errors import TrainingError
from flexharness.spec import TrainConfig

_QV = ("query", "value")
_PROJ = ("q_proj", "v_proj")
# LoRA on the attention query and value projections (the LoRA paper's choice), per architecture.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": _QV, "roberta": _QV, "xlm-roberta": _QV, "electra": _QV, "mpnet": ("q", "v"),
    "distilbert": ("q_lin", "v_lin"), "deberta-v2": ("query_proj", "value_proj"),
    "gpt2": ("c_attn",), "llama": _PROJ, "qwen2": _PROJ, "qwen3": _PROJ, "mistral": _PROJ, "gemma": _PROJ,
    "gemma2": _PROJ, "phi3": ("qkv_proj",),
}


@dataclass
class Adapted:
    """A model prepared for one method, and what finishing it needs."""

    model: Any
    method: str
    trainable: int
    total: int
    peft_model: Any = None
    bf16: tuple = ()          # frozen Linear modules whose weights were stored in bf16 for training
    checkpointing: bool = False


def default_targets(model_type: str) -> tuple[str, ...] | None:
    """LoRA target modules for an architecture: ours, else peft's own table, else None (name them in the suite)."""
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    found = PEFT_TARGETS.get(model_type)
    return tuple(found) if found else None


def head_modules(model: Any) -> list[str]:
    """The classification head: the model's own modules with weights beside the pretrained base model."""
    base = model.base_model
    return [name for name, child in model.named_children()
            if child is not base and any(True for _ in child.parameters())]


def count(model: Any) -> tuple[int, int]:
    """(trainable, all) parameters."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def prepare(model: Any, config: TrainConfig, device: str) -> Adapted:
    """Freeze, inject an adapter, or leave everything trainable; memory options apply to each method."""
    total = count(model)[1]
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = None
    if config.method == "head":
        heads = set(head_modules(model))
        for name, param in model.named_parameters():
            param.requires_grad_(name.split(".", 1)[0] in heads)
    elif config.method == "lora":
        peft_model = _lora(model, config)
    adapted = Adapted(model, str(config.method), count(model)[0], total, peft_model,
                      checkpointing=config.gradient_checkpointing)
    if device == "cuda" and config.method != "full":
        adapted.bf16 = _frozen_linears_to_bf16(model)
    return adapted


def _lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    model_type = getattr(model.config, "model_type", "unknown")
    targets = config.lora_target_modules or default_targets(model_type)
    if not targets:
        raise TrainingError(f"LoRA has no default target modules for '{model_type}' models; name them with "
                            "'lora_target_modules' under 'train:' (e.g. [q_proj, v_proj])")
    lora = LoraConfig(task_type=_task_type(model, TaskType), r=config.lora_rank, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=list(targets),
                      modules_to_save=head_modules(model), fan_in_fan_out=model_type == "gpt2")
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise TrainingError(f"LoRA cannot adapt this '{model_type}' model: {exc}; check "
                            f"'lora_target_modules' ({', '.join(targets)})") from None


_TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForTokenClassification": "TOKEN_CLS",
               "ForQuestionAnswering": "QUESTION_ANS"}


def _task_type(model: Any, task_types: Any) -> Any:
    """peft's task type of the model's head class (a task kind's ``model_class``); None for a head peft does not
    name (multiple choice): a plain adapter, the head trained through ``modules_to_save`` all the same."""
    found = next((t for suffix, t in _TASK_TYPES.items() if type(model).__name__.endswith(suffix)), None)
    return getattr(task_types, found) if found else None


def _frozen_linears_to_bf16(model: Any) -> tuple:
    """On CUDA the forward pass runs under bf16 autocast, which casts Linear weights to bf16 anyway: storing
    frozen ones in bf16 halves their memory without changing a result (trained weights keep fp32)."""
    import torch

    frozen = tuple(m for m in model.modules() if isinstance(m, torch.nn.Linear)
                   and not any(p.requires_grad for p in m.parameters(recurse=False)))
    for module in frozen:
        module.to(torch.bfloat16)
    return frozen


def finish(adapted: Adapted) -> Any:
    """The trained model as a plain transformers model: fp32, adapter merged, every weight trainable again."""
    import torch

    model = adapted.model
    for module in adapted.bf16:
        module.to(torch.float32)
    if adapted.peft_model is not None:
        model = adapted.peft_model.merge_and_unload()
    if adapted.checkpointing:
        model.gradient_checkpointing_disable()
    for param in model.parameters():
        param.requires_grad_(True)
    return model
