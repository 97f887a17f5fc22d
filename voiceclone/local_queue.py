"""The durable single-machine event queue: one SQLite file (standard library, no server to run).

Pub/Sub's semantics as the cleanup function relies on them, on one machine: at-least-once
delivery, exponential backoff between deliveries, a dead-letter table after too many, and
nothing forgotten when a process stops. Several processes may share the file (gunicorn workers,
`cleanup_voices`, the operator CLI): WAL mode lets readers go on while one writer at a time
changes it (`BEGIN IMMEDIATE`), and a delivered event is leased to one consumer, so two never
handle it at once. A lease ends when its time is up or when the process that holds it is gone
(checked by process id and start time: one machine), so an event in hand at a crash is delivered
again. Only storage lives here; `voiceclone.sinks.LocalEventQueue` runs the consumer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    data BLOB NOT NULL,
    event_type TEXT,
    conversation_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL,
    lease_owner TEXT,
    published_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS events_due ON events (due_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    event_type TEXT,
    conversation_id TEXT,
    attempts INTEGER NOT NULL,
    published_at REAL NOT NULL,
    dead_at REAL NOT NULL,
    last_error TEXT
);
"""


class QueueUnusable(Exception):
    """The queue file cannot be opened, read or written; the message says why, for one start-up line."""


@dataclass(frozen=True)
class Delivery:
    """One event leased to this process: handle it, then `ack` or `retry` it."""

    id: int
    data: bytes
    attempt: int
    owner: str


@dataclass(frozen=True)
class QueueCounts:
    pending: int  # never delivered yet
    retrying: int  # delivered at least once, waiting for the next delivery
    in_hand: int  # leased to a consumer right now
    dead_lettered: int


def process_token(pid: int | None = None) -> str | None:
    """`pid:start time` of a live process, or None if it is gone (a zombie counts as gone). The start
    time tells a reused process id from the one that took a lease."""
    pid = os.getpid() if pid is None else pid
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else f"{pid}:{fields[19]}"


