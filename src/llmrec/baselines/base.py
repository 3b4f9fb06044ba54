"""What every sequence baseline shares: padding conventions, tied item embeddings, scoring, the training loss.

Conventions: internal item ids are ``0..num_items-1``; id ``num_items`` is padding and (BERT4Rec only)
``num_items + 1`` is the mask token. Sequences are right-padded, so with a causal model the real positions never
attend to padding, and positions count from the oldest item of the (truncated) window.

Losses (``token_loss``): "ce" full softmax, "bce" one uniform negative per position, "sampled" the sampled softmax
of eSASRec (``NegativeSampler``, ``sampled_softmax_loss``).

Cold-start items (``SequenceModel.set_cold_items``, from ``PreparedData.cold_items``) never reach training: they are
in no training sequence (``PreparedData.train_sequences``), their logits are left out of the full softmax (set to
``-inf``, so their rows get exactly zero gradient), and no negative is ever drawn among them ("bce" and
``NegativeSampler``). Scoring still covers every item; a cold item's row is the mean of the warm rows
(``fill_cold_rows``, the honest fallback of an ID model for an item it has never seen: no interaction says anything
about it, so it scores like an average item), and an item added later (``add_items``) gets the same row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmrec.batching import pad_sequences


@dataclass
class ModelArgs:
    """Architecture hyper-parameters shared by the neural baselines (a view of ``BaselineConfig``)."""

    num_items: int
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.5
    max_len: int = 50
    mask_prob: float = 0.2  # BERT4Rec only


LENGTH_GROUP = 256  # rows per length group in SequenceModel.history_hidden


def right_pad(seqs: Sequence[Sequence[int]], max_len: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last ``max_len`` items of each sequence and right-pad: ``([B, L], lengths [B])``, L = longest kept."""
    items, mask = pad_sequences(seqs, pad, max_len=max_len)
    return items, mask.sum(1)


