"""`llmrec evaluate --run DIR --split test`: score a run directory with the shared full-ranking evaluator.

The run's ``run.json`` names its ``kind``; ``llmrec.runs.load_run`` (the registry ``RUN_LOADERS`` shared with
``recommend``, ``compare`` and ``serve``) rebuilds the model, and its ``score`` goes through the shared evaluator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.config import ConfigError

HELP = "Evaluate a run directory with the shared full-ranking evaluator."


@dataclass
class EvaluateConfig:
    """Options of ``llmrec evaluate``."""

    run: str = field(default="", metadata={"help": "Run directory (holds run.json)."})
    split: str = field(default="test", metadata={"help": "'valid' or 'test'."})
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20], metadata={"help": "Cut-offs K for @K metrics."})
    mask_history: bool = field(default=True, metadata={"help": "Remove history items from the ranked candidates."})
    batch_size: int = field(default=1024, metadata={"help": "Users per scoring batch."})
    max_users: int | None = field(default=None, metadata={"help": "Evaluate only the first N users (quick check)."})
    device: str = field(default="cpu", metadata={"help": "Device to score on."})
    num_threads: int = field(default=2, metadata={"help": "torch CPU threads."})
    out: str | None = field(default=None, metadata={"help": "JSON output path (default RUN/eval_SPLIT.json)."})

    def __post_init__(self):
        if not self.run:
            raise ConfigError("run: a run directory is required (--run DIR)")
        if not (Path(self.run) / "run.json").is_file():
            raise ConfigError(f"run: {self.run} has no run.json (not a run directory)")
        if self.split not in ("valid", "test"):
            raise ConfigError(f"split: must be 'valid' or 'test', got {self.split!r}")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"ks: need one or more cut-offs >= 1, got {self.ks}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.max_users is not None and self.max_users < 1:
            raise ConfigError(f"max_users: must be >= 1, got {self.max_users}")


def main(argv: list[str]) -> int:
    import torch

    from llmrec.config import atomic_write_json, parse_config
    from llmrec.evaluation import evaluate
    from llmrec.runs import load_run

    cfg = parse_config(EvaluateConfig, argv, prog="llmrec evaluate", description=__doc__.splitlines()[0])
    torch.set_num_threads(cfg.num_threads)
    run_dir = Path(cfg.run)
    run = load_run(run_dir, device=cfg.device)  # validates run.json's kind against llmrec.runs.RUN_LOADERS
    result = evaluate(
        run.score,
        run.data,
        cfg.split,
        ks=cfg.ks,
        mask_history=cfg.mask_history,
        batch_size=cfg.batch_size,
        max_users=cfg.max_users,
        progress=True,
    )
    result["run"] = str(run_dir)
    atomic_write_json(cfg.out or run_dir / f"eval_{cfg.split}.json", result)
    print(json.dumps(result, indent=2))
    return 0
