"""The live catalog of ``llmrec serve``: POST /items, DELETE /items/{raw_id}, the admin token, the overlay on disk
(atomic, re-applied at start, surviving kill -9 of a real uvicorn process) and ``llmrec recommend --add_items``."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
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
from test_serving import free_port, wait_healthy

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

    def __init__(self, titles: list[str] = TITLES, pause: float = 0.0, raw_ids: list[str] | None = None):
        self.catalog = Catalog(raw_ids or [f"r{i}" for i in range(len(titles))], list(titles))
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
        assert (
            _ids(c.post("/recommend", json={"history": ["violet gloss deluxe"], "k": 1, "exclude_seen": False}))[0]
            == "new-1"
        )
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
        _uniform(
            c.post("/items", content=b"{", headers={**headers, "content-type": "text/plain"}), 401, "authorization"
        )
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


# ---------------------------------------------------------------- real uvicorn processes, kill -9, restart


def serve_fake(overlay_path: str, port: int) -> None:
    """Entry point of the subprocess below: the fake model behind the same LiveCatalog + app as ``llmrec serve``."""
    import uvicorn

    overlay = CatalogOverlay.load(overlay_path)
    overlay.lock()
    live = LiveCatalog(HashTextRecommender(), overlay)
    live.restore()
    app = create_app(live, None, ServeLimits(), access=ServeAccess(admin_token=ADMIN))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _start(cmd: list[str], port: int, **env: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMREC_SALT": "s", **env}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    wait_healthy(proc, port)
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _start_fake(overlay: Path, port: int) -> subprocess.Popen:
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_serving_items as t; t.serve_fake(*sys.argv[1:3])"
    )
    return _start([sys.executable, "-c", code, str(overlay), str(port)], port)


def _post(base: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, headers=AUTH, timeout=30)


def test_added_items_survive_kill9_of_a_real_server(tmp_path):
    overlay, port = tmp_path / "catalog_overlay.json", free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_fake(overlay, port)
    try:
        assert _post(base, "/items", NEW).status_code == 201
        assert _post(base, "/items", {"raw_id": "gone", "title": "violet gloss gone"}).status_code == 201
        assert httpx.delete(f"{base}/items/gone", headers=AUTH).status_code == 200
        assert _ids(_post(base, "/recommend", {"history": ["r3"], "k": 2}))[0] == "new-1"
    finally:
        _kill9(proc)  # no shutdown hook runs: what was acknowledged must already be on disk
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_fake(overlay, port)
    try:
        assert httpx.get(f"{base}/items/new-1").json()["title"] == NEW["title"]
        assert httpx.get(f"{base}/items/gone").json()["retired"] is True
        got = _ids(_post(base, "/recommend", {"history": ["r3"], "k": len(TITLES) + 2}))
        assert got[0] == "new-1" and "gone" not in got
        assert _post(base, "/items", NEW).status_code == 409  # the same ids after the restart
        assert _post(base, "/items", {"raw_id": "n2", "title": "t"}).json()["index"] == len(TITLES) + 2
    finally:
        _kill9(proc)


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    from llmrec.cli import main as cli_main
    from llmrec.data import PreparedData, save_prepared

    root = tmp_path_factory.mktemp("serve_items")
    n = 12
    seqs = [[(u + j) % n for j in range(6)] for u in range(24)]
    data = PreparedData(Catalog([str(100 + i) for i in range(n)], [f"Movie {i}" for i in range(n)]),
                        [f"u{u}" for u in range(24)], seqs, {}, {"dataset": "toy"})  # fmt: skip
    save_prepared(data, root / "data")
    assert cli_main(["baseline", "pop", "--data", str(root / "data"), "--out", str(root / "run")]) == 0
    return root / "run"


def _serve_cmd(run: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llmrec.cli", "serve", "--run", str(run), "--port", str(port), *extra]


def test_llmrec_serve_keeps_the_catalog_across_kill9(pop_run, tmp_path):
    """`llmrec serve` on a Pop run: --overlay, $LLMREC_ADMIN_TOKEN, the overlay re-applied after a kill -9."""
    overlay, port = tmp_path / "ov" / "catalog_overlay.json", free_port()
    overlay.parent.mkdir()
    cmd = ["--overlay", str(overlay), "--event_log", str(tmp_path / "ev.sqlite")]
    proc = _start(_serve_cmd(pop_run, port, *cmd), port, LLMREC_ADMIN_TOKEN=ADMIN)
    base = f"http://127.0.0.1:{port}"
    try:
        everything = {"history": ["100"], "k": 12}
        assert "105" in _ids(_post(base, "/recommend", everything))
        assert httpx.delete(f"{base}/items/105", headers=AUTH).status_code == 200
        r = _post(base, "/items", {"raw_id": "200", "title": "Movie 200"})
        assert r.status_code == 201 and r.json()["index"] == 12, r.text
        assert "200" in _ids(_post(base, "/recommend", everything))  # a zero count: last, but recommendable
        assert _ids(_post(base, "/recommend", {"history": ["200"], "k": 3}))  # and a history may name it
    finally:
        _kill9(proc)
    assert not (pop_run / "catalog_overlay.json").exists()  # --overlay moved it out of the run
    port = free_port()
    proc = _start(_serve_cmd(pop_run, port, *cmd), port)  # no admin token now: read-only, still re-applied
    base = f"http://127.0.0.1:{port}"
    try:
        got = _ids(_post(base, "/recommend", {**everything, "k": 13}))
        assert "105" not in got and got[-1] == "200" and len(got) == 11  # 13 items, less the history and 105
        assert httpx.get(f"{base}/items/105").json()["retired"] is True
        assert httpx.get(f"{base}/items/200").json()["title"] == "Movie 200"
        assert httpx.get(f"{base}/health").json()["items"] == 13
        _uniform(httpx.delete(f"{base}/items/104", headers=AUTH), 403, "authorization")
    finally:
        _kill9(proc)
    out = proc.stdout.read().decode()
    assert "catalog changes disabled" in out and "1 items added, 1 retired" in out, out


def _one_line_error(capsys, argv: list[str]) -> str:
    from llmrec.cli import main as cli_main

    assert cli_main(argv) == 2
    out, err = capsys.readouterr()
    assert "llmrec serve:" not in out and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_serve_checks_the_admin_token_and_the_overlay_first(capsys, monkeypatch, pop_run, tmp_path):
    monkeypatch.delenv("LLMREC_ADMIN_TOKEN", raising=False)
    port = str(free_port())
    err = _one_line_error(capsys, ["serve", "--run", str(tmp_path / "r"), "--admin_token", "short"])
    assert "admin_token: at least 16 characters" in err
    monkeypatch.setenv("LLMREC_ADMIN_TOKEN", ADMIN)
    err = _one_line_error(capsys, ["serve", "--run", str(tmp_path / "r"), "--feedback_token", ADMIN])
    assert "admin_token: must differ from the feedback token" in err
    err = _one_line_error(capsys, ["serve", "--run", str(pop_run), "--port", port, "--overlay",
                                   str(tmp_path / "missing" / "o.json")])  # fmt: skip
    assert "overlay: cannot write in" in err and "--overlay PATH" in err
    (tmp_path / "bad.json").write_text("{not json")
    err = _one_line_error(
        capsys, ["serve", "--run", str(pop_run), "--port", port, "--overlay", str(tmp_path / "bad.json")]
    )
    assert "overlay:" in err and "bad.json" in err
    err = _one_line_error(capsys, ["serve", "--run", str(tmp_path / "no-run"), "--port", port])
    assert "run.json is missing" in err  # the run directory is checked before its overlay


# ---------------------------------------------------------------- `llmrec recommend --add_items`


def _recommend_json(capsys, argv: list[str]) -> list[dict]:
    from llmrec.cli import main as cli_main

    capsys.readouterr()
    assert cli_main(["recommend", *argv, "--json", "true"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_recommend_add_items_offline(capsys, monkeypatch, pop_run, tmp_path):
    import llmrec.recommenders
    from llmrec.runs import run_catalog

    catalog = run_catalog(pop_run)

    def fake(run, device="cpu"):  # a fresh model per command, as a load from the run directory gives
        return HashTextRecommender(catalog.titles, raw_ids=catalog.raw_ids)

    monkeypatch.setattr(llmrec.recommenders, "load_recommender", fake)
    items = tmp_path / "items.jsonl"
    items.write_text(
        '{"raw_id": "900", "title": "Movie 5 sequel"}\n\n{"raw_id": "901", "title": "Movie 7", "text": "x"}\n'
    )
    (out,) = _recommend_json(capsys, ["--run", str(pop_run), "--add_items", str(items), "--history", "105", "-k", "2"])
    assert [it["id"] for it in out["items"]][0] == "900"
    (out,) = _recommend_json(capsys, ["--run", str(pop_run), "--add_items", str(items), "--history", "900", "901"])
    assert out["history"] == ["900", "901"]  # histories may name the added items
    assert not (pop_run / "catalog_overlay.json").exists()  # offline: nothing written


def test_recommend_add_items_with_a_real_pop_run(capsys, pop_run, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text('{"raw_id": "900", "title": "Movie 5 sequel"}\n')
    argv = ["--run", str(pop_run), "--add_items", str(items), "--history", "900", "-k", "12"]
    (out,) = _recommend_json(capsys, argv)
    assert out["history"] == ["900"] and len(out["items"]) == 12 and "900" not in [it["id"] for it in out["items"]]
    (out,) = _recommend_json(capsys, [*argv[:-1], "13", "--exclude_seen", "false"])
    assert out["items"][-1]["id"] == "900"  # Pop gives a new item a zero count


def test_recommend_add_items_names_a_model_that_cannot(capsys, monkeypatch, pop_run, tmp_path):
    import llmrec.recommenders
    from llmrec.cli import main as cli_main
    from llmrec.runs import run_catalog

    fixed = FixedRecommender()
    fixed.catalog = run_catalog(pop_run)
    monkeypatch.setattr(llmrec.recommenders, "load_recommender", lambda run, device="cpu": fixed)
    items = tmp_path / "items.jsonl"
    items.write_text('{"raw_id": "900", "title": "Movie 5 sequel"}\n')
    capsys.readouterr()
    assert cli_main(["recommend", "--run", str(pop_run), "--add_items", str(items), "--history", "105"]) == 2
    err = capsys.readouterr().err
    assert "add_items: the fixed:run model of" in err and "cannot add items" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- the real models behind the service


class HashEncoder:
    """A text encoder (``llmrec.items.text_models.TextEncoder``'s ``dim`` / ``encode``) from ``_embed``."""

    dim = DIM

    def encode(self, texts, progress=True, desc=""):
        return torch.stack([_embed(t) for t in texts])


@pytest.fixture(scope="module")
def textknn_run(tmp_path_factory):
    """A TextKNN run of TITLES whose text embeddings are ``_embed`` (no encoder download)."""
    import llmrec.items.text as text
    from llmrec.baselines.config import BaselineConfig
    from llmrec.baselines.train import train_baseline
    from llmrec.data import PreparedData, save_prepared
    from llmrec.items.text import TextEmbeddings, item_texts

    root = tmp_path_factory.mktemp("textknn")
    n = len(TITLES)
    seqs = [[(u + j) % n for j in range(5)] for u in range(16)]
    data = PreparedData(Catalog([f"r{i}" for i in range(n)], TITLES), [f"u{u}" for u in range(16)], seqs)
    save_prepared(data, root / "data")

    def embeddings(titles, texts, fingerprint, spec, progress=True):
        return TextEmbeddings(
            HashEncoder().encode(item_texts(titles, texts)), torch.ones(len(titles), dtype=bool), "h"
        )

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(text, "item_text_embeddings", embeddings)
        cfg = BaselineConfig(model="textknn", data=str(root / "data"), output_dir=str(root / "run"), ks=[1],
                             metric="hr@1", textknn_history=1)  # fmt: skip
        assert train_baseline(cfg, log=lambda *a: None)["status"] == "done"
    return root / "run"


def test_textknn_recommends_an_item_added_over_http(textknn_run, tmp_path, monkeypatch):
    import llmrec.items.text_models as text_models
    from llmrec.recommenders import load_recommender

    monkeypatch.setattr(text_models, "build_encoder", lambda spec: HashEncoder())
    path = tmp_path / "catalog_overlay.json"
    with _client(load_recommender(textknn_run), overlay=CatalogOverlay.load(path)) as c:
        assert c.post("/items", json=NEW, headers=AUTH).status_code == 201
        assert _ids(c.post("/recommend", json={"history": ["r3"], "k": 2}))[0] == "new-1"
        assert _ids(c.post("/recommend", json={"history": ["new-1"], "k": 1}))[0] == "r3"
        assert c.delete("/items/new-1", headers=AUTH).status_code == 200
        assert "new-1" not in _ids(c.post("/recommend", json={"history": ["r3"], "k": len(TITLES) + 1}))
    live = LiveCatalog(load_recommender(textknn_run), CatalogOverlay.load(path))  # a restart
    live.restore()
    assert live.catalog.raw_ids[-1] == "new-1" and live.is_retired(len(TITLES))
    assert int(live.score([[3]])[0].argsort(descending=True)[1]) == len(TITLES)  # scored as before the restart


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory):
    from llmrec.cli import main as cli_main
    from test_llm_helpers import make_tiny_model_dir, make_toy_data

    root = tmp_path_factory.mktemp("llm")
    model, data = make_tiny_model_dir(root / "model"), make_toy_data(root / "data")
    argv = ["train", "--data", str(data), "--model", str(model), "--output_dir", str(root / "run"), "--max_steps", "2",
            "--num_layers", "2", "--batch_size", "8", "--test_users", "-1", "--progress", "false",
            "--eval_users", "0"]  # fmt: skip
    assert cli_main(argv) == 0
    return root / "run"


