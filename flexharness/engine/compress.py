"""Compression methods (how each is written in a suite and how it runs) and one compression case end to end.

A compression case is a task case (same data, metric and training) whose
model is compressed before fine-tuning (``magnitude`` with ``when: before``,
``heads``, ``layers``) or after it (``magnitude`` with ``when: after``,
``int8``). It also needs the dense score for the same task, model and seed:
the fine-tuned dense model is kept in an in-process memo, so several methods
on one worker fine-tune it once, and post-training methods compress a copy;
its weights are kept on disk too (``engine.weights``), so the task's own item,
other xdist workers and reruns share one fine-tune.
"""

from __future__ import annotations

import collections
import copy
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from flexharness.engine import models, runner, surgery, train
from flexharness.errors import CompressionError, Unavailable
from flexharness.engine.faults import OutOfMemoryAsFailure
from flexharness.engine.weights import Kept
from flexharness.suite.schema import Reader, coerce, did_you_mean, fraction, open_fraction, positive
from flexharness.suite.spec import Case, TrainConfig

IMPORTANCE_EXAMPLES = 512   # training examples scored for head importance
DENSE_MEMO_SIZE = 4         # fine-tuned dense models kept per process (one per seed, typically)


@dataclass
class Compressed:
    model: Any
    masks: list = field(default_factory=list)       # (weight, pruned) pairs kept at zero while training
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    device: str
    inputs: runner.Inputs
    config: TrainConfig
    dense_model: Any


@dataclass(frozen=True)
class Method:
    name: str
    keys: tuple[str, ...]
    parse: Callable[[Reader], list[dict[str, Any]]]
    label: Callable[[dict[str, Any]], str]
    apply: Callable[[Any, dict[str, Any], Context], Compressed]
    retrains: Callable[[dict[str, Any]], bool] = lambda params: True
    unavailable: Callable[[str], str | None] = lambda device: None   # why the device cannot run it: a skip
    check: Callable[[Any], Any] = lambda model: None                 # raises CompressionError for the model
    supports: Callable[[dict[str, Any], str, str], str | None] = lambda params, method, model_type: None


# ---- suite section ---------------------------------------------------------------------------------

def _choice(entry: Reader, key: str, choices: tuple[str, ...]) -> str:
    return entry.typed(key, str, choices[0], check=lambda v: None if v in choices else
                       f"expected one of {', '.join(choices)}{did_you_mean(v, choices)}")


def percent(value: float) -> str:
    """A fraction as a percentage for case names: 0.3 -> '30'."""
    return f"{round(value * 100, 4):g}"


def _parse_magnitude(entry: Reader) -> list[dict[str, Any]]:
    raw = entry.required("sparsity")
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise entry.error("sparsity", "expected a number in [0, 1) or a non-empty list of them")
    sparsities = []
    for value in values:
        number = coerce(value, float)
        complaint = "is not a number" if not isinstance(number, float) else fraction(number)
        if complaint:
            raise entry.error("sparsity", f"{value!r} {complaint}; sparsity is the fraction of weights set to zero")
        if number in sparsities:
            raise entry.error("sparsity", f"{value!r} is listed twice")
        sparsities.append(number)
    when, scope = _choice(entry, "when", ("before", "after")), _choice(entry, "scope", ("global", "layer"))
    return [{"sparsity": s, "when": when, "scope": scope} for s in sparsities]


def _magnitude_label(params: Mapping[str, Any]) -> str:
    qualifiers = ("-after" if params["when"] == "after" else "") + ("-layer" if params["scope"] == "layer" else "")
    return f"magnitude{qualifiers}-{percent(params['sparsity'])}"


def _parse_heads(entry: Reader) -> list[dict[str, Any]]:
    return [{"fraction": entry.typed("fraction", float, required=True, check=open_fraction)}]


def _parse_layers(entry: Reader) -> list[dict[str, Any]]:
    keep = entry.typed("keep", int, required=True, check=positive)
    return [{"keep": keep, "which": _choice(entry, "which", ("bottom", "top", "even"))}]


def _layers_label(params: Mapping[str, Any]) -> str:
    return f"layers-{params['keep']}" + ("" if params["which"] == "bottom" else f"-{params['which']}")


# ---- methods -------------------------------------------------------------------------------------

def _apply_magnitude(model: Any, params: dict[str, Any], ctx: Context) -> Compressed:
    masks = surgery.magnitude_masks(model, params["sparsity"], params["scope"])
    return Compressed(model, masks if params["when"] == "before" else [])


def _apply_heads(model: Any, params: dict[str, Any], ctx: Context) -> Compressed:
    """Importance from the fine-tuned dense model on training batches; heads leave the pretrained copy."""
    scorer = copy.deepcopy(ctx.dense_model).to(ctx.device)
    try:
        importance = [t.cpu() for t in surgery.head_importance(scorer, _importance_batches(ctx), _loss(ctx),
                                                               ctx.inputs.kind.logits)]
    finally:
        del scorer
    chosen = surgery.choose_heads(importance, params["fraction"])
    surgery.remove_heads(model, chosen)
    return Compressed(model, notes={"heads_removed": sum(map(len, chosen)),
                                    "heads_total": sum(len(i) for i in importance)})


