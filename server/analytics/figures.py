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
from server.analytics.privacy import Cell, Counts, Rule, merge_counts, publishable, withhold_parts
from server.history import WEEKDAYS, Weekday, Window, floor_bucket

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


#: A zone's crossings in a bucket of its history (``GET /v1/zones/{id}/history``): entries and exits on all its
#: lines. The bucket, its per-line rows and its mean occupancy rest on all of them, in and out (docs/history.md).
ZONE_CROSSINGS = Rule(value=lambda c: c["entries"] + c["exits"], people=lambda c: c["entries"] + c["exits"], digits=0)
#: The busiest hour of a weekday (``GET /v1/zones/{id}/peaks``): mean entries per day over ``days`` days;
#: rests on the slot's crossings over those days, in and out (the unit of the zone history).
ZONE_PEAK_HOUR = Rule(
    value=lambda c: c["entries"] / c["days"] if c["days"] else None, people=lambda c: c["entries"] + c["exits"]
)


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


# -- zone history (operators' raw counts, under the same rule) ------------------------------------

#: A counting line of a zone: (camera id, line id); the camera may be "" for intervals stored without one.
LineKey = tuple[str, str]


def zone_history_cells(
    window: Window,
    lines: Mapping[LineKey, Mapping[int, tuple[float, float]]],
    cameras: Mapping[str, Mapping[int, tuple[float, float]]],
) -> tuple[list[Cell], list[LineKey], list[str]]:
    """Per bucket of ``window``: a zone's crossings, per line and in all, and its occupancy sums.

    ``lines``: per line, bucket start (ns) -> (towards, away) crossings;
    ``cameras``: per camera, bucket start (ns) -> (sum of its occupancy
    estimates, samples). A cell's counts: ``entries``, ``exits`` (all lines),
    ``towards:<i>``/``away:<i>`` for line i of the returned line list (lines
    with data in the bucket only), ``occupancy_sum:<j>``/``samples:<j>`` for
    camera j. All add up, so :func:`server.analytics.privacy.publish` can
    merge buckets; :func:`zone_history_bucket` turns a published cell back
    into the API's bucket. A bucket where no line reported has no data, even
    if a camera reported occupancy (nothing to judge k by).
    """
    line_keys = sorted(lines)
    camera_keys = sorted(cameras)
    cells = []
    for start, end in window.buckets():
        at = to_ns(start)
        counts: Counts = {"entries": 0.0, "exits": 0.0}
        for i, key in enumerate(line_keys):
            got = lines[key].get(at)
            if got is not None:
                counts[f"towards:{i}"], counts[f"away:{i}"] = got
                counts["entries"] += got[0]
                counts["exits"] += got[1]
        if len(counts) == 2:  # no line reported
            cells.append(Cell(start, end, None))
            continue
        for j, camera in enumerate(camera_keys):
            occ = cameras[camera].get(at)
            if occ is not None and occ[1]:
                counts[f"occupancy_sum:{j}"], counts[f"samples:{j}"] = occ
        cells.append(Cell(start, end, counts))
    return cells, line_keys, camera_keys


def zone_history_bucket(
    published: Mapping[str, object], lines: Sequence[LineKey], cameras: Sequence[str], k: int
) -> dict[str, object]:
    """One published cell (:func:`server.analytics.privacy.publish`) as a bucket of the zone history.

    Shape (``server.models.ZoneHistoryBucket``): ``start``, ``end`` (a
    ``coarsened`` bucket spans the merged interval), ``state``, ``entries``,
    ``exits``, ``withheld``, ``occupancy_mean`` (people: the sum over cameras
    of each one's mean estimate over the bucket; withheld under k) and ``lines`` (per line with
    data: ``camera``, ``line``, ``entries``, ``exits``, ``withheld``).
    Withheld buckets (``suppressed``, ``nodata``): counts null, no lines and
    ``withheld`` empty (the state says it all), never 0.

    Within a published bucket each part is shown only if it rests on at least
    ``k`` people, by :func:`server.analytics.privacy.withhold_parts` applied
    to two groups: the entries (the total and each line's) and the exits. A
    withheld part is null and its name (``entries``/``exits``) is in the
    ``withheld`` list of the bucket (for the totals) or of its line; whether
    it was under k or withheld to protect another is not said (that would
    narrow it). ``occupancy_mean`` under ``k`` people is withheld too (null,
    ``occupancy_mean`` in the bucket's ``withheld``), as the live zones
    suppress an occupancy under k (:mod:`server.stores.zones`); it is a
    mean of a stock, not a part of the crossings, so alone in its group.
    """
    bucket: dict[str, object] = {
        "start": published["start"], "end": published["end"], "state": published["state"],
        "entries": None, "exits": None, "withheld": [], "occupancy_mean": None, "lines": [],
    }  # fmt: skip
    counts = published["counts"]
    if not isinstance(counts, Mapping):
        return bucket
    present = [(i, camera, line) for i, (camera, line) in enumerate(lines) if f"towards:{i}" in counts]
    line_withheld: list[list[str]] = [[] for _ in present]
    rows: list[dict[str, object]] = [
        {"camera": camera or None, "line": line, "entries": None, "exits": None, "withheld": hid}
        for (_, camera, line), hid in zip(present, line_withheld, strict=True)
    ]
    withheld: list[str] = []
    for part, prefix in (("entries", "towards"), ("exits", "away")):
        values = [int(counts[f"{prefix}:{i}"]) for i, _, _ in present]
        total = int(counts[part])
        total_hidden, hidden = withhold_parts(total, values, k)
        if total_hidden:
            withheld.append(part)
        else:
            bucket[part] = total
        for row, hid, value, hide in zip(rows, line_withheld, values, hidden, strict=True):
            if hide:
                hid.append(part)
            else:
                row[part] = value
    bucket["withheld"], bucket["lines"] = withheld, rows
    means = [
        counts[f"occupancy_sum:{j}"] / counts[f"samples:{j}"] for j in range(len(cameras)) if counts.get(f"samples:{j}")
    ]
    if means:
        mean = round(sum(means), 3)
        if mean < k:
            withheld.append("occupancy_mean")
        else:
            bucket["occupancy_mean"] = mean
    return bucket


