"""The HTTP API: real-time recommendations from a run directory, plus a durable feedback log.

Protocol:
    The app serves any *recommender*: an object with ``score(histories: list[list[int]]) -> Tensor [B, N]``
    (scores over the whole catalog, internal item ids) and ``catalog`` (a ``llmrec.data.Catalog``). The LLM
    run, the baselines and Pop all satisfy it (``llmrec.inference.Recommender``). Concurrent ``/recommend`` requests
    are micro-batched (``llmrec.serving.batcher``): under load, everything arriving within ``batch_window_ms`` (up
    to ``max_batch``) is scored in one ``score`` call on a worker thread, so throughput grows with load.

    Items are addressed by their raw ids (as in the input data), alternate ids or exact titles. The catalog is live
    (``llmrec.serving.live``, routes in ``llmrec.serving.admin``): with the admin token, ``POST /items`` adds an item
    ``/recommend`` can return at once and ``DELETE /items/{raw_id}`` retires one (never recommended again, still
    resolvable in histories); both persist in the overlay file (``llmrec.serving.overlay``). Feedback events go to
    a SQLite database in WAL mode (``llmrec.serving.events``); user identifiers are stored only as salted SHA-256
    hashes. ``llmrec prepare --format events --input FILE`` reads it back.

    In front of the routes: a Host allow-list (``ServeAccess.allowed_hosts``), a body size limit
    (``ServeLimits.max_body_bytes``) and timing for ``/metrics`` (``llmrec.serving.middleware``); ``/feedback`` also
    has a bearer token and a per-client rate limit, catalog changes the admin token (``llmrec.serving.access``).
    Every error has the uniform body of ``llmrec.serving.errors``; no bad input gives a 5xx.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Query

import llmrec
from llmrec.data import AmbiguousItemError, Catalog
from llmrec.inference import rank
from llmrec.serving.access import RateLimiter, bearer_guard
from llmrec.serving.admin import catalog_routes
from llmrec.serving.batcher import BatcherError, MicroBatcher, ScoringTimeout, ServeStats
from llmrec.serving.errors import ApiError, add_error_handlers, echo
from llmrec.serving.events import EventLog
from llmrec.serving.live import LiveCatalog
from llmrec.serving.middleware import BodyLimit, HostAllowList, Timing
from llmrec.serving.overlay import ItemLimits
from llmrec.serving.schemas import FeedbackRequest, RecommendRequest, json_route

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class ServeLimits:
    """Sizes, rates and timeouts of the service (``llmrec serve`` options of the same names)."""

    max_k: int = 100
    max_history: int = 200
    batch_window_ms: float = 5.0
    max_batch: int = 64
    max_queue: int = 256  # requests waiting for a batch; beyond: 503 + Retry-After
    request_timeout_s: float = 10.0  # from queueing to scores; beyond: 504
    max_body_bytes: int = 1 << 20  # beyond: 413
    feedback_rate: float = 10.0  # feedback requests per second per client IP (<= 0: no limit)
    feedback_burst: int = 20
    rating_min: float = 1.0  # the data set's rating scale: event=rating values must lie in it
    rating_max: float = 5.0
    max_raw_id_chars: int = ItemLimits.max_raw_id_chars  # POST /items: longer fields are a 422
    max_title_chars: int = ItemLimits.max_title_chars
    max_text_chars: int = ItemLimits.max_text_chars
    max_added_items: int = 10_000  # items POST /items may add in all (the overlay is rewritten on each change)

    def item_limits(self) -> ItemLimits:
        return ItemLimits(self.max_raw_id_chars, self.max_title_chars, self.max_text_chars)


@dataclass
class ServeAccess:
    """Who may talk to the service: accepted Host header names (``"*"``: any), the ``/feedback`` and admin tokens."""

    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    feedback_token: str = ""  # "": /feedback is open
    admin_token: str = ""  # "": catalog changes (POST /items, DELETE /items/{raw_id}) are disabled (403)


@dataclass
class _Service:
    """What the routes share."""

    live: LiveCatalog
    batcher: MicroBatcher
    stats: ServeStats
    limits: ServeLimits
    event_log: EventLog | None
    name: str

    @property
    def catalog(self) -> Catalog:
        """The current catalog (replaced, never mutated, when items are added): read it once per use."""
        return self.live.catalog


def _resolve(catalog: Catalog, ref: str | int, where: str) -> int:
    try:
        return catalog.resolve(str(ref))
    except AmbiguousItemError as e:  # the catalog's message lists the candidate raw ids
        raise ApiError(422, where, f"{where}: {e.args[0]}") from None
    except KeyError:
        raise ApiError(
            422, where, f"{where}: unknown item {echo(ref)} (not a raw id, alternate id or exact title in the catalog)"
        ) from None


def _item_json(catalog: Catalog, i: int) -> dict[str, Any]:
    return {
        "id": catalog.raw_ids[i],
        "alt_id": catalog.alt_ids[i],
        "title": catalog.titles[i],
        "text": catalog.texts[i],
    }


async def _score(batcher: MicroBatcher, history: list[int]):
    """The batcher's ``[N]`` scores, its refusals as 503 (overloaded, stopping) or 504 (timed out)."""
    try:
        return await batcher.score(history)
    except ScoringTimeout as e:
        raise ApiError(504, None, str(e)) from None
    except BatcherError as e:  # QueueFull, BatcherStopped
        raise ApiError(503, None, str(e), headers={"Retry-After": "1"}) from None


