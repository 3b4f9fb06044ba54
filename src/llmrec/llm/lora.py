"""LoRA on any Hugging Face causal LM, with trainable item-token rows (peft).

Which modules get LoRA (``target_modules``):
    ``attention`` (default)  the linear projections inside every attention block, found from the model itself:
                             the direct ``nn.Linear`` / ``Conv1D`` children of modules whose class name contains
                             ``Attention`` (Llama/Qwen2/Gemma3/Mistral: q/k/v/o_proj; Phi-3: qkv_proj, o_proj;
                             GPT-2: c_attn, c_proj; GPT-NeoX: query_key_value, dense)
    ``all-linear``           peft's every linear layer but the output head
    ``a,b,c``                module names, as peft matches them (a name or a dotted suffix)
Only the adapter matrices and the item tokens' embedding rows (peft ``trainable_token_indices``; for an untied head
its item rows too) are trained; all other base weights stay frozen. ``adapted_modules`` lists what was wrapped,
for the log and ``run.json``.
"""

from __future__ import annotations

import re

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from torch import nn

from llmrec.errors import LoraTargetError
from llmrec.items.atomic import ItemVocab, is_tied

# Layers peft's LoRA can wrap besides the linear ones (bitsandbytes' 4-bit Linear is an nn.Linear too).
_OTHER_LORA_LAYERS = (nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)


def _linear_like(module: nn.Module) -> bool:
    # transformers' Conv1D (GPT-2) is a linear layer with transposed weights; peft adapts it like nn.Linear
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def attention_targets(model: nn.Module) -> str:
    """A peft ``target_modules`` regex matching exactly the attention projections of ``model``.

    peft matches a string ``target_modules`` with ``re.fullmatch`` against every full module name, so the regex
    names each projection together with its attention parent (``attn\\.c_proj``, never a bare ``c_proj``: GPT-2's
    MLP has one too). It depends only on the architecture, not on the depth, so a run reloads with the same one.

    Raises:
        LoraTargetError: the model has no attention module with linear children.
    """
    pairs = set()
    for name, module in model.named_modules():
        if name and "Attention" in type(module).__name__:
            parent = name.rsplit(".", 1)[-1]
            pairs.update((parent, child) for child, sub in module.named_children() if _linear_like(sub))
    if not pairs:
        raise LoraTargetError(
            f"lora_target_modules 'attention': {type(model).__name__} has no attention module with linear "
            "projections; pass --lora_target_modules all-linear or a comma-separated list of module names"
        )
    alternatives = "|".join(rf"{re.escape(parent)}\.{re.escape(child)}" for parent, child in sorted(pairs))
    return rf"(?:.*\.)?(?:{alternatives})"


def _check_names(model: nn.Module, names: list[str]) -> None:
    """Every name must match a module (as peft matches a list: the full name or a dotted suffix) LoRA can wrap."""
    modules = list(model.named_modules())
    for target in names:
        matched = [m for n, m in modules if n == target or n.endswith("." + target)]
        if not matched:
            raise LoraTargetError(f"lora_target_modules: no module named {target!r} in {type(model).__name__}")
        wrong = sorted(
            {type(m).__name__ for m in matched if not (_linear_like(m) or isinstance(m, _OTHER_LORA_LAYERS))}
        )
        if wrong:
            raise LoraTargetError(
                f"lora_target_modules: {target!r} names a {', '.join(wrong)} in {type(model).__name__}, not a "
                "linear layer; name its projections instead"
            )


def resolve_targets(model: nn.Module, spec: str) -> str | list[str]:
    """peft ``target_modules`` for ``spec`` (see the module docstring).

    Raises:
        LoraTargetError: no attention projections (``attention``), or a listed name matches no module LoRA can wrap.
    """
    spec = spec.strip()
    if spec == "attention":
        return attention_targets(model)
    if spec == "all-linear":
        return "all-linear"
    names = [n.strip() for n in spec.split(",") if n.strip()]
    _check_names(model, names)
    return names


def _token_targets(model: nn.Module, vocab: ItemVocab) -> list[int] | dict[str, list[int]]:
    """peft ``trainable_token_indices``: the item rows of the input embeddings (and of an untied output layer)."""
    indices = list(range(vocab.first_id, vocab.end_id))
    out = model.get_output_embeddings()
    if out is None or is_tied(model):
        return indices
    # full names, which peft matches as suffixes (GPT-NeoX: gpt_neox.embed_in, embed_out; Llama: model.embed_tokens,
    # lm_head); leaf names alone could also match another module that ends the same way
    names = {m: n for n, m in model.named_modules()}
    return {names[model.get_input_embeddings()]: indices, names[out]: indices}


def apply_lora(
    model: nn.Module,
    vocab: ItemVocab,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: str = "attention",
) -> PeftModel:
    """Wrap ``model`` with LoRA on ``target_modules`` and trainable item-token rows; returns the ``PeftModel``.

    Raises:
        LoraTargetError: nothing matches ``target_modules``.
    """
    targets = resolve_targets(model, target_modules)
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        trainable_token_indices=_token_targets(model, vocab),
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:  # peft: "Target modules ... not found in the base model"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoraTargetError(f"lora_target_modules {target_modules!r}: {first_line}") from None
    if not adapted_modules(peft_model):
        raise LoraTargetError(f"lora_target_modules {target_modules!r} matched no linear layer of the model")
    return peft_model


def adapted_modules(peft_model: nn.Module) -> list[str]:
    """Distinct leaf names of the modules that carry LoRA weights (e.g. ``['k_proj', 'o_proj', ...]``)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and m.lora_A})