def zone_peak_withheld(counts: Mapping[str, float], k: int) -> list[str]:
    """The means of a published zone peak to withhold: ``entries_mean`` (``exits_mean``) when the slot's entries
    (exits), summed over its days, are under ``k`` people.

    ``counts``: the slot's ``entries``, ``exits`` and ``days`` (:func:`zone_weekday_peaks`). The slot is
    published when its crossings reach k (:data:`ZONE_PEAK_HOUR`), but a mean times the weekday's ``days``
    (shown beside it) gives its sum back, so each direction must reach k on its own: the k rule's primary
    suppression (as :func:`server.analytics.privacy.withhold_parts` for a group of one part; the crossings
    themselves are not shown, so nothing is recovered by subtraction).
    """
    return [f"{part}_mean" for part in ("entries", "exits") if int(counts[part]) < k]


def _busiest(slots: Mapping[int, Counts]) -> int:
    """The hour with the most entries per day; the earlier on a tie."""
    return max(slots, key=lambda h: (slots[h]["entries"] / slots[h]["days"], -h))


def zone_weekday_peaks(
    window: Window, hours: Mapping[int, tuple[float, float]], k: int
) -> list[tuple[Weekday, int | None, Cell, int]]:
    """Each weekday's busiest local hour of a zone among the hours that rest on at least ``k`` people.

    ``hours``: hourly (entries, exits) by bucket start (ns) over ``window``.
    Per (local date, hour) first (the repeated hour of the autumn change
    summed), then per (weekday, hour) over the dates that have it: counts
    ``entries``, ``exits`` and ``days``; the busiest is the highest mean
    entries per day among the slots :func:`~server.analytics.privacy.publishable`
    under :data:`ZONE_PEAK_HOUR` (the earlier hour on a tie), so no hour under
    k is ever named. Returns per weekday (Monday first): its name, the hour
    (None when no slot is publishable), the cell to publish (the best slot's;
    with no publishable slot, the busiest one, which the rule then suppresses;
    no counts without data) and the weekday's dates with data.
    """
    entries = _local_day_hours({at: n for at, (n, _) in hours.items()}, window.tz, combine="sum")
    exits = _local_day_hours({at: x for at, (_, x) in hours.items()}, window.tz, combine="sum")
    out: list[tuple[Weekday, int | None, Cell, int]] = []
    for wd, name in enumerate(WEEKDAYS):
        keys = [key for key in entries if key[0].weekday() == wd]
        slots: dict[int, Counts] = {}
        for day, hour in keys:
            acc = slots.setdefault(hour, {"entries": 0.0, "exits": 0.0, "days": 0.0})
            acc["entries"] += entries[(day, hour)]
            acc["exits"] += exits.get((day, hour), 0.0)
            acc["days"] += 1.0
        days = len({day for day, _ in keys})
        if not slots:
            out.append((name, None, Cell(window.start, window.end, None, name), days))
            continue
        shown = {h: c for h, c in slots.items() if publishable(c, ZONE_PEAK_HOUR, k)}
        best = _busiest(shown or slots)
        out.append((name, best if shown else None, Cell(window.start, window.end, slots[best], name), days))
    return out
