"""Lot and locker snapshots for history: where each bay's and compartment's last state is known.

:class:`HistoryTracker` keeps the last state of every bay and locker
compartment of the site, in the device's order (a replay, a redelivery or a
retried batch never moves a state back), and turns the stream into the
derived points of :mod:`contracts.history`:

* a **snapshot** of each lot and each locker bank at every boundary of
  ``every_s`` seconds (a minute), in *device time*: the snapshot for boundary
  B holds each member's last reading observed at or before B, and is written
  as soon as the group's first reading observed after B arrives (so a
  backlog replayed after an outage yields the snapshots of the outage, at
  their own times). A member counts as free or occupied only while its last
  reading is at most the group's ``stale_after_s`` older than B, as in the
  live API; otherwise it is ``unknown``, never free. A lot's snapshot also
  carries its ``arrivals``: the bays that went free -> occupied in the
  readings applied since the previous snapshot (a reading observed before a
  boundary already written counts in the next one).
* a **transition** point for every locker deposit (free -> occupied) and
  pickup (occupied -> free), at the reading that showed it, with the dwell
  time when the deposit was seen too. ``out_of_service`` and ``unknown`` in
  between do not break a deposit/pickup pair.

Assumptions (``docs/history.md``): a group's readings arrive roughly in
device-time order (one controller per lot or bank, or controllers whose
clocks agree); a reading observed before a boundary already written is
applied to the state but does not rewrite that snapshot (counted as
``late``). After a start the tracker knows nothing, so no snapshot is written
for a group until ``warmup_s`` of device time after its first reading (the
bays' 60 s full refresh has then told it every state); a transition needs the
compartment's previous state, so the first reading of each compartment after
a start is never one (nor is a bay's first reading an arrival).

:class:`HistorySink` wraps the InfluxDB sink: it feeds the tracker with every
batch and writes the resulting points with that batch (and again with the
next one if the write failed), and notes points that arrive too late for the
continuous queries (:class:`LateMarks`), so :mod:`gateway.retention` rebuilds
their rollups.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from contracts import LockerCompartmentState, ParkingBayState, utcnow
from contracts.history import locker_occupancy_point, locker_transition_point, lot_occupancy_point
from contracts.site import SiteConfig
from contracts.storage import StoredPoint, point_ns, to_ns
from gateway.sink import Entry, Sink, SinkResult

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_NEVER_NS = 100 * 365 * 86_400 * _NS  # "never stale": a century
#: Most snapshot boundaries written for one group at once (a lot silent for days, then back): one day of minutes.
MAX_CATCH_UP_S = 86_400
#: Derived points kept for the next write when a write failed; beyond this the oldest are dropped (and counted).
MAX_PENDING = 100_000


def _stale_ns(seconds: float) -> int:
    """``stale_after_s`` in ns. A non-finite value (YAML ``.inf``; the config loader logs it, check-config
    refuses it) means never stale here, rather than a gateway that cannot start."""
    return int(seconds * _NS) if math.isfinite(seconds) else _NEVER_NS


@dataclass(slots=True)
class _Member:
    """A bay's or compartment's last reading, and for a compartment its last free/occupied state."""

    reading_id: str
    epoch: str | None
    seq: int | None
    #: The point's time (``observed_at`` plus the tie-breaker): the order of two readings.
    ns: int
    #: ``observed_at`` (ns): what snapshots and staleness are judged on.
    at: int
    status: str
    #: Compartments: the last of free/occupied seen (out_of_service/unknown leave it), and since when occupied.
    settled: str | None = None
    occupied_since_ns: int | None = None

    def older_than(self, reading_id: str, epoch: str | None, seq: int | None, ns: int) -> bool:
        """Whether a reading (its id, sequence and time) comes after this one in the device's order."""
        if reading_id == self.reading_id:
            return False
        if epoch is not None and epoch == self.epoch and seq is not None and self.seq is not None:
            return seq > self.seq
        return ns >= self.ns  # same time, another reading: the later arrival wins


@dataclass(slots=True)
class _Group:
    """A lot or a locker bank: its members' states and the next snapshot boundary (ns)."""

    id: str
    members: frozenset[str]
    stale_ns: int
    states: dict[str, _Member] = field(default_factory=dict)
    next_ns: int | None = None
    #: The last boundary written, None before the first.
    written_ns: int | None = None
    #: Lots: bays gone free -> occupied since the last snapshot written (its ``arrivals``).
    arrivals: int = 0


#: Makes a group's snapshot point at a boundary (ns) for a site.
_PointMaker = Callable[[_Group, int, str], StoredPoint]


