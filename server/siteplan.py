"""The site plan: where every lot, entrance, locker bank, zone and display stands, for maps and the console.

Built from the site configuration only (no live state, no device ids, no
secrets), so it is public and the same for the life of the process. The
web console (:mod:`server.console`) draws its offline site plan from it.

Response models live here rather than in :mod:`server.models`: they describe
the configuration, not a live answer, and keep the shared model module small.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.site import CoordsConfig, SiteConfig
from server.models import Coords, LotType


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class PlanEntrance(_Out):
    name: str | None
    coords: Coords


class PlanLevel(_Out):
    id: str
    name: str | None
    total: int = Field(description="Bays of this level.")


class PlanLot(_Out):
    id: str
    name: str
    coords: Coords
    address: str | None
    lot_type: LotType
    zone: str | None
    total: int = Field(description="Bays in the site configuration.")
    closed: bool
    entrances: list[PlanEntrance] = Field(description="Pedestrian entrances (empty: the lot's coords).")
    levels: list[PlanLevel]


class PlanLockerBank(_Out):
    id: str
    name: str
    coords: Coords
    zone: str | None
    total: int = Field(description="Compartments in the site configuration.")


class PlanZone(_Out):
    id: str
    name: str
    coords: Coords | None = Field(description="The zone's reference point; null when the site gives none.")
    capacity: int | None


class PlanDisplay(_Out):
    id: str
    name: str | None
    kind: Literal["parking", "garage", "wayfinding"]
    coords: Coords
    shows: Literal["spaces", "people"]
    lots: list[str] = Field(description="Lots the sign sums.")
    levels: list[str] = Field(description="Lot levels the sign sums, as `lot/level`.")
    zones: list[str] = Field(description="Zones the sign shows people for.")


class SitePlan(_Out):
    """Every placed thing of the site, from its configuration."""

    id: str
    name: str
    timezone: str = Field(description="IANA time zone of the site (history answers and the console use it).")
    center: Coords = Field(description="The mean of every configured coordinate: the plan's projection centre.")
    lots: list[PlanLot]
    lockers: list[PlanLockerBank]
    zones: list[PlanZone]
    displays: list[PlanDisplay]


def _c(c: CoordsConfig) -> Coords:
    return Coords(lat=c.lat, lng=c.lng)


def site_plan(site: SiteConfig) -> SitePlan:
    """The plan of ``site``: configuration order, every coordinate it has."""
    points: list[CoordsConfig] = []
    for lot in site.parking:
        points.append(lot.coords)
        points.extend(e.coords for e in lot.entrances)
    points.extend(b.coords for b in site.lockers)
    points.extend(z.coords for z in site.zones if z.coords is not None)
    points.extend(d.coords for d in site.displays)
    if points:
        center = Coords(lat=sum(p.lat for p in points) / len(points), lng=sum(p.lng for p in points) / len(points))
    else:
        center = Coords(lat=0.0, lng=0.0)
    return SitePlan(
        id=site.site.id,
        name=site.site.name,
        timezone=site.site.timezone,
        center=center,
        lots=[
            PlanLot(
                id=lot.id,
                name=lot.name,
                coords=_c(lot.coords),
                address=lot.address,
                lot_type=lot.lot_type,
                zone=lot.zone,
                total=lot.total,
                closed=lot.closed,
                entrances=[PlanEntrance(name=e.name, coords=_c(e.coords)) for e in lot.entrances],
                levels=[PlanLevel(id=lv.id, name=lv.name, total=len(lv.bay_ids())) for lv in lot.levels],
            )
            for lot in site.parking
        ],
        lockers=[
            PlanLockerBank(id=b.id, name=b.name, coords=_c(b.coords), zone=b.zone, total=len(b.compartment_list()))
            for b in site.lockers
        ],
        zones=[
            PlanZone(id=z.id, name=z.name, coords=None if z.coords is None else _c(z.coords), capacity=z.capacity)
            for z in site.zones
        ],
        displays=[
            PlanDisplay(
                id=d.id,
                name=d.name,
                kind=d.kind,
                coords=_c(d.coords),
                shows=d.shows,
                lots=list(d.lots),
                levels=[f"{ref.lot}/{ref.level}" for ref in d.levels],
                zones=list(d.zones),
            )
            for d in site.displays
        ],
    )
