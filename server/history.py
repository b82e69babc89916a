"""History queries: per-bucket numbers of a lot, zone or locker bank, from the rollups wherever they reach.

The rollups (:mod:`contracts.history`, built by the continuous queries the
gateway sets up) hold, per 5 minutes and per hour, sums, counts, minima and
maxima: these combine exactly into any coarser bucket. A request is answered
in three steps (:func:`read_buckets`):

1. **Window** (:func:`resolve_window`): ``from``/``to`` in the site's time
   zone, widened to whole buckets: 5 minutes, local hours, or local days
   (midnight to midnight: 23 or 25 hours on a DST change day).
2. **Source** (:func:`rollup_for`): the coarsest rollup whose buckets fit the
   requested ones: hourly for ``1h`` and ``1d`` (local hours are whole UTC
   hours in every zone whose offsets are whole hours), else 5-minute.
3. **Seam**: the rollup answers up to the end of its newest bucket in the
   window; the raw points (the lot and bank snapshots, the footfall
   intervals) answer the rest, which the continuous query has not covered
   yet. Both are grouped by the same local buckets (``GROUP BY time(...)
   tz('<zone>')``, InfluxDB 1.x) and their partial sums, counts, minima and
   maxima merged.

The query text is built by pure functions (unit-tested); the reads go
through :class:`server.influx.InfluxClient` and raise
:class:`common.influxdb.InfluxError` when InfluxDB fails.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.influxdb import InfluxError, quote_ident, quote_str
from contracts import history
from contracts.history import Aggregate, Rollup, RollupSpec
from contracts.storage import from_ns, to_ns
from server.influx import InfluxClient

log = logging.getLogger(__name__)

Every = Literal["5m", "1h", "1d"]
EVERY_S: dict[str, int] = {"5m": 300, "1h": 3600, "1d": 86_400}
#: The longest window per bucket size: a month of 5-minute buckets, a year of hours, two years of days.
MAX_SPAN: dict[str, timedelta] = {"5m": timedelta(days=31), "1h": timedelta(days=366), "1d": timedelta(days=731)}
#: The window when ``from`` is not given: a day of 5-minute buckets, a week of hours, 30 days.
DEFAULT_SPAN: dict[str, timedelta] = {"5m": timedelta(days=1), "1h": timedelta(days=7), "1d": timedelta(days=30)}
#: Peaks: default and longest window.
PEAKS_DEFAULT_SPAN = timedelta(days=28)
PEAKS_MAX_SPAN = timedelta(days=366)
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: The name of the raw source in :attr:`Buckets.sources`.
RAW = "raw"


class HistoryRequestError(ValueError):
    """A request the API answers with 422: ``code`` (stable), ``param`` (the query parameter), ``message``."""

    def __init__(self, code: str, param: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.param = param
        self.message = message


def site_zone(name: str) -> ZoneInfo:
    """The site's time zone; UTC (logged) when the name is not a known IANA zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("site time zone %r is unknown; history answers in UTC", name)
        return ZoneInfo("UTC")


# -- the window ---------------------------------------------------------------------------------


_PLUS_AS_SPACE = re.compile(r"(?<=\d) (\d\d:?\d\d)$")


def parse_time(text: str, tz: tzinfo, param: str) -> datetime:
    """``YYYY-MM-DD`` (local midnight in ``tz``) or an RFC 3339 date-time with an offset; 422 otherwise.

    A ``+`` left unencoded in a URL arrives as a space: ``...T10:00:00 01:00`` is read as ``+01:00``.
    """
    text = _PLUS_AS_SPACE.sub(r"+\1", text.strip())
    try:
        if len(text) == 10:
            return local_midnight(date.fromisoformat(text), tz)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise HistoryRequestError(
            "bad_time", param, f"{param} must be a date (YYYY-MM-DD, local midnight) or an RFC 3339 date-time"
        ) from None
    if value.tzinfo is None:
        raise HistoryRequestError(
            "time_without_offset", param, f"{param} needs a UTC offset (Z or +01:00): local times can be ambiguous"
        )
    return value


