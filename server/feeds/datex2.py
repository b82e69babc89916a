"""DATEX II v3 Parking Publications (XML): the static table and the live status.

Both are a ``d2:payload`` root (the v3 exchange root for one payload
publication, namespace ``http://datex2.eu/schema/3/d2Payload``) whose
``xsi:type`` names the publication class, ``lang`` and
``modelBaseVersion="3"`` as attributes, then ``com:publicationTime`` and
``com:publicationCreator``, as in the v3 payloads of national access points
(NDW's truck parking status is this shape).

* :func:`parking_table`: a ``prk:ParkingTablePublication`` with one
  ``prk:ParkingTable`` (id = site id) holding one ``prk:UrbanParkingSite``
  record per lot: name, version time, number of spaces, a point location,
  layout and urban site type.
* :func:`parking_status`: a ``prk:ParkingStatusPublication`` referencing that
  table, one ``prk:ParkingSiteStatus`` per lot: origin time, occupancy (vacant
  and occupied counts, a percentage when every bay is known), site status and
  opening status.

Unknown data, the DATEX way: a lot with no fresh reading gets an empty
``parkingOccupancy`` (no vacant count at all), ``parkingSiteStatus`` =
``unknown``, no opening status, and a ``parkingStatusDescription`` saying
so; its origin time is the publication time (when "unknown" was judged). A
closed lot gets ``parkingSiteOpeningStatus`` = ``closed`` and 0 vacant
spaces (the Belgian ITS profile's rule).

Element order follows the DATEX II parking model's class sequences
(ParkingRecord, ParkingSite, UrbanParkingSite; ParkingRecordStatus,
ParkingSiteStatus; ParkingOccupancy). The official v3 XSDs were not
available to validate against; ``docs/feeds.md`` says what was checked.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from contracts.site import LotConfig, SiteConfig
from server import models
from server.feeds.common import availability, content_version, iso_z, lot_static

#: The v3 namespaces used here, with the prefixes DATEX II's own examples use.
NS = {
    "d2": "http://datex2.eu/schema/3/d2Payload",
    "com": "http://datex2.eu/schema/3/common",
    "loc": "http://datex2.eu/schema/3/locationReferencing",
    "prk": "http://datex2.eu/schema/3/parking",
}
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MEDIA_TYPE = "application/xml"

for _prefix, _uri in NS.items():
    # Module-wide in ElementTree; these URIs mean the same everywhere.
    ET.register_namespace(_prefix, _uri)

#: ``lot_type`` -> (``parkingLayout``, ``urbanParkingSiteType``).
LAYOUT = {
    "garage": ("multiStorey", "offStreetParking"),
    "underground": ("underground", "offStreetParking"),
    "surface": ("openSpace", "offStreetParking"),
    "street": ("openSpace", "onStreetParking"),
}


@dataclass(frozen=True, slots=True)
class Publisher:
    """Who publishes: ``publicationCreator`` (ISO 3166-1 country, national id) and the default language."""

    country: str
    national_identifier: str
    language: str = "en"


def table_version(site: SiteConfig) -> str:
    """The parking table's version: changes whenever a published static field of any lot does."""
    return content_version(site.site.id, [lot_static(lot) for lot in site.parking])


def record_version(lot: LotConfig) -> str:
    return content_version(lot_static(lot))


def parking_table(site: SiteConfig, publisher: Publisher, published_at: datetime, version_time: datetime) -> bytes:
    """``ParkingTablePublication``: one ``UrbanParkingSite`` per configured lot.

    ``version_time`` is when this version of the table was first published
    (the caller keeps it per :func:`table_version`). A site with no lots has
    no table (DATEX needs at least one record in a table).
    """
    root = _payload("ParkingTablePublication", publisher, published_at)
    if site.parking:
        table = _el(root, "prk", "parkingTable", id=site.site.id, version=table_version(site))
        _el(table, "prk", "parkingTableVersionTime", iso_z(version_time))
        for lot in site.parking:
            _record(table, lot, publisher, version_time)
    return _serialize(root)


def parking_status(
    site: SiteConfig, lots: Sequence[models.ParkingLot], publisher: Publisher, published_at: datetime
) -> bytes:
    """``ParkingStatusPublication``: one ``ParkingSiteStatus`` per lot, judged at one instant."""
    root = _payload("ParkingStatusPublication", publisher, published_at)
    if site.parking:
        _ref(root, "parkingTableReference", "ParkingTable", site.site.id, table_version(site))
    versions = {lot.id: record_version(lot) for lot in site.parking}
    for lot in lots:
        _status(root, lot, versions.get(lot.id, "0"), published_at)
    return _serialize(root)


