"""`llmrec serve --run DIR [--host 127.0.0.1] [--port 8000]`: the HTTP API (FastAPI + uvicorn)."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmrec.config import ConfigError, parse_config

HELP = "Serve a run directory over HTTP: /recommend, /items, /feedback, /health, /metrics, /docs."


@dataclass
class ServeConfig:
    run: str = field(default="", metadata={"help": "Run directory (LLM or baseline)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to bind (default loopback only)."})
    port: int = field(default=8000, metadata={"help": "TCP port."})
    event_log: str = field(default="", metadata={"help": "SQLite feedback log (default: RUN/feedback.sqlite)."})
    salt: str = field(
        default="",
        metadata={"help": "Salt for user hashes (default: $LLMREC_SALT or a random salt stored next to the log)."},
    )
    device: str = field(default="cpu", metadata={"help": "Device for the model (cpu, cuda)."})
    threads: int = field(default=0, metadata={"help": "torch intra-op threads (0 = torch default)."})
    max_k: int = field(default=100, metadata={"help": "Largest k a request may ask for."})
    max_history: int = field(default=200, metadata={"help": "Longest history a request may send."})
    batch_window_ms: float = field(
        default=5.0, metadata={"help": "Micro-batching window in milliseconds (spent only under load)."}
    )
    max_batch: int = field(default=64, metadata={"help": "Most requests scored in one batch."})
    log_level: str = field(default="warning", metadata={"help": "uvicorn log level."})

    def __post_init__(self):
        if not self.run:
            raise ConfigError("run: a run directory is required (--run DIR)")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port: expected 1..65535, got {self.port}")
        if self.max_k < 1 or self.max_history < 1 or self.max_batch < 1 or self.batch_window_ms < 0:
            raise ConfigError("max_k, max_history, max_batch must be >= 1 and batch_window_ms >= 0")


def main(argv: list[str]) -> int:
    cfg = parse_config(ServeConfig, argv, prog="llmrec serve", description=HELP)
    import os
    from pathlib import Path

    import torch
    import uvicorn

    from llmrec.runs import load_run
    from llmrec.serving import EventLog, ServeLimits, create_app

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = load_run(cfg.run, device=cfg.device)
    log = EventLog(cfg.event_log or Path(cfg.run) / "feedback.sqlite", salt=cfg.salt or os.environ.get("LLMREC_SALT"))
    limits = ServeLimits(cfg.max_k, cfg.max_history, cfg.batch_window_ms, cfg.max_batch)
    app = create_app(run, log, limits, model_name=run.name)
    print(
        f"llmrec serve: {run.name} ({len(run.catalog)} items) on http://{cfg.host}:{cfg.port}  (docs at /docs)",
        flush=True,
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=False)
    return 0