def _importance_batches(ctx: Context):
    import numpy as np

    data = ctx.inputs.train
    order = np.random.default_rng(0).permutation(len(data.lengths))[:IMPORTANCE_EXAMPLES]
    for start in range(0, len(order), ctx.config.batch_size):
        indices = order[start:start + ctx.config.batch_size]
        batch = train.to_device(ctx.inputs.kind.host_batch(data, indices, ctx.inputs.pad_id, False, True), ctx.device)
        yield batch, batch.pop("labels")


def _loss(ctx: Context) -> Callable[[Any, Any], Any]:
    return ctx.inputs.kind.loss


def _apply_layers(model: Any, params: dict[str, Any], ctx: Context) -> Compressed:
    kept = surgery.keep_layers(model, params["keep"], params["which"])
    return Compressed(model, notes={"layers_kept": kept})


def _apply_int8(model: Any, params: dict[str, Any], ctx: Context) -> Compressed:
    return Compressed(surgery.quantize_int8(model, ctx.device))


CONV1D_MODELS = ("gpt2", "openai-gpt")  # weights in transformers' Conv1D, not Linear: nothing to prune or quantize


def _needs_linears(params: dict[str, Any], method: str, model_type: str) -> str | None:
    if model_type in CONV1D_MODELS:
        return (f"'{model_type}' models keep their weights in Conv1D layers, which magnitude pruning and int8 "
                "act on only as Linear layers; use a model with Linear layers (Llama, Qwen2, BERT)")
    if params.get("when") == "before" and method == "lora":
        return ("pruning before LoRA fine-tuning: merging the adapter would fill the pruned weights again; use "
                "'when: after', or 'train: {method: full}' (or head) under 'compression:'")
    return None


def _has_layout(name: str) -> Callable[[dict[str, Any], str, str], str | None]:
    def supports(params: dict[str, Any], method: str, model_type: str) -> str | None:
        if model_type in surgery.LAYOUTS:
            return None
        return (f"method '{name}' knows the layers and heads of {', '.join(sorted(surgery.LAYOUTS))} models; "
                f"this model is '{model_type}'. Remove the method or use another model")
    return supports


def supports(params: dict[str, Any], train_method: str, model_type: str) -> str | None:
    """Why a compression case (its ``params``) cannot run after ``train_method`` on ``model_type``, or None."""
    return METHODS[params["method"]].supports(params, train_method, model_type)


METHODS: dict[str, Method] = {
    "magnitude": Method("magnitude", ("sparsity", "when", "scope"), _parse_magnitude, _magnitude_label,
                        _apply_magnitude, retrains=lambda p: p["when"] == "before", supports=_needs_linears),
    "heads": Method("heads", ("fraction",), _parse_heads, lambda p: f"heads-{percent(p['fraction'])}",
                    _apply_heads, check=lambda model: surgery.layout(model, "heads"), supports=_has_layout("heads")),
    "layers": Method("layers", ("keep", "which"), _parse_layers, _layers_label, _apply_layers,
                     check=lambda model: surgery.layout(model, "layers"), supports=_has_layout("layers")),
    "int8": Method("int8", (), lambda entry: [{}], lambda p: "int8", _apply_int8,
                   retrains=lambda p: False, unavailable=surgery.int8_unavailable, supports=_needs_linears),
}


# ---- one compression case ------------------------------------------------------------------------

@dataclass
class Dense:
    """The fine-tuned dense model (on the CPU) and what it scored and measured."""

    model: Any
    score: float
    latency_ms: float
    facts: dict[str, Any]


_DENSE: collections.OrderedDict[tuple, Dense] = collections.OrderedDict()


def run_compression_case(case: Case, model_ref: str, seed: int, device_option: str = "auto",
                         trust_remote_code: bool = False, progress: train.ProgressFn | None = None,
                         kept: Kept | None = None) -> dict[str, Any]:
    """Compress, fine-tune or not, score; the record carries what the method achieved.

    ``kept``: where the fine-tuned dense model's weights are kept (loaded when there, saved when trained here).
    """
    params = dict(case.params)
    method = METHODS[params["method"]]
    device = models.resolve_device(device_option)
    reason = method.unavailable(device)
    if reason:
        raise Unavailable(reason)
    inputs = runner.case_inputs(case, model_ref, trust_remote_code)
    retrains, stats = method.retrains(params), None
    base = runner.fresh_model(case, inputs, model_ref, seed, trust_remote_code)
    method.check(base)  # before the dense fine-tune: an unsupported architecture fails fast
    try:
        with OutOfMemoryAsFailure(case.train):
            dense, reused = _dense(case, model_ref, seed, device, trust_remote_code, inputs, progress, kept)
            base = base.to(device) if retrains else copy.deepcopy(dense.model)
            compressed = method.apply(base, params, Context(device, inputs, case.train, dense.model))
            if retrains:
                with surgery.keep_masks(compressed.masks):
                    stats = train.fine_tune(compressed.model, inputs.train, case.train, seed, device, inputs.pad_id,
                                            inputs.regression, progress, inputs.kind)
            score, per_metric, seconds = runner.evaluate(compressed.model, case, inputs, device)
            facts = {**measure(compressed.model), **compressed.notes}
    finally:
        base = compressed = None
        train.release_memory()
    record = {"score": score, "metrics": per_metric, "seed": seed, "device": device,
              "precision": train.resolve_precision(case.train.precision, device, warn=False),
              **runner.example_counts(inputs), **(runner.train_fields(stats) if stats else _not_trained(case)),
              "eval_seconds": round(seconds, 3)}
    return record | _outcome(params, score, dense, reused, facts, _latency_ms(seconds, inputs))


