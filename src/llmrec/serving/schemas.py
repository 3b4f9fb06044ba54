"""Request bodies of the HTTP API: strict models, and the route class that reads a JSON body safely.

Protocol:
    Types are strict: item references are JSON strings or integers (not booleans, not floats), ``k`` is an integer
    (not ``true``, not ``"3"``), numbers are finite, unknown fields are rejected. Every JSON route is built by
    ``json_route(*guards)``: the guards (authentication, rate limit) run first, then a POST body must be
    ``Content-Type: application/json`` (else 415) and parse as UTF-8 JSON (else 422 with ``field: "body"``:
    malformed, invalid UTF-8, nested too deeply, an integer over Python's 4300 digits), then the model validates.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StrictInt, StrictStr
from starlette.requests import ClientDisconnect

from llmrec.serving.errors import ApiError, echo

MAX_REF_CHARS = 1000  # an item reference longer than any raw id or title


def _check_text(value: str, what: str) -> str:
    if len(value) > MAX_REF_CHARS:
        raise ValueError(f"{what} is longer than {MAX_REF_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates ("\ud800") decode from JSON but cannot be stored or hashed
        raise ValueError(f"{what} is not valid Unicode (lone surrogate)") from None
    return value


def _item_ref(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected an item id or title (a string or an integer), got {type(value).__name__}")
    return _check_text(value, "item reference") if isinstance(value, str) else value


def _user_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise ValueError("expected a string of 1 to 256 characters")
    return _check_text(value, "user")


ItemRef = Annotated[str | int, PlainValidator(_item_ref, json_schema_input_type=str | int)]
UserId = Annotated[str, PlainValidator(_user_id, json_schema_input_type=str)]
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[ItemRef] = Field(..., description="Item raw ids, alternate ids or exact titles, oldest first.")
    k: StrictInt = Field(10, description="How many items to return.")
    exclude_seen: StrictBool = Field(True, description="Never recommend items already in the history.")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: UserId = Field(..., description="User identifier, 1-256 characters (stored only as a salted hash).")
    item: ItemRef = Field(..., description="Item raw id, alternate id or exact title.")
    event: Literal["click", "purchase", "rating"]
    value: FiniteNumber | None = Field(
        None, description="click/purchase: null or 1; rating: required, within the served rating scale."
    )


class AddItemRequest(BaseModel):
    """The body of ``POST /items``; lengths and characters are checked by ``llmrec.serving.overlay.check_new_item``."""

    model_config = ConfigDict(extra="forbid")

    raw_id: StrictStr = Field(..., description="The new item's raw id: non-empty, not yet in the catalog.")
    title: StrictStr = Field(..., description="Its title (one line).")
    text: StrictStr = Field("", description="Its extra text (description, categories...).")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def read_json(request: Request) -> Any:
    """Parse the body once (Starlette caches it for FastAPI), turning every failure into a 415 or 422 ``ApiError``."""
    content_type = request.headers.get("content-type", "")
    if not _is_json(content_type):
        got = echo(content_type) if content_type else "none"
        raise ApiError(415, "content-type", f"content-type: expected application/json, got {got}")
    try:
        return await request.json()
    except json.JSONDecodeError as e:
        raise ApiError(422, "body", f"body: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise ApiError(422, "body", "body: not valid UTF-8") from None
    except ClientDisconnect:
        raise ApiError(400, "body", "body: the client disconnected before sending the whole body") from None
    except RecursionError:
        raise ApiError(422, "body", "body: JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer longer than sys.get_int_max_str_digits()
        why = f"a number has more than {sys.get_int_max_str_digits()} digits" if "digits" in str(e) else echo(str(e))
        raise ApiError(422, "body", f"body: invalid JSON ({why})") from None


Guard = Callable[[Request], None]  # raises ApiError to refuse a request


def json_route(*guards: Guard) -> type[APIRoute]:
    """An ``APIRoute`` class whose endpoints run ``guards``, then ``read_json`` for POST, then FastAPI's handler."""

    class JsonRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def guarded(request: Request):
                for guard in guards:
                    guard(request)
                if request.method == "POST":
                    await read_json(request)
                return await handler(request)

            return guarded

    return JsonRoute