def _recommend_routes(svc: _Service) -> APIRouter:
    router = APIRouter(route_class=json_route())

    @router.post("/recommend")
    async def recommend(req: RecommendRequest):
        top = min(svc.limits.max_k, len(svc.catalog))
        if not 1 <= req.k <= top:
            raise ApiError(422, "k", f"k: expected an integer in 1..{top}, got {echo(req.k)}")
        if not req.history:
            raise ApiError(422, "history", "history: expected at least one item")
        if len(req.history) > svc.limits.max_history:
            limit = svc.limits.max_history
            raise ApiError(413, "history", f"history: at most {limit} items, got {len(req.history)}")
        hist = [_resolve(svc.catalog, ref, f"history[{n}]") for n, ref in enumerate(req.history)]
        scores = svc.live.mask(await _score(svc.batcher, hist))  # [N], retired items at -inf
        ranked = rank(scores.unsqueeze(0), [hist], req.k, req.exclude_seen)[0]
        catalog = svc.catalog  # read after scoring: it covers every scored item
        items = [{"rank": r + 1, **_item_json(catalog, i), "score": round(s, 6)} for r, (i, s) in enumerate(ranked)]
        return {"model": svc.name, "k": len(items), "items": items}

    return router


def _item_routes(svc: _Service) -> APIRouter:
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def get_item(item_id: str):
        catalog = svc.catalog
        try:
            i = catalog.index_of_raw(item_id)
        except KeyError:
            raise ApiError(404, "item_id", f"item_id: unknown item {echo(item_id)}") from None
        return {**_item_json(catalog, i), "retired": svc.live.is_retired(i)}

    @router.get("/items")
    async def search_items(
        query: str = Query(..., min_length=1, max_length=200), limit: int = Query(20, ge=1, le=100)
    ):
        catalog = svc.catalog
        return {"query": query, "items": [_item_json(catalog, i) for i in catalog.search(query, limit)]}

    return router


def _check_value(event: str, value: float | None, limits: ServeLimits) -> None:
    """click/purchase: null or 1; rating: required and within the rating scale."""
    if event != "rating":
        if value not in (None, 1):
            raise ApiError(422, "value", f"value: must be null or 1 for event={event}, got {echo(value)}")
        return
    lo, hi = limits.rating_min, limits.rating_max
    if value is None:
        raise ApiError(422, "value", f"value: required for event=rating (a number in {lo:g}..{hi:g})")
    if not lo <= value <= hi:
        raise ApiError(422, "value", f"value: a rating must lie in {lo:g}..{hi:g}, got {echo(value)}")


def _feedback_routes(svc: _Service, access: ServeAccess) -> APIRouter:
    limiter = RateLimiter(svc.limits.feedback_rate, svc.limits.feedback_burst)
    router = APIRouter(route_class=json_route(limiter.guard, bearer_guard(access.feedback_token)))

    @router.post("/feedback")
    async def feedback(req: FeedbackRequest):
        catalog = svc.catalog
        idx = _resolve(catalog, req.item, "item")
        _check_value(req.event, req.value, svc.limits)
        if svc.event_log is None:
            raise ApiError(503, None, "feedback: this server was started without an event log")
        event_id = await asyncio.get_running_loop().run_in_executor(
            None, svc.event_log.append, req.user, catalog.raw_ids[idx], req.event, req.value
        )
        return {"stored": True, "id": event_id}

    return router


def _status_routes(svc: _Service) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health():
        return {"status": "ok", "model": svc.name, "items": len(svc.catalog), "retired": svc.live.num_retired()}

    @router.get("/metrics")
    async def metrics():
        out = {**svc.stats.snapshot(), "queued": svc.batcher.queued()}
        if svc.event_log is not None:
            out["feedback_events"] = svc.event_log.count()
        return out

    return router


def create_app(
    recommender,
    event_log: EventLog | None = None,
    limits: ServeLimits | None = None,
    model_name: str = "",
    access: ServeAccess | None = None,
) -> FastAPI:
    """Build the FastAPI app around an already loaded recommender (the model loads once, before serving).

    ``recommender`` may be a ``LiveCatalog`` (its overlay already restored, as ``llmrec serve`` passes it); any
    other recommender is wrapped in one whose changes are kept in memory only. The batcher starts and stops with
    the app's lifespan; stopping fails the requests still waiting and closes ``event_log``.
    """
    limits, access = limits or ServeLimits(), access or ServeAccess()
    stats = ServeStats()
    live = recommender
    if not isinstance(live, LiveCatalog):
        live = LiveCatalog(recommender, None, limits.max_added_items)
    batcher = MicroBatcher(
        live.score,
        limits.batch_window_ms / 1000,
        limits.max_batch,
        stats,
        max_queue=limits.max_queue,
        timeout_s=limits.request_timeout_s,
    )
    name = model_name or live.name
    svc = _Service(live, batcher, stats, limits, event_log, name)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            if event_log is not None:
                event_log.close()

    app = FastAPI(
        title="llmrec",
        version=llmrec.__version__,
        description="Next-item recommendation with feedback capture and a live catalog.",
        lifespan=lifespan,
    )
    add_error_handlers(app)
    routers = (
        _recommend_routes(svc),
        _item_routes(svc),
        catalog_routes(live, limits.item_limits(), access.admin_token),
        _feedback_routes(svc, access),
        _status_routes(svc),
    )
    for router in routers:
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)  # added last = outermost: Timing sees all
    app.add_middleware(HostAllowList, allowed=access.allowed_hosts)
    app.add_middleware(Timing, stats=stats)
    return app
