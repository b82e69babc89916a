"""The truth ledger: what really happened in the simulated city, and when (SQLite).

One file, written by the fleet (one connection, one lock), readable by anyone
meanwhile (WAL). Times are POSIX seconds on the real clock (``t``), which is
what the API's ``observed_at`` is compared with, plus the simulated local time
(``sim_t``, POSIX seconds of the accelerated clock) that drove the demand.

Tables (all append-only):

``bay(t, sim_t, lot, bay, occupied)``
    Every change of a bay's true state (1 car there, 0 free), the initial fill
    included. A bay's truth at ``t`` is its last row at or before ``t``.
``compartment(t, sim_t, bank, compartment, occupied, door_open)``
    Every change of a compartment: a parcel in it, its door open.
``footfall(t_start, t_end, sim_start, sim_end, camera, zone, line, towards, away)``
    People who crossed a line during a camera's reporting interval.
``fault(t, until, device, kind, detail)``
    A fault in force from ``t`` to ``until`` (NULL: still on, or instantaneous
    for ``garbage`` and clock ``step``). During ``dropout``/``power_cut`` the
    device produced no readings; during ``partition`` it produced them but
    could not send them; ``flap`` names the bay whose sensor lies (the truth
    rows stay right); ``skew``/``step`` give the clock offset in seconds.
``produced(device, kind, readings)``
    Readings each device put in its outbox (for "lost readings": the store
    must end up holding exactly these), by message kind; footfall counts one
    reading per interval (the store holds one point per line).
``meta(name, value)``
    ``site``, ``speed``, ``sim_start`` (ISO 8601), ``started_at`` (POSIX s).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bay (t REAL NOT NULL, sim_t REAL NOT NULL, lot TEXT NOT NULL, bay TEXT NOT NULL,
                                occupied INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS bay_lot_t ON bay (lot, t);
CREATE TABLE IF NOT EXISTS compartment (t REAL NOT NULL, sim_t REAL NOT NULL, bank TEXT NOT NULL,
                                        compartment TEXT NOT NULL, occupied INTEGER NOT NULL,
                                        door_open INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS compartment_bank_t ON compartment (bank, t);
CREATE TABLE IF NOT EXISTS footfall (t_start REAL NOT NULL, t_end REAL NOT NULL, sim_start REAL NOT NULL,
                                     sim_end REAL NOT NULL, camera TEXT NOT NULL, zone TEXT NOT NULL,
                                     line TEXT NOT NULL, towards INTEGER NOT NULL, away INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fault (id INTEGER PRIMARY KEY, t REAL NOT NULL, until REAL, device TEXT NOT NULL,
                                  kind TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS produced (device TEXT NOT NULL, kind TEXT NOT NULL, readings INTEGER NOT NULL,
                                     PRIMARY KEY (device, kind));
"""


