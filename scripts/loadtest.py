#!/usr/bin/env python
"""Bounded load test of a running `llmrec serve`: N /recommend requests at a fixed concurrency.

Histories are the last <= --max-history items of real users' test-split histories from the prepared data set
the run was trained on (raw item ids), so the requests look like production traffic.

    python scripts/loadtest.py --url http://127.0.0.1:8000 --data prepared/beauty --requests 2000 --concurrency 16

Prints a table and one JSON line: p50/p95/p99 latency (ms, client side), throughput (req/s), error count and
counts by status (503: the server's queue was full; 504: a request timed out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    idx = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[idx]


async def run(args) -> dict:
    import httpx

    from llmrec.data import load_prepared

    data = load_prepared(args.data)
    histories, _ = data.split("test")
    rng = random.Random(args.seed)
    payloads = []
    for _ in range(args.requests):
        h = histories[rng.randrange(len(histories))][-args.max_history :]
        payloads.append({"history": [data.catalog.raw_ids[i] for i in h], "k": args.k, "exclude_seen": True})
    latencies: list[float] = []
    errors = 0
    statuses: Counter = Counter()  # 503: the server's queue was full (--max_queue); 504: --request_timeout_s
    queue: asyncio.Queue = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)

    async with httpx.AsyncClient(base_url=args.url, timeout=30.0) as client:
        for p in payloads[: min(10, len(payloads))]:  # warm-up, not counted
            await client.post("/recommend", json=p)

        async def worker():
            nonlocal errors
            while True:
                try:
                    p = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.post("/recommend", json=p)
                    ok = r.status_code == 200 and len(r.json()["items"]) == args.k
                    statuses[str(r.status_code)] += 1
                except httpx.HTTPError:
                    ok = False
                    statuses["transport_error"] += 1
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += 0 if ok else 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
        server = (await client.get("/metrics")).json()
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "k": args.k,
        "max_history": args.max_history,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "throughput_rps": round(args.requests / wall, 1),
        "errors": errors,
        "by_status": dict(sorted(statuses.items())),
        "wall_s": round(wall, 2),
        "server_mean_batch_size": server.get("mean_batch_size"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--data", required=True, help="prepared data set directory the served run was trained on")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-history", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    res = asyncio.run(run(args))
    for key, value in res.items():
        print(f"{key:<24} {value}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
