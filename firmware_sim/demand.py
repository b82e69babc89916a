"""Realistic demand for the simulated fleet: cars in bays, parcels in lockers.

Parking
-------
Each lot's occupancy *target* follows ParkAPI's 15-minute forecast curve for
that lot (``forecast_data/<lot_id>.csv``, rows ``ISO-timestamp,percent``,
local time Europe/Berlin), mapped onto the simulated date: the curve year's
day with the same month and day, moved to the nearest day with the same
weekday (so a simulated Saturday uses a Saturday of the curve year), and the
same time of day, linearly interpolated between the 15-minute points.

Cars then arrive and leave one by one (``LotDemand.step``): each car parked
gets a dwell time (log-normal, median 70 min, 10 min .. 10 h); cars whose time
is up leave; arrivals are Poisson-distributed with a mean that replaces the churn expected
at the target level plus closes the gap to the target with time constant
``tau`` (20 simulated minutes); a lot above target sees random early
departures instead. Bays are picked at random among free ones.

When a lot has no curve (data dir missing, lot not in it, unreadable file),
``fallback_percent`` gives a smooth built-in shape of a German shopping-centre
garage (shops open 09:00-20:00): 5 % at night; on weekdays a rise from about
10:00 to ~75 % from 13:00 to 17:00 and back to ~20 % at 20:00; Saturdays peak
earlier and higher (~90 % from 12:00 to 16:00); Sundays stay around 15 % at
midday.

Lockers
-------
``LockerDemand``: on Monday to Saturday one or two courier rounds in the
morning (07:30-11:00) fill free compartments (sized to fit), each delivery
opening the door briefly; each parcel is picked up after a log-normal wait
(median 4 h, only between 08:00 and 21:00, otherwise the next morning), the
door again open for a moment.

Everything draws from a ``random.Random`` passed in, so a seed reproduces a run.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import logging
import math
import random
import time as systime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path

log = logging.getLogger(__name__)

SLOTS_PER_DAY = 96  # 15-minute points
SLOT_S = 900


# -- occupancy curves -------------------------------------------------------------
def fallback_percent(when: datetime) -> float:
    """Built-in daily shape (percent occupied) used when a lot has no ParkAPI curve."""
    h = when.hour + when.minute / 60 + when.second / 3600
    wd = when.weekday()
    if wd == 6:  # Sunday: shops closed, a few visitors
        return 5.0 + 10.0 * _bump(h, 14.0, 3.5)
    if wd == 5:  # Saturday: earlier, higher peak
        return 5.0 + 85.0 * _bump(h, 14.0, 4.0)
    return 5.0 + 70.0 * _bump(h, 15.0, 4.5)


def fallback_fraction(when: datetime) -> float:
    return fallback_percent(when) / 100.0


def _bump(h: float, centre: float, width: float) -> float:
    """A smooth 0..1 plateau around ``centre`` (generalised Gaussian, flat top)."""
    return math.exp(-(((h - centre) / width) ** 4))


class OccupancyCurve:
    """Percent occupied by local date and time of day, from 15-minute points."""

    def __init__(self, days: dict[date, list[float]], source: str = "") -> None:
        if not days:
            raise ValueError("empty curve")
        self.days = days
        self.source = source
        self._dates = sorted(days)
        self._years = sorted({d.year for d in self._dates})
        #: ``day_for``'s answers (the curve does not change): asked at every demand step of every lot.
        self._day_for: dict[date, date] = {}

    @classmethod
    def from_csv(cls, path: Path) -> OccupancyCurve:
        """Read ``timestamp,percent`` rows; bad rows are counted and skipped, gaps interpolated."""
        raw: dict[date, list[float | None]] = {}
        bad = 0
        with open(path, newline="") as f:
            for lineno, row in enumerate(csv.reader(f), 1):
                try:
                    ts = datetime.fromisoformat(row[0].strip())
                    pct = float(row[1])
                    if not math.isfinite(pct):
                        raise ValueError("not finite")
                except (IndexError, ValueError) as exc:
                    bad += 1
                    if bad <= 3:
                        log.warning("%s:%d: skipped bad row %r (%s)", path, lineno, row, exc)
                    continue
                slot = (ts.hour * 3600 + ts.minute * 60 + ts.second) // SLOT_S
                raw.setdefault(ts.date(), [None] * SLOTS_PER_DAY)[slot] = min(100.0, max(0.0, pct))
        if bad:
            log.warning("%s: %d bad row(s) skipped", path, bad)
        days = {d: _fill(slots) for d, slots in raw.items() if any(v is not None for v in slots)}
        return cls(days, source=str(path))

    def day_for(self, when: date) -> date:
        """The curve's day standing in for ``when``: same month/day, same weekday, in the data."""
        found = self._day_for.get(when)
        if found is None:
            found = self._day_for[when] = self._find_day(when)
        return found

    def _find_day(self, when: date) -> date:
        best: date | None = None
        for year in self._years:
            try:
                anchor = when.replace(year=year)
            except ValueError:  # 29 February
                anchor = date(year, 2, 28)
            shift = (when.weekday() - anchor.weekday()) % 7
            candidate = anchor + timedelta(days=shift if shift <= 3 else shift - 7)
            for step in (0, 7, -7, 14, -14):
                c = candidate + timedelta(days=step)
                if c in self.days:
                    if best is None or _day_of_year_gap(c, when) < _day_of_year_gap(best, when):
                        best = c
                    break
        if best is not None:
            return best
        # Outside the data entirely: the nearest day with the same weekday.
        same = [d for d in self._dates if d.weekday() == when.weekday()] or self._dates
        i = bisect.bisect_left([d.toordinal() for d in same], when.toordinal())
        return same[min(i, len(same) - 1)]

    def percent(self, when: datetime) -> float:
        """Percent occupied at local time ``when`` (interpolated between 15-minute points)."""
        day = self.day_for(when.date())
        slots = self.days[day]
        secs = when.hour * 3600 + when.minute * 60 + when.second + when.microsecond / 1e6
        pos = secs / SLOT_S
        i = int(pos) % SLOTS_PER_DAY
        frac = pos - int(pos)
        nxt = self.days.get(day + timedelta(days=1), slots)[0] if i == SLOTS_PER_DAY - 1 else slots[i + 1]
        return slots[i] + (nxt - slots[i]) * frac

    def fraction(self, when: datetime) -> float:
        """Share occupied (0..1) at local time ``when``."""
        return self.percent(when) / 100.0


