"""History for operators: lots, zones and locker banks over time, and the busiest hour of each weekday.

Every route needs an operator key (:data:`server.auth.OperatorDep`). The
numbers come from the rollups the gateway sets up (``docs/history.md``) and
the raw snapshots for the part no rollup covers yet (:mod:`server.history`).
A bad span is a 422 in FastAPI's validation shape (``detail[0].type`` is the
stable code: ``bad_time``, ``time_without_offset``, ``empty_range``,
``span_too_long``), an unknown id a 404, and InfluxDB down or failing a 503.

A zone's footfall is people: its history and peaks are published only
through the k rule of :mod:`server.analytics.privacy` (a bucket rests on its
crossings, in and out, on all the zone's lines; ``docs/history.md``). Lots
and locker banks count bays and compartments and are shown as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.exceptions import RequestValidationError

from common.influxdb import InfluxError
from contracts import history as names
from contracts import storage
from contracts.storage import to_ns
from server import history, models
from server.analytics import figures
from server.analytics.privacy import publish, publish_cell
from server.auth import OperatorDep, operator_responses
from server.dbmonitor import DatabaseMonitor
from server.deps import LiveDep, RuntimeDep, no_store
from server.errors import ApiError, NotFound
from server.history import Buckets, Every, HistoryRequestError, Window
from server.influx import InfluxClient

router = APIRouter(tags=["history"], dependencies=[Depends(no_store)])


class HistoryUnavailable(ApiError):
    status_code = 503
    error = "history_unavailable"


async def get_history_db(runtime: RuntimeDep) -> InfluxClient:
    """The server's InfluxDB client; 503 when the server runs without one."""
    if not isinstance(runtime.database, DatabaseMonitor):
        raise HistoryUnavailable("this server has no InfluxDB connection, so no history")
    return runtime.database.client


HistoryDbDep = Annotated[InfluxClient, Depends(get_history_db)]

HISTORY_ERRORS: dict[int | str, dict[str, Any]] = {
    **operator_responses(),
    404: {"model": models.ErrorOut, "description": "No such id in the site configuration."},
    503: {"model": models.ErrorOut, "description": "InfluxDB is down or failed the query; try again later."},
}
_SPAN = (
    "`from` and `to`: a date (`2026-03-29`, local midnight in the site's time zone) or an RFC 3339 date-time"
    " with an offset; both widened to whole buckets. Defaults: `to` now, `from` one day (5m), a week (1h) or"
    " 30 days (1d) earlier. At most 31 days of 5m, 366 days of 1h, 731 days of 1d buckets. Buckets are local:"
    " `1h` starts at the site's local hours, `1d` at local midnight (23 or 25 hours on DST change days)."
    " A bad span is a 422 whose `detail[0].type` is `bad_time`, `time_without_offset`, `empty_range` or"
    " `span_too_long`."
)

FromQuery = Annotated[
    str | None, Query(alias="from", max_length=40, description="Start: a date or an RFC 3339 date-time with offset.")
]
ToQuery = Annotated[str | None, Query(max_length=40, description="End (exclusive): as `from`; default now.")]
EveryQuery = Annotated[Every, Query(description="Bucket size: 5 minutes, a local hour, a local day.")]
LotId = Annotated[str, Path(description="Lot id, as listed by /v1/parking/lots.", max_length=64)]
ZoneId = Annotated[str, Path(description="Zone id, as listed by /v1/zones.", max_length=64)]
BankId = Annotated[str, Path(description="Bank id, as listed by /v1/lockers.", max_length=64)]


def _invalid(exc: HistoryRequestError) -> RequestValidationError:
    return RequestValidationError([{"type": exc.code, "loc": ("query", exc.param), "msg": exc.message, "input": None}])


def query_window(
    live: LiveDep,
    frm: str | None,
    to: str | None,
    every: Every,
    *,
    default_span: timedelta | None = None,
    max_span: timedelta | None = None,
) -> Window:
    """The query's window in the site's time zone (:func:`server.history.resolve_window`), ``from``/``to``
    as given in the request; a bad span or bucket is the documented 422."""
    tz = history.site_zone(live.site.site.timezone)
    try:
        return history.resolve_window(frm, to, every, tz, live.clock(), default_span=default_span, max_span=max_span)
    except HistoryRequestError as exc:
        raise _invalid(exc) from None


