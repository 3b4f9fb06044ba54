"""The live catalog of ``llmrec serve``: POST /items, DELETE /items/{raw_id}, the admin token, the overlay on disk
(atomic, re-applied at start, surviving kill -9 of a real uvicorn process) and ``llmrec recommend --add_items``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient

from llmrec.data import Catalog
from llmrec.errors import DataError
from llmrec.serving.app import ServeAccess, ServeLimits, create_app
from llmrec.serving.live import LiveCatalog
from llmrec.serving.overlay import CatalogOverlay, ItemLimits, NewItem, OverlayState, check_new_item

TESTS = Path(__file__).resolve().parent
ADMIN = "admin-token-0123456789"
AUTH = {"authorization": f"Bearer {ADMIN}"}
TITLES = ["red cream", "blue balm", "green soap", "violet gloss", "amber oil", "nail polish", "hair mask", "lip tint"]
DIM = 512


def _embed(text: str) -> torch.Tensor:
    """A unit bag of hashed words: items sharing words score high, others (almost surely) 0."""
    v = torch.zeros(DIM)
    for word in text.lower().split():
        v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
    return F.normalize(v, dim=0)


class HashTextRecommender:
    """The model-side contract of the live catalog: an item-embedding dot-product model built from text hashes.

    ``add_items`` appends to ``catalog`` and to the embeddings (with a pause in between, and ``score`` checks they
    agree, so a race between scoring and adding would fail loudly).
    """

    name = "hashtext"

    def __init__(self, titles: list[str] = TITLES, pause: float = 0.0):
        self.catalog = Catalog([f"r{i}" for i in range(len(titles))], list(titles))
        self.vectors = torch.stack([_embed(t) for t in titles])  # [N, D]
        self.pause = pause

    def score(self, histories):
        vectors = self.vectors
        time.sleep(self.pause)
        if len(vectors) != len(self.catalog) or vectors is not self.vectors:
            raise AssertionError("scored while items were being added")
        query = torch.stack([vectors[list(h)].mean(0) for h in histories])  # [B, D]
        return query @ vectors.T  # [B, N]

    def add_items(self, raw_ids, titles, texts):
        n = len(self.catalog)
        self.catalog = self.catalog.extended(raw_ids, titles, texts)
        time.sleep(self.pause)
        new = torch.stack([_embed(f"{t} {x}") for t, x in zip(titles, texts)])
        self.vectors = torch.cat([self.vectors, new])
        return list(range(n, n + len(raw_ids)))


class FixedRecommender:
    """A model without ``add_items`` (as a kind that cannot add items)."""

    name = "fixed:run"

    def __init__(self):
        self.catalog = Catalog(["a", "b"], ["A", "B"])

    def score(self, histories):
        return torch.zeros(len(histories), 2)


def _client(rec=None, admin: str = ADMIN, overlay: CatalogOverlay | None = None, **limits) -> TestClient:
    live = LiveCatalog(rec or HashTextRecommender(), overlay, limits.pop("max_added_items", 10_000))
    access = ServeAccess(admin_token=admin, feedback_token="feedback-token")
    app = create_app(live, None, ServeLimits(feedback_rate=0, **limits), access=access)
    return TestClient(app, base_url="http://localhost", raise_server_exceptions=False)


def _uniform(r, status: int, field: str | None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "field"} and body["field"] == field, body
    assert field is None or body["error"].startswith(f"{field}:"), body
    return body


def _ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [it["id"] for it in r.json()["items"]]


NEW = {"raw_id": "new-1", "title": "violet gloss deluxe", "text": "a violet gloss"}


# ---------------------------------------------------------------- adding


def test_added_item_is_recommended_at_once():
    with _client() as c:
        assert _ids(c.post("/recommend", json={"history": ["r3"], "k": 3}))[0] != "new-1"
        r = c.post("/items", json=NEW, headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.json()["index"] == len(TITLES) and r.json()["items"] == len(TITLES) + 1
        assert r.json()["item"]["title"] == NEW["title"]
        assert _ids(c.post("/recommend", json={"history": ["r3"], "k": 3}))[0] == "new-1"
        # histories may point at it, by raw id or title
        assert _ids(c.post("/recommend", json={"history": ["new-1"], "k": 1}))[0] == "r3"
        assert _ids(c.post("/recommend", json={"history": ["violet gloss deluxe"], "k": 1, "exclude_seen": False}))[
            0
        ] == "new-1"
        assert c.get("/items/new-1").json() == {
            "id": "new-1", "alt_id": "", "title": NEW["title"], "text": NEW["text"], "retired": False
        }  # fmt: skip
        assert c.get("/health").json()["items"] == len(TITLES) + 1
        assert "new-1" in [it["id"] for it in c.get("/items", params={"query": "deluxe"}).json()["items"]]


def test_adding_never_races_with_scoring():
    """Concurrent /recommend batches and POST /items: every batch sees the model before or after an add."""
    rec = HashTextRecommender(pause=0.005)
    with _client(rec) as c:
        statuses: list[int] = []

        def recommend():
            for _ in range(15):
                r = c.post("/recommend", json={"history": ["r1"], "k": 5})
                statuses.append(r.status_code)

        threads = [threading.Thread(target=recommend) for _ in range(4)]
        for t in threads:
            t.start()
        for n in range(10):
            r = c.post("/items", json={"raw_id": f"x{n}", "title": f"blue balm {n}"}, headers=AUTH)
            assert r.status_code == 201, r.text
        for t in threads:
            t.join()
    assert statuses == [200] * 60
    assert len(rec.catalog) == len(rec.vectors) == len(TITLES) + 10


# ---------------------------------------------------------------- the admin token


def test_catalog_changes_are_disabled_without_an_admin_token():
    with _client(admin="") as c:
        for r in (c.post("/items", json=NEW, headers=AUTH), c.delete("/items/r1", headers=AUTH)):
            assert "--admin_token" in _uniform(r, 403, "authorization")["error"]
        assert c.get("/health").json()["items"] == len(TITLES)


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": ADMIN},
     {"authorization": f"Basic {ADMIN}"}, {"authorization": "Bearer feedback-token"}, {"authorization": "Bearer "}],
)  # fmt: skip
def test_a_missing_or_wrong_admin_token_is_401(headers):
    with _client() as c:
        for r in (c.post("/items", json=NEW, headers=headers), c.delete("/items/r1", headers=headers)):
            _uniform(r, 401, "authorization")
            assert r.headers["www-authenticate"] == "Bearer"
        # checked before the body: an unauthenticated client learns nothing about the body rules
        _uniform(c.post("/items", content=b"{", headers={**headers, "content-type": "text/plain"}), 401, "authorization")
        assert c.get("/health").json() == {"status": "ok", "model": "hashtext", "items": len(TITLES), "retired": 0}


def test_the_admin_token_allows_changes():
    with _client() as c:
        assert c.post("/items", json=NEW, headers=AUTH).status_code == 201
        assert c.delete("/items/r1", headers={"authorization": f"bearer {ADMIN}"}).json() == {
            "retired": True, "id": "r1", "index": 1
        }  # fmt: skip


# ---------------------------------------------------------------- refusals


def test_a_known_raw_id_is_409():
    with _client() as c:
        _uniform(c.post("/items", json={**NEW, "raw_id": "r2"}, headers=AUTH), 409, "raw_id")
        assert c.post("/items", json=NEW, headers=AUTH).status_code == 201
        _uniform(c.post("/items", json={**NEW, "title": "other"}, headers=AUTH), 409, "raw_id")
        assert c.delete("/items/new-1", headers=AUTH).status_code == 200
        assert "never reused" in _uniform(c.post("/items", json=NEW, headers=AUTH), 409, "raw_id")["error"]
        assert c.get("/health").json()["items"] == len(TITLES) + 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"title": "t"}, "raw_id"),
        ({"raw_id": 7, "title": "t"}, "raw_id"),
        ({"raw_id": "", "title": "t"}, "raw_id"),
        ({"raw_id": " x", "title": "t"}, "raw_id"),
        ({"raw_id": "x\ny", "title": "t"}, "raw_id"),
        ({"raw_id": "x" * 51, "title": "t"}, "raw_id"),
        ({"raw_id": "x"}, "title"),
        ({"raw_id": "x", "title": "   "}, "title"),
        ({"raw_id": "x", "title": "t" * 101}, "title"),
        ({"raw_id": "x", "title": "line\nbreak"}, "title"),
        ({"raw_id": "x", "title": ["t"]}, "title"),
        ({"raw_id": "x", "title": "t", "text": "y" * 301}, "text"),
        ({"raw_id": "x", "title": "t", "text": None}, "text"),
        ({"raw_id": "x", "title": "t", "text": "bell\x07"}, "text"),
        ({"raw_id": "x", "title": "t", "price": 3}, "price"),
    ],
)
def test_bad_item_bodies_are_422_naming_the_field(body, field):
    with _client(max_raw_id_chars=50, max_title_chars=100, max_text_chars=300) as c:
        _uniform(c.post("/items", json=body, headers=AUTH), 422, field)
        assert c.get("/health").json()["items"] == len(TITLES)


def test_unreadable_item_bodies():
    with _client(max_body_bytes=2000) as c:
        _uniform(c.post("/items", content=b'{"raw_id": ', headers={**AUTH, "content-type": "application/json"}),
                 422, "body")  # fmt: skip
        _uniform(c.post("/items", json=["x"], headers=AUTH), 422, "body")
        _uniform(c.post("/items", content=b"{}", headers={**AUTH, "content-type": "text/plain"}), 415, "content-type")
        _uniform(c.post("/items", json={"raw_id": "x", "title": "t" * 3000}, headers=AUTH), 413, "body")
        _uniform(c.post("/items", content=b'{"raw_id": "\\ud800", "title": "t"}',
                        headers={**AUTH, "content-type": "application/json"}), 422, "raw_id")  # fmt: skip
        _uniform(c.put("/items", json=NEW, headers=AUTH), 405, "method")


def test_a_model_that_cannot_add_items_is_501_naming_it(tmp_path):
    overlay = CatalogOverlay(tmp_path / "overlay.json")
    with _client(FixedRecommender(), overlay=overlay) as c:
        body = _uniform(c.post("/items", json=NEW, headers=AUTH), 501, None)
        assert "fixed:run" in body["error"] and "cannot add items" in body["error"]
        assert c.delete("/items/a", headers=AUTH).status_code == 200  # retiring needs nothing of the model
    assert not (tmp_path / "overlay.json.tmp").exists()
    assert CatalogOverlay.load(tmp_path / "overlay.json").state == OverlayState([], ["a"])


def test_a_refused_item_leaves_the_overlay_as_it_was(tmp_path):
    class Refusing(HashTextRecommender):
        def add_items(self, raw_ids, titles, texts):
            raise ValueError("no text encoder for this run")

    overlay = CatalogOverlay(tmp_path / "overlay.json")
    with _client(Refusing(), overlay=overlay) as c:
        assert c.post("/items", json={"raw_id": "a", "title": "t"}, headers=AUTH).status_code == 422
        assert "no text encoder" in c.post("/items", json=NEW, headers=AUTH).json()["error"]
    assert CatalogOverlay.load(tmp_path / "overlay.json").state == OverlayState()


def test_max_added_items():
    with _client(max_added_items=2) as c:
        for n in range(2):
            assert c.post("/items", json={"raw_id": f"x{n}", "title": "t"}, headers=AUTH).status_code == 201
        assert "max_added_items" in _uniform(c.post("/items", json=NEW, headers=AUTH), 409, "body")["error"]


# ---------------------------------------------------------------- retiring


def test_a_retired_item_is_never_recommended_but_still_resolves():
    with _client() as c:
        everything = {"history": ["r0"], "k": len(TITLES), "exclude_seen": False}
        assert "r3" in _ids(c.post("/recommend", json=everything))
        assert c.post("/items", json=NEW, headers=AUTH).status_code == 201
        for raw in ("r3", "new-1"):  # a base item and an added one
            assert c.delete(f"/items/{raw}", headers=AUTH).status_code == 200
        for history in (["r0"], ["r3"], ["new-1"], ["violet gloss"], ["r3", "new-1", "r2"]):
            for k in (1, 3, len(TITLES) + 1):
                got = _ids(c.post("/recommend", json={"history": history, "k": k, "exclude_seen": False}))
                assert "r3" not in got and "new-1" not in got and got, (history, k)
        assert len(_ids(c.post("/recommend", json={**everything, "k": len(TITLES) + 1}))) == len(TITLES) - 1
        assert c.get("/items/r3").json()["retired"] is True and c.get("/items/r2").json()["retired"] is False
        assert c.get("/health").json()["retired"] == 2


def test_retiring_twice_is_409_and_unknown_is_404():
    with _client() as c:
        assert c.delete("/items/r4", headers=AUTH).status_code == 200
        assert "already retired" in _uniform(c.delete("/items/r4", headers=AUTH), 409, "raw_id")["error"]
        _uniform(c.delete("/items/nope", headers=AUTH), 404, "raw_id")
        assert c.post("/items", json={"raw_id": "a/b c", "title": "slash"}, headers=AUTH).status_code == 201
        assert c.delete("/items/a%2Fb%20c", headers=AUTH).json()["id"] == "a/b c"  # any raw id can be retired


# ---------------------------------------------------------------- the overlay on disk


def test_changes_persist_and_are_reapplied_in_order(tmp_path):
    path = tmp_path / "catalog_overlay.json"
    with _client(overlay=CatalogOverlay.load(path)) as c:
        for raw, title in (("b-2", "blue balm two"), ("a-1", "amber oil one")):
            assert c.post("/items", json={"raw_id": raw, "title": title}, headers=AUTH).status_code == 201
        assert c.delete("/items/r0", headers=AUTH).status_code == 200
        assert c.delete("/items/b-2", headers=AUTH).status_code == 200
    doc = json.loads(path.read_text())
    assert [i["raw_id"] for i in doc["added"]] == ["b-2", "a-1"] and doc["retired"] == ["r0", "b-2"]
    log = [json.loads(line) for line in path.with_name("catalog_overlay.log.jsonl").read_text().splitlines()]
    assert [(e["action"], e["raw_id"]) for e in log] == [("add", "b-2"), ("add", "a-1"), ("retire", "r0"),
                                                         ("retire", "b-2")]  # fmt: skip
    assert all(e["time"].endswith("+00:00") and e["ts"] > 0 for e in log)
    # a fresh model and the overlay: the same ids, the same retirements
    live = LiveCatalog(HashTextRecommender(), CatalogOverlay.load(path))
    live.restore()
    assert live.catalog.raw_ids[len(TITLES) :] == ["b-2", "a-1"]
    assert [live.is_retired(i) for i in (0, 1, len(TITLES), len(TITLES) + 1)] == [True, False, True, False]


def test_a_leftover_temp_file_is_ignored(tmp_path):
    path = tmp_path / "catalog_overlay.json"
    overlay = CatalogOverlay(path)
    overlay.save(OverlayState([NewItem("n1", "blue balm new")], ["r1"]))
    (tmp_path / ".catalog_overlay.json.k1ll3d.tmp").write_text('{"format": "llmrec-catalog-overlay", "added": [{"ra')
    assert CatalogOverlay.load(path).state == OverlayState([NewItem("n1", "blue balm new")], ["r1"])


def test_a_write_killed_midway_leaves_the_old_overlay(tmp_path, monkeypatch):
    path = tmp_path / "catalog_overlay.json"
    overlay = CatalogOverlay(path)
    overlay.save(OverlayState([], ["r1"]))
    before = path.read_bytes()

    def killed(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", killed)
    with _client(overlay=overlay) as c:
        body = _uniform(c.post("/items", json=NEW, headers=AUTH), 503, None)
        assert "not changed" in body["error"]
        assert c.get("/health").json()["items"] == len(TITLES)  # not added to the model either
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["catalog_overlay.json"]


@pytest.mark.parametrize(
    "text, what",
    [("{", "not valid JSON"), ("[]", "not a catalog overlay"), ('{"format": "llmrec-catalog-overlay", "version": 9}',
     "version"), ('{"format": "llmrec-catalog-overlay", "version": 1, "added": [{"raw_id": ""}]}', "added[0].raw_id"),
     ('{"format": "llmrec-catalog-overlay", "version": 1, "retired": [3]}', "retired[0]")],
)  # fmt: skip
def test_a_malformed_overlay_is_a_data_error_naming_it(tmp_path, text, what):
    path = tmp_path / "catalog_overlay.json"
    path.write_text(text)
    with pytest.raises(DataError, match="overlay") as e:
        CatalogOverlay.load(path)
    assert what in str(e.value) and str(path) in str(e.value)


def test_restore_checks_the_overlay_against_the_run(tmp_path):
    path = tmp_path / "o.json"
    CatalogOverlay(path).save(OverlayState([NewItem("r2", "already there"), NewItem("n", "new")], ["r1"]))
    live = LiveCatalog(HashTextRecommender(), CatalogOverlay.load(path))
    live.restore()  # a run retrained with r2: skipped, the run's title kept
    assert live.skipped == ["r2"] and live.catalog.raw_ids[-1] == "n" and live.catalog.titles[2] == "green soap"
    with pytest.raises(DataError, match="fixed:run model cannot add items"):
        LiveCatalog(FixedRecommender(), CatalogOverlay.load(path)).restore()
    CatalogOverlay(path).save(OverlayState([], ["zz"]))
    with pytest.raises(DataError, match=r"retired\[0\]: 'zz' is not in the catalog"):
        LiveCatalog(HashTextRecommender(), CatalogOverlay.load(path)).restore()


def test_one_writer_per_overlay(tmp_path):
    first, second = CatalogOverlay(tmp_path / "o.json"), CatalogOverlay(tmp_path / "o.json")
    first.lock()
    with pytest.raises(DataError, match="in use by another llmrec serve"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()
    with pytest.raises(DataError, match="--overlay PATH"):
        CatalogOverlay(tmp_path / "missing" / "o.json").lock()


def test_check_new_item_is_shared():
    assert check_new_item({"raw_id": "a", "title": "t"}) == NewItem("a", "t", "")
    with pytest.raises(ValueError, match="title: at most 3 characters"):
        check_new_item({"raw_id": "a", "title": "long"}, ItemLimits(max_title_chars=3))
