"""Guidance: lots ranked for a destination, and the nearest locker banks with a fitting free compartment.

The ranking is :mod:`server.guidance` (pure); this module reads the query,
resolves the destination and turns its errors into HTTP answers: an id that
names nothing is a 404 (:class:`server.models.ErrorOut`); a destination given
in no form, in two forms, half (lat without lng) or a zone without
coordinates is a 422 in FastAPI's validation shape (``detail[].type`` is the
stable code, ``detail[].msg`` says what to send instead).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError

from server import guidance, models
from server.deps import LiveDep, no_store
from server.errors import NotFound
from server.routes.forecast import ForecastsDep

router = APIRouter(prefix="/v1/guidance", tags=["guidance"], dependencies=[Depends(no_store)])

_WALK = (
    f"Walking distance is the great-circle (haversine) distance from the lot's nearest pedestrian entrance"
    f" (its coordinates if it has none) to the destination times a circuity factor of {guidance.CIRCUITY}"
    f" (street networks; Newell 1980, O'Sullivan & Morrall 1996, Giacomin & Levinson 2015); walking time at"
    f" {guidance.WALK_SPEED_M_S} m/s (80 m/min, Finnis & Walton 2008). Lots or banks farther than"
    f" {guidance.MAX_WALK_M:.0f} m of walking are `too_far`; a destination farther than that from every one is"
    " outside the site: the answer is 200 with `outside_site: true`, an empty ranked list and a `note`."
)
_DESTINATION = (
    "Give exactly one destination: `lat` and `lng`, or `zone` (a zone id; the zone needs coordinates), or"
    " `locker_bank` (a bank id). None, two forms, or half of lat/lng is a 422 whose `detail[0].type` says which"
    " (`destination_missing`, `destination_ambiguous`, `destination_incomplete`, `zone_without_coords`); an"
    " unknown zone or bank id is a 404."
)
_PARKING = f"""Lots ranked for walking to a destination. Docs: `docs/guidance.md`.

**Tiers.** Only lots that are fresh, `open` (at least one space beyond the reserve) and within the walking
limit are ranked, by score, then walking distance, then id. Closed, stale, no-data, full and too-far lots are
never ranked: with `include_unavailable=true` they follow every ranked lot (`rank` null), nearest first, each
with its `reason`. `limit` caps each group.

**Score** (minutes of walking each term is worth; lower is better):

    score = walk_min
          + {guidance.FULL_COST_MIN:g} * exp(-spaces / {guidance.SPACE_SCALE:g})            (space_risk_min)
          + trend_min
          + {guidance.STALENESS_MIN:g} * min(1, data_age_s / stale_after_s)       (freshness_min)
    spaces    = free - reserve + 1   (bays that can fill before the lot shows full; reserve = full_below)
    trend_min = {guidance.FILLING_MIN:g} if the lot is filling, else 0                  (no arrive_in_min)
              = risk(spaces_at_arrival) - risk(spaces)         (arrive_in_min given, a trend or a forecast)
    spaces_at_arrival = max(0, min(total, spaces + the change by the arrival)), by `arrival_basis`:
      forecast  the lot's fresh forecast's change of free bays from now to the arrival
      trend     free_change / window_s * arrive_in_min * 60          (no fresh forecast, a known trend)

Each entry gives the terms (`score_parts`), the inputs (`walk_m`, `spaces_beyond_reserve`, `trend`,
`data_age_s`), one line per term (`reasons`) and a sentence (`summary`).

{_WALK}

{_DESTINATION}"""

_LOCKERS = f"""The nearest locker banks with a free compartment of `size` or larger (S < M < L < XL).

