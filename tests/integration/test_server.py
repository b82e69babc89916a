"""The guidance API against real Mosquitto and InfluxDB.

The app runs under a real uvicorn in a thread (its lifespan starts the MQTT
subscriber, the InfluxDB client and the bootstrap); devices are played by a
paho publisher; history is written over InfluxDB's plain HTTP /write with the
gateway's own mapping (contracts.storage.to_points).
"""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from contracts import DeviceStatus, ParkingBayState, encode, new_reading_id, topics, utcnow
from contracts.storage import to_points
from district.provision import Provisioned
from district.services import Service, free_port, start_influxd, start_mosquitto
from gateway.influx import line_protocol
from server.app import create_app
from server.settings import ServerSettings
from tests.conftest import Influx, mqtt_access, wait_for

pytestmark = pytest.mark.integration

SITE_ID = "itest"
SITE_YAML = """
site: {id: itest, name: Integration test site}
parking:
  - id: lot1
    name: Lot One
    coords: {lat: 51.05, lng: 13.73}
    bays: [a, b, c]
    stale_after_s: 600
"""


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE_YAML)
    return path


def settings_for(
    site_file: Path, prefix: str, broker: Service, influx_url: str, db: str, mqtt_port: int | None = None, **kw: Any
) -> ServerSettings:
    """Server settings for a test: the broker's admin credentials (``mqtt_port``: through a proxy instead)."""
    mqtt = mqtt_access(broker).settings() | ({"mqtt_port": mqtt_port} if mqtt_port else {})
    return ServerSettings(
        site_config=site_file,
        **mqtt,
        topic_prefix=prefix,
        influx_url=influx_url,
        influx_db=db,
        bootstrap_window_s=3600,
        db_check_interval_s=0.2,
        **kw,
    )


@contextmanager
def serve(settings: ServerSettings) -> Iterator[httpx.Client]:
    """The app under uvicorn on a free port; yields an HTTP client for it."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=30, what="uvicorn to start")
        assert server.started, "the app did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop"


class Publisher:
    """A device: publishes QoS 1 and waits for the broker's acknowledgement."""

    def __init__(self, broker: Service) -> None:
        self.client = mqtt_access(broker).client(f"itest-pub-{uuid.uuid4().hex[:8]}")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def publisher(broker: Service) -> Iterator[Publisher]:
    pub = Publisher(broker)
    try:
        yield pub
    finally:
        pub.close()


def bay(bay_id: str, status: str, at: datetime | None = None, device: str = "bays-1") -> ParkingBayState:
    return ParkingBayState(
        device_id=device,
        observed_at=at or utcnow(),
        reading_id=new_reading_id(),
        lot_id="lot1",
        bay_id=bay_id,
        status=status,  # type: ignore[arg-type]
    )


def bay_topic(prefix: str, device: str = "bays-1") -> str:
    return topics.build(prefix, SITE_ID, device, "parking_bay")


