"""Pickup lockers: each compartment's last reading, and bank availability per size.

Same rules as bays: a compartment counts as free, occupied or out of service
only while it was heard within its bank's ``stale_after_s``; otherwise it is
``unknown``, never free. A door reported open is listed with how long it has
been open (since the first reading of the current open streak, on our clock).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from contracts import LockerCompartmentState, storage
from contracts.site import COMPARTMENT_SIZES, LockerBank, SiteConfig
from server import models
from server.stores.base import MAX_FUTURE_S, Clock, EntityStore, Freshness, Reading, fresh_window

if TYPE_CHECKING:
    from server.influx import InfluxClient


@dataclass(frozen=True, slots=True)
class BankTally:
    """Per size: status -> compartments with a fresh reading; the open doors; the newest reading."""

    by_size: dict[str, Counter[str]]
    open_doors: list[tuple[str, float]]
    newest: Reading | None
    counted_at: float
    expires: float


class LockerStore(EntityStore):
    """Per-compartment last state for one site, with bank summaries; thread-safe."""

    name = "lockers"
    unknown_key = "unknown_compartment"

    def __init__(self, site: SiteConfig, clock: Clock, *, max_future_s: float = MAX_FUTURE_S) -> None:
        super().__init__(site.compartments_by_bank, clock, max_future_s=max_future_s)
        self._banks: dict[str, LockerBank] = {bank.id: bank for bank in site.lockers}
        self._sizes: dict[str, dict[str, str]] = {
            bank.id: {c.id: c.size for c in bank.compartment_list()} for bank in site.lockers
        }
        self._tallies: dict[str, tuple[int, BankTally]] = {}

    def apply_message(self, message: LockerCompartmentState, heard: float) -> bool:
        return self.apply(message.bank_id, message.compartment_id, Reading.from_message(message, heard=heard))

    def banks(self, now: datetime) -> list[models.LockerBank]:
        now_ts = now.timestamp()
        with self._lock:
            return [self._summarize(bank, now_ts) for bank in self._banks.values()]

    def bank(self, bank_id: str, now: datetime) -> models.LockerBank | None:
        bank = self._banks.get(bank_id)
        if bank is None:
            return None
        with self._lock:
            return self._summarize(bank, now.timestamp())

    def _tally(self, bank: LockerBank, now_ts: float) -> BankTally:
        cached = self._tallies.get(bank.id)
        version = self._versions[bank.id]
        if cached is not None and cached[0] == version and cached[1].counted_at <= now_ts < cached[1].expires:
            return cached[1]
        fresh_after, not_after = fresh_window(now_ts, bank.stale_after_s, self.max_future_s)
        sizes = self._sizes[bank.id]
        by_size: dict[str, Counter[str]] = {size: Counter() for size in COMPARTMENT_SIZES}
        open_doors: list[tuple[str, float]] = []
        newest: Reading | None = None
        expires = math.inf
        for compartment, r in self._state[bank.id].items():
            if r.heard > not_after:
                expires = min(expires, r.heard - self.max_future_s)
                continue
            if newest is None or r.heard > newest.heard:
                newest = r
            if r.heard > fresh_after:
                expires = min(expires, r.heard + bank.stale_after_s)
                by_size[sizes[compartment]][r.status] += 1
                if r.detail == "open":
                    open_doors.append((compartment, r.detail_since if r.detail_since is not None else r.heard))
        t = BankTally(by_size, sorted(open_doors, key=lambda d: d[1]), newest, now_ts, expires)
        self._tallies[bank.id] = (version, t)
        return t

    def _summarize(self, bank: LockerBank, now_ts: float) -> models.LockerBank:
        t = self._tally(bank, now_ts)
        configured = Counter(self._sizes[bank.id].values())
        sizes: list[models.LockerSize] = []
        for size in COMPARTMENT_SIZES:
            total = configured.get(size, 0)
            if not total:
                continue
            c = t.by_size[size]
            free, occupied, oos = c["free"], c["occupied"], c["out_of_service"]
            sizes.append(
                models.LockerSize(
                    size=size,
                    total=total,
                    free=free,
                    occupied=occupied,
                    out_of_service=oos,
                    unknown=total - free - occupied - oos,
                )
            )
        free = sum(s.free for s in sizes)
        known = sum(s.free + s.occupied + s.out_of_service for s in sizes)
        state: models.LockerBankState
        if known == 0:
            state = "nodata"
        elif free:
            state = "open"
        elif known == sum(s.out_of_service for s in sizes):
            state = "out_of_service"
        else:
            state = "full"
        fresh = Freshness.of(None if t.newest is None else t.newest.heard, now_ts, bank.stale_after_s)
        return models.LockerBank(
            id=bank.id,
            name=bank.name,
            coords=models.Coords(lat=bank.coords.lat, lng=bank.coords.lng),
            zone=bank.zone,
            total=sum(s.total for s in sizes),
            free=free,
            occupied=sum(s.occupied for s in sizes),
            out_of_service=sum(s.out_of_service for s in sizes),
            unknown=sum(s.unknown for s in sizes),
            sizes=sizes,
            doors_open=[
                models.OpenDoor(
                    compartment_id=compartment,
                    size=self._sizes[bank.id][compartment],
                    since=datetime.fromtimestamp(since, UTC),
                    open_s=round(max(0.0, now_ts - since), 3),
                )
                for compartment, since in t.open_doors
            ],
            state=state,
            observed_at=fresh.observed_at,
            age_s=fresh.age_s,
            fresh=fresh.fresh,
            stale_after_s=bank.stale_after_s,
        )

    async def load_history(self, client: InfluxClient, site_id: str, window_s: float) -> tuple[int, int]:
        rows = await client.last_states(storage.LOCKER_HISTORY, site_id, window_s)
        applied = sum(self.apply(row.group, row.entity, row.reading()) for row in rows)
        return len(rows), applied
