"""What displays keep across a restart: the event-id high-water mark, overrides, the audit log.

One SQLite file per site in the server's ``state_dir``. Event ids are
reserved in blocks (hi/lo): the file records the highest id that *may* have
been issued before a block is used, so it is written once per
:data:`ID_BLOCK` events, and a restarted server continues above anything ever
issued (it skips the rest of the last block). Ids never depend on the wall
clock, so a clock stepping back cannot make them go backwards; a fresh file
starts at the wall clock in milliseconds, so even a lost state directory is
unlikely to reissue an id a client still holds.

Single owner: the display engine, on the event loop; every call is short
(one transaction), and only overrides and block reservations write.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from server import models
from server.displays.render import Override

#: Event ids reserved per write of the high-water mark.
ID_BLOCK = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS overrides (
    display_id TEXT PRIMARY KEY, mode TEXT NOT NULL, text TEXT, until REAL NOT NULL,
    by TEXT NOT NULL, reason TEXT, set_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, display_id TEXT NOT NULL, action TEXT NOT NULL,
    by TEXT NOT NULL, mode TEXT, text TEXT, until REAL, reason TEXT
);
CREATE INDEX IF NOT EXISTS audit_display ON audit (display_id, id);
"""


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: float
    display_id: str
    action: str
    by: str
    mode: str | None
    text: str | None
    until: float | None
    reason: str | None


class DisplayStateFile:
    """The SQLite file; open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, path: Path, *, block: int = ID_BLOCK) -> None:
        self.path = path
        self.block = block
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("display state file is not open")
        return self._db

    # -- event ids -------------------------------------------------------------

    def reserve_ids(self, floor: int = 0) -> tuple[int, int]:
        """Reserve the next block: ids ``first..last`` (inclusive), all above anything reserved before
        and above ``floor``. Durable before it returns."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'event_id_hi'").fetchone()
            start = max(int(row[0]) if row else 0, floor)
            last = start + self.block
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('event_id_hi', ?)", (last,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return start + 1, last

    # -- overrides and audit -----------------------------------------------------

    def overrides(self) -> dict[str, Override]:
        rows = self.db.execute("SELECT display_id, mode, text, until, by, reason, set_at FROM overrides").fetchall()
        return {r[0]: Override(r[1], r[2], float(r[3]), r[4], r[5], float(r[6])) for r in rows}

    def set_override(self, display_id: str, override: Override) -> None:
        o = override
        self._write(
            (
                "INSERT OR REPLACE INTO overrides VALUES (?, ?, ?, ?, ?, ?, ?)",
                (display_id, o.mode, o.text, o.until, o.by, o.reason, o.set_at),
            ),
            self._audit(o.set_at, display_id, "set", o.by, o.mode, o.text, o.until, o.reason),
        )

    def clear_override(self, display_id: str, at: float, by: str, ended: Override, *, expired: bool) -> None:
        self._write(
            ("DELETE FROM overrides WHERE display_id = ?", (display_id,)),
            self._audit(
                at, display_id, "expire" if expired else "clear", by, ended.mode, ended.text, ended.until, ended.reason
            ),
        )

    def audit(self, display_id: str | None = None, limit: int = 100) -> list[AuditRow]:
        """Newest first."""
        sql = "SELECT id, at, display_id, action, by, mode, text, until, reason FROM audit"
        args: tuple[object, ...] = ()
        if display_id is not None:
            sql += " WHERE display_id = ?"
            args = (display_id,)
        rows = self.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [AuditRow(*r) for r in rows]

    @staticmethod
    def _audit(
        at: float,
        display_id: str,
        action: str,
        by: str,
        mode: str | None,
        text: str | None,
        until: float | None,
        reason: str | None,
    ) -> tuple[str, tuple[object, ...]]:
        return (
            "INSERT INTO audit (at, display_id, action, by, mode, text, until, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (at, display_id, action, by, mode, text, until, reason),
        )

    def _write(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                db.execute(sql, args)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def audit_entry(row: AuditRow) -> models.AuditEntry:
    return models.AuditEntry.model_validate(
        {
            "id": row.id,
            "at": datetime.fromtimestamp(row.at, UTC),
            "display_id": row.display_id,
            "action": row.action,
            "by": row.by,
            "mode": row.mode,
            "text": row.text,
            "until": None if row.until is None else datetime.fromtimestamp(row.until, UTC),
            "reason": row.reason,
        }
    )
