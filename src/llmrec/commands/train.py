"""`llmrec train`: LoRA fine-tune a causal LM to produce the next item token (defaults: the selected recipe).

The same code runs under every launcher, through ``accelerate.Accelerator``:

    llmrec train --data prepared/beauty --output_dir runs/llm_beauty
    accelerate launch --multi_gpu -m llmrec train --data ... --output_dir ...
    torchrun --nproc_per_node 2 -m llmrec train --data ... --output_dir ...

Inputs are checked in order of cost, each failure a one-line error naming the option: the options themselves
(``TrainConfig``); the prompt template and the run directory (``preflight``); then, inside ``llmrec.llm.loop.train``,
the data and the model's config (``--model``, ``--num_layers``) before any weight loads, and the LoRA targets before
any file of the run directory is touched.
"""

from __future__ import annotations

from pathlib import Path

from llmrec.config import parse_config
from llmrec.errors import ModelLoadError, PromptError

HELP = "LoRA fine-tune a causal LM to generate the next item token (defaults: the selected recipe)."


def preflight(cfg) -> None:
    """The checks that need no model and no data, run before anything loads.

    The prompt template exists and parses; a ``--model`` directory holds a model; the run directory can be started
    or resumed as asked (``llmrec.llm.rundir.plan_train_dir``, which only reads).

    Raises:
        PromptError: ``--prompt`` names no template, or a malformed one.
        ModelLoadError: ``--model`` is a directory that holds no model.
        ConfigError: ``--output_dir`` is refused, or ``--resume`` has nothing to resume.
    """
    from llmrec.llm.rundir import plan_train_dir
    from llmrec.prompts import load_template

    try:
        load_template(cfg.prompt)
    except PromptError as e:
        raise PromptError(f"prompt: {e}") from None
    model_dir = Path(cfg.model)
    if model_dir.is_dir() and not (model_dir / "config.json").is_file():  # transformers' own error is a ValueError
        raise ModelLoadError(f"model: {cfg.model} is a directory without config.json (not a saved model)")
    plan_train_dir(cfg)


def main(argv: list[str]) -> int:
    from llmrec.llm.config import TrainConfig

    cfg = parse_config(TrainConfig, argv, prog="llmrec train", description=HELP)
    preflight(cfg)
    from llmrec.llm.loop import train

    result = train(cfg)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"run written to {cfg.output_dir}")
        for split in ("valid", "test"):
            if result.get(split):
                m, n = result[split]["metrics"], result[split]["num_users"]
                print(f"{split}: ndcg@10 {m['ndcg@10']:.4f} hr@10 {m['hr@10']:.4f} ({n} users)")
    return 0
