"""In-memory live state: each bay's last reading and each device's last status.

Displays ask "how many bays are free now" many times a second; InfluxDB
answers ``last()`` over thousands of series in about half a second, so the
answer is kept here, fed by the MQTT stream (:mod:`server.stream`) and
bootstrapped from InfluxDB at start (:mod:`server.dbmonitor`).

Ordering: a bay's state only moves forward in device time. A reading older
than the one held (a store-and-forward replay, a QoS 1 redelivery, the
bootstrap arriving after the stream) never overwrites it. Two readings with the
same ``observed_at`` are ordered by ``reading_id``, so every replica ends up
with the same state whatever order messages arrive in.

Freshness is decided when a lot is asked for, against the injected clock: a
bay counts as free or occupied only while its reading is younger than the
lot's ``stale_after_s``; otherwise it is unknown and never shown as free.

The MQTT thread writes and the event loop reads, so every access holds one
lock; a lot summary over a few thousand bays holds it well under a millisecond.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contracts import DeviceStatus, ParkingBayState, TimePolicy, utcnow
from contracts.site import ParkingLot, SiteConfig
from server import models

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Device clocks drift: a reading this far ahead of ours still counts (as age 0).
#: Same tolerance as the contract's receive check.
MAX_FUTURE_S = TimePolicy().max_future_s

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BayReading:
    """One bay's last known state."""

    status: str
    observed_at: datetime
    reading_id: str
    #: ``observed_at`` as POSIX seconds, for cheap comparisons.
    ts: float

    @classmethod
    def of(cls, status: str, observed_at: datetime, reading_id: str) -> BayReading:
        at = observed_at.astimezone(UTC)
        return cls(status, at, reading_id, at.timestamp())

    @classmethod
    def from_message(cls, message: ParkingBayState) -> BayReading:
        return cls.of(message.status, message.observed_at, message.reading_id)

    def supersedes(self, other: BayReading) -> bool:
        """Whether this reading should replace ``other`` (later in device time)."""
        if self.ts != other.ts:
            return self.ts > other.ts
        return self.reading_id > other.reading_id


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device's last status message and when it reached us.

    Status messages are ordered by arrival, not by ``observed_at``: a last will
    carries its connect time, older than the heartbeat it replaces.
    """

    status: DeviceStatus
    received_at: datetime


def ns_to_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


class LiveState:
    """Per-bay and per-device last state for one site; thread-safe."""

    def __init__(self, site: SiteConfig, clock: Clock = utcnow, *, max_future_s: float = MAX_FUTURE_S) -> None:
        self.site = site
        self.clock = clock
        self.max_future_s = max_future_s
        self._lots: dict[str, ParkingLot] = {lot.id: lot for lot in site.parking}
        self._bay_ids = site.bays_by_lot
        self._bays: dict[str, dict[str, BayReading]] = {lot.id: {} for lot in site.parking}
        self._devices: dict[str, DeviceRecord] = {}
        #: Bumped on every applied reading; the cached tally of a lot is valid for one version.
        self._versions: dict[str, int] = dict.fromkeys(self._lots, 0)
        self._tallies: dict[str, tuple[int, Tally]] = {}
        self._lock = threading.Lock()
        #: What happened to offered bay readings: applied, superseded, unknown_bay, future.
        self.counts: Counter[str] = Counter()

    # -- writes ------------------------------------------------------------

    def apply_bay(self, lot_id: str, bay_id: str, reading: BayReading) -> bool:
        """Offer a reading; return True if it became the bay's state."""
        bays = self._bay_ids.get(lot_id)
        if bays is None or bay_id not in bays:
            with self._lock:
                self.counts["unknown_bay"] += 1
            return False
        if reading.ts > self.clock().timestamp() + self.max_future_s:
            # Would block every true reading until the wall clock caught up.
            with self._lock:
                self.counts["future"] += 1
            return False
        with self._lock:
            held = self._bays[lot_id].get(bay_id)
            if held is not None and not reading.supersedes(held):
                self.counts["superseded"] += 1
                return False
            self._bays[lot_id][bay_id] = reading
            self._versions[lot_id] += 1
            self.counts["applied"] += 1
            return True

    def apply_message(self, message: ParkingBayState) -> bool:
        return self.apply_bay(message.lot_id, message.bay_id, BayReading.from_message(message))

    def apply_device_status(self, status: DeviceStatus, received_at: datetime | None = None) -> None:
        record = DeviceRecord(status, received_at or self.clock())
        with self._lock:
            self._devices[status.device_id] = record

    # -- reads -------------------------------------------------------------

    def bay(self, lot_id: str, bay_id: str) -> BayReading | None:
        with self._lock:
            return self._bays.get(lot_id, {}).get(bay_id)

    def bay_count(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._bays.values())

    def devices(self) -> dict[str, DeviceRecord]:
        with self._lock:
            return dict(self._devices)

    def has_lot(self, lot_id: str) -> bool:
        return lot_id in self._lots

    def lot(self, lot_id: str, now: datetime | None = None) -> models.ParkingLot | None:
        lot = self._lots.get(lot_id)
        if lot is None:
            return None
        now = now or self.clock()
        with self._lock:
            return self._summarize(lot, now)

    def lots(self, now: datetime | None = None) -> list[models.ParkingLot]:
        """Every lot, in site-configuration order, all judged at one instant."""
        now = now or self.clock()
        with self._lock:
            return [self._summarize(lot, now) for lot in self._lots.values()]

    def _summarize(self, lot: ParkingLot, now: datetime) -> models.ParkingLot:
        # Counting a big lot's bays costs ~0.3 us each; the tally only changes
        # when a reading arrives or a counted reading turns stale, so keep it
        # until then (and recount if the clock ever steps back).
        now_ts = now.timestamp()
        cached = self._tallies.get(lot.id)
        version = self._versions[lot.id]
        if cached is not None and cached[0] == version and cached[1].counted_at <= now_ts < cached[1].expires:
            t = cached[1]
        else:
            t = tally(self._bays[lot.id], now_ts, lot.stale_after_s, self.max_future_s)
            self._tallies[lot.id] = (version, t)
        return render_lot(lot, t, now_ts, total=len(self._bay_ids[lot.id]))


