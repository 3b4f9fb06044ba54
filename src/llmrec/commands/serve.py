"""`llmrec serve --run DIR [--host 127.0.0.1] [--port 8000]`: the HTTP API (FastAPI + uvicorn).

Before the model loads, ``serve`` checks what can fail fast: a non-loopback ``--host`` needs a feedback token
(``--feedback_token`` or ``$LLMREC_FEEDBACK_TOKEN``) unless ``--insecure true``; an admin token (``--admin_token`` or
``$LLMREC_ADMIN_TOKEN``, which enables ``POST /items`` and ``DELETE /items/{raw_id}``) must be at least
``MIN_ADMIN_TOKEN`` characters and differ from the feedback token; the port is bound (a port in use is a one-line
error; the bound socket is handed to uvicorn, so no other process can take the port in between); the run directory;
the catalog overlay (``--overlay``, default ``RUN/catalog_overlay.json``): it must be well-formed and, with an admin
token, writable and not used by another server. After the model loads, the overlay is re-applied
(``LiveCatalog.restore``), so items added or retired before a restart (or a kill -9) are served as they were.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass, field

from llmrec.config import ConfigError, parse_config
from llmrec.errors import DataError, UserError

HELP = "Serve a run directory over HTTP: /recommend, /items, /feedback, /health, /metrics, /docs."
TOKEN_ENV = "LLMREC_FEEDBACK_TOKEN"
ADMIN_TOKEN_ENV = "LLMREC_ADMIN_TOKEN"
MIN_ADMIN_TOKEN = 16  # characters: the token guards catalog changes and is not rate limited


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
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})
    max_k: int = field(default=100, metadata={"help": "Largest k a request may ask for."})
    max_history: int = field(default=200, metadata={"help": "Longest history a request may send (beyond: 413)."})
    batch_window_ms: float = field(
        default=5.0, metadata={"help": "Micro-batching window in milliseconds (spent only under load)."}
    )
    max_batch: int = field(default=64, metadata={"help": "Most requests scored in one batch."})
    max_queue: int = field(
        default=256, metadata={"help": "Most /recommend requests waiting to be scored (beyond: 503 + Retry-After)."}
    )
    request_timeout_s: float = field(
        default=10.0, metadata={"help": "Seconds a /recommend request may wait for its scores (beyond: 504)."}
    )
    max_body_bytes: int = field(default=1 << 20, metadata={"help": "Largest request body in bytes (beyond: 413)."})
    allowed_hosts: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Host header names accepted besides the bound host, localhost, 127.0.0.1 and ::1 (DNS "
            "rebinding protection); '*' accepts any."
        },
    )
    feedback_token: str = field(
        default="",
        metadata={
            "help": f"Bearer token /feedback requires (default: ${TOKEN_ENV}; prefer the variable, options show in "
            "ps); empty: /feedback is open."
        },
    )
    feedback_rate: float = field(
        default=10.0, metadata={"help": "Feedback requests per second per client IP (beyond: 429; 0: no limit)."}
    )
    feedback_burst: int = field(default=20, metadata={"help": "Feedback requests a client may send at once."})
    rating_min: float = field(default=1.0, metadata={"help": "Lowest rating value /feedback accepts."})
    rating_max: float = field(default=5.0, metadata={"help": "Highest rating value /feedback accepts."})
    admin_token: str = field(
        default="",
        metadata={
            "help": f"Bearer token POST /items and DELETE /items/ID require (default: ${ADMIN_TOKEN_ENV}; at least "
            f"{MIN_ADMIN_TOKEN} characters, not the feedback token); empty: catalog changes are disabled (403)."
        },
    )
    overlay: str = field(
        default="",
        metadata={
            "help": "Catalog overlay file: the items added and retired while serving, re-applied at start (default: "
            "RUN/catalog_overlay.json; its action log sits beside it as catalog_overlay.log.jsonl)."
        },
    )
    max_raw_id_chars: int = field(default=200, metadata={"help": "Longest raw id POST /items accepts."})
    max_title_chars: int = field(default=1000, metadata={"help": "Longest title POST /items accepts."})
    max_text_chars: int = field(default=10_000, metadata={"help": "Longest text POST /items accepts."})
    max_added_items: int = field(
        default=10_000, metadata={"help": "Most items POST /items may add in all (beyond: 409; retrain instead)."}
    )
    insecure: bool = field(default=False, metadata={"help": "Allow a non-loopback --host without a feedback token."})
    log_level: str = field(default="warning", metadata={"help": "uvicorn log level."})

    def __post_init__(self):
        if not self.run:
            raise ConfigError("run: a run directory is required (--run DIR)")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port: expected 1..65535, got {self.port}")
        positive = ("max_k", "max_history", "max_batch", "max_queue", "max_body_bytes", "feedback_burst")
        for name in (*positive, "max_raw_id_chars", "max_title_chars", "max_text_chars", "max_added_items"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.batch_window_ms < 0 or self.feedback_rate < 0:
            raise ConfigError("batch_window_ms, feedback_rate: must be >= 0")
        if not self.request_timeout_s > 0:
            raise ConfigError(f"request_timeout_s: must be > 0, got {self.request_timeout_s}")
        if not self.rating_min <= self.rating_max:
            raise ConfigError(f"rating_min/rating_max: need min <= max, got {self.rating_min}, {self.rating_max}")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str, insecure: bool) -> None:
    """Refuse to expose an unauthenticated /feedback beyond this machine (``ConfigError``)."""
    if not is_loopback(host) and not token and not insecure:
        raise ConfigError(
            f"host: {host} is not a loopback address, so anyone who can reach it could write feedback; set "
            f"--feedback_token (or ${TOKEN_ENV}), or pass --insecure true to serve it open"
        )


def check_admin_token(admin_token: str, feedback_token: str) -> None:
    """Refuse a guessable admin token, or one that is also the feedback token (``ConfigError``)."""
    if admin_token and len(admin_token) < MIN_ADMIN_TOKEN:
        raise ConfigError(
            f"admin_token: at least {MIN_ADMIN_TOKEN} characters, got {len(admin_token)} (e.g. python -c 'import "
            "secrets; print(secrets.token_urlsafe(24))')"
        )
    if admin_token and admin_token == feedback_token:
        raise ConfigError("admin_token: must differ from the feedback token (whoever sends feedback must not change "
                          "the catalog)")  # fmt: skip


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` as uvicorn binds it; ``ConfigError`` if the port is taken or the host wrong."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use; pass --port") from None
        raise ConfigError(f"host: cannot bind {host}:{port} ({e.strerror or e})") from None
    return sock


def load_run(run: str, device: str):
    """``load_recommender``, with a run directory that cannot be loaded as a one-line ``DataError``."""
    from safetensors import SafetensorError

    from llmrec.recommenders import load_recommender

    try:
        return load_recommender(run, device=device)
    except UserError:
        raise
    except FileNotFoundError as e:
        missing = f"{e.filename} is missing" if e.filename else " ".join(str(e).split())
        raise DataError(f"run: {run} is not a complete run directory ({missing})") from None
    except (OSError, SafetensorError) as e:
        raise DataError(f"run: cannot load {run}: {' '.join(str(e).split())[:300]}") from None


def main(argv: list[str]) -> int:
    cfg = parse_config(ServeConfig, argv, prog="llmrec serve", description=HELP)
    token = cfg.feedback_token or os.environ.get(TOKEN_ENV, "")
    admin = cfg.admin_token or os.environ.get(ADMIN_TOKEN_ENV, "")
    check_exposure(cfg.host, token, cfg.insecure)
    check_admin_token(admin, token)
    sock = bind_socket(cfg.host, cfg.port)
    try:
        return _serve(cfg, token, admin, sock)
    finally:
        sock.close()


def open_overlay(run: str, path: str, writable: bool):
    """The run's catalog overlay (``path`` or ``RUN/catalog_overlay.json``), locked for writing if ``writable``."""
    from pathlib import Path

    from llmrec.serving.overlay import OVERLAY_NAME, CatalogOverlay

    overlay = CatalogOverlay.load(path or Path(run) / OVERLAY_NAME)
    if writable:
        overlay.lock()
    return overlay


