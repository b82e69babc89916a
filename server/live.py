"""In-memory live state: each bay's last reading and each device's last status.

Displays ask "how many bays are free now" many times a second; InfluxDB
answers ``last()`` over thousands of series in about half a second, so the
answer is kept here, fed by the MQTT stream (:mod:`server.stream`) and
bootstrapped from InfluxDB at start (:mod:`server.dbmonitor`).

Ordering: a bay's state only moves forward in the device's own order. Two
readings of one device sequence (same ``epoch``) are ordered by ``seq``,
whatever the device's clock did between them (NTP stepping it back after
boot, a drifting RTC); otherwise by ``observed_at``, and two readings with the
same ``observed_at`` (a whole-second clock) by arrival: the later message
wins. A reading older than the one held (a store-and-forward replay, a QoS 1
redelivery, the bootstrap arriving after the stream) never overwrites it.

Freshness is judged on *our* clock, not the device's: each reading gets a
``heard`` time, its ``observed_at`` moved by the device's estimated clock
offset (:class:`ClockOffsets`) and never later than when it arrived; readings
loaded from history use the gateway's ``received_ns``. So a controller whose
clock is 11 minutes behind, heard every 2 s, is fresh; a store-and-forward
replay of an hour-old reading is not. A bay counts as free or occupied only
while it was heard within the lot's ``stale_after_s``, judged when a lot is
asked for; otherwise it is unknown and never shown as free.

The MQTT thread writes and the event loop reads, so every access holds one
lock; a lot summary over a few thousand bays holds it well under a millisecond.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from contracts import DeviceStatus, ParkingBayState, TimePolicy, storage, utcnow
from contracts.site import LotConfig, SiteConfig
from server import models

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Device clocks drift: a reading this far ahead of ours still counts (as age 0).
#: Same tolerance as the contract's receive check.
MAX_FUTURE_S = TimePolicy().max_future_s


#: Same-time reading ids remembered per bay (a whole-second clock sends few per second).
MAX_SAME_TIME_IDS = 16

#: Arrival numbers: a later message gets a larger one (ties of observed_at).
_arrivals = itertools.count(1)


@dataclass(frozen=True, slots=True)
class BayReading:
    """One bay's last known state."""

    status: str
    observed_at: datetime
    reading_id: str
    #: ``observed_at`` as POSIX seconds, for cheap comparisons.
    ts: float
    #: When we heard it, on our clock (POSIX seconds): freshness is judged on this.
    heard: float
    epoch: str | None = None
    seq: int | None = None
    #: Order of arrival at this server; 0 for readings loaded from history.
    arrival: int = field(default=0, compare=False)
    #: Ids of earlier readings of this bay with the same ``observed_at`` (a
    #: whole-second clock), so a replay of one of them is not taken as newer.
    same_time_ids: frozenset[str] = field(default=frozenset(), compare=False)

    @classmethod
    def of(
        cls,
        status: str,
        observed_at: datetime,
        reading_id: str,
        *,
        heard: float | None = None,
        epoch: str | None = None,
        seq: int | None = None,
        arrival: int = 0,
    ) -> BayReading:
        at = observed_at.astimezone(UTC)
        ts = at.timestamp()
        return cls(status, at, reading_id, ts, ts if heard is None else heard, epoch, seq, arrival)

    @classmethod
    def from_message(cls, message: ParkingBayState, *, heard: float | None = None) -> BayReading:
        return cls.of(
            message.status,
            message.observed_at,
            message.reading_id,
            heard=heard,
            epoch=message.epoch,
            seq=message.seq,
            arrival=next(_arrivals),
        )

    def supersedes(self, other: BayReading) -> bool:
        """Whether this reading should replace ``other`` (later in the device's order)."""
        if self.reading_id == other.reading_id:
            return False
        if self.epoch is not None and self.epoch == other.epoch and self.seq is not None and other.seq is not None:
            return self.seq > other.seq
        if self.ts != other.ts:
            return self.ts > other.ts
        return self.arrival > other.arrival


