"""ParkAPI-compatible lot JSON, in the two shapes integrators consume.

* :func:`city`: the classic ParkAPI (v1) city document that ParkenDD apps and
  many dashboards read (``offenesdresden/ParkAPI``, ``schema/city_schema.json``):
  ``last_updated``, ``last_downloaded``, ``lots[]`` with ``id``, ``name``,
  ``coords``, ``address``, ``lot_type``, ``region``, ``total``, ``free``,
  ``state`` (``open|closed|nodata|unknown``) and ``forecast``. ``free`` is
  left out when there is no live data, as that schema allows.
* :func:`parking_sites`: ParkAPI v3 / parkapi-sources parking sites, static
  and realtime fields in one item (``uid``, ``name``, ``type``, ``lat``,
  ``lon``, ``capacity``, ``has_realtime_data``, ``realtime_capacity``,
  ``realtime_free_capacity``, ``realtime_data_updated_at``,
  ``realtime_opening_status``) under ``items``, the JSON form parkapi-sources
  reads. Without fresh data the realtime counts are left out and the opening
  status is ``UNKNOWN``; ``has_realtime_data`` stays true (it says the site
  has sensors at all, a static property in ParkAPI v3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from server import models
from server.feeds.common import availability, iso_naive_utc, iso_z

#: ParkAPI v1 ``lot_type`` is free text; its scrapers write these German words
#: (Dresden: Parkhaus, Tiefgarage, Parkplatz; Hamburg maps "Straßenrand" to Parkplatz).
LOT_TYPE_V1 = {"garage": "Parkhaus", "underground": "Tiefgarage", "surface": "Parkplatz", "street": "Parkplatz"}
#: parkapi-sources ``ParkingSiteType``.
SITE_TYPE_V3 = {
    "garage": "CAR_PARK",
    "underground": "UNDERGROUND",
    "surface": "OFF_STREET_PARKING_GROUND",
    "street": "ON_STREET",
}
#: Our lot state -> ParkAPI v1 state. ParkAPI has no "full": a full lot is open with few free.
STATE_V1 = {"open": "open", "full": "open", "closed": "closed", "nodata": "nodata"}


def city(lots: Sequence[models.ParkingLot], now: datetime, zone_names: Mapping[str, str]) -> dict[str, Any]:
    """The ParkAPI v1 city document.

    ``last_updated``: the newest reading behind any published count (else the
    newest reading at all, else ``now``); ``last_downloaded``: ``now``, the
    moment this answer was judged. Both UTC without an offset, as ParkAPI
    writes them.
    """
    live = [lot.observed_at for lot in lots if availability(lot).kind == "live" and lot.observed_at]
    seen = [lot.observed_at for lot in lots if lot.observed_at]
    last = max(live or seen or [now])
    out: list[dict[str, Any]] = []
    for lot in lots:
        a = availability(lot)
        item: dict[str, Any] = {
            "id": lot.id,
            "name": lot.name,
            "coords": {"lat": lot.coords.lat, "lng": lot.coords.lng},
            "address": lot.address,
            "lot_type": LOT_TYPE_V1[lot.lot_type],
            "total": lot.total,
            "state": STATE_V1[lot.state],
            "forecast": False,
        }
        if lot.zone is not None and lot.zone in zone_names:
            item["region"] = zone_names[lot.zone]
        if a.free is not None:
            item["free"] = a.free
        out.append(item)
    return {"last_updated": iso_naive_utc(last), "last_downloaded": iso_naive_utc(now), "lots": out}


def parking_sites(lots: Sequence[models.ParkingLot], now: datetime) -> dict[str, Any]:
    """ParkAPI v3 parking sites (static + realtime) under ``items``."""
    items: list[dict[str, Any]] = []
    for lot in lots:
        a = availability(lot)
        item: dict[str, Any] = {
            "uid": lot.id,
            "name": lot.name,
            "purpose": "CAR",
            "type": SITE_TYPE_V3[lot.lot_type],
            "lat": lot.coords.lat,
            "lon": lot.coords.lng,
            "capacity": lot.total,
            "has_realtime_data": True,
        }
        if lot.address is not None:
            item["address"] = lot.address
        if a.kind == "live":
            item["realtime_opening_status"] = "OPEN"
            item["realtime_capacity"] = lot.total
            item["realtime_free_capacity"] = a.free
        elif a.kind == "closed":
            item["realtime_opening_status"] = "CLOSED"
            item["realtime_capacity"] = lot.total
            item["realtime_free_capacity"] = 0
        else:
            item["realtime_opening_status"] = "UNKNOWN"
        # A closed lot's status comes from the configuration, so it is current: stamped now.
        updated = now if a.kind == "closed" else lot.observed_at
        if updated is not None:
            item["realtime_data_updated_at"] = iso_z(updated)
        items.append(item)
    return {"items": items}
