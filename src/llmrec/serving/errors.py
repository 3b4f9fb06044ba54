"""Uniform error bodies of the HTTP API: every 4xx (and 5xx) answers ``{"error": "...", "field": "..."}``.

Protocol:
    ``error`` is one line for a person, starting with the field it names; ``field`` names the part of the request at
    fault: a body field (``history[1]``, ``k``, ``value``), ``body`` (unreadable, malformed or too large),
    ``content-type``, ``authorization``, ``host``, ``path`` (no such route), ``method``, ``request`` (rate limited),
    a query or path parameter; it is ``null`` for 5xx (nothing was wrong with the request). Values from the request
    are echoed at most ``ECHO_CHARS`` characters long, as Python reprs (so the body is always valid UTF-8 JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

ECHO_CHARS = 80


class ApiError(Exception):
    """An error answered as ``{"error": message, "field": field}`` with ``status`` (and extra ``headers``)."""

    def __init__(self, status: int, field: str | None, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers or {}


def echo(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (repr also escapes lone surrogates, so it encodes as UTF-8)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's int max-str-digits
        return "<an integer with too many digits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_response(status: int, field: str | None, message: str, headers: dict[str, str] | None = None):
    """The uniform error body as a ``JSONResponse`` (also usable as a plain ASGI app)."""
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def field_of(loc: Sequence[Any]) -> str:
    """A pydantic/FastAPI error location as a field path: ``("body", "history", 1)`` -> ``history[1]``."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            name = str(p) if str(p).isidentifier() and len(str(p)) <= 40 else echo(p, 40)
            out += f".{name}" if out else name
    return out or "body"


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.field, exc.message, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errs = exc.errors()
    first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
    where = field_of(first.get("loc", ()))
    if first.get("type") == "json_invalid":  # FastAPI's own parse error (our route class parses first)
        return error_response(422, "body", "body: malformed JSON")
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")  # our validators' ValueErrors
    return error_response(422, where, f"{where}: {message}")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method, body too large) in the uniform body."""
    assert isinstance(exc, HTTPException)
    path = echo(request.url.path)
    if exc.status_code == 404:
        field, message = "path", f"path: no route {request.method} {path} (see /docs)"
    elif exc.status_code == 405:
        allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
        field, message = "method", f"method: {request.method} is not allowed on {path} (allowed: {allowed})"
    elif exc.status_code == 413:
        field, message = "body", f"body: {exc.detail}"
    else:
        field, message = "request", f"request: {exc.detail}"
    return error_response(exc.status_code, field if exc.status_code < 500 else None, message, exc.headers)


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(500, None, "internal error")  # never leak a stack trace


def add_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the uniform body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
