"""What every feed publishes about a lot, decided once, and the time formats."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from contracts.site import LotConfig
from server import models


def iso_z(at: datetime) -> str:
    """UTC, whole seconds, ``Z``: ``2026-05-04T11:59:57Z`` (DATEX II, NGSI-LD, ParkAPI v3)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_naive_utc(at: datetime) -> str:
    """UTC without an offset, as ParkAPI v1 writes its times (``2015-06-15T12:31:00``)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


AvailabilityKind = Literal["live", "closed", "nodata"]


@dataclass(frozen=True, slots=True)
class Availability:
    """The counts a feed may publish for one lot.

    ``live``: the lot has fresh free/occupied readings (state open or full);
    ``free`` and ``occupied`` count only bays heard within the lot's
    ``stale_after_s`` (a stale bay is never free). ``closed``: closed in the
    site configuration; 0 free, whatever the sensors say. ``nodata``: no
    fresh reading; no count at all.
    """

    kind: AvailabilityKind
    free: int | None
    occupied: int | None
    #: occupied / total in [0, 1], only when every bay of the lot is known
    #: (otherwise the share would silently count unknown bays as free or occupied).
    occupied_share: float | None


def availability(lot: models.ParkingLot) -> Availability:
    if lot.state == "closed":
        return Availability("closed", 0, None, None)
    if lot.state == "nodata":
        return Availability("nodata", None, None, None)
    share = round(lot.occupied / lot.total, 4) if lot.unknown == 0 and lot.total > 0 else None
    return Availability("live", lot.free, lot.occupied, share)


def content_version(*parts: object) -> str:
    """A stable version number (decimal string) for static content: changes when the content does.

    DATEX II tables and records carry a ``version``; deriving it from the
    content means a changed site configuration is a new version without any
    stored counter.
    """
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return str(int(digest[:8], 16))


def lot_static(lot: LotConfig) -> tuple[object, ...]:
    """The configuration fields a static feed publishes about a lot."""
    return (lot.id, lot.name, lot.coords.lat, lot.coords.lng, lot.address, lot.lot_type, lot.total)
