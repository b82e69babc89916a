"""Live parking availability per lot."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from server import models
from server.deps import LiveDep, no_store
from server.errors import NotFound

router = APIRouter(prefix="/v1/parking", tags=["parking"], dependencies=[Depends(no_store)])

_RULES = (
    "A bay counts as free or occupied only while its last reading is younger than the lot's"
    " `stale_after_s`; otherwise it is `unknown` (a stale bay is never shown as free)."
)


@router.get(
    "/lots",
    summary="All parking lots with live availability",
    description=f"Every lot of the site, in configuration order, judged at one instant. {_RULES}",
    response_model=list[models.ParkingLot],
)
async def list_lots(live: LiveDep) -> list[models.ParkingLot]:
    return live.lots()


@router.get(
    "/lots/{lot_id}",
    summary="One parking lot with live availability",
    description=_RULES,
    response_model=models.ParkingLot,
    responses={404: {"model": models.ErrorOut, "description": "No lot with this id in the site configuration."}},
)
async def get_lot(
    live: LiveDep,
    lot_id: Annotated[str, Path(description="Lot id, as listed by /v1/parking/lots.", max_length=64)],
) -> models.ParkingLot:
    lot = live.lot(lot_id)
    if lot is None:
        raise NotFound(f"no parking lot {lot_id!r} in site {live.site.site.id!r}")
    return lot
