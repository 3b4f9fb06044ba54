"""Item text embeddings (cached), and the maps that turn them into rows of the LM's embedding space.

**Item text.** ``item_text(title, text)``: the catalog's title, then its extra text (``Catalog.texts``, e.g.
MovieLens' ``"Genres: Comedy, Drama"``), each with runs of whitespace collapsed and stripped; joined by ``". "``, or
by ``" "`` when the title already ends in ``.``, ``!`` or ``?``; an empty part is left out, so an item with neither
has the empty text and no embedding (it falls back like an untitled item in the title init). E.g.
``("Toy Story (1995)", "Genres: Animation")`` -> ``"Toy Story (1995). Genres: Animation"``.

**Encoders** are ``llmrec.items.text_models.TEXT_ENCODERS`` (``minilm``, ``lm``).

**Cache.** ``item_text_embeddings`` stores the pooled vectors as safetensors at
``<cache>/item_text/<fingerprint[:16]>-<encoder>[-<model key>].safetensors`` (``<cache>`` is the llmrec cache root,
``$LLMREC_CACHE`` or ``~/.cache/llmrec/models``; the model key, for ``lm`` only, is the embedded model's name, or a
local directory's name plus a hash of its path and weight files' sizes and times). The key is the data
fingerprint (``PreparedData.fingerprint``: catalog titles and texts included) + the encoder (+ its model); the
file's metadata repeats the full fingerprint, encoder, model and text-rule version and is checked on load, so a
stale or foreign file is recomputed, never used. Written atomically (``llmrec.files``).

**Rows from embeddings** (``text_rows``). The embeddings ``X`` [N, E] and the title-mean rows ``Y`` [N, D] of the
same items (``llmrec.items.init``) are both centred on the items that have a text and title tokens (``fit`` items);
a linear map ``W`` [E, D] takes the centred text embeddings into the centred row space:

    rows = mean(Y_fit) + s * C[(X - mean(X_fit)) W]

where ``C`` centres again over the items with a text and ``s`` makes the mean norm of that part equal to that of
the centred title rows. The rows thus sit around the centre of the LM's own title rows, with the title rows'
spread, arranged by the text encoder. Both the centring and the scale matter: for SmolLM2-135M the mean-pooled
last hidden states (``lm``) have norm ~42 against ~1.1 for the title-mean input rows, and they share one
direction (mean pairwise cosine 0.92 on 400 Beauty items), so only their centred part tells items apart; MiniLM
vectors are unit norm, the title rows' centred spread is ~0.63. ``W`` (``TEXT_PROJECTIONS``,
``--item_text_projection``):

- ``orthonormal`` (the default): a fixed, seeded map with orthonormal rows [E, D] (the identity when ``E == D``,
  e.g. the ``lm`` encoder): it keeps the encoder's geometry exactly (inner products up to the common scale
  ``s``), like the co-occurrence factors' map; the directions are arbitrary for the LM when ``E != D``.
- ``ridge``: ridge least squares from the centred embeddings to the centred title rows of the fit items,
  ``W = (Xc^T Xc + lam I)^-1 Xc^T Yc`` with ``lam = 0.01 * trace(Xc^T Xc) / E``, cross-fitted: the fit items are
  split into 5 seeded folds and each fold's rows come from the map fitted on the other four (items with a text but
  no title tokens use the map fitted on all), so a row is the text's prediction of its title row, never a copy of
  it (with fewer items than text dimensions a map fitted on all items reproduces the title rows). It puts each
  text direction where the LM's embeddings of the words that carry it lie.

Why ``orthonormal`` is the default: on Amazon Beauty the share of items whose 10 nearest neighbours (cosine)
include an item they co-occur with in training is 0.530 for the MiniLM vectors, 0.532 for their ``orthonormal``
rows, 0.439 for the title-mean rows and 0.413 for the ``ridge`` rows (0.035 by chance): the least-squares map
keeps what the text shares with the bag of title tokens (out-of-fold R^2 0.42) and loses the rest of what MiniLM
adds. Which starts training better is for the full-validation comparison to say.

With no fit item (no item has title tokens) ``ridge`` cannot be fitted: the rows then use ``orthonormal`` around
the mean of the text vocabulary, with the spread of the text vocabulary rows (a log warning says so).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from llmrec.files import atomic_write_bytes
from llmrec.items.text_models import TEXT_ENCODERS, EncoderSpec, build_encoder

logger = logging.getLogger(__name__)

TEXT_RULE_VERSION = "1"  # bump when item_text() changes: it is part of every cache file's metadata
RIDGE_ALPHA = 0.01  # lam = RIDGE_ALPHA * mean eigenvalue of Xc^T Xc
RIDGE_FOLDS = 5  # out-of-fold predictions: an item's row never comes from a map fitted on its own title row
_SPACES = re.compile(r"\s+")


def item_text(title: str, text: str = "") -> str:
    """The text an item is encoded from: title and extra text (see the module docstring for the rule)."""
    title = _SPACES.sub(" ", title or "").strip()
    text = _SPACES.sub(" ", text or "").strip()
    if not (title and text):
        return title or text
    return f"{title}{' ' if title[-1] in '.!?' else '. '}{text}"


def item_texts(titles: Sequence[str], texts: Sequence[str] | None = None) -> list[str]:
    """``item_text`` of every item (``texts`` may be empty: titles only)."""
    texts = list(texts or [""] * len(titles))
    if len(texts) != len(titles):
        raise ValueError(f"{len(titles)} titles but {len(texts)} texts")
    return [item_text(a, b) for a, b in zip(titles, texts)]


@dataclass
class TextEmbeddings:
    """Pooled text vectors of a catalog: ``vectors`` [N, E] float32 (zero where ``has`` [N] bool is False)."""

    vectors: torch.Tensor
    has: torch.Tensor
    encoder: str
    model: str = ""

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def model_key(model: str) -> str:
    """Short, file-name-safe id of a ``--model`` value for the ``lm`` cache key (see the module docstring)."""
    path = Path(model)
    if path.is_dir():
        h = hashlib.sha256(str(path.resolve()).encode())
        for f in sorted(path.iterdir()):
            if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        name, digest = path.resolve().name, h.hexdigest()[:12]
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:40]}-{digest}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model)[:80]


def cache_path(cache_dir: Path, fingerprint: str, spec: EncoderSpec) -> Path:
    """Where the embeddings of data ``fingerprint`` under ``spec`` are cached."""
    suffix = f"-{model_key(spec.model)}" if spec.name == "lm" else ""
    return Path(cache_dir) / "item_text" / f"{fingerprint[:16]}-{spec.name}{suffix}.safetensors"


def _metadata(fingerprint: str, spec: EncoderSpec) -> dict[str, str]:
    return {
        "fingerprint": fingerprint,
        "encoder": spec.name,
        "model": model_key(spec.model) if spec.name == "lm" else "",
        "text_rule": TEXT_RULE_VERSION,
    }


def _load_cached(path: Path, meta: dict[str, str], num_items: int) -> TextEmbeddings | None:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = f.metadata() or {}
            vectors, has = f.get_tensor("vectors"), f.get_tensor("has").bool()
    except (OSError, SafetensorError) as e:  # a truncated or foreign file: recompute it
        logger.warning("ignoring unreadable item text cache %s (%s)", path, e)
        return None
    if any(stored.get(k) != v for k, v in meta.items()) or vectors.shape[0] != num_items:
        logger.warning("item text cache %s is for other data or another encoder; recomputing", path)
        return None
    return TextEmbeddings(vectors.float(), has, meta["encoder"], meta["model"])


def item_text_embeddings(
    titles: Sequence[str],
    texts: Sequence[str] | None,
    fingerprint: str,
    spec: EncoderSpec,
    progress: bool = True,
) -> TextEmbeddings:
    """The pooled text embeddings of every item, from the cache or computed (and cached) once.

    Args:
        titles, texts: the catalog's columns (``Catalog.titles``, ``Catalog.texts``).
        fingerprint: the data fingerprint (``PreparedData.fingerprint``), the cache key with the encoder.
        spec: the encoder (``llmrec.llm.build.text_encoder_spec`` makes one from a training config).
        progress: show a tqdm bar while encoding.

    Returns:
        ``TextEmbeddings``; items with an empty text get a zero vector and ``has`` False.

    Raises:
        ValueError: an unknown encoder name. ModelLoadError: the encoder cannot be loaded offline.
    """
    from safetensors.torch import save

    if spec.name not in TEXT_ENCODERS:
        raise ValueError(f"item_text_encoder: expected one of {tuple(TEXT_ENCODERS)}, got {spec.name!r}")
    joined = item_texts(titles, texts)
    path, meta = cache_path(spec.cache_dir, fingerprint, spec), _metadata(fingerprint, spec)
    cached = _load_cached(path, meta, len(joined))
    if cached is not None:
        return cached
    idx = [i for i, t in enumerate(joined) if t]
    has = torch.zeros(len(joined), dtype=torch.bool)
    has[idx] = True
    encoder = build_encoder(spec)
    vectors = torch.zeros(len(joined), encoder.dim, dtype=torch.float32)
    if idx:
        vectors[idx] = encoder.encode([joined[i] for i in idx], progress=progress, desc=f"encode items ({spec.name})")
    del encoder  # free the encoder's weights before the training model is built
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    atomic_write_bytes(path, save({"vectors": vectors.contiguous(), "has": has.to(torch.uint8)}, metadata=meta))
    logger.info("cached %d item text embeddings (%s) at %s", len(idx), spec.name, path)
    return TextEmbeddings(vectors, has, meta["encoder"], meta["model"])


def encode_item_texts(encoder, titles: Sequence[str], texts: Sequence[str] | None = None) -> TextEmbeddings:
    """Text embeddings of items outside a cached catalog (``add_items``), with a loaded encoder
    (``llmrec.items.text_models.build_encoder``): the same ``item_text`` rule and pooling as
    ``item_text_embeddings``; an item with an empty text gets a zero vector and ``has`` False."""
    joined = item_texts(titles, texts)
    idx = [i for i, t in enumerate(joined) if t]
    vectors = torch.zeros(len(joined), encoder.dim, dtype=torch.float32)
    has = torch.zeros(len(joined), dtype=torch.bool)
    if idx:
        vectors[idx] = encoder.encode([joined[i] for i in idx], progress=False)
        has[idx] = True
    return TextEmbeddings(vectors, has, "", "")


# --- text embeddings -> rows -------------------------------------------------------------------------------------


def ridge_map(xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """[E, D] ridge least-squares map from centred ``xc`` [M, E] to centred ``yc`` [M, D] (float64 solve)."""
    x, y = xc.double(), yc.double()
    gram = x.T @ x
    lam = RIDGE_ALPHA * float(gram.trace()) / max(x.shape[1], 1) + 1e-12
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram + lam * eye, x.T @ y).float()


def orthonormal_map(e: int, d: int, seed: int = 0) -> torch.Tensor:
    """[E, D] fixed map with orthonormal rows (E <= D) or columns (E > D); the identity when E == D."""
    if e == d:
        return torch.eye(e)
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(e, d), min(e, d), generator=gen))  # orthonormal columns
    return q.T if e < d else q


def _ridge(xc: torch.Tensor, yc: torch.Tensor, fit: torch.Tensor, seed: int) -> torch.Tensor:
    """Out-of-fold ridge predictions for the fit items, the all-fit-items map for the others."""
    part = xc @ ridge_map(xc[fit], yc[fit])
    idx = fit.nonzero().squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
    folds = min(RIDGE_FOLDS, len(idx))
    for k in range(folds):
        held = torch.zeros_like(fit)
        held[idx[k::folds]] = True
        part[held] = xc[held] @ ridge_map(xc[fit & ~held], yc[fit & ~held])
    return part


def _orthonormal(xc: torch.Tensor, yc: torch.Tensor, fit: torch.Tensor, seed: int) -> torch.Tensor:
    return xc @ orthonormal_map(xc.shape[1], yc.shape[1], seed)


# name -> (centred embeddings [N, E], centred title rows [N, D], fit items [N] bool, seed) -> centred rows [N, D].
TEXT_PROJECTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "orthonormal": _orthonormal,
    "ridge": _ridge,
}


def text_rows(
    emb: TextEmbeddings,
    title_rows: torch.Tensor,
    has_title: torch.Tensor,
    vocab_rows: torch.Tensor,
    projection: str = "orthonormal",
    seed: int = 0,
) -> torch.Tensor:
    """[N, D] float32 rows for the items with a text (``emb.has``); other rows are zero (the caller fills them).

    Args:
        emb: the items' text embeddings [N, E].
        title_rows: [N, D] title-mean rows of the weight being filled; ``has_title`` [N] marks the valid ones.
        vocab_rows: [V, D] the text vocabulary rows of the same weight (the reference when no item has a title).
        projection: a ``TEXT_PROJECTIONS`` name (see the module docstring).
    """
    if projection not in TEXT_PROJECTIONS:
        raise ValueError(f"item_text_projection: expected one of {tuple(TEXT_PROJECTIONS)}, got {projection!r}")
    x = emb.vectors.float().to(title_rows.device)
    has = emb.has.to(title_rows.device)
    fit = has & has_title.to(title_rows.device)
    if int(fit.sum()) >= 2:
        x_mean, y = x[fit].mean(0), title_rows[fit].float()
    else:
        if projection == "ridge":
            logger.warning("item_init text: no item has title tokens to fit the ridge map; using orthonormal")
        projection, y = "orthonormal", vocab_rows.float()
        x_mean = x[has].mean(0) if has.any() else torch.zeros_like(x[0])
    y_mean = y.mean(0)
    target = (y - y_mean).norm(dim=1).mean()  # the spread of the reference rows
    xc, yc = (x - x_mean).cpu(), (title_rows.float() - y_mean).cpu()
    # seed + 1: a random map independent of the co-occurrence factors' map (seeded with ``seed``)
    part = TEXT_PROJECTIONS[projection](xc, yc, fit.cpu(), seed + 1).to(x.device)  # [N, D]
    if has.any():  # out-of-fold predictions do not average to exactly zero: centre them again
        part = part - part[has].mean(0)
    spread = part[has].norm(dim=1).mean() if has.any() else torch.tensor(0.0)
    scale = target / spread if spread > 0 else torch.tensor(0.0)
    rows = y_mean + part * scale
    return torch.where(has.unsqueeze(1), rows, torch.zeros_like(rows))