class SequenceModel(nn.Module):
    """A next-item model over a catalog: ``score(histories) -> [B, num_items]`` and a training ``loss``.

    Subclasses implement ``encode(items [B, L]) -> hidden [B, L, D]`` and set ``self.item_emb`` (an embedding with
    at least ``num_items + 1`` rows whose first ``num_items`` rows double as the output layer).
    """

    causal: bool = True

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.num_items = args.num_items
        self.pad_id = args.num_items
        self.cold_items: torch.Tensor | None = None  # [C] item ids training never sees (None: every item is warm)

    def set_cold_items(self, items) -> None:
        """Leave ``items`` out of every training softmax and negative (see the module docstring); ``()``: none."""
        cold = sorted({int(i) for i in items})
        if cold and (cold[0] < 0 or cold[-1] >= self.num_items or len(cold) == self.num_items):
            raise ValueError(f"cold items must be some (not all) of the ids 0..{self.num_items - 1}")
        self.cold_items = torch.tensor(cold, dtype=torch.long) if cold else None

    def warm_items(self) -> torch.Tensor:
        """``[W]`` the item ids training may use (every item without cold items)."""
        keep = torch.ones(self.num_items, dtype=torch.bool)
        if self.cold_items is not None:
            keep[self.cold_items] = False
        return keep.nonzero().squeeze(1)

    @property
    def device(self) -> torch.device:
        return self.item_emb.weight.device

    def item_row_params(self) -> list[torch.Tensor]:
        """The per-item parameters, item ids as the first dimension: the item embeddings (rows ``0..N-1``)."""
        return [self.item_emb.weight]

    @torch.no_grad()
    def fill_cold_rows(self) -> None:
        """Set every cold item's row (and per-item bias) to the mean of the warm ones, in place."""
        if self.cold_items is None:
            return
        warm = self.warm_items()
        for p in self.item_row_params():
            cold, rows = self.cold_items.to(p.device), p[warm.to(p.device)]
            p[cold] = rows.mean(0).to(p.dtype)

    @torch.no_grad()
    def add_items(self, count: int) -> list[int]:
        """Append ``count`` items (ids ``num_items..``), each with the mean of the current item rows (and biases).

        After training the cold rows already hold the mean of the warm rows (``fill_cold_rows``), so the mean of
        all rows is the mean of the warm rows. Padding (and BERT4Rec's mask token) move up behind the new items.
        """
        n = self.num_items
        old = self.item_emb
        rows = old.weight[:n]
        extra = old.weight[n:]  # padding (and the mask token)
        new = rows.mean(0, keepdim=True).expand(count, -1)
        emb = nn.Embedding(n + count + len(extra), old.embedding_dim, padding_idx=n + count)
        emb = emb.to(device=old.weight.device, dtype=old.weight.dtype)
        emb.weight.copy_(torch.cat([rows, new, extra]))
        self.item_emb = emb
        self.num_items = self.args.num_items = n + count
        self.pad_id = n + count
        return list(range(n, n + count))

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every real item: ``[..., D] -> [..., num_items]`` (output layer tied to the item embeddings)."""
        return hidden @ self.item_emb.weight[: self.num_items].T

    def candidate_logits(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of some items only, as ``logits`` would give them: ``hidden [T, D]`` with ``items`` ``[T, K]`` (a
        row of candidates per target) or ``[K]`` (the same candidates for every target) -> ``[T, K]``."""
        emb = self.item_emb.weight[items]  # [T, K, D] or [K, D]
        if items.dim() == 1:
            return hidden @ emb.T
        return torch.einsum("td,tkd->tk", hidden, emb)

    def history_hidden(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Hidden state that predicts the item after each history: ``[B, D]``.

        A causal model encodes the histories in groups of similar length, each right-padded to its own longest
        (``LENGTH_GROUP`` rows): a real position never sees the padding after it, so a row's last hidden state does
        not depend on its group, and a batch of mostly short histories (Beauty: mean 8.9 items, max_len 50) does not
        pay for its longest one.
        """
        if not self.causal:
            return self._last_hidden(histories)
        order = sorted(range(len(histories)), key=lambda i: min(len(histories[i]), self.args.max_len))
        out = None
        for lo in range(0, len(order), LENGTH_GROUP):
            rows = order[lo : lo + LENGTH_GROUP]
            hidden = self._last_hidden([histories[i] for i in rows])  # [G, D]
            if out is None:
                out = hidden.new_empty(len(histories), hidden.shape[1])
            out[torch.as_tensor(rows, device=hidden.device)] = hidden
        return out if out is not None else self._last_hidden(histories)

    def _last_hidden(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[B, D]``: the hidden state at each history's last position, the batch right-padded to its longest."""
        items, lengths = right_pad(histories, self.args.max_len, self.pad_id)
        items = items.to(self.device)
        hidden = self.encode(items)  # [B, L, D]
        last = (lengths.clamp(min=1) - 1).to(items.device)
        return hidden[torch.arange(len(items), device=items.device), last]

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores over the whole catalog for the next item of each history, ``[B, num_items]``."""
        was_training = self.training
        self.eval()
        try:
            return self.logits(self.history_hidden(histories))
        finally:
            self.train(was_training)

    def loss(
        self,
        seqs: Sequence[Sequence[int]],
        loss_type: str,
        generator: torch.Generator,
        sampler: NegativeSampler | None = None,
    ) -> torch.Tensor:
        """Next-item loss on every position of each training sequence (input ``items[:t]`` predicts ``items[t]``).

        ``loss_type`` "ce": full softmax over all items; "bce": one uniformly sampled negative per position;
        "sampled": sampled softmax with the negatives of ``sampler``.
        """
        items, _ = right_pad(seqs, self.args.max_len + 1, self.pad_id)
        items = items.to(self.device)
        inputs, labels = items[:, :-1], items[:, 1:]
        hidden = self.encode(inputs)  # [B, L, D]
        return token_loss(self, hidden, labels, loss_type, generator, sampler)


def token_loss(
    model: SequenceModel,
    hidden: torch.Tensor,
    labels: torch.Tensor,
    loss_type: str,
    generator: torch.Generator,
    sampler: NegativeSampler | None = None,
) -> torch.Tensor:
    """Loss of predicting ``labels`` (``[B, L]``, pad = ignore) from ``hidden`` ``[B, L, D]``; logits only where needed.

    ``sampler`` is required by (and only used by) ``loss_type`` "sampled".
    """
    keep = labels != model.pad_id
    h = hidden[keep]  # [T, D]
    y = labels[keep]  # [T]
    cold = model.cold_items
    if loss_type == "ce":
        logits = model.logits(h)  # [T, N]
        if cold is not None:  # out of the softmax: exactly zero gradient for the cold rows
            logits = logits.index_fill(1, cold.to(logits.device), float("-inf"))
        return F.cross_entropy(logits, y)
    if loss_type == "bce":
        if cold is None:
            neg = torch.randint(0, model.num_items, y.shape, generator=generator).to(y.device)
        else:
            warm = model.warm_items()
            neg = warm[torch.randint(0, len(warm), y.shape, generator=generator)].to(y.device)
        emb = model.item_emb.weight
        pos_logit = (h * emb[y]).sum(-1)
        neg_logit = (h * emb[neg]).sum(-1)
        return F.binary_cross_entropy_with_logits(
            pos_logit, torch.ones_like(pos_logit)
        ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
    if loss_type == "sampled":
        if sampler is None:
            raise ValueError("loss_type 'sampled' needs a NegativeSampler")
        return sampler.loss(model, h, y, generator)
    raise ValueError(f"loss_type must be 'ce', 'bce' or 'sampled', got {loss_type!r}")


@dataclass
class NegativeSampler:
    """The negatives of ``loss: sampled`` (eSASRec's sampled softmax) and its loss.

    As in the eSASRec benchmark (RecTools' ``sampled_softmax``: ``n_negatives`` uniform draws per target position, with
    replacement), every target position gets its own ``num_negatives`` negatives unless ``shared``, where one set of
    ``num_negatives`` is drawn per batch and used at every position (much less memory: logits ``[T, N]`` without
    gathering ``[T, N, D]`` embeddings). Negatives equal to the position's target (accidental hits) are masked out, as
    in the sampled-softmax code of Khrylchenko et al. (RecTools keeps them).

    Args:
        num_items: catalog size; negatives are real items ``0..num_items-1``.
        num_negatives: negatives per target position (per batch when ``shared``).
        probs: sampling distribution ``[num_items]`` (float64, sums to 1; e.g. training popularity); None: uniform.
        logq_correction: subtract ``log Q(j)`` (``Q = probs``, or ``1 / num_items`` when uniform) from every negative's
            logit; the positive's logit is left as it is (see ``sampled_softmax_loss``).
        shared: one set of negatives per batch instead of one per position.
        cold_items: item ids never drawn (cold-start items): uniform sampling draws among the others, a sampling
            distribution gets zero mass on them (renormalised); ``Q`` is the distribution actually sampled.
    """

    num_items: int
    num_negatives: int = 256
    probs: torch.Tensor | None = None
    logq_correction: bool = False
    shared: bool = False
    cold_items: Sequence[int] | None = None

    def __post_init__(self):
        cold = sorted({int(i) for i in self.cold_items or ()})
        self._warm = None  # [W] the ids uniform sampling draws from (None: all)
        if not cold:
            return
        keep = torch.ones(self.num_items, dtype=torch.bool)
        keep[cold] = False
        if not keep.any():
            raise ValueError("NegativeSampler: every item is cold, nothing to sample")
        if self.probs is None:
            self._warm = keep.nonzero().squeeze(1)
        else:
            probs = self.probs.double() * keep
            if not probs.sum() > 0:
                raise ValueError("NegativeSampler: the sampling distribution has no mass on a warm item")
            self.probs = probs / probs.sum()

    def sample(self, num_targets: int, generator: torch.Generator) -> torch.Tensor:
        """Negative item ids on the CPU: ``[num_targets, num_negatives]`` (``[num_negatives]`` when ``shared``)."""
        shape = (self.num_negatives,) if self.shared else (num_targets, self.num_negatives)
        if self.probs is None and self._warm is not None:
            return self._warm[torch.randint(0, len(self._warm), shape, generator=generator)]
        if self.probs is None:
            return torch.randint(0, self.num_items, shape, generator=generator)
        draws = torch.multinomial(self.probs, math.prod(shape), replacement=True, generator=generator)
        return draws.view(shape)

    def log_q(self, items: torch.Tensor) -> torch.Tensor:
        """``log Q(j)`` of each item id in ``items`` (same shape, float32)."""
        if self.probs is None:
            n = self.num_items if self._warm is None else len(self._warm)
            return torch.full(items.shape, -math.log(n))
        return self.probs.log().float()[items]

    def loss(self, model: SequenceModel, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sampled-softmax loss of the targets ``y`` ``[T]`` from their hidden states ``h`` ``[T, D]``."""
        neg = self.sample(len(y), generator)  # [T, N] or [N], CPU
        log_q = self.log_q(neg).to(h.device) if self.logq_correction else None
        neg = neg.to(y.device)
        pos_logit = model.candidate_logits(h, y[:, None])[:, 0]  # [T]
        neg_logit = model.candidate_logits(h, neg)  # [T, N]
        return sampled_softmax_loss(pos_logit, neg_logit, neg == y[:, None], log_q)


def sampled_softmax_loss(
    pos_logit: torch.Tensor, neg_logit: torch.Tensor, hits: torch.Tensor, neg_log_q: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over targets of ``-log softmax([s_pos, s_1 - log Q(j_1), ..., s_N - log Q(j_N)])[0]``.

    The positive is always in the softmax (it is not drawn from Q), so its logit is not corrected, as in the reference
    code of Khrylchenko et al., "Correcting the LogQ Correction" (RecSys 2025); Yi et al. (RecSys 2019) and TensorFlow's
    ``sampled_softmax_loss`` correct the true class too, and subtract log of the expected count ``N * Q(j)`` (a constant
    ``log N`` more than here). Accidental hits get ``-inf``, so they drop out of the softmax.

    Args:
        pos_logit: ``[T]`` logit of each target.
        neg_logit: ``[T, N]`` logits of its negatives.
        hits: ``[T, N]`` (or broadcastable) True where a negative is the target itself.
        neg_log_q: ``log Q`` of each negative (broadcastable to ``[T, N]``); None: no correction.
    """
    if neg_log_q is not None:
        neg_logit = neg_logit - neg_log_q
    neg_logit = neg_logit.masked_fill(hits, float("-inf"))
    logits = torch.cat([pos_logit[:, None], neg_logit], dim=1)  # [T, 1 + N], the positive at index 0
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
