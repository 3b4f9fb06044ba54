"""The text projector: a ridge map from item text embeddings to trained item rows, for items training never saw.

Fitted after (and during) training on the *warm* items, from their text embeddings ``X`` [M, E]
(``llmrec.items.text``, the run's ``--item_text_encoder``) to their trained rows ``Y`` [M, D] of one weight (the
input embeddings, and an untied head's output rows separately):

    rows(x) = mean(Y) + (x - mean(X)) W,    W = (Xc^T Xc + lam I)^-1 Xc^T Yc,    lam = alpha * trace(Xc^T Xc) / E

``Xc``, ``Yc`` centred. ``alpha`` is chosen from ``ALPHAS`` by one seeded held-out split of the fit items
(``HOLDOUT`` of them held out; the smallest held-out mean squared error wins), then ``W`` is refitted on all of them.
Closed form in float64 (an ``E x E`` solve: 384 x 384 for MiniLM). Items without text (a zero vector, ``has``
False) get ``fallback``: the mean of every warm row, text or not.

A cold-start item's rows are ``rows(its text embedding)`` (``llmrec.llm.coldrows``); an item added later
(``add_items``) gets the same from the same encoder. The projector is saved next to the adapter of an atomic run
as ``text_projector.safetensors``: per weight ``{name}.x_mean`` [E], ``{name}.weight`` [E, D], ``{name}.y_mean``
[D], ``{name}.fallback`` [D]; metadata: ``format``, ``encoder`` (the ``--item_text_encoder`` it expects), ``model``
(for ``lm``: the embedded model's key), and per weight the chosen ``alpha`` and the held-out R^2 (JSON ``fit``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llmrec.errors import DataError
from llmrec.files import atomic_write_bytes

PROJECTOR_FILE = "text_projector.safetensors"
FORMAT_VERSION = "1"
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
DEFAULT_ALPHA = 1e-2  # too few items to hold some out
HOLDOUT = 0.2
MIN_HOLDOUT_ITEMS = 10  # below this many fit items no split: DEFAULT_ALPHA


@dataclass
class RidgeMap:
    """``rows(x) = y_mean + (x - x_mean) @ weight``; ``fallback`` for an item without text."""

    x_mean: torch.Tensor  # [E]
    weight: torch.Tensor  # [E, D]
    y_mean: torch.Tensor  # [D]
    fallback: torch.Tensor  # [D]
    alpha: float = DEFAULT_ALPHA
    heldout_r2: float | None = None

    def rows(self, vectors: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        """``[M, D]`` float32 rows for text embeddings ``vectors`` [M, E] (``fallback`` where ``has`` is False)."""
        x = vectors.double().cpu()
        out = self.y_mean.double() + (x - self.x_mean.double()) @ self.weight.double()
        return torch.where(has.cpu().bool().unsqueeze(1), out, self.fallback.double()).float()


@dataclass
class TextProjector:
    """One ``RidgeMap`` per item row set (``input``, and ``output`` for an untied head) and the encoder it expects."""

    maps: dict[str, RidgeMap]
    encoder: str
    model: str = ""  # llmrec.items.text.model_key of the `lm` encoder's model ("" for minilm)
    extra: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(next(iter(self.maps.values())).weight.shape[0])


def _solve(xc: torch.Tensor, yc: torch.Tensor, alpha: float) -> torch.Tensor:
    gram = xc.T @ xc
    lam = alpha * float(gram.trace()) / max(xc.shape[1], 1) + 1e-12
    return torch.linalg.solve(gram + lam * torch.eye(xc.shape[1], dtype=xc.dtype), xc.T @ yc)


def _fit(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x_mean, y_mean = x.mean(0), y.mean(0)
    return x_mean, _solve(x - x_mean, y - y_mean, alpha), y_mean


def fit_ridge(x: torch.Tensor, y: torch.Tensor, seed: int = 0, alphas=ALPHAS) -> tuple:
    """``(x_mean, W, y_mean, alpha, held-out R^2 or None)`` of the ridge map ``x`` [M, E] -> ``y`` [M, D] (float64).

    ``alpha`` from ``alphas`` by one held-out split of ``HOLDOUT`` of the rows (seeded; ``DEFAULT_ALPHA`` and no R^2
    below ``MIN_HOLDOUT_ITEMS`` rows), then the map refitted on every row.
    """
    x, y = x.double().cpu(), y.double().cpu()
    if len(x) < 1:
        raise ValueError("the text projector needs at least one warm item with a text")
    alpha, r2 = DEFAULT_ALPHA, None
    if len(x) >= MIN_HOLDOUT_ITEMS:
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        k = max(1, round(HOLDOUT * len(x)))
        held, fit = perm[:k], perm[k:]
        base = ((y[held] - y[fit].mean(0)) ** 2).sum()  # the error of predicting the mean row
        best = None
        for a in alphas:
            xm, w, ym = _fit(x[fit], y[fit], a)
            err = ((ym + (x[held] - xm) @ w - y[held]) ** 2).sum()
            if best is None or err < best[0]:
                best = (err, a)
        alpha, r2 = best[1], float(1 - best[0] / base) if base > 0 else None
    x_mean, w, y_mean = _fit(x, y, alpha)
    return x_mean, w, y_mean, alpha, r2


def fit_projector(
    row_sets: dict[str, torch.Tensor],
    vectors: torch.Tensor,
    has: torch.Tensor,
    encoder: str,
    model: str = "",
    seed: int = 0,
) -> TextProjector:
    """Fit one ``RidgeMap`` per row set on the warm items given.

    Args:
        row_sets: name -> ``[M, D]`` trained rows of the warm items (``input``, ``output``).
        vectors: ``[M, E]`` their text embeddings; ``has`` [M] bool: which have a text (the others are not fitted,
            but count in the fallback row).
        encoder, model: the ``TextEmbeddings.encoder`` / ``.model`` the vectors come from.
        seed: the held-out split.
    """
    has = has.cpu().bool()
    maps = {}
    for name, rows in row_sets.items():
        y = rows.detach().double().cpu()
        x_mean, w, y_mean, alpha, r2 = fit_ridge(vectors[has], y[has], seed)
        maps[name] = RidgeMap(x_mean.float(), w.float(), y_mean.float(), y.mean(0).float(), alpha, r2)
    return TextProjector(maps, encoder, model)


def save_projector(projector: TextProjector, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/text_projector.safetensors`` atomically; returns its path."""
    from safetensors.torch import save

    tensors = {}
    for name, m in projector.maps.items():
        for part in ("x_mean", "weight", "y_mean", "fallback"):
            tensors[f"{name}.{part}"] = getattr(m, part).float().contiguous().cpu()
    fit = {name: {"alpha": m.alpha, "heldout_r2": m.heldout_r2} for name, m in projector.maps.items()}
    meta = {"format": FORMAT_VERSION, "encoder": projector.encoder, "model": projector.model, "fit": json.dumps(fit),
            "extra": json.dumps(projector.extra)}  # fmt: skip
    path = Path(out_dir) / PROJECTOR_FILE
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def load_projector(run_dir: str | os.PathLike) -> TextProjector | None:
    """The projector saved in ``run_dir`` (None when there is none).

    Raises:
        DataError: the file is unreadable or not a text projector (the message names it).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(run_dir) / PROJECTOR_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = list(f.keys())  # a safetensors handle, not a dict
            tensors = {k: f.get_tensor(k) for k in names}
        fit = json.loads(meta.get("fit", "{}"))
        maps = {}
        for name in sorted({k.split(".", 1)[0] for k in tensors}):
            parts = [tensors[f"{name}.{p}"] for p in ("x_mean", "weight", "y_mean", "fallback")]
            info = fit.get(name, {})
            maps[name] = RidgeMap(*parts, alpha=info.get("alpha", DEFAULT_ALPHA), heldout_r2=info.get("heldout_r2"))
    except (OSError, SafetensorError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a readable text projector ({e})") from None
    if meta.get("format") != FORMAT_VERSION or "input" not in maps or not meta.get("encoder"):
        raise DataError(f"{path}: not a text projector of format {FORMAT_VERSION} with an 'input' map and an encoder")
    return TextProjector(maps, meta["encoder"], meta.get("model", ""), extra=json.loads(meta.get("extra", "{}")))