def _serve(cfg: ServeConfig, token: str, admin: str, sock: socket.socket) -> int:
    from pathlib import Path

    import torch
    import uvicorn

    from llmrec.runs import read_run_info
    from llmrec.serving.app import LOOPBACK_NAMES, ServeAccess, ServeLimits, create_app
    from llmrec.serving.events import EventLog
    from llmrec.serving.live import LiveCatalog

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    read_run_info(cfg.run)  # a run directory before its overlay
    overlay = open_overlay(cfg.run, cfg.overlay, writable=bool(admin))
    run = load_run(cfg.run, cfg.device)
    live = LiveCatalog(run, overlay, cfg.max_added_items)
    live.restore()
    log = EventLog(cfg.event_log or Path(cfg.run) / "feedback.sqlite", salt=cfg.salt or os.environ.get("LLMREC_SALT"))
    limits = ServeLimits(
        max_k=cfg.max_k,
        max_history=cfg.max_history,
        batch_window_ms=cfg.batch_window_ms,
        max_batch=cfg.max_batch,
        max_queue=cfg.max_queue,
        request_timeout_s=cfg.request_timeout_s,
        max_body_bytes=cfg.max_body_bytes,
        feedback_rate=cfg.feedback_rate,
        feedback_burst=cfg.feedback_burst,
        rating_min=cfg.rating_min,
        rating_max=cfg.rating_max,
        max_raw_id_chars=cfg.max_raw_id_chars,
        max_title_chars=cfg.max_title_chars,
        max_text_chars=cfg.max_text_chars,
        max_added_items=cfg.max_added_items,
    )
    hosts = (cfg.host, *LOOPBACK_NAMES, *cfg.allowed_hosts)
    access = ServeAccess(allowed_hosts=hosts, feedback_token=token, admin_token=admin)
    app = create_app(live, log, limits, model_name=run.name, access=access)
    state = overlay.state
    if state.added or state.retired:
        skipped = f" ({len(live.skipped)} added items already in the run, skipped)" if live.skipped else ""
        counts = f"{len(state.added)} items added, {len(state.retired)} retired"
        print(f"llmrec serve: overlay {overlay.path}: {counts}{skipped}")
    auth = "token required" if token else "open"
    changes = "admin token required" if admin else "disabled"
    print(
        f"llmrec serve: {run.name} ({len(live.catalog)} items) on http://{cfg.host}:{cfg.port}  (docs at /docs; "
        f"/feedback {auth}; catalog changes {changes})",
        flush=True,
    )
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
