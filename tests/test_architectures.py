"""Issue #16, "any Hugging Face causal LM": train, reload and recommend with tiny random models of 7 architectures.

Each model is built from a config (2 layers, hidden 32, a word-level tokenizer), saved with ``save_pretrained`` and
trained for 3 steps through ``train()``. The checks: LoRA sits on exactly the attention projections of that
architecture (adapter keys and ``run.json``), the item rows are trainable (one set if the head is tied, two if not),
and the reloaded run's ``score``, ``recommend`` and ``generate`` agree, merged and unmerged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmrec.config import parse_config
from llmrec.errors import LoraTargetError
from llmrec.inference import recommend
from llmrec.items.atomic import add_item_tokens, is_tied, resize_for_items
from llmrec.llm.config import TrainConfig
from llmrec.llm.loop import train
from llmrec.llm.lora import adapted_modules, apply_lora
from llmrec.llm.recommender import load_llm_run
from test_llm_helpers import make_tokenizer, make_toy_data

LAYERS = 2
SIZES = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": LAYERS}
HEADS = {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}


def _configs():
    import transformers as tr

    return {
        "llama": lambda: tr.LlamaConfig(**SIZES, **HEADS, tie_word_embeddings=False),
        "qwen2": lambda: tr.Qwen2Config(**SIZES, **HEADS, tie_word_embeddings=True),
        "gemma3": lambda: tr.Gemma3TextConfig(
            **SIZES,
            **HEADS,
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
            tie_word_embeddings=True,
        ),
        "mistral": lambda: tr.MistralConfig(**SIZES, **HEADS, sliding_window=None, tie_word_embeddings=False),
        "phi3": lambda: tr.Phi3Config(
            **SIZES, **HEADS, original_max_position_embeddings=256, tie_word_embeddings=False
        ),
        "gpt2": lambda: tr.GPT2Config(vocab_size=64, n_embd=32, n_layer=LAYERS, n_head=4, n_positions=256),
        "gpt_neox": lambda: tr.GPTNeoXConfig(
            **SIZES, num_attention_heads=4, max_position_embeddings=256, tie_word_embeddings=False
        ),
    }


# architecture -> (attention parent, its projections that must get LoRA, whether the head is tied)
EXPECTED = {
    "llama": ("self_attn", ["k_proj", "o_proj", "q_proj", "v_proj"], False),
    "qwen2": ("self_attn", ["k_proj", "o_proj", "q_proj", "v_proj"], True),
    "gemma3": ("self_attn", ["k_proj", "o_proj", "q_proj", "v_proj"], True),
    "mistral": ("self_attn", ["k_proj", "o_proj", "q_proj", "v_proj"], False),
    "phi3": ("self_attn", ["o_proj", "qkv_proj"], False),  # fused qkv_proj: q/k/v names would miss it
    "gpt2": ("attn", ["c_attn", "c_proj"], True),  # Conv1D; the MLP's c_proj must stay without LoRA
    "gpt_neox": ("attention", ["dense", "query_key_value"], False),  # embed_in / embed_out, untied
}


def _make_model(arch: str, tok):
    from transformers import AutoModelForCausalLM

    config = _configs()[arch]()
    config.vocab_size = len(tok)
    config.pad_token_id, config.bos_token_id, config.eos_token_id = (
        tok.pad_token_id,
        tok.bos_token_id,
        tok.eos_token_id,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("archs")


@pytest.fixture(scope="module")
def data(root) -> Path:
    return make_toy_data(root / "data", num_users=24)


def _model_dir(root: Path, arch: str) -> Path:
    path = root / f"model_{arch}"
    if not (path / "config.json").is_file():
        tok = make_tokenizer()
        _make_model(arch, tok).save_pretrained(path)
        tok.save_pretrained(path)
    return path


def _cfg(root: Path, data: Path, arch: str, out: str, **kw) -> TrainConfig:
    args = {
        "data": str(data),
        "model": str(_model_dir(root, arch)),
        "output_dir": str(root / out),
        "num_layers": LAYERS,
        "item_cf_dim": 0,
        "item_mask_prob": 0.0,
        "label_smoothing": 0.0,
        "lr_schedule": "constant",
        "lr": 1e-2,
        "batch_size": 8,
        "max_steps": 3,
        "eval_users": 0,
        "test_users": -1,
        "progress": False,
    } | kw
    return parse_config(TrainConfig, [x for k, v in args.items() for x in (f"--{k}", str(v))])


def _lora_keys(run_dir: Path) -> tuple[list[str], list[str]]:
    keys = list(load_file(str(run_dir / "adapter" / "adapter_model.safetensors")))
    return [k for k in keys if ".lora_" in k], [k for k in keys if "trainable_tokens" in k]


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_train_reload_recommend(root, data, arch):
    parent, projections, tied = EXPECTED[arch]
    cfg = _cfg(root, data, arch, f"run_{arch}")
    train(cfg)
    run = Path(cfg.output_dir)
    assert json.loads((run / "run.json").read_text())["lora_modules"] == projections

    lora, tokens = _lora_keys(run)
    wrapped = {re.sub(r"\.lora_[AB]\.weight$", "", k) for k in lora}
    assert all(k.endswith(".lora_A.weight") or k.endswith(".lora_B.weight") for k in lora)
    assert {w.rsplit(".", 2)[-2] for w in wrapped} == {parent}  # only attention children (not GPT-2's mlp.c_proj)
    for p in projections:
        assert sum(w.endswith(f".{parent}.{p}") for w in wrapped) == LAYERS, (arch, p)
    assert len(lora) == 2 * LAYERS * len(projections)
    assert len(tokens) == (1 if tied else 2), tokens  # embeddings' item rows, + an untied head's
    state = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert any(state[k].abs().sum() > 0 for k in lora if ".lora_B." in k)  # the adapters trained (B starts at 0)

    rec = load_llm_run(run)
    assert is_tied(rec.item_lm._base[0]) == tied
    history = [0, 1, 2]
    scores = rec.score([history])[0]
    assert scores.shape == (12,) and torch.isfinite(scores).all()
    top = recommend(rec, [history], k=4)[0]
    ranked = [i for i in scores.argsort(descending=True).tolist() if i not in history][:4]
    assert [i for i, _ in top] == ranked
    assert rec.generate(history, k=4) == ranked
    unmerged = load_llm_run(run, merge=False)  # peft wrappers (e.g. Gemma3's scaled embedding) == merged weights
    torch.testing.assert_close(unmerged.score([history])[0], scores, atol=1e-4, rtol=1e-4)


def _wrapped_model(arch: str, targets: str):
    tok = make_tokenizer()
    model = _make_model(arch, tok)
    vocab = add_item_tokens(tok, 5)
    resize_for_items(model, vocab)
    return apply_lora(model, vocab, target_modules=targets)


def test_gemma3_keeps_its_embedding_scale_through_the_item_rows():
    tok = make_tokenizer()
    model = _make_model("gemma3", tok)
    vocab = add_item_tokens(tok, 5)
    resize_for_items(model, vocab)
    embedding = model.get_input_embeddings()
    scale = float(embedding.embed_scale)  # sqrt(hidden_size)
    ids = torch.tensor([[tok.bos_token_id, vocab.first_id, vocab.first_id + 3]])
    peft_model = apply_lora(model, vocab)
    wrapper = peft_model.get_input_embeddings()  # peft's trainable-tokens wrapper, which ItemLM calls
    assert wrapper is not embedding
    with torch.no_grad():
        wrapper.token_adapter.trainable_tokens_delta["default"].add_(1.0)  # as if the item rows had trained
    rows = wrapper.token_adapter.trainable_tokens_delta["default"]
    expected = torch.stack([embedding.weight[tok.bos_token_id], rows[0], rows[3]]) * scale
    torch.testing.assert_close(wrapper(ids)[0], expected)


@pytest.mark.parametrize(
    "arch, mlp",
    [("llama", ["down_proj", "gate_proj", "up_proj"]), ("phi3", ["down_proj", "gate_up_proj"]), ("gpt2", ["c_fc"])],
)
def test_all_linear_adapts_the_mlp_too(arch, mlp):
    peft_model = _wrapped_model(arch, "all-linear")
    assert set(mlp) | set(EXPECTED[arch][1]) == set(adapted_modules(peft_model))
    names = {n for n, m in peft_model.named_modules() if getattr(m, "lora_A", None)}
    if arch == "gpt2":
        assert any(n.endswith("mlp.c_proj") for n in names) and any(n.endswith("attn.c_proj") for n in names)
    assert not any(n.endswith("lm_head") for n in names)  # the output head keeps its item rows, no LoRA


def test_explicit_targets(root, data):
    assert adapted_modules(_wrapped_model("gpt_neox", "query_key_value")) == ["query_key_value"]
    with pytest.raises(LoraTargetError) as err:
        train(_cfg(root, data, "llama", "bad_name", lora_target_modules="q_proj,qkv_proj"))
    assert "'qkv_proj'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(LoraTargetError, match="'mlp' names a LlamaMLP") as err:
        _wrapped_model("llama", "mlp")  # a block, not a layer: peft would print its whole repr
    assert "\n" not in str(err.value)


def test_no_attention_module_is_a_lora_target_error():
    from transformers import MambaConfig, MambaForCausalLM

    def mamba():
        tok = make_tokenizer()
        config = MambaConfig(vocab_size=len(tok), hidden_size=32, state_size=4, num_hidden_layers=2, expand=2)
        model = MambaForCausalLM(config)
        vocab = add_item_tokens(tok, 5)
        resize_for_items(model, vocab)
        return model, vocab

    with pytest.raises(LoraTargetError, match="MambaForCausalLM has no attention module") as err:
        apply_lora(*mamba())
    assert "\n" not in str(err.value)
    with pytest.raises(LoraTargetError, match="incompatible with Mamba") as err:
        apply_lora(*mamba(), target_modules="all-linear")  # peft refuses out_proj/conv1d: still one line
    assert "\n" not in str(err.value)
    assert adapted_modules(apply_lora(*mamba(), target_modules="in_proj,x_proj")) == ["in_proj", "x_proj"]


def test_importing_the_llm_keeps_bitsandbytes_cpu_kernel_warning_out_of_the_log():
    """peft imports bitsandbytes, which logs a hub-kernel warning on AVX512-BF16 CPUs (this check bites there);
    llmrec.llm keeps that one logger to errors."""
    import logging
    import subprocess
    import sys

    import llmrec.llm  # noqa: F401

    code = "import logging; logging.basicConfig(); import llmrec.llm.lora, bitsandbytes"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "gemm_4bit_forward" not in out.stderr + out.stdout
    assert logging.getLogger("bitsandbytes.backends.cpu.ops").level == logging.ERROR  # real errors still show
