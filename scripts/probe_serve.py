#!/usr/bin/env python
"""Bounded robustness probe of a running `llmrec serve`: N mixed bad requests at a fixed concurrency.

Starts nothing: point it at a server. Every request is bad on purpose (oversize and chunked oversize bodies, foreign
Host headers, wrong types, NaN/Infinity, malformed JSON, invalid UTF-8, deep nesting, huge integers, unknown routes,
wrong methods and content types, missing/wrong feedback tokens, out-of-range values, and bad changes to the live
catalog: `POST /items` / `DELETE /items/...` without or with a wrong token, with bad fields, for unknown items),
the kinds taken in turn.

    python scripts/probe_serve.py --url http://127.0.0.1:8000 [--token TOKEN] [--admin-token TOKEN]
        [--requests 1000] [--concurrency 32]

Passes when no answer is a 5xx or a 2xx, every 4xx has the body {"error": "...", "field": "..."}, no request fails
at the transport level, and /health answers 200 afterwards. Prints counts by status and by kind, then one JSON line;
exits 1 on failure. It writes nothing to the server's feedback log or catalog overlay (no request is valid).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

JSON = {"content-type": "application/json"}


@dataclass
class Probe:
    method: str
    path: str
    headers: dict[str, str]
    content: object = b""  # bytes, or a factory of an async iterator (a chunked body)


def _json(path: str, body: object, headers: dict[str, str] | None = None) -> Probe:
    return Probe("POST", path, {**JSON, **(headers or {})}, json.dumps(body).encode())


def _raw(path: str, body: bytes, content_type: str | None = "application/json", **headers: str) -> Probe:
    return Probe("POST", path, {**({"content-type": content_type} if content_type else {}), **headers}, body)


def _chunks(total: int, size: int = 64 * 1024) -> Callable:
    async def gen():
        for start in range(0, total, size):
            yield b" " * min(size, total - start)

    return gen


def probes(body_limit: int, token: str, admin_token: str = "") -> dict[str, Callable[[], Probe]]:
    """Kind -> a factory of one bad request. ``token``, ``admin_token``: the server's feedback and admin tokens, if
    known ("" if not; the admin probes then stop at the missing token)."""
    auth = {"authorization": f"Bearer {token}"} if token else {}
    admin = {"authorization": f"Bearer {admin_token}"} if admin_token else {}
    item = {"raw_id": "probe-item", "title": "a probe item", "text": ""}
    fb = {"user": "probe", "item": "no-such-item", "event": "click"}
    big = body_limit + 1024
    return {
        "oversize_body": lambda: _raw("/recommend", b"[" + b" " * big + b"]"),
        "oversize_chunked": lambda: Probe("POST", "/recommend", dict(JSON), _chunks(big)),
        "bad_host": lambda: Probe("GET", "/health", {"host": "evil.example"}),
        "k_string": lambda: _json("/recommend", {"history": ["1"], "k": "3"}),
        "k_bool": lambda: _json("/recommend", {"history": ["1"], "k": True}),
        "k_float": lambda: _json("/recommend", {"history": ["1"], "k": 2.5}),
        "k_range": lambda: _json("/recommend", {"history": ["1"], "k": 10**6}),
        "history_bool": lambda: _json("/recommend", {"history": [True], "k": 3}),
        "history_float": lambda: _json("/recommend", {"history": [1.5], "k": 3}),
        "history_object": lambda: _json("/recommend", {"history": {"a": 1}, "k": 3}),
        "history_empty": lambda: _json("/recommend", {"history": [], "k": 3}),
        "unknown_item": lambda: _json("/recommend", {"history": ["no-such-item-\u2603" * 50], "k": 3}),
        "extra_field": lambda: _json("/recommend", {"history": ["1"], "k": 3, "x" * 500: 1}),
        "nan": lambda: _raw("/recommend", b'{"history": [NaN], "k": 3}'),
        "infinity": lambda: _raw(
            "/feedback", b'{"user": "p", "item": "1", "event": "rating", "value": 1e999}', **auth
        ),
        "bad_json": lambda: _raw("/recommend", b'{"history": ["1"], "k": 3'),
        "empty_body": lambda: _raw("/recommend", b""),
        "invalid_utf8": lambda: _raw("/recommend", b'{"history": ["\xff\xfe\xfa"], "k": 3}'),
        "lone_surrogate": lambda: _raw("/feedback", b'{"user": "\\ud800", "item": "1", "event": "click"}', **auth),
        "deep_nesting": lambda: _raw("/recommend", b"[" * min(200_000, body_limit)),
        "huge_int": lambda: _raw("/recommend", b'{"history": ["1"], "k": ' + b"9" * 5000 + b"}"),
        "unknown_route": lambda: Probe("GET", "/no/such/route" + "x" * 300, {}),
        "wrong_method": lambda: Probe("DELETE", "/recommend", {}),
        "text_plain": lambda: _raw("/recommend", b'{"history": ["1"]}', content_type="text/plain"),
        "form": lambda: _raw("/feedback", b"user=a&item=1", content_type="application/x-www-form-urlencoded"),
        "no_content_type": lambda: _raw("/recommend", b'{"history": ["1"]}', content_type=None),
        "missing_token": lambda: _json("/feedback", fb),
        "wrong_token": lambda: _json("/feedback", fb, {"authorization": "Bearer wrong-" + "x" * 100}),
        "rating_range": lambda: _json("/feedback", {**fb, "item": "1", "event": "rating", "value": 99}, auth),
        "click_value": lambda: _json("/feedback", {**fb, "value": 3}, auth),
        "bad_query": lambda: Probe("GET", "/items?query=a&limit=" + "9" * 5000, {}),
        "missing_query": lambda: Probe("GET", "/items", {}),
        # the live catalog (POST /items, DELETE /items/{raw_id}): never a valid change
        "items_no_token": lambda: _json("/items", item),
        "items_wrong_token": lambda: _json("/items", item, {"authorization": "Bearer wrong-" + "x" * 100}),
        "items_feedback_token": lambda: _json("/items", item, auth),
        "items_missing_title": lambda: _json("/items", {"raw_id": "probe-item"}, admin),
        "items_title_newline": lambda: _json("/items", {**item, "title": "two\nlines"}, admin),
        "items_title_long": lambda: _json("/items", {**item, "title": "t" * 20_000}, admin),
        "items_raw_id_number": lambda: _json("/items", {**item, "raw_id": 7}, admin),
        "items_unknown_key": lambda: _json("/items", {**item, "price": 3}, admin),
        "items_not_object": lambda: _json("/items", [item], admin),
        "delete_no_token": lambda: Probe("DELETE", "/items/probe-item", {}),
        "delete_unknown_item": lambda: Probe("DELETE", "/items/no-such-item-" + "x" * 50, admin),
    }


def check(status: int, body: bytes) -> str:
    """'' if the answer is an acceptable rejection, else what is wrong with it."""
    if status >= 500:
        return f"{status}: a 5xx for bad input"
    if status < 400:
        return f"{status}: a bad request was accepted"
    try:
        doc = json.loads(body)
    except ValueError:
        return f"{status}: body is not JSON: {body[:80]!r}"
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str) or not isinstance(doc.get("field"), str):
        return f"{status}: body is not {{'error': str, 'field': str}}: {body[:80]!r}"
    return ""


async def run(args: argparse.Namespace) -> dict:
    import httpx

    kinds = probes(args.body_limit, args.token, args.admin_token)
    names = list(kinds)
    by_status: Counter = Counter()
    by_kind: dict[str, Counter] = {name: Counter() for name in names}
    failures: list[str] = []
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(args.requests):
        queue.put_nowait(names[i % len(names)])

    async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout) as client:

        async def worker() -> None:
            while not queue.empty():
                name = queue.get_nowait()
                p = kinds[name]()
                content = p.content() if callable(p.content) else p.content
                try:
                    r = await client.request(p.method, p.path, headers=p.headers, content=content)
                    status, problem = r.status_code, check(r.status_code, r.content)
                except httpx.HTTPError as e:
                    status, problem = "transport_error", f"{type(e).__name__}: {e}"
                by_status[str(status)] += 1
                by_kind[name][str(status)] += 1
                if problem:
                    failures.append(f"{name}: {problem}")

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        try:
            health = (await client.get("/health")).status_code
        except httpx.HTTPError:
            health = 0
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "by_status": dict(sorted(by_status.items())),
        "by_kind": {name: dict(c) for name, c in by_kind.items() if c},
        "failures": len(failures),
        "failure_examples": failures[:10],
        "health_after": health,
        "ok": not failures and health == 200,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--token", default="", help="the server's feedback token (probes validation behind auth)")
    ap.add_argument("--admin-token", default="", help="the server's admin token (probes item validation behind auth)")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--body-limit", type=int, default=1 << 20, help="the server's --max_body_bytes")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = ap.parse_args()
    res = asyncio.run(run(args))
    for status, n in res["by_status"].items():
        print(f"status {status:<16} {n}")
    for line in res["failure_examples"]:
        print(f"FAIL {line}")
    print(f"health after: {res['health_after']}   {'OK' if res['ok'] else 'FAILED'}")
    print(json.dumps(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