async def _read(
    db: InfluxClient, spec: names.RollupSpec, window: Window, tags: Mapping[str, str], group_by: tuple[str, ...] = ()
) -> Buckets:
    try:
        return await history.read_buckets(db, spec, window, tags, group_by=group_by)
    except InfluxError as exc:
        raise HistoryUnavailable(f"InfluxDB failed the history query: {exc}") from None


def window_out(window: Window, *sources: list[str]) -> dict[str, Any]:
    """The ``window`` block of an answer: start, end and bucket in site time, and the retention
    policies the figures came from (coarsest first), so a reader knows what the numbers stand on."""
    seen: list[str] = []
    for found in sources:
        seen += [s for s in found if s not in seen]
    order = {names.RP_1H: 0, names.RP_5M: 1, history.RAW: 2}
    return {
        "start": window.local(window.start),
        "end": window.local(window.end),
        "every": window.every,
        "timezone": window.tz.key,
        "sources": sorted(seen, key=lambda s: order.get(s, 3)),
    }


def _stat(values: Mapping[str, Any], name: str) -> dict[str, Any]:
    m, lo, hi = history.stat(values, name)
    return {"mean": m, "min": lo, "max": hi}


def _json(body: dict[str, Any]) -> Response:
    """The answer (the shape of its ``response_model``) encoded once.

    A week of 5-minute buckets is 2,016 of them: as pydantic models, built
    and then validated and encoded again by FastAPI, they cost ~200 ms of
    CPU here; as dicts encoded once, ~20 ms. ``response_model`` still
    documents the shape, and the schemathesis run checks every answer against it.
    """
    text = json.dumps(body, default=_encode, separators=(",", ":"), allow_nan=False)
    return Response(text, media_type="application/json")


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


@router.get(
    "/v1/parking/lots/{lot_id}/history",
    summary="A lot's free and occupied bays over time",
    description="Mean, minimum and maximum free, occupied and unknown bays per bucket, from the lot snapshots the"
    " gateway writes every minute (each bay's last state; a bay without a fresh reading is unknown, never free)."
    f" {_SPAN}",
    response_model=models.LotHistory,
    responses=HISTORY_ERRORS,
)
async def lot_history(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, lot_id: LotId, every: EveryQuery = "1h",
    frm: FromQuery = None, to: ToQuery = None,
) -> Response:  # fmt: skip
    site = live.site
    lot = site.lot(lot_id)
    if lot is None:
        raise NotFound(f"no parking lot {lot_id!r} in site {site.site.id!r}")
    window = query_window(live, frm, to, every)
    found = await _read(db, names.LOT_OCCUPANCY, window, {storage.TAG_SITE: site.site.id, storage.TAG_LOT: lot_id})
    values = found.of()
    buckets = []
    for start, end in window.buckets():
        v = values.get(to_ns(start), {})
        buckets.append(
            {
                "start": window.local(start),
                "end": window.local(end),
                "samples": history.as_int(v.get(names.SAMPLES)),
                "free": _stat(v, names.F_FREE),
                "occupied": _stat(v, names.F_OCCUPIED),
                "unknown": _stat(v, names.F_UNKNOWN),
            }
        )
    return _json(
        {
            "lot_id": lot.id,
            "name": lot.name,
            "total": lot.total,
            "window": window_out(window, found.sources),
            "buckets": buckets,
        }
    )


_K_RULE = (
    " No count is published that rests on fewer than k people (site `analytics.k`, default 10; docs/history.md):"
    " a bucket whose crossings on all the zone's lines, in and out, stay under k is `coarsened` (merged with its"
    " neighbours in time until the merged crossings reach k, as the analytics do) or `suppressed` (every count"
    " null, never 0); each bucket says which in `state`."
)


