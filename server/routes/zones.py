"""Crowd levels per zone, from the cameras' footfall counts (aggregates only: no person is tracked)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from server import models
from server.deps import LiveDep, no_store
from server.errors import NotFound

router = APIRouter(prefix="/v1/zones", tags=["zones"], dependencies=[Depends(no_store)])

_RULES = (
    "Occupancy is the cameras' in-minus-out estimate; `level` is occupancy as a share of the zone's `capacity`"
    " against its crowd_levels thresholds (defaults: moderate from 0.4, high from 0.7, very_high from 0.9)."
    " A zone with no working camera (none heard within its `stale_after_s`, or every one reported frozen,"
    " black or disconnected) is `nodata` with every live number null, never 0 people."
    ' Public, so under the k rule (site `analytics.k`, default 10; docs/analytics.md, "The public live crowd"):'
    " `last_15m` and `last_1h` are the last completed quarter hour and hour of the site's clock (not sliding"
    " windows, which two answers a minute apart would subtract into a minute's crossings), published when they"
    " rest on at least k people and otherwise `suppressed` with null counts, and within a published window each"
    " direction only when it reaches k (else null, named in `withheld`; the trend then `suppressed`);"
    " `occupancy` is shown from k people,"
    " rounded to the nearest multiple of k (`occupancy_state` coarsened, `occupancy_base` k), so two answers never"
    " differ by fewer than k people; `share` and `level` are of that rounded occupancy; the level under k only"
    " when it cannot narrow the count."
)


@router.get(
    "",
    summary="Crowd level of every zone",
    description=f"Every zone of the site, in configuration order, judged at one instant. {_RULES}",
    response_model=list[models.ZoneCrowd],
)
async def list_zones(live: LiveDep) -> list[models.ZoneCrowd]:
    return live.crowd()


@router.get(
    "/{zone_id}",
    summary="Crowd level of one zone",
    description=_RULES,
    response_model=models.ZoneCrowd,
    responses={404: {"model": models.ErrorOut, "description": "No zone with this id in the site configuration."}},
)
async def get_zone(
    live: LiveDep,
    zone_id: Annotated[str, Path(description="Zone id, as listed by /v1/zones.", max_length=64)],
) -> models.ZoneCrowd:
    zone = live.zone(zone_id)
    if zone is None:
        raise NotFound(f"no zone {zone_id!r} in site {live.site.site.id!r}")
    return zone
