"""Store-and-forward outbox in SQLite (WAL).

Every reading is written here before it is published, and deleted only when
the gateway confirms it stored it (end-to-end confirmation,
:mod:`contracts.confirm`), or, for a device configured for broker-level
delivery only, when the broker's PUBACK arrives. After a reconnect or a restart (a Pi
reboot) everything still pending is published again, oldest first, with the
very same bytes (same ``reading_id``, same ``observed_at``), so the gateway's
storage stays idempotent.

The outbox is bounded: when it holds ``max_messages`` rows, the oldest are
dropped, counted (also across restarts) and logged. Ids come from
``AUTOINCREMENT`` so they never go backwards, which lets the publisher walk
the table with a cursor. A row's id is also the reading's ``seq`` on the wire
(:meth:`Outbox.put_readings`), within the outbox's ``epoch``: a random id made
when the file is created, so a new file (a replaced SD card) starts a new
sequence that no receiver confuses with the old one.

Thread-safe: sensor threads append, the MQTT thread reads and acknowledges.
One connection guarded by a lock; each append is one short transaction.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

#: Builds a reading's payload once its ``(epoch, seq)`` is known.
Stamp = Callable[[str, int], bytes]


class OutboxError(Exception):
    """The outbox file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    topic: str
    payload: bytes


class Outbox:
    def __init__(self, path: str | Path, max_messages: int, *, synchronous: str = "full") -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be positive")
        if synchronous not in ("full", "normal"):
            raise ValueError("synchronous must be 'full' or 'normal'")
        self.path = Path(path)
        self.max_messages = max_messages
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            self._pending = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            row = self._db.execute("SELECT MAX(id) FROM outbox").fetchone()
            self._last_id = int(row[0] or 0)
            row = self._db.execute("SELECT value FROM counters WHERE name='dropped'").fetchone()
            self._dropped = int(row[0]) if row else 0
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
            self._last_id = max(self._last_id, int(row[0]) if row else 0)
            self._db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('epoch', ?)", (uuid.uuid4().hex[:16],))
            self.epoch = str(self._db.execute("SELECT value FROM meta WHERE name='epoch'").fetchone()[0])
        except sqlite3.Error as exc:
            self._db.close()
            raise OutboxError(f"cannot use outbox {self.path}: {exc}") from exc
        self._closed = False
        #: Called (on the writer's thread, after the commit) when rows were added: the publisher's wake-up.
        self._listeners: list[Callable[[], None]] = []
        if self._pending:
            log.info("outbox %s: %d reading(s) pending from before", self.path, self._pending)

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every write that added rows (from the writing thread; it must not block)."""
        self._listeners.append(fn)

    # -- writing ---------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes) -> None:
        self.put_many([(topic, payload)])

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Append ``items`` in order, in one transaction; drop the oldest beyond the bound."""
        self.put_readings([(topic, _constant(payload)) for topic, payload in items])

    def put_readings(self, items: Sequence[tuple[str, Stamp]]) -> list[int]:
        """Append readings whose payload carries their own ``(epoch, seq)``; return the seqs.

        Each item's ``stamp(epoch, seq)`` is called under the outbox lock with
        the row id the reading gets, so ``seq`` is the row id: strictly
        increasing, never reused within this file's epoch.
        """
        if not items:
            return []
        now = time.time()
        with self._lock:
            self._check_open()
            first = self._last_id + 1
            rows = [(first + i, topic, stamp(self.epoch, first + i), now) for i, (topic, stamp) in enumerate(items)]
            with self._transaction() as cur:
                cur.executemany("INSERT INTO outbox (id, topic, payload, created_at) VALUES (?, ?, ?, ?)", rows)
                last_id = rows[-1][0]
                excess = self._pending + len(items) - self.max_messages
                dropped = 0
                if excess > 0:
                    cur.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                        (excess,),
                    )
                    dropped = cur.rowcount
                    cur.execute(
                        "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                        (dropped,),
                    )
            self._pending += len(items) - dropped
            self._last_id = last_id
            if dropped:
                first_drop = self._dropped == 0
                self._dropped += dropped
                if first_drop or self._dropped % 1000 < dropped:
                    log.warning(
                        "outbox full (%d): dropped the %d oldest reading(s), %d dropped in total",
                        self.max_messages,
                        dropped,
                        self._dropped,
                    )
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a wake-up that fails must not fail the write that is already committed
                log.exception("outbox listener failed")
        return [row[0] for row in rows]

    # -- reading and acknowledging ---------------------------------------------------------------
    def pending_after(self, after_id: int, limit: int, upto: int | None = None) -> list[OutboxItem]:
        """Up to ``limit`` pending items with id > ``after_id`` (and <= ``upto`` if given), oldest first."""
        if limit <= 0:
            return []
        with self._lock:
            self._check_open()
            last = self._last_id if upto is None else min(upto, self._last_id)
            if after_id >= last:
                return []
            rows = self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after_id, last, limit),
            ).fetchall()
        return [OutboxItem(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def ack(self, ids: Iterable[int]) -> int:
        """Delete acknowledged items; returns how many were still there."""
        batch = [(i,) for i in ids]
        if not batch:
            return 0
        with self._lock:
            self._check_open()
            with self._transaction() as cur:
                cur.executemany("DELETE FROM outbox WHERE id = ?", batch)
                deleted = cur.rowcount
            self._pending -= deleted
        return deleted

    def ack_ranges(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete the readings whose ids (seqs) lie in the inclusive ``ranges``; return how many were there."""
        batch = [(lo, hi) for lo, hi in ranges if lo <= hi]
        if not batch:
            return 0
        with self._lock:
            self._check_open()
            with self._transaction() as cur:
                deleted = 0
                for lo, hi in batch:
                    cur.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (lo, hi))
                    deleted += cur.rowcount
            self._pending -= deleted
        return deleted

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def dropped(self) -> int:
        """Readings dropped because the outbox was full (since the file was created)."""
        return self._dropped

    @property
    def last_id(self) -> int:
        return self._last_id

    # -- lifecycle -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, taken at once (BEGIN IMMEDIATE); rolled back on error. Hold ``_lock``."""
        cur = self._db.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            yield cur
            cur.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _constant(payload: bytes) -> Stamp:
    return lambda _epoch, _seq: payload
