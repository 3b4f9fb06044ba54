"""The learned text map of ``--content_dropout``: item rows from item text, trained on the ranking loss itself.

The ridge text projector (``llmrec.items.projector``) is fitted *after* training, by least squares from text
embeddings to the trained rows; on Amazon Beauty it explains little of them (held-out R^2 0.03) and its rows rank
cold items far too low (docs/results.md, "Cold-start items"). ``--content_dropout P`` trains the same map
(``rows(x) = y_mean + (x - x_mean) W``, one per row set: ``input``, and ``output`` for an untied head) *with* the LM,
DropoutNet-style (Volkovs et al., NeurIPS 2017): at every training step each warm item with a text is "dropped"
with probability ``P`` (at least one item), and a dropped item's own rows are replaced by the map's rows of its
text, both where it is an input token and as its softmax column. So the map learns to produce rows that compete
in the same softmax as the trained rows, which is exactly what a cold item's row has to do. Cold items are never
dropped (they never reach training at all); at inference their rows are the map's rows of their text, written into
the model (``llmrec.llm.coldrows``) and saved as ``text_projector.safetensors`` in the projector format, so
``add_items`` and the server use it unchanged.

Shapes: ``N`` catalog items, ``E`` text-embedding size, ``D`` hidden size, ``M`` items dropped in one step.
"""

from __future__ import annotations

import torch
from torch import nn

from llmrec.items.projector import RidgeMap, TextProjector


class LearnedTextMap(nn.Module):
    """Trainable ``rows(x) = y_mean + (x - x_mean) W`` per row set, started from a fitted ``TextProjector``.

    Args:
        projector: the starting maps (``fit_projector`` on the initial rows of the warm items).
        vectors: ``[N, E]`` every catalog item's text embedding; ``has`` [N] bool: which have a text.
        droppable: ``[N]`` bool, the items a step may drop (warm items with a text).
        rate: ``P``, each droppable item's probability to be dropped in a step.
    """

    def __init__(self, projector: TextProjector, vectors: torch.Tensor, has: torch.Tensor, droppable: torch.Tensor,
                 rate: float):  # fmt: skip
        super().__init__()
        if not 0.0 < rate < 1.0:
            raise ValueError(f"content dropout rate must be in (0, 1), got {rate}")
        if not bool(droppable.any()):
            raise ValueError("content dropout needs at least one warm item with a text")
        self.encoder, self.model_key, self.rate = projector.encoder, projector.model, rate
        self.names = sorted(projector.maps)
        self.weight = nn.ParameterDict({n: nn.Parameter(projector.maps[n].weight.float().clone()) for n in self.names})
        self.y_mean = nn.ParameterDict({n: nn.Parameter(projector.maps[n].y_mean.float().clone()) for n in self.names})
        self.x_mean = {n: projector.maps[n].x_mean.float().clone() for n in self.names}  # fixed centring
        self.fallback = {n: projector.maps[n].fallback.float().clone() for n in self.names}
        # plain attributes, not buffers: DDP would broadcast an [N, E] buffer at every forward
        self.vectors, self.has = vectors.float().cpu(), has.bool().cpu()
        self.droppable = droppable.bool().cpu()
        self._pool = self.droppable.nonzero().squeeze(1)  # [P] the droppable item ids, drawn from at every step

    def draw(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[M]`` long, sorted: the items dropped in this step (each droppable one with ``rate``; ``M >= 1``)."""
        pool = self._pool
        keep = torch.rand(len(pool), generator=generator) < self.rate
        if not keep.any():  # never an empty step: every process must use the map's parameters (DDP)
            keep[torch.randint(len(pool), (1,), generator=generator)] = True
        return pool[keep]

    def rows(self, name: str, items: torch.Tensor) -> torch.Tensor:
        """``[M, D]`` the map's rows (differentiable) of ``items`` [M] under row set ``name``."""
        w = self.weight[name]
        x = self.vectors[items.cpu()].to(w.device) - self.x_mean[name].to(w.device)
        return self.y_mean[name] + x @ w

    def to_projector(self) -> TextProjector:
        """The current maps as a (detached) ``TextProjector``, for ``save_projector`` and ``add_items``."""
        maps = {
            n: RidgeMap(
                self.x_mean[n],
                self.weight[n].detach().float().cpu(),
                self.y_mean[n].detach().float().cpu(),
                self.fallback[n],
                alpha=0.0,
                heldout_r2=None,
            )  # fmt: skip
            for n in self.names
        }
        return TextProjector(maps, self.encoder, self.model_key, extra={"learned": True, "content_dropout": self.rate})
