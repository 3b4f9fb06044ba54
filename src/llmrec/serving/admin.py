"""The catalog-changing routes: ``POST /items`` adds an item, ``DELETE /items/{raw_id}`` retires one.

Protocol:
    Both need ``Authorization: Bearer <admin token>`` (``llmrec.serving.access.admin_guard``: 403 when the server
    has no admin token, 401 when it is missing or wrong), checked before the body is read. ``POST /items`` takes
    ``{"raw_id", "title", "text"}`` (``check_new_item``: 422 naming the field) and answers 201 with the item and
    its internal id once it is on disk and recommendable; 409 when the raw id is already in the catalog, 501 when
    the model cannot add items. ``DELETE /items/{raw_id}`` answers 200 once the item is retired on disk; 404 for
    an unknown raw id, 409 for one already retired. Both run on a worker thread (``LiveCatalog`` serializes them
    with scoring), so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from llmrec.serving.access import admin_guard
from llmrec.serving.errors import ApiError
from llmrec.serving.live import LiveCatalog
from llmrec.serving.overlay import ItemFieldError, ItemLimits, check_new_item
from llmrec.serving.schemas import AddItemRequest, json_route


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def catalog_routes(live: LiveCatalog, limits: ItemLimits, admin_token: str) -> APIRouter:
    """The routes above, changing ``live``; items are bounded by ``limits``."""
    router = APIRouter(route_class=json_route(admin_guard(admin_token)))

    @router.post("/items", status_code=201)
    async def add_item(req: AddItemRequest, request: Request):
        try:
            item = check_new_item(req.model_dump(), limits)
        except ItemFieldError as e:
            raise ApiError(422, e.field, str(e)) from None
        index = await asyncio.get_running_loop().run_in_executor(None, live.add, item, _client(request))
        catalog = live.catalog
        return {
            "added": True,
            "index": index,
            "items": len(catalog),
            "item": {"id": item.raw_id, "alt_id": "", "title": item.title, "text": item.text},
        }

    @router.delete("/items/{raw_id:path}")
    async def retire_item(raw_id: str, request: Request):
        index = await asyncio.get_running_loop().run_in_executor(None, live.retire, raw_id, _client(request))
        return {"retired": True, "id": raw_id, "index": index}

    return router