class ClockOffsets:
    """Each device's clock offset: our clock minus its clock, in seconds.

    Estimated as the smallest ``received - observed`` over the device's live
    messages of the last :attr:`window_s` seconds: transit and queueing only
    ever add to a sample, so the smallest one is closest to the true offset
    (the idea of NTP's minimum-delay filter, RFC 5905 §10). A clock that steps
    is followed within ``window_s``. Retained copies and replays are not live
    and are not offered. Positive: the device's clock is behind ours.
    """

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def add(self, device_id: str, observed_ts: float, received_ts: float) -> float:
        """Offer one live sample; return the device's current estimate."""
        q = self._samples.setdefault(device_id, deque())
        sample = received_ts - observed_ts
        # Keep the deque increasing in sample value: a newer, smaller sample
        # makes every older, larger one useless (monotonic queue, O(1) amortised).
        while q and q[-1][1] >= sample:
            q.pop()
        q.append((received_ts, sample))
        while q[0][0] < received_ts - self.window_s:
            q.popleft()
        return q[0][1]

    def all(self) -> dict[str, float]:
        return {device: q[0][1] for device, q in self._samples.items() if q}


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device's last status message and when it reached us.

    Status messages are ordered by arrival, not by ``observed_at``: a last will
    carries its connect time, older than the heartbeat it replaces.
    ``retained``: a copy the broker kept, delivered when we subscribed (so
    ``received_at`` says nothing about when it was sent).
    """

    status: DeviceStatus
    received_at: datetime
    retained: bool = False


ns_to_datetime = storage.from_ns


class LiveState:
    """Per-bay and per-device last state for one site; thread-safe."""

    def __init__(self, site: SiteConfig, clock: Clock = utcnow, *, max_future_s: float = MAX_FUTURE_S) -> None:
        self.site = site
        self.clock = clock
        self.max_future_s = max_future_s
        self._lots: dict[str, LotConfig] = {lot.id: lot for lot in site.parking}
        self._bay_ids = site.bays_by_lot
        self._bays: dict[str, dict[str, BayReading]] = {lot.id: {} for lot in site.parking}
        self._devices: dict[str, DeviceRecord] = {}
        self.clocks = ClockOffsets()
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
            if held is not None:
                if not reading.supersedes(held) or (reading.ts == held.ts and reading.reading_id in held.same_time_ids):
                    self.counts["superseded"] += 1
                    return False
                if reading.ts == held.ts:
                    ids = held.same_time_ids | {held.reading_id}
                    reading = dataclasses.replace(reading, same_time_ids=frozenset(list(ids)[-MAX_SAME_TIME_IDS:]))
                if reading.epoch is not None and reading.epoch == held.epoch and reading.heard < held.heard:
                    # Later in the device's sequence, so heard no earlier than what it replaces
                    # (a clock that just stepped back, before the offset estimate follows).
                    reading = dataclasses.replace(reading, heard=held.heard)
            self._bays[lot_id][bay_id] = reading
            self._versions[lot_id] += 1
            self.counts["applied"] += 1
            return True

    def apply_message(self, message: ParkingBayState, received_at: datetime | None = None) -> bool:
        """Apply a reading that arrived live at ``received_at`` (our clock; default now)."""
        heard = self.heard(message.device_id, message.observed_at, received_at or self.clock())
        return self.apply_bay(message.lot_id, message.bay_id, BayReading.from_message(message, heard=heard))

    def heard(self, device_id: str, observed_at: datetime, received_at: datetime) -> float:
        """When a live reading was observed, on our clock (POSIX s): ``observed_at`` moved by the
        device's clock offset, never later than its arrival."""
        received_ts = received_at.timestamp()
        with self._lock:
            offset = self.clocks.add(device_id, observed_at.timestamp(), received_ts)
        return min(received_ts, observed_at.timestamp() + offset)

    def apply_device_status(
        self, status: DeviceStatus, received_at: datetime | None = None, *, retained: bool = False
    ) -> None:
        received_at = received_at or self.clock()
        record = DeviceRecord(status, received_at, retained)
        with self._lock:
            if not retained and status.state != "offline":
                # A live heartbeat is a clean clock sample; a will carries its connect time.
                self.clocks.add(status.device_id, status.observed_at.timestamp(), received_at.timestamp())
            self._devices[status.device_id] = record

    def clear_device_status(self, device_id: str) -> bool:
        """Forget a device's status (its retained status was cleared); True if there was one."""
        with self._lock:
            return self._devices.pop(device_id, None) is not None

    def clock_offsets(self) -> dict[str, float]:
        """Each device's estimated clock offset in seconds (our clock minus the device's)."""
        with self._lock:
            return self.clocks.all()

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

    def _summarize(self, lot: LotConfig, now: datetime) -> models.ParkingLot:
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


def summarize_lot(
    lot: LotConfig,
    readings: Mapping[str, BayReading],
    now: datetime,
    *,
    max_future_s: float = MAX_FUTURE_S,
) -> models.ParkingLot:
    """A lot's availability at ``now`` from its bays' last readings.

    A bay is free or occupied only if it was heard within
    ``lot.stale_after_s`` (and not further ahead than ``max_future_s``);
    everything else is unknown. ``state``: closed if the site configuration
    says so; nodata if no bay has a fresh free/occupied reading; full if fewer
    than ``lot.full_below`` bays are free; open otherwise.
    """
    now_ts = now.timestamp()
    return render_lot(lot, tally(readings, now_ts, lot.stale_after_s, max_future_s), now_ts)


def render_lot(lot: LotConfig, t: Tally, now_ts: float, *, total: int | None = None) -> models.ParkingLot:
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
        observed_at=None if newest is None else datetime.fromtimestamp(newest.heard, UTC),
        age_s=None if newest is None else round(max(0.0, now_ts - newest.heard), 3),
        fresh=newest is not None and newest.heard > now_ts - lot.stale_after_s,
        stale_after_s=lot.stale_after_s,
    )
