"""Micro-batching of concurrent scoring requests (what makes ``/recommend`` throughput grow with load).

Protocol:
    ``await batcher.score(history)`` returns the ``[N]`` score row of one history, or raises a ``BatcherError``
    (never a fault of the request, so the app answers 5xx): ``QueueFull`` when ``max_queue`` requests are already
    waiting, ``ScoringTimeout`` when the result is not ready ``timeout_s`` after the call, ``BatcherStopped`` once
    ``stop()`` ran. ``stop()`` fails every request still waiting or being scored, so nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

ScoreFn = Callable[[list[list[int]]], torch.Tensor]  # histories -> [B, N]


@dataclass
class ServeStats:
    """Request counts, error count, latency windows per route and batch sizes, for ``/metrics``."""

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


class BatcherError(Exception):
    """A request the batcher did not score; the message says why (for the client)."""


class QueueFull(BatcherError):
    """``max_queue`` requests are already waiting."""


class ScoringTimeout(BatcherError):
    """The score was not ready within ``timeout_s``."""


class BatcherStopped(BatcherError):
    """The batcher is not running (not started yet, or shutting down)."""


class MicroBatcher:
    """Collects concurrent scoring requests for up to ``window_s`` seconds and scores them in one call.

    The window is only spent under load (the previous batch had several requests, or more are already queued):
    a lone request is scored at once, so batching costs nothing at concurrency 1. At most ``max_queue`` requests
    wait (beyond the batch being scored); each waits at most ``timeout_s``. Requests that timed out before their
    batch was formed are not scored.
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        window_s: float,
        max_batch: int,
        stats: ServeStats,
        max_queue: int = 256,
        timeout_s: float = 10.0,
    ):
        self.score_fn, self.window_s, self.max_batch, self.stats = score_fn, window_s, max_batch, stats
        self.max_queue, self.timeout_s = max_queue, timeout_s
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.last_batch_size = 1
        self._batch: list[tuple[list[int], asyncio.Future]] = []  # the batch being scored

    def queued(self) -> int:
        """Requests waiting for a batch (not counting the batch being scored)."""
        return self.queue.qsize() if self.queue is not None else 0

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker and fail every request still waiting or being scored with ``BatcherStopped``."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pending = list(self._batch)
        while self.queue is not None and not self.queue.empty():
            pending.append(self.queue.get_nowait())
        self._batch = []
        for _, fut in pending:
            if not fut.done():
                fut.set_exception(BatcherStopped("the server is shutting down; retry on another instance"))

    async def score(self, history: list[int]) -> torch.Tensor:
        """The ``[N]`` scores of ``history``; raises ``QueueFull``, ``ScoringTimeout`` or ``BatcherStopped``."""
        if self.task is None or self.queue is None:
            raise BatcherStopped("the server is not accepting requests (starting or shutting down)")
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((history, fut))
        except asyncio.QueueFull:
            raise QueueFull(f"the server is overloaded: {self.max_queue} requests are already waiting") from None
        try:
            return await asyncio.wait_for(fut, self.timeout_s)
        except asyncio.TimeoutError:
            raise ScoringTimeout(f"scoring did not finish within {self.timeout_s:g} s") from None

    async def _collect(self) -> list[tuple[list[int], asyncio.Future]]:
        """Wait for one request, then gather more for up to the window (only under load) or ``max_batch``."""
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
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
        return [(h, fut) for h, fut in batch if not fut.done()]  # timed-out requests are not scored

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._batch = await self._collect()
            if not self._batch:
                continue
            self.last_batch_size = len(self._batch)
            try:
                scores = await loop.run_in_executor(None, self._score_sync, [h for h, _ in self._batch])
                for i, (_, fut) in enumerate(self._batch):
                    if not fut.done():
                        fut.set_result(scores[i])
            except Exception as e:  # scoring failed: fail these requests, keep serving
                for _, fut in self._batch:
                    if not fut.done():
                        fut.set_exception(e)
            self.stats.batches += 1
            self.stats.batched_requests += len(self._batch)
            self._batch = []

    def _score_sync(self, histories: list[list[int]]) -> torch.Tensor:
        with torch.inference_mode():
            return self.score_fn(histories).float().cpu()
