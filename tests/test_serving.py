"""The HTTP API: validation, micro-batching, feedback durability, and a real uvicorn process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from llmrec.cli import main as cli_main
from llmrec.commands.serve import check_exposure
from llmrec.data import Catalog, PreparedData, save_prepared
from llmrec.serving.app import ServeLimits, create_app
from llmrec.serving.events import EventLog

REPO = Path(__file__).resolve().parents[1]


class FakeRecommender:
    """Scores item i as i (so the top items are the highest ids); records batch sizes."""

    def __init__(self, n: int = 30, delay: float = 0.0):
        self.catalog = Catalog([f"r{i}" for i in range(n)], [f"Item {i}" for i in range(n)])
        self.delay, self.batches, self.name = delay, [], "fake"

    def score(self, histories):
        self.batches.append(len(histories))
        time.sleep(self.delay)
        return torch.arange(len(self.catalog), dtype=torch.float32).repeat(len(histories), 1)


@pytest.fixture
def client(tmp_path):
    rec = FakeRecommender()
    app = create_app(rec, EventLog(tmp_path / "ev.sqlite", salt="s"), ServeLimits(max_k=20, max_history=5))
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        yield c


def test_recommend_ranks_and_excludes_seen(client):
    r = client.post("/recommend", json={"history": ["r29", "Item 27"], "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert [it["id"] for it in body["items"]] == ["r28", "r26", "r25"]
    assert [it["rank"] for it in body["items"]] == [1, 2, 3] and body["model"] == "fake"
    r = client.post("/recommend", json={"history": ["r29"], "k": 2, "exclude_seen": False})
    assert [it["id"] for it in r.json()["items"]] == ["r29", "r28"]


@pytest.mark.parametrize(
    "payload,status,field",
    [
        ({"history": ["r1", "nope"], "k": 3}, 422, "history[1]"),
        ({"history": [], "k": 3}, 422, "history"),
        ({"history": ["r1"], "k": 0}, 422, "k"),
        ({"history": ["r1"], "k": 21}, 422, "k"),
        ({"history": ["r1"] * 6, "k": 3}, 413, "history"),
        ({"k": 3}, 422, "history"),
        ({"history": "r1", "k": 3}, 422, "history"),
        ({"history": ["r1"], "k": "ten"}, 422, "k"),
    ],
)
def test_bad_requests_name_the_field(client, payload, status, field):
    r = client.post("/recommend", json=payload)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and field in r.json()["error"]
    assert "Traceback" not in r.text


def test_malformed_json_and_other_endpoints(client):
    r = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "malformed JSON" in r.json()["error"]
    assert client.get("/items/r3").json()["title"] == "Item 3"
    assert client.get("/items/zzz").status_code == 404
    assert [it["id"] for it in client.get("/items", params={"query": "item 1"}).json()["items"]][:2] == ["r1", "r10"]
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/openapi.json").status_code == 200
    m = client.get("/metrics").json()
    assert m["requests"]["/items/{item_id}"] == 2 and "p99_ms" in m["latency"]["/items/{item_id}"]


def test_feedback_validation_and_hashing(client, tmp_path):
    assert client.post("/feedback", json={"user": "alice", "item": "r1", "event": "click"}).json()["stored"]
    r = client.post("/feedback", json={"user": "alice", "item": "r1", "event": "rating"})
    assert r.status_code == 422 and r.json()["field"] == "value"
    r = client.post("/feedback", json={"user": "alice", "item": "r1", "event": "like"})
    assert r.status_code == 422 and r.json()["field"] == "event"
    assert client.post("/feedback", json={"user": "alice", "item": "x", "event": "click"}).status_code == 422
    rows = sqlite3.connect(tmp_path / "ev.sqlite").execute("SELECT user_hash, item, event FROM events").fetchall()
    assert len(rows) == 1 and rows[0][1:] == ("r1", "click")
    assert "alice" not in rows[0][0] and len(rows[0][0]) == 64


def test_concurrent_requests_are_batched(tmp_path):
    rec = FakeRecommender(delay=0.05)
    app = create_app(rec, None, ServeLimits(batch_window_ms=20))
    with TestClient(app, base_url="http://localhost") as c:
        results = []
        threads = [
            threading.Thread(
                target=lambda: results.append(c.post("/recommend", json={"history": ["r1"], "k": 5}).status_code)
            )
            for _ in range(12)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [200] * 12
    assert max(rec.batches) > 1 and sum(rec.batches) == 12


# ---------------------------------------------------------------- a real uvicorn process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    n = 12
    seqs = [[(u + j) % n for j in range(6)] for u in range(24)]
    data = PreparedData(
        Catalog([str(100 + i) for i in range(n)], [f"Movie {i}" for i in range(n)]),
        [f"u{u}" for u in range(24)],
        seqs,
        {},
        {"dataset": "toy"},
    )
    save_prepared(data, root / "data")
    assert cli_main(["baseline", "pop", "--data", str(root / "data"), "--out", str(root / "run")]) == 0
    return root / "run"


def _start_server(run: Path, port: int, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "llmrec.cli",
        "serve",
        "--run",
        str(run),
        "--port",
        str(port),
        "--event-log",
        str(log),
    ]
    proc = subprocess.Popen(
        [*cmd, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LLMREC_SALT": "test-salt", "OMP_NUM_THREADS": "1"},
    )
    wait_healthy(proc, port)
    return proc


def wait_healthy(proc: subprocess.Popen, port: int) -> None:
    """Wait until a server subprocess answers ``/health`` on ``port`` (120 s; its output in the error if it exits)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start within 120 s")


