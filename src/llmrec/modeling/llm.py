"""The LLM recommender: a causal LM with item tokens, LoRA adapters, and a stable API over a run directory.

Public API (used by ``llmrec evaluate/recommend/compare`` and the HTTP server; keep stable):

    rec = load_run(run_dir)                       # -> LLMRecommender
    rec.catalog                                   # llmrec.data.Catalog of the run's prepared data
    rec.score(histories) -> Tensor [B, num_items] # float32 CPU, higher = more likely next; internal item ids
    rec.recommend(history, k=10, exclude_seen=True) -> list[tuple[int, float]]   # (item id, score), best first
    rec.generate(history, k=10, exclude_seen=True, do_sample=False) -> list[int] # constrained beam search

Only what changed is trained and saved: LoRA matrices on the attention (optionally MLP) projections and the item
tokens' embedding rows (peft ``trainable_token_indices``; for a tied LM head the output rows are the same
parameters, for an untied head its item rows are trainable too). All other base weights stay frozen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from llmrec.modeling.item_tokens import ItemVocab, is_tied
from llmrec.train import MASK_FILLS

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP_MODULES = ["gate_proj", "up_proj", "down_proj"]
RESIDUAL_BRANCH_OUTPUTS = ("o_proj", "down_proj")  # last projection of each attention / MLP branch (Llama family)


def apply_lora(
    model,
    vocab: ItemVocab,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_mlp: bool = False,
    train_item_tokens: bool = True,
):
    """Wrap ``model`` with peft LoRA on the attention projections (+MLP) and trainable item-token rows.

    Returns:
        the ``PeftModel``; only the adapter matrices and the item rows require grad.
    """
    from peft import LoraConfig, get_peft_model

    indices = list(range(vocab.first_id, vocab.end_id))
    tokens = None
    if train_item_tokens:
        embed_name = next(n for n, m in model.named_modules() if m is model.get_input_embeddings()).split(".")[-1]
        out = model.get_output_embeddings()
        if out is None or is_tied(model):
            tokens = indices
        else:
            out_name = next(n for n, m in model.named_modules() if m is out).split(".")[-1]
            tokens = {embed_name: indices, out_name: indices}
    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=ATTENTION_MODULES + (MLP_MODULES if target_mlp else []),
        trainable_token_indices=tokens,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _item_rows(layer: nn.Module, vocab: ItemVocab) -> torch.Tensor:
    """Effective item rows [N, D] of an embedding/linear layer, seen through a peft trainable-tokens wrapper."""
    adapter = getattr(layer, "token_adapter", None)
    if adapter is not None and not adapter.disable_adapters and adapter.active_adapters:
        name = adapter.active_adapters[0]
        src = adapter.tied_adapter or adapter
        if name in src.trainable_tokens_delta:
            idx = src.token_indices[name]
            if idx[0] == vocab.first_id and len(idx) == vocab.num_items and idx[-1] == vocab.end_id - 1:
                return src.trainable_tokens_delta[name]
    weight = layer.original_module.weight if hasattr(layer, "original_module") else layer.weight
    return weight[vocab.first_id : vocab.end_id]


def _add_branch_dropout(decoder: nn.Module, p: float) -> list:
    """Forward hooks applying dropout ``p`` (training mode only) to every attention/MLP branch output.

    Returns the hook handles. Raises ValueError when the decoder has no ``o_proj``/``down_proj`` modules.
    """

    def drop(module, args, output):
        return nn.functional.dropout(output, p, training=module.training)

    handles = [
        module.register_forward_hook(drop)
        for name, module in decoder.named_modules()
        if name.rsplit(".", 1)[-1] in RESIDUAL_BRANCH_OUTPUTS
    ]
    if not handles:
        raise ValueError(f"hidden_dropout needs {RESIDUAL_BRANCH_OUTPUTS} modules in the decoder; found none")
    return handles


class LowRankItemDelta(nn.Module):
    """A rank-``r`` correction of the item rows: ``delta = U @ V``, ``U`` [N, r] (zeros), ``V`` [r, D] (N(0, 1/r)).

    With ``U`` at zero the model starts exactly at its initial (title) rows. Each item owns only ``r`` free values
    (the rows of ``U``); ``V`` is a basis shared by all items. The ``1/sqrt(r)`` scale of ``V`` makes an Adam step
    on ``U`` move a row by about as much as a step on a free row would.
    """

    def __init__(self, num_items: int, rank: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        self.U = nn.Parameter(torch.zeros(num_items, rank))
        self.V = nn.Parameter(torch.randn(rank, dim, generator=generator) / rank**0.5)

    def forward(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The delta of items ``idx`` (any shape S, internal ids) as [*S, D]; of all items [N, D] when None."""
        u = self.U if idx is None else self.U[idx]
        return u @ self.V


