"""Crowd levels per zone, from the cameras' footfall intervals, under the k rule of issue 14.

Each camera sends, every interval (a minute by default), how many people
crossed each of its counting lines into the zone (``towards``) and out of it
(``away``), and its running in-minus-out estimate of the zone's occupancy.
This store keeps the intervals of the last :data:`KEEP_S` seconds, each once
(a redelivered or replayed interval has the same reading id and is not counted
twice), and each camera's newest occupancy estimate.

What the store answers is public (``/v1/zones``, the live SSE feed, NGSI-LD,
people signs), so every figure follows the privacy threshold k of the site's
``analytics.k`` (:mod:`server.analytics.privacy`, docs/analytics.md):

* **Flows** come from *aligned* windows, not sliding ones: the last completed
  quarter hour and the last completed hour, on the clock of the site's time
  zone (a quarter hour is the same in UTC for every zone whose offset is a
  multiple of 15 minutes, which is all of today's IANA zones; the hour
  follows the site's offset, e.g. :30 UTC in India, as the operators' hourly
  history does). An interval counts in a window when it was *heard* within
  ``[start, end)``. A window is published (``ok``) when it rests on at least
  k people by the zone-bucket rule of the history
  (:data:`server.analytics.figures.ZONE_CROSSINGS`: crossings in and out),
  else ``suppressed`` with null counts; with no interval heard in it,
  ``nodata``. Within an ``ok`` window each direction (entries, exits) is
  shown only if it reaches k itself, else null and named in ``withheld``
  (30 in and 2 out: the 2 withheld; a 0 too: it rests on no one). Since a
  window only changes when the next one completes, two
  answers a minute apart show the same window or two disjoint published ones:
  no difference of them rests on a few people (a sliding window recomputed at
  every change would: its difference is a minute's crossings).
* **The hour and its quarters**: anyone who watched the feed for the hour has
  seen its four quarters; the hour is published only if it rests on k people
  *and* its suppressed quarters together do too (or it has none), so the
  hour minus its published quarters never reveals an under-k remainder
  (complementary disclosure, as :func:`~server.analytics.privacy.publish`
  guards in a series). Likewise per direction: the hour's entries (exits)
  are shown only if the quarters of the hour whose entries (exits) were not
  shown together hold at least k of them, or there are none
  (:meth:`ZoneStore._withheld`).
* **Occupancy** (the cameras' estimate now) is published when the estimate
  is at least k (:data:`OCCUPANCY`), rounded to the nearest multiple of k
  (:func:`~server.analytics.privacy.round_to_base`: 10-14 people are 10,
  15-24 are 20 with k = 10), with ``occupancy_state`` ``coarsened`` and
  ``occupancy_base`` k; below k, null with ``occupancy_state``
  ``suppressed``. The occupancy is a stock: two exact answers a minute apart
  would differ by that minute's net flow (23, then 24: one person). Rounded,
  any two published answers differ by 0 or by a multiple of k. ``share`` is
  the published occupancy over the capacity.
* **Level** is a coarsened figure (a band of shares); at or above k people it
  is the band of the published ``share`` (so level and share agree, and the
  moment a band edge is crossed says no more than the rounded occupancy
  does). Below k it is published only when every count under
  k falls in the same band (the zone's ``low`` band reaches k - 1 people):
  then it says no more than "fewer than k". Otherwise (a small zone, e.g.
  capacity 12 with the default thresholds: low 0-4, moderate 5-8, high
  9-10) the band would narrow an under-k count to a few people, so it is
  ``suppressed``.
* **Trend**: the net flow (entries minus exits) of the last completed
  quarter, ``rising`` or ``falling`` when it exceeds :data:`TREND_SHARE` of
  the capacity (at least :data:`TREND_MIN_PEOPLE`), else ``steady``; from a
  suppressed quarter, or one with a direction withheld (the net flow would
  bound it), ``suppressed``; from one without data ``unknown``.

A zone is ``nodata`` when none of its cameras works: no interval heard within
the zone's ``stale_after_s``, or the camera's own health (from its device's
status) says ``frozen``, ``black`` or ``disconnected``. Then occupancy, share,
level and trend are null or ``nodata``/``unknown``, never 0 people; the
completed windows still say what they hold.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from contracts import FootfallCount
from contracts.site import SiteConfig, Zone
from server import models
from server.analytics.figures import ZONE_CROSSINGS
from server.analytics.privacy import Rule, merge_counts, publishable, round_to_base
from server.history import site_zone
from server.stores.base import Freshness

if TYPE_CHECKING:
    from server.influx import InfluxClient

#: Seconds of intervals kept: the last completed hour starts up to two hours ago; and a margin.
KEEP_S = 7500.0
#: The aligned windows: a quarter hour and an hour of the site's clock.
WINDOW_SHORT_S = 900
WINDOW_LONG_S = 3600
#: Live occupancy rests on the people it counts (the camera's estimate of who is in the zone now).
OCCUPANCY = Rule(value=lambda c: c["occupancy"], people=lambda c: c["occupancy"], digits=0)
#: The directions of a window, each shown or withheld on its own (:class:`server.models.ZoneFlow` ``withheld``).
DIRECTIONS: tuple[models.ZonePart, ...] = ("entries", "exits")
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
    __slots__ = ("intervals", "occupancy", "quarters", "seen")

    def __init__(self) -> None:
        self.intervals: deque[Interval] = deque()
        #: Completed quarter hours summed once, by start (None: nothing heard in it); a late interval drops its own.
        self.quarters: dict[float, dict[str, float] | None] = {}
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
        self.k = site.analytics.k
        self._tz = site_zone(site.site.timezone)

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
            for start in [q for q in state.quarters if q <= heard < q + WINDOW_SHORT_S]:
                del state.quarters[start]  # a replay into a quarter summed already
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
        for start in [q for q in state.quarters if q < horizon]:
            del state.quarters[start]

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
        # Intervals are held in heard order: walk back from the newest only as far as each answer needs.
        newest = next((iv.heard for iv in reversed(state.intervals) if iv.heard <= now_ts + 300), None)
        configured = self._cameras.get(zone.id, [])
        heard_cameras = set(
            iv.camera for iv in itertools.takewhile(lambda iv: iv.heard > fresh_after, reversed(state.intervals))
        )
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
        short, long = self._flows(state, now_ts)
        if not working:
            return models.ZoneCrowd(
                **base, state="nodata", fresh=False, occupancy=None, occupancy_base=None, share=None,
                occupancy_state="nodata", level="nodata", trend="unknown", last_15m=short, last_1h=long,
            )  # fmt: skip
        occ = [o.value for cam, o in state.occupancy.items() if cam in working and o.heard > fresh_after]
        occupancy = sum(occ) if occ else None
        occupancy_state: models.FigureState = "nodata"
        shown: int | None = None  # what is published: the estimate rounded to a multiple of k
        if occupancy is not None:
            if publishable({"occupancy": occupancy}, OCCUPANCY, self.k):
                shown = round_to_base(occupancy, self.k)  # at least k: the nearest multiple is k or more, never 0
                occupancy_state = "coarsened" if self.k > 1 else "ok"
            else:
                occupancy_state = "suppressed"
        level: models.CrowdLevel | None = None
        if occupancy is not None and zone.capacity:
            if shown is not None:
                level = _level(zone, shown)  # the band of the published share, not of the exact estimate
            elif _level(zone, self.k - 1) == _level(zone, 0):
                level = _level(zone, 0)  # every count under k is in this band: it says "fewer than k", no more
            else:
                level = "suppressed"  # the band would narrow a count under k down to a few people
        share = None if shown is None or not zone.capacity else round(shown / zone.capacity, 4)
        return models.ZoneCrowd(
            **base, state="ok", fresh=fresh.fresh, occupancy=shown, occupancy_base=None if shown is None else self.k,
            share=share, occupancy_state=occupancy_state, level=level, trend=_trend(zone, short), last_15m=short,
            last_1h=long,
        )  # fmt: skip

    def _aligned_end(self, now_ts: float, step_s: int) -> float:
        """The end of the last completed ``step_s`` window on the site's clock (its UTC offset now)."""
        offset = self._tz.utcoffset(datetime.fromtimestamp(now_ts, UTC))
        offset_s = 0.0 if offset is None else offset.total_seconds()
        return float(int((now_ts + offset_s) // step_s) * step_s - offset_s)

    @staticmethod
    def _quarters(state: _ZoneState, start: float, end: float) -> dict[float, dict[str, float]]:
        """Entries and exits heard in ``[start, end)`` by quarter hour (its start); one pass, newest first.

        A quarter in which no interval was heard is absent (``nodata``), not 0.
        """
        out: dict[float, dict[str, float]] = {}
        for iv in reversed(state.intervals):  # held in heard order
            if iv.heard >= end:
                continue
            if iv.heard < start:
                break
            key = start + (iv.heard - start) // WINDOW_SHORT_S * WINDOW_SHORT_S
            counts = out.setdefault(key, {"entries": 0, "exits": 0})
            counts["entries"] += iv.towards
            counts["exits"] += iv.away
        return out

    def _cell(
        self,
        counts: dict[str, float] | None,
        start: float,
        end: float,
        publish: bool,
        quarters: list[dict[str, float]],
    ) -> models.ZoneFlow:
        """One window as published; ``quarters``: the counts of its quarter hours with data (module docstring)."""
        out = {"start": datetime.fromtimestamp(start, UTC), "end": datetime.fromtimestamp(end, UTC)}
        if counts is None:
            return models.ZoneFlow(**out, state="nodata", entries=None, exits=None, withheld=[])
        if not publish:
            return models.ZoneFlow(**out, state="suppressed", entries=None, exits=None, withheld=[])
        withheld = self._withheld(counts, quarters)
        shown = {part: None if part in withheld else int(counts[part]) for part in DIRECTIONS}
        return models.ZoneFlow(**out, state="ok", **shown, withheld=withheld)

    def _withheld(self, window: dict[str, float], quarters: list[dict[str, float]]) -> list[models.ZonePart]:
        """The directions of a published window to withhold (module docstring: each direction on its own).

        Per direction: the window's count and its quarters' counts (the last quarter is a window of one). A
        quarter's direction has been shown (as ``last_15m``) exactly when it reaches k: the primary suppression
        of :func:`~server.analytics.privacy.withhold_parts`. The window's direction is withheld when under k
        itself, or when the quarters whose direction was not shown hold fewer than k people together, 0
        included (the window minus the shown quarters would reveal them; a withheld 0 rests on no one, and
        ``withhold_parts`` withholds it too). Unlike that function, which then withholds more parts (secondary
        suppression), the quarters are public already, so the window's direction is withheld instead.
        """
        out: list[models.ZonePart] = []
        for part in DIRECTIONS:
            hidden = [n for n in (int(q[part]) for q in quarters) if n < self.k]
            if int(window[part]) < self.k or (hidden and sum(hidden) < self.k):
                out.append(part)
        return out

    def _flows(self, state: _ZoneState, now_ts: float) -> tuple[models.ZoneFlow, models.ZoneFlow]:
        """The last completed quarter hour and hour (module docstring: the k rule and the hour's quarters)."""
        q_end = self._aligned_end(now_ts, WINDOW_SHORT_S)
        h_end = self._aligned_end(now_ts, WINDOW_LONG_S)
        h_start = h_end - WINDOW_LONG_S
        # Both are aligned on the site's clock: the hour's quarters and the last quarter are keys of one map.
        # Completed quarters do not change (intervals are placed by when this server heard them), so each is
        # summed once and kept until an interval heard in it arrives late (a replay from history) or it ages out.
        wanted = {h_start + i * WINDOW_SHORT_S for i in range(4)} | {q_end - WINDOW_SHORT_S}
        if not wanted <= state.quarters.keys():
            summed = self._quarters(state, min(wanted), q_end)
            for start in wanted:
                state.quarters[start] = summed.get(start)
        quarters = {start: c for start in wanted if (c := state.quarters[start]) is not None}
        last = quarters.get(q_end - WINDOW_SHORT_S)
        short = self._cell(
            last,
            q_end - WINDOW_SHORT_S,
            q_end,
            last is not None and self._publishable(last),
            [] if last is None else [last],
        )
        of_hour = [c for start, c in quarters.items() if h_start <= start < h_end]
        hour = merge_counts(of_hour) if of_hour else None
        ok = hour is not None and self._publishable(hour)
        if ok:
            hidden = [c for c in of_hour if not self._publishable(c)]
            ok = not hidden or self._publishable(merge_counts(hidden))
        return short, self._cell(hour, h_start, h_end, ok, of_hour)

    def _publishable(self, counts: dict[str, float]) -> bool:
        return publishable(counts, ZONE_CROSSINGS, self.k)

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


def _level(zone: Zone, occupancy: int) -> models.CrowdLevel:
    """The crowd level of ``occupancy`` people in ``zone`` (which has a capacity)."""
    share = occupancy / (zone.capacity or 1)
    lv = zone.crowd_levels
    if share >= lv.very_high:
        return "very_high"
    if share >= lv.high:
        return "high"
    return "moderate" if share >= lv.moderate else "low"


def _trend(zone: Zone, quarter: models.ZoneFlow) -> models.CrowdTrend:
    """From the last completed quarter's net flow; only a published quarter with both directions shown has one.

    With a direction withheld the net flow (and so the trend's band) would narrow the withheld count: suppressed.
    """
    if quarter.state == "suppressed" or quarter.withheld:
        return "suppressed"
    if quarter.entries is None or quarter.exits is None:
        return "unknown"
    net = quarter.entries - quarter.exits
    threshold = max(TREND_MIN_PEOPLE, TREND_SHARE * (zone.capacity or 0))
    return "rising" if net >= threshold else "falling" if net <= -threshold else "steady"
