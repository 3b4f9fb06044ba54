"""The durable feedback log of ``llmrec serve``: an append-only SQLite table, user ids stored only as salted hashes.

Schema: ``events`` (id, ts, user_hash, item, event, value), WAL mode, ``synchronous=FULL`` (an acknowledged event
survives kill -9). ``llmrec prepare --format events --input FILE`` reads it back for the next training round.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path


class EventLog:
    """Append-only SQLite event log (WAL, synchronous=FULL: an acknowledged event survives kill -9)."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
        "user_hash TEXT NOT NULL, item TEXT NOT NULL, event TEXT NOT NULL, value REAL)"
    )

    def __init__(self, path: str | os.PathLike, salt: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.salt = salt or self._load_or_create_salt()
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute(self.SCHEMA)

    def _load_or_create_salt(self) -> str:
        salt_file = self.path.with_suffix(self.path.suffix + ".salt")
        if salt_file.is_file():
            return salt_file.read_text().strip()
        salt = secrets.token_hex(16)
        fd = os.open(salt_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(salt)
        return salt

    def hash_user(self, user: str) -> str:
        return hashlib.sha256(f"{self.salt}:{user}".encode()).hexdigest()

    def append(self, user: str, item: str, event: str, value: float | None) -> int:
        with self._lock:
            cur = self._con.execute(
                "INSERT INTO events (ts, user_hash, item, event, value) VALUES (?, ?, ?, ?, ?)",
                (time.time(), self.hash_user(user), item, event, value),
            )
            return int(cur.lastrowid)

    def count(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        self._con.close()
