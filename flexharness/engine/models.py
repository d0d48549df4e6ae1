"""Resolve a model reference, read its weights once per process, hand out fresh copies.

Each case must start from the pretrained weights, never from another case's
fine-tuned ones; reading the checkpoint for every case would dominate short
runs, so a pristine template stays in memory and each case gets a deep copy
with a freshly seeded classification head.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Iterator

from flexharness.engine import hub, pooling as pooling_mod
from flexharness.errors import ModelLoadError, first_line
from flexharness.files import path_fingerprint
from flexharness.suite.resources import is_pkg, resolve_pkg


def resolve_model(ref: str) -> str:
    """A local directory for pkg:// and paths; hub ids are returned as they are."""
    if is_pkg(ref):
        try:
            return str(resolve_pkg(ref))
        except FileNotFoundError as exc:
            raise ModelLoadError(f"model '{ref}': {exc}") from None
    path = Path(ref).expanduser()
    if path.exists():
        return str(path.resolve())
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelLoadError(f"model '{ref}': no such directory; pass --model a model directory, "
                             "a hub id or pkg://PACKAGE/PATH")
    return ref


def model_identity(ref: str) -> dict[str, Any] | None:
    """Local folders (and pkg://) by their files' contents; hub ids by id and the commit in the local hub cache.

    None when a hub model is not downloaded yet: there is nothing to look up,
    and the record is stored under the commit that the run downloads.
    """
    location = resolve_model(ref)
    if Path(location).is_dir():
        return {"files": path_fingerprint(Path(location))}
    revision = _hub_revision(location)
    return {"hub": location, "revision": revision} if revision else None


