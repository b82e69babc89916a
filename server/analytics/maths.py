"""The formulas of footfall analytics, pure: counts in, figures out (no I/O, no clock).

Every function takes plain numbers or sequences of them and is unit-tested
(``tests/unit/server/test_analytics_maths.py``). The sources:

* capture rate: the retail-footfall industry's definition, entries into a
  store as a share of the people passing its front (the "passing trade" or
  "footfall capture"; e.g. Springboard/MRI and ShopperTrak publish it so);
* dwell time: Little's law, L = λW (J. D. C. Little, "A proof for the
  queuing formula L = λW", Operations Research 9(3), 1961, 383-387), over a
  finite interval in its sample-path form: the mean time in the zone is the
  person-time spent in it divided by the people who entered
  (W = ∫L dt / N, i.e. W = L̄ / λ with L̄ = ∫L dt / T and λ = N / T);
* change: the ratio of two periods' totals minus one (period-on-period);
* lagged relation: Pearson's correlation of one hourly series with another
  shifted by a lag (the sample cross-correlation at that lag).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def capture_rate(entries: float, passers_by: float) -> float | None:
    """Entries into a zone as a share of the passers-by on its street line (0..1, may exceed 1).

    ``entries``: crossings into the zone (people); ``passers_by``: crossings
    of the street line in either direction (people) over the same interval.
    None when nobody passed (a share of nothing is not 0). Above 1 when more
    people entered than passed the line (they came from elsewhere: another
    street, the car park), which the answer shows rather than hides.
    Source: the retail-footfall definition (module docstring).
    """
    if passers_by <= 0:
        return None
    return entries / passers_by


@dataclass(frozen=True, slots=True)
class OccupancyStep:
    """One bucket of a zone's occupancy integral: person-seconds spent in it, and L at its end (people)."""

    person_s: float
    end_occupancy: float


def occupancy_integral(
    entries: Sequence[float | None], exits: Sequence[float | None], step_s: float, start: float = 0.0
) -> list[OccupancyStep]:
    """Occupancy L(t) as cumulative entries minus exits, integrated per bucket of ``step_s`` seconds.

    ``entries``/``exits``: people per bucket (None: no data, taken as 0: the
    zone's lines reported nothing), equally long. L starts at ``start`` (the
    people in the zone when the first bucket begins: 0 for a zone that is
    empty then, e.g. at night) and changes by entries minus exits in each
    bucket; crossings are taken as spread evenly over the bucket, so a
    bucket's person-time is the trapezoid ``step_s * (L_before + L_after) / 2``.
    L never goes below 0 (more exits than the zone held: a missed entry; the
    camera's own running estimate clamps the same way).
    Raises ValueError for sequences of different lengths or ``step_s`` <= 0.
    """
    if len(entries) != len(exits):
        raise ValueError(f"entries ({len(entries)}) and exits ({len(exits)}) must be equally long")
    if step_s <= 0:
        raise ValueError("step_s must be positive")
    level = max(start, 0.0)
    out = []
    for n, x in zip(entries, exits, strict=True):
        after = max(level + (n or 0.0) - (x or 0.0), 0.0)
        out.append(OccupancyStep(step_s * (level + after) / 2, after))
        level = after
    return out


def dwell_time_s(person_s: float, entries: float) -> float | None:
    """Mean dwell time (seconds) by Little's law: person-seconds in the zone over the people who entered.

    Equivalent to W = L̄ / λ with L̄ = person_s / T (people) and λ = entries / T
    (people per second) over the same interval T. None without entries.
    Exact for an interval that starts and ends with the zone empty; otherwise
    it assumes steady state (as many in the zone at the end as at the start).
    Source: Little (1961), module docstring.
    """
    if entries <= 0:
        return None
    return person_s / entries


def net_arrivals(occupied: Sequence[float | None]) -> list[float | None]:
    """Arrivals at a lot per bucket as the rise of its occupied bays since the bucket before (vehicles, >= 0).

    ``occupied``: mean occupied bays per consecutive bucket (None: no data).
    Bucket i's arrivals are ``max(occupied[i] - occupied[i-1], 0)``; None for
    the first bucket and next to a gap. A lower bound of the true arrivals:
    a departure and an arrival in the same bucket cancel (so use short
    buckets, 5 minutes, and sum them into hours).
    """
    out: list[float | None] = [None] * len(occupied)
    for i in range(1, len(occupied)):
        now, before = occupied[i], occupied[i - 1]
        if now is not None and before is not None:
            out[i] = max(now - before, 0.0)
    return out


def percent_change(current: float, previous: float) -> float | None:
    """``(current / previous - 1) * 100`` (percent); None when ``previous`` is 0 (no base to compare with)."""
    if previous == 0:
        return None
    return (current / previous - 1.0) * 100.0


@dataclass(frozen=True, slots=True)
class LagCorrelation:
    """Pearson's r of ``x[t]`` against ``y[t + lag]`` over the ``pairs`` buckets where both are known."""

    lag: int
    r: float | None
    pairs: int


def lagged_correlation(x: Sequence[float | None], y: Sequence[float | None], max_lag: int) -> list[LagCorrelation]:
    """The cross-correlation of ``x`` (e.g. hourly arrivals at the lots) with ``y`` (entries into the zones).

    For each lag 0..``max_lag`` buckets, Pearson's r of ``x[t]`` and
    ``y[t + lag]`` over the t where both are known: a positive lag means y
    follows x (people reach the zones ``lag`` hours after parking). r is None
    with fewer than 3 pairs or when either side is constant. Raises
    ValueError for series of different lengths or a negative ``max_lag``.
    """
    if len(x) != len(y):
        raise ValueError(f"x ({len(x)}) and y ({len(y)}) must be equally long")
    if max_lag < 0:
        raise ValueError("max_lag must be >= 0")
    out = []
    for lag in range(max_lag + 1):
        xs, ys = [], []
        for t in range(len(x) - lag):
            a, b = x[t], y[t + lag]
            if a is not None and b is not None:
                xs.append(float(a))
                ys.append(float(b))
        r: float | None = None
        if len(xs) >= 3:
            try:
                r = statistics.correlation(xs, ys)
            except statistics.StatisticsError:  # a constant series: no correlation defined
                r = None
            if r is not None and not math.isfinite(r):
                r = None
        out.append(LagCorrelation(lag, r, len(xs)))
    return out


def best_lag(correlations: Sequence[LagCorrelation]) -> LagCorrelation | None:
    """The lag with the largest r (the earliest on a tie); None when no lag has an r."""
    best: LagCorrelation | None = None
    for c in correlations:
        if c.r is not None and (best is None or best.r is None or c.r > best.r):
            best = c
    return best