Only banks with fresh data (a compartment not heard within the bank's `stale_after_s` is never free) and a free
fitting compartment, within the walking limit, are ranked: nearest walk first, then id. Each offers its smallest
fitting free size (`size_offered`, `free_of_size`) and lists every fitting size's free count. With
`include_unavailable=true` the other banks follow with their `reason` (`no_size`, `stale`, `nodata`,
`none_free`, `too_far`). `limit` caps each group.

{_WALK}

Give exactly one destination: `lat` and `lng`, or `zone`; otherwise a 422 as for parking guidance; an unknown zone
is a 404."""

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": models.ErrorOut, "description": "The zone or locker bank id names nothing in the site."}
}

Lat = Annotated[float | None, Query(ge=-90, le=90, description="Destination latitude (WGS84); needs `lng`.")]
Lng = Annotated[float | None, Query(ge=-180, le=180, description="Destination longitude (WGS84); needs `lat`.")]
ZoneId = Annotated[
    str | None, Query(max_length=64, description="A zone id (/v1/zones) as the destination; it needs coordinates.")
]
Limit = Annotated[int, Query(ge=1, le=100, description="At most this many ranked entries (and unavailable ones).")]
IncludeUnavailable = Annotated[
    bool, Query(description="Also list what is not recommended, after every ranked entry, with the reason.")
]


def _reject(exc: guidance.DestinationError) -> NoReturn:
    if exc.not_found:
        raise NotFound(exc.detail) from exc
    raise RequestValidationError([{"type": exc.code, "loc": ("query", exc.param), "msg": exc.detail, "input": None}])


@router.get(
    "/parking",
    summary="Parking lots ranked for a destination",
    description=_PARKING,
    response_model=models.ParkingGuidance,
    responses=_NOT_FOUND,
)
async def parking_guidance(
    live: LiveDep,
    forecasts: ForecastsDep,
    lat: Lat = None,
    lng: Lng = None,
    zone: ZoneId = None,
    locker_bank: Annotated[
        str | None, Query(max_length=64, description="A locker bank id (/v1/lockers) as the destination.")
    ] = None,
    arrive_in_min: Annotated[
        float | None,
        Query(
            ge=0,
            le=240,
            description="Minutes until the driver reaches the lot: projects spaces by the trend and the lot's"
            " forecast (`arrival_basis`).",
        ),
    ] = None,
    limit: Limit = 5,
    include_unavailable: IncludeUnavailable = False,
) -> models.ParkingGuidance:
    try:
        dest = guidance.resolve_destination(live.site, lat=lat, lng=lng, zone=zone, locker_bank=locker_bank)
    except guidance.DestinationError as exc:
        _reject(exc)
    change: guidance.ForecastChange | None = None
    if forecasts is not None and arrive_in_min is not None:
        service, now = forecasts, forecasts.clock()

        def change(lot_id: str, minutes: float) -> float | None:
            occupied = service.occupancy_change(lot_id, now, now + timedelta(minutes=minutes))
            return None if occupied is None else -occupied

    return guidance.rank_parking(
        live.site,
        live.lots(),
        dest,
        arrive_in_min=arrive_in_min,
        forecast_change=change,
        limit=limit,
        include_unavailable=include_unavailable,
    )


@router.get(
    "/lockers",
    summary="The nearest locker banks with a free compartment of a size or larger",
    description=_LOCKERS,
    response_model=models.LockerGuidance,
    responses=_NOT_FOUND,
)
async def locker_guidance(
    live: LiveDep,
    size: Annotated[
        models.CompartmentSize, Query(description="The parcel's compartment size; larger ones fit too.")
    ] = "S",
    lat: Lat = None,
    lng: Lng = None,
    zone: ZoneId = None,
    limit: Limit = 5,
    include_unavailable: IncludeUnavailable = False,
) -> models.LockerGuidance:
    try:
        dest = guidance.resolve_destination(live.site, lat=lat, lng=lng, zone=zone)
    except guidance.DestinationError as exc:
        _reject(exc)
    return guidance.rank_lockers(live.locker_banks(), dest, size, limit=limit, include_unavailable=include_unavailable)