# -- building blocks ---------------------------------------------------------


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def _el(parent: ET.Element, prefix: str, name: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.SubElement(parent, _q(prefix, name), attrs)
    if text is not None:
        elem.text = text
    return elem


def _xsi_type(elem: ET.Element, prefix: str, name: str) -> None:
    # A QName value makes ElementTree declare the prefix even where no element uses it.
    elem.set(f"{{{XSI}}}type", cast(str, ET.QName(NS[prefix], name)))


def _payload(publication: str, publisher: Publisher, published_at: datetime) -> ET.Element:
    root = ET.Element(_q("d2", "payload"), {"lang": publisher.language, "modelBaseVersion": "3"})
    _xsi_type(root, "prk", publication)
    _el(root, "com", "publicationTime", iso_z(published_at))
    creator = _el(root, "com", "publicationCreator")
    _el(creator, "com", "country", publisher.country)
    _el(creator, "com", "nationalIdentifier", publisher.national_identifier)
    return root


def _multilingual(parent: ET.Element, prefix: str, name: str, text: str, lang: str) -> None:
    values = _el(_el(parent, prefix, name), "com", "values")
    _el(values, "com", "value", text, lang=lang)


def _ref(parent: ET.Element, name: str, target: str, ref_id: str, version: str) -> None:
    elem = _el(parent, "prk", name, id=ref_id, version=version)
    elem.set("targetClass", cast(str, ET.QName(NS["prk"], target)))


def _record(table: ET.Element, lot: LotConfig, publisher: Publisher, version_time: datetime) -> None:
    record = _el(table, "prk", "parkingRecord", id=lot.id, version=record_version(lot))
    _xsi_type(record, "prk", "UrbanParkingSite")
    # ParkingRecord
    _multilingual(record, "prk", "parkingName", lot.name, publisher.language)
    _el(record, "prk", "parkingRecordVersionTime", iso_z(version_time))
    _el(record, "prk", "parkingNumberOfSpaces", str(lot.total))
    location = _el(record, "prk", "parkingLocation")
    _xsi_type(location, "loc", "PointLocation")
    point = _el(_el(location, "loc", "pointByCoordinates"), "loc", "pointCoordinates")
    _el(point, "loc", "latitude", repr(lot.coords.lat))
    _el(point, "loc", "longitude", repr(lot.coords.lng))
    # ParkingSite, then UrbanParkingSite
    layout, urban_type = LAYOUT[lot.lot_type]
    _el(record, "prk", "parkingLayout", layout)
    _el(record, "prk", "urbanParkingSiteType", urban_type)


def _status(root: ET.Element, lot: models.ParkingLot, version: str, published_at: datetime) -> None:
    a = availability(lot)
    status = _el(root, "prk", "parkingRecordStatus")
    _xsi_type(status, "prk", "ParkingSiteStatus")
    _ref(status, "parkingRecordReference", "ParkingRecord", lot.id, version)
    # ParkingRecordStatus
    origin = lot.observed_at if a.kind == "live" and lot.observed_at is not None else published_at
    _el(status, "prk", "parkingStatusOriginTime", iso_z(origin))
    if a.kind == "nodata":
        last = "none received" if lot.observed_at is None else f"last reading {iso_z(lot.observed_at)}"
        _multilingual(
            status,
            "prk",
            "parkingStatusDescription",
            f"No fresh sensor data ({last}); the number of vacant spaces is unknown.",
            "en",
        )
    occupancy = _el(status, "prk", "parkingOccupancy")
    if a.free is not None:
        _el(occupancy, "prk", "parkingNumberOfVacantSpaces", str(a.free))
    if a.occupied is not None:
        _el(occupancy, "prk", "parkingNumberOfOccupiedSpaces", str(a.occupied))
    if a.occupied_share is not None:
        _el(occupancy, "prk", "parkingOccupancy", f"{100 * a.occupied_share:.1f}")
    # ParkingSiteStatus
    if a.kind == "live":
        _el(status, "prk", "parkingSiteStatus", "full" if lot.state == "full" else "spacesAvailable")
        _el(status, "prk", "parkingSiteOpeningStatus", "open")
    elif a.kind == "closed":
        _el(status, "prk", "parkingSiteOpeningStatus", "closed")
    else:
        _el(status, "prk", "parkingSiteStatus", "unknown")


def _serialize(root: ET.Element) -> bytes:
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out
