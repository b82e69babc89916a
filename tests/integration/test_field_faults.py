"""Faults from the field, with gateway and server on real Mosquitto and InfluxDB.

Each test is the right value of one of ../shared/bugcases (named in its
docstring), tried as a member of its family rather than the one input.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import DeviceStatus, encode, new_reading_id, topics, utcnow
from contracts.storage import M_DEVICE_STATUS, M_PARKING_BAY
from district.services import Service
from gateway.service import Gateway
from tests.conftest import Influx, mqtt_access, wait_for
from tests.integration.test_gateway import gateway_settings
from tests.integration.test_server import (
    SITE_ID,
    SITE_YAML,
    bay,
    bay_topic,
    counts,
    health,
    lot,
    publisher,
    serve,
    settings_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE_YAML)
    return path


@pytest.fixture
def gateway(mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(
        gateway_settings(mosquitto, influx_db, prefix, tmp_path, site_id=SITE_ID, mqtt_client_id=f"gw-{prefix}")
    )
    gw.start()
    assert gw.wait_ready(15)
    yield gw
    gw.stop()


# A device that holds its connection open until SIGKILLed: the broker then publishes its will.
_DEVICE = """
import sys, time
from district.services import BrokerAccess
access, topic, will, online = BrokerAccess.from_json(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = access.client("dev-" + topic.replace("/", "-"))
c.will_set(topic, will, qos=1, retain=True)
c.connect(access.host, access.port, keepalive=5)
c.loop_start()
c.publish(topic, online, qos=1, retain=True).wait_for_publish(5)
print("up", flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("connected_for", [timedelta(days=15), timedelta(hours=1)], ids=["15-days", "1-hour"])
def test_last_will_of_a_long_lived_connection_marks_the_device_offline(
    mosquitto: Service,
    influx_db: Influx,
    prefix: str,
    site_file: Path,
    gateway: Gateway,
    tmp_path: Path,
    connected_for: timedelta,
) -> None:
    """Bugcase 01: the will carries the connect time (weeks ago); it is when the broker delivers it that
    the device went away. Neither rejected as stale nor stored before the heartbeats that followed."""
    topic = topics.status_topic(prefix, SITE_ID, "dev1")
    will = DeviceStatus(
        device_id="dev1", observed_at=utcnow() - connected_for, reading_id=new_reading_id(), state="offline",
        reason="connection_lost",
    )  # fmt: skip
    online = DeviceStatus(device_id="dev1", observed_at=utcnow(), reading_id=new_reading_id(), state="online")
    with serve(settings_for(site_file, prefix, mosquitto, influx_db.url, influx_db.db)) as client:
        dev = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _DEVICE,
                mqtt_access(mosquitto).to_json(),
                topic,
                encode(will).decode(),
                encode(online).decode(),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert dev.stdout is not None and dev.stdout.readline().strip() == "up"
            wait_for(lambda: health(client)[1]["devices"]["by_state"].get("online", 0) >= 1, 10, what="online")
            dev.send_signal(signal.SIGKILL)  # a power cut: no DISCONNECT, the broker sends the will
            dev.wait(10)
        finally:
            if dev.poll() is None:
                dev.kill()
                dev.wait(10)
            if dev.stdout is not None:
                dev.stdout.close()

        def state_of_dev1() -> str | None:
            rows = influx_db.query(f"SELECT last(state) FROM \"{M_DEVICE_STATUS}\" WHERE device='dev1'")
            return str(rows[0]["last"]) if rows else None

        wait_for(lambda: state_of_dev1() == "offline", 20, what="InfluxDB last(state) = offline")
        _, body = health(client)
        assert body["devices"]["by_state"].get("offline") == 1
        assert "stale_timestamp" not in body["broker"]["rejected"]
    assert "stale_timestamp" not in gateway.stats().rejected
    dead = tmp_path / "dead.jsonl"
    assert not dead.exists() or "stale_timestamp" not in dead.read_text()


def test_a_cleared_retained_status_removes_the_device(
    mosquitto: Service, influx_db: Influx, prefix: str, site_file: Path, gateway: Gateway
) -> None:
    """An empty retained payload is how MQTT deletes a retained message: not garbage, not a rejection."""
    topic = topics.status_topic(prefix, SITE_ID, "gone-1")
    status = DeviceStatus(device_id="gone-1", observed_at=utcnow(), reading_id=new_reading_id(), state="online")
    with serve(settings_for(site_file, prefix, mosquitto, influx_db.url, influx_db.db)) as client:
        with publisher(mosquitto) as pub:
            pub.publish(topic, encode(status), retain=True)
            wait_for(lambda: health(client)[1]["devices"]["seen"] >= 2, 10, what="the device seen")  # and the gateway
            pub.publish(topic, b"", retain=True)
            wait_for(lambda: health(client)[1]["devices"]["seen"] == 1, 10, what="the device forgotten")
        _, body = health(client)
        assert body["broker"]["rejected"] == {}
    wait_for(lambda: gateway.stats().ignored.get("status_cleared", 0) == 1, 10, what="gateway counts the clear")
    assert gateway.stats().rejected == {}


def test_a_device_whose_clock_lags_is_heard_and_its_offset_reported(
    mosquitto: Service, influx_db: Influx, prefix: str, site_file: Path
) -> None:
    """Bugcase 06: three readings 2 s apart, each stamped 11 minutes ago (stale_after_s is 600)."""
    with serve(settings_for(site_file, prefix, mosquitto, influx_db.url, influx_db.db)) as client:
        with publisher(mosquitto) as pub:
            for _ in range(3):
                pub.publish(bay_topic(prefix), encode(bay("a", "occupied", at=utcnow() - timedelta(minutes=11))))
                time.sleep(0.5)
        wait_for(lambda: counts(client)[1] == 1, 10, what="bay a occupied")
        body = lot(client)
        assert body["state"] != "nodata" and body["fresh"] is True and body["age_s"] < 5
        _, h = health(client)
        assert 655 < h["devices"]["clock_offset_s"]["bays-1"] < 665


def test_same_second_readings_keep_both_and_the_later_wins(
    mosquitto: Service, influx_db: Influx, prefix: str, site_file: Path, gateway: Gateway
) -> None:
    """Bugcase 08, both forms: a whole-second clock without seq (third-party), and with seq (ours)."""
    t = utcnow().replace(microsecond=0)
    with serve(settings_for(site_file, prefix, mosquitto, influx_db.url, influx_db.db)) as client:
        with publisher(mosquitto) as pub:
            for bay_id, extra in (("a", {}), ("b", {"epoch": "e1", "seq": 999})):
                first = bay(bay_id, "free", at=t).model_copy(update={"reading_id": "f" * 32, **extra})
                upd: dict[str, Any] = {"reading_id": "0" * 31 + "1", "status": "occupied"}
                if extra:
                    upd["seq"] = 1000  # crosses the tie-breaker's wrap: still two keys
                second = first.model_copy(update=upd)
                pub.publish(bay_topic(prefix), encode(first))
                time.sleep(0.3)
                pub.publish(bay_topic(prefix), encode(second))
        wait_for(lambda: counts(client)[1] == 2, 10, what="a and b occupied")
    wait_for(lambda: influx_db.count(M_PARKING_BAY) == 4, 10, what="four points")
    rows = influx_db.query(f'SELECT status, reading_id FROM "{M_PARKING_BAY}" GROUP BY "bay"')
    assert sorted((r["bay"], r["status"]) for r in rows) == [
        ("a", "free"), ("a", "occupied"), ("b", "free"), ("b", "occupied"),
    ]  # fmt: skip


class CutProxy:
    """A loopback TCP forwarder that can be cut, as a network blip between the server and the broker."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.open = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            if not self.open:
                down.close()
                continue
            up = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()

    def cut(self) -> None:
        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self._listener.close()


@pytest.mark.parametrize("session_expiry_s", [300, 0], ids=["session", "no-session"])
def test_changes_during_a_link_blip_are_applied_after_reconnect(
    mosquitto: Service, influx_db: Influx, prefix: str, site_file: Path, gateway: Gateway, session_expiry_s: int
) -> None:
    """Bugcase 04: the server's link drops for ~5 s while three cars park. With a session the broker
    queues for the server; without one (expired, a broker restart) the catch-up from history covers it."""
    proxy = CutProxy(mosquitto.port)
    settings = settings_for(
        site_file, prefix, mosquitto, influx_db.url, influx_db.db, proxy.port, mqtt_session_expiry_s=session_expiry_s
    )
    try:
        with serve(settings) as client, publisher(mosquitto) as pub:
            for b in ("a", "b", "c"):
                pub.publish(bay_topic(prefix), encode(bay(b, "free")))
            wait_for(lambda: counts(client) == (3, 0, 0), 10, what="three free")
            proxy.cut()
            wait_for(lambda: not health(client)[1]["broker"]["connected"], 15, what="the server notices the cut")
            for b in ("a", "b"):
                pub.publish(bay_topic(prefix), encode(bay(b, "occupied")))
            wait_for(lambda: influx_db.count(M_PARKING_BAY) == 5, 10, what="the gateway stored the changes")
            time.sleep(1)
            proxy.restore()
            wait_for(lambda: health(client)[1]["broker"]["connected"], 20, what="reconnected")
            wait_for(lambda: counts(client) == (1, 2, 0), 10, what="the changes applied after the blip")
    finally:
        proxy.close()
