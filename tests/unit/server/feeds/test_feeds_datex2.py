"""DATEX II v3 parking publications, parsed back and checked element by element.

The official v3 XSDs could not be obtained here (no package ships them, and
the schema text could not be vendored), so these tests check the structure
against the DATEX II parking model's class sequences instead: the namespace
of every element, the order of children, ``xsi:type`` and ``targetClass``
values resolved through the declared prefixes, and every value.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest

from contracts.site import SiteConfig
from server import models
from server.feeds import datex2
from server.live import LiveState
from tests.unit.server.feeds.conftest import T0, make_site

D2, COM, LOC, PRK = (datex2.NS[p] for p in ("d2", "com", "loc", "prk"))
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PUBLISHER = datex2.Publisher(country="DE", national_identifier="s1", language="de")

#: Children of an UrbanParkingSite record, in the order of the model's class
#: sequences (ParkingRecord, then ParkingSite, then UrbanParkingSite).
RECORD_CHILDREN = [
    "parkingName",
    "parkingRecordVersionTime",
    "parkingNumberOfSpaces",
    "parkingLocation",
    "parkingLayout",
    "urbanParkingSiteType",
]
#: The full sequence of a ParkingSiteStatus's children used here (ParkingRecordStatus, then ParkingSiteStatus).
STATUS_SEQUENCE = [
    "parkingRecordReference",
    "parkingStatusOriginTime",
    "parkingStatusDescription",
    "parkingOccupancy",
    "parkingSiteStatus",
    "parkingSiteOpeningStatus",
]
OCCUPANCY_SEQUENCE = ["parkingNumberOfVacantSpaces", "parkingNumberOfOccupiedSpaces", "parkingOccupancy"]


class Doc:
    """A parsed publication that remembers its namespace prefixes (for QName values)."""

    def __init__(self, data: bytes) -> None:
        assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
        self.prefixes: dict[str, str] = {}
        for _event, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
            assert self.prefixes.setdefault(prefix, uri) == uri, "one prefix, one namespace"
        self.root = ET.fromstring(data)

    def qname(self, value: str | None) -> str:
        assert value is not None and ":" in value
        prefix, name = value.split(":")
        return f"{{{self.prefixes[prefix]}}}{name}"

    def xsi_type(self, elem: ET.Element) -> str:
        return self.qname(elem.get(f"{{{XSI}}}type"))


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def names(elem: ET.Element) -> list[str]:
    return [child.tag.split("}")[1] for child in elem]


def child(elem: ET.Element, ns: str, name: str) -> ET.Element:
    found = elem.find(q(ns, name))
    assert found is not None, f"no {name} in {elem.tag}"
    return found


def text(elem: ET.Element, ns: str, name: str) -> str | None:
    return child(elem, ns, name).text


def check_payload(doc: Doc, publication: str) -> list[ET.Element]:
    """The v3 payload wrapping; returns the children after the publication header."""
    root = doc.root
    assert root.tag == q(D2, "payload")
    assert doc.xsi_type(root) == q(PRK, publication)
    assert root.get("lang") == "de"
    assert root.get("modelBaseVersion") == "3"
    assert [c.tag for c in root[:2]] == [q(COM, "publicationTime"), q(COM, "publicationCreator")]
    assert root[0].text == "2026-05-04T12:00:00Z"
    creator = root[1]
    assert [(c.tag, c.text) for c in creator] == [(q(COM, "country"), "DE"), (q(COM, "nationalIdentifier"), "s1")]
    assert set(doc.prefixes.values()) <= {D2, COM, LOC, PRK, XSI}
    for elem in root.iter():
        assert elem.tag.split("}")[0][1:] in {D2, COM, LOC, PRK}
    return list(root[2:])


def table_doc(site: SiteConfig) -> Doc:
    return Doc(datex2.parking_table(site, PUBLISHER, T0, T0 - timedelta(days=1)))


def status_doc(live: LiveState) -> Doc:
    return Doc(datex2.parking_status(live.site, live.lots(), PUBLISHER, T0))


# -- ParkingTablePublication ---------------------------------------------------


def test_the_table_has_one_urban_parking_site_per_lot_with_name_capacity_point_and_type() -> None:
    site = make_site()
    doc = table_doc(site)
    [table] = check_payload(doc, "ParkingTablePublication")
    assert table.tag == q(PRK, "parkingTable")
    assert table.get("id") == "s1"
    assert table.get("version") == datex2.table_version(site)
    assert names(table) == ["parkingTableVersionTime"] + ["parkingRecord"] * len(site.parking)
    assert table[0].text == "2026-05-03T12:00:00Z"
    records = {r.get("id"): r for r in table.findall(q(PRK, "parkingRecord"))}
    assert list(records) == [lot.id for lot in site.parking]
    expected_layout = {
        "open": ("underground", "offStreetParking"),
        "full": ("multiStorey", "offStreetParking"),
        "closed": ("openSpace", "offStreetParking"),
        "stale": ("openSpace", "onStreetParking"),
        "never": ("multiStorey", "offStreetParking"),
        "my:lot": ("multiStorey", "offStreetParking"),
    }
    for lot in site.parking:
        record = records[lot.id]
        assert doc.xsi_type(record) == q(PRK, "UrbanParkingSite")
        assert record.get("version") == datex2.record_version(lot)
        assert names(record) == RECORD_CHILDREN
        value = child(child(child(record, PRK, "parkingName"), COM, "values"), COM, "value")
        assert (value.text, value.get("lang")) == (lot.name, "de")
        assert text(record, PRK, "parkingRecordVersionTime") == "2026-05-03T12:00:00Z"
        assert text(record, PRK, "parkingNumberOfSpaces") == str(lot.total)
        location = child(record, PRK, "parkingLocation")
        assert doc.xsi_type(location) == q(LOC, "PointLocation")
        point = child(child(location, LOC, "pointByCoordinates"), LOC, "pointCoordinates")
        assert names(point) == ["latitude", "longitude"]
        assert float(text(point, LOC, "latitude") or "nan") == lot.coords.lat
        assert float(text(point, LOC, "longitude") or "nan") == lot.coords.lng
        layout = (text(record, PRK, "parkingLayout"), text(record, PRK, "urbanParkingSiteType"))
        assert layout == expected_layout[lot.id]
    assert text(records["open"], PRK, "parkingNumberOfSpaces") == "4"


def test_versions_change_with_the_published_static_fields_only() -> None:
    site = make_site()
    data = site.model_dump()
    data["parking"][1]["bays"] = ["a", "b", "c", "d"]
    grown = SiteConfig.model_validate(data)
    assert datex2.table_version(grown) != datex2.table_version(site)
    assert datex2.record_version(grown.parking[1]) != datex2.record_version(site.parking[1])
    assert datex2.record_version(grown.parking[0]) == datex2.record_version(site.parking[0])
    data["parking"][1]["stale_after_s"] = 5  # not published
    assert datex2.table_version(SiteConfig.model_validate(data)) == datex2.table_version(grown)


def test_a_site_without_lots_publishes_no_table_and_no_status() -> None:
    empty = SiteConfig.model_validate({"site": {"id": "s0", "name": "Empty"}})
    assert check_payload(table_doc(empty), "ParkingTablePublication") == []
    doc = status_doc(LiveState(empty, clock=lambda: T0))
    # The publication type's prefix is declared although no element uses it.
    assert check_payload(doc, "ParkingStatusPublication") == []


# -- ParkingStatusPublication --------------------------------------------------


def statuses(live: LiveState) -> tuple[Doc, dict[str, ET.Element]]:
    doc = status_doc(live)
    body = check_payload(doc, "ParkingStatusPublication")
    ref, *records = body
    assert ref.tag == q(PRK, "parkingTableReference")
    assert (ref.get("id"), ref.get("version")) == ("s1", datex2.table_version(live.site))
    assert doc.qname(ref.get("targetClass")) == q(PRK, "ParkingTable")
    out = {}
    for record in records:
        assert record.tag == q(PRK, "parkingRecordStatus")
        assert doc.xsi_type(record) == q(PRK, "ParkingSiteStatus")
        kids = names(record)
        assert kids == [n for n in STATUS_SEQUENCE if n in kids], "children in the model's order"
        occupancy = child(record, PRK, "parkingOccupancy")
        assert names(occupancy) == [n for n in OCCUPANCY_SEQUENCE if n in names(occupancy)]
        reference = child(record, PRK, "parkingRecordReference")
        assert doc.qname(reference.get("targetClass")) == q(PRK, "ParkingRecord")
        out[reference.get("id") or ""] = record
    assert list(out) == [lot.id for lot in live.site.parking]
    for lot in live.site.parking:
        assert child(out[lot.id], PRK, "parkingRecordReference").get("version") == datex2.record_version(lot)
    return doc, out


def occupancy(record: ET.Element) -> dict[str, str | None]:
    return {c.tag.split("}")[1]: c.text for c in child(record, PRK, "parkingOccupancy")}


def test_a_live_lot_reports_vacant_and_occupied_from_fresh_bays_only(live: LiveState) -> None:
    _, records = statuses(live)
    record = records["open"]
    assert names(record) == [
        "parkingRecordReference",
        "parkingStatusOriginTime",
        "parkingOccupancy",
        "parkingSiteStatus",
        "parkingSiteOpeningStatus",
    ]
    assert text(record, PRK, "parkingStatusOriginTime") == "2026-05-04T11:59:57Z"  # newest reading
    # The stale free bay is not vacant; two bays unknown, so no percentage.
    assert occupancy(record) == {"parkingNumberOfVacantSpaces": "1", "parkingNumberOfOccupiedSpaces": "1"}
    assert text(record, PRK, "parkingSiteStatus") == "spacesAvailable"
    assert text(record, PRK, "parkingSiteOpeningStatus") == "open"


def test_a_full_lot_is_full_with_its_true_vacant_count_and_a_percentage(live: LiveState) -> None:
    _, records = statuses(live)
    record = records["full"]
    assert occupancy(record) == {
        "parkingNumberOfVacantSpaces": "1",
        "parkingNumberOfOccupiedSpaces": "2",
        "parkingOccupancy": "66.7",
    }
    assert text(record, PRK, "parkingSiteStatus") == "full"
    assert text(record, PRK, "parkingSiteOpeningStatus") == "open"


def test_a_closed_lot_is_closed_with_zero_vacant_whatever_its_sensors_say(live: LiveState) -> None:
    _, records = statuses(live)
    record = records["closed"]
    assert names(record) == [
        "parkingRecordReference",
        "parkingStatusOriginTime",
        "parkingOccupancy",
        "parkingSiteOpeningStatus",
    ]
    assert occupancy(record) == {"parkingNumberOfVacantSpaces": "0"}
    assert text(record, PRK, "parkingSiteOpeningStatus") == "closed"
    assert text(record, PRK, "parkingStatusOriginTime") == "2026-05-04T12:00:00Z"


@pytest.mark.parametrize(
    ("lot_id", "last"),
    [("stale", "last reading 2026-05-04T11:58:00Z"), ("never", "none received")],
)
def test_a_lot_without_fresh_data_reports_no_count_and_status_unknown(live: LiveState, lot_id: str, last: str) -> None:
    _, records = statuses(live)
    record = records[lot_id]
    assert names(record) == [
        "parkingRecordReference",
        "parkingStatusOriginTime",
        "parkingStatusDescription",
        "parkingOccupancy",
        "parkingSiteStatus",
    ]
    assert occupancy(record) == {}  # no vacant count, not even 0
    assert text(record, PRK, "parkingSiteStatus") == "unknown"
    # Judged unknown now: the origin time is the publication's, not the stale reading's.
    assert text(record, PRK, "parkingStatusOriginTime") == "2026-05-04T12:00:00Z"
    value = child(child(child(record, PRK, "parkingStatusDescription"), COM, "values"), COM, "value")
    assert value.get("lang") == "en"
    assert value.text is not None and last in value.text and "unknown" in value.text


def test_no_vacant_count_is_ever_published_from_stale_readings(live: LiveState) -> None:
    """Whatever the lot, a vacant count appears only with fresh data (or as 0 when closed)."""
    lots: dict[str, models.ParkingLot] = {lot.id: lot for lot in live.lots()}
    _, records = statuses(live)
    for lot_id, record in records.items():
        lot = lots[lot_id]
        vacant = occupancy(record).get("parkingNumberOfVacantSpaces")
        if lot.state == "closed":
            assert vacant == "0"
        elif lot.state == "nodata":
            assert vacant is None
        else:
            assert vacant == str(lot.free)
