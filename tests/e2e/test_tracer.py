"""The tracer on real services: one bay changes in the simulated controller;
the edge agent reads it over Modbus RTU on a (pseudo) serial line and
publishes it; the gateway validates and stores it in InfluxDB; the server
answers with the new free count. Every component runs as its own process,
as on site; only the simulated controller runs in the test, so the test can
set the bay.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts import ParkingBayState, encode, new_reading_id, topics, utcnow
from contracts.site import SiteConfig
from district.demo import edge_config
from district.services import Service, free_port
from firmware_sim.fleet import Fleet
from tests.conftest import Influx, mqtt_access, wait_for

pytestmark = pytest.mark.e2e

SITE_YAML = """
site: {id: tracer, name: Tracer street}
zones: [{id: z1, name: Zone 1}]
parking:
  - id: lot-t
    name: Tracer garage
    coords: {lat: 51.05, lng: 13.74}
    zone: z1
    bays: {prefix: "T", count: 8}
    stale_after_s: 120
"""

FREE, OCCUPIED = 0, 1


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        with open(self.log, "wb") as out:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "district.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        return self.p.returncode

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture
def pipeline(tmp_path: Path, mosquitto: Service, influx_db: Influx, prefix: str) -> Iterator[dict[str, Any]]:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE_YAML)
    site = SiteConfig.model_validate(yaml.safe_load(SITE_YAML))
    fleet = Fleet(site, tmp_path / "buses", speed=0, seed=1, demand=False, line_timing=False)
    fleet.start()
    bus = json.loads((tmp_path / "buses" / "buses.json").read_text())["buses"][0]
    cfg = edge_config(
        bus,
        device_id="edge-lot-t",
        site_id="tracer",
        access=mqtt_access(mosquitto),
        outbox=tmp_path / "outbox.sqlite",
    )
    cfg["mqtt"]["topic_prefix"] = prefix
    cfg["sensors"][0]["poll_interval_s"] = 0.1
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    common = {
        **mqtt_access(mosquitto).env(),
        "TOPIC_PREFIX": prefix,
        "INFLUX_URL": influx_db.url,
        "INFLUX_DB": influx_db.db,
    }
    procs = [
        Proc("edge", ["edge", "--config", str(tmp_path / "edge.yaml")], {}, tmp_path),
        Proc(
            "gateway",
            ["gateway", "--site", str(site_file)],
            {f"DISTRICT_GATEWAY_{k}": v for k, v in common.items()}
            | {
                "DISTRICT_GATEWAY_MQTT_CLIENT_ID": f"gw-{prefix}",
                "DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(tmp_path / "dead.jsonl"),
            },
            tmp_path,
        ),
        Proc(
            "server",
            ["server", "--site", str(site_file), "--port", str(port)],
            {f"DISTRICT_SERVER_{k}": v for k, v in common.items()},
            tmp_path,
        ),
    ]
    api = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            for p in procs:
                assert p.p.poll() is None, f"{p.name} exited early:\n{p.tail()}"
            try:
                return bool(get_json(f"{api}/v1/parking/lots"))
            except OSError:
                return False

        wait_for(up, 30, what="the API")
        # The gateway stores its own status once subscribed (it publishes it after its SUBSCRIBE,
        # on the same connection): before that, a raw publisher's message would reach no session.
        gateway_status = f"WHERE device = 'gw-{prefix}'"
        wait_for(lambda: influx_db.count("device_status", where=gateway_status) >= 1, 30, what="the gateway")
        yield {
            "fleet": fleet,
            "api": api,
            "influx": influx_db,
            "procs": procs,
            "mosquitto": mosquitto,
            "prefix": prefix,
        }
    finally:
        codes = {p.name: p.stop() for p in reversed(procs)}
        fleet.stop()
    assert codes == {"server": 0, "gateway": 0, "edge": 0}, codes


def test_one_bay_from_simulated_sensor_to_the_api(pipeline: dict[str, Any]) -> None:
    fleet: Fleet = pipeline["fleet"]
    api: str = pipeline["api"]
    influx: Influx = pipeline["influx"]

    lot = wait_for(
        lambda: (d := get_json(f"{api}/v1/parking/lots/lot-t"))["free"] == 8 and d,
        # Start-up bound (first imports in a fresh venv, a loaded CI box), not a timing property: a fresh
        # clone's first CI run once needed more than 20 s.
        60,
        what="all eight bays reported free",
    )
    assert lot["total"] == 8 and lot["occupied"] == 0 and lot["state"] == "open"
    assert lot["fresh"] is True and 0 <= lot["age_s"] < 60  # start-up bound as above; fresh is the property

    before = time.time()
    fleet.set_bay("lot-t", 2, OCCUPIED)  # the third bay, T003
    lot = wait_for(
        lambda: (d := get_json(f"{api}/v1/parking/lots/lot-t"))["free"] == 7 and d,
        20,
        what="the car in T003 to reach the API",
    )
    assert lot["occupied"] == 1 and lot["state"] == "open"
    lots = get_json(f"{api}/v1/parking/lots")
    assert [(x["id"], x["free"]) for x in lots] == [("lot-t", 7)]

    rows = wait_for(
        lambda: influx.query("SELECT status FROM parking_bay WHERE bay = 'T003' AND status = 'occupied'"),
        20,
        what="the occupied reading in InfluxDB",
    )
    assert len(rows) == 1
    assert rows[0]["time"] / 1e9 >= before - 1  # the device's observation time, not a rounded second

    # Fill the lot: the API says full.
    for i in range(8):
        fleet.set_bay("lot-t", i, OCCUPIED)
    lot = wait_for(
        lambda: (d := get_json(f"{api}/v1/parking/lots/lot-t"))["state"] == "full" and d, 20, what="the lot to be full"
    )
    assert lot["free"] == 0


def test_bad_messages_are_rejected_and_the_next_valid_one_is_stored(pipeline: dict[str, Any]) -> None:
    influx: Influx = pipeline["influx"]
    mosquitto: Service = pipeline["mosquitto"]
    prefix: str = pipeline["prefix"]
    topic = topics.build(prefix, "tracer", "intruder", "parking_bay")
    good = ParkingBayState(
        device_id="intruder",
        observed_at=utcnow(),
        reading_id=new_reading_id(),
        lot_id="lot-t",
        bay_id="T008",
        status="closed",
    )
    bad = [
        b"x" * 1_000_000,
        encode(good).replace(b'"parking_bay"', b'"parking_space"'),
        encode(good).replace(b'"bay_id":"T008",', b""),
        encode(good).replace(b'"lot_id":"lot-t"', b'"lot_id":7'),
        encode(good.model_copy(update={"observed_at": utcnow().replace(year=2099)})),
        encode(good.model_copy(update={"bay_id": "T999"})),
    ]
    client = mqtt_access(mosquitto).client(f"intruder-{prefix}")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        for payload in [*bad, encode(good)]:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    rows = wait_for(
        lambda: influx.query(f"SELECT status FROM parking_bay WHERE reading_id = '{good.reading_id}'"),
        20,
        what="the valid message after the bad ones",
    )
    assert rows[0]["status"] == "closed"
    assert influx.count("parking_bay", where="WHERE device = 'intruder'") == 1