def test_a_tiny_llm_serves_an_added_item_and_keeps_it_after_a_restart(llm_run, tmp_path):
    from llmrec.recommenders import load_recommender

    path = tmp_path / "catalog_overlay.json"
    rec = load_recommender(llm_run)
    n = len(rec.catalog)
    with _client(rec, overlay=CatalogOverlay.load(path)) as c:
        r = c.post("/items", json={"raw_id": "i-new", "title": "violet lip gloss", "text": "a gloss"}, headers=AUTH)
        assert r.status_code == 201 and r.json()["index"] == n, r.text
        everything = {"history": ["i-new", "i1"], "k": n + 1, "exclude_seen": False}
        before = {it["id"]: it["score"] for it in c.post("/recommend", json=everything).json()["items"]}
        assert set(before) == {*rec.catalog.raw_ids} and len(before) == n + 1
        assert c.delete("/items/i2", headers=AUTH).status_code == 200
        assert "i2" not in _ids(c.post("/recommend", json=everything))
    live = LiveCatalog(load_recommender(llm_run), CatalogOverlay.load(path))  # a restart: a fresh load + overlay
    live.restore()
    scores = live.mask(live.score([[n, 1]])[0])
    assert live.catalog.raw_ids[n] == "i-new" and scores[2] == -math.inf
    for i, raw in enumerate(live.catalog.raw_ids):
        if raw != "i2":
            assert float(scores[i]) == pytest.approx(before[raw], abs=1e-4), raw