def test_real_server_and_feedback_survives_kill9(pop_run, tmp_path):
    port, log = free_port(), tmp_path / "events.sqlite"
    proc = _start_server(pop_run, port, log)
    try:
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/recommend", json={"history": ["100", "Movie 1"], "k": 5})
        assert r.status_code == 200, r.text
        ids = [it["id"] for it in r.json()["items"]]
        assert len(ids) == 5 and "100" not in ids and "101" not in ids
        assert (
            httpx.post(f"{base}/recommend", content=b"[", headers={"content-type": "application/json"}).status_code
            == 422
        )
        for item in ("100", "103", "105", "107"):
            r = httpx.post(f"{base}/feedback", json={"user": "bob@example.com", "item": item, "event": "purchase"})
            assert r.status_code == 200 and r.json()["stored"]
        assert httpx.get(f"{base}/health").status_code == 200  # still alive after the bad request
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    rows = sqlite3.connect(log).execute("SELECT user_hash, item, event FROM events ORDER BY id").fetchall()
    assert [r[1] for r in rows] == ["100", "103", "105", "107"]
    assert all("bob" not in r[0] for r in rows)
    # closing the loop: the event log is an input format of `llmrec prepare`
    out = tmp_path / "prep"
    assert cli_main(["prepare", "--format", "events", "--input", str(log), "--out", str(out)]) == 0
    assert json.loads((out / "stats.json").read_text())["interactions"] == 4


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc for the server's RSS")
def test_probe_and_huge_bodies_against_a_real_server(pop_run, tmp_path):
    """scripts/probe_serve.py finds no 5xx and no non-uniform 4xx; 20 MB bodies are refused in bounded memory."""
    port, log = free_port(), tmp_path / "events.sqlite"
    admin = "probe-admin-token-0123456789"
    proc = _start_server(pop_run, port, log, "--feedback_token", "probe-token", "--admin_token", admin)
    base = f"http://127.0.0.1:{port}"
    try:
        probe = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "probe_serve.py"), "--url", base, "--token", "probe-token"]
            + ["--admin-token", admin, "--requests", "200", "--concurrency", "32"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-3000:]
        report = json.loads(probe.stdout.strip().splitlines()[-1])
        assert report["ok"] and sum(report["by_status"].values()) == 200
        kinds = report["by_kind"]
        assert set(kinds["items_no_token"]) == {"401"} and set(kinds["items_feedback_token"]) == {"401"}
        assert set(kinds["items_missing_title"]) == {"422"} and set(kinds["delete_unknown_item"]) == {"404"}
        assert not any(s.startswith("5") for s in report["by_status"])
        before = _rss_mb(proc.pid)
        huge = b" " * (20 << 20)

        def chunks():
            for _ in range(320):
                yield b" " * (64 << 10)

        for content in (huge, chunks()):
            r = httpx.post(
                f"{base}/recommend", content=content, headers={"content-type": "application/json"}, timeout=60
            )
            assert r.status_code == 413 and r.json()["field"] == "body", r.text
        assert _rss_mb(proc.pid) - before < 50
        assert httpx.get(f"{base}/health").status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert sqlite3.connect(log).execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0  # no bad event stored
    overlay = pop_run / "catalog_overlay.json"  # and no bad catalog change
    state = json.loads(overlay.read_text()) if overlay.exists() else {}
    assert state.get("added", []) == [] and state.get("retired", []) == []


# ---------------------------------------------------------------- `llmrec serve` failing fast, in one line


def _one_line_error(capsys, argv: list[str]) -> str:
    assert cli_main(argv) == 2
    out, err = capsys.readouterr()
    assert "llmrec serve:" not in out  # no banner
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_serve_port_in_use_fails_before_loading_the_model(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = _one_line_error(capsys, ["serve", "--run", str(tmp_path / "no-such-run"), "--port", str(port)])
    assert f"port {port} on 127.0.0.1 is in use; pass --port" in err


@pytest.mark.parametrize("remove", ["model.safetensors", "catalog.parquet", "run.json", "*"])
def test_serve_incomplete_run_dir_is_one_line(capsys, pop_run, tmp_path, remove):
    broken = tmp_path / "broken"
    shutil.copytree(pop_run, broken)
    for path in broken.glob(remove):
        path.unlink()
    err = _one_line_error(capsys, ["serve", "--run", str(broken), "--port", str(free_port())])
    assert str(broken) in err


def test_serve_refuses_a_public_host_without_token(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("LLMREC_FEEDBACK_TOKEN", raising=False)
    err = _one_line_error(capsys, ["serve", "--run", str(tmp_path / "r"), "--host", "0.0.0.0"])
    assert "--feedback_token" in err and "--insecure" in err
    check_exposure("0.0.0.0", "a-token", insecure=False)
    check_exposure("0.0.0.0", "", insecure=True)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(host, "", insecure=False)
