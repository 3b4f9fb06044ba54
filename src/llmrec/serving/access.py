"""Who may write: bearer tokens for feedback and catalog changes, and a per-client token-bucket rate limit.

Protocol:
    Catalog changes (``POST /items``, ``DELETE /items/{raw_id}``) need the admin token: without one configured
    they are disabled (403); a missing or wrong ``Authorization: Bearer`` is a 401. With a token configured,
    ``POST /feedback`` needs ``Authorization: Bearer <token>`` (compared in constant time);
    otherwise 401 with ``WWW-Authenticate: Bearer``. Each client IP may send ``rate`` feedback requests per second
    on average and ``burst`` at once (valid or not, so guessing tokens is rate limited too); beyond that 429 with
    ``Retry-After`` (seconds). Behind a reverse proxy every request has the proxy's IP, so the limit is shared.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import Request

from llmrec.serving.errors import ApiError


class RateLimiter:
    """Token buckets per key: ``rate`` tokens per second refill up to ``burst``; a request takes one token.

    At most ``max_keys`` buckets are kept (least recently used dropped), so memory stays bounded. ``rate <= 0``
    disables the limit.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last refill time)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if granted, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, last = self.buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self.buckets[key] = (tokens, now)
        if len(self.buckets) > self.max_keys:
            self.buckets.popitem(last=False)
        return wait

    def guard(self, request: Request) -> None:
        """Refuse the request with 429 (and ``Retry-After``) when its client has no token left."""
        client = request.client.host if request.client else "unknown"
        wait = self.take(client)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "request",
                f"request: too many feedback requests from this client (at most {self.rate:g}/s, burst "
                f"{self.burst}); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )


def bearer_guard(token: str) -> Callable[[Request], None]:
    """A guard refusing (401) requests without ``Authorization: Bearer <token>``; a no-op when ``token`` is empty."""
    expected = token.encode("utf-8")

    def guard(request: Request) -> None:
        if not expected:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8"), expected):
            raise ApiError(
                401,
                "authorization",
                "authorization: this endpoint needs the header 'Authorization: Bearer <token>' (missing or wrong)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return guard


def admin_guard(token: str) -> Callable[[Request], None]:
    """A guard refusing every request with 403 when ``token`` is empty, else without the bearer ``token`` (401)."""
    bearer = bearer_guard(token)

    def guard(request: Request) -> None:
        if not token:
            raise ApiError(
                403,
                "authorization",
                "authorization: catalog changes are disabled on this server (start it with --admin_token or "
                "$LLMREC_ADMIN_TOKEN to enable them)",
            )
        bearer(request)

    return guard