class Ledger:
    """Writer side. Rows are buffered and written by :meth:`flush` (the fleet calls it every tick)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Shards of one fleet (separate processes) share the file: wait for each other's short transactions.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._bays: list[tuple[float, float, str, str, int]] = []
        self._comps: list[tuple[float, float, str, str, int, int]] = []
        self._foot: list[tuple[float, float, float, float, str, str, str, int, int]] = []
        self._produced: Counter[tuple[str, str]] = Counter()

    def meta(self, **values: object) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [(k, str(v)) for k, v in values.items()],
            )

    def bay(self, t: float, sim_t: float, lot: str, bay: str, occupied: bool) -> None:
        self._bays.append((t, sim_t, lot, bay, int(occupied)))

    def compartment(self, t: float, sim_t: float, bank: str, comp: str, occupied: bool, door_open: bool) -> None:
        self._comps.append((t, sim_t, bank, comp, int(occupied), int(door_open)))

    def footfall(
        self,
        t: tuple[float, float],
        sim: tuple[float, float],
        camera: str,
        zone: str,
        line: str,
        towards: int,
        away: int,
    ) -> None:
        self._foot.append((t[0], t[1], sim[0], sim[1], camera, zone, line, towards, away))

    def produced(self, device: str, kind: str, n: int = 1) -> None:
        self._produced[(device, kind)] += n

    def fault(self, t: float, device: str, kind: str, detail: str = "", until: float | None = None) -> int:
        """Record a fault on ``device`` from ``t``; returns its id for :meth:`fault_end`."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO fault (t, until, device, kind, detail) VALUES (?, ?, ?, ?, ?)",
                (t, until, device, kind, detail),
            )
            return int(cur.lastrowid or 0)

    def faults(self, rows: Iterable[tuple[float, str, str, str]]) -> list[int]:
        """Record many faults at once: (t, device, kind, detail); returns their ids."""
        with self._lock:
            ids = []
            self._db.execute("BEGIN IMMEDIATE")
            for t, device, kind, detail in rows:
                cur = self._db.execute(
                    "INSERT INTO fault (t, until, device, kind, detail) VALUES (?, NULL, ?, ?, ?)",
                    (t, device, kind, detail),
                )
                ids.append(int(cur.lastrowid or 0))
            self._db.execute("COMMIT")
            return ids

    def fault_end(self, ids: Sequence[int], until: float) -> None:
        with self._lock:
            self._db.executemany("UPDATE fault SET until = ? WHERE id = ?", [(until, i) for i in ids])

    def flush(self) -> None:
        """Write what was buffered since the last flush, in one transaction."""
        with self._lock:
            bays, self._bays = self._bays, []
            comps, self._comps = self._comps, []
            foot, self._foot = self._foot, []
            produced, self._produced = self._produced, Counter()
            if not (bays or comps or foot or produced):
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO bay VALUES (?, ?, ?, ?, ?)", bays)
            self._db.executemany("INSERT INTO compartment VALUES (?, ?, ?, ?, ?, ?)", comps)
            self._db.executemany("INSERT INTO footfall VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", foot)
            self._db.executemany(
                "INSERT INTO produced (device, kind, readings) VALUES (?, ?, ?) "
                "ON CONFLICT(device, kind) DO UPDATE SET readings = readings + excluded.readings",
                [(d, k, n) for (d, k), n in produced.items()],
            )
            self._db.execute("COMMIT")

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class Interval:
    device: str
    kind: str
    start: float
    end: float  # float('inf') while still on


class LedgerReader:
    """Read side, for tests and the bench: truth at a time, and fault intervals."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self._db.close()

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT name, value FROM meta").fetchall())

    def bay_changes(self, lot: str) -> dict[str, list[tuple[float, int]]]:
        """Per bay of ``lot``: its (t, occupied) changes in time order."""
        out: dict[str, list[tuple[float, int]]] = {}
        for t, bay, occ in self._db.execute("SELECT t, bay, occupied FROM bay WHERE lot = ? ORDER BY t, rowid", (lot,)):
            out.setdefault(bay, []).append((float(t), int(occ)))
        return out

    def lots(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT lot FROM bay ORDER BY lot")]

    def faults(self, kinds: Sequence[str] | None = None) -> list[Interval]:
        rows = self._db.execute("SELECT device, kind, t, until FROM fault ORDER BY t").fetchall()
        return [
            Interval(d, k, float(t), float("inf") if u is None else float(u))
            for d, k, t, u in rows
            if kinds is None or k in kinds
        ]

    def fault_details(self, kind: str) -> list[tuple[str, str, float]]:
        return [
            (str(d), str(x), float(t))
            for d, x, t in self._db.execute("SELECT device, detail, t FROM fault WHERE kind = ? ORDER BY t", (kind,))
        ]

    def produced(self) -> dict[str, int]:
        """Readings produced, by message kind, over all devices."""
        return {k: int(n) for k, n in self._db.execute("SELECT kind, SUM(readings) FROM produced GROUP BY kind")}

    def footfall_totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(camera, line) -> (towards, away) summed over the whole run."""
        rows = self._db.execute("SELECT camera, line, SUM(towards), SUM(away) FROM footfall GROUP BY camera, line")
        return {(c, ln): (int(a), int(b)) for c, ln, a, b in rows}


def free_range(changes: dict[str, list[tuple[float, int]]], start: float, end: float) -> tuple[int, int]:
    """(fewest, most) bays of a lot that could truly be free at some moment in [start, end].

    A bay counts towards the fewest if it was free throughout the window, towards
    the most if it was free at any moment of it (a bay with no row before
    ``end`` is unknown to the truth and counts in neither).
    """
    lo = hi = 0
    for rows in changes.values():
        states: set[int] = set()
        before: int | None = None
        for t, occ in rows:
            if t <= start:
                before = occ
            elif t <= end:
                states.add(occ)
            else:
                break
        if before is not None:
            states.add(before)
        if not states:
            continue
        if 0 in states:
            hi += 1
            if states == {0}:
                lo += 1
    return lo, hi