def local_midnight(day: date, tz: tzinfo) -> datetime:
    """The start of a local day, in UTC."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


# Bucket arithmetic runs in UTC: Python compares and subtracts two datetimes of the *same* zone by their
# wall clocks, which is wrong across a DST change (02:00 CEST and 02:00 CET compare equal).


def floor_bucket(at: datetime, every: Every, tz: tzinfo) -> datetime:
    """The start (UTC) of the local bucket holding ``at``."""
    local = at.astimezone(tz)
    if every == "1d":
        return local_midnight(local.date(), tz)
    if every == "1h":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    step = EVERY_S[every]
    return datetime.fromtimestamp(int(at.timestamp()) // step * step, UTC)


def next_bucket(start: datetime, every: Every, tz: tzinfo) -> datetime:
    """The start (UTC) of the bucket after the one starting at ``start`` (a local day may be 23 or 25 hours)."""
    if every == "1d":
        return local_midnight(start.astimezone(tz).date() + timedelta(days=1), tz)
    return start.astimezone(UTC) + timedelta(seconds=EVERY_S[every])


def ceil_bucket(at: datetime, every: Every, tz: tzinfo) -> datetime:
    start = floor_bucket(at, every, tz)
    return start if start == at.astimezone(UTC) else next_bucket(start, every, tz)


@dataclass(frozen=True, slots=True)
class Window:
    """Whole local buckets from ``start`` (inclusive) to ``end`` (exclusive), both UTC."""

    start: datetime
    end: datetime
    every: Every
    tz: ZoneInfo

    @property
    def start_ns(self) -> int:
        return to_ns(self.start)

    @property
    def end_ns(self) -> int:
        return to_ns(self.end)

    def local(self, at: datetime) -> datetime:
        return at.astimezone(self.tz)

    def buckets(self) -> list[tuple[datetime, datetime]]:
        """(start, end) of every bucket, UTC (:meth:`local` shows them in the site's zone)."""
        out = []
        at = self.start
        while at < self.end:
            nxt = next_bucket(at, self.every, self.tz)
            out.append((at, nxt))
            at = nxt
        return out


def resolve_window(
    frm: str | None,
    to: str | None,
    every: Every,
    tz: ZoneInfo,
    now: datetime,
    *,
    default_span: timedelta | None = None,
    max_span: timedelta | None = None,
) -> Window:
    """The buckets a request asks for; :class:`HistoryRequestError` for a bad or too long span.

    ``to`` defaults to ``now``, ``from`` to ``to`` minus ``default_span``
    (:data:`DEFAULT_SPAN` of ``every``); both are widened to whole buckets,
    which may span at most ``max_span`` (:data:`MAX_SPAN` of ``every``).
    """
    end_at = (parse_time(to, tz, "to") if to else now).astimezone(UTC)
    start_at = parse_time(frm, tz, "from").astimezone(UTC) if frm else end_at - (default_span or DEFAULT_SPAN[every])
    if start_at >= end_at:
        raise HistoryRequestError("empty_range", "from", "from must be before to")
    limit = max_span or MAX_SPAN[every]
    if end_at - start_at > limit + timedelta(days=1):  # a day's slack for DST and bucket widening
        raise HistoryRequestError(
            "span_too_long", "from", f"at most {limit.days} days with every={every}: ask for a coarser every"
        )
    window = Window(floor_bucket(start_at, every, tz), ceil_bucket(end_at, every, tz), every, tz)
    if window.end - window.start > limit + timedelta(days=1):
        raise HistoryRequestError(
            "span_too_long", "from", f"at most {limit.days} days with every={every}: ask for a coarser every"
        )
    return window


def rollup_for(window: Window) -> Rollup:
    """The coarsest rollup whose buckets tile the window's buckets.

    Hourly rollups serve ``1h`` and ``1d`` when every bucket boundary lies on
    a whole UTC hour (zones whose offsets are whole hours); otherwise, and for
    ``5m``, the 5-minute rollups serve.
    """
    if window.every == "5m":
        return history.ROLLUP_5M
    boundaries = [start for start, _ in window.buckets()] + [window.end]
    if all(int(b.timestamp()) % history.ROLLUP_1H.seconds == 0 for b in boundaries):
        return history.ROLLUP_1H
    return history.ROLLUP_5M


# -- query text ----------------------------------------------------------------------------------


def _where(tags: Mapping[str, str], start_ns: int, end_ns: int) -> str:
    conditions = [f"{quote_ident(k)} = {quote_str(v)}" for k, v in tags.items()]
    conditions += [f"time >= {start_ns}", f"time < {end_ns}"]
    return " AND ".join(conditions)


def source_ref(db: str, rollup: Rollup | None, measurement: str) -> str:
    """The rollup's ``"db"."rp"."measurement"``, or the raw measurement (the database's default policy)."""
    if rollup is None:
        return quote_ident(measurement)
    return f"{quote_ident(db)}.{quote_ident(rollup.rp)}.{quote_ident(measurement)}"


def select_fields(spec: RollupSpec, rollup: Rollup | None) -> str:
    """The aggregates of ``spec``: over raw points as the rollups compute them, or combining rollup buckets."""
    if rollup is None:
        return ", ".join(f"{a.func}({quote_ident(a.field)}) AS {quote_ident(a.alias)}" for a in spec.aggregates)
    return ", ".join(f"{a.again}({quote_ident(a.alias)}) AS {quote_ident(a.alias)}" for a in spec.aggregates)


def bucket_query(
    spec: RollupSpec,
    *,
    db: str,
    rollup: Rollup | None,
    tags: Mapping[str, str],
    start_ns: int,
    end_ns: int,
    every: Every,
    tz: str,
    group_by: Sequence[str] = (),
) -> str:
    """Per-bucket aggregates of ``spec`` from a rollup (or raw, ``rollup=None``) over [start, end), local buckets."""
    groups = "".join(f", {quote_ident(t)}" for t in group_by)
    return (
        f"SELECT {select_fields(spec, rollup)} FROM {source_ref(db, rollup, spec.measurement)}"
        f" WHERE {_where(tags, start_ns, end_ns)}"
        f" GROUP BY time({every}){groups} fill(none) tz({quote_str(tz)})"
    )


def points_query(
    spec: RollupSpec,
    *,
    db: str,
    rollup: Rollup,
    tags: Mapping[str, str],
    start_ns: int,
    end_ns: int,
    group_by: Sequence[str] = (),
) -> str:
    """The rollup's points as stored, for buckets the size of the rollup's own (nothing to combine in InfluxDB).

    Each point's time is its bucket's start; points of several series in one
    bucket (a tag neither filtered nor grouped by) are merged by :func:`fold_series`.
    """
    fields = ", ".join(quote_ident(a) for a in spec.aliases)
    groups = f" GROUP BY {', '.join(quote_ident(t) for t in group_by)}" if group_by else ""
    return (
        f"SELECT {fields} FROM {source_ref(db, rollup, spec.measurement)}"
        f" WHERE {_where(tags, start_ns, end_ns)}{groups}"
    )


def newest_bucket_query(
    spec: RollupSpec, *, db: str, rollup: Rollup, tags: Mapping[str, str], start_ns: int, end_ns: int
) -> str:
    """The time of the rollup's newest bucket in [start, end) for ``tags`` (no row: none)."""
    alias = quote_ident(spec.aliases[0])
    return (
        f"SELECT last({alias}) FROM {source_ref(db, rollup, spec.measurement)} WHERE {_where(tags, start_ns, end_ns)}"
    )


# -- reading and merging -------------------------------------------------------------------------

#: Aggregates of one bucket: alias -> value.
Values = dict[str, float | int | None]
#: Group key (the ``group_by`` tag values) -> bucket start (ns) -> values.
Grouped = dict[tuple[str, ...], dict[int, Values]]


def merge_values(aggregates: Iterable[Aggregate], into: Values, more: Mapping[str, Any]) -> None:
    """Fold one partial bucket (``more``) into ``into``: sums and counts add, minima and maxima stay extreme."""
    for agg in aggregates:
        value = more.get(agg.alias)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        held = into.get(agg.alias)
        if held is None:
            into[agg.alias] = value
        elif agg.again == "sum":
            into[agg.alias] = held + value
        elif agg.again == "min":
            into[agg.alias] = min(held, value)
        else:
            into[agg.alias] = max(held, value)


def fold_series(spec: RollupSpec, series: Iterable[Mapping[str, Any]], group_by: Sequence[str], into: Grouped) -> None:
    """Merge InfluxDB's series (``epoch=ns``) into ``into`` by group and bucket."""
    for s in series:
        tags = s.get("tags") or {}
        key = tuple(str(tags.get(t) or "") for t in group_by)
        columns = s.get("columns") or []
        for values in s.get("values") or []:
            row = dict(zip(columns, values, strict=False))
            at = row.get("time")
            if isinstance(at, int):
                merge_values(spec.aggregates, into.setdefault(key, {}).setdefault(at, {}), row)


@dataclass(slots=True)
class Buckets:
    """What :func:`read_buckets` found: values by group and bucket, and the sources read (coarsest first)."""

    groups: Grouped = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def of(self, key: tuple[str, ...] = ()) -> dict[int, Values]:
        return self.groups.get(key, {})


async def read_buckets(
    client: InfluxClient,
    spec: RollupSpec,
    window: Window,
    tags: Mapping[str, str],
    *,
    group_by: Sequence[str] = (),
) -> Buckets:
    """Aggregates of ``spec`` per local bucket of ``window``: from the rollup up to its newest bucket, raw after.

    The newest rollup bucket is looked up for ``tags`` as a whole (not per
    group): a group silent in that bucket reads raw only for what follows it.
    A database without the rollup policies (the gateway has not set them up)
    is read raw. Raises :class:`common.influxdb.InfluxError`.
    """
    rollup = rollup_for(window)
    tz = window.tz.key
    found = Buckets()
    start, end = window.start_ns, window.end_ns
    seam = start
    try:
        newest = await client.query(
            newest_bucket_query(spec, db=client.db, rollup=rollup, tags=tags, start_ns=start, end_ns=end)
        )
    except InfluxError as exc:
        if "retention policy not found" not in str(exc):
            raise
        newest = []  # no rollups on this database (yet): the gateway sets them up; raw answers meanwhile
    times = [v[0] for s in newest for v in s.get("values") or [] if v and isinstance(v[0], int)]
    if times:
        seam = min(max(times) + rollup.seconds * 1_000_000_000, end)
        if rollup.seconds == EVERY_S[window.every]:  # the rollup's buckets are the answer's: read them as stored
            q = points_query(
                spec, db=client.db, rollup=rollup, tags=tags, start_ns=start, end_ns=seam, group_by=group_by
            )
        else:
            q = bucket_query(
                spec, db=client.db, rollup=rollup, tags=tags, start_ns=start, end_ns=seam, every=window.every, tz=tz,
                group_by=group_by,
            )  # fmt: skip
        fold_series(spec, await client.query(q), group_by, found.groups)
        found.sources.append(rollup.rp)
    if seam < end:
        q = bucket_query(
            spec, db=client.db, rollup=None, tags=tags, start_ns=seam, end_ns=end, every=window.every, tz=tz,
            group_by=group_by,
        )  # fmt: skip
        fold_series(spec, await client.query(q), group_by, found.groups)
        found.sources.append(RAW)
    return found


# -- numbers the API shows -----------------------------------------------------------------------


def mean(values: Mapping[str, Any], total: str, count: str) -> float | None:
    """``values[total] / values[count]``, rounded to 3 decimals; None without a count."""
    n = values.get(count)
    s = values.get(total)
    if not isinstance(n, int | float) or not n or not isinstance(s, int | float):
        return None
    return round(s / n, 3)


def stat(values: Mapping[str, Any], name: str) -> tuple[float | None, int | None, int | None]:
    """(mean, min, max) of a snapshot field (``<name>_sum``/``_min``/``_max`` over ``samples``)."""

    def whole(v: Any) -> int | None:
        return int(v) if isinstance(v, int | float) else None

    return (
        mean(values, f"{name}_sum", history.SAMPLES),
        whole(values.get(f"{name}_min")),
        whole(values.get(f"{name}_max")),
    )


def as_int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def local_hour_keys(start_ns: int, tz: ZoneInfo) -> tuple[date, int]:
    """(local date, local hour) of a bucket start: the key peaks group hours by."""
    local = from_ns(start_ns).astimezone(tz)
    return local.date(), local.hour


@dataclass(frozen=True, slots=True)
class Peak:
    """The busiest local hour of one weekday: its ``hour``, the mean ``measure`` and ``other``, over ``days``."""

    weekday: Weekday
    hour: int | None
    measure: float | None
    other: float | None
    days: int


def weekday_peaks(
    hours: Mapping[int, tuple[float, float]], tz: ZoneInfo, *, combine: Literal["sum", "mean"]
) -> list[Peak]:
    """Each weekday's busiest local hour from hourly values (bucket start ns -> (measure, other)).

    Hours are first gathered per local date and hour (``combine``: on the day
    clocks go back, the repeated hour's two buckets are summed, e.g. entries,
    or averaged, e.g. occupied bays); then each (weekday, hour) is averaged
    over the dates that have it, and the hour with the largest mean measure
    wins (the earlier hour on a tie).
    """
    per_day: dict[tuple[date, int], list[tuple[float, float]]] = defaultdict(list)
    for at, pair in hours.items():
        per_day[local_hour_keys(at, tz)].append(pair)
    by_slot: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    days: dict[int, set[date]] = defaultdict(set)
    for (day, hour), pairs in per_day.items():
        if combine == "sum":
            value = (sum(p[0] for p in pairs), sum(p[1] for p in pairs))
        else:
            value = (sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs))
        by_slot[(day.weekday(), hour)].append(value)
        days[day.weekday()].add(day)
    peaks = []
    for wd, name in enumerate(WEEKDAYS):
        best: tuple[int, float, float] | None = None
        for hour in range(24):
            values = by_slot.get((wd, hour))
            if not values:
                continue
            m = sum(v[0] for v in values) / len(values)
            o = sum(v[1] for v in values) / len(values)
            if best is None or m > best[1]:
                best = (hour, m, o)
        if best is None:
            peaks.append(Peak(name, None, None, None, len(days.get(wd, ()))))
        else:
            peaks.append(Peak(name, best[0], round(best[1], 3), round(best[2], 3), len(days[wd])))
    return peaks
