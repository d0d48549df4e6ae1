"""Operations on a model's weights and modules: magnitude masks, head and layer removal, int8.

transformers 5.x has no ``prune_heads``: heads are removed here by slicing the
query/key/value and output projections. The module layout of each supported
architecture is written down in :data:`LAYOUTS` (read from the transformers
5.x sources); any other architecture gets a :class:`CompressionError` that
says so, never a wrong model.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

from flexharness.errors import CompressionError


@dataclass(frozen=True)
class Layout:
    """Where one architecture keeps its encoder layers and, inside a layer, its attention."""

    layers: str                   # dotted path, from the base model, of the ModuleList of layers
    attention: str                # dotted path, from a layer, of the module holding the head attributes
    projections: tuple[str, ...]  # query, key, value Linear paths, from a layer
    output: str                   # attention output projection Linear path, from a layer
    count_attr: str               # head count attribute on the attention module
    size_attr: str | None         # all-heads width attribute, where the architecture keeps one


_BERT = Layout("encoder.layer", "attention.self",
               ("attention.self.query", "attention.self.key", "attention.self.value"),
               "attention.output.dense", "num_attention_heads", "all_head_size")
LAYOUTS = {
    "bert": _BERT,
    "roberta": _BERT,
    "distilbert": Layout("transformer.layer", "attention",
                         ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
                         "attention.out_lin", "n_heads", None),
}


def layout(model: Any, method: str) -> Layout:
    model_type = getattr(model.config, "model_type", "unknown")
    if model_type not in LAYOUTS:
        raise CompressionError(f"method '{method}' supports the architectures {', '.join(sorted(LAYOUTS))}; "
                               f"this model is '{model_type}'. Remove the method or use another model")
    return LAYOUTS[model_type]


def encoder_layers(model: Any, method: str) -> tuple[Any, str, Layout]:
    """(module holding the layer list, its attribute name, layout)."""
    spec = layout(model, method)
    parent, _, name = spec.layers.rpartition(".")
    return model.base_model.get_submodule(parent), name, spec


def encoder_linears(model: Any) -> list[tuple[str, Any]]:
    """Linear layers of the base model but its pooler: the encoder weights compression acts on."""
    import torch

    return [(name, module) for name, module in model.base_model.named_modules()
            if not name.startswith("pooler") and (isinstance(module, torch.nn.Linear) or is_quantized_linear(module))]


def is_quantized_linear(module: Any) -> bool:
    """A torch.ao quantized Linear: packed weights behind a ``weight()`` method (not its packed-params child)."""
    return hasattr(module, "_packed_params") and callable(getattr(module, "weight", None))


# ---- magnitude pruning -------------------------------------------------------------------------

def magnitude_masks(model: Any, sparsity: float, scope: str) -> list[tuple[Any, Any]]:
    """Zero the smallest-|w| encoder Linear weights; returns (weight, pruned mask) pairs.

    ``global`` ranks all encoder Linear weights together, ``layer`` prunes each
    weight matrix to the same sparsity.
    """
    import torch

    weights = [module.weight for _, module in encoder_linears(model)]
    if not weights:
        raise CompressionError("method 'magnitude' found no Linear layers in the model's encoder")
    groups = [weights] if scope == "global" else [[w] for w in weights]
    masks = []
    with torch.no_grad():
        for group in groups:
            magnitudes = torch.cat([w.detach().abs().flatten() for w in group])
            k = round(sparsity * magnitudes.numel())
            if k == 0:
                continue
            threshold = magnitudes.kthvalue(k).values
            for weight in group:
                pruned = weight.detach().abs() <= threshold
                weight.masked_fill_(pruned, 0.0)
                masks.append((weight, pruned))
    return masks


@contextlib.contextmanager
def keep_masks(masks: list[tuple[Any, Any]]) -> Iterator[None]:
    """Re-zero pruned weights after every optimizer step that updates them.

    Measured on all-MiniLM-L6-v2 (one thread, CPU time per training step):
    re-masking after the step costs about 1 %, torch.nn.utils.prune's forward
    reparametrisation about 9 %.
    """
    if not masks:
        yield
        return
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    first = masks[0][0]

    def reapply(optimizer: Any, args: Any, kwargs: Any) -> None:
        if any(p is first for group in optimizer.param_groups for p in group["params"]):
            with torch.no_grad():
                for weight, pruned in masks:
                    weight.masked_fill_(pruned, 0.0)

    handle = register_optimizer_step_post_hook(reapply)
    try:
        yield
    finally:
        handle.remove()


# ---- attention heads ---------------------------------------------------------------------------

def _heads(layer: Any, spec: Layout) -> tuple[int, int]:
    """(number of heads, head size) of one layer as it is now."""
    size = layer.get_submodule(spec.attention).attention_head_size
    return layer.get_submodule(spec.projections[0]).out_features // size, size


def head_importance(model: Any, batches: Iterator[tuple[dict, Any]], loss_fn: Any,
                    logits_of: Any = lambda output: output.logits) -> list[Any]:
    """Per layer, |∂L/∂ξ_h| summed over batches (Michel et al. 2019), L2-normalised within each layer.

    ξ is a mask of ones multiplied into each head's output just before the
    attention output projection; its gradient says how much the loss depends
    on each head. ``logits_of`` reads what ``loss_fn`` takes from the model's output (a task kind's logits).
    """
    import torch

    holder, name, spec = encoder_layers(model, "heads")
    layers = list(getattr(holder, name))
    masks, hooks = [], []
    for layer in layers:
        count, size = _heads(layer, spec)
        mask = torch.ones(count, device=next(model.parameters()).device, requires_grad=True)
        hooks.append(layer.get_submodule(spec.output).register_forward_pre_hook(
            functools.partial(_scale_heads, mask=mask, size=size)))
        masks.append(mask)
    totals = [torch.zeros_like(m) for m in masks]
    model.eval()
    try:
        for batch, labels in batches:
            grads = torch.autograd.grad(loss_fn(logits_of(model(**batch)), labels), masks)
            for total, grad in zip(totals, grads):
                total += grad.abs().detach()
    finally:
        for hook in hooks:
            hook.remove()
    return [t / t.norm().clamp_min(1e-12) for t in totals]


def _scale_heads(module: Any, args: tuple, *, mask: Any, size: int) -> tuple:
    return (args[0] * mask.repeat_interleave(size).to(args[0].dtype), *args[1:])


def choose_heads(importance: list[Any], fraction: float) -> list[list[int]]:
    """The least important heads over all layers, ``fraction`` of them; each layer keeps at least one."""
    total = sum(len(scores) for scores in importance)
    target = min(round(fraction * total), total - len(importance))
    ranked = sorted((float(score), layer, head) for layer, scores in enumerate(importance)
                    for head, score in enumerate(scores))
    chosen: list[list[int]] = [[] for _ in importance]
    removed = 0
    for _, layer, head in ranked:
        if removed == target:
            break
        if len(chosen[layer]) < len(importance[layer]) - 1:
            chosen[layer].append(head)
            removed += 1
    return chosen


def remove_heads(model: Any, heads: list[list[int]]) -> None:
    """Physically remove ``heads[i]`` from layer i: smaller projections, fewer parameters and FLOPs."""
    import torch

    holder, name, spec = encoder_layers(model, "heads")
    for layer, drop in zip(getattr(holder, name), heads):
        if not drop:
            continue
        count, size = _heads(layer, spec)
        keep = [h for h in range(count) if h not in set(drop)]
        index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in keep])
        for path in spec.projections:
            _replace(layer, path, _sliced(layer.get_submodule(path), index, dim=0))
        _replace(layer, spec.output, _sliced(layer.get_submodule(spec.output), index, dim=1))
        attention = layer.get_submodule(spec.attention)
        setattr(attention, spec.count_attr, len(keep))
        if spec.size_attr:
            setattr(attention, spec.size_attr, len(keep) * size)


def _sliced(linear: Any, index: Any, dim: int) -> Any:
    """A new Linear keeping rows (dim 0, outputs) or columns (dim 1, inputs) ``index`` of ``linear``."""
    import torch

    index = index.to(linear.weight.device)
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias
    if bias is not None and dim == 0:
        bias = bias.detach().index_select(0, index)
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                          device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias.detach())
    return new


def _replace(root: Any, path: str, module: Any) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


# ---- layers --------------------------------------------------------------------------------------

def layer_indices(total: int, keep: int, which: str) -> list[int]:
    """``bottom``: the first k; ``top``: the last k; ``even``: every (n/k)-th from the first (0, 2, 4 of 6)."""
    if which == "bottom":
        return list(range(keep))
    if which == "top":
        return list(range(total - keep, total))
    return [i * total // keep for i in range(keep)]


def keep_layers(model: Any, keep: int, which: str) -> list[int]:
    """Keep ``keep`` encoder layers chosen by ``which``; returns the kept indices."""
    import torch

    holder, name, _ = encoder_layers(model, "layers")
    layers = getattr(holder, name)
    if keep >= len(layers):
        raise CompressionError(f"method 'layers': keep {keep} of {len(layers)} layers removes nothing; "
                               f"use keep < {len(layers)}")
    indices = layer_indices(len(layers), keep, which)
    setattr(holder, name, torch.nn.ModuleList([layers[i] for i in indices]))
    model.config.num_hidden_layers = keep
    if hasattr(holder, "n_layers"):
        holder.n_layers = keep
    return indices


# ---- int8 --------------------------------------------------------------------------------------------

def int8_unavailable(device: str) -> str | None:
    """Why int8 cannot run on ``device``, or None when it can."""
    if device != "cuda":
        return None
    try:
        import torchao.quantization  # noqa: F401
    except ImportError:
        return "int8 on CUDA needs torchao (pip install torchao); run with --flex-device cpu for dynamic int8"
    return None


def quantize_int8(model: Any, device: str) -> Any:
    """CPU: dynamic int8 of every Linear (torch.ao). CUDA: torchao int8 weight-only."""
    import torch

    if device == "cuda":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        model.to(device)
        quantize_(model, Int8WeightOnlyConfig())
        return model
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, still the CPU path that works
        return quantize_dynamic(model.to("cpu"), {torch.nn.Linear}, dtype=torch.qint8)