class ItemLM(nn.Module):
    """The LM seen as a next-item model: decoder hidden states dotted with the item tokens' output rows.

    ``forward`` computes the summed next-item cross-entropy over the item-token vocabulary only, at every position
    flagged in ``target_mask`` (the hidden state *before* each flagged item token predicts it). Keeping the loss
    inside ``forward`` lets DDP/Accelerate wrap this module as a whole.

    Args:
        lm: the (peft-wrapped) causal LM.
        vocab: item token location.
        embed_dropout: dropout on the input embeddings during training (a regulariser for the item rows).
        item_mask_prob: while training, each history item token's input embedding is replaced with this probability
            (its target is kept). Unlike element-wise dropout this hides whole items, so a long training prefix
            can't be memorised as a user fingerprint (the item-masking augmentation of CL4SRec/BERT4Rec).
        item_mask_fill: what a hidden item's input becomes. ``mean``: the mean of the current item rows (detached),
            an "unknown item". ``zero``: a zero vector, as in the runs of 2026-11-28; beware that a zero vector at
            the first position stays exactly zero through every layer (RMSNorm, attention to itself, MLP of 0),
            and RMSNorm's backward at 0 multiplies the gradient by ~1/sqrt(eps) per norm: the gradient grows
            ~1000x per layer, reaching inf/NaN at >= 14 SmolLM2 layers (and distorting Adam's moments below).
        hidden_dropout: dropout on the output of every attention and MLP branch before it is added to the residual
            stream (SASRec's residual dropout), while training; applied by forward hooks on the branches' last
            projections (``o_proj``, ``down_proj``), so it needs a Llama-style module layout.
        label_smoothing: label smoothing of the next-item cross-entropy (spread over the item tokens only).
        item_delta_rank: 0, or the rank of a ``LowRankItemDelta`` added to the item rows (input and tied output);
            the peft item rows then stay frozen at their initial values. Needs a tied LM head. ``folded_item_delta``
            merges the delta into the peft rows (for saving: a saved run has plain rows and loads without it).
    """

    def __init__(
        self,
        lm,
        vocab: ItemVocab,
        embed_dropout: float = 0.0,
        item_mask_prob: float = 0.0,
        item_mask_fill: str = "mean",
        hidden_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        item_delta_rank: int = 0,
    ):
        super().__init__()
        if item_mask_fill not in MASK_FILLS:
            raise ValueError(f"item_mask_fill must be one of {MASK_FILLS}, got {item_mask_fill!r}")
        self.item_mask_fill = item_mask_fill
        self.lm, self.vocab = lm, vocab
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.item_mask_prob = item_mask_prob
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self.decoder = getattr(base, base.base_model_prefix)
        self.tied = bool(getattr(base.config, "tie_word_embeddings", False)) or base.get_output_embeddings() is None
        self._base = [base]  # list: not registered as a submodule twice
        self.label_smoothing = label_smoothing
        self._dropout_hooks = _add_branch_dropout(self.decoder, hidden_dropout) if hidden_dropout > 0 else []
        self.item_delta = None
        if item_delta_rank:
            if not self.tied:
                raise ValueError("item_delta_rank needs tied input/output item rows (untie_lm_head false)")
            rows = _item_rows(base.get_input_embeddings(), vocab)
            if not rows.requires_grad:
                raise ValueError("item_delta_rank needs the item rows as a peft trainable-tokens delta")
            rows.requires_grad_(False)
            gen = torch.Generator().manual_seed(0)
            self.item_delta = LowRankItemDelta(vocab.num_items, item_delta_rank, rows.shape[1], gen).to(rows.device)

    @contextmanager
    def folded_item_delta(self) -> Iterator[None]:
        """Within the block the peft item rows hold ``rows + delta`` and the delta is off (saving, ``generate``)."""
        if self.item_delta is None:
            yield
            return
        rows = _item_rows(self._base[0].get_input_embeddings(), self.vocab)
        delta, saved = self.item_delta, rows.detach().clone()
        with torch.no_grad():
            rows.add_(delta().to(rows.dtype))
        self.item_delta = None
        try:
            yield
        finally:
            self.item_delta = delta
            with torch.no_grad():
                rows.copy_(saved)

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def item_weights(self) -> torch.Tensor:
        """Output rows of the item tokens, [num_items, D] (differentiable)."""
        base = self._base[0]
        layer = base.get_input_embeddings() if self.tied else base.get_output_embeddings()
        rows = _item_rows(layer, self.vocab)
        return rows if self.item_delta is None else rows + self.item_delta().to(rows.dtype)

    def hide_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: the item tokens to hide in this training forward pass (each with ``item_mask_prob``)."""
        draw = torch.rand(input_ids.shape, device=input_ids.device)
        return self.vocab.is_item(input_ids) & (draw < self.item_mask_prob)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final (normed) decoder hidden states [B, L, D]; right padding keeps positions 0.. for real tokens."""
        embedding = self._base[0].get_input_embeddings()
        embeds = embedding(input_ids)
        if self.item_delta is not None:
            idx = (input_ids - self.vocab.first_id).clamp(0, self.vocab.num_items - 1)
            embeds = embeds + self.item_delta(idx).to(embeds.dtype) * self.vocab.is_item(input_ids).unsqueeze(-1)
        embeds = self.embed_dropout(embeds)
        if self.training and self.item_mask_prob > 0:
            hide = self.hide_mask(input_ids)
            if self.item_mask_fill == "zero":
                embeds = embeds.masked_fill(hide.unsqueeze(-1), 0.0)
            else:
                rows = _item_rows(embedding, self.vocab) if self.item_delta is None else self.item_weights()
                fill = rows.detach().mean(0)  # [D]
                embeds = torch.where(hide.unsqueeze(-1), fill.to(embeds.dtype), embeds)
        return self.decoder(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor):
        """Summed cross-entropy and target count.

        Args:
            input_ids, attention_mask: [B, L], right-padded.
            target_mask: [B, L] bool, True at positions holding an item token to predict (never position 0).

        Returns:
            ``(loss_sum, num_targets)``.
        """
        hidden = self.hidden_states(input_ids, attention_mask)  # [B, L, D]
        tmask = target_mask[:, 1:]
        h = hidden[:, :-1][tmask]  # [T, D], the state before each target token
        targets = input_ids[:, 1:][tmask] - self.vocab.first_id  # [T]
        logits = h.float() @ self.item_weights().float().T  # [T, N]
        loss = nn.functional.cross_entropy(logits, targets, reduction="sum", label_smoothing=self.label_smoothing)
        return loss, targets.numel()