def test_a_tiny_trained_llm_serves_an_added_item_for_a_history_with_its_text(tmp_path, monkeypatch):
    """A real run behind the app: an atomic LLM (tiny, trained here) with text fusion; an item added by POST /items
    with the text of the history's item is the first recommendation, at once (issue #19)."""
    from llmrec.config import parse_config
    from llmrec.llm.config import TrainConfig
    from llmrec.llm.loop import train
    from llmrec.llm.recommender import load_llm_run
    from test_llm_helpers import make_tiny_model_dir, make_toy_data

    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    opts = {"data": make_toy_data(tmp_path / "data"), "model": make_tiny_model_dir(tmp_path / "model"),
            "output_dir": tmp_path / "run", "num_layers": 2, "item_cf_dim": 0, "batch_size": 8, "lr": 1e-2,
            "epochs": 2, "eval_every": 0, "eval_users": 0, "test_users": -1, "progress": False,
            "item_text_encoder": "lm", "text_fusion": 1.0, "num_threads": 1}  # fmt: skip
    train(parse_config(TrainConfig, [x for k, v in opts.items() for x in (f"--{k}", str(v))]))
    rec = load_llm_run(tmp_path / "run")
    rec.fusion = 100.0  # the text term decides, so the test does not hang on what 2 toy epochs learned
    history = {"history": ["i2"], "k": 3}  # "green soap"
    with _client(rec) as c:
        assert "soap-2" not in _ids(c.post("/recommend", json=history))
        r = c.post("/items", json={"raw_id": "soap-2", "title": "green soap", "text": ""}, headers=AUTH)
        assert r.status_code == 201, r.text
        assert _ids(c.post("/recommend", json=history))[0] == "soap-2"
        assert c.post("/recommend", json={"history": ["soap-2"], "k": 3}).status_code == 200  # a history may name it
        assert c.delete("/items/soap-2", headers=AUTH).status_code == 200
        assert "soap-2" not in _ids(c.post("/recommend", json={**history, "k": 13}))
