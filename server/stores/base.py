"""What every live store shares: reading order, clock offsets, per-entity last state.

Ordering: an entity's state only moves forward in the device's own order. Two
readings of one device sequence (same ``epoch``) are ordered by ``seq``,
whatever the device's clock did between them (NTP stepping it back after
boot, a drifting RTC); otherwise by ``observed_at``, and two readings with the
same ``observed_at`` (a whole-second clock) by arrival: the later message
wins. A reading older than the one held (a store-and-forward replay, a QoS 1
redelivery, the bootstrap arriving after the stream) never overwrites it.

Freshness is judged on *our* clock, not the device's: each reading gets a
``heard`` time, its ``observed_at`` moved by the device's estimated clock
offset (:class:`ClockOffsets`) and never later than when it arrived; readings
loaded from history use the gateway's ``received_ns``. Staleness is decided
when a resource is asked for, never when a reading arrives.

The MQTT thread writes and the event loop reads, so every access to a store
holds its lock; summaries are cached per group version.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from contracts import LockerCompartmentState, ParkingBayState, TimePolicy, utcnow

if TYPE_CHECKING:
    from server.influx import InfluxClient

Clock = Callable[[], datetime]

#: Device clocks drift: a reading this far ahead of ours still counts (as age 0).
#: Same tolerance as the contract's receive check.
MAX_FUTURE_S = TimePolicy().max_future_s

#: Same-time reading ids remembered per entity (a whole-second clock sends few per second).
MAX_SAME_TIME_IDS = 16

#: Arrival numbers: a later message gets a larger one (ties of observed_at).
_arrivals = itertools.count(1)


def next_arrival() -> int:
    return next(_arrivals)


@dataclass(frozen=True, slots=True)
class Reading:
    """One entity's last known state (a bay, a locker compartment).

    ``status``: the entity's status word; ``detail``: a second state word
    where the kind has one (a compartment's door), and ``detail_since`` when
    that word last changed (POSIX s, our clock), so "door open for 4 min" is
    known without history.
    """

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
    #: Ids of earlier readings of this entity with the same ``observed_at`` (a
    #: whole-second clock), so a replay of one of them is not taken as newer.
    same_time_ids: frozenset[str] = field(default=frozenset(), compare=False)
    detail: str | None = None
    detail_since: float | None = field(default=None, compare=False)

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
        detail: str | None = None,
    ) -> Reading:
        at = observed_at.astimezone(UTC)
        ts = at.timestamp()
        heard_ts = ts if heard is None else heard
        return cls(status, at, reading_id, ts, heard_ts, epoch, seq, arrival, detail=detail, detail_since=heard_ts)

    @classmethod
    def from_message(cls, message: ParkingBayState | LockerCompartmentState, *, heard: float | None = None) -> Reading:
        """A live bay or compartment reading (a compartment's door is its ``detail``)."""
        return cls.of(
            message.status,
            message.observed_at,
            message.reading_id,
            heard=heard,
            epoch=message.epoch,
            seq=message.seq,
            arrival=next_arrival(),
            detail=message.door if isinstance(message, LockerCompartmentState) else None,
        )

    def supersedes(self, other: Reading) -> bool:
        """Whether this reading should replace ``other`` (later in the device's order)."""
        if self.reading_id == other.reading_id:
            return False
        if self.epoch is not None and self.epoch == other.epoch and self.seq is not None and other.seq is not None:
            return self.seq > other.seq
        if self.ts != other.ts:
            return self.ts > other.ts
        return self.arrival > other.arrival


def in_order(held: Reading | None, reading: Reading) -> Reading | None:
    """``reading`` as it should be stored after ``held``, or None if it does not supersede it.

    Carries the same-time ids forward, keeps ``heard`` from going back within
    one device sequence (a clock that just stepped back, before the offset
    estimate follows), and keeps ``detail_since`` while ``detail`` is unchanged.
    """
    if held is None:
        return reading
    if not reading.supersedes(held) or (reading.ts == held.ts and reading.reading_id in held.same_time_ids):
        return None
    changes: dict[str, object] = {}
    if reading.ts == held.ts:
        ids = held.same_time_ids | {held.reading_id}
        changes["same_time_ids"] = frozenset(list(ids)[-MAX_SAME_TIME_IDS:])
    if reading.epoch is not None and reading.epoch == held.epoch and reading.heard < held.heard:
        changes["heard"] = held.heard
    if reading.detail == held.detail and held.detail_since is not None:
        changes["detail_since"] = held.detail_since
    return dataclasses.replace(reading, **changes) if changes else reading  # type: ignore[arg-type]


class ClockOffsets:
    """Each device's clock offset: our clock minus its clock, in seconds.

    Estimated as the smallest ``received - observed`` over the device's live
    messages of the last :attr:`window_s` seconds: transit and queueing only
    ever add to a sample, so the smallest one is closest to the true offset
    (the idea of NTP's minimum-delay filter, RFC 5905 §10). A clock that steps
    is followed within ``window_s``. Retained copies and replays are not live
    and are not offered. Positive: the device's clock is behind ours.
    Thread-safe.
    """

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: dict[str, deque[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def add(self, device_id: str, observed_ts: float, received_ts: float) -> float:
        """Offer one live sample; return the device's current estimate."""
        with self._lock:
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

    def heard(self, device_id: str, observed_at: datetime, received_at: datetime) -> float:
        """When a live reading was observed, on our clock (POSIX s): ``observed_at`` moved by the
        device's clock offset, never later than its arrival."""
        received_ts = received_at.timestamp()
        offset = self.add(device_id, observed_at.timestamp(), received_ts)
        return min(received_ts, observed_at.timestamp() + offset)

    def all(self) -> dict[str, float]:
        with self._lock:
            return {device: q[0][1] for device, q in self._samples.items() if q}


class HistoryFed(Protocol):
    """A store that loads its last state from InfluxDB (bootstrap, gap fill, catch-up)."""

    name: str

    async def load_history(self, client: InfluxClient, site_id: str, window_s: float) -> tuple[int, int]:
        """Offer what history holds to the store: (rows read, rows that changed the state). Raise InfluxError."""
        ...

    def missing(self) -> int:
        """Entities the site configures that have no state yet (0 when the store cannot tell)."""
        ...


class EntityStore:
    """The last :class:`Reading` of every configured entity, grouped (bays by lot, compartments by bank).

    ``groups``: group id -> the entity ids the site configures. A reading of an
    entity outside it is refused (counted ``unknown_entity``), as is one
    further in the future than ``max_future_s`` (``future``: it would block
    every true reading until the wall clock caught up).
    """

    #: Counter key for readings about an entity the site does not have.
    unknown_key = "unknown_entity"

    def __init__(
        self, groups: Mapping[str, frozenset[str]], clock: Clock = utcnow, *, max_future_s: float = MAX_FUTURE_S
    ) -> None:
        self.clock = clock
        self.max_future_s = max_future_s
        self._entity_ids = dict(groups)
        self._state: dict[str, dict[str, Reading]] = {g: {} for g in groups}
        #: Bumped on every applied reading; a cached summary of a group is valid for one version.
        self._versions: dict[str, int] = dict.fromkeys(groups, 0)
        self._lock = threading.Lock()
        #: What happened to offered readings: applied, superseded, unknown_entity, future.
        self.counts: Counter[str] = Counter()
        self._total = sum(len(ids) for ids in groups.values())

    def apply(self, group: str, entity: str, reading: Reading) -> bool:
        """Offer a reading; return True if it became the entity's state."""
        ids = self._entity_ids.get(group)
        if ids is None or entity not in ids:
            with self._lock:
                self.counts[self.unknown_key] += 1
            return False
        if reading.ts > self.clock().timestamp() + self.max_future_s:
            with self._lock:
                self.counts["future"] += 1
            return False
        with self._lock:
            held = self._state[group].get(entity)
            stored = in_order(held, reading)
            if stored is None:
                self.counts["superseded"] += 1
                return False
            self._state[group][entity] = stored
            self._versions[group] += 1
            self.counts["applied"] += 1
            self._applied(group, entity, held, stored)
            return True

    def _applied(self, group: str, entity: str, held: Reading | None, stored: Reading) -> None:
        """Hook for subclasses, called under the lock after a reading became the state."""

    def get(self, group: str, entity: str) -> Reading | None:
        with self._lock:
            return self._state.get(group, {}).get(entity)

    def count(self) -> int:
        """Entities with a state."""
        with self._lock:
            return sum(len(s) for s in self._state.values())

    def missing(self) -> int:
        return self._total - self.count()


@dataclass(frozen=True, slots=True)
class Freshness:
    """When a group's newest reading was heard, and whether that is recent enough."""

    observed_at: datetime | None
    age_s: float | None
    fresh: bool

    @classmethod
    def of(cls, newest_heard: float | None, now_ts: float, stale_after_s: float) -> Freshness:
        if newest_heard is None:
            return cls(None, None, False)
        return cls(
            datetime.fromtimestamp(newest_heard, UTC),
            round(max(0.0, now_ts - newest_heard), 3),
            newest_heard > now_ts - stale_after_s,
        )


def fresh_window(now_ts: float, stale_after_s: float, max_future_s: float) -> tuple[float, float]:
    """(fresh_after, not_after): a reading counts when ``fresh_after < heard <= not_after``."""
    return now_ts - stale_after_s, now_ts + max_future_s


INF = math.inf
