"""Footfall analytics for operators: peaks, change, capture rate, dwell time, flows, parking-to-footfall.

Every route needs an operator key (the access map's default for
``/v1/analytics``, and :data:`server.auth.OperatorDep`). Figures are computed
from aggregate counts only (:mod:`server.analytics.queries`), and every
published cell goes through the k rule (:mod:`server.analytics.privacy`):
each carries its interval, its counts and its state (``ok``, ``coarsened``,
``suppressed``, ``nodata``). Errors as for history: a bad span is a 422 in
FastAPI's validation shape (``detail[0].type``: ``bad_time``,
``time_without_offset``, ``empty_range``, ``span_too_long``), an unknown id
or a figure the site does not configure a 404, InfluxDB down or failing a 503.
Method and assumptions of each figure: ``docs/analytics.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query

from common.influxdb import InfluxError
from contracts.site import SiteConfig
from contracts.storage import to_ns
from server import history
from server.analytics import figures, maths, queries
from server.analytics import models as m
from server.analytics.privacy import Cell, Rule, publish, publish_cell
from server.auth import OperatorDep
from server.deps import LiveDep, no_store
from server.errors import NotFound
from server.history import Window
from server.routes.history import (
    HISTORY_ERRORS,
    FromQuery,
    HistoryDbDep,
    HistoryUnavailable,
    LotId,
    ToQuery,
    ZoneId,
    query_window,
    window_out,
)

router = APIRouter(tags=["analytics"], dependencies=[Depends(no_store)])

T = TypeVar("T")
AnalyticsEvery = Literal["1h", "1d"]
EveryQuery = Annotated[AnalyticsEvery, Query(description="Bucket size: a local hour or a local day.")]
AreaId = Annotated[str, Path(description="Area id, as listed by /v1/analytics.", max_length=64)]

#: Peaks and change: default and longest window (days of hourly rollups).
PROFILE_DEFAULT_SPAN = timedelta(days=28)
PROFILE_MAX_SPAN = timedelta(days=366)
#: Dwell time and parking-to-footfall read 5-minute buckets: at most a month.
FINE_DEFAULT_SPAN = timedelta(days=7)
FINE_MAX_SPAN = timedelta(days=31)
#: Year-on-year compares with the same weekdays 52 weeks back (the retail convention), not the same dates.
YEAR_DAYS = 364

_CELLS = (
    " Every figure is a cell with its interval, the counts it stands on and a `state`: fewer than k people"
    " (site `analytics.k`, default 10) and it is `coarsened` (merged into a wider interval) or `suppressed`"
    " (value and counts null, never 0)."
)
_SPAN_NOTE = (
    " `from`/`to`: a date (local midnight) or an RFC 3339 date-time with offset, widened to whole buckets;"
    " a bad span is a 422 whose `detail[0].type` is `bad_time`, `time_without_offset`, `empty_range` or"
    " `span_too_long`."
)


class NotConfigured(NotFound):
    """The site configures no such figure (a zone without a street line): 404 ``not_configured``."""

    error = "not_configured"


async def _read(call: Awaitable[T]) -> T:
    try:
        return await call
    except InfluxError as exc:
        raise HistoryUnavailable(f"InfluxDB failed the analytics query: {exc}") from None


def _privacy(site: SiteConfig) -> m.Privacy:
    return m.Privacy(k=site.analytics.k)


def _zone(site: SiteConfig, zone_id: str) -> Any:
    zone = site.zone(zone_id)
    if zone is None:
        raise NotFound(f"no zone {zone_id!r} in site {site.site.id!r}")
    return zone


def _lot(site: SiteConfig, lot_id: str) -> Any:
    lot = site.lot(lot_id)
    if lot is None:
        raise NotFound(f"no parking lot {lot_id!r} in site {site.site.id!r}")
    return lot


def _days_window(live: LiveDep, frm: str | None, to: str | None, default: timedelta, longest: timedelta) -> Window:
    return query_window(live, frm, to, "1d", default_span=default, max_span=longest)


@router.get(
    "/v1/analytics",
    summary="What the site's analytics cover",
    description="The zones (with their street line, if any), lots, zone boundary lines and areas analytics can be"
    " asked about, and the k of the privacy threshold.",
    response_model=m.AnalyticsIndex,
    responses={k: v for k, v in HISTORY_ERRORS.items() if k in (401, 403)},
)
async def analytics_index(_: OperatorDep, live: LiveDep) -> m.AnalyticsIndex:
    site = live.site
    return m.AnalyticsIndex(
        privacy=_privacy(site),
        timezone=history.site_zone(site.site.timezone).key,
        zones=[
            m.ZoneOut(id=z.id, name=z.name, street_line=z.street_line.model_dump() if z.street_line else None)
            for z in site.zones
        ],
        lots=[m.LotOut(id=p.id, name=p.name) for p in site.parking],
        boundaries=[
            m.BoundaryOut(from_zone=a, to_zone=b, lines=[f"{c}/{ln}" for c, ln in lines])
            for (a, b), lines in sorted(site.boundaries.items())
        ],
        areas=[m.AreaOut(id=a.id, name=a.name, lots=a.lots, zones=a.zones) for a in site.analytics_areas()],
    )


# -- peaks -----------------------------------------------------------------------------------------


@router.get(
    "/v1/analytics/zones/{zone_id}/peaks",
    summary="Peak hour and peak day of a zone's footfall",
    description="Mean entries per day in each local hour of the day and on each weekday, over the days with data"
    " in the window (default the last 28 days, at most 366), from the hourly rollups; the peak hour and day are"
    f" the published cells with the highest mean.{_CELLS}{_SPAN_NOTE}",
    response_model=m.ZonePeakProfile,
    responses=HISTORY_ERRORS,
)
async def zone_peaks(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, zone_id: ZoneId, frm: FromQuery = None, to: ToQuery = None
) -> m.ZonePeakProfile:
    site = live.site
    zone = _zone(site, zone_id)
    days = _days_window(live, frm, to, PROFILE_DEFAULT_SPAN, PROFILE_MAX_SPAN)
    hours = Window(days.start, days.end, "1h", days.tz)
    counts = await _read(queries.zone_counts(db, site, zone_id, hours))
    hour_cells, day_cells = figures.zone_profile_cells(hours, {at: n for at, (n, _) in counts.values.items()})
    k = site.analytics.k
    h = publish(hour_cells, figures.ENTRIES_PER_DAY, k, coarsen=False, local=days.local)
    d = publish(day_cells, figures.ENTRIES_PER_DAY, k, coarsen=False, local=days.local)
    return m.ZonePeakProfile(
        zone_id=zone.id, name=zone.name, window=window_out(days, counts.sources), privacy=_privacy(site),
        unit="entries per day", hours=h, days=d, peak_hour=figures.peak_label(h), peak_day=figures.peak_label(d),
    )  # fmt: skip


@router.get(
    "/v1/analytics/lots/{lot_id}/peaks",
    summary="Peak hour and peak day of a lot's occupancy",
    description="Mean occupied bays in each local hour of the day and on each weekday over the window (default the"
    " last 28 days, at most 366), from the hourly rollups of the lot snapshots; a cell rests on the most vehicles"
    f" parked at once in it.{_CELLS}{_SPAN_NOTE}",
    response_model=m.LotPeakProfile,
    responses=HISTORY_ERRORS,
)
async def lot_peaks(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, lot_id: LotId, frm: FromQuery = None, to: ToQuery = None
) -> m.LotPeakProfile:
    site = live.site
    lot = _lot(site, lot_id)
    days = _days_window(live, frm, to, PROFILE_DEFAULT_SPAN, PROFILE_MAX_SPAN)
    hours = Window(days.start, days.end, "1h", days.tz)
    occupied = await _read(queries.lot_occupied(db, site.site.id, lot_id, hours))
    hour_cells, day_cells = figures.lot_profile_cells(hours, occupied.values)
    k = site.analytics.k
    h = publish(hour_cells, figures.OCCUPIED_MEAN, k, coarsen=False, local=days.local)
    d = publish(day_cells, figures.OCCUPIED_MEAN, k, coarsen=False, local=days.local)
    return m.LotPeakProfile(
        lot_id=lot.id, name=lot.name, total=lot.total, window=window_out(days, occupied.sources),
        privacy=_privacy(site), unit="occupied bays (mean)", hours=h, days=d, peak_hour=figures.peak_label(h),
        peak_day=figures.peak_label(d),
    )  # fmt: skip


# -- week-on-week and year-on-year -----------------------------------------------------------------


def _weeks(live: LiveDep, to: str | None) -> tuple[Window, Window, Window]:
    """The 7 local days ending at ``to`` (default: today's local midnight, so the last 7 complete days), the 7
    before, and those 364 days earlier.

    Counted in local dates, not in 24-hour steps: a week with a DST change is 167 or 169 hours. Not the end of
    today by default: a week holding today's first hours against a whole week reads as a fall that is not there
    (a fresh-user trial saw -12.4 % for +0.8 %).
    """
    end = _days_window(live, None, to, timedelta(days=1), timedelta(days=1))
    tz = end.tz
    last = end.end.astimezone(tz).date()
    if to is None:
        last -= timedelta(days=1)  # the default window ends at the end of today

    def week(back: int) -> Window:
        return Window(
            history.local_midnight(last - timedelta(days=back + 7), tz),
            history.local_midnight(last - timedelta(days=back), tz), "1d", tz,
        )  # fmt: skip

    return week(0), week(7), week(YEAR_DAYS)


_CHANGE = (
    " `to`: the end of the current week (a date: local midnight, or a date-time, widened to the end of its day;"
    " default: today's local midnight, so the last 7 complete days); the week is the 7 local days before it."
    " Week-on-week: against the 7 days before; year-on-year: against the same weekdays 52 weeks (364 days)"
    " earlier."
)


def _change_cells(
    windows: tuple[Window, Window, Window], totals: list[dict[str, float] | None], value: str, people: str
) -> tuple[list[Cell], list[Cell]]:
    labels = ("current", "previous_week", "previous_year")
    periods = [Cell(w.start, w.end, t, label) for w, t, label in zip(windows, totals, labels, strict=True)]
    changes = []
    cur = totals[0]
    for w, t, label in ((windows[1], totals[1], "week_on_week"), (windows[2], totals[2], "year_on_year")):
        if cur is None or t is None:
            changes.append(Cell(w.start, windows[0].end, None, label))
            continue
        counts = {"current": cur[value], "previous": t[value], "people": min(cur[people], t[people])}
        changes.append(Cell(w.start, windows[0].end, counts, label))
    return periods, changes


@router.get(
    "/v1/analytics/zones/{zone_id}/change",
    summary="A zone's footfall week-on-week and year-on-year",
    description=f"Entries into the zone in the current week against the week before and the same week a year"
    f" earlier, in percent.{_CHANGE}{_CELLS}",
    response_model=m.Change,
    responses=HISTORY_ERRORS,
)
async def zone_change(_: OperatorDep, live: LiveDep, db: HistoryDbDep, zone_id: ZoneId, to: ToQuery = None) -> m.Change:
    site = live.site
    zone = _zone(site, zone_id)
    windows = _weeks(live, to)
    totals: list[dict[str, float] | None] = []
    for w in windows:
        counts = await _read(queries.zone_counts(db, site, zone_id, w))
        totals.append({"entries": sum(n for n, _ in counts.values.values())} if counts.values else None)
    periods, changes = _change_cells(windows, totals, "entries", "entries")
    k = site.analytics.k
    cur = windows[0]
    return m.Change(
        id=zone.id, name=zone.name, measure="entries", privacy=_privacy(site), timezone=cur.tz.key,
        periods=[publish_cell(c, figures.ENTRIES, k, local=cur.local) for c in periods],
        changes=[publish_cell(c, figures.PERCENT_CHANGE, k, local=cur.local) for c in changes],
    )  # fmt: skip


@router.get(
    "/v1/analytics/lots/{lot_id}/change",
    summary="A lot's occupancy week-on-week and year-on-year",
    description="Mean occupied bays in the current week against the week before and the same week a year earlier,"
    f" in percent; each rests on the most vehicles parked at once.{_CHANGE}{_CELLS}",
    response_model=m.Change,
    responses=HISTORY_ERRORS,
)
async def lot_change(_: OperatorDep, live: LiveDep, db: HistoryDbDep, lot_id: LotId, to: ToQuery = None) -> m.Change:
    site = live.site
    lot = _lot(site, lot_id)
    windows = _weeks(live, to)
    totals: list[dict[str, float] | None] = []
    for w in windows:
        occ = await _read(queries.lot_occupied(db, site.site.id, lot_id, w))
        if not occ.values:
            totals.append(None)
            continue
        means = [mean for mean, _ in occ.values.values()]
        totals.append(
            {"occupied_mean": round(sum(means) / len(means), 3), "vehicles_max": max(x for _, x in occ.values.values())}
        )
    periods, changes = _change_cells(windows, totals, "occupied_mean", "vehicles_max")
    k = site.analytics.k
    cur = windows[0]
    return m.Change(
        id=lot.id, name=lot.name, measure="occupied_mean", privacy=_privacy(site), timezone=cur.tz.key,
        periods=[publish_cell(c, figures.PERIOD_OCCUPIED, k, local=cur.local) for c in periods],
        changes=[publish_cell(c, figures.PERCENT_CHANGE, k, local=cur.local) for c in changes],
    )  # fmt: skip


# -- capture rate ----------------------------------------------------------------------------------


@router.get(
    "/v1/analytics/zones/{zone_id}/capture-rate",
    summary="A zone's capture rate: entries as a share of the passers-by on its street line",
    description="Per bucket and over the window: entries into the zone (all its doors) divided by the people"
    " crossing its configured `street_line` in either direction (the retail-footfall definition). 404"
    f" `not_configured` for a zone without a street line. Default window: 30 days of 1d, 7 of 1h.{_CELLS}"
    f"{_SPAN_NOTE}",
    response_model=m.CaptureRate,
    responses=HISTORY_ERRORS,
)
async def capture_rate(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, zone_id: ZoneId, every: EveryQuery = "1d",
    frm: FromQuery = None, to: ToQuery = None,
) -> m.CaptureRate:  # fmt: skip
    site = live.site
    zone = _zone(site, zone_id)
    if zone.street_line is None:
        raise NotConfigured(f"zone {zone_id!r} has no street_line in the site configuration: no capture rate")
    window = query_window(live, frm, to, every)
    entries = await _read(queries.zone_counts(db, site, zone_id, window))
    street = await _read(queries.line_counts(db, site.site.id, zone.street_line.camera, zone.street_line.line, window))
    cells = figures.capture_cells(window, entries.values, street.values)
    k = site.analytics.k
    return m.CaptureRate(
        zone_id=zone.id, name=zone.name, street_line=zone.street_line.model_dump(),
        window=window_out(window, entries.sources, street.sources), privacy=_privacy(site),
        unit="share (entries / passers-by)",
        buckets=publish(cells, figures.CAPTURE_RATE, k, coarsen=True, local=window.local),
        total=publish_cell(figures.total_cell(window, cells), figures.CAPTURE_RATE, k, local=window.local),
    )  # fmt: skip


# -- dwell time ------------------------------------------------------------------------------------

DWELL_ASSUMPTIONS = [
    "Little's law over the interval (Little 1961): W = L / λ, L the mean occupancy, λ the entry rate.",
    "Occupancy is the cumulative entries minus exits from the start of the window, taken as empty then.",
    "Closed zone: every door of the zone is a counted line (entries and exits are all the ways in and out).",
    "Steady state: as many people in the zone at the end of a bucket as at its start; a day that starts and"
    " ends empty gives the exact mean, an hour in the morning rush overstates or understates it.",
]


@router.get(
    "/v1/analytics/zones/{zone_id}/dwell-time",
    summary="A zone's mean dwell time, by Little's law",
    description="Per bucket and over the window: person-seconds in the zone (occupancy = cumulative entries minus"
    " exits from an empty zone at the window's start, integrated over 5-minute buckets) divided by the entries,"
    " W = L / λ (Little 1961). Assumptions in the answer. Rests on the fewer of entries and exits. Default"
    f" window 7 days, at most 31 (5-minute rollups).{_CELLS}{_SPAN_NOTE}",
    response_model=m.DwellTime,
    responses=HISTORY_ERRORS,
)
async def dwell_time(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, zone_id: ZoneId, every: EveryQuery = "1d",
    frm: FromQuery = None, to: ToQuery = None,
) -> m.DwellTime:  # fmt: skip
    site = live.site
    zone = _zone(site, zone_id)
    window = query_window(live, frm, to, every, default_span=FINE_DEFAULT_SPAN, max_span=FINE_MAX_SPAN)
    fine = Window(window.start, window.end, "5m", window.tz)
    counts = await _read(queries.zone_counts(db, site, zone_id, fine))
    cells, _left = figures.dwell_cells(window, fine, counts.values)
    k = site.analytics.k
    return m.DwellTime(
        zone_id=zone.id, name=zone.name, window=window_out(window, counts.sources), privacy=_privacy(site),
        unit="seconds", assumptions=DWELL_ASSUMPTIONS,
        buckets=publish(cells, figures.DWELL_TIME, k, coarsen=True, local=window.local),
        total=publish_cell(figures.total_cell(window, cells), figures.DWELL_TIME, k, local=window.local),
    )  # fmt: skip


# -- zone-to-zone flows ----------------------------------------------------------------------------


@router.get(
    "/v1/analytics/flows",
    summary="People moving between neighbouring zones",
    description="For every pair of zones that share a counted line (a camera line with `from_zone`), the crossings"
    " each way per bucket and over the window: `towards` on a line is `from_zone` -> `zone`, `away` the reverse."
    f" Default window: 30 days of 1d, 7 of 1h.{_CELLS}{_SPAN_NOTE}",
    response_model=m.Flows,
    responses={k: v for k, v in HISTORY_ERRORS.items() if k != 404},
)
async def flows(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, every: EveryQuery = "1d", frm: FromQuery = None,
    to: ToQuery = None,
) -> m.Flows:  # fmt: skip
    site = live.site
    window = query_window(live, frm, to, every)
    k = site.analytics.k
    sources: list[str] = []
    directed: dict[tuple[str, str], tuple[list[str], dict[int, float]]] = {}
    for (a, b), lines in site.boundaries.items():
        for camera, line in lines:
            got = await _read(queries.line_counts(db, site.site.id, camera, line, window))
            sources += [s for s in got.sources if s not in sources]
            for pair, index in (((a, b), 0), ((b, a), 1)):
                names, per = directed.setdefault(pair, ([], {}))
                names.append(f"{camera}/{line}")
                for at, both in got.values.items():
                    per[at] = per.get(at, 0.0) + both[index]
    out = []
    for (a, b), (names, per) in sorted(directed.items()):
        cells = figures.flow_cells(window, per)
        out.append(
            m.Flow(
                from_zone=a, to_zone=b, lines=names,
                buckets=publish(cells, figures.CROSSINGS, k, coarsen=True, local=window.local),
                total=publish_cell(figures.total_cell(window, cells), figures.CROSSINGS, k, local=window.local),
            )
        )  # fmt: skip
    return m.Flows(window=window_out(window, sources), privacy=_privacy(site), unit="people (crossings)", flows=out)


# -- parking and footfall --------------------------------------------------------------------------


@router.get(
    "/v1/analytics/areas/{area_id}/parking-footfall",
    summary="Arrivals at an area's lots against entries into its zones, with the lag",
    description="Hourly arrivals at the area's lots (bays gone free -> occupied, counted by the gateway in its lot"
    " snapshots; for older snapshots without that count, the rises of occupied bays between 5-minute snapshots: a"
    " lower bound) against hourly entries into its zones; Pearson's r of arrivals at hour t with entries at t + lag for"
    " each lag 0..`max_lag_h`, and the best lag. Areas: the site's `analytics.areas`, else one per zone with the"
    f" lots that serve it. Default window 7 days, at most 31.{_CELLS}{_SPAN_NOTE}",
    response_model=m.ParkingFootfall,
    responses=HISTORY_ERRORS,
)
async def parking_footfall(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, area_id: AreaId, frm: FromQuery = None, to: ToQuery = None,
    max_lag_h: Annotated[int, Query(ge=0, le=24, description="Largest lag tried, in hours.")] = 6,
) -> m.ParkingFootfall:  # fmt: skip
    site = live.site
    area = site.area(area_id)
    if area is None:
        raise NotFound(f"no area {area_id!r} in site {site.site.id!r}")
    hours = query_window(live, frm, to, "1h", default_span=FINE_DEFAULT_SPAN, max_span=FINE_MAX_SPAN)
    fine = Window(hours.start, hours.end, "5m", hours.tz)
    sources: list[str] = []
    per_lot: list[dict[int, float]] = []
    methods: set[str] = set()
    for lot_id in area.lots:
        counted = await _read(queries.lot_arrivals(db, site.site.id, lot_id, hours))
        sources += [s for s in counted.sources if s not in sources]
        if counted.values:
            per_lot.append({at: n for at, (n, _) in counted.values.items()})
            methods.add("counted")
            continue
        occupied = await _read(queries.lot_occupied(db, site.site.id, lot_id, fine))
        sources += [s for s in occupied.sources if s not in sources]
        if occupied.values:
            per_lot.append(figures.net_rise_by_hour(hours, fine, occupied.values))
            methods.add("net_rise")
    arrivals = figures.hourly_sum(hours, per_lot)
    entries_at: dict[int, float] = {}
    for zone_id in area.zones:
        got = await _read(queries.zone_counts(db, site, zone_id, hours))
        sources += [s for s in got.sources if s not in sources]
        for at, (n, _x) in got.values.items():
            entries_at[at] = entries_at.get(at, 0.0) + n
    entries = [entries_at.get(to_ns(s)) for s, _ in hours.buckets()]
    k = site.analytics.k
    n_arrivals = round(sum(a for a in arrivals if a is not None), 3)
    n_entries = sum(e for e in entries if e is not None)
    any_arrivals, any_entries = any(a is not None for a in arrivals), any(e is not None for e in entries)
    totals = {"arrivals": n_arrivals, "entries": n_entries}
    lag_cells: list[dict[str, Any]] = []
    for c in maths.lagged_correlation(arrivals, entries, max_lag_h):
        lag = Cell(hours.start, hours.end, {**totals, "pairs": c.pairs} if any_arrivals and any_entries else None,
                   str(c.lag))  # fmt: skip
        lag_cells.append(publish_cell(lag, figures.lag_rule(c.r), k, local=hours.local))
    best = None
    for shown in lag_cells:
        if isinstance(shown["value"], float | int) and (best is None or shown["value"] > best.r):
            best = m.LagOut(lag_h=int(shown["label"]), r=float(shown["value"]))
    vehicles = Rule(value=lambda c: c["arrivals"], people=lambda c: c["arrivals"], digits=1)
    people = Rule(value=lambda c: c["entries"], people=lambda c: c["entries"], digits=0)
    return m.ParkingFootfall(
        area_id=area.id, name=area.name, lots=area.lots, zones=area.zones,
        window=window_out(hours, sources), privacy=_privacy(site),
        arrivals=publish_cell(Cell(hours.start, hours.end, {"arrivals": n_arrivals} if any_arrivals else None),
                              vehicles, k, local=hours.local),
        entries=publish_cell(Cell(hours.start, hours.end, {"entries": n_entries} if any_entries else None),
                             people, k, local=hours.local),
        lags=lag_cells, best=best,
        arrivals_method="mixed" if len(methods) > 1 else next(iter(methods), None),
    )  # fmt: skip
