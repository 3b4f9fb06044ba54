"""The HTTP API's defences: micro-batcher limits, body limit, Host allow-list, feedback token and rate limit,
strict types, and the uniform error body for every bad input (never a 5xx)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from llmrec.data import Catalog
from llmrec.serving.access import RateLimiter
from llmrec.serving.app import ServeAccess, ServeLimits, create_app
from llmrec.serving.batcher import BatcherStopped, MicroBatcher, QueueFull, ScoringTimeout, ServeStats
from llmrec.serving.events import EventLog
from llmrec.serving.middleware import hostname

JSON = {"content-type": "application/json"}
TOKEN = {"authorization": "Bearer s3cret"}


class FakeRecommender:
    """Scores item i as i; ``gate`` (if set) blocks scoring until it is set; ``delay`` sleeps in scoring."""

    def __init__(self, n: int = 30, delay: float = 0.0, gate: threading.Event | None = None):
        titles = [f"Item {i}" for i in range(n)]
        titles[7] = titles[8] = "Twin"  # an ambiguous title
        self.catalog = Catalog([f"r{i}" for i in range(n)], titles)
        self.delay, self.gate, self.name, self.batches = delay, gate, "fake", []
        self.scoring = threading.Event()

    def score(self, histories):
        self.scoring.set()
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay)
        self.batches.append(len(histories))
        return torch.arange(len(self.catalog), dtype=torch.float32).repeat(len(histories), 1)


def _client(tmp_path, limits: ServeLimits | None = None, access: ServeAccess | None = None, rec=None):
    app = create_app(rec or FakeRecommender(), EventLog(tmp_path / "ev.sqlite", salt="s"), limits, access=access)
    return TestClient(app, base_url="http://localhost", raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path):
    limits = ServeLimits(max_k=20, max_history=5, max_body_bytes=10_000, feedback_rate=0)
    with _client(tmp_path, limits, ServeAccess(feedback_token="s3cret")) as c:
        yield c


def _assert_uniform(r, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "field"} and isinstance(body["error"], str), body
    if field is not None:
        assert body["field"] == field, body
    assert "Traceback" not in r.text and len(body["error"]) < 400
    return body


# ---------------------------------------------------------------- the micro-batcher


def _batcher(rec: FakeRecommender, **kw) -> MicroBatcher:
    return MicroBatcher(rec.score, kw.pop("window_s", 0.05), kw.pop("max_batch", 8), ServeStats(), **kw)


def test_lone_request_is_scored_without_waiting_for_the_window():
    async def go():
        b = _batcher(FakeRecommender(), window_s=2.0)
        await b.start()
        t0 = time.perf_counter()
        scores = await b.score([1])
        await b.stop()
        return time.perf_counter() - t0, scores

    elapsed, scores = asyncio.run(go())
    assert elapsed < 1.0 and scores.shape == (30,)


def test_full_queue_is_refused_and_waiting_requests_still_finish():
    gate, rec = threading.Event(), None
    rec = FakeRecommender(gate=gate)

    async def go():
        b = _batcher(rec, max_batch=1, max_queue=2)
        await b.start()
        first = asyncio.create_task(b.score([1]))
        await asyncio.get_running_loop().run_in_executor(None, rec.scoring.wait, 5)  # first is being scored
        waiting = [asyncio.create_task(b.score([2])), asyncio.create_task(b.score([3]))]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="2 requests are already waiting"):
            await b.score([4])
        gate.set()
        results = await asyncio.gather(first, *waiting)
        await b.stop()
        return results

    assert [r.shape for r in asyncio.run(go())] == [(30,)] * 3


def test_request_times_out_and_timed_out_requests_are_not_scored():
    rec = FakeRecommender(delay=0.4)

    async def go():
        b = _batcher(rec, max_batch=1, timeout_s=0.1)
        await b.start()
        results = await asyncio.gather(b.score([1]), b.score([2]), return_exceptions=True)
        await asyncio.sleep(0.6)  # let the first (abandoned) batch finish
        await b.stop()
        return results

    results = asyncio.run(go())
    assert all(isinstance(r, ScoringTimeout) for r in results)
    assert rec.batches == [1]  # the second request had timed out before its batch was formed


def test_stop_fails_every_pending_request():
    gate = threading.Event()
    rec = FakeRecommender(gate=gate)

    async def go():
        b = _batcher(rec, max_batch=1, timeout_s=30)
        await b.start()
        tasks = [asyncio.create_task(b.score([i])) for i in range(4)]
        await asyncio.get_running_loop().run_in_executor(None, rec.scoring.wait, 5)
        t0 = time.perf_counter()
        await b.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        with pytest.raises(BatcherStopped):
            await b.score([9])
        gate.set()
        return time.perf_counter() - t0, results

    elapsed, results = asyncio.run(go())
    assert elapsed < 2 and all(isinstance(r, BatcherStopped) for r in results)


def test_http_overload_is_503_with_retry_after_and_timeout_is_504(tmp_path):
    gate = threading.Event()
    rec = FakeRecommender(gate=gate)
    with _client(tmp_path, ServeLimits(max_batch=1, max_queue=1), rec=rec) as c:
        body = {"history": ["r1"], "k": 3}
        results: list[int] = []
        post = lambda: results.append(c.post("/recommend", json=body).status_code)  # noqa: E731
        threads = [threading.Thread(target=post) for _ in range(2)]
        threads[0].start()
        assert rec.scoring.wait(10)
        threads[1].start()
        deadline = time.time() + 10
        while c.get("/metrics").json()["queued"] < 1 and time.time() < deadline:  # the second one waits in the queue
            time.sleep(0.02)
        r = c.post("/recommend", json=body)
        _assert_uniform(r, 503)
        assert r.headers["retry-after"] == "1" and r.json()["field"] is None
        gate.set()
        for t in threads:
            t.join()
        assert results == [200, 200]
    with _client(tmp_path, ServeLimits(request_timeout_s=0.05), rec=FakeRecommender(delay=0.3)) as c:
        r = c.post("/recommend", json={"history": ["r1"], "k": 3})
        assert "within 0.05 s" in _assert_uniform(r, 504)["error"]


# ---------------------------------------------------------------- bodies, content types, routes


@pytest.mark.parametrize(
    "body,status,field",
    [
        (b"{not json", 422, "body"),
        (b"", 422, "body"),
        (b"null", 422, "body"),
        (b'{"history": ["r1"], "k": 3', 422, "body"),
        (b'{"history": ["\xff\xfe"], "k": 3}', 422, "body"),  # invalid UTF-8
        (b"[" * 9000, 422, "body"),  # nested too deeply for the JSON parser
        (b'{"history": ["r1"], "k": ' + b"7" * 4301 + b"}", 422, "body"),  # past int max-str-digits
        (b'{"history": ["r1"], "k": ' + b"7" * 4000 + b"}", 422, "k"),  # a legal but absurd int
        (b'{"history": [NaN], "k": 3}', 422, "history[0]"),
        (b'{"history": ["r1"], "k": NaN}', 422, "k"),
        (b'{"history": ["r1"], "k": 1e999}', 422, "k"),
        (b'{"history": ["\\ud800"], "k": 3}', 422, "history[0]"),  # a lone surrogate
        (b'{"history": ["r1"], "k": 3, "extra": 1}', 422, "extra"),
    ],
)
def test_unreadable_bodies_are_422_with_the_uniform_body(client, body, status, field):
    _assert_uniform(client.post("/recommend", content=body, headers=JSON), status, field)


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"history": ["r1"], "k": "3"}, "k"),
        ({"history": ["r1"], "k": True}, "k"),
        ({"history": ["r1"], "k": 2.0}, "k"),
        ({"history": [True], "k": 3}, "history[0]"),
        ({"history": ["r1", 1.5], "k": 3}, "history[1]"),
        ({"history": ["r1", None], "k": 3}, "history[1]"),
        ({"history": [["r1"]], "k": 3}, "history[0]"),
        ({"history": ["r1"], "exclude_seen": "yes"}, "exclude_seen"),
        ({"history": ["x" * 5000], "k": 3}, "history[0]"),
    ],
)
def test_types_are_strict(client, payload, field):
    _assert_uniform(client.post("/recommend", json=payload), 422, field)


def test_integer_item_ids_are_accepted(tmp_path):
    rec = FakeRecommender()
    rec.catalog = Catalog([str(100 + i) for i in range(30)], [f"T{i}" for i in range(30)])
    with _client(tmp_path, rec=rec) as c:
        r = c.post("/recommend", json={"history": [129, "128"], "k": 1})
        assert r.status_code == 200 and r.json()["items"][0]["id"] == "127"


def test_ambiguous_title_names_the_candidates_and_echoes_are_short(client):
    body = _assert_uniform(client.post("/recommend", json={"history": ["Twin"], "k": 3}), 422, "history[0]")
    assert "ambiguous" in body["error"] and "r7" in body["error"] and "r8" in body["error"]
    body = _assert_uniform(client.post("/recommend", json={"history": ["q" * 900], "k": 3}), 422, "history[0]")
    assert "..." in body["error"] and len(body["error"]) < 200
    body = _assert_uniform(client.post("/recommend", json={"history": ["r1"], "k": 10**200}), 422, "k")
    assert len(body["error"]) < 150


def test_body_limit_413_by_content_length_and_while_streaming(client):
    _assert_uniform(client.post("/recommend", content=b" " * 10_001, headers=JSON), 413, "body")
    chunks = (b" " * 1000 for _ in range(50))  # no Content-Length: a chunked body
    _assert_uniform(client.post("/recommend", content=chunks, headers=JSON), 413, "body")
    assert client.post("/recommend", json={"history": ["r1"], "k": 3}).status_code == 200


def test_streamed_body_is_not_read_past_the_limit():
    """Raw ASGI: the app stops pulling chunks right after the limit, so memory stays bounded."""
    app = create_app(FakeRecommender(), limits=ServeLimits(max_body_bytes=1000))
    pulled, sent = 0, []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * 100, "more_body": True}  # an endless body

    async def send(message):
        sent.append(message)

    headers = [(b"host", b"localhost"), (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/recommend",
        "raw_path": b"/recommend",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert sent[0]["status"] == 413 and pulled <= 11
    assert json.loads(sent[1]["body"])["field"] == "body"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_post_needs_a_json_content_type(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/recommend", content=b'{"history": ["r1"]}', headers=headers)
    _assert_uniform(r, 415, "content-type")
    r = client.post("/feedback", content=b"user=a", headers={**headers, **TOKEN})
    _assert_uniform(r, 415, "content-type")


def test_unknown_routes_and_methods_have_the_uniform_body(client):
    _assert_uniform(client.get("/nope/" + "x" * 500), 404, "path")
    r = client.get("/recommend")
    assert "POST" in _assert_uniform(r, 405, "method")["error"] and r.headers["allow"] == "POST"
    _assert_uniform(client.delete("/health"), 405, "method")
    _assert_uniform(client.get("/items/zzz"), 404, "item_id")
    _assert_uniform(client.get("/items"), 422, "query")
    _assert_uniform(client.get("/items", params={"query": "a", "limit": "9" * 5000}), 422, "limit")


# ---------------------------------------------------------------- Host header, token, rate limit


def test_host_allow_list(tmp_path):
    assert hostname("[::1]:8000") == "::1" and hostname("LocalHost.:80") == "localhost" and hostname("a") == "a"
    with _client(tmp_path, access=ServeAccess(allowed_hosts=("localhost", "::1", "api.example"))) as c:
        for host in ("localhost:8000", "[::1]:8000", "api.example", "API.example:443"):
            assert c.get("/health", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", "localhost.evil.example", "127.0.0.1"):
            _assert_uniform(c.get("/health", headers={"host": host}), 400, "host")
        _assert_uniform(c.post("/recommend", json={"history": ["r1"]}, headers={"host": "x"}), 400, "host")
    with _client(tmp_path, access=ServeAccess(allowed_hosts=("*",))) as c:
        assert c.get("/health", headers={"host": "anything"}).status_code == 200


def test_feedback_token(client, tmp_path):
    ok = {"user": "alice", "item": "r1", "event": "click"}
    r = client.post("/feedback", json=ok)
    _assert_uniform(r, 401, "authorization")
    assert r.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer wrong", "Basic s3cret", "s3cret", "Bearer s3cret2", "Bearer \u00e9".encode("latin-1")):
        _assert_uniform(client.post("/feedback", json=ok, headers={"authorization": header}), 401, "authorization")
    _assert_uniform(client.post("/feedback", json={"bad": 1}), 401, "authorization")  # auth before validation
    assert client.post("/feedback", json=ok, headers=TOKEN).json()["stored"]
    assert client.post("/feedback", json=ok, headers={"authorization": "bearer  s3cret "}).status_code == 200
    with _client(tmp_path) as open_client:  # no token configured: open
        assert open_client.post("/feedback", json=ok).status_code == 200


def test_feedback_rate_limit_per_client(tmp_path):
    limits = ServeLimits(feedback_rate=0.5, feedback_burst=3)
    with _client(tmp_path, limits) as c:
        ok = {"user": "a", "item": "r1", "event": "click"}
        assert [c.post("/feedback", json=ok).status_code for _ in range(3)] == [200] * 3
        r = c.post("/feedback", json=ok)
        _assert_uniform(r, 429, "request")
        assert 1 <= int(r.headers["retry-after"]) <= 2
        assert c.post("/recommend", json={"history": ["r1"], "k": 1}).status_code == 200  # only /feedback


def test_rate_limiter_refills_and_stays_bounded():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, max_keys=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] = 0.5
    assert limiter.take("a") == 0.0 and limiter.take("b") == 0.0
    for key in "cdef":
        limiter.take(key)
    assert len(limiter.buckets) == 3
    assert RateLimiter(rate=0, burst=1).take("x") == 0.0


# ---------------------------------------------------------------- feedback values


@pytest.mark.parametrize(
    "event,value,status",
    [
        ("click", None, 200),
        ("click", 1, 200),
        ("click", 3, 422),
        ("click", 0, 422),
        ("purchase", 1.0, 200),
        ("purchase", -1, 422),
        ("rating", None, 422),
        ("rating", 4.5, 200),
        ("rating", 1, 200),
        ("rating", 0, 422),
        ("rating", 6, 422),
        ("rating", True, 422),
        ("rating", "4", 422),
    ],
)
def test_feedback_values_per_event(client, event, value, status):
    r = client.post("/feedback", json={"user": "u", "item": "r1", "event": event, "value": value}, headers=TOKEN)
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        _assert_uniform(r, status, "value")


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_feedback_values_must_be_finite(client, raw):
    body = b'{"user": "u", "item": "r1", "event": "rating", "value": ' + raw + b"}"
    _assert_uniform(client.post("/feedback", content=body, headers={**JSON, **TOKEN}), 422, "value")


def test_rating_scale_is_configurable_and_bad_users_are_422(tmp_path):
    with _client(tmp_path, ServeLimits(rating_min=0, rating_max=10)) as c:
        assert c.post("/feedback", json={"user": "u", "item": "r1", "event": "rating", "value": 9}).status_code == 200
        for user in ("", "x" * 257, 5, None):
            _assert_uniform(c.post("/feedback", json={"user": user, "item": "r1", "event": "click"}), 422, "user")
        body = b'{"user": "\\udc00", "item": "r1", "event": "click"}'
        _assert_uniform(c.post("/feedback", content=body, headers=JSON), 422, "user")
        r = c.post("/feedback", json={"user": "u", "item": "Twin", "event": "click"})
        assert "r7" in _assert_uniform(r, 422, "item")["error"]
