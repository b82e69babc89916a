"""Lockers and crowd levels end to end: real Mosquitto and InfluxDB, the real app under uvicorn.

The same mechanism serves every resource: the stream keeps each live store
current, and a restarted server loads each one's last state from InfluxDB.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import FootfallCount, LineCount, LockerCompartmentState, Message, encode, new_reading_id, topics, utcnow
from contracts.storage import to_points
from district.services import Service
from gateway.influx import line_protocol
from tests.conftest import Influx, wait_for
from tests.integration.test_server import health, publisher, serve, settings_for

pytestmark = pytest.mark.integration

SITE_ID = "itest"
SITE_YAML = """
site: {id: itest, name: Integration test site}
zones:
  - {id: square, name: Square, capacity: 20, coords: {lat: 51.05, lng: 13.73}}
lockers:
  - id: bank1
    name: Bank One
    coords: {lat: 51.05, lng: 13.73}
    compartments:
      - {size: S, count: 2, prefix: S}
      - {size: M, count: 1, prefix: M}
cameras:
  - id: cam1
    device: cam-node
    lines: [{id: north, zone: square}]
"""


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE_YAML)
    return path


def compartment(cid: str, status: str, door: str = "closed", at: datetime | None = None) -> LockerCompartmentState:
    return LockerCompartmentState(
        device_id="lockers-1", observed_at=at or utcnow(), reading_id=new_reading_id(), bank_id="bank1",
        compartment_id=cid, status=status, door=door,  # type: ignore[arg-type]
    )  # fmt: skip


def interval(towards: int, away: int, occupancy: int, end: datetime | None = None) -> FootfallCount:
    end = end or utcnow()
    return FootfallCount(
        device_id="cam-node", observed_at=end, reading_id=new_reading_id(), zone_id="square", camera_id="cam1",
        interval_start=end - timedelta(seconds=60), lines=[LineCount(line_id="north", towards=towards, away=away)],
        occupancy=occupancy,
    )  # fmt: skip


def bank(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/v1/lockers/bank1")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def zone(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/v1/zones/square")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def write(influx: Influx, messages: list[Message]) -> None:
    lines = [
        line_protocol(p)
        for m in messages
        for p in to_points(m, site_id=SITE_ID, received_at=m.observed_at + timedelta(milliseconds=50))
    ]
    params = urllib.parse.urlencode({"db": influx.db, "precision": "ns"})
    req = urllib.request.Request(f"{influx.url}/write?{params}", data="\n".join(lines).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def test_lockers_and_zones_follow_the_stream(
    mosquitto: Service, influx_db: Influx, prefix: str, site_file: Path
) -> None:
    settings = settings_for(site_file, prefix, mosquitto, influx_db.url, influx_db.db)
    with serve(settings) as client, publisher(mosquitto) as pub:
        wait_for(lambda: health(client)[0] == 200, timeout=15, what="healthz ok")
        assert bank(client)["state"] == "nodata"
        assert (zone(client)["state"], zone(client)["occupancy"]) == ("nodata", None)

        locker_topic = topics.build(prefix, SITE_ID, "lockers-1", "locker")
        pub.publish(locker_topic, encode(compartment("S01", "occupied", door="open")))
        pub.publish(locker_topic, encode(compartment("M01", "free")))
        wait_for(lambda: (bank(client)["free"], bank(client)["occupied"]) == (1, 1), what="S01 occupied, M01 free")
        body = bank(client)
        assert body["state"] == "open" and body["unknown"] == 1
        assert [d["compartment_id"] for d in body["doors_open"]] == ["S01"]

        cam_topic = topics.build(prefix, SITE_ID, "cam-node", "footfall")
        first = interval(9, 1, occupancy=8)
        pub.publish(cam_topic, encode(first))
        pub.publish(cam_topic, encode(first))  # a redelivery: counted once
        pub.publish(cam_topic, encode(interval(6, 0, occupancy=14)))
        # 8 people are withheld (under k = 10); 14 are published rounded to a multiple of k: 10, half the
        # zone's 20, so "moderate" (the level is of the published share).
        wait_for(lambda: zone(client)["occupancy"] == 10, what="second interval applied")
        z = zone(client)
        assert (z["state"], z["occupancy_state"], z["occupancy_base"], z["level"], z["share"]) == (
            "ok", "coarsened", 10, "moderate", 0.5,
        )  # fmt: skip
        # The flows are of the last completed quarter hour, which these intervals (heard now) are not in,
        # unless a quarter ended between the two: then it holds the first, 9 in and 1 out (10 people, = k),
        # each direction under k: both withheld, and with them the trend (the net flow would bound them).
        q = z["last_15m"]
        end = datetime.fromisoformat(q["end"])
        assert end.timestamp() % 900 == 0 and datetime.fromisoformat(q["start"]) == end - timedelta(minutes=15)
        if q["state"] == "nodata":
            assert (q["entries"], q["exits"], z["trend"]) == (None, None, "unknown")
        else:
            assert (q["state"], q["entries"], q["exits"], q["withheld"], z["trend"]) == (
                "ok", None, None, ["entries", "exits"], "suppressed"
            )  # fmt: skip


def test_a_restarted_server_loads_lockers_and_footfall_from_influxdb(
    mosquitto: Service, influx_db: Influx, prefix: str, site_file: Path
) -> None:
    now = utcnow()
    quarter_end = datetime.fromtimestamp(now.timestamp() // 900 * 900, UTC)  # the last completed quarter hour's
    write(
        influx_db,
        [
            compartment("S01", "free", at=now - timedelta(seconds=40)),
            compartment("S01", "occupied", at=now - timedelta(seconds=20)),  # S01's last state
            compartment("S02", "out_of_service", at=now - timedelta(seconds=30)),
            interval(8, 3, occupancy=3, end=quarter_end - timedelta(minutes=10)),
            interval(2, 2, occupancy=3, end=max(now - timedelta(seconds=30), quarter_end + timedelta(seconds=1))),
        ],
    )
    settings = settings_for(site_file, prefix, mosquitto, influx_db.url, influx_db.db)
    with serve(settings) as client:
        # The lifespan finished the bootstrap before serving: no waiting.
        body = bank(client)
        assert (body["occupied"], body["out_of_service"], body["unknown"], body["state"]) == (1, 1, 1, "full")
        z = zone(client)
        # 3 people: under k = 10, and in a zone of 20 the bands under k (low 0-7, moderate 8-13) would narrow it.
        assert (z["state"], z["occupancy"], z["occupancy_state"], z["level"]) == (
            "ok",
            None,
            "suppressed",
            "suppressed",
        )
        q = z["last_15m"]
        if datetime.fromisoformat(q["end"]) == quarter_end:
            # 11 people: published, but 8 in and 3 out are each under k: both withheld, never 0.
            assert (q["state"], q["entries"], q["exits"], q["withheld"]) == ("ok", None, None, ["entries", "exits"])
        else:  # a quarter ended since: it holds the 2 in and 2 out only
            assert (q["state"], q["entries"], q["exits"]) == ("suppressed", None, None)
