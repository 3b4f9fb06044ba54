"""``LLMRecommender``: the inference interface of a trained LLM run, and ``load_llm_run`` to rebuild it.

rec = load_llm_run(run_dir)                   # LLMRecommender (llmrec.inference.Recommender)
rec.catalog                                   # the run's own Catalog (run_dir/catalog.parquet)
rec.score(histories) -> Tensor [B, N]         # float32 CPU, higher = more likely next; internal item ids
rec.score_text(prompts) -> Tensor [B, N]      # ready-made prompt strings (item tokens as <|item_i|>)
rec.generate(history, k) -> list[int]         # constrained beam search; the same top k as ``score``
rec.add_items(raw_ids, titles, texts) -> ids  # new items, scored at once (``llmrec.llm.additems``)

A semantic-ID run (``item_ids: semantic`` in its config.yaml) loads as a ``SemanticLLMRecommender``: the same
interface, but ``score`` is a beam search of width ``beam_width`` over the catalog's code trie
(``llmrec.llm.beam.beam_search_codes``: one prompt pass per history, the same search as
``llmrec.decoding.generate_items_by_codes``), turned into ``[B, N]`` scores by ``beam_score_matrix``: beam items
keep their beam scores (the sum of the per-level code log-probabilities), every other item gets one floor score
below them, so it ties last (the evaluator breaks ties pessimistically); with ``--text_fusion`` the beam items'
scores get the text term and the rest are ordered by it below them (``llmrec.llm.fusion``). ``protocol_note`` says
so, and the shared evaluator appends it to the protocol of every result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from peft import PeftModel

from llmrec.config import check_yaml_values, load_yaml
from llmrec.data import Catalog, DataError
from llmrec.decoding import BEAM_FLOOR, beam_score_matrix, generate_items, generate_items_by_codes
from llmrec.items.atomic import find_item_vocab, resize_for_items
from llmrec.items.neighbors import DEFAULT_LAST_K, ColdNeighbors, history_similarity, load_item_text
from llmrec.items.projector import load_projector
from llmrec.items.semantic_store import CENTROIDS_FILE, IDS_FILE, load_semantic_ids
from llmrec.items.semantic_vocab import find_sid_vocab
from llmrec.llm.additems import NewItemText, add_atomic_items, add_semantic_items
from llmrec.llm.beam import beam_search_codes
from llmrec.llm.config import ITEM_IDS, TrainConfig
from llmrec.llm.loading import load_causal_lm, load_tokenizer
from llmrec.llm.model import ItemLM
from llmrec.prompts import PromptEncoder, parse_template
from llmrec.runs import read_run_info, run_catalog
from llmrec.trie import CodeTrie

RUN_FILES = ("run.json", "config.yaml", "prompt.txt", "tokenizer", "adapter", "catalog.parquet")
SEMANTIC_RUN_FILES = (*RUN_FILES, IDS_FILE, CENTROIDS_FILE)  # a semantic-ID run also keeps its codes


class LLMRecommender:
    """Recommendations from an ``ItemLM`` + prompt encoder + catalog.

    Args:
        item_lm: the model.
        encoder: ``llmrec.prompts.PromptEncoder`` turning histories into token ids.
        tokenizer: tokenizer with the item tokens.
        catalog: the run's ``Catalog``.
        batch_size: prompts per forward pass in ``score``.
        name: display name.
    """

    @property
    def protocol_note(self) -> str:
        """Every item is scored (atomic item tokens); with text fusion or cold neighbours the result says what the
        scores are."""
        notes = []
        if self._neighbors() is not None:
            notes.append(f"untrained items: the best of their {self.cold_neighbors} nearest trained items' logits, "
                         f"less {self.cold_gap:g} x cosine below the nearest (--cold_neighbors)")  # fmt: skip
        if self.fusion:
            notes.append(f"scores: LM item logits + {self.fusion:g} x text cosine to the last {DEFAULT_LAST_K} "
                         "history items (--text_fusion, llmrec.llm.fusion)")  # fmt: skip
        return "; ".join(notes)

    def __init__(self, item_lm: ItemLM, encoder, tokenizer, catalog: Catalog, batch_size: int = 64, name="llm"):
        self.item_lm, self.encoder, self.tokenizer, self.catalog = item_lm, encoder, tokenizer, catalog
        self.batch_size, self.name = batch_size, name
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # an empty prompt (empty history, template without prefix) starts from BOS, or EOS, never from padding
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.start_id = start if start is not None else self.pad_id
        self.item_text: NewItemText | None = None  # how add_items embeds a new item's text (load_llm_run sets it)
        self.projector = None  # the run's text projector (text_projector.safetensors), if it has one
        self.texts = None  # the run's ItemTexts (item_text.safetensors), if it has them: knn rows, text fusion
        self.fusion = 0.0  # --text_fusion weight (llmrec.llm.fusion); needs `texts`
        self.cold_rows, self.cold_knn = "projector", 1  # how add_items makes a new item's rows (--cold_rows)
        self.cold_neighbors, self.cold_gap = 1, 10.0  # how untrained items score (--cold_neighbors; needs `texts`)
        self._cold_table: tuple | None = None  # (texts, k, ColdNeighbors), rebuilt when either changes

    @property
    def num_items(self) -> int:
        return self.item_lm.vocab.num_items

    def _prompt(self, history: Sequence[int]) -> list[int]:
        return self.encoder.encode(history) or [self.start_id]

    def add_items(self, raw_ids: Sequence[str], titles: Sequence[str], texts: Sequence[str]) -> list[int]:
        """Append items to ``catalog`` and score them at once; returns their ids (``num_items`` on).

        Each gets a new item token whose rows come from its text: its nearest trained items' rows (``--cold_rows
        knn``) or the run's text projector (the mean item row without either); see ``llmrec.llm.additems``.

        Raises:
            DataError: an empty, repeated or known raw id (nothing is changed).
            NotImplementedError: the model is loaded unmerged (QLoRA).
        """
        return add_atomic_items(self, raw_ids, titles, texts)

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores of every item as the next one after each history: ``[B, N]`` float32 on CPU (no masking).

        Histories are lists of internal item ids, oldest first; an empty history is allowed. With a text-fusion
        weight the text similarity to the history is added (``llmrec.llm.fusion``).
        """
        return self.fuse(*self.score_parts(histories), self.fusion)

    def score_parts(self, histories: Sequence[Sequence[int]], similarity: bool = False):
        """``(model scores [B, N], text similarity [B, N] or None)``: what ``fuse`` combines. The similarity needs
        item texts and is computed with a fusion weight or ``similarity`` (``llmrec.llm.fusion.select_fusion``
        reuses both parts for every weight it tries)."""
        base = self.item_lm.score([self._prompt(h) for h in histories], self.pad_id, self.batch_size)
        table = self._neighbors()
        if table is not None:
            base = table.apply(base, self.cold_gap)
        return base, self._similarity(histories, similarity)

    def _neighbors(self) -> ColdNeighbors | None:
        """The untrained items' neighbours with ``cold_neighbors > 1`` and item texts (cached per texts, k)."""
        if self.cold_neighbors <= 1 or self.texts is None:
            return None
        cached = self._cold_table
        if cached is None or cached[0] is not self.texts or cached[1] != self.cold_neighbors:
            self._cold_table = (self.texts, self.cold_neighbors, ColdNeighbors.of(self.texts, self.cold_neighbors))
        return self._cold_table[2]

    def _similarity(self, histories, similarity: bool) -> torch.Tensor | None:
        if self.texts is None or not (self.fusion or similarity):
            return None
        return history_similarity(self.texts.vectors, histories)  # ItemTexts.vectors: float32

    @staticmethod
    def fuse(base: torch.Tensor, sim: torch.Tensor | None, weight: float) -> torch.Tensor:
        """``base + weight * sim`` (a new tensor; ``base`` itself without similarity or weight)."""
        return base + weight * sim if (weight and sim is not None) else base

    def score_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Scores ``[B, N]`` for ready-made prompt strings, tokenized as they are (no template, no truncation; no text
        fusion: a prompt string has no item history)."""
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] or [self.start_id] for p in prompts]
        return self.item_lm.score(ids, self.pad_id, self.batch_size)

    def generate(
        self, history: Sequence[int], k: int = 10, exclude_seen: bool = True, do_sample: bool = False
    ) -> list[int]:
        """Top ``k`` items, the same top k as ``score`` with the history masked (``exclude_seen``): constrained beam
        search, or with text fusion or ``--cold_neighbors`` the top of ``score`` itself. ``do_sample``: ``k``
        samples from the LM's own distribution (no text fusion, no neighbour rule)."""
        if not do_sample and (self._neighbors() is not None or (self.fusion and self.texts is not None)):
            row = self.score([list(history)])[0]
            if exclude_seen and len(history):
                row[list(history)] = float("-inf")
            return row.topk(min(k, int(torch.isfinite(row).sum()))).indices.tolist()
        was_training = self.item_lm.training
        self.item_lm.eval()
        try:
            return generate_items(
                self.item_lm.lm,
                self.item_lm.vocab,
                [self._prompt(history)],
                self.pad_id,
                k=k,
                do_sample=do_sample,
                exclude=[history] if exclude_seen else None,
            )[0]
        finally:
            self.item_lm.train(was_training)