class LLMRecommender:
    """Recommendations from an ``ItemLM`` + prompt encoder + catalog (what ``load_run`` returns).

    Args:
        item_lm: the model.
        encoder: ``llmrec.prompts.PromptEncoder`` turning histories into token ids.
        tokenizer: tokenizer with the item tokens.
        catalog: the run's ``Catalog``.
        batch_size: prompts per forward pass in ``score``.
        name: display name (the run directory's name for ``load_run``).
        data: the run's ``PreparedData`` (set by ``load_run``).
    """

    def __init__(
        self, item_lm: ItemLM, encoder, tokenizer, catalog, batch_size: int = 64, name: str = "llm", data=None
    ):
        self.item_lm, self.encoder, self.tokenizer, self.catalog = item_lm, encoder, tokenizer, catalog
        self.data = data  # the run's PreparedData when loaded with load_run (None otherwise)
        self.batch_size, self.name = batch_size, name
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def num_items(self) -> int:
        return self.item_lm.vocab.num_items

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores of every item as the next one after each history: ``[B, num_items]`` float32 on CPU.

        Histories are lists of internal item ids, oldest first (an empty history is allowed). Seen items are not
        masked here; the evaluator (or ``recommend``) does that.
        """
        return self._score_token_ids([self.encoder.encode(h) for h in histories])

    def _score_token_ids(self, prompts: list[list[int]]) -> torch.Tensor:
        from llmrec.decoding import score_prompts

        prompts = [p or [self.pad_id] for p in prompts]
        was_training = self.item_lm.training
        self.item_lm.eval()
        try:
            return score_prompts(self.item_lm, prompts, self.pad_id, self.batch_size)
        finally:
            self.item_lm.train(was_training)

    def score_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Scores ``[B, num_items]`` for ready-made prompt strings (item tokens written as ``<|item_i|>``).

        The prompt is tokenized as is (no template, no truncation); the next token after it is scored over the
        item tokens only.
        """
        return self._score_token_ids([self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts])

    def recommend(self, history: Sequence[int], k: int = 10, exclude_seen: bool = True) -> list[tuple[int, float]]:
        """Top ``k`` next items for one history: ``[(item_id, score), ...]`` best first (fast path)."""
        from llmrec.decoding import mask_items, top_k

        scores = mask_items(self.score([history]), [history] if exclude_seen else None)
        items, values = top_k(scores, k)
        return list(zip(items[0], values[0]))

    def generate(
        self, history: Sequence[int], k: int = 10, exclude_seen: bool = True, do_sample: bool = False
    ) -> list[int]:
        """Top ``k`` items by constrained beam search (or ``k`` samples); same top K as ``recommend``."""
        from llmrec.decoding import generate_items

        self.item_lm.eval()
        with self.item_lm.folded_item_delta():  # generate runs the LM itself: its rows must include the delta
            return generate_items(
                self.item_lm.lm,
                self.item_lm.vocab,
                [self.encoder.encode(history)],
                self.pad_id,
                k=k,
                do_sample=do_sample,
                exclude=[history] if exclude_seen else None,
            )[0]