@router.get(
    "/v1/zones/{zone_id}/history",
    summary="A zone's entries, exits and occupancy over time",
    description="Entries (crossings into the zone, `towards`) and exits (`away`) per bucket, on all the zone's"
    " counting lines and per line, and the mean estimated occupancy. An interval counts in the bucket where it"
    f" ended.{_K_RULE} {_SPAN}",
    response_model=models.ZoneHistory,
    responses=HISTORY_ERRORS,
)
async def zone_history(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, zone_id: ZoneId, every: EveryQuery = "1h",
    frm: FromQuery = None, to: ToQuery = None,
) -> Response:  # fmt: skip
    site = live.site
    zone = site.zone(zone_id)
    if zone is None:
        raise NotFound(f"no zone {zone_id!r} in site {site.site.id!r}")
    window = query_window(live, frm, to, every)
    tags = {storage.TAG_SITE: site.site.id, storage.TAG_ZONE: zone_id}
    flows = await _read(db, names.FOOTFALL, window, tags, (storage.TAG_CAMERA, storage.TAG_LINE))
    occupancy = await _read(db, names.ZONE_OCCUPANCY, window, tags, (storage.TAG_CAMERA,))
    lines = {
        (key[0], key[1]): {
            at: (float(history.as_int(v.get(storage.F_TOWARDS))), float(history.as_int(v.get(storage.F_AWAY))))
            for at, v in by_time.items()
        }
        for key, by_time in flows.groups.items()
    }
    cameras = {
        key[0]: {at: _occupancy_sums(v) for at, v in by_time.items()} for key, by_time in occupancy.groups.items()
    }
    cells, line_keys, camera_keys = figures.zone_history_cells(window, lines, cameras)
    k = site.analytics.k
    published = publish(cells, figures.ZONE_CROSSINGS, k, coarsen=True, local=window.local)
    return _json(
        {
            "zone_id": zone.id,
            "name": zone.name,
            "window": window_out(window, flows.sources, occupancy.sources),
            "privacy": {"k": k},
            "buckets": [figures.zone_history_bucket(c, line_keys, camera_keys, k) for c in published],
        }
    )


def _occupancy_sums(values: Mapping[str, Any]) -> tuple[float, float]:
    """(sum of a camera's occupancy estimates, samples) in one bucket; (0, 0) without any."""
    total, n = values.get(f"{storage.F_OCCUPANCY}_sum"), values.get(names.SAMPLES)
    if not isinstance(total, int | float) or not isinstance(n, int | float) or not n:
        return 0.0, 0.0
    return float(total), float(n)


@router.get(
    "/v1/lockers/{bank_id}/history",
    summary="A locker bank's deposits, pickups, dwell time and occupancy over time",
    description="Deposits (a compartment going free -> occupied) and pickups (occupied -> free) per bucket, as the"
    " gateway saw them in each compartment's readings; the mean dwell time (deposit to pickup) of the bucket's"
    " pickups whose deposit was seen; mean, minimum and maximum occupied and free compartments from the bank"
    f" snapshots the gateway writes every minute. {_SPAN}",
    response_model=models.LockerHistory,
    responses=HISTORY_ERRORS,
)
async def locker_history(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, bank_id: BankId, every: EveryQuery = "1h",
    frm: FromQuery = None, to: ToQuery = None,
) -> Response:  # fmt: skip
    site = live.site
    bank = site.bank(bank_id)
    if bank is None:
        raise NotFound(f"no locker bank {bank_id!r} in site {site.site.id!r}")
    window = query_window(live, frm, to, every)
    tags = {storage.TAG_SITE: site.site.id, storage.TAG_BANK: bank_id}
    occupancy = await _read(db, names.LOCKER_OCCUPANCY, window, tags)
    transitions = await _read(db, names.LOCKER_TRANSITIONS, window, tags)
    occ, moves = occupancy.of(), transitions.of()
    buckets = []
    for start, end in window.buckets():
        at = to_ns(start)
        o, t = occ.get(at, {}), moves.get(at, {})
        samples = history.as_int(o.get(names.SAMPLES))
        known = samples > 0 or bool(t)
        buckets.append(
            {
                "start": window.local(start),
                "end": window.local(end),
                "samples": samples,
                "deposits": history.as_int(t.get(names.F_DEPOSITS)) if known else None,
                "pickups": history.as_int(t.get(names.F_PICKUPS)) if known else None,
                "mean_dwell_s": history.mean(t, "dwell_sum", "dwell_count"),
                "occupied": _stat(o, names.F_OCCUPIED),
                "free": _stat(o, names.F_FREE),
            }
        )
    return _json(
        {
            "bank_id": bank.id,
            "name": bank.name,
            "total": len(bank.compartment_list()),
            "window": window_out(window, occupancy.sources, transitions.sources),
            "buckets": buckets,
        }
    )


_PEAKS_SPAN = (
    "`from`/`to` as for history (default: the last 28 days, at most 366), widened to whole local days. Hours are"
    " the site's local hours; on the day clocks go back, the repeated hour counts once (its two halves combined)."
)


