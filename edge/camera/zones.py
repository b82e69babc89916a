"""Zone accounting: crossing events -> live occupancy and per-interval FootfallCount messages.

Each counting line belongs to one zone; its "in" direction leads into the zone,
so an "in" crossing counts ``towards`` and an "out" crossing ``away``
(FIWARE CrowdFlowObserved).

Occupancy is the running ``towards - away`` over a zone's lines, clamped at 0
after every event (a person we saw leave but not enter must not make it
negative), and reset to 0 once a day at a local time when the street is empty.
Counting drifts, the reset bounds the drift to one day.

Intervals are aligned to multiples of ``interval_s`` on the device's UTC clock.
A message is published for every interval the camera was watching, also when
nobody crossed (silence is not a dead camera). Time the camera was not watching
(starting, disconnected, frozen, black) is not covered by any message: the
interval in progress is closed early at ``pause`` and the next one starts at
``resume``, so ``[interval_start, observed_at)`` is always time actually watched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from contracts.messages import FootfallCount, LineCount, new_reading_id

log = logging.getLogger(__name__)


class Crossing(Protocol):
    """What the engine's CrossingEvent offers (line name and "in"/"out")."""

    @property
    def line(self) -> str: ...

    @property
    def direction(self) -> str: ...


def next_reset(now: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The first local ``at`` strictly after ``now``, in UTC.

    One reset per local calendar day, DST included: a time that does not exist
    on the spring-forward day resolves with the pre-transition offset (02:30 ->
    03:30 local), one that exists twice on the fall-back day takes the first.
    """
    local_day = now.astimezone(tz).date()
    for offset in range(0, 3):
        candidate = datetime.combine(local_day + timedelta(days=offset), at, tzinfo=tz).astimezone(UTC)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a reset time within three days")  # pragma: no cover


def interval_end(now: datetime, interval_s: int) -> datetime:
    """End of the aligned interval containing ``now`` (the next multiple of interval_s since the epoch)."""
    k = math.floor(now.timestamp() / interval_s)
    return datetime.fromtimestamp((k + 1) * interval_s, UTC)


class ZoneCounter:
    """Occupancy and interval aggregation for the zones of one camera.

    Not thread-safe; owned by the camera loop. All ``now`` arguments are aware
    datetimes from the device clock.
    """

    def __init__(
        self,
        line_zones: Mapping[str, str],
        *,
        device_id: str,
        interval_s: int = 60,
        reset_at: time | None = time(4, 0),
        timezone: str = "UTC",
        new_id: Callable[[], str] = new_reading_id,
        camera_id: str | None = None,
    ) -> None:
        if not line_zones:
            raise ValueError("a zone counter needs at least one line")
        if interval_s <= 0 or 86_400 % interval_s:
            raise ValueError("interval_s must be a positive divisor of 86400")
        self.device_id = device_id
        self.camera_id = camera_id
        self.interval_s = interval_s
        self.line_zones = dict(line_zones)
        self.zones: dict[str, list[str]] = {}
        for line, zone in self.line_zones.items():
            self.zones.setdefault(zone, []).append(line)
        self.reset_at = reset_at
        self.tz = ZoneInfo(timezone)
        self._new_id = new_id
        self._occupancy = dict.fromkeys(self.zones, 0)
        self._counts = {line: [0, 0] for line in self.line_zones}
        self._start: datetime | None = None  # open interval, None while not watching
        self._end: datetime | None = None
        self._next_reset: datetime | None = None
        #: Events on lines this counter does not know, and events while not watching.
        self.unknown_line_events = 0
        self.unwatched_events = 0
        self.resets = 0

    @property
    def watching(self) -> bool:
        return self._start is not None

    def occupancy(self, zone: str) -> int:
        return self._occupancy[zone]

    def resume(self, now: datetime) -> None:
        """Start watching: open an interval at ``now`` (ends at the next aligned boundary)."""
        self._check_reset(now)
        if self._start is None:
            self._open(now)

    def pause(self, now: datetime) -> list[FootfallCount]:
        """Stop watching: close the open interval at ``now`` (messages for it, if it has length)."""
        out = self._roll(now)
        if self._start is not None and now > self._start:
            out += self._emit(self._start, now)
        self._start = self._end = None
        self._clear()
        self._check_reset(now)
        return out

    def update(self, now: datetime, events: Iterable[Crossing] = ()) -> list[FootfallCount]:
        """Advance the clock to ``now`` (closing finished intervals), then count ``events``."""
        out = self._roll(now)
        self._check_reset(now)
        for ev in events:
            zone = self.line_zones.get(ev.line)
            if zone is None:
                self.unknown_line_events += 1
                log.warning("crossing on unknown line %r ignored", ev.line)
                continue
            towards = ev.direction == "in"
            self._occupancy[zone] = max(0, self._occupancy[zone] + (1 if towards else -1))
            if self._start is None:
                self.unwatched_events += 1
                continue
            self._counts[ev.line][0 if towards else 1] += 1
        return out

    def _roll(self, now: datetime) -> list[FootfallCount]:
        if self._start is None or self._end is None:
            return []
        if now < self._start:
            log.warning("device clock went back %.1f s; restarting the interval", (self._start - now).total_seconds())
            self._start, self._end = now, interval_end(now, self.interval_s)
            return []
        if now < self._end:
            return []
        out = self._emit(self._start, self._end)
        self._clear()
        if now >= self._end + timedelta(seconds=self.interval_s):
            missed = (now - self._end).total_seconds()
            log.warning("counting loop stalled or clock jumped: %.0f s not covered by any interval", missed)
            self._open(now)
        else:
            self._start, self._end = self._end, self._end + timedelta(seconds=self.interval_s)
        return out

    def _open(self, now: datetime) -> None:
        self._start, self._end = now, interval_end(now, self.interval_s)

    def _clear(self) -> None:
        for c in self._counts.values():
            c[0] = c[1] = 0

    def _check_reset(self, now: datetime) -> None:
        if self.reset_at is None:
            return
        if self._next_reset is None:
            self._next_reset = next_reset(now, self.reset_at, self.tz)
            return
        if now >= self._next_reset:
            log.info("daily occupancy reset (%s %s): %s", self.reset_at, self.tz.key, self._occupancy)
            self._occupancy = dict.fromkeys(self.zones, 0)
            self.resets += 1
            self._next_reset = next_reset(now, self.reset_at, self.tz)

    def _emit(self, start: datetime, end: datetime) -> list[FootfallCount]:
        return [
            FootfallCount(
                device_id=self.device_id,
                camera_id=self.camera_id,
                observed_at=end,
                reading_id=self._new_id(),
                zone_id=zone,
                interval_start=start,
                lines=[
                    LineCount(line_id=line, towards=self._counts[line][0], away=self._counts[line][1]) for line in lines
                ],
                occupancy=self._occupancy[zone],
            )
            for zone, lines in self.zones.items()
        ]