def load_run(
    run_dir: str | Path, device: str | None = None, batch_size: int = 64, merge: bool = True
) -> LLMRecommender:
    """Load a run directory written by ``llmrec train`` (``run.json`` kind ``llm``).

    Reads ``config.yaml`` (base model, layers, prompt settings), ``tokenizer/``, ``adapter/`` and ``prompt.txt``,
    and the prepared data named in ``run.json`` for the catalog. The base model must be loadable offline.
    With ``merge`` (default) the LoRA matrices and item rows are merged into the base weights for inference: same
    scores (to float rounding), about 3x faster per request on CPU than running through the peft wrappers.

    Raises:
        FileNotFoundError: a required file of the run is missing.
        ValueError: the run is not an LLM run.
    """
    import yaml
    from peft import PeftModel

    from llmrec.data.dataset import load_prepared
    from llmrec.modeling.item_tokens import find_item_vocab, resize_for_items
    from llmrec.modeling.lm import load_causal_lm, load_tokenizer
    from llmrec.prompts import PromptEncoder, parse_template

    run = Path(run_dir)
    for name in ("run.json", "config.yaml", "prompt.txt", "tokenizer", "adapter"):
        if not (run / name).exists():
            raise FileNotFoundError(f"{run} is not a complete LLM run directory: {name} is missing")
    info = json.loads((run / "run.json").read_text())
    if info.get("kind") != "llm":
        raise ValueError(f"{run}/run.json: kind is {info.get('kind')!r}, expected 'llm'")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data = load_prepared(info["data"])
    lm, _ = load_causal_lm(
        cfg["model"],
        num_layers=cfg.get("num_layers"),
        dtype=cfg.get("dtype", "float32"),
        trust_remote_code=cfg.get("trust_remote_code", False),
        untie_lm_head=cfg.get("untie_lm_head", False),
    )
    tokenizer = load_tokenizer(str(run / "tokenizer"))
    vocab = find_item_vocab(tokenizer, data.num_items)
    resize_for_items(lm, vocab)
    lm = PeftModel.from_pretrained(lm, str(run / "adapter"), is_trainable=False)
    if merge and not getattr(lm, "is_loaded_in_4bit", False):
        lm = lm.merge_and_unload()
    item_lm = ItemLM(lm, vocab).eval()
    if device:
        item_lm.to(device)
    template = parse_template((run / "prompt.txt").read_text(encoding="utf-8"), cfg.get("prompt", "prompt"))
    encoder = PromptEncoder(
        template, tokenizer, vocab, data.catalog, cfg.get("max_history", 20), cfg.get("max_prompt_tokens")
    )
    return LLMRecommender(item_lm, encoder, tokenizer, data.catalog, batch_size=batch_size, name=run.name, data=data)
