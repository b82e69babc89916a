"""Crowd levels per zone, from the cameras' footfall intervals.

Each camera sends, every interval (a minute by default), how many people
crossed each of its counting lines into the zone (``towards``) and out of it
(``away``), and its running in-minus-out estimate of the zone's occupancy.
This store keeps the intervals of the last :data:`KEEP_S` seconds, each once
(a redelivered or replayed interval has the same reading id and is not counted
twice), and each camera's newest occupancy estimate.

Windows: an interval counts in "the last 15 minutes" when it *ended* (was
heard) within them; intervals are short, so a window is exact to one interval.

A zone is ``nodata`` when none of its cameras works: no interval heard within
the zone's ``stale_after_s``, or the camera's own health (from its device's
status) says ``frozen``, ``black`` or ``disconnected``. Then every live number
is null, never 0 people.

Level: occupancy as a share of the zone's ``capacity``, against its
``crowd_levels`` (:class:`contracts.site.CrowdLevels`). Trend: the net flow
(entries minus exits) of the last 15 minutes, ``rising`` or ``falling`` when
it exceeds :data:`TREND_SHARE` of the capacity (at least
:data:`TREND_MIN_PEOPLE`), else ``steady``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from contracts import FootfallCount
from contracts.site import SiteConfig, Zone
from server import models
from server.stores.base import Freshness

if TYPE_CHECKING:
    from server.influx import InfluxClient

#: Seconds of intervals kept: the longest window asked for (an hour) and a margin.
KEEP_S = 3900.0
WINDOW_SHORT_S = 900.0
WINDOW_LONG_S = 3600.0
TREND_SHARE = 0.02
TREND_MIN_PEOPLE = 5
#: Camera health states in which a camera counts nothing.
BROKEN = frozenset({"frozen", "black", "disconnected"})


@dataclass(frozen=True, slots=True)
class Interval:
    heard: float
    camera: str | None
    towards: int
    away: int


@dataclass(slots=True)
class _Occupancy:
    ts: float
    heard: float
    value: int


class _ZoneState:
    __slots__ = ("intervals", "occupancy", "seen")

    def __init__(self) -> None:
        self.intervals: deque[Interval] = deque()
        #: (camera, line, reading id) of intervals held, so none is counted twice.
        self.seen: set[tuple[str | None, str, str]] = set()
        self.occupancy: dict[str | None, _Occupancy] = {}


class ZoneStore:
    """Footfall intervals and occupancy estimates per zone; thread-safe."""

    name = "zones"

    def __init__(self, site: SiteConfig) -> None:
        self._zones: dict[str, Zone] = {z.id: z for z in site.zones}
        self._cameras: dict[str, list[str]] = {z.id: [] for z in site.zones}
        for cam in site.cameras:
            for zone in {line.zone for line in cam.lines}:
                self._cameras.setdefault(zone, []).append(cam.id)
        self._state: dict[str, _ZoneState] = {z: _ZoneState() for z in self._zones}
        self._keys: dict[str, deque[tuple[float, tuple[str | None, str, str]]]] = {z: deque() for z in self._zones}
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {"applied": 0, "duplicate": 0, "unknown_zone": 0}

    # -- writes ----------------------------------------------------------------

    def add(
        self, zone_id: str, camera: str | None, line: str, reading_id: str, heard: float, towards: int, away: int
    ) -> bool:
        """Offer one line's interval; False if the zone is unknown or the interval is held already."""
        with self._lock:
            state = self._state.get(zone_id)
            if state is None:
                self.counts["unknown_zone"] += 1
                return False
            key = (camera, line, reading_id)
            if key in state.seen:
                self.counts["duplicate"] += 1
                return False
            state.seen.add(key)
            self._keys[zone_id].append((heard, key))
            # Keep intervals in heard order (a replay may be older than what is held).
            iv = Interval(heard, camera, towards, away)
            if state.intervals and state.intervals[-1].heard > heard:
                items = sorted([*state.intervals, iv], key=lambda i: i.heard)
                state.intervals = deque(items)
            else:
                state.intervals.append(iv)
            self.counts["applied"] += 1
            self._prune(zone_id, state, heard)
            return True

    def set_occupancy(self, zone_id: str, camera: str | None, observed_ts: float, heard: float, value: int) -> bool:
        with self._lock:
            state = self._state.get(zone_id)
            if state is None:
                return False
            held = state.occupancy.get(camera)
            if held is not None and held.ts >= observed_ts:
                return False
            state.occupancy[camera] = _Occupancy(observed_ts, heard, value)
            return True

    def apply_message(self, message: FootfallCount, heard: float) -> bool:
        applied = False
        for line in message.lines:
            applied |= self.add(
                message.zone_id, message.camera_id, line.line_id, message.reading_id, heard, line.towards, line.away
            )
        if message.occupancy is not None:
            self.set_occupancy(
                message.zone_id, message.camera_id, message.observed_at.timestamp(), heard, message.occupancy
            )
        return applied

    def _prune(self, zone_id: str, state: _ZoneState, now_ts: float) -> None:
        horizon = now_ts - KEEP_S
        while state.intervals and state.intervals[0].heard < horizon:
            state.intervals.popleft()
        keys = self._keys[zone_id]
        while keys and keys[0][0] < horizon:
            state.seen.discard(keys.popleft()[1])

    # -- reads -----------------------------------------------------------------

    def zones(self, now: datetime, camera_states: Mapping[str, str]) -> list[models.ZoneCrowd]:
        now_ts = now.timestamp()
        with self._lock:
            return [self._summarize(z, now_ts, camera_states) for z in self._zones.values()]

    def zone(self, zone_id: str, now: datetime, camera_states: Mapping[str, str]) -> models.ZoneCrowd | None:
        zone = self._zones.get(zone_id)
        if zone is None:
            return None
        with self._lock:
            return self._summarize(zone, now.timestamp(), camera_states)

    def _summarize(self, zone: Zone, now_ts: float, camera_states: Mapping[str, str]) -> models.ZoneCrowd:
        state = self._state[zone.id]
        self._prune(zone.id, state, now_ts)
        fresh_after = now_ts - zone.stale_after_s
        newest = max((iv.heard for iv in state.intervals if iv.heard <= now_ts + 300), default=None)
        configured = self._cameras.get(zone.id, [])
        heard_cameras = {iv.camera for iv in state.intervals if iv.heard > fresh_after}
        # A camera works if it was heard recently and its device does not say it is broken. An
        # unnamed camera (a device with one camera) is judged by what it sends alone.
        working = [c for c in heard_cameras if c is None or camera_states.get(c) not in BROKEN]
        cameras = models.ZoneCameras(
            configured=len(configured),
            working=len(working),
            broken=sorted(c for c in configured if camera_states.get(c) in BROKEN),
        )
        fresh = Freshness.of(newest, now_ts, zone.stale_after_s)
        base = {
            "id": zone.id,
            "name": zone.name,
            "capacity": zone.capacity,
            "coords": None if zone.coords is None else models.Coords(lat=zone.coords.lat, lng=zone.coords.lng),
            "observed_at": fresh.observed_at,
            "age_s": fresh.age_s,
            "stale_after_s": zone.stale_after_s,
            "cameras": cameras,
        }
        if not working:
            return models.ZoneCrowd(
                **base,
                state="nodata",
                fresh=False,
                occupancy=None,
                share=None,
                level="nodata",
                trend="unknown",
                last_15m=None,
                last_1h=None,
            )
        short = self._flow(state, now_ts, WINDOW_SHORT_S)
        long = self._flow(state, now_ts, WINDOW_LONG_S)
        occ = [o.value for cam, o in state.occupancy.items() if cam in working and o.heard > fresh_after]
        occupancy = sum(occ) if occ else None
        share = None if occupancy is None or not zone.capacity else round(occupancy / zone.capacity, 4)
        level: models.CrowdLevel | None = None
        if share is not None:
            lv = zone.crowd_levels
            level = (
                "very_high"
                if share >= lv.very_high
                else "high"
                if share >= lv.high
                else "moderate"
                if share >= lv.moderate
                else "low"
            )
        net = short.entries - short.exits
        threshold = max(TREND_MIN_PEOPLE, TREND_SHARE * (zone.capacity or 0))
        trend: models.CrowdTrend = "rising" if net >= threshold else "falling" if net <= -threshold else "steady"
        return models.ZoneCrowd(
            **base,
            state="ok",
            fresh=fresh.fresh,
            occupancy=occupancy,
            share=share,
            level=level,
            trend=trend,
            last_15m=short,
            last_1h=long,
        )

    @staticmethod
    def _flow(state: _ZoneState, now_ts: float, window_s: float) -> models.ZoneFlow:
        start = now_ts - window_s
        entries = exits = 0
        for iv in reversed(state.intervals):
            if iv.heard <= start:
                break
            if iv.heard <= now_ts:
                entries += iv.towards
                exits += iv.away
        return models.ZoneFlow(
            entries=entries,
            exits=exits,
            start=datetime.fromtimestamp(start, UTC),
            end=datetime.fromtimestamp(now_ts, UTC),
        )

    def missing(self) -> int:
        return 0

    async def load_history(self, client: InfluxClient, site_id: str, window_s: float) -> tuple[int, int]:
        """The last hour of intervals and each camera's last occupancy."""
        rows = await client.footfall(site_id, min(window_s, KEEP_S))
        applied = 0
        for row in rows:
            heard = row.received_ts if row.received_ts is not None else row.observed_at.timestamp()
            applied += self.add(row.zone, row.camera, row.line, row.reading_id, heard, row.towards, row.away)
        for occ in await client.last_occupancy(site_id, min(window_s, KEEP_S)):
            heard = occ.received_ts if occ.received_ts is not None else occ.observed_at.timestamp()
            self.set_occupancy(occ.zone, occ.camera, occ.observed_at.timestamp(), heard, occ.occupancy)
        return len(rows), applied