class SemanticLLMRecommender(LLMRecommender):
    """Recommendations of a semantic-ID model: beam search over the catalog's code trie (see the module docstring).

    Args:
        trie: the catalog's code paths (``llmrec.trie.CodeTrie``).
        beam_width: beams per history in ``score`` (at least the largest K asked for; ``generate`` uses
            ``max(k, beam_width)`` so it returns the same items as ``score``).
        exclude_history: ``score`` excludes each history's items inside the search (at the trie's leaves), so no
            beam is spent on an item the evaluator masks; they then tie last with the other non-beam items, a
            repeated target too. Off by default: ``score`` stays unmasked like every recommender's (the evaluator
            keeps a repeated target rankable), and ``beam_width`` leaves room for the history items it masks.
        item_lm, encoder, tokenizer, catalog, batch_size, name: as ``LLMRecommender`` (``batch_size`` prompts per
            ``generate`` call, i.e. ``batch_size * beam_width`` sequences).
    """

    def __init__(self, item_lm: ItemLM, encoder, tokenizer, catalog: Catalog, trie: CodeTrie, beam_width: int = 50,
                 batch_size: int = 64, name: str = "llm", exclude_history: bool = False,
                 normalize: str = "level"):  # fmt: skip
        super().__init__(item_lm, encoder, tokenizer, catalog, batch_size=batch_size, name=name)
        self.trie, self.beam_width, self.exclude_history = trie, beam_width, exclude_history
        self.normalize = normalize  # the beam's per-step normalisation: the run's --sid_loss
        self.sids = None  # the run's SemanticIds (codes and centroids), for add_items (load_llm_run sets them)

    def add_items(self, raw_ids: Sequence[str], titles: Sequence[str], texts: Sequence[str]) -> list[int]:
        """Append items to ``catalog`` with code paths from their text (new trie leaves); returns their ids.

        See ``llmrec.llm.additems``. Raises as ``LLMRecommender.add_items``.
        """
        return add_semantic_items(self, raw_ids, titles, texts)

    @property
    def num_items(self) -> int:
        return self.trie.num_items

    @property
    def protocol_note(self) -> str:
        inside = ", history items excluded inside the search" if self.exclude_history else ""
        note = f"scores from trie-constrained beam search of width {self.beam_width} over semantic ids{inside}; "
        if not self.fusion:
            return note + "items outside the beams score below every beam item and tie last"
        return note + (f"beam items: beam score + {self.fusion:g} x text cosine to the last {DEFAULT_LAST_K} history "
                       "items (--text_fusion, llmrec.llm.fusion); items outside the beams score below every beam "
                       "item, in the order of that cosine")  # fmt: skip

    def beams(self, prompts: Sequence[Sequence[int]], exclude, width: int) -> tuple[list, list]:
        """Per prompt, the beam items (best first) and their scores; ``exclude``: per prompt, items to leave out."""
        items: list[list[int]] = [[] for _ in prompts]
        scores: list[list[float]] = [[] for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: little padding
        was_training = self.item_lm.training
        self.item_lm.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                excl = [exclude[i] for i in idx] if exclude is not None else None
                found, values = beam_search_codes(self.item_lm, self.trie, [prompts[i] for i in idx], self.pad_id,
                                                  width, exclude=excl, normalize=self.normalize)  # fmt: skip
                for row, i in enumerate(idx):
                    items[i], scores[i] = found[row], values[row]
        finally:
            self.item_lm.train(was_training)
        return items, scores

    def score_parts(self, histories: Sequence[Sequence[int]], similarity: bool = False):
        """``(beam_score_matrix [B, N], text similarity [B, N] or None)``, as ``LLMRecommender.score_parts``: so
        ``score`` (inherited) gives beam items their beam scores, every other item a floor below them (no masking
        besides ``exclude_history``), with a text-fusion weight ``fuse``'s scores."""
        exclude = [list(h) for h in histories] if self.exclude_history else None
        items, scores = self.beams([self._prompt(h) for h in histories], exclude, self.beam_width)
        base = beam_score_matrix(items, scores, self.num_items)  # floor: BEAM_FLOOR
        return base, self._similarity(histories, similarity)

    @staticmethod
    def fuse(base: torch.Tensor, sim: torch.Tensor | None, weight: float) -> torch.Tensor:
        """Beam items (``base > BEAM_FLOOR``): ``base + weight * sim``; every other item below the lowest of them,
        ordered by ``sim`` (``sim`` is a cosine, in [-1, 1]). Without similarity or weight: ``base`` itself."""
        if not weight or sim is None:
            return base
        beam = base > BEAM_FLOOR
        fused = torch.where(beam, base + weight * sim, torch.full_like(base, float("inf")))
        low = fused.amin(dim=1, keepdim=True)  # [B, 1] the lowest fused beam score (inf: no beam item)
        low = torch.where(torch.isinf(low), torch.zeros_like(low), low)
        return torch.where(beam, fused, low - 1.0 - 2.0 * abs(weight) + weight * sim)

    def score_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """``score`` for ready-made prompt strings (code tokens as ``<|sid_l_c|>``), nothing excluded."""
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] or [self.start_id] for p in prompts]
        return beam_score_matrix(*self.beams(ids, None, self.beam_width), self.num_items)

    def generate(
        self, history: Sequence[int], k: int = 10, exclude_seen: bool = True, do_sample: bool = False
    ) -> list[int]:
        """Top ``k`` items by trie-constrained beam search (width ``max(k, beam_width)``), with text fusion re-ordered
        by ``score``'s fused beam scores (so, for ``k <= beam_width``, ``score``'s top k); or ``k`` samples (the
        LM's own distribution, no fusion)."""
        exclude = [list(history)] if exclude_seen else None
        if not do_sample:
            (items,), (scores,) = self.beams([self._prompt(history)], exclude, max(k, self.beam_width))
            sim = self._similarity([history], False)
            if sim is not None and items:
                fused = self.fuse(beam_score_matrix([items], [scores], self.num_items), sim, self.fusion)[0, items]
                items = [items[j] for j in fused.argsort(descending=True, stable=True).tolist()]
            return list(items[:k])
        was_training = self.item_lm.training
        self.item_lm.eval()
        try:
            return generate_items_by_codes(self.item_lm.lm, self.item_lm.vocab, self.trie, [self._prompt(history)],
                                           self.pad_id, k=k, exclude=exclude, do_sample=True,
                                           normalize=self.normalize)[0]  # fmt: skip
        finally:
            self.item_lm.train(was_training)


