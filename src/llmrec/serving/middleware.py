"""The ASGI layers in front of the app: Host allow-list, request body limit, and per-route timing.

Plain ASGI (not ``BaseHTTPMiddleware``) so a rejected request is answered before its body is read. Starlette's
``TrustedHostMiddleware`` and ``RequestBodyLimitMiddleware`` do the same checks but answer in plain text; these
answer with the uniform error body of ``llmrec.serving.errors``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmrec.serving.batcher import ServeStats
from llmrec.serving.errors import echo, error_response


def hostname(host: str) -> str:
    """The name part of a Host header value, lower-cased: ``[::1]:8000`` -> ``::1``, ``A.com.:80`` -> ``a.com``."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class HostAllowList:
    """Answer 400 unless the Host header names an allowed host (protects loopback servers from DNS rebinding).

    ``"*"`` in ``allowed`` turns the check off.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]):
        self.app = app
        self.allowed = {hostname(h) for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            host = hostname(Headers(scope=scope).get("host", ""))
            if host not in self.allowed:
                message = (
                    f"host: {echo(host)} is not an allowed Host header (DNS rebinding protection); "
                    "start the server with --allowed_hosts NAME to accept it"
                )
                return await error_response(400, "host", message)(scope, receive, send)
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; FastAPI answers it as a 413."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body larger than the limit of {max_bytes} bytes")


class BodyLimit:
    """Answer 413 for bodies over ``max_bytes``, never holding more than about ``max_bytes`` of one in memory.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked body is counted
    while the app reads it, and the read fails (``BodyTooLarge``) at the first chunk past the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        received, started = 0, False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:  # read outside a FastAPI route (which would have answered it)
            if started:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"body: request body larger than the limit of {self.max_bytes} bytes"
        await error_response(413, "body", message)(scope, receive, send)


class Timing:
    """Record every HTTP request's route, latency and success (status < 400) in ``ServeStats``."""

    def __init__(self, app: ASGIApp, stats: ServeStats):
        self.app, self.stats = app, stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, status_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.stats.record(route, time.perf_counter() - t0, status < 400)
