"""Model loading, item tokens and LoRA on a tiny offline Llama."""

from __future__ import annotations

import pytest
import torch

from llmrec.errors import ModelLoadError
from llmrec.items.atomic import add_item_tokens, find_item_vocab, item_token, resize_for_items
from llmrec.items.init import init_item_embeddings
from llmrec.llm.loading import load_causal_lm
from llmrec.llm.lora import apply_lora
from llmrec.llm.model import ItemLM
from test_llm_helpers import TITLES, make_tiny_model_dir


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"tied": make_tiny_model_dir(root / "tied"), "untied": make_tiny_model_dir(root / "untied", tied=False)}


def _with_items(path, n=12):
    lm, tok = load_causal_lm(str(path))
    vocab = add_item_tokens(tok, n)
    resize_for_items(lm, vocab)
    init_item_embeddings(lm, tok, vocab, TITLES[:n])
    return lm, tok, vocab


def test_load_truncates_layers(model_dirs):
    lm, tok = load_causal_lm(str(model_dirs["tied"]), num_layers=1)
    assert len(lm.model.layers) == 1 and lm.config.num_hidden_layers == 1
    with pytest.raises(ModelLoadError, match="num_layers"):
        load_causal_lm(str(model_dirs["tied"]), num_layers=5)


def test_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="offline"):
        load_causal_lm(str(tmp_path / "nope"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_4bit_needs_cuda(model_dirs):
    with pytest.raises(ModelLoadError, match="CUDA"):
        load_causal_lm(str(model_dirs["tied"]), load_in_4bit=True)


def test_item_tokens_are_single_contiguous_ids(model_dirs):
    _, tok, vocab = _with_items(model_dirs["tied"])
    assert find_item_vocab(tok, len(TITLES)) == vocab
    text = "the user bought " + " ".join(item_token(i) for i in range(len(TITLES))) + item_token(11) + "red"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    items = [t for t in ids if vocab.first_id <= t < vocab.end_id]
    assert items == [vocab.token_id(i) for i in range(len(TITLES))] + [vocab.token_id(11)]
    assert tok.convert_ids_to_tokens(vocab.token_id(7)) == "<|item_7|>"
    with pytest.raises(ValueError, match="already"):
        add_item_tokens(tok, 3)


def test_title_init_is_mean_of_title_tokens(model_dirs):
    lm, tok, vocab = _with_items(model_dirs["tied"])
    emb = lm.get_input_embeddings().weight
    ids = tok("red cream", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(emb[vocab.token_id(0)], emb[ids].mean(0))
    # item 5 has an empty title: centre of the titled items plus small noise, distinct from every other item
    titled = torch.stack([emb[vocab.token_id(i)] for i in range(len(TITLES)) if TITLES[i]])
    assert (emb[vocab.token_id(5)] - titled.mean(0)).norm() < titled.std(0).norm() * 3
    assert lm.get_output_embeddings().weight.data_ptr() == emb.data_ptr()  # tied


def test_untied_head_rows_initialised(model_dirs):
    lm, tok, vocab = _with_items(model_dirs["untied"])
    head = lm.get_output_embeddings().weight
    ids = tok("blue balm", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(head[vocab.token_id(1)], head[ids].mean(0))


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_lora_trains_only_adapters_and_item_rows(model_dirs, kind):
    torch.manual_seed(0)
    lm, tok, vocab = _with_items(model_dirs[kind])
    base_before = {k: v.clone() for k, v in lm.state_dict().items()}
    peft_lm = apply_lora(lm, vocab, r=4, alpha=8)
    item_lm = ItemLM(peft_lm, vocab)
    trainable = [n for n, p in item_lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in item_lm.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in item_lm.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([[vocab.token_id(i) for i in (0, 1, 2, 3)]] * 2)
    mask, tmask = torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool)
    for _ in range(3):
        loss, n = item_lm(ids, mask, tmask)
        (loss / n).backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in item_lm.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in changed) and any("trainable_tokens" in n for n in changed)
    params = dict(peft_lm.get_base_model().named_parameters(remove_duplicate=False))
    checked = 0
    for name, value in base_before.items():
        stem, leaf = name.rsplit(".", 1)
        # peft moves a wrapped module's original weight under base_layer / original_module
        for cand in (name, f"{stem}.base_layer.{leaf}", f"{stem}.original_module.{leaf}"):
            if cand in params:
                assert torch.equal(params[cand].detach(), value), cand
                checked += 1
                break
    assert checked >= len([k for k in base_before if "layers." in k])
    # the item rows used for scoring are the trained ones
    rows = item_lm.item_weights()
    assert rows.shape == (len(TITLES), lm.config.hidden_size) and rows.requires_grad


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_item_mask_hides_only_item_tokens_while_training(model_dirs, fill):
    torch.manual_seed(0)
    lm, tok, vocab = _with_items(model_dirs["tied"])
    item_lm = ItemLM(apply_lora(lm, vocab, r=4, alpha=8), vocab, item_mask_prob=0.5, item_mask_fill=fill)
    text_ids = tok("the user bought", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([text_ids + [vocab.token_id(i) for i in range(len(TITLES))]] * 4)
    mask = torch.ones_like(ids)
    seen = {}
    expected = torch.zeros(lm.config.hidden_size)
    if fill == "mean":
        expected = item_lm.item_weights().detach().mean(0)

    def grab(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = item_lm.decoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        item_lm.train()
        item_lm.hidden_states(ids, mask)
        hidden = torch.isclose(seen["embeds"], expected).all(-1)  # [B, L]
        assert not hidden[:, : len(text_ids)].any()  # prompt text is never hidden
        frac = hidden[:, len(text_ids) :].float().mean().item()
        assert 0.2 < frac < 0.8  # about half of the item tokens
        item_lm.eval()
        item_lm.hidden_states(ids, mask)
        assert not torch.isclose(seen["embeds"], expected).all(-1).any()  # inference sees every item
    finally:
        handle.remove()


def _two_histories(vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Items 0-5 and 6-11 as two prompts: input_ids, attention_mask [2, 6], and targets at positions 1..5."""
    ids = torch.tensor([[vocab.token_id(i) for i in range(6)], [vocab.token_id(i) for i in range(6, 12)]])
    target = torch.ones_like(ids, dtype=torch.bool)
    target[:, 0] = False
    return ids, torch.ones_like(ids), target


def _first_position_state(model_dirs, fill: str) -> tuple[torch.Tensor, float]:
    """Final hidden state at position 0 when the first item is hidden, and the LoRA gradient norm."""
    torch.manual_seed(0)
    lm, tok, vocab = _with_items(model_dirs["tied"])
    item_lm = ItemLM(apply_lora(lm, vocab, r=4, alpha=8), vocab, item_mask_prob=0.5, item_mask_fill=fill)

    def hide_first(input_ids):
        hide = torch.zeros_like(input_ids, dtype=torch.bool)
        hide[:, 0] = True
        return hide

    item_lm.hide_mask = hide_first
    item_lm.train()
    ids, mask, target = _two_histories(vocab)
    first = item_lm.hidden_states(ids, mask)[:, 0].detach()
    loss, n = item_lm(ids, mask, target)
    (loss / n).backward()
    grads = [p.grad for name, p in item_lm.named_parameters() if "lora_" in name]
    return first, torch.sqrt(sum((g**2).sum() for g in grads)).item()


def test_hidden_first_item_is_not_a_zero_state(model_dirs):
    # A zero input at position 0 stays exactly zero through every layer (RMSNorm(0) = 0, it attends only to
    # itself, MLP(0) = 0), and RMSNorm's backward at 0 scales gradients by ~1/sqrt(eps): with SmolLM2's weights
    # that overflowed to NaN at >= 14 layers. The mean fill gives position 0 a real state.
    zero_state, _ = _first_position_state(model_dirs, "zero")
    assert (zero_state == 0).all()
    mean_state, grad = _first_position_state(model_dirs, "mean")
    assert (mean_state.abs().sum(-1) > 0).all() and grad > 0 and torch.isfinite(torch.tensor(grad))


def test_item_mask_fill_is_checked(model_dirs):
    lm, tok, vocab = _with_items(model_dirs["tied"])
    with pytest.raises(ValueError, match="item_mask_fill"):
        ItemLM(lm, vocab, item_mask_fill="noise")


def test_label_smoothing_spreads_over_item_tokens_only(model_dirs):
    torch.manual_seed(0)
    lm, tok, vocab = _with_items(model_dirs["tied"])
    item_lm = ItemLM(apply_lora(lm, vocab, r=4, alpha=8), vocab, label_smoothing=0.2).eval()
    ids, mask, target = _two_histories(vocab)
    with torch.no_grad():
        loss, n = item_lm(ids, mask, target)
        logp = torch.log_softmax(item_lm.hidden_states(ids, mask)[:, :-1] @ item_lm.item_weights().T, -1)  # [B,L-1,N]
    gold = (ids[:, 1:] - vocab.first_id).unsqueeze(-1)
    expected = -(0.8 * logp.gather(-1, gold).squeeze(-1) + 0.2 * logp.mean(-1)).sum()
    assert n == 10 and torch.allclose(loss, expected, rtol=1e-5)
