"""The site plan: ids, names, kinds and coordinates of everything placed on the site (public)."""

from __future__ import annotations

from fastapi import APIRouter

from server.deps import LiveDep
from server.siteplan import SitePlan, site_plan

router = APIRouter(prefix="/v1", tags=["site"])


@router.get(
    "/site",
    summary="The site plan",
    description="Every lot (with its entrances and levels), locker bank, zone and display of the site's"
    " configuration: id, name, kind and coordinates, in configuration order, and the mean of all coordinates"
    " as a projection centre. Configuration only: no live state, no device ids. Maps and the web console"
    " (`/console`) draw the site from it without map tiles.",
    response_model=SitePlan,
)
async def get_site(live: LiveDep) -> SitePlan:
    return site_plan(live.site)