def _hub_revision(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent.name if isinstance(found, str) else None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Loading prints a load report and progress bars into pytest's output; keep it quiet."""
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(previous)
        logging.enable_progress_bar()


def _load_error(ref: str, exc: Exception) -> ModelLoadError:
    if "trust_remote_code" in str(exc):
        return ModelLoadError(f"model '{ref}' ships its own Python code, which flexharness does not run unless "
                              "you pass --flex-trust-remote-code; do that only for a model whose code you trust")
    reason = first_line(exc, type(exc).__name__).rstrip(".")
    if "Unrecognized configuration class" in reason and "AutoModelFor" in reason:
        head = reason[reason.index("AutoModelFor"):].split()[0].rstrip(".")
        return ModelLoadError(f"model '{ref}': transformers has no {head} for its architecture, so it cannot run "
                              "this task kind; pick a model whose architecture has that head (for multiple choice: "
                              "an encoder such as BERT, RoBERTa or MiniLM)")
    if Path(resolve_model(ref)).is_dir():
        return ModelLoadError(f"cannot load model '{ref}': {reason}. Check that the folder holds a model and "
                              "its tokenizer saved with save_pretrained() and that no file is damaged")
    message = (f"cannot load model '{ref}': {reason}{hub.note()}. Without network, save the model once with "
               "save_pretrained() and pass --model the local directory (or a pkg:// resource)")
    if hub.unreachable(exc):
        hub.go_offline()
    return ModelLoadError(message)


@functools.lru_cache(maxsize=4)
def load_tokenizer(ref: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    location = resolve_model(ref)
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise _load_error(ref, exc) from None
    return _with_padding(tokenizer, ref)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What decides a tokenizer's ids, by content rather than by name: a fast tokenizer's whole definition
    (vocabulary, normaliser, pre-tokeniser, post-processor), else its vocabulary and its init arguments with
    the files they name hashed; with its class and the library versions that run it."""
    import hashlib
    import json

    import tokenizers
    import transformers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:   # without the truncation and padding state that each call sets from its arguments
        found = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        definition = json.dumps(found, sort_keys=True)
    else:
        arguments = {name: path_fingerprint(Path(value)) if isinstance(value, str) and Path(value).is_file()
                     else value for name, value in tokenizer.init_kwargs.items()}
        definition = json.dumps([sorted(tokenizer.get_vocab().items()), arguments], sort_keys=True, default=str)
    parts = [type(tokenizer).__name__, tokenizer.truncation_side, transformers.__version__, tokenizers.__version__,
             definition]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _with_padding(tokenizer: Any, ref: str) -> Any:
    """Decoder LMs (GPT-2, Llama) ship no pad token: pad with the end-of-sequence token, on the right.

    Batches are padded on the right (``train.collate``) and the attention mask hides the padding, so a
    decoder's real tokens never see it; its classifier pools the last token that is not the pad token
    (``config.pad_token_id``, set to the same id in :func:`_template`).
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"model '{ref}': its tokenizer has neither a pad nor an end-of-sequence token, "
                                 "so batches cannot be padded; save the tokenizer with a pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


SEQUENCE_CLASSIFIER = "AutoModelForSequenceClassification"


def pooling_of(asked: str, ref: str) -> str:
    """The pooling a case asking ``asked`` trains for ``ref`` (``engine.pooling``): recorded in every record."""
    return pooling_mod.resolved(asked, resolve_model(ref))


def pooling_key(asked: str, ref: str) -> str | None:
    """The pooling a result-cache key holds for ``ref``: None for the model's own head."""
    return pooling_mod.key_value(asked, resolve_model(ref))


@functools.lru_cache(maxsize=4)
def _template(ref: str, num_labels: int, trust_remote_code: bool, model_class: str = SEQUENCE_CLASSIFIER,
              pooling: str = "auto") -> tuple[Any, tuple[str, ...]]:
    """The pretrained model with a head for ``num_labels`` (of the transformers class ``model_class``, which a
    task kind names; a sequence classifier's reads ``pooling``), and the names of the head's parameters."""
    import transformers

    location = resolve_model(ref)
    try:
        with _quiet_transformers():
            model, info = getattr(transformers, model_class).from_pretrained(
                location, num_labels=num_labels, output_loading_info=True, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise _load_error(ref, exc) from None
    if model.config.pad_token_id is None:  # decoder classifiers pool the last token that is not padding
        model.config.pad_token_id = load_tokenizer(ref, trust_remote_code).pad_token_id
    model, pooled = (pooling_mod.pooled_head(model, pooling_of(pooling, ref)) if model_class == SEQUENCE_CLASSIFIER
                     else (model, ()))
    model.eval()
    return model, tuple(info.get("missing_keys", ())) + pooled


def fresh_model(ref: str, num_labels: int, seed: int, trust_remote_code: bool = False,
                model_class: str = SEQUENCE_CLASSIFIER, pooling: str = "auto") -> Any:
    """A copy of the pretrained weights with a head initialised from ``seed`` (a sequence classifier's reads
    ``pooling``)."""
    import copy

    import torch

    template, head_params = _template(ref, num_labels, trust_remote_code, model_class, pooling)
    model = copy.deepcopy(template)
    generator = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in head_params:
            if name not in params:
                continue
            param = params[name]
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
            else:
                param.zero_()
    return model


ENCODER_DECODER_ADVICE = ("flexharness fine-tunes encoders and decoder-only LMs as classifiers; pick an encoder "
                          "(BERT, RoBERTa, MiniLM) or a decoder LM (GPT-2, Llama, Qwen2, Mistral)")


def architecture(ref: str) -> dict[str, Any] | None:
    """The model's ``config.json`` (model type, encoder-decoder or not) without loading weights or torch;
    None when it is not on this machine yet (a hub model not downloaded)."""
    import json

    try:
        location = Path(resolve_model(ref))
    except ModelLoadError:
        return None
    config = location / "config.json" if location.is_dir() else _cached_hub_config(ref)
    try:
        found = json.loads(Path(config).read_text(encoding="utf-8")) if config else None
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _cached_hub_config(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid hub id: loading it will say so
        return None
    return found if isinstance(found, str) else None


def resolve_device(option: str) -> str:
    """``auto`` takes CUDA when present; ``cuda`` without a GPU is an error, not a silent CPU run.

    ``auto`` with a torch built for the CPU alone is ``cpu`` without importing torch: a run whose every item
    comes from the result cache then never pays torch's import (about 2 s)."""
    if option == "cpu" or (option == "auto" and cpu_only_torch()):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if option == "cuda":
        raise ModelLoadError("--flex-device cuda was given but no CUDA device is available; use auto or cpu")
    return "cpu"


@functools.lru_cache(maxsize=1)
def cpu_only_torch() -> bool:
    """True when the installed torch is a Linux or Windows build without CUDA, ROCm or XPU (``torch/version.py``
    says so), read without importing torch; False whenever that cannot be told for sure."""
    if sys.platform == "darwin":   # macOS builds have the MPS backend whatever version.py says
        return False
    try:
        spec = importlib.util.find_spec("torch")
        folders = list(spec.submodule_search_locations or ()) if spec else []
        text = (Path(folders[0]) / "version.py").read_text(encoding="utf-8") if folders else ""
    except (OSError, ImportError, ValueError, UnicodeDecodeError):
        return False
    backends = dict(re.findall(r"^(cuda|hip|xpu)\s*(?::[^=]*)?=\s*(.+?)\s*$", text, re.MULTILINE))
    return set(backends) == {"cuda", "hip", "xpu"} and all(value == "None" for value in backends.values())
