"""Forecasts: hourly entries per zone (48 h) and occupancy per lot (24 h in 15-minute steps).

Made by :class:`server.forecast.service.ForecastService` on a schedule from
stored history (docs/forecast.md); a request only reads the newest result.
Every answer has a ``status``: ``ok`` with points, or ``pending`` (no run
yet), ``insufficient_history`` (under four weeks of data) or ``unavailable``
(InfluxDB failed, or the server runs without it), with ``points`` empty and
a ``detail``, never zeros.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from server import models
from server.deps import LiveDep, no_store
from server.errors import NotFound
from server.forecast.service import ForecastService, ForecastState, Status, at_arrival
from server.history import site_zone

router = APIRouter(tags=["forecast"], dependencies=[Depends(no_store)])


class Band(BaseModel):
    """A point forecast and its prediction interval (``coverage`` of the answer, e.g. 0.8)."""

    mean: float
    lower: float
    upper: float


class ZonePoint(BaseModel):
    start: datetime
    end: datetime
    entries: Band = Field(description="People entering the zone in this hour (all its counting lines).")


class LotPoint(BaseModel):
    start: datetime
    end: datetime
    occupied: Band = Field(description="Occupied bays (mean over the 15 minutes).")
    free: Band = Field(description="Free bays: the lot's bays minus occupied.")


class ForecastMeta(BaseModel):
    status: Status
    detail: str | None = Field(
        None,
        description="Why there is no forecast (any status but `ok`); with `ok`, that the latest refresh failed and"
        " this is the last forecast made (`made_at`), kept until it is `stale`.",
    )
    made_at: datetime | None = Field(None, description="When the forecast was computed (site time zone).")
    history_from: datetime | None = Field(None, description="The first step of history the fit read.")
    coverage: float | None = Field(None, description="Nominal central coverage of each interval (0.8).")
    step_s: int
    refresh_s: float | None = Field(None, description="How often the server refits its forecasts, in seconds.")
    stale: bool = Field(
        False,
        description="True when `made_at` is more than twice `refresh_s` before the server's clock: the schedule"
        " has stopped and these figures are old; a display must not show them as a forecast of now.",
    )
    model: str = "lightgbm direct multi-horizon, locally weighted split-conformal intervals (docs/forecast.md)"


class ZoneForecast(ForecastMeta):
    zone_id: str
    points: list[ZonePoint]


class Arrival(BaseModel):
    at: datetime
    free: Band | None = Field(
        description="Expected free bays in the 15 minutes holding `at`; null outside the forecast."
    )


class LotForecast(ForecastMeta):
    lot_id: str
    total: int
    points: list[LotPoint]
    arrival: Arrival | None = None


async def get_forecasts(request: Request) -> ForecastService | None:
    service: ForecastService | None = getattr(request.app.state, "forecasts", None)
    return service


ForecastsDep = Annotated[ForecastService | None, Depends(get_forecasts)]
_NO_DB = ForecastState("unavailable", detail="this server has no InfluxDB connection, so no history to forecast from")
_404: dict[int | str, dict[str, Any]] = {
    404: {"model": models.ErrorOut, "description": "No such id in the site configuration."}
}


def _meta(state: ForecastState, tz: tzinfo, step_s: int, service: ForecastService | None) -> dict[str, Any]:
    fc = state.result
    return {
        "refresh_s": service.refresh_s if service else None,
        "stale": service.stale(state) if service else False,
        "status": state.status,
        "detail": state.detail,
        "made_at": state.made_at.astimezone(tz) if state.made_at else None,
        "history_from": state.history_from.astimezone(tz) if state.history_from else None,
        "coverage": fc.coverage if fc else None,
        "step_s": step_s,
    }


@router.get(
    "/v1/zones/{zone_id}/forecast",
    summary="Expected entries into a zone, hour by hour, for the next 48 hours",
    description="Hourly entries (all the zone's counting lines) with an 80 % prediction interval, refreshed on a"
    " schedule from stored history. A forecast rests on weeks of counts, never on one interval's few people.",
    response_model=ZoneForecast,
    responses=_404,
)
async def zone_forecast(
    live: LiveDep, service: ForecastsDep, zone_id: Annotated[str, Path(max_length=64, description="Zone id.")]
) -> ZoneForecast:
    if live.site.zone(zone_id) is None:
        raise NotFound(f"no zone {zone_id!r} in site {live.site.site.id!r}")
    state = service.zones.get(zone_id, _NO_DB) if service else _NO_DB
    tz = _tz(live)
    points = []
    if state.result is not None:
        fc = state.result
        for i, t in enumerate(fc.times()):
            points.append(
                ZonePoint(
                    start=t.astimezone(tz),
                    end=(t + fc.step).astimezone(tz),
                    entries=Band(mean=_r(fc.mean[i]), lower=_r(fc.lower[i]), upper=_r(fc.upper[i])),
                )
            )
    return ZoneForecast(zone_id=zone_id, points=points, **_meta(state, tz, 3600, service))


@router.get(
    "/v1/parking/lots/{lot_id}/forecast",
    summary="Expected occupied and free bays of a lot, every 15 minutes for the next 24 hours",
    description="Occupied and free bays with an 80 % prediction interval. `arrival` (RFC 3339 with offset) adds"
    " the expected free bays at that time (guidance: expected free at your arrival).",
    response_model=LotForecast,
    responses=_404,
)
async def lot_forecast(
    live: LiveDep,
    service: ForecastsDep,
    lot_id: Annotated[str, Path(max_length=64, description="Lot id.")],
    arrival: Annotated[str | None, Query(max_length=40, description="Arrival time, RFC 3339 with offset.")] = None,
) -> LotForecast:
    lot = live.site.lot(lot_id)
    if lot is None:
        raise NotFound(f"no parking lot {lot_id!r} in site {live.site.site.id!r}")
    when = _parse_arrival(arrival) if arrival is not None else None
    state = service.lots.get(lot_id, _NO_DB) if service else _NO_DB
    tz = _tz(live)
    total = lot.total
    points = []
    if state.result is not None:
        fc = state.result
        for i, t in enumerate(fc.times()):
            occ = Band(mean=_r(fc.mean[i]), lower=_r(fc.lower[i]), upper=_r(fc.upper[i]))
            free = Band(mean=_r(total - fc.mean[i]), lower=_r(total - fc.upper[i]), upper=_r(total - fc.lower[i]))
            points.append(LotPoint(start=t.astimezone(tz), end=(t + fc.step).astimezone(tz), occupied=occ, free=free))
    out = LotForecast(lot_id=lot_id, total=total, points=points, **_meta(state, tz, 900, service))
    if when is not None:
        band = at_arrival(state, when)
        out.arrival = Arrival(
            at=when.astimezone(tz),
            free=Band(mean=_r(total - band[0]), lower=_r(total - band[2]), upper=_r(total - band[1])) if band else None,
        )
    return out


def _parse_arrival(text: str) -> datetime:
    """``arrival`` as UTC; a 422 ``bad_time`` for text that is not a date-time with offset, or lies within two
    days of the representable range (converting its offset, or adding the forecast's span, would overflow)."""
    try:
        at = datetime.fromisoformat(text)
        if at.tzinfo is not None:
            utc = at.astimezone(UTC)
            _ = (utc - timedelta(days=2), utc + timedelta(days=2))
            return utc
    except (ValueError, OverflowError):
        pass
    raise RequestValidationError(
        [
            {
                "type": "bad_time",
                "loc": ("query", "arrival"),
                "msg": "an RFC 3339 date-time with offset, e.g. 2026-11-30T10:00:00+01:00; in a query send '+' as"
                " %2B (a bare '+' arrives as a space)",
                "input": text,
            }
        ]
    )


def _tz(live: LiveDep) -> tzinfo:
    return site_zone(live.site.site.timezone)


def _r(v: float) -> float:
    return round(float(v), 1)
