"""The HTTP API: real-time recommendations from a run directory, plus a durable feedback log.

Protocol:
    The app serves any *recommender*: an object with ``score(histories: list[list[int]]) -> Tensor [B, N]``
    (scores over the whole catalog, internal item ids) and ``catalog`` (a ``llmrec.data.Catalog``). The LLM
    run, the baselines and Pop all satisfy it (``llmrec.runs.load_run``). Concurrent ``/recommend`` requests are
    micro-batched: the first request opens a window of ``batch_window_ms``; everything that arrives in it (up to
    ``max_batch``) is scored in one ``score`` call on a worker thread, so throughput grows with load.

    Items are addressed by their *raw* ids (as in the input data) or exact titles. Feedback events go to a
    SQLite database in WAL mode (``events`` table: id, ts, user_hash, item, event, value); user identifiers
    are stored only as salted SHA-256 hashes. ``llmrec prepare --format events --input FILE`` reads it back.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from llmrec.data import Catalog
from llmrec.runs import top_k


@dataclass
class ServeLimits:
    max_k: int = 100
    max_history: int = 200
    batch_window_ms: float = 5.0
    max_batch: int = 64


class RecommendRequest(BaseModel):
    history: list[str | int] = Field(..., description="Item raw ids or exact titles, oldest first.")
    k: int = Field(10, description="How many items to return.")
    exclude_seen: bool = Field(True, description="Never recommend items already in the history.")


class FeedbackRequest(BaseModel):
    user: str = Field(..., min_length=1, max_length=256, description="User identifier (stored only as a salted hash).")
    item: str | int = Field(..., description="Item raw id or exact title.")
    event: Literal["click", "purchase", "rating"]
    value: float | None = Field(None, description="Rating value (required for event=rating).")


class ApiError(Exception):
    def __init__(self, status: int, field: str, message: str):
        self.status, self.field, self.message = status, field, message


class EventLog:
    """Append-only SQLite event log (WAL, synchronous=FULL: an acknowledged event survives kill -9)."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
        "user_hash TEXT NOT NULL, item TEXT NOT NULL, event TEXT NOT NULL, value REAL)"
    )

    def __init__(self, path: str | os.PathLike, salt: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.salt = salt or self._load_or_create_salt()
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute(self.SCHEMA)

    def _load_or_create_salt(self) -> str:
        salt_file = self.path.with_suffix(self.path.suffix + ".salt")
        if salt_file.is_file():
            return salt_file.read_text().strip()
        salt = secrets.token_hex(16)
        fd = os.open(salt_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(salt)
        return salt

    def hash_user(self, user: str) -> str:
        return hashlib.sha256(f"{self.salt}:{user}".encode()).hexdigest()

    def append(self, user: str, item: str, event: str, value: float | None) -> int:
        with self._lock:
            cur = self._con.execute(
                "INSERT INTO events (ts, user_hash, item, event, value) VALUES (?, ?, ?, ?, ?)",
                (time.time(), self.hash_user(user), item, event, value),
            )
            return int(cur.lastrowid)

    def count(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        self._con.close()


@dataclass
class _Stats:
    started: float = field(default_factory=time.time)
    requests: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    latencies: dict[str, deque] = field(default_factory=dict)
    batches: int = 0
    batched_requests: int = 0

    def record(self, route: str, seconds: float, ok: bool) -> None:
        self.requests[route] = self.requests.get(route, 0) + 1
        self.errors += 0 if ok else 1
        self.latencies.setdefault(route, deque(maxlen=10_000)).append(seconds * 1000)

    def snapshot(self) -> dict[str, Any]:
        lat = {}
        for route, values in self.latencies.items():
            if values:
                t = torch.tensor(list(values))
                q = torch.quantile(t, torch.tensor([0.5, 0.95, 0.99])).tolist()
                lat[route] = {
                    "p50_ms": round(q[0], 3),
                    "p95_ms": round(q[1], 3),
                    "p99_ms": round(q[2], 3),
                    "n": len(values),
                }
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "requests": dict(self.requests),
            "errors": self.errors,
            "latency": lat,
            "batches": self.batches,
            "mean_batch_size": round(self.batched_requests / self.batches, 3) if self.batches else 0.0,
        }


class MicroBatcher:
    """Collects concurrent scoring requests for up to ``window`` seconds and scores them in one call.

    The window is only spent under load (the previous batch had several requests, or more are already queued):
    a lone request is scored at once, so batching costs nothing at concurrency 1.
    """

    def __init__(self, score_fn, window_s: float, max_batch: int, stats: _Stats):
        self.score_fn, self.window_s, self.max_batch, self.stats = score_fn, window_s, max_batch, stats
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.last_batch_size = 1

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()

    async def score(self, history: list[int]) -> torch.Tensor:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((history, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            batch = [first]
            under_load = self.last_batch_size > 1 or not self.queue.empty()
            deadline = loop.time() + (self.window_s if under_load else 0.0)
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    while not self.queue.empty() and len(batch) < self.max_batch:  # take what is already here
                        batch.append(self.queue.get_nowait())
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            self.last_batch_size = len(batch)
            histories = [h for h, _ in batch]
            try:
                scores = await loop.run_in_executor(None, self._score_sync, histories)
                for i, (_, fut) in enumerate(batch):
                    if not fut.done():
                        fut.set_result(scores[i])
            except Exception as e:  # scoring failed: fail these requests, keep serving
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
            self.stats.batches += 1
            self.stats.batched_requests += len(batch)

    def _score_sync(self, histories: list[list[int]]) -> torch.Tensor:
        with torch.inference_mode():
            return self.score_fn(histories).float().cpu()


def _resolve(catalog: Catalog, ref: str | int, where: str) -> int:
    try:
        return catalog.resolve(str(ref))
    except KeyError:
        raise ApiError(
            422, where, f"{where}: unknown item {ref!r} (not a raw item id or exact title in the catalog)"
        ) from None


def _item_json(catalog: Catalog, i: int) -> dict[str, Any]:
    return {"id": catalog.raw_ids[i], "title": catalog.titles[i], "text": catalog.texts[i]}


def create_app(
    recommender, event_log: EventLog | None = None, limits: ServeLimits | None = None, model_name: str = ""
) -> FastAPI:
    """Build the FastAPI app around an already loaded recommender (the model loads once, before serving)."""
    limits = limits or ServeLimits()
    catalog: Catalog = recommender.catalog
    stats = _Stats()
    batcher = MicroBatcher(recommender.score, limits.batch_window_ms / 1000, limits.max_batch, stats)
    name = model_name or getattr(recommender, "name", type(recommender).__name__)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()
        if event_log is not None:
            event_log.close()

    app = FastAPI(
        title="llmrec",
        version="0.1.0",
        description="Next-item recommendation with feedback capture.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def timing(request: Request, call_next):
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # never leak a stack trace
            response = JSONResponse({"error": "internal error"}, status_code=500)
        route = request.scope.get("route")
        stats.record(getattr(route, "path", "unmatched"), time.perf_counter() - t0, response.status_code < 400)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        msg = "malformed JSON body" if first.get("type") == "json_invalid" else first.get("msg", "invalid")
        return JSONResponse({"error": f"{where}: {msg}", "field": where}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception):
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.post("/recommend")
    async def recommend(req: RecommendRequest):
        if not 1 <= req.k <= min(limits.max_k, len(catalog)):
            raise ApiError(422, "k", f"k: expected 1..{min(limits.max_k, len(catalog))}, got {req.k}")
        if not req.history:
            raise ApiError(422, "history", "history: expected at least one item")
        if len(req.history) > limits.max_history:
            raise ApiError(413, "history", f"history: at most {limits.max_history} items, got {len(req.history)}")
        hist = [_resolve(catalog, ref, f"history[{n}]") for n, ref in enumerate(req.history)]
        ranked = top_k(await batcher.score(hist), hist, req.k, req.exclude_seen)
        items = [{"rank": r + 1, **_item_json(catalog, i), "score": round(s, 6)} for r, (i, s) in enumerate(ranked)]
        k = len(items)
        return {"model": name, "k": k, "items": items}

    @app.get("/items/{item_id}")
    async def get_item(item_id: str):
        try:
            return _item_json(catalog, catalog.index_of_raw(item_id))
        except KeyError:
            raise ApiError(404, "item_id", f"item_id: unknown item {item_id!r}") from None

    @app.get("/items")
    async def search_items(
        query: str = Query(..., min_length=1, max_length=200), limit: int = Query(20, ge=1, le=100)
    ):
        return {"query": query, "items": [_item_json(catalog, i) for i in catalog.search(query, limit)]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "items": len(catalog)}

    @app.get("/metrics")
    async def metrics():
        out = stats.snapshot()
        if event_log is not None:
            out["feedback_events"] = event_log.count()
        return out

    @app.post("/feedback")
    async def feedback(req: FeedbackRequest):
        if event_log is None:
            raise ApiError(503, "feedback", "feedback: this server was started without an event log")
        idx = _resolve(catalog, req.item, "item")
        if req.event == "rating" and req.value is None:
            raise ApiError(422, "value", "value: required for event=rating")
        event_id = await asyncio.get_running_loop().run_in_executor(
            None, event_log.append, req.user, catalog.raw_ids[idx], req.event, req.value
        )
        return {"stored": True, "id": event_id}

    return app