def _not_trained(case: Case) -> dict[str, Any]:
    """A post-training method's own record trains nothing; its dense model was trained with the case's method."""
    return {"train_seconds": 0.0, "steps": 0, "final_loss": None, "train_tokens": 0,
            "train_method": str(case.train.method), "trainable_params": 0, "total_params": None}


def _outcome(params: dict[str, Any], score: float, dense: Dense, reused: str | bool, facts: dict[str, Any],
             latency_ms: float) -> dict[str, Any]:
    """The compression fields of a record; with ``relative`` the score is the retention."""
    retention = score / dense.score if dense.score > 0 else None
    if params["relative"] and retention is None:
        raise CompressionError(f"the dense model scored {dense.score:.4f}: retention (compressed / dense) is "
                               "undefined; set 'relative: false' or train the dense model better")
    removed = 1.0 - facts.pop("nonzero") / dense.facts["weights"]
    facts.pop("weights")
    return {
        "score": retention if params["relative"] else score, "compressed_score": score,
        "method": params["method"], "sparsity": params.get("sparsity"), "relative": params["relative"],
        "measured_sparsity": round(removed, 6), "retention": retention, "latency_ms": round(latency_ms, 4),
        "dense_score": dense.score, "dense_params": dense.facts["params"], "dense_size_mb": dense.facts["size_mb"],
        "dense_linear_mb": dense.facts["linear_mb"], "dense_latency_ms": round(dense.latency_ms, 4),
        "dense_reused": reused, **{k: v for k, v in params.items() if k not in ("method", "sparsity", "relative")},
        **facts,
    }


def _latency_ms(seconds: float, inputs: runner.Inputs) -> float:
    return 1000.0 * seconds / max(1, len(inputs.eval.lengths))


def _dense(case: Case, model_ref: str, seed: int, device: str, trust_remote_code: bool, inputs: runner.Inputs,
           progress: train.ProgressFn | None, kept: Kept | None) -> tuple[Dense, str | bool]:
    """The fine-tuned dense model for this task, model and seed, and where it came from: ``"memo"`` (this
    process), ``"disk"`` (``kept``: the task's item, another worker or an earlier run trained it) or False
    (trained now, and kept)."""
    key = (case.dataset, case.where, case.metrics, case.train, model_ref, seed, device, trust_remote_code)
    if key in _DENSE:
        _DENSE.move_to_end(key)
        return _DENSE[key], "memo"
    model = runner.fresh_model(case, inputs, model_ref, seed, trust_remote_code)
    _, reused = runner.fine_tune_kept(model, inputs, case.train, seed, device, progress, kept)
    score, _, seconds = runner.evaluate(model, case, inputs, device)
    dense = Dense(model.to("cpu").eval(), score, _latency_ms(seconds, inputs), measure(model))
    _DENSE[key] = dense
    while len(_DENSE) > DENSE_MEMO_SIZE:
        _DENSE.popitem(last=False)
    return dense, reused


def measure(model: Any) -> dict[str, Any]:
    """Parameters, serialized sizes, and the encoder Linear weights: how many, how many not zero."""
    linears = surgery.encoder_linears(model)
    weights = [_weight(module) for _, module in linears]
    return {
        "params": count_params(model), "size_mb": _serialized_mb(model.state_dict()),
        "linear_mb": _serialized_mb({name: module.state_dict() for name, module in linears}),
        "weights": sum(w.numel() for w in weights), "nonzero": sum(int(w.count_nonzero()) for w in weights),
    }


def count_params(model: Any) -> int:
    """Parameters, counting the weights packed inside dynamically quantized Linear layers too."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if surgery.is_quantized_linear(module):
            weight, bias = module._weight_bias()
            total += weight.numel() + (bias.numel() if bias is not None else 0)
    return total


def _weight(module: Any) -> Any:
    """A Linear's weight as a plain tensor whose zeros are the stored zeros (int8 values when quantized)."""
    import torch

    weight = module.weight() if surgery.is_quantized_linear(module) else module.weight.detach()
    if weight.is_quantized:
        return weight.int_repr()
    if type(weight) is not torch.Tensor and hasattr(weight, "dequantize"):
        return weight.dequantize()
    return weight


def _serialized_mb(state: Any) -> float:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return round(buffer.getbuffer().nbytes / 1e6, 3)
