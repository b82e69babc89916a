"""The zone state the crowd feeds serialize (FIWARE CrowdFlowObserved).

The live zone store (issue 9, "Crowd levels") is written separately; the
feeds depend only on this shape, so any object with these attributes fits
(:class:`ZoneState` is a Protocol). Until the store exists,
:func:`zones_without_data` gives every configured zone as ``nodata``: a zone
with no working camera says so, never 0 people.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from contracts.site import SiteConfig
from server import models

CrowdLevel = Literal["low", "moderate", "high", "very_high", "nodata"]


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
    #: Estimated people in the zone now (entries minus exits).
    @property
    def occupancy(self) -> int | None: ...
    @property
    def entries_15m(self) -> int | None: ...
    @property
    def exits_15m(self) -> int | None: ...
    #: The window the 15-minute counts cover.
    @property
    def window_start(self) -> datetime | None: ...
    @property
    def window_end(self) -> datetime | None: ...
    @property
    def level(self) -> CrowdLevel: ...
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
    entries_15m: int | None = None
    exits_15m: int | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    level: CrowdLevel = "nodata"
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