def _day_of_year_gap(a: date, b: date) -> int:
    """Days between ``a`` and ``b`` ignoring the year (wrapping around New Year)."""
    gap = (a.timetuple().tm_yday - b.timetuple().tm_yday) % 365
    return min(gap, 365 - gap)


def _fill(slots: list[float | None]) -> list[float]:
    """Fill missing 15-minute points by linear interpolation (ends: nearest value)."""
    known = [(i, v) for i, v in enumerate(slots) if v is not None]
    out: list[float] = []
    k = 0
    for i in range(len(slots)):
        while k + 1 < len(known) and known[k + 1][0] <= i:
            k += 1
        i0, v0 = known[k]
        if i <= i0 or k + 1 >= len(known):
            out.append(v0)
        else:
            i1, v1 = known[k + 1]
            out.append(v0 + (v1 - v0) * (i - i0) / (i1 - i0))
    return out


def forecast_dir(data_dir: Path | None) -> Path | None:
    """``data_dir`` may be ParkAPI's checkout (containing ``forecast_data/``) or that folder itself."""
    if data_dir is None:
        return None
    sub = data_dir / "forecast_data"
    if sub.is_dir():
        return sub
    return data_dir if data_dir.is_dir() else None


TargetFn = Callable[[datetime], float]


def load_targets(data_dir: Path | None, lot_ids: Iterable[str]) -> dict[str, tuple[TargetFn, str]]:
    """Per lot: a function local-datetime -> fraction occupied (0..1) and where it came from."""
    folder = forecast_dir(data_dir)
    if data_dir is not None and folder is None:
        log.warning("demand data dir %s not found: every lot uses the built-in daily shape", data_dir)
    out: dict[str, tuple[TargetFn, str]] = {}
    for lot_id in lot_ids:
        path = folder / f"{lot_id}.csv" if folder else None
        if path is not None and path.is_file():
            try:
                curve = OccupancyCurve.from_csv(path)
            except (OSError, ValueError) as exc:
                log.warning("lot %s: cannot use %s (%s); using the built-in daily shape", lot_id, path, exc)
            else:
                out[lot_id] = (curve.fraction, str(path))
                continue
        elif folder is not None:
            log.info("lot %s: no curve in %s; using the built-in daily shape", lot_id, folder)
        out[lot_id] = (fallback_fraction, "built-in")
    return out


