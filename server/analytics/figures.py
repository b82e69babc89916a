"""Counts per bucket into the cells each analytics endpoint publishes (pure: no I/O).

Each function takes the per-bucket numbers :mod:`server.analytics.queries`
read (bucket start in ns -> values) and the window, and returns
:class:`server.analytics.privacy.Cell` lists plus the :class:`Rule` that
computes their figure; the routes hand both to
:func:`server.analytics.privacy.publish`. Formulas: :mod:`server.analytics.maths`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

from contracts.storage import from_ns, to_ns
from server.analytics import maths
from server.analytics.privacy import Cell, Counts, Rule, merge_counts
from server.history import WEEKDAYS, Window, floor_bucket

# -- the figure kinds: value from counts, and the people it rests on -------------------------------

#: Capture rate: entries / passers-by; rests on both.
CAPTURE_RATE = Rule(
    value=lambda c: maths.capture_rate(c["entries"], c["passers_by"]),
    people=lambda c: min(c["entries"], c["passers_by"]),
    digits=4,
)
#: Dwell time (s): person-seconds / entries; rests on the entries and the exits (both doors of the balance).
DWELL_TIME = Rule(
    value=lambda c: maths.dwell_time_s(c["person_s"], c["entries"]),
    people=lambda c: min(c["entries"], c["exits"]),
    digits=1,
)
#: A count of people (flows): the value is the count itself.
CROSSINGS = Rule(value=lambda c: c["crossings"], people=lambda c: c["crossings"], digits=0)
#: A mean per day of entries over ``days`` days (zone peaks); rests on the entries.
ENTRIES_PER_DAY = Rule(value=lambda c: c["entries"] / c["days"] if c["days"] else None, people=lambda c: c["entries"])
#: A lot's mean occupied bays over ``hours`` hourly means; rests on the most vehicles seen at once.
OCCUPIED_MEAN = Rule(
    value=lambda c: c["occupied_sum"] / c["hours"] if c["hours"] else None, people=lambda c: c["vehicles_max"]
)
#: Percent change of ``current`` against ``previous``; rests on the smaller side's people.
PERCENT_CHANGE = Rule(
    value=lambda c: maths.percent_change(c["current"], c["previous"]), people=lambda c: c["people"], digits=1
)
#: A total of entries (a period of the change endpoint).
ENTRIES = Rule(value=lambda c: c["entries"], people=lambda c: c["entries"], digits=0)
#: A lot's mean occupied bays over a period; rests on the most vehicles seen at once.
PERIOD_OCCUPIED = Rule(value=lambda c: c["occupied_mean"], people=lambda c: c["vehicles_max"])


def lag_rule(r: float | None) -> Rule:
    """A lag's correlation: the value is ``r``; it rests on the fewer of the arrivals and the entries."""
    return Rule(value=lambda _c: r, people=lambda c: min(c["arrivals"], c["entries"]), digits=3)


# -- helpers ---------------------------------------------------------------------------------------


def buckets_of(window: Window) -> list[tuple[datetime, datetime]]:
    return window.buckets()


def total_cell(window: Window, cells: list[Cell]) -> Cell:
    """The whole window as one cell: counts summed over the cells with data (None if none has)."""
    parts = [c.counts for c in cells if c.counts is not None]
    return Cell(window.start, window.end, merge_counts(parts) if parts else None)


# -- capture rate ----------------------------------------------------------------------------------


def capture_cells(
    window: Window, entries: Mapping[int, tuple[float, float]], street: Mapping[int, tuple[float, float]]
) -> list[Cell]:
    """Per bucket: ``entries`` (zone, first of the pair) and ``passers_by`` (street line, both directions).

    A bucket where neither the zone's lines nor the street line reported has
    no data; one where one side reported only counts the other as 0.
    """
    out = []
    for start, end in window.buckets():
        at = to_ns(start)
        if at not in entries and at not in street:
            out.append(Cell(start, end, None))
            continue
        towards, away = street.get(at, (0.0, 0.0))
        out.append(Cell(start, end, {"entries": entries.get(at, (0.0, 0.0))[0], "passers_by": towards + away}))
    return out


# -- dwell time ------------------------------------------------------------------------------------


def dwell_cells(window: Window, fine: Window, counts: Mapping[int, tuple[float, float]]) -> tuple[list[Cell], float]:
    """Per bucket of ``window``: entries, exits and person-seconds from the 5-minute ``counts`` over ``fine``.

    The occupancy is integrated over the whole of ``fine`` (same span,
    5-minute buckets) from an empty zone at its start
    (:func:`maths.occupancy_integral`), then each output bucket sums its
    5-minute buckets. Returns the cells and the occupancy the counts leave at
    the end (people; 0 when the closed-zone assumption holds).
    """
    fine_buckets = fine.buckets()
    ins = [counts.get(to_ns(s), (None, None))[0] for s, _ in fine_buckets]
    outs = [counts.get(to_ns(s), (None, None))[1] for s, _ in fine_buckets]
    steps = maths.occupancy_integral(ins, outs, fine_buckets[0][1].timestamp() - fine_buckets[0][0].timestamp())
    sums: dict[int, Counts] = {}
    for (start, _), n, x, step in zip(fine_buckets, ins, outs, steps, strict=True):
        key = to_ns(floor_bucket(start, window.every, window.tz))
        acc = sums.setdefault(key, {"entries": 0.0, "exits": 0.0, "person_s": 0.0, "_seen": 0.0})
        acc["person_s"] += step.person_s
        if n is not None or x is not None:
            acc["entries"] += n or 0.0
            acc["exits"] += x or 0.0
            acc["_seen"] = 1.0
    cells = []
    for start, end in window.buckets():
        got = sums.get(to_ns(start))
        if got is None or not got.pop("_seen"):
            cells.append(Cell(start, end, None))
        else:
            cells.append(Cell(start, end, {k: round(v, 3) for k, v in got.items()}))
    return cells, steps[-1].end_occupancy if steps else 0.0


