"""ParkAPI JSON: the v1 city document (checked against ParkAPI's own JSON schema) and v3 sites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from server import models
from server.feeds import models as fm
from server.feeds import parkapi
from server.live import LiveState
from tests.unit.server.feeds.conftest import T0

ZONES = {"z-live": "Market", "z-none": "Arcade"}


def city(live: LiveState) -> dict[str, Any]:
    return parkapi.city(live.lots(), T0, ZONES)


def by_id(items: list[dict[str, Any]], key: str = "id") -> dict[str, dict[str, Any]]:
    return {item[key]: item for item in items}


def test_the_city_document_conforms_to_parkapis_schema(live: LiveState, shared_dir: Path) -> None:
    schema_path = shared_dir / "data/parking/parkapi-dresden/schema/city_schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    doc = city(live)
    # Its "$schema" is ParkenDD's own URL; the keywords are draft 4. Formats are not checked:
    # the schema says date-time, while ParkAPI itself writes naive UTC times as we do.
    validator = jsonschema.Draft4Validator(schema)
    validator.validate(doc)
    # The validator is live: ParkAPI has no "full" state, which is why a full lot is "open" here.
    bad = json.loads(json.dumps(doc))
    bad["lots"][1]["state"] = "full"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    fm.ParkApiCity.model_validate(doc)  # and our OpenAPI model, with no extra keys


def test_city_lots_carry_free_only_with_fresh_data(live: LiveState) -> None:
    doc = city(live)
    assert doc["last_updated"] == "2026-05-04T11:59:58"  # newest reading behind a published count
    assert doc["last_downloaded"] == "2026-05-04T12:00:00"
    lots = by_id(doc["lots"])
    assert list(lots) == ["open", "full", "closed", "stale", "never", "my:lot"]
    assert lots["open"] == {
        "id": "open",
        "name": "Open Garage",
        "coords": {"lat": 51.0, "lng": 13.7},
        "address": "Street 1",
        "lot_type": "Tiefgarage",
        "region": "Market",
        "total": 4,
        "free": 1,
        "state": "open",
        "forecast": False,
    }
    assert (lots["full"]["state"], lots["full"]["free"], lots["full"]["lot_type"]) == ("open", 1, "Parkhaus")
    assert (lots["closed"]["state"], lots["closed"]["free"], lots["closed"]["lot_type"]) == ("closed", 0, "Parkplatz")
    for lot_id in ("stale", "never"):
        assert lots[lot_id]["state"] == "nodata"
        assert "free" not in lots[lot_id], "no count without fresh data, not even 0"
    assert "region" not in lots["full"]


def test_city_times_fall_back_to_older_readings_then_to_now(lots: dict[str, models.ParkingLot]) -> None:
    stale_only = [lots["stale"], lots["never"]]
    assert parkapi.city(stale_only, T0, {})["last_updated"] == "2026-05-04T11:58:00"
    assert parkapi.city([lots["never"]], T0, {})["last_updated"] == "2026-05-04T12:00:00"
    assert parkapi.city([], T0, {}) == {
        "last_updated": "2026-05-04T12:00:00",
        "last_downloaded": "2026-05-04T12:00:00",
        "lots": [],
    }


def test_v3_sites_carry_realtime_fields_only_while_fresh(live: LiveState) -> None:
    doc = parkapi.parking_sites(live.lots(), T0)
    fm.ParkApiSites.model_validate(doc)
    sites = by_id(doc["items"], "uid")
    assert sites["open"] == {
        "uid": "open",
        "name": "Open Garage",
        "purpose": "CAR",
        "type": "UNDERGROUND",
        "lat": 51.0,
        "lon": 13.7,
        "address": "Street 1",
        "capacity": 4,
        "has_realtime_data": True,
        "realtime_opening_status": "OPEN",
        "realtime_capacity": 4,
        "realtime_free_capacity": 1,
        "realtime_data_updated_at": "2026-05-04T11:59:57Z",
    }
    assert sites["full"]["type"] == "CAR_PARK"
    assert sites["full"]["realtime_free_capacity"] == 1
    closed = sites["closed"]
    assert (closed["type"], closed["realtime_opening_status"], closed["realtime_free_capacity"]) == (
        "OFF_STREET_PARKING_GROUND",
        "CLOSED",
        0,
    )
    assert closed["realtime_data_updated_at"] == "2026-05-04T12:00:00Z"  # the closure is current
    stale = sites["stale"]
    assert stale["type"] == "ON_STREET"
    assert stale["realtime_opening_status"] == "UNKNOWN"
    assert "realtime_free_capacity" not in stale and "realtime_capacity" not in stale
    assert stale["realtime_data_updated_at"] == "2026-05-04T11:58:00Z"  # honest age: a consumer sees it is old
    assert stale["has_realtime_data"] is True
    never = sites["never"]
    assert never["realtime_opening_status"] == "UNKNOWN"
    assert "realtime_data_updated_at" not in never and "realtime_free_capacity" not in never


@pytest.mark.parametrize("lot_type", ["garage", "underground", "surface", "street"])
def test_every_lot_type_has_a_parkapi_word_and_a_v3_site_type(lot_type: str) -> None:
    assert parkapi.LOT_TYPE_V1[lot_type]
    assert parkapi.SITE_TYPE_V3[lot_type] in fm.ParkApiSite.model_json_schema()["properties"]["type"]["enum"]
