"""NGSI-LD entities (Smart Data Models) in normalized and keyValues form."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from server import models
from server.feeds import models as fm
from server.feeds import ngsild
from server.feeds.zones import ZoneSnapshot, zones_without_data
from server.live import BayReading, LiveState
from tests.unit.server.feeds.conftest import LIVE_ZONE, T0, make_site, reading

PARKING_CONTEXT = [ngsild.PARKING_CONTEXT, ngsild.CORE_CONTEXT]
MODELS: dict[tuple[str, bool], type[BaseModel]] = {
    ("OffStreetParking", False): fm.OffStreetParkingNormalized,
    ("OffStreetParking", True): fm.OffStreetParkingKeyValues,
    ("ParkingSpot", False): fm.ParkingSpotNormalized,
    ("ParkingSpot", True): fm.ParkingSpotKeyValues,
    ("CrowdFlowObserved", False): fm.CrowdFlowObservedNormalized,
    ("CrowdFlowObserved", True): fm.CrowdFlowObservedKeyValues,
}


def checked(entity: dict[str, Any], key_values: bool) -> dict[str, Any]:
    """The entity, after checking it against its response model (no unknown or mistyped attribute)."""
    MODELS[(entity["type"], key_values)].model_validate(entity)
    return entity


def osp(lot: models.ParkingLot, key_values: bool = False) -> dict[str, Any]:
    return checked(ngsild.off_street_parking("s1", lot, key_values=key_values), key_values)


# -- OffStreetParking ----------------------------------------------------------


def test_a_live_lot_normalized_has_counts_observed_when_read(lots: dict[str, models.ParkingLot]) -> None:
    at = "2026-05-04T11:59:57Z"
    assert osp(lots["open"]) == {
        "id": "urn:ngsi-ld:OffStreetParking:s1:open",
        "type": "OffStreetParking",
        "name": {"type": "Property", "value": "Open Garage"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [13.7, 51.0]}},
        "address": {"type": "Property", "value": {"streetAddress": "Street 1"}},
        "category": {"type": "Property", "value": ["underground"]},
        "totalSpotNumber": {"type": "Property", "value": 4},
        "availableSpotNumber": {"type": "Property", "value": 1, "observedAt": at},
        "occupiedSpotNumber": {"type": "Property", "value": 1, "observedAt": at},
        "status": {"type": "Property", "value": ["open", "spacesAvailable"], "observedAt": at},
        "@context": PARKING_CONTEXT,
    }


def test_the_same_lot_in_key_values(lots: dict[str, models.ParkingLot]) -> None:
    assert osp(lots["open"], key_values=True) == {
        "id": "urn:ngsi-ld:OffStreetParking:s1:open",
        "type": "OffStreetParking",
        "name": "Open Garage",
        "location": {"type": "Point", "coordinates": [13.7, 51.0]},
        "address": {"streetAddress": "Street 1"},
        "category": ["underground"],
        "totalSpotNumber": 4,
        "availableSpotNumber": 1,
        "occupiedSpotNumber": 1,
        "status": ["open", "spacesAvailable"],
        "@context": PARKING_CONTEXT,
    }


def test_a_full_lot_every_bay_known_has_an_occupancy_share(lots: dict[str, models.ParkingLot]) -> None:
    e = osp(lots["full"], key_values=True)
    assert (e["availableSpotNumber"], e["occupiedSpotNumber"], e["occupancy"]) == (1, 2, 0.6667)
    assert e["status"] == ["open", "full"]
    assert e["category"] == ["parkingGarage"]
    assert "address" not in e


def test_a_closed_lot_has_zero_available_and_status_closed(lots: dict[str, models.ParkingLot]) -> None:
    e = osp(lots["closed"])
    assert e["availableSpotNumber"] == {"type": "Property", "value": 0}
    assert e["status"] == {"type": "Property", "value": ["closed"]}
    assert "occupiedSpotNumber" not in e and "occupancy" not in e
    assert e["category"]["value"] == ["parkingLot"]


@pytest.mark.parametrize("lot_id", ["stale", "never"])
@pytest.mark.parametrize("key_values", [False, True])
def test_a_lot_without_fresh_data_has_no_counts_and_no_status(
    lots: dict[str, models.ParkingLot], lot_id: str, key_values: bool
) -> None:
    e = osp(lots[lot_id], key_values)
    assert set(e) == {"id", "type", "name", "location", "category", "totalSpotNumber", "@context"}


# -- ParkingSpot ---------------------------------------------------------------


def spot(
    live: LiveState, lot_id: str, bay_id: str, key_values: bool = False, now_offset_s: float = 0
) -> dict[str, Any]:
    lot = {lot.id: lot for lot in live.lots()}[lot_id]
    now = T0 + timedelta(seconds=now_offset_s)
    return checked(
        ngsild.parking_spot("s1", lot, bay_id, live.bay(lot_id, bay_id), now, key_values=key_values), key_values
    )


def test_a_fresh_bay_normalized(live: LiveState) -> None:
    assert spot(live, "open", "B001") == {
        "id": "urn:ngsi-ld:ParkingSpot:s1:open:B001",
        "type": "ParkingSpot",
        "name": {"type": "Property", "value": "B001"},
        "category": {"type": "Property", "value": ["offStreet"]},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [13.7, 51.0]}},
        "status": {"type": "Property", "value": "free", "observedAt": "2026-05-04T11:59:50Z"},
        "refParkingSite": {"type": "Relationship", "object": "urn:ngsi-ld:OffStreetParking:s1:open"},
        "@context": PARKING_CONTEXT,
    }


def test_a_fresh_bay_in_key_values(live: LiveState) -> None:
    assert spot(live, "open", "B002", key_values=True) == {
        "id": "urn:ngsi-ld:ParkingSpot:s1:open:B002",
        "type": "ParkingSpot",
        "name": "B002",
        "category": ["offStreet"],
        "location": {"type": "Point", "coordinates": [13.7, 51.0]},
        "status": "occupied",
        "refParkingSite": "urn:ngsi-ld:OffStreetParking:s1:open",
        "@context": PARKING_CONTEXT,
    }


@pytest.mark.parametrize(
    ("lot_id", "bay_id", "status"),
    [
        ("open", "B003", "unknown"),  # free, but heard 600 s ago: never a stale free
        ("open", "B004", "unknown"),  # never heard
        ("closed", "x", "closed"),  # its sensor says free; the lot is closed
        ("stale", "s1", "unknown"),
        ("stale", "s2", "unknown"),
    ],
)
def test_bay_status_follows_the_live_rule(live: LiveState, lot_id: str, bay_id: str, status: str) -> None:
    e = spot(live, lot_id, bay_id)
    assert e["status"] == {"type": "Property", "value": status}, "no observedAt on a status nobody observed"


def test_a_bay_turns_unknown_once_stale_and_street_bays_are_on_street(live: LiveState) -> None:
    assert spot(live, "open", "B001", now_offset_s=49)["status"]["value"] == "free"
    assert spot(live, "open", "B001", now_offset_s=50)["status"]["value"] == "unknown"
    assert spot(live, "stale", "s1", key_values=True)["category"] == ["onStreet"]


def test_a_bay_reporting_closed_or_unknown_passes_through(live: LiveState) -> None:
    assert live.apply_bay("open", "B004", reading("closed", 1, 100))
    assert spot(live, "open", "B004", key_values=True)["status"] == "closed"
    lot = live.lot("open")
    assert lot is not None
    status, heard = ngsild.spot_status(lot, BayReading.of("unknown", T0, "r000000101"), T0)
    assert (status, heard) == ("unknown", T0)


# -- CrowdFlowObserved ---------------------------------------------------------


def test_a_live_zone_normalized() -> None:
    at = "2026-05-04T11:59:55Z"
    counted = "2026-05-04T12:00:00Z"  # the end of the completed quarter hour the counts are of
    e = checked(ngsild.crowd_flow_observed("s1", LIVE_ZONE, key_values=False), False)
    assert e == {
        "id": "urn:ngsi-ld:CrowdFlowObserved:s1:z-live",
        "type": "CrowdFlowObserved",
        "name": {"type": "Property", "value": "Market"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [13.74, 51.05]}},
        "dateObserved": {"type": "Property", "value": "2026-05-04T11:45:00Z/2026-05-04T12:00:00Z"},
        "dateObservedFrom": {"type": "Property", "value": {"@type": "DateTime", "@value": "2026-05-04T11:45:00Z"}},
        "dateObservedTo": {"type": "Property", "value": {"@type": "DateTime", "@value": "2026-05-04T12:00:00Z"}},
        "peopleCountTowards": {"type": "Property", "value": 40, "observedAt": counted},
        "peopleCountAway": {"type": "Property", "value": 25, "observedAt": counted},
        "peopleCount": {"type": "Property", "value": 65, "observedAt": counted},
        "occupancy": {"type": "Property", "value": 0.75, "observedAt": at},
        "occupancyState": {"type": "Property", "value": "coarsened", "observedAt": at},
        "occupancyBase": {"type": "Property", "value": 10, "observedAt": at},
        "congested": {"type": "Property", "value": False, "observedAt": at},
        "crowdLevel": {"type": "Property", "value": "high", "observedAt": at},
        "@context": [ngsild.TRANSPORTATION_CONTEXT, ngsild.CORE_CONTEXT],
    }


def test_a_live_zone_in_key_values_and_congestion_at_very_high() -> None:
    from dataclasses import replace

    crowded = replace(LIVE_ZONE, level="very_high", occupancy=260)
    e = checked(ngsild.crowd_flow_observed("s1", crowded, key_values=True), True)
    assert e["dateObservedFrom"] == "2026-05-04T11:45:00Z"
    assert e["dateObservedTo"] == "2026-05-04T12:00:00Z"
    assert (e["peopleCountTowards"], e["peopleCountAway"], e["peopleCount"]) == (40, 25, 65)
    assert e["occupancy"] == 1.0  # more people than the capacity: the share is capped at 1
    assert (e["congested"], e["crowdLevel"]) == (True, "very_high")


def test_a_zone_without_fresh_data_says_nodata_and_gives_no_counts() -> None:
    from dataclasses import replace

    stale = replace(LIVE_ZONE, fresh=False)
    e = checked(ngsild.crowd_flow_observed("s1", stale, key_values=True), True)
    assert e == {
        "id": "urn:ngsi-ld:CrowdFlowObserved:s1:z-live",
        "type": "CrowdFlowObserved",
        "name": "Market",
        "location": {"type": "Point", "coordinates": [13.74, 51.05]},
        "dateObserved": "2026-05-04T11:59:55Z",  # when it was last observed
        "crowdLevel": "nodata",
        "@context": [ngsild.TRANSPORTATION_CONTEXT, ngsild.CORE_CONTEXT],
    }
    never = zones_without_data(make_site())[1]
    assert never == ZoneSnapshot(id="z-none", name="Arcade")
    e = checked(ngsild.crowd_flow_observed("s1", never, key_values=False), False)
    assert set(e) == {"id", "type", "name", "crowdLevel", "@context"}
    assert e["crowdLevel"] == {"type": "Property", "value": "nodata"}


def test_figures_under_k_people_are_absent_and_marked_never_zero() -> None:
    from dataclasses import replace

    # What the zone store gives for a quarter and an occupancy under k in a small zone (server.stores.zones).
    under = replace(LIVE_ZONE, entries_15m=None, exits_15m=None, flow_state="suppressed", occupancy=None,
                    occupancy_state="suppressed", occupancy_base=None, level="suppressed")  # fmt: skip
    e = checked(ngsild.crowd_flow_observed("s1", under, key_values=True), True)
    assert not {
        "peopleCountTowards",
        "peopleCountAway",
        "peopleCount",
        "occupancy",
        "occupancyBase",
        "congested",
    } & set(e)
    assert (e["peopleCountState"], e["occupancyState"], e["crowdLevel"]) == ("suppressed", "suppressed", "suppressed")
    assert e["dateObservedTo"] == "2026-05-04T12:00:00Z"  # the interval the withheld counts are of
    e = checked(ngsild.crowd_flow_observed("s1", under, key_values=False), False)
    assert e["peopleCountState"] == {"type": "Property", "value": "suppressed", "observedAt": "2026-05-04T12:00:00Z"}
    assert e["occupancyState"] == {"type": "Property", "value": "suppressed", "observedAt": "2026-05-04T11:59:55Z"}
    # A quarter with no camera interval in it: no counts, and nothing claims they were withheld.
    empty = replace(LIVE_ZONE, entries_15m=None, exits_15m=None, flow_state="nodata")
    e = checked(ngsild.crowd_flow_observed("s1", empty, key_values=True), True)
    assert "peopleCountState" not in e and "peopleCount" not in e and e["occupancy"] == 0.75


# -- ids -----------------------------------------------------------------------


def test_ids_split_back_into_type_and_local_id() -> None:
    assert ngsild.entity_id("ParkingSpot", "s1", "my:lot", "b:1") == "urn:ngsi-ld:ParkingSpot:s1:my:lot:b:1"
    assert ngsild.split_entity_id("urn:ngsi-ld:ParkingSpot:s1:my:lot:b:1", "s1") == ("ParkingSpot", "my:lot:b:1")
    assert ngsild.split_entity_id("urn:ngsi-ld:OffStreetParking:s1:open", "s1") == ("OffStreetParking", "open")
    assert ngsild.split_entity_id("urn:ngsi-ld:OffStreetParking:s2:open", "s1") is None
    assert ngsild.split_entity_id("urn:ngsi-ld:OffStreetParking:s1:", "s1") is None
    assert ngsild.split_entity_id("urn:ngsi-ld:Vehicle:s1:x", "s1") is None


def test_a_withheld_direction_in_normalized_form_is_absent_with_its_state() -> None:
    """A quarter of 40 in and 3 out (k = 10): the 3 is absent, and so is the sum that would give it back; each
    absence is said by a normalized Property observed at the quarter's end, never by a 0."""
    from dataclasses import replace

    counted = "2026-05-04T12:00:00Z"
    one_way = replace(LIVE_ZONE, exits_15m=None)  # what the zone store gives when the exits are withheld
    e = checked(ngsild.crowd_flow_observed("s1", one_way, key_values=False), False)
    assert e["peopleCountTowards"] == {"type": "Property", "value": 40, "observedAt": counted}
    assert "peopleCountAway" not in e and "peopleCount" not in e
    assert e["peopleCountAwayState"] == {"type": "Property", "value": "suppressed", "observedAt": counted}
    assert e["peopleCountState"] == {"type": "Property", "value": "suppressed", "observedAt": counted}
    assert "peopleCountTowardsState" not in e
    kv = checked(ngsild.crowd_flow_observed("s1", one_way, key_values=True), True)
    assert (kv["peopleCountTowards"], kv["peopleCountAwayState"], kv["peopleCountState"]) == (
        40,
        "suppressed",
        "suppressed",
    )
    assert "peopleCountAway" not in kv and "peopleCount" not in kv