# -- flows -----------------------------------------------------------------------------------------


def flow_cells(window: Window, crossings: Mapping[int, float]) -> list[Cell]:
    """Per bucket: the ``crossings`` from one zone into the other (people); no data where no line reported."""
    out = []
    for start, end in window.buckets():
        at = to_ns(start)
        out.append(Cell(start, end, {"crossings": crossings[at]} if at in crossings else None))
    return out


# -- peaks -----------------------------------------------------------------------------------------


def _local_day_hours(values: Mapping[int, float], tz: ZoneInfo, *, combine: str) -> dict[tuple[date, int], float]:
    """Hourly values per (local date, local hour); the repeated hour of the autumn change summed or averaged."""
    parts: dict[tuple[date, int], list[float]] = defaultdict(list)
    for at, v in values.items():
        local = from_ns(at).astimezone(tz)
        parts[(local.date(), local.hour)].append(v)
    return {key: (sum(vs) if combine == "sum" else sum(vs) / len(vs)) for key, vs in parts.items()}


def zone_profile_cells(window: Window, entries: Mapping[int, float]) -> tuple[list[Cell], list[Cell]]:
    """(24 hour-of-day cells, 7 weekday cells) of mean entries per day, over the days with data.

    Hour h: entries in local hour h summed over the dates that have data in
    it, over those dates. Weekday d: each date's entries (over its hours
    with data) summed over the dates of weekday d, over those dates. Each
    cell covers the whole window and carries ``entries`` and ``days``.
    """
    per = _local_day_hours(entries, window.tz, combine="sum")
    hours = []
    for h in range(24):
        got = [v for (_, hour), v in per.items() if hour == h]
        counts = {"entries": sum(got), "days": float(len(got))} if got else None
        hours.append(Cell(window.start, window.end, counts, f"{h:02d}"))
    by_date: dict[date, float] = defaultdict(float)
    for (day, _), v in per.items():
        by_date[day] += v
    days = []
    for wd, name in enumerate(WEEKDAYS):
        got = [v for day, v in by_date.items() if day.weekday() == wd]
        counts = {"entries": sum(got), "days": float(len(got))} if got else None
        days.append(Cell(window.start, window.end, counts, name))
    return hours, days


def lot_profile_cells(window: Window, occupied: Mapping[int, tuple[float, float]]) -> tuple[list[Cell], list[Cell]]:
    """(24 hour-of-day cells, 7 weekday cells) of a lot's mean occupied bays, from hourly (mean, max) values.

    Each cell: ``occupied_sum`` (the sum of the hourly means in it),
    ``hours`` (how many), ``vehicles_max`` (the most bays occupied at once
    in any of them: the vehicles the figure rests on).
    """
    means = _local_day_hours({at: m for at, (m, _) in occupied.items()}, window.tz, combine="mean")
    tops = _local_day_hours({at: x for at, (_, x) in occupied.items()}, window.tz, combine="mean")

    def cell(keys: list[tuple[date, int]], label: str) -> Cell:
        if not keys:
            return Cell(window.start, window.end, None, label)
        counts = {
            "occupied_sum": round(sum(means[k] for k in keys), 3),
            "hours": float(len(keys)),
            "vehicles_max": max(tops[k] for k in keys),
        }
        return Cell(window.start, window.end, counts, label)

    hours = [cell([k for k in means if k[1] == h], f"{h:02d}") for h in range(24)]
    days = [cell([k for k in means if k[0].weekday() == wd], name) for wd, name in enumerate(WEEKDAYS)]
    return hours, days


def peak_label(published: list[dict[str, object]]) -> str | None:
    """The label of the published cell (ok/coarsened) with the highest value; the first on a tie."""
    best: tuple[float, str] | None = None
    for cell in published:
        value, label = cell.get("value"), cell.get("label")
        if isinstance(value, int | float) and isinstance(label, str) and (best is None or value > best[0]):
            best = (float(value), label)
    return best[1] if best else None


# -- parking and footfall --------------------------------------------------------------------------


def net_rise_by_hour(hours: Window, fine: Window, occupied: Mapping[int, tuple[float, float]]) -> dict[int, float]:
    """A lot's net arrivals (vehicles) per hour of ``hours``, from its 5-minute (mean, max) occupied bays.

    :func:`maths.net_arrivals` over the 5-minute buckets of ``fine`` (same
    span); an hour's arrivals sum its known 5-minute rises; an hour without
    any known rise is absent. For lots whose snapshots carry no counted
    ``arrivals`` (written before the gateway counted them): a lower bound.
    """
    fine_starts = [s for s, _ in fine.buckets()]
    rises = maths.net_arrivals([occupied[to_ns(s)][0] if to_ns(s) in occupied else None for s in fine_starts])
    per_hour: dict[int, float] = {}
    for start, rise in zip(fine_starts, rises, strict=True):
        if rise is not None:
            key = to_ns(floor_bucket(start, "1h", hours.tz))
            per_hour[key] = per_hour.get(key, 0.0) + rise
    return per_hour


def hourly_sum(hours: Window, parts: Sequence[Mapping[int, float]]) -> list[float | None]:
    """Per hour of ``hours``: the sum over ``parts`` (hour start ns -> value) of those that have the hour; else None."""
    out: list[float | None] = []
    for start, _ in hours.buckets():
        got = [p[to_ns(start)] for p in parts if to_ns(start) in p]
        out.append(sum(got) if got else None)
    return out