@dataclass(frozen=True, slots=True)
class TrackerStats:
    snapshots: int
    transitions: int
    #: Readings observed before a boundary already written (applied, but that snapshot is not rewritten).
    late: int


class HistoryTracker:
    """Last states of the site's bays and compartments; the snapshot and transition points they make.

    ``every_s``: snapshot cadence (seconds, whole, dividing a day); ``warmup_s``:
    device-time seconds after a group's first reading before its first snapshot.
    Not thread-safe: the gateway's writer thread is its only caller.
    """

    def __init__(self, site: SiteConfig, *, every_s: int = 60, warmup_s: float = 120.0) -> None:
        if every_s <= 0 or 86_400 % every_s:
            raise ValueError(f"every_s must divide a day, got {every_s}")
        self.every_ns = every_s * _NS
        self.warmup_ns = int(warmup_s * _NS)
        self._lots = {
            lot.id: _Group(lot.id, frozenset(lot.bay_ids()), _stale_ns(lot.stale_after_s)) for lot in site.parking
        }
        self._banks = {
            bank.id: _Group(bank.id, frozenset(c.id for c in bank.compartment_list()), _stale_ns(bank.stale_after_s))
            for bank in site.lockers
        }
        self._snapshots = 0
        self._transitions = 0
        self._late = 0

    def stats(self) -> TrackerStats:
        return TrackerStats(self._snapshots, self._transitions, self._late)

    def apply(self, message: object, *, site_id: str) -> list[StoredPoint]:
        """The derived points one accepted message makes (often none); other kinds are ignored."""
        if isinstance(message, ParkingBayState):
            lot = self._lots.get(message.lot_id)
            if lot is None:
                return []
            ns = point_ns(message)
            points = self._due(lot, to_ns(message.observed_at), site_id, self._lot_point)
            held = lot.states.get(message.bay_id)
            member = self._update(lot, message.bay_id, message, ns)
            if member is not None:
                event = self._transition(held, member, ns)
                if event is not None and event[0]:
                    lot.arrivals += 1  # a vehicle parked: counted in the next snapshot
            return points
        if isinstance(message, LockerCompartmentState):
            bank = self._banks.get(message.bank_id)
            if bank is None:
                return []
            ns = point_ns(message)
            points = self._due(bank, to_ns(message.observed_at), site_id, self._bank_point)
            held = bank.states.get(message.compartment_id)
            member = self._update(bank, message.compartment_id, message, ns)
            if member is not None:
                event = self._transition(held, member, ns)
                if event is not None:
                    deposit, dwell_s = event
                    self._transitions += 1
                    points.append(
                        locker_transition_point(
                            site_id=site_id,
                            bank_id=bank.id,
                            compartment_id=message.compartment_id,
                            deposit=deposit,
                            dwell_s=dwell_s,
                            time_ns=ns,
                        )
                    )
            return points
        return []

    # -- internals ---------------------------------------------------------------------------

    def _update(
        self, group: _Group, member_id: str, message: ParkingBayState | LockerCompartmentState, ns: int
    ) -> _Member | None:
        """Store the reading if it is the member's newest; the new state (with the previous settled state), or None."""
        if member_id not in group.members:
            return None
        held = group.states.get(member_id)
        if held is not None and not held.older_than(message.reading_id, message.epoch, message.seq, ns):
            return None
        at = to_ns(message.observed_at)
        member = _Member(message.reading_id, message.epoch, message.seq, ns, at, message.status)
        if held is not None:
            member.settled, member.occupied_since_ns = held.settled, held.occupied_since_ns
        group.states[member_id] = member
        if group.written_ns is not None and at <= group.written_ns:
            self._late += 1
        return member

    @staticmethod
    def _transition(held: _Member | None, member: _Member, ns: int) -> tuple[bool, float | None] | None:
        """(deposit?, dwell seconds) when this reading shows a deposit or a pickup; updates the settled state."""
        if member.status not in ("free", "occupied"):
            return None
        before = member.settled
        member.settled = member.status
        if member.status == "occupied":
            if before == "free":
                member.occupied_since_ns = ns
                return True, None
            if before is None:
                member.occupied_since_ns = None  # occupied since before we knew it
            return None
        # free
        since = member.occupied_since_ns
        member.occupied_since_ns = None
        if before == "occupied":
            return False, round((ns - since) / _NS, 3) if since is not None and ns >= since else None
        return None

    def _due(self, group: _Group, at: int, site_id: str, make: _PointMaker) -> list[StoredPoint]:
        """Snapshots of every boundary the group's device time passed (before the reading observed at ``at``)."""
        every = self.every_ns
        if group.next_ns is None:
            group.next_ns = -(-(at + self.warmup_ns) // every) * every
            return []
        if at <= group.next_ns:
            return []
        if at - group.next_ns > MAX_CATCH_UP_S * _NS:
            group.next_ns = -(-(at - MAX_CATCH_UP_S * _NS) // every) * every
        points = []
        while group.next_ns < at:
            points.append(make(group, group.next_ns, site_id))
            group.next_ns += every
        group.written_ns = group.next_ns - every
        self._snapshots += len(points)
        return points

    @staticmethod
    def _counts(group: _Group, at_ns: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        oldest = at_ns - group.stale_ns
        for member in group.states.values():
            if oldest <= member.at <= at_ns:
                counts[member.status] = counts.get(member.status, 0) + 1
        return counts

    def _lot_point(self, group: _Group, at_ns: int, site_id: str) -> StoredPoint:
        counts = self._counts(group, at_ns)
        free, occupied = counts.get("free", 0), counts.get("occupied", 0)
        arrivals, group.arrivals = group.arrivals, 0
        return lot_occupancy_point(
            site_id=site_id,
            lot_id=group.id,
            free=free,
            occupied=occupied,
            unknown=len(group.members) - free - occupied,
            time_ns=at_ns,
            arrivals=arrivals,
        )

    def _bank_point(self, group: _Group, at_ns: int, site_id: str) -> StoredPoint:
        counts = self._counts(group, at_ns)
        free, occupied, oos = counts.get("free", 0), counts.get("occupied", 0), counts.get("out_of_service", 0)
        return locker_occupancy_point(
            site_id=site_id,
            bank_id=group.id,
            free=free,
            occupied=occupied,
            out_of_service=oos,
            unknown=len(group.members) - free - occupied - oos,
            time_ns=at_ns,
        )


class LateMarks:
    """The oldest point time (ns) written too late for the continuous queries since last taken; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._oldest: int | None = None

    def note(self, ns: int) -> None:
        with self._lock:
            if self._oldest is None or ns < self._oldest:
                self._oldest = ns

    def take(self) -> int | None:
        """The oldest late time noted since the last call (None if none), and forget it."""
        with self._lock:
            oldest, self._oldest = self._oldest, None
            return oldest


class HistorySink:
    """A :class:`gateway.sink.Sink` that adds the tracker's derived points to every batch it passes on.

    The points of a batch are written with it; if the write fails they stay
    pending and go with the retry (the tracker ignores the batch's readings the
    second time: same reading ids). A derived point the store refuses is
    logged and counted, never reported to the writer (it has no message).
    Readings and derived points older than ``late_after_s`` at the time they
    are written are noted in ``late`` (None: not noted).
    """

    def __init__(
        self,
        inner: Sink,
        tracker: HistoryTracker | None,
        *,
        late: LateMarks | None = None,
        late_after_s: float = 600.0,
    ) -> None:
        self.inner = inner
        self.tracker = tracker
        self.late = late
        self._late_after_ns = int(late_after_s * _NS)
        self._pending: list[StoredPoint] = []
        self.refused_points = 0
        self.dropped_points = 0

    def write(self, entries: Sequence[Entry]) -> SinkResult:
        oldest: int | None = None
        for entry in entries:
            if isinstance(entry, StoredPoint):
                continue
            if self.tracker is not None:
                self._pending.extend(self.tracker.apply(entry.message, site_id=entry.site_id))
            at = to_ns(entry.message.observed_at)
            oldest = at if oldest is None else min(oldest, at)
        if len(self._pending) > MAX_PENDING:
            drop = len(self._pending) - MAX_PENDING
            self.dropped_points += drop
            log.warning("history: %d derived points waited too long for InfluxDB and were dropped", drop)
            del self._pending[:drop]
        if self._pending:
            first = min(p.time_ns for p in self._pending)
            oldest = first if oldest is None else min(oldest, first)
        batch: list[Entry] = [*entries, *self._pending]
        result = self.inner.write(batch)  # raises: the pending points go with the retry
        self._pending = []
        if self.late is not None and oldest is not None and oldest < to_ns(utcnow()) - self._late_after_ns:
            self.late.note(oldest)
        own = [r for r in result.refused if r.index >= len(entries)]
        if own:
            self.refused_points += len(own)
            log.error("history: InfluxDB refused %d derived point(s): %s", len(own), own[0].detail)
        return SinkResult(
            written=result.written,
            refused=[r for r in result.refused if r.index < len(entries)],
            requests=result.requests,
        )

    def close(self) -> None:
        self.inner.close()