class QueueStore:
    """The queue's tables. One connection per process, used under a lock (SQLite serialises writers
    anyway; a statement here takes well under a millisecond). `clock` is wall-clock seconds: due
    times are compared across processes and restarts."""

    def __init__(self, path: str, clock: Callable[[], float], lease_seconds: float = 60.0) -> None:
        self.path = path
        self._clock = clock
        self._lease = lease_seconds
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._connection()  # fail now, at start-up, not at the first call
        if path != MEMORY:
            self.close()  # no connection may cross gunicorn's fork: each process opens its own when it first needs it

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (a connection must not cross a fork: reopened in the child)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            if self.path != MEMORY:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self.path != MEMORY:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise QueueUnusable(f"{self.path} cannot be put in WAL mode (journal mode {mode})")
                conn.execute("PRAGMA synchronous = FULL")  # a committed event survives a crash of the machine too
            conn.executescript(_SCHEMA)
            conn.execute("SELECT count(*) FROM events").fetchone()
        except (sqlite3.Error, OSError) as error:
            raise QueueUnusable(f"{self.path} is not a usable SQLite queue file ({error})") from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _write(self, work: Callable[[sqlite3.Connection], object]) -> object:
        """One write transaction, taken at once (`BEGIN IMMEDIATE`): no upgrade from a read lock can deadlock."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def add(self, data: bytes, event_type: str | None, conversation_id: str | None) -> None:
        now = self._clock()
        self._write(lambda c: c.execute(
            "INSERT INTO events (data, event_type, conversation_id, due_at, published_at) VALUES (?, ?, ?, ?, ?)",
            (data, event_type, conversation_id, now, now)))

    def claim(self) -> Delivery | None:
        """Lease the event due first, if any is due: its next delivery attempt, held for `lease_seconds`."""
        now = self._clock()
        owner = f"{process_token() or os.getpid()}:{uuid.uuid4().hex[:8]}"

        def work(conn: sqlite3.Connection) -> Delivery | None:
            row = conn.execute("SELECT id, data, attempts FROM events WHERE due_at <= ? ORDER BY due_at, id LIMIT 1",
                               (now,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE events SET attempts = attempts + 1, due_at = ?, lease_owner = ? WHERE id = ?",
                         (now + self._lease, owner, row[0]))
            return Delivery(row[0], bytes(row[1]), row[2] + 1, owner)

        return self._write(work)  # type: ignore[return-value]

    def ack(self, delivery: Delivery) -> None:
        self._write(lambda c: c.execute("DELETE FROM events WHERE id = ?", (delivery.id,)))

    def retry(self, delivery: Delivery, delay: float, error: str) -> None:
        """Give the event back, due again after `delay` (unless another consumer took it meanwhile)."""
        self._write(lambda c: c.execute(
            "UPDATE events SET due_at = ?, lease_owner = NULL, last_error = ? WHERE id = ? AND lease_owner = ?",
            (self._clock() + delay, error, delivery.id, delivery.owner)))

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        now = self._clock()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO dead_letters (id, data, event_type, conversation_id, attempts, published_at,"
                         " dead_at, last_error) SELECT id, data, event_type, conversation_id, attempts, published_at, ?, ?"
                         " FROM events WHERE id = ?", (now, error, delivery.id))
            conn.execute("DELETE FROM events WHERE id = ?", (delivery.id,))

        self._write(work)

    def release_orphans(self) -> int:
        """Events leased by a process that is gone (killed, crashed) are due again now; returns how many."""
        with self._lock:
            owners = [r[0] for r in self._connection().execute(
                "SELECT DISTINCT lease_owner FROM events WHERE lease_owner IS NOT NULL AND due_at > ?", (self._clock(),))]
        dead = [o for o in owners if process_token(int(o.split(":", 1)[0])) != o.rsplit(":", 1)[0]]
        if not dead:
            return 0
        now = self._clock()

        def work(conn: sqlite3.Connection) -> int:
            return sum(conn.execute("UPDATE events SET due_at = ?, lease_owner = NULL WHERE lease_owner = ?",
                                    (now, owner)).rowcount for owner in dead)

        return self._write(work)  # type: ignore[return-value]

    def next_due(self) -> float | None:
        with self._lock:
            row = self._connection().execute("SELECT min(due_at) FROM events").fetchone()
        return row[0]

    def counts(self) -> QueueCounts:
        now = self._clock()
        with self._lock:
            conn = self._connection()
            pending, retrying, in_hand = conn.execute(
                "SELECT coalesce(sum(attempts = 0), 0), coalesce(sum(attempts > 0 AND (lease_owner IS NULL OR due_at <= ?)), 0),"
                " coalesce(sum(lease_owner IS NOT NULL AND due_at > ?), 0) FROM events", (now, now)).fetchone()
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        return QueueCounts(pending, retrying, in_hand, dead)

    def listing(self, limit: int = 50) -> dict[str, list[dict[str, object]]]:
        """What `python -m cleanup status` shows of the queue: waiting events and dead letters, oldest first."""
        with self._lock:
            conn = self._connection()
            waiting = conn.execute("SELECT id, event_type, conversation_id, attempts, due_at, published_at, last_error"
                                   " FROM events ORDER BY published_at, id LIMIT ?", (limit,)).fetchall()
            dead = conn.execute("SELECT id, event_type, conversation_id, attempts, dead_at, published_at, last_error"
                                " FROM dead_letters ORDER BY dead_at, id LIMIT ?", (limit,)).fetchall()
        keys = ("id", "event_type", "conversation_id", "attempts", "due_at", "published_at", "last_error")
        dead_keys = ("id", "event_type", "conversation_id", "attempts", "dead_at", "published_at", "last_error")
        return {"events": [dict(zip(keys, row, strict=True)) for row in waiting],
                "dead_letters": [dict(zip(dead_keys, row, strict=True)) for row in dead]}

    def redrive(self) -> int:
        """Every dead letter back into the queue, due now with a fresh attempt count; returns how many."""
        now = self._clock()

        def work(conn: sqlite3.Connection) -> int:
            moved = conn.execute("INSERT INTO events (data, event_type, conversation_id, due_at, published_at, last_error)"
                                 " SELECT data, event_type, conversation_id, ?, published_at, last_error FROM dead_letters"
                                 " ORDER BY id", (now,)).rowcount
            conn.execute("DELETE FROM dead_letters")
            return moved

        return self._write(work)  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def open_store(path: str, clock: Callable[[], float] = time.time) -> QueueStore:
    """The queue file at `LOCAL_QUEUE_PATH`, opened and checked now: a corrupt or unwritable file stops
    start-up with one line naming the setting; it never falls back to memory (that would forget every
    pending deletion at the next restart)."""
    try:
        return QueueStore(path, clock)
    except QueueUnusable as error:
        raise ConfigError("LOCAL_QUEUE_PATH", str(error)) from None