# -- simulated time ----------------------------------------------------------------
class SimClock:
    """Simulated wall time: ``start`` + real time elapsed x ``speed`` (speed 0 freezes the clock)."""

    def __init__(
        self,
        speed: float,
        tz: tzinfo,
        start: datetime | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.speed = speed
        self.tz = tz
        self._mono = monotonic or systime.monotonic
        self._t0 = self._mono()
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=tz)  # a naive start is site-local time
        self.start = (start or datetime.now(tz)).astimezone(tz)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(self._mono() - self._t0) * self.speed)


# -- parking -----------------------------------------------------------------------
@dataclass
class DwellModel:
    """Log-normal parking duration (seconds), clipped."""

    median_s: float = 70 * 60
    sigma: float = 0.8
    min_s: float = 10 * 60
    max_s: float = 10 * 3600

    @property
    def mean_s(self) -> float:
        return self.median_s * math.exp(self.sigma**2 / 2)

    def draw(self, rng: random.Random) -> float:
        return min(self.max_s, max(self.min_s, rng.lognormvariate(math.log(self.median_s), self.sigma)))


@dataclass
class LotDemand:
    """Cars arriving at and leaving one lot; ``step`` returns the bay changes to apply."""

    lot_id: str
    bays: int
    target: TargetFn
    rng: random.Random
    tau_s: float = 20 * 60
    dwell: DwellModel = field(default_factory=DwellModel)
    #: bay index -> simulated departure time (POSIX seconds)
    parked: dict[int, float] = field(default_factory=dict)
    arrivals: int = 0
    departures: int = 0

    def target_count(self, now: datetime) -> float:
        return max(0.0, min(1.0, self.target(now))) * self.bays

    def fill(self, now: datetime, usable: Callable[[int], bool] = lambda i: True) -> list[tuple[int, bool]]:
        """Start with the lot at its target, each car part-way through its stay."""
        want = round(self.target_count(now))
        free = [i for i in range(self.bays) if i not in self.parked and usable(i)]
        picks = self.rng.sample(free, min(want, len(free)))
        t = now.timestamp()
        for i in picks:
            self.parked[i] = t + self.dwell.draw(self.rng) * self.rng.random()
        return [(i, True) for i in sorted(picks)]

    def step(
        self, now: datetime, dt_s: float, usable: Callable[[int], bool] = lambda i: True
    ) -> list[tuple[int, bool]]:
        """Advance by ``dt_s`` simulated seconds to ``now``; (bay index, occupied) changes in order.

        ``usable(i)`` is False for bays the demand cannot use (closed, faulty
        sensor, pinned by a test); cars already there still leave.
        """
        t = now.timestamp()
        before = len(self.parked)
        changes: list[tuple[int, bool]] = []
        for i in [i for i, leave_at in self.parked.items() if leave_at <= t]:
            del self.parked[i]
            self.departures += 1
            changes.append((i, False))
        if dt_s <= 0:
            return changes
        # Expected cars in: replace the churn at the target level, plus close part of the gap.
        target = self.target_count(now)
        net = target * dt_s / self.dwell.mean_s + (target - before) * (1.0 - math.exp(-dt_s / self.tau_s))
        n = _poisson(self.rng, abs(net))
        if net > 0:
            free = [i for i in range(self.bays) if i not in self.parked and usable(i)]
            for i in self.rng.sample(free, min(n, len(free))):
                self.parked[i] = t + self.dwell.draw(self.rng)
                self.arrivals += 1
                changes.append((i, True))
        elif net < 0:  # above target: some cars leave early
            for i in self.rng.sample(sorted(self.parked), min(n, len(self.parked))):
                del self.parked[i]
                self.departures += 1
                changes.append((i, False))
        return changes

    def forget(self, index: int) -> None:
        """The bay was taken over (fault, closure, test); its car no longer counts."""
        self.parked.pop(index, None)


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, normal approximation for large)."""
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


# -- lockers -----------------------------------------------------------------------
DOOR_OPEN_S = (15.0, 60.0)
OPEN_FROM, OPEN_UNTIL = time(8, 0), time(21, 0)
SIZE_ORDER = {"S": 0, "M": 1, "L": 2, "XL": 3}


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    index: int = field(compare=False)
    occupied: bool = field(compare=False)
    door_open: bool = field(compare=False)
    kind: str = field(compare=False)


@dataclass
class LockerDemand:
    """Parcels delivered in the morning and picked up during the day at one locker bank.

    ``step`` returns (compartment index, occupied, door_open) changes in time order.
    """

    bank_id: str
    sizes: list[str]
    rng: random.Random
    tz: tzinfo
    #: share of compartments a morning's deliveries aim to fill
    daily_fill: float = 0.7
    pickup_median_s: float = 4 * 3600
    _queue: list[_Event] = field(default_factory=list)
    _seq: int = 0
    #: index -> True while a parcel is in it or on its way in (reserved)
    held: dict[int, bool] = field(default_factory=dict)
    _planned_until: date | None = None
    delivered: int = 0
    picked_up: int = 0

    def _push(self, at: float, index: int, occupied: bool, door_open: bool, kind: str) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Event(at, self._seq, index, occupied, door_open, kind))

    def _plan_day(self, day: date, usable: Callable[[int], bool]) -> None:
        if day.weekday() == 6:  # no deliveries on Sundays
            return
        free = [i for i in range(len(self.sizes)) if i not in self.held and usable(i)]
        n = min(len(free), _poisson(self.rng, self.daily_fill * len(self.sizes)))
        if n == 0:
            return
        rounds = 1 if n < 6 or self.rng.random() < 0.5 else 2
        chosen = self.rng.sample(free, n)
        for r in range(rounds):
            part = chosen[r::rounds]
            start_min = self.rng.uniform(7.5 * 60, 11 * 60 - 2 * len(part))
            at = datetime.combine(day, time(0), self.tz) + timedelta(minutes=start_min)
            t = at.timestamp()
            for index in part:
                self.held[index] = True
                door = self.rng.uniform(*DOOR_OPEN_S)
                self._push(t, index, False, True, "deliver-open")
                self._push(t + door, index, True, False, "deliver-close")
                pickup = self._pickup_time(t + door)
                door2 = self.rng.uniform(*DOOR_OPEN_S)
                self._push(pickup, index, True, True, "pickup-open")
                self._push(pickup + door2, index, False, False, "pickup-close")
                t += door + self.rng.uniform(20.0, 90.0)

    def _pickup_time(self, after: float) -> float:
        wait = min(3 * 86400.0, max(600.0, self.rng.lognormvariate(math.log(self.pickup_median_s), 0.9)))
        at = datetime.fromtimestamp(after + wait, self.tz)
        if at.time() < OPEN_FROM:
            at = datetime.combine(at.date(), OPEN_FROM, self.tz) + timedelta(minutes=self.rng.uniform(0, 120))
        elif at.time() > OPEN_UNTIL:
            next_day = at.date() + timedelta(days=1)
            at = datetime.combine(next_day, OPEN_FROM, self.tz) + timedelta(minutes=self.rng.uniform(0, 180))
        return at.timestamp()

    def step(self, now: datetime, usable: Callable[[int], bool] = lambda i: True) -> list[tuple[int, bool, bool]]:
        today = now.astimezone(self.tz).date()
        if self._planned_until is None:
            self._planned_until = today - timedelta(days=1)
        while self._planned_until < today:
            self._planned_until += timedelta(days=1)
            self._plan_day(self._planned_until, usable)
        t = now.timestamp()
        out: list[tuple[int, bool, bool]] = []
        while self._queue and self._queue[0].at <= t:
            ev = heapq.heappop(self._queue)
            if ev.kind == "deliver-close":
                self.delivered += 1
            elif ev.kind == "pickup-close":
                self.picked_up += 1
                self.held.pop(ev.index, None)
            out.append((ev.index, ev.occupied, ev.door_open))
        return out

    def pending(self) -> int:
        return len(self._queue)
