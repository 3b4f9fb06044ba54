"""TextTower: a content model trained on the interactions (``llmrec baseline texttower``), ``textknn`` made to learn.

``textknn`` scores item ``i`` for a history by ``cos(x_i, u)``, ``x_i`` the item's unit text embedding and ``u`` the
unit mean of the last ``textknn_history`` history items' embeddings: nothing is learned. TextTower keeps that query
and adds two residual MLP towers (width ``hidden_size``, dropout ``dropout``) and a temperature::

    score(i | history) = tau * (u + f(u)) . (x_i + g(x_i))

with the last layer of ``f`` and ``g`` zero at initialisation, so an untrained TextTower ranks exactly as
``textknn``. It trains like the ID baselines, next-item loss at every position of the training sequences (``loss:
ce``: softmax over the warm items; ``sampled`` works too), early stopping on validation. It has no per-item
parameter: an item's score depends on its text alone, so a cold-start item (``llmrec prepare --cold_items``; never an
input, target or negative in training) and an item added later (``add_items``, the HTTP service's ``POST /items``)
are scored like every other item with the same towers. Items without text have a zero embedding: key ``g(0)``.

Shapes: ``encode(items [B, L]) -> [B, L, E]`` (the query of each prefix, E = the encoder's width, 384 for MiniLM),
``logits(hidden [..., E]) -> [..., N]``. The towers are built when the embeddings are known (``set_embeddings``, or
loading a saved state, whose ``vectors`` give E).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmrec.baselines.base import ModelArgs, SequenceModel
from llmrec.baselines.textknn import DEFAULT_HISTORY, TextKNN

INITIAL_TAU = 20.0  # a cosine times 20: logits with a usable softmax from the first step


def _tower(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    tower = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
    nn.init.zeros_(tower[3].weight)
    nn.init.zeros_(tower[3].bias)
    return tower


class TextTower(SequenceModel):
    """Learned query and item towers on frozen text embeddings (module docstring)."""

    causal = True

    def __init__(self, args: ModelArgs):
        super().__init__(args)
        self.register_buffer("vectors", torch.zeros(args.num_items, 0))  # [N, E] unit rows (zero: no text)
        self.register_buffer("last_k", torch.tensor(DEFAULT_HISTORY, dtype=torch.int64))
        self.log_tau = nn.Parameter(torch.tensor(math.log(INITIAL_TAU)))
        self.query: nn.Module | None = None  # f, built with the embeddings' width
        self.key: nn.Module | None = None  # g

    def _build(self, dim: int) -> None:
        if self.query is None or self.query[0].in_features != dim:
            self.query = _tower(dim, self.args.hidden_size, self.args.dropout).to(self.vectors.device)
            self.key = _tower(dim, self.args.hidden_size, self.args.dropout).to(self.vectors.device)

    fit_data = TextKNN.fit_data  # embeds the catalog with cfg.textknn_encoder (cached), then set_embeddings

    def set_embeddings(self, vectors: torch.Tensor, last_k: int = DEFAULT_HISTORY) -> None:
        """Use ``vectors`` [N, E] (a zero row: no text) and the last ``last_k`` history items; builds the towers."""
        TextKNN.set_embeddings(self, vectors, last_k)
        self._build(self.vectors.shape[1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "vectors")  # the width is the encoder's: build the towers before copying
        if saved is not None and saved.dim() == 2:
            self.vectors = torch.empty_like(saved, device=self.vectors.device)
            self._build(saved.shape[1])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def item_row_params(self) -> list[torch.Tensor]:
        return []  # no per-item parameter: a cold item's score comes from its text (fill_cold_rows: nothing to do)

    @torch.no_grad()
    def add_items(self, vectors: torch.Tensor) -> list[int]:
        """Append items with text embeddings ``vectors`` [M, E] (a zero row: no text); returns their ids."""
        ids = TextKNN.add_items(self, vectors)
        self.pad_id = self.num_items
        return ids

    @property
    def device(self) -> torch.device:
        return self.log_tau.device

    def _check_built(self) -> None:
        if self.query is None:
            raise RuntimeError("TextTower: no text embeddings yet; call fit_data or set_embeddings first")

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """``[B, L] -> [B, L, E]``: at each position the tower query of the last ``last_k`` items up to it."""
        self._check_built()
        pad = torch.cat([self.vectors, self.vectors.new_zeros(1, self.vectors.shape[1])])
        rows = pad[items.clamp(max=self.num_items)]  # [B, L, E]; padding (id num_items) is a zero row
        total = rows.cumsum(dim=1)
        k = int(self.last_k)
        window = total - F.pad(total, (0, 0, k, 0))[:, : total.shape[1]]  # sum of the last k rows at each position
        u = F.normalize(window, dim=-1)
        return u + self.query(u)

    def keys(self) -> torch.Tensor:
        """``[N, E]`` the item tower of every item's text."""
        self._check_built()
        return self.vectors + self.key(self.vectors)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.log_tau.exp() * hidden @ self.keys().T

    def candidate_logits(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = self.keys()[items]  # [T, K, E] or [K, E]
        out = hidden @ keys.T if items.dim() == 1 else torch.einsum("te,tke->tk", hidden, keys)
        return self.log_tau.exp() * out