def lot(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/v1/parking/lots/lot1")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def counts(client: httpx.Client) -> tuple[int, int, int]:
    body = lot(client)
    return body["free"], body["occupied"], body["unknown"]


def health(client: httpx.Client) -> tuple[int, dict[str, Any]]:
    r = client.get("/healthz")
    body: dict[str, Any] = r.json()
    return r.status_code, body


#: How long after its observation the gateway is taken to have received a reading.
LATENCY = timedelta(milliseconds=50)


def write_points(influx: Influx, messages: list[ParkingBayState]) -> None:
    lines = [
        line_protocol(p) for m in messages for p in to_points(m, site_id=SITE_ID, received_at=m.observed_at + LATENCY)
    ]
    params = urllib.parse.urlencode({"db": influx.db, "precision": "ns"})
    req = urllib.request.Request(f"{influx.url}/write?{params}", data="\n".join(lines).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def create_database(url: str, db: str) -> None:
    data = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
    with urllib.request.urlopen(f"{url}/query", data=data, timeout=10) as r:
        r.read()


def test_live_state_follows_the_stream_and_ignores_replays(
    mosquitto: Service, influx_db: Influx, prefix: str, site_file: Path
) -> None:
    settings = settings_for(site_file, prefix, mosquitto, influx_db.url, influx_db.db)
    with serve(settings) as client, publisher(mosquitto) as pub:
        wait_for(lambda: health(client)[0] == 200, timeout=15, what="healthz ok")
        assert counts(client) == (0, 0, 3)
        assert lot(client)["state"] == "nodata"

        pub.publish(bay_topic(prefix), encode(bay("a", "free")))
        pub.publish(bay_topic(prefix), encode(bay("b", "occupied")))
        wait_for(lambda: counts(client) == (1, 1, 1), what="a free, b occupied")
        body = lot(client)
        assert body["state"] == "open" and body["fresh"] is True and body["age_s"] < 60

        # A store-and-forward replay of an older reading must not overwrite a;
        # the reading for c published after it tells us the replay was handled.
        pub.publish(bay_topic(prefix), encode(bay("a", "occupied", at=utcnow() - timedelta(seconds=120))))
        pub.publish(bay_topic(prefix), encode(bay("c", "free")))
        wait_for(lambda: counts(client) == (2, 1, 0), what="c free and a still free")

        # Garbage is counted, not fatal; a device status (retained) is kept.
        pub.publish(bay_topic(prefix), b"\xff not json")
        status = DeviceStatus(device_id="bays-1", observed_at=utcnow(), reading_id=new_reading_id(), state="online")
        pub.publish(topics.status_topic(prefix, SITE_ID, "bays-1"), encode(status), retain=True)
        wait_for(
            lambda: (
                health(client)[1]["broker"]["rejected"].get("not_json") == 1
                and health(client)[1]["devices"]["seen"] == 1
            ),
            what="rejection counted and device status kept",
        )
        pub.publish(bay_topic(prefix), encode(bay("c", "occupied")))
        wait_for(lambda: counts(client) == (1, 2, 0), what="stream still flowing after garbage")
        code, body = health(client)
        assert code == 200 and body["status"] == "ok"
        assert body["devices"]["by_state"] == {"online": 1}
        assert body["broker"]["messages"] >= 7


def test_a_restarted_server_bootstraps_from_influxdb(
    mosquitto: Service, influx_db: Influx, prefix: str, site_file: Path
) -> None:
    now = utcnow()
    write_points(
        influx_db,
        [
            bay("a", "occupied", at=now - timedelta(seconds=30)),
            bay("a", "free", at=now - timedelta(seconds=10)),  # a's last state
            bay("b", "occupied", at=now - timedelta(seconds=20)),
            bay("c", "free", at=now - timedelta(hours=2)),  # outside the 1 h bootstrap window
        ],
    )
    settings = settings_for(site_file, prefix, mosquitto, influx_db.url, influx_db.db)
    with serve(settings) as client:
        # No waiting: the lifespan finished the bootstrap before serving.
        assert counts(client) == (1, 1, 1)
        body = lot(client)
        assert body["state"] == "open"
        # The newest reading as heard on the receiving side's clock (the gateway's received_ns).
        heard = datetime.fromisoformat(body["observed_at"])
        assert abs(heard - (now - timedelta(seconds=10) + LATENCY)) <= timedelta(microseconds=2)
        _, h = health(client)
        assert h["database"]["reachable"] is True
        assert h["database"]["bootstrapped"] is True
        assert h["database"]["bootstrap_bays"] == 2


def test_health_follows_the_broker_down_and_back(
    influx_db: Influx, prefix: str, site_file: Path, tmp_path: Path, broker_pki: Provisioned
) -> None:
    broker = start_mosquitto(tmp_path / "mosquitto", pki=broker_pki)
    try:
        settings = settings_for(site_file, prefix, broker, influx_db.url, influx_db.db)
        with serve(settings) as client:
            wait_for(lambda: health(client)[0] == 200, timeout=15, what="healthz ok")
            broker.stop()
            _, body = wait_for(lambda: (r := health(client))[0] == 503 and r, timeout=15, what="healthz degraded")
            assert body["status"] == "degraded"
            assert body["broker"]["connected"] is False
            assert body["broker"]["error"]
            assert body["database"]["reachable"] is True
            assert client.get("/v1/parking/lots").status_code == 200  # still served from memory

            broker = start_mosquitto(tmp_path / "mosquitto", port=broker.port, pki=broker_pki)
            wait_for(lambda: health(client)[0] == 200, timeout=30, what="reconnected")
            with publisher(broker) as pub:  # resubscribed after the reconnect
                pub.publish(bay_topic(prefix), encode(bay("b", "free")))
                wait_for(lambda: counts(client)[0] == 1, what="a message after the reconnect")
    finally:
        broker.stop()


def test_health_follows_the_database_going_down(
    mosquitto: Service, prefix: str, site_file: Path, tmp_path: Path
) -> None:
    influxd = start_influxd(tmp_path / "influxd")
    try:
        url = f"http://{influxd.host}:{influxd.port}"
        create_database(url, "district")
        settings = settings_for(site_file, prefix, mosquitto, url, "district")
        with serve(settings) as client:
            wait_for(lambda: health(client)[0] == 200, timeout=15, what="healthz ok")
            influxd.stop()
            _, body = wait_for(
                lambda: (r := health(client))[0] == 503 and r, timeout=15, what="database down in healthz"
            )
            assert body["database"]["reachable"] is False
            assert body["database"]["error"]
            assert body["database"]["last_check_age_s"] < 5
            assert body["broker"]["connected"] is True
            assert client.get("/v1/parking/lots").status_code == 200
    finally:
        influxd.stop()


def test_starts_with_influxdb_down_then_bootstraps_when_it_is_back(
    mosquitto: Service, prefix: str, site_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings_for(site_file, prefix, mosquitto, url, "district")
    influxd: Service | None = None
    try:
        with serve(settings) as client, publisher(mosquitto) as pub:
            code, body = health(client)
            assert code == 503
            assert body["database"]["reachable"] is False
            assert body["database"]["bootstrapped"] is False
            assert lot(client)["state"] == "nodata"

            pub.publish(bay_topic(prefix), encode(bay("a", "free")))  # the stream works meanwhile
            wait_for(lambda: counts(client) == (1, 0, 2), what="a from the stream")

            # History written while the server could not see it (a first influxd
            # on another port, same data dir); then the database "comes back".
            first = start_influxd(tmp_path / "influxd")
            try:
                first_url = f"http://{first.host}:{first.port}"
                create_database(first_url, "district")
                write_points(Influx(first_url, "district"), [bay("b", "occupied", at=utcnow() - timedelta(seconds=5))])
            finally:
                first.stop()
            influxd = start_influxd(tmp_path / "influxd", port=port)
            wait_for(
                lambda: health(client)[1]["database"]["bootstrapped"] and health(client)[0] == 200,
                timeout=20,
                what="late bootstrap",
            )
            assert counts(client) == (1, 1, 1)
    finally:
        if influxd is not None:
            influxd.stop()
