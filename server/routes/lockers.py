"""Live pickup-locker availability per bank and compartment size."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from server import models
from server.deps import LiveDep, no_store
from server.errors import NotFound

router = APIRouter(prefix="/v1/lockers", tags=["lockers"], dependencies=[Depends(no_store)])

_RULES = (
    "A compartment counts as free, occupied or out of service only while its last reading is younger than the"
    " bank's `stale_after_s`; otherwise it is `unknown` (a stale compartment is never shown as free)."
    " `doors_open` lists fresh compartments whose door is reported open, with how long."
)


@router.get(
    "",
    summary="All locker banks with live availability per size",
    description=f"Every bank of the site, in configuration order, judged at one instant. {_RULES}",
    response_model=list[models.LockerBank],
)
async def list_banks(live: LiveDep) -> list[models.LockerBank]:
    return live.locker_banks()


@router.get(
    "/{bank_id}",
    summary="One locker bank with live availability per size",
    description=_RULES,
    response_model=models.LockerBank,
    responses={404: {"model": models.ErrorOut, "description": "No locker bank with this id in the site."}},
)
async def get_bank(
    live: LiveDep,
    bank_id: Annotated[str, Path(description="Bank id, as listed by /v1/lockers.", max_length=64)],
) -> models.LockerBank:
    bank = live.locker_bank(bank_id)
    if bank is None:
        raise NotFound(f"no locker bank {bank_id!r} in site {live.site.site.id!r}")
    return bank
