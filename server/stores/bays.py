"""Parking bays: each bay's last reading, lot availability, lot levels and lot trend.

A bay counts as free or occupied only while it was heard within the lot's
``stale_after_s``, judged when a lot is asked for; otherwise it is unknown and
never shown as free. Counting a big lot's bays costs ~0.3 µs each, and the
count only changes when a reading arrives or a counted reading turns stale, so
each lot's (and level's) tally is cached until then.

Trend: every live change between free and occupied is remembered for
:data:`TREND_WINDOW_S`; the sum of those changes is how the lot's free count
moved in that window (readings loaded from history are not changes we saw
happen and are not counted).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from contracts import ParkingBayState, storage
from contracts.site import LotConfig, SiteConfig
from server import models
from server.stores.base import MAX_FUTURE_S, Clock, EntityStore, Freshness, Reading, fresh_window

if TYPE_CHECKING:
    from server.influx import InfluxClient

#: Seconds of live bay changes a lot's trend looks back over.
TREND_WINDOW_S = 600.0
#: A lot is filling (emptying) when its free count fell (rose) by at least this
#: share of its bays in the trend window, and by at least TREND_MIN_BAYS.
TREND_SHARE = 0.01
TREND_MIN_BAYS = 2
#: Recent status changes remembered per bay, for flapping.
FLAP_KEEP = 32


@dataclass(frozen=True, slots=True)
class Tally:
    """Bay counts at ``counted_at``, unchanged until ``expires`` unless a reading arrives."""

    free: int
    occupied: int
    newest: Reading | None
    counted_at: float
    expires: float

    @property
    def known(self) -> int:
        return self.free + self.occupied


def tally(
    readings: Iterable[Reading], now_ts: float, stale_after_s: float, max_future_s: float = MAX_FUTURE_S
) -> Tally:
    fresh_after, not_after = fresh_window(now_ts, stale_after_s, max_future_s)
    free = occupied = 0
    newest: Reading | None = None
    expires = math.inf
    for r in readings:
        if r.heard > not_after:
            # An untrustworthy clock: neither fresh nor "newest" (until the wall clock nears it).
            expires = min(expires, r.heard - max_future_s)
            continue
        if newest is None or r.heard > newest.heard:
            newest = r
        if r.heard > fresh_after:
            expires = min(expires, r.heard + stale_after_s)
            if r.status == "free":
                free += 1
            elif r.status == "occupied":
                occupied += 1
    return Tally(free, occupied, newest, now_ts, expires)


def render_lot(
    lot: LotConfig, t: Tally, now_ts: float, *, total: int | None = None, trend: models.Trend | None = None
) -> models.ParkingLot:
    """The API view of ``lot`` from its tally. State, first rule that applies:

    closed (site configuration), nodata (no bay has a fresh free/occupied
    reading), full (fewer than the lot's reserve free), open. The reserve is
    ``full_below`` clamped to [1, max(1, total - 1)] (``LotConfig.reserve``),
    so the state never contradicts the free count: 0 free of any known bays
    is full, a lot with every bay free is open. Unknown (stale) bays never
    count as free, so a lot with few fresh bays shows full when fewer than the
    reserve of them are free.
    """
    total = lot.total if total is None else total  # lot.total builds the bay list
    known = t.known
    if lot.closed:
        state: models.LotState = "closed"
    elif known == 0:
        state = "nodata"
    elif t.free < lot.reserve(total):
        state = "full"
    else:
        state = "open"
    fresh = Freshness.of(None if t.newest is None else t.newest.heard, now_ts, lot.stale_after_s)
    return models.ParkingLot(
        id=lot.id,
        name=lot.name,
        coords=models.Coords(lat=lot.coords.lat, lng=lot.coords.lng),
        address=lot.address,
        lot_type=lot.lot_type,
        zone=lot.zone,
        total=total,
        free=t.free,
        occupied=t.occupied,
        unknown=total - known,
        percent_free=round(100.0 * t.free / total, 1) if known and total else None,
        state=state,
        observed_at=fresh.observed_at,
        age_s=fresh.age_s,
        fresh=fresh.fresh,
        stale_after_s=lot.stale_after_s,
        trend=trend or models.Trend(direction="unknown", free_change=None, window_s=TREND_WINDOW_S),
    )


class _Changes:
    """Live free-count changes of one lot within the trend window: a deque and its running sum."""

    __slots__ = ("events", "sum")

    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.sum = 0

    def add(self, at: float, delta: int) -> None:
        self.events.append((at, delta))
        self.sum += delta

    def since(self, start: float) -> int:
        while self.events and self.events[0][0] <= start:
            self.sum -= self.events.popleft()[1]
        return self.sum


_FREE_DELTA = {("free", "occupied"): -1, ("occupied", "free"): 1}


class BayStore(EntityStore):
    """Per-bay last state for one site, with lot and level summaries; thread-safe."""

    name = "bays"
    unknown_key = "unknown_bay"

    def __init__(self, site: SiteConfig, clock: Clock, *, max_future_s: float = MAX_FUTURE_S) -> None:
        super().__init__(site.bays_by_lot, clock, max_future_s=max_future_s)
        self.site = site
        self._lots: dict[str, LotConfig] = {lot.id: lot for lot in site.parking}
        self._levels: dict[tuple[str, str], frozenset[str]] = {
            (lot.id, level.id): frozenset(level.bay_ids()) for lot in site.parking for level in lot.levels
        }
        self._tallies: dict[tuple[str, str | None, float], tuple[int, Tally]] = {}
        self._changes: dict[str, _Changes] = {lot.id: _Changes() for lot in site.parking}
        #: (lot, bay) -> when its current status began (heard time of the reading that set it; for a
        #: bay first known from history, that reading's time: a lower bound).
        self._since: dict[tuple[str, str], float] = {}
        #: (lot, bay) -> heard times of its recent live status changes (flapping), at most FLAP_KEEP.
        self._flips: dict[tuple[str, str], deque[float]] = {}
        self.started = clock().timestamp()

    def _applied(self, group: str, entity: str, held: Reading | None, stored: Reading) -> None:
        key = (group, entity)
        if held is None or held.status != stored.status:
            self._since[key] = stored.heard
            if held is not None and stored.arrival:
                self._flips.setdefault(key, deque(maxlen=FLAP_KEEP)).append(stored.heard)
        if held is not None and stored.arrival:
            delta = _FREE_DELTA.get((held.status, stored.status))
            if delta:
                self._changes[group].add(stored.heard, delta)

    # -- what alerts look at -------------------------------------------------------

    def churn(self, lot_id: str, now: datetime) -> tuple[int, float]:
        """(live free/occupied changes, seconds observed) in the lot's trend window."""
        now_ts = now.timestamp()
        with self._lock:
            changes = self._changes[lot_id]
            changes.since(now_ts - TREND_WINDOW_S)
            return len(changes.events), min(TREND_WINDOW_S, max(0.0, now_ts - self.started))

    def unchanged_since(self, lot_id: str, now: datetime, older_than_s: float) -> list[tuple[str, str, float]]:
        """Bays of a lot whose current status (free or occupied) began more than ``older_than_s`` ago and
        which are still heard: (bay, status, since)."""
        now_ts = now.timestamp()
        lot = self._lots[lot_id]
        out: list[tuple[str, str, float]] = []
        with self._lock:
            for bay, r in self._state[lot_id].items():
                since = self._since.get((lot_id, bay))
                fresh = r.heard > now_ts - lot.stale_after_s
                if fresh and since is not None and r.status in ("free", "occupied") and now_ts - since > older_than_s:
                    out.append((bay, r.status, since))
        return out

    def flapping(self, now: datetime, window_s: float, min_changes: int) -> list[tuple[str, str, int]]:
        """Bays with at least ``min_changes`` live status changes in the last ``window_s``: (lot, bay, changes)."""
        start = now.timestamp() - window_s
        with self._lock:
            return [
                (lot, bay, n)
                for (lot, bay), flips in self._flips.items()
                if (n := sum(1 for t in flips if t > start)) >= min_changes
            ]

    def apply_message(self, message: ParkingBayState, heard: float) -> bool:
        return self.apply(message.lot_id, message.bay_id, Reading.from_message(message, heard=heard))

    # -- summaries ---------------------------------------------------------

    def lot(self, lot_id: str, now: datetime) -> models.ParkingLot | None:
        lot = self._lots.get(lot_id)
        if lot is None:
            return None
        with self._lock:
            return self._summarize(lot, now.timestamp())

    def lots(self, now: datetime) -> list[models.ParkingLot]:
        """Every lot, in site-configuration order, all judged at one instant."""
        now_ts = now.timestamp()
        with self._lock:
            return [self._summarize(lot, now_ts) for lot in self._lots.values()]

    def level_tally(
        self, lot_id: str, level_id: str, now: datetime, stale_after_s: float | None = None
    ) -> Tally | None:
        """Counts over one level's bays, judged with ``stale_after_s`` (default: its lot's)."""
        bays = self._levels.get((lot_id, level_id))
        if bays is None:
            return None
        with self._lock:
            return self._tally(self._lots[lot_id], level_id, bays, now.timestamp(), stale_after_s)

    def lot_tally(self, lot_id: str, now: datetime, stale_after_s: float | None = None) -> Tally | None:
        """Counts over a lot's bays, judged with ``stale_after_s`` (default: the lot's own).

        A sign passes its own, shorter limit: a bay it has not heard from within
        that limit is not reporting *for the sign*, even if the lot still counts it.
        """
        lot = self._lots.get(lot_id)
        if lot is None:
            return None
        with self._lock:
            return self._tally(lot, None, None, now.timestamp(), stale_after_s)

    def trend(self, lot_id: str, now: datetime) -> models.Trend:
        with self._lock:
            return self._trend(self._lots[lot_id], now.timestamp())

    def _tally(
        self,
        lot: LotConfig,
        level: str | None,
        bays: frozenset[str] | None,
        now_ts: float,
        stale_after_s: float | None = None,
    ) -> Tally:
        stale_s = lot.stale_after_s if stale_after_s is None else stale_after_s
        key = (lot.id, level, stale_s)
        cached = self._tallies.get(key)
        version = self._versions[lot.id]
        if cached is not None and cached[0] == version and cached[1].counted_at <= now_ts < cached[1].expires:
            return cached[1]
        state = self._state[lot.id]
        readings: Iterable[Reading] = state.values() if bays is None else (state[b] for b in bays if b in state)
        t = tally(readings, now_ts, stale_s, self.max_future_s)
        self._tallies[key] = (version, t)
        return t

    def _trend(self, lot: LotConfig, now_ts: float) -> models.Trend:
        change = self._changes[lot.id].since(now_ts - TREND_WINDOW_S)
        window = min(TREND_WINDOW_S, max(0.0, now_ts - self.started))
        threshold = max(TREND_MIN_BAYS, TREND_SHARE * len(self._entity_ids[lot.id]))
        direction: models.TrendDirection
        if window < 60.0:
            direction = "unknown"  # less than a minute of live changes seen
        elif change <= -threshold:
            direction = "filling"
        elif change >= threshold:
            direction = "emptying"
        else:
            direction = "steady"
        return models.Trend(direction=direction, free_change=change, window_s=round(window, 3))

    def _summarize(self, lot: LotConfig, now_ts: float) -> models.ParkingLot:
        t = self._tally(lot, None, None, now_ts)
        return render_lot(lot, t, now_ts, total=len(self._entity_ids[lot.id]), trend=self._trend(lot, now_ts))

    # -- history -------------------------------------------------------------

    async def load_history(self, client: InfluxClient, site_id: str, window_s: float) -> tuple[int, int]:
        rows = await client.last_states(storage.BAY_HISTORY, site_id, window_s)
        applied = sum(self.apply(row.group, row.entity, row.reading()) for row in rows)
        return len(rows), applied


def summarize_lot(
    lot: LotConfig,
    readings: Mapping[str, Reading],
    now: datetime,
    *,
    max_future_s: float = MAX_FUTURE_S,
) -> models.ParkingLot:
    """A lot's availability at ``now`` from its bays' last readings (see :func:`render_lot`)."""
    now_ts = now.timestamp()
    return render_lot(lot, tally(readings.values(), now_ts, lot.stale_after_s, max_future_s), now_ts)