@dataclass(frozen=True, slots=True)
class Tally:
    """A lot's bay counts at ``counted_at``, unchanged until ``expires`` unless a reading arrives."""

    free: int
    occupied: int
    newest: BayReading | None
    counted_at: float
    expires: float


def tally(
    readings: Mapping[str, BayReading], now_ts: float, stale_after_s: float, max_future_s: float = MAX_FUTURE_S
) -> Tally:
    fresh_after = now_ts - stale_after_s
    not_after = now_ts + max_future_s
    free = occupied = 0
    newest: BayReading | None = None
    expires = math.inf
    for r in readings.values():
        if r.ts > not_after:
            # An untrustworthy clock: neither fresh nor "newest" (until the wall clock nears it).
            expires = min(expires, r.ts - max_future_s)
            continue
        if newest is None or r.ts > newest.ts:
            newest = r
        if r.ts > fresh_after:
            expires = min(expires, r.ts + stale_after_s)
            if r.status == "free":
                free += 1
            elif r.status == "occupied":
                occupied += 1
    return Tally(free, occupied, newest, now_ts, expires)


def summarize_lot(
    lot: ParkingLot,
    readings: Mapping[str, BayReading],
    now: datetime,
    *,
    max_future_s: float = MAX_FUTURE_S,
) -> models.ParkingLot:
    """A lot's availability at ``now`` from its bays' last readings.

    A bay is free or occupied only if its reading is younger than
    ``lot.stale_after_s`` (and not further ahead than ``max_future_s``);
    everything else is unknown. ``state``: closed if the site configuration
    says so; nodata if no bay has a fresh free/occupied reading; full if fewer
    than ``lot.full_below`` bays are free; open otherwise.
    """
    now_ts = now.timestamp()
    return render_lot(lot, tally(readings, now_ts, lot.stale_after_s, max_future_s), now_ts)


def render_lot(lot: ParkingLot, t: Tally, now_ts: float, *, total: int | None = None) -> models.ParkingLot:
    """The API view of ``lot`` from its tally. State, first rule that applies:

    closed (site configuration), nodata (no bay has a fresh free/occupied
    reading), full (fewer than the lot's reserve free), open. The reserve is
    ``full_below`` clamped to [1, max(1, total - 1)] (``ParkingLot.reserve``),
    so the state never contradicts the free count: 0 free of any known bays
    is full, a lot with every bay free is open. Unknown (stale) bays never
    count as free, so a lot with few fresh bays shows full when fewer than the
    reserve of them are free.
    """
    total = lot.total if total is None else total  # lot.total builds the bay list
    known = t.free + t.occupied
    if lot.closed:
        state: models.LotState = "closed"
    elif known == 0:
        state = "nodata"
    elif t.free < lot.reserve(total):
        state = "full"
    else:
        state = "open"
    newest = t.newest
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
        observed_at=None if newest is None else newest.observed_at,
        age_s=None if newest is None else round(max(0.0, now_ts - newest.ts), 3),
        fresh=newest is not None and newest.ts > now_ts - lot.stale_after_s,
        stale_after_s=lot.stale_after_s,
    )