@router.get(
    "/v1/parking/lots/{lot_id}/peaks",
    summary="The busiest hour of each weekday in a lot",
    description="For each weekday, the local hour with the most occupied bays on average over that weekday's"
    f" days in the span (hourly means from the lot snapshots; ties: the earlier hour). {_PEAKS_SPAN}",
    response_model=models.LotPeaks,
    responses=HISTORY_ERRORS,
)
async def lot_peaks(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, lot_id: LotId, frm: FromQuery = None, to: ToQuery = None
) -> models.LotPeaks:
    site = live.site
    lot = site.lot(lot_id)
    if lot is None:
        raise NotFound(f"no parking lot {lot_id!r} in site {site.site.id!r}")
    days = query_window(live, frm, to, "1d", default_span=history.PEAKS_DEFAULT_SPAN, max_span=history.PEAKS_MAX_SPAN)
    window = Window(days.start, days.end, "1h", days.tz)
    found = await _read(db, names.LOT_OCCUPANCY, window, {storage.TAG_SITE: site.site.id, storage.TAG_LOT: lot_id})
    hours: dict[int, tuple[float, float]] = {}
    for at, v in found.of().items():
        occupied = history.mean(v, f"{names.F_OCCUPIED}_sum", names.SAMPLES)
        free = history.mean(v, f"{names.F_FREE}_sum", names.SAMPLES)
        if occupied is not None and free is not None:
            hours[at] = (occupied, free)
    peaks = [
        models.LotPeak(weekday=p.weekday, hour=p.hour, occupied_mean=p.measure, free_mean=p.other, days=p.days)
        for p in history.weekday_peaks(hours, window.tz, combine="mean")
    ]
    return models.LotPeaks(
        lot_id=lot.id, name=lot.name, total=lot.total, window=window_out(days, found.sources), peaks=peaks
    )


@router.get(
    "/v1/zones/{zone_id}/peaks",
    summary="The busiest hour of each weekday in a zone",
    description="For each weekday, the local hour with the most entries into the zone on average over that"
    " weekday's days with data in the span (ties: the earlier hour), chosen among the hours whose crossings (in and"
    " out, over those days) reach k (site `analytics.k`, default 10): a weekday where none does names no hour and"
    f" is `suppressed`, its means null, never 0. {_PEAKS_SPAN}",
    response_model=models.ZonePeaks,
    responses=HISTORY_ERRORS,
)
async def zone_peaks(
    _: OperatorDep, live: LiveDep, db: HistoryDbDep, zone_id: ZoneId, frm: FromQuery = None, to: ToQuery = None
) -> models.ZonePeaks:
    site = live.site
    zone = site.zone(zone_id)
    if zone is None:
        raise NotFound(f"no zone {zone_id!r} in site {site.site.id!r}")
    days = query_window(live, frm, to, "1d", default_span=history.PEAKS_DEFAULT_SPAN, max_span=history.PEAKS_MAX_SPAN)
    window = Window(days.start, days.end, "1h", days.tz)
    tags = {storage.TAG_SITE: site.site.id, storage.TAG_ZONE: zone_id}
    found = await _read(db, names.FOOTFALL, window, tags)
    hours = {
        at: (float(history.as_int(v.get(storage.F_TOWARDS))), float(history.as_int(v.get(storage.F_AWAY))))
        for at, v in found.of().items()
    }
    k = site.analytics.k
    peaks = []
    for weekday, hour, cell, n_days in figures.zone_weekday_peaks(window, hours, k):
        shown = publish_cell(cell, figures.ZONE_PEAK_HOUR, k, local=days.local)
        counts = shown["counts"]
        published = isinstance(counts, dict)
        withheld = figures.zone_peak_withheld(counts, k) if isinstance(counts, dict) else []
        entries_mean = None if "entries_mean" in withheld else shown["value"]
        exits_mean = None
        if isinstance(counts, dict) and "exits_mean" not in withheld:
            exits_mean = round(counts["exits"] / counts["days"], 3)
        peaks.append(
            models.ZonePeak(
                weekday=weekday, hour=hour if published else None, state=shown["state"], entries_mean=entries_mean,
                exits_mean=exits_mean, withheld=withheld, days=n_days,
            )
        )  # fmt: skip
    return models.ZonePeaks(
        zone_id=zone.id, name=zone.name, window=window_out(days, found.sources), privacy=models.Privacy(k=k),
        peaks=peaks,
    )  # fmt: skip
