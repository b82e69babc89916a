"""FIWARE NGSI-LD entities per the Smart Data Models, normalized or keyValues.

* ``OffStreetParking`` (dataModel.Parking), one per lot: ``name``,
  ``location`` (GeoJSON Point), ``address``, ``category``,
  ``totalSpotNumber``; live: ``availableSpotNumber``, ``occupiedSpotNumber``,
  ``occupancy`` (0-1, only when every bay is known), ``status``.
* ``ParkingSpot`` (dataModel.Parking), one per bay: ``name``, ``category``,
  ``location`` (the lot's point: bays carry no coordinates), ``status``
  (free/occupied/closed/unknown), ``refParkingSite``.
* ``CrowdFlowObserved`` (dataModel.Transportation), one per zone:
  ``peopleCountTowards`` (entries), ``peopleCountAway`` (exits),
  ``peopleCount`` (their sum), ``dateObserved``/``dateObservedFrom``/
  ``dateObservedTo`` (the 15-minute window), ``occupancy`` (estimate /
  capacity, 0-1), ``congested`` (level very_high), and ``crowdLevel``, our
  level (an extension attribute, not in the Smart Data Model). The window
  is the last completed quarter hour of the site's clock, and the figures
  follow the k rule (:mod:`server.stores.zones`): counts resting on fewer
  than k people are absent (NGSI-LD lets an attribute be absent) and the
  extension attribute ``peopleCountState`` is ``suppressed``; in a window
  that rests on k people, a direction withheld on its own (under k) is
  absent with ``peopleCountTowardsState`` / ``peopleCountAwayState``
  ``suppressed``, and ``peopleCount`` (the sum, which would reveal it) is
  absent with ``peopleCountState`` ``suppressed``; an occupancy
  under k is absent too, with the extension attribute ``occupancyState``
  ``suppressed``; a published one is the share of the occupancy rounded to
  a multiple of k, with ``occupancyState`` ``coarsened`` and
  ``occupancyBase`` k (people); ``crowdLevel`` may be ``suppressed``.

Ids are ``urn:ngsi-ld:<Type>:<site>:<id>`` (a bay: ``<lot>:<bay>``). The
normalized form gives Property / GeoProperty / Relationship with
``observedAt`` on measured values; keyValues gives bare values. ``@context``
names the Smart Data Models context and the NGSI-LD core context; nothing is
fetched.

Stale data: a lot without fresh readings has no ``availableSpotNumber``,
``occupiedSpotNumber``, ``occupancy`` or ``status`` (the model's status has
no "unknown"); a bay not heard within its lot's ``stale_after_s`` is
``unknown``; a zone without fresh data has no counts, only ``crowdLevel``
``nodata``. A closed lot has ``availableSpotNumber`` 0 and status
``closed``, and its bays are ``closed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from server import models
from server.feeds.common import availability, iso_z
from server.feeds.zones import ZoneState
from server.live import MAX_FUTURE_S, BayReading

MEDIA_TYPE = "application/ld+json"
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
PARKING_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld"
TRANSPORTATION_CONTEXT = (
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
)
EntityType = Literal["OffStreetParking", "ParkingSpot", "CrowdFlowObserved"]
TYPES: tuple[EntityType, ...] = ("OffStreetParking", "ParkingSpot", "CrowdFlowObserved")
CONTEXT: dict[EntityType, list[str]] = {
    "OffStreetParking": [PARKING_CONTEXT, CORE_CONTEXT],
    "ParkingSpot": [PARKING_CONTEXT, CORE_CONTEXT],
    "CrowdFlowObserved": [TRANSPORTATION_CONTEXT, CORE_CONTEXT],
}

#: ``lot_type`` -> OffStreetParking ``category``.
CATEGORY = {"garage": "parkingGarage", "underground": "underground", "surface": "parkingLot", "street": "other"}
#: Crowd levels at which ``congested`` is true.
CONGESTED_LEVELS = frozenset({"very_high"})


def entity_id(entity_type: EntityType, site_id: str, *local: str) -> str:
    return ":".join(("urn:ngsi-ld", entity_type, site_id, *local))


def split_entity_id(eid: str, site_id: str) -> tuple[EntityType, str] | None:
    """``(type, local id)`` for an id this site publishes, else None (the local id is not checked)."""
    for entity_type in TYPES:
        prefix = entity_id(entity_type, site_id, "")
        if eid.startswith(prefix) and len(eid) > len(prefix):
            return entity_type, eid[len(prefix) :]
    return None


AttrKind = Literal["Property", "DateTime", "GeoProperty", "Relationship"]


@dataclass(frozen=True, slots=True)
class Attr:
    name: str
    value: Any
    kind: AttrKind = "Property"
    observed_at: datetime | None = None


def render(
    eid: str, entity_type: EntityType, attrs: list[Attr], *, key_values: bool, context: list[str] | None = None
) -> dict[str, Any]:
    """An entity in keyValues (bare values) or normalized form (typed attributes)."""
    out: dict[str, Any] = {"id": eid, "type": entity_type}
    for a in attrs:
        if key_values:
            out[a.name] = iso_z(a.value) if a.kind == "DateTime" else a.value
            continue
        if a.kind == "GeoProperty":
            out[a.name] = {"type": "GeoProperty", "value": a.value}
        elif a.kind == "Relationship":
            out[a.name] = {"type": "Relationship", "object": a.value}
        else:
            value = {"@type": "DateTime", "@value": iso_z(a.value)} if a.kind == "DateTime" else a.value
            prop: dict[str, Any] = {"type": "Property", "value": value}
            if a.observed_at is not None:
                prop["observedAt"] = iso_z(a.observed_at)
            out[a.name] = prop
    out["@context"] = list(CONTEXT[entity_type] if context is None else context)
    return out


def _point(coords: models.Coords) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [coords.lng, coords.lat]}


def off_street_parking(site_id: str, lot: models.ParkingLot, *, key_values: bool) -> dict[str, Any]:
    a = availability(lot)
    attrs = [Attr("name", lot.name), Attr("location", _point(lot.coords), "GeoProperty")]
    if lot.address is not None:
        attrs.append(Attr("address", {"streetAddress": lot.address}))
    attrs += [Attr("category", [CATEGORY[lot.lot_type]]), Attr("totalSpotNumber", lot.total)]
    if a.kind == "live":
        at = lot.observed_at
        attrs.append(Attr("availableSpotNumber", a.free, observed_at=at))
        attrs.append(Attr("occupiedSpotNumber", a.occupied, observed_at=at))
        if a.occupied_share is not None:
            attrs.append(Attr("occupancy", a.occupied_share, observed_at=at))
        status = ["open", "full"] if lot.state == "full" else ["open", "spacesAvailable"]
        attrs.append(Attr("status", status, observed_at=at))
    elif a.kind == "closed":
        attrs += [Attr("availableSpotNumber", 0), Attr("status", ["closed"])]
    return render(entity_id("OffStreetParking", site_id, lot.id), "OffStreetParking", attrs, key_values=key_values)


def spot_status(lot: models.ParkingLot, reading: BayReading | None, now: datetime) -> tuple[str, datetime | None]:
    """A bay's FIWARE status at ``now`` and when it was heard, by the live rule.

    ``closed`` when its lot is closed; the reading's status while it was
    heard within the lot's ``stale_after_s`` (and not implausibly far ahead);
    ``unknown`` otherwise, never a stale free.
    """
    if lot.state == "closed":
        return "closed", None
    if reading is None:
        return "unknown", None
    heard = datetime.fromtimestamp(reading.heard, UTC)
    now_ts = now.timestamp()
    if now_ts - lot.stale_after_s < reading.heard <= now_ts + MAX_FUTURE_S:
        return reading.status, heard
    return "unknown", heard


def parking_spot(
    site_id: str, lot: models.ParkingLot, bay_id: str, reading: BayReading | None, now: datetime, *, key_values: bool
) -> dict[str, Any]:
    status, heard = spot_status(lot, reading, now)
    fresh = status != "unknown" and heard is not None
    attrs = [
        Attr("name", bay_id),
        Attr("category", ["onStreet" if lot.lot_type == "street" else "offStreet"]),
        Attr("location", _point(lot.coords), "GeoProperty"),
        Attr("status", status, observed_at=heard if fresh else None),
        Attr("refParkingSite", entity_id("OffStreetParking", site_id, lot.id), "Relationship"),
    ]
    return render(entity_id("ParkingSpot", site_id, lot.id, bay_id), "ParkingSpot", attrs, key_values=key_values)


def crowd_flow_observed(site_id: str, zone: ZoneState, *, key_values: bool) -> dict[str, Any]:
    """A zone as CrowdFlowObserved, under the k rule (module docstring; docs/feeds.md)."""
    attrs = [Attr("name", zone.name)]
    if zone.coords is not None:
        attrs.append(Attr("location", _point(zone.coords), "GeoProperty"))
    live = zone.fresh and zone.level != "nodata"
    start, end, at = zone.window_start, zone.window_end, zone.observed_at
    if live and start is not None and end is not None:
        # The model's dateObserved may be an ISO 8601 interval.
        attrs.append(Attr("dateObserved", f"{iso_z(start)}/{iso_z(end)}"))
        attrs += [Attr("dateObservedFrom", start, "DateTime"), Attr("dateObservedTo", end, "DateTime")]
    elif at is not None:
        attrs.append(Attr("dateObserved", iso_z(at)))
    if live:
        # The counts of a completed quarter hour were measured at its end.
        counted = end or at
        if zone.flow_state == "ok":
            # Each direction on its own: one under k is absent, and its extension attribute says why.
            for name, value in (("peopleCountTowards", zone.entries_15m), ("peopleCountAway", zone.exits_15m)):
                if value is not None:
                    attrs.append(Attr(name, value, observed_at=counted))
                else:
                    attrs.append(Attr(f"{name}State", "suppressed", observed_at=counted))
            if zone.entries_15m is not None and zone.exits_15m is not None:
                attrs.append(Attr("peopleCount", zone.entries_15m + zone.exits_15m, observed_at=counted))
            else:  # the sum minus the shown direction would give the withheld one
                attrs.append(Attr("peopleCountState", "suppressed", observed_at=counted))
        elif zone.flow_state == "suppressed":
            # Under k people: the counts are absent (an NGSI-LD attribute may be), and this says why.
            attrs.append(Attr("peopleCountState", "suppressed", observed_at=counted))
        if zone.occupancy is not None and zone.capacity:  # None under k people as well
            # The published occupancy is rounded to a multiple of k: the share is of that, and says so.
            share = round(min(1.0, max(0.0, zone.occupancy / zone.capacity)), 4)
            attrs.append(Attr("occupancy", share, observed_at=at))
            if zone.occupancy_state == "coarsened" and zone.occupancy_base is not None:
                attrs.append(Attr("occupancyState", "coarsened", observed_at=at))
                attrs.append(Attr("occupancyBase", zone.occupancy_base, observed_at=at))
        elif zone.occupancy_state == "suppressed" and zone.capacity:
            attrs.append(Attr("occupancyState", "suppressed", observed_at=at))  # under k: absent, and why
        if zone.level is not None and zone.level != "suppressed":  # None: the zone has no capacity, so no level
            attrs.append(Attr("congested", zone.level in CONGESTED_LEVELS, observed_at=at))
    if not live or zone.level is not None:
        attrs.append(Attr("crowdLevel", zone.level if live else "nodata", observed_at=at if live else None))
    return render(entity_id("CrowdFlowObserved", site_id, zone.id), "CrowdFlowObserved", attrs, key_values=key_values)
