"""The zone state the crowd feeds serialize (FIWARE CrowdFlowObserved).

The feeds depend only on this shape, so any object with these attributes fits
(:class:`ZoneState` is a Protocol). :func:`from_crowd` takes the live zone
store's answer (:class:`server.models.ZoneCrowd`); :func:`zones_without_data`
gives every configured zone as ``nodata``: a zone with no working camera says
so, never 0 people.

The zone store's answer is already public (the k rule of issue 14,
:mod:`server.stores.zones`): counts and occupancy are None when they rest on
fewer than k people, and ``flow_state`` / ``occupancy_state`` say why
(``suppressed``) so a feed can omit them rather than write 0; within a
published window a direction under k (or one that would reveal withheld
quarters) is None too and named in ``flow_withheld``; a published
occupancy is rounded to a multiple of ``occupancy_base`` (k), and
``occupancy_state`` ``coarsened`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from contracts.site import SiteConfig
from server import models

#: The live zone store's level (one definition: :data:`server.models.CrowdLevel`).
CrowdLevel = models.CrowdLevel


class ZoneState(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def coords(self) -> models.Coords | None: ...
    #: People the zone holds comfortably (site configuration).
    @property
    def capacity(self) -> int | None: ...
    #: Estimated people in the zone now (entries minus exits), as published: a multiple of ``occupancy_base``.
    @property
    def occupancy(self) -> int | None: ...
    #: coarsened (rounded to ``occupancy_base``) / ok (k = 1) / suppressed (under k people) / nodata.
    @property
    def occupancy_state(self) -> models.FigureState: ...
    #: The rounding base of ``occupancy`` in people (the site's k); None when occupancy is None.
    @property
    def occupancy_base(self) -> int | None: ...
    @property
    def entries_15m(self) -> int | None: ...
    @property
    def exits_15m(self) -> int | None: ...
    #: ok / suppressed / nodata: whether the 15-minute counts are published (the k rule).
    @property
    def flow_state(self) -> models.FlowState: ...
    #: The directions ("entries", "exits") of an ok window withheld by the k rule (their counts are None).
    @property
    def flow_withheld(self) -> tuple[models.ZonePart, ...]: ...
    #: The window the 15-minute counts cover (the last completed quarter hour).
    @property
    def window_start(self) -> datetime | None: ...
    @property
    def window_end(self) -> datetime | None: ...
    #: None: the zone has data but no capacity, so no level.
    @property
    def level(self) -> CrowdLevel | None: ...
    @property
    def trend(self) -> str | None: ...
    @property
    def observed_at(self) -> datetime | None: ...
    @property
    def fresh(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ZoneSnapshot:
    """A plain :class:`ZoneState` (tests, and the no-store fallback)."""

    id: str
    name: str
    coords: models.Coords | None = None
    capacity: int | None = None
    occupancy: int | None = None
    occupancy_state: models.FigureState = "nodata"
    occupancy_base: int | None = None
    entries_15m: int | None = None
    exits_15m: int | None = None
    flow_state: models.FlowState = "nodata"
    flow_withheld: tuple[models.ZonePart, ...] = ()
    window_start: datetime | None = None
    window_end: datetime | None = None
    level: CrowdLevel | None = "nodata"
    trend: str | None = None
    observed_at: datetime | None = None
    fresh: bool = False


def zones_without_data(site: SiteConfig) -> list[ZoneSnapshot]:
    """Every configured zone, with its static facts and no observation."""
    return [
        ZoneSnapshot(
            id=z.id,
            name=z.name,
            coords=None if z.coords is None else models.Coords(lat=z.coords.lat, lng=z.coords.lng),
            capacity=z.capacity,
        )
        for z in site.zones
    ]


def from_crowd(zone: models.ZoneCrowd) -> ZoneSnapshot:
    """The feeds' view of one zone of the live zone store (the last completed quarter hour)."""
    window = zone.last_15m
    return ZoneSnapshot(
        id=zone.id,
        name=zone.name,
        coords=zone.coords,
        capacity=zone.capacity,
        occupancy=zone.occupancy,
        occupancy_state=zone.occupancy_state,
        occupancy_base=zone.occupancy_base,
        entries_15m=window.entries,
        exits_15m=window.exits,
        flow_state=window.state,
        flow_withheld=tuple(window.withheld),
        window_start=window.start,
        window_end=window.end,
        level=zone.level,
        trend=zone.trend,
        observed_at=zone.observed_at,
        fresh=zone.fresh and zone.state == "ok",
    )
