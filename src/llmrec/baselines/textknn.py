"""TextKNN: the training-free content baseline (``llmrec baseline textknn``), the classic cold-start reference.

Score of item ``i`` for a history ``h``: the cosine between ``i``'s text embedding and the mean text embedding of
the last ``textknn_history`` items of ``h`` (``llmrec.items.neighbors.history_similarity``; ``llmrec.items.text``: ``item_text`` of title + text, encoded by
``--textknn_encoder``, ``minilm`` by default). Nothing is learned from the interactions, so an item no user has
touched (a cold item of ``llmrec prepare --cold_items``) is scored like any other, from its text alone.

- Items without text have no embedding: they score ``NO_TEXT_SCORE`` (-2, below every cosine), so they come last.
- History items without text add nothing to the mean; a history with no text item at all (or an empty one) scores
  every item with text 0: all tie, and the evaluator's pessimistic ties rank the target last.
- The cosine is scale-free, so the mean is taken as a sum of the unit rows (same direction).

What a run stores: the unit-norm embeddings ``[N, E]`` and ``last_k`` as buffers, saved in ``model.safetensors``
like Pop's counts (Beauty: 12,101 x 384 float32, 19 MB). A run is thus self-contained: ``recommend`` and
``serve`` need neither the text encoder nor its cache, and a later change of the encoder or its cache cannot change
a trained run's scores. ``fit_data`` computes the embeddings with ``item_text_embeddings``, cached by the data
fingerprint and the encoder. An item added later (``add_items``, e.g. through the HTTP service) is encoded with the
same encoder (``text_encoder_spec``) and scored like every other item, from its text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llmrec.baselines.base import ModelArgs
from llmrec.items.neighbors import DEFAULT_LAST_K, history_similarity

NO_TEXT_SCORE = -2.0  # below any cosine: items without a text embedding rank last
DEFAULT_HISTORY = DEFAULT_LAST_K


def text_encoder_spec(name: str):
    """The ``EncoderSpec`` of ``--textknn_encoder name`` (``lm``: llmrec's default base LM, every layer)."""
    from llmrec.items.text_models import EncoderSpec
    from llmrec.llm.loading import DEFAULT_MODEL, cache_root, load_causal_lm

    return EncoderSpec(name, cache_root(), model=DEFAULT_MODEL if name == "lm" else "",
                       load_lm=(lambda m: load_causal_lm(m, num_layers=None)) if name == "lm" else None)  # fmt: skip


class TextKNN(nn.Module):
    """Cosine between item text embeddings and the mean embedding of the last ``last_k`` history items."""

    trainable = False

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.num_items = args.num_items
        # [N, E] unit rows (zero: no text); E is the encoder's width, set by set_embeddings or by loading
        self.register_buffer("vectors", torch.zeros(args.num_items, 0))
        self.register_buffer("last_k", torch.tensor(DEFAULT_HISTORY, dtype=torch.int64))

    def fit(self, train_sequences: Sequence[Sequence[int]]) -> None:
        raise NotImplementedError(
            "textknn needs the catalog's texts, not only the training sequences: the trainer must call "
            "model.fit_data(data, cfg) (llmrec.baselines.train)"
        )

    def fit_data(self, data, cfg) -> None:
        """Embed the catalog of ``data`` (a ``PreparedData``) with ``cfg.textknn_encoder``; keep ``cfg.textknn_history``.

        Nothing of the interactions is used: the same catalog gives the same model, cold items or not.
        """
        from llmrec.items.text import item_text_embeddings

        spec = text_encoder_spec(cfg.textknn_encoder)
        emb = item_text_embeddings(data.catalog.titles, data.catalog.texts, data.fingerprint, spec)
        self.set_embeddings(emb.vectors, cfg.textknn_history)

    def set_embeddings(self, vectors: torch.Tensor, last_k: int = DEFAULT_HISTORY) -> None:
        """Use ``vectors`` [N, E] (a zero row: no text) and the last ``last_k`` history items."""
        if vectors.dim() != 2 or vectors.shape[0] != self.num_items:
            raise ValueError(f"vectors: expected [{self.num_items}, E], got {tuple(vectors.shape)}")
        if last_k < 1:
            raise ValueError(f"textknn_history: must be >= 1, got {last_k}")
        device = self.vectors.device
        self.vectors = F.normalize(vectors.float(), dim=1).to(device)  # zero rows stay zero
        self.last_k = torch.tensor(int(last_k), dtype=torch.int64, device=device)

    @torch.no_grad()
    def add_items(self, vectors: torch.Tensor) -> list[int]:
        """Append items with text embeddings ``vectors`` [M, E] (a zero row: no text); returns their ids."""
        if vectors.dim() != 2 or vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"vectors: expected [M, {self.vectors.shape[1]}], got {tuple(vectors.shape)}")
        n = self.num_items
        rows = F.normalize(vectors.float(), dim=1).to(self.vectors.device)
        self.vectors = torch.cat([self.vectors, rows])
        self.num_items = self.args.num_items = n + len(rows)
        return list(range(n, self.num_items))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the embedding width is the encoder's, known only from the saved tensor: take its shape before copying
        saved = state_dict.get(prefix + "vectors")
        if saved is not None and saved.dim() == 2 and saved.shape[0] == self.num_items:
            self.vectors = torch.empty_like(saved, device=self.vectors.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[B, num_items]`` cosine scores (``NO_TEXT_SCORE`` for items without text)."""
        scores = history_similarity(self.vectors, histories, int(self.last_k))
        has_text = self.vectors.abs().sum(1) > 0
        return scores.masked_fill(~has_text, NO_TEXT_SCORE)