def make_recommender(item_lm: ItemLM, encoder, tokenizer, catalog: Catalog, batch_size: int = 64, name: str = "llm",
                     trie: CodeTrie | None = None, beam_width: int = 50, normalize: str = "level") -> LLMRecommender:  # fmt: skip
    """An ``LLMRecommender``, or with a ``trie`` (semantic IDs) a ``SemanticLLMRecommender`` (``normalize``: its
    beam's per-step normalisation, the run's ``--sid_loss``)."""
    if trie is None:
        return LLMRecommender(item_lm, encoder, tokenizer, catalog, batch_size=batch_size, name=name)
    return SemanticLLMRecommender(item_lm, encoder, tokenizer, catalog, trie, beam_width, batch_size, name,
                                  normalize=normalize)  # fmt: skip


def load_llm_run(
    run_dir: str | Path,
    device: str | None = None,
    batch_size: int = 64,
    merge: bool = True,
    beam_width: int | None = None,
):
    """Rebuild the recommender of a run directory written by ``llmrec train`` (needs only the run directory).

    The base model is loaded as it was trained: the same layers, dtype and, for a QLoRA run (``load_in_4bit``),
    the same NF4 quantisation on the GPU (the LoRA weights are then kept unmerged, as in training). Otherwise, with
    ``merge`` (default), the LoRA matrices and item rows are merged into the base weights: the same scores (to
    float rounding), about 3x faster per request on CPU than through the peft wrappers. A semantic-ID run
    (``item_ids: semantic``) also reads its code paths (semantic_ids.parquet, checked against the catalog) and
    returns a ``SemanticLLMRecommender`` with the run's ``beam_width`` (or the one given).

    Raises:
        DataError: a required file of the run is missing or its config.yaml is malformed.
        ModelLoadError: the base model is not available offline (or a 4-bit run without CUDA).
    """
    run = Path(run_dir)
    for name in RUN_FILES:
        if not (run / name).exists():
            raise DataError(f"{run} is not a complete LLM run directory: {name} is missing")
    info = read_run_info(run)
    cfg = check_yaml_values(TrainConfig, load_yaml(run / "config.yaml"), run / "config.yaml")
    if cfg.get("item_ids", "atomic") not in ITEM_IDS:
        raise DataError(f"{run / 'config.yaml'}: item_ids must be one of {ITEM_IDS}, got {cfg['item_ids']!r}")
    semantic = cfg.get("item_ids", "atomic") == "semantic"
    for name in SEMANTIC_RUN_FILES if semantic else ():
        if not (run / name).exists():
            raise DataError(f"{run} is not a complete semantic-ID run directory: {name} is missing")
    catalog = run_catalog(run)
    quantized = bool(cfg.get("load_in_4bit", False))
    lm, _ = load_causal_lm(
        cfg["model"],
        num_layers=cfg.get("num_layers"),
        dtype=cfg.get("dtype", "float32"),
        load_in_4bit=quantized,
        trust_remote_code=cfg.get("trust_remote_code", False),
    )
    tokenizer = load_tokenizer(str(run / "tokenizer"))
    sids = load_semantic_ids(run, len(catalog)) if semantic else None
    vocab = find_sid_vocab(tokenizer, sids.level_sizes) if semantic else find_item_vocab(tokenizer, len(catalog))
    resize_for_items(lm, vocab)
    lm = PeftModel.from_pretrained(lm, str(run / "adapter"), is_trainable=False)
    if merge and not quantized:
        lm = lm.merge_and_unload()
    item_lm = ItemLM(lm, vocab).eval()
    if device and not quantized:  # a 4-bit model already sits on its GPU (device_map)
        item_lm.to(device)
    template = parse_template((run / "prompt.txt").read_text(encoding="utf-8"), cfg.get("prompt", "prompt"))
    codes = sids.codes if semantic else None
    encoder = PromptEncoder(
        template, tokenizer, vocab, catalog, cfg.get("max_history", 20), cfg.get("max_prompt_tokens"), codes
    )
    name = f"{info.get('model', 'llm')}:{run.name}"
    trie = CodeTrie(sids.codes, sids.level_sizes) if semantic else None
    width = beam_width or cfg.get("beam_width", 50)
    rec = make_recommender(item_lm, encoder, tokenizer, catalog, batch_size, name, trie=trie, beam_width=width,
                           normalize=cfg.get("sid_loss", "level"))  # fmt: skip
    cf_dim = cfg.get("item_cf_dim", 0) if semantic and cfg.get("sid_embeddings", "text") == "text+cf" else 0
    encoder, remote = cfg.get("item_text_encoder", "minilm"), cfg.get("trust_remote_code", False)
    rec.item_text = NewItemText(encoder, cfg["model"], remote, cf_dim, cfg.get("sid_cf_weight", 1.0),
                                cfg.get("sid_cold_codes", "centroid"))  # fmt: skip
    if semantic:
        rec.sids = sids
    else:
        rec.projector = load_projector(run)
        rec.cold_rows, rec.cold_knn = cfg.get("cold_rows", "projector"), cfg.get("cold_knn", 1)
        rec.cold_neighbors, rec.cold_gap = cfg.get("cold_neighbors", 1), cfg.get("cold_gap", 10.0)
    rec.texts = load_item_text(run, len(catalog))
    fusion = cfg.get("text_fusion", 0.0)
    if fusion and rec.texts is None:
        raise DataError(f"{run}: text_fusion {fusion} needs item_text.safetensors, which is missing")
    if fusion:
        rec.fusion = rec.texts.fusion if fusion == -1 else fusion
    return rec
