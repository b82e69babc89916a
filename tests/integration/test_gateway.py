"""The gateway against real Mosquitto and InfluxDB 1.x.

Every kind lands with the right tags, fields and ns timestamps; every kind of
bad input is rejected, counted and dead-lettered while its neighbours are
stored; and nothing is lost when InfluxDB goes away, when the gateway is
SIGKILLed mid-stream, or when a reading arrives twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from contracts import (
    DeviceStatus,
    FootfallCount,
    LineCount,
    LockerCompartmentState,
    ParkingBayState,
    encode,
    new_reading_id,
    topics,
    utcnow,
)
from contracts.storage import (
    M_DEVICE_STATUS,
    M_FOOTFALL,
    M_GATEWAY_STATS,
    M_LOCKER,
    M_PARKING_BAY,
    M_ZONE_OCCUPANCY,
    point_ns,
)
from district.services import Service, start_influxd
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from tests.conftest import REPO, Influx, mqtt_access, wait_for

pytestmark = pytest.mark.integration

DRESDEN = REPO / "district" / "sites" / "dresden.yaml"
SITE = "dresden"


class Publisher:
    """A plain QoS 1 publisher (what an edge device does)."""

    def __init__(self, svc: Service) -> None:
        self.client = mqtt_access(svc).client(f"pub-{uuid.uuid4().hex[:8]}")
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)
        self.client.connect(svc.host, svc.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.send_many([(topic, payload)], retain=retain)

    def send_many(self, messages: list[tuple[str, bytes]], *, retain: bool = False) -> None:
        infos = [self.client.publish(t, p, qos=1, retain=retain) for t, p in messages]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published(), "broker did not acknowledge a publish"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto: Service) -> Iterator[Publisher]:
    pub = Publisher(mosquitto)
    yield pub
    pub.close()


def gateway_settings(
    mosquitto: Service, influx: Influx, prefix: str, tmp_path: Path, **over: object
) -> GatewaySettings:
    values: dict[str, object] = {
        **mqtt_access(mosquitto).settings(),
        "mqtt_client_id": f"gw-{prefix}",
        "topic_prefix": prefix,
        "influx_url": influx.url,
        "influx_db": influx.db,
        "flush_interval_s": 0.05,
        "stats_interval_s": 0.5,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.5,
        "dead_letter_path": tmp_path / "dead.jsonl",
    }
    values.update(over)
    return GatewaySettings.model_validate(values)


@pytest.fixture
def run_gateway(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[GatewaySettings], Gateway]]:
    """Start gateways in this process; stop them after the test and fail on any logged exception."""
    caplog.set_level(logging.INFO, logger="gateway")
    running: list[Gateway] = []

    def start(settings: GatewaySettings) -> Gateway:
        gw = Gateway(settings)
        gw.start()
        running.append(gw)
        assert gw.wait_ready(15), "gateway did not connect and subscribe"
        return gw

    yield start
    for gw in running:
        gw.stop()
    crashed = [r for r in caplog.records if r.name.startswith("gateway") and r.exc_info]
    assert not crashed, f"a gateway callback or thread raised: {crashed[0].getMessage()}"


def bay(
    device: str = "edge-dresdenaltmarkt", lot: str = "dresdenaltmarkt", bay_id: str = "AM-001", **over: object
) -> ParkingBayState:
    fields: dict[str, object] = {
        "device_id": device,
        "observed_at": utcnow(),
        "reading_id": new_reading_id(),
        "lot_id": lot,
        "bay_id": bay_id,
        "status": "occupied",
    }
    fields.update(over)
    return ParkingBayState.model_validate(fields)


def topic_of(prefix: str, device: str, kind: str, site: str = SITE) -> str:
    return topics.build(prefix, site, device, kind)


# -- 1. every kind lands, with tags, fields and ns timestamps ----------------------------------


def test_every_kind_is_stored_with_tags_fields_and_ns_time(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path, publisher: Publisher, run_gateway: Callable
) -> None:
    gw = run_gateway(gateway_settings(mosquitto, influx_db, prefix, tmp_path))
    t0 = (utcnow() - timedelta(seconds=1)).replace(microsecond=500_000)  # in the past, whatever now is
    first = bay(observed_at=t0, status="occupied")
    second = bay(observed_at=t0 + timedelta(milliseconds=1), status="free")  # same bay, 1 ms later
    locker = LockerCompartmentState(
        device_id="lockers-1",
        observed_at=t0,
        reading_id=new_reading_id(),
        bank_id="lockers-altmarkt",
        compartment_id="S01",
        status="occupied",
        door="closed",
    )
    footfall = FootfallCount(
        device_id="cam-1",
        observed_at=t0,
        reading_id=new_reading_id(),
        zone_id="altmarkt",
        interval_start=t0 - timedelta(seconds=60),
        lines=[LineCount(line_id="north", towards=7, away=3), LineCount(line_id="south", towards=1, away=0)],
        occupancy=42,
    )
    status = DeviceStatus.model_validate(
        {
            "device_id": "cam-1",
            "observed_at": t0,
            "reading_id": new_reading_id(),
            "state": "degraded",
            "uptime_s": 12.5,
            "cameras": [{"camera_id": "c1", "state": "frozen", "fps": 0.0, "dropped_frames": 3}],
        }
    )
    publisher.send_many(
        [
            (topic_of(prefix, "edge-dresdenaltmarkt", "parking_bay"), encode(first)),
            (topic_of(prefix, "edge-dresdenaltmarkt", "parking_bay"), encode(second)),
            (topic_of(prefix, "lockers-1", "locker"), encode(locker)),
            (topic_of(prefix, "cam-1", "footfall"), encode(footfall)),
            (topic_of(prefix, "cam-1", "status"), encode(status)),
        ]
    )
    wait_for(lambda: gw.stats().acked >= 6, 15, what="5 messages and its own status acknowledged")
    t0_ns = int(t0.timestamp()) * 10**9 + 500_000_000
    # observed_at in ns plus the contract's tie-breaker in the three digits below the microsecond
    assert point_ns(first) // 1000 == t0_ns // 1000 and point_ns(second) // 1000 == (t0_ns + 1_000_000) // 1000

    rows = influx_db.query(f'SELECT * FROM "{M_PARKING_BAY}" ORDER BY time')
    assert [(r["time"], r["status"], r["occupied"], r["reading_id"]) for r in rows] == [
        (point_ns(first), "occupied", 1, first.reading_id),
        (point_ns(second), "free", 0, second.reading_id),
    ]
    assert {(r["site"], r["device"], r["lot"], r["bay"]) for r in rows} == {
        (SITE, "edge-dresdenaltmarkt", "dresdenaltmarkt", "AM-001")
    }
    assert all(r["received_ns"] >= t0_ns for r in rows)

    (lrow,) = influx_db.query(f'SELECT * FROM "{M_LOCKER}"')
    assert (lrow["time"], lrow["bank"], lrow["compartment"], lrow["status"], lrow["door"]) == (
        point_ns(locker),
        "lockers-altmarkt",
        "S01",
        "occupied",
        "closed",
    )

    frows = influx_db.query(f'SELECT * FROM "{M_FOOTFALL}" GROUP BY "line"')
    assert {(r["line"], r["towards"], r["away"], r["interval_s"], r["zone"]) for r in frows} == {
        ("north", 7, 3, 60.0, "altmarkt"),
        ("south", 1, 0, 60.0, "altmarkt"),
    }
    (orow,) = influx_db.query(f'SELECT * FROM "{M_ZONE_OCCUPANCY}"')
    assert (orow["time"], orow["occupancy"]) == (point_ns(footfall), 42)

    srows = influx_db.query(f"SELECT * FROM \"{M_DEVICE_STATUS}\" WHERE device = 'cam-1'")
    assert [(r["time"], r["state"], r["uptime_s"]) for r in srows] == [(point_ns(status), "degraded", 12.5)]
    (crow,) = influx_db.query("SELECT * FROM camera_health")
    assert (crow["camera"], crow["state"], crow["dropped_frames"]) == ("c1", "frozen", 3)

    # The gateway's own retained status went through the same pipe.
    own = influx_db.query(f"SELECT * FROM \"{M_DEVICE_STATUS}\" WHERE device = 'gw-{prefix}'")
    assert own and own[0]["state"] == "online" and own[0]["site"] == "district"
    # ...and its counters reach InfluxDB for operators.
    stats_rows = wait_for(
        lambda: influx_db.query(f'SELECT last("accepted") FROM "{M_GATEWAY_STATS}" WHERE gateway = \'gw-{prefix}\''),
        10,
        what="gateway_stats point",
    )
    assert stats_rows[0]["last"] >= 5
    snap = gw.stats()
    assert (snap.rejected, snap.dropped_points) == ({}, 0)


# -- 2. bad input: rejected, counted by reason, dead-lettered; the loop goes on -----------------


def test_bad_messages_are_rejected_counted_and_neighbours_stored(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path, publisher: Publisher, run_gateway: Callable
) -> None:
    gw = run_gateway(gateway_settings(mosquitto, influx_db, prefix, tmp_path, site_config=DRESDEN))
    good_topic = topic_of(prefix, "edge-dresdenaltmarkt", "parking_bay")

    def field_edit(**edits: object) -> bytes:
        data = json.loads(encode(bay()))
        for key, value in edits.items():
            if value is ...:
                del data[key]
            else:
                data[key] = value
        return json.dumps(data).encode()

    cases: list[tuple[str, str, bytes]] = [
        ("unknown_kind", good_topic, field_edit(kind="toaster")),
        ("missing_field", good_topic, field_edit(bay_id=...)),
        ("wrong_type", good_topic, field_edit(bay_id=5)),
        ("future_timestamp", good_topic, encode(bay(observed_at=utcnow() + timedelta(hours=2)))),
        ("stale_timestamp", good_topic, field_edit(observed_at="1970-01-01T00:00:01Z")),
        ("too_large", good_topic, os.urandom(1 << 20)),
        ("not_json", good_topic, b"\xff\xfe\x00\x81 not utf-8 \xc3\x28"),
        ("kind_mismatch", topic_of(prefix, "edge-dresdenaltmarkt", "locker"), encode(bay())),
        ("device_mismatch", topic_of(prefix, "bays-2", "parking_bay"), encode(bay())),
        ("unknown_entity", good_topic, encode(bay(bay_id="AM-999"))),
        ("unknown_entity", good_topic, encode(bay(lot="nowhere"))),
        ("unknown_site", topic_of(prefix, "edge-dresdenaltmarkt", "parking_bay", site="leipzig"), encode(bay())),
        # A real device of the site, on its own topic, about a lot the site gives another device.
        ("not_owner", topic_of(prefix, "edge-dresdenkarstadt", "parking_bay"), encode(bay("edge-dresdenkarstadt"))),
        ("bad_topic", f"{prefix}/v1/{SITE}/bays-1/toaster", encode(bay())),
    ]
    goods = [bay(bay_id=f"AM-{n + 1:03d}") for n in range(len(cases))]
    stream: list[tuple[str, bytes]] = []
    for (_, topic, payload), good in zip(cases, goods, strict=True):
        stream += [(topic, payload), (good_topic, encode(good))]
    publisher.send_many(stream)

    # +1: the gateway's own retained status comes through the same pipe.
    wait_for(lambda: gw.stats().acked >= len(stream) + 1, 20, what="every message acknowledged")
    expected: dict[str, int] = {}
    for reason, _, _ in cases:
        expected[reason] = expected.get(reason, 0) + 1
    snap = gw.stats()
    assert snap.rejected == expected
    assert (snap.received, snap.accepted) == (len(stream) + 1, len(goods) + 1)
    stored = {r["reading_id"] for r in influx_db.query(f'SELECT reading_id FROM "{M_PARKING_BAY}"')}
    assert stored == {g.reading_id for g in goods}

    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in letters] == [reason for reason, _, _ in cases]
    big = letters[5]
    assert big["payload_bytes"] == 1 << 20 and len(big.get("payload_b64", big.get("payload", ""))) <= 1400
    assert "payload_b64" in letters[6] and letters[6]["topic"] == good_topic


# -- 3. loses nothing ---------------------------------------------------------------------------


def _bay_stream(prefix: str, n: int, device: str = "edge-dresdenaltmarkt") -> list[tuple[str, bytes, str]]:
    """n readings over 100 bays, each a distinct reading (topic, payload, reading_id)."""
    t0 = utcnow() - timedelta(minutes=10)
    out = []
    for i in range(n):
        msg = bay(device=device, bay_id=f"B{i % 100:03d}", observed_at=t0 + timedelta(microseconds=i * 10))
        out.append((topic_of(prefix, device, "parking_bay"), encode(msg), msg.reading_id))
    return out


def _distinct(influx: Influx) -> int:
    rows = influx.query(f'SELECT count(distinct("reading_id")) FROM "{M_PARKING_BAY}"')
    return int(rows[0]["count"]) if rows else 0


def test_influxdb_outage_loses_nothing(
    mosquitto: Service, prefix: str, tmp_path: Path, publisher: Publisher, run_gateway: Callable
) -> None:
    workdir = tmp_path / "influxd"
    svc = start_influxd(workdir)
    try:
        influx = Influx(f"http://{svc.host}:{svc.port}", "lossless")
        gw = run_gateway(gateway_settings(mosquitto, influx, prefix, tmp_path, batch_size=200))
        stream = _bay_stream(prefix, 3000)
        publisher.send_many([(t, p) for t, p, _ in stream[:1000]])
        wait_for(lambda: _distinct(influx) >= 300, 20, what="first readings stored")
        svc.stop()  # InfluxDB goes away mid-stream
        publisher.send_many([(t, p) for t, p, _ in stream[1000:]])
        wait_for(lambda: gw.stats().write_retries >= 3, 20, what="the writer retrying")
        assert gw.stats().acked < len(stream), "messages were acknowledged while InfluxDB was down"
        svc = start_influxd(workdir, port=svc.port)  # back, same port and data
        wait_for(lambda: _distinct(influx) == len(stream), 60, what=f"all {len(stream)} readings stored")
        assert influx.count(M_PARKING_BAY) == len(stream)  # exactly once
        wait_for(lambda: gw.stats().acked >= len(stream) + 1, 10, what="everything acknowledged")  # +1: own status
        assert gw.stats().dropped_points == 0
    finally:
        svc.stop()


def _gateway_process(settings: GatewaySettings, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"DISTRICT_GATEWAY_{name.upper()}"] = str(value)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "district.cli", "gateway", "--log-level", "INFO"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def test_gateway_sigkill_mid_stream_loses_nothing(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path, publisher: Publisher
) -> None:
    settings = gateway_settings(mosquitto, influx_db, prefix, tmp_path, batch_size=100, receive_maximum=500)
    log_path = tmp_path / "gateway.log"
    n = 4000
    stream = _bay_stream(prefix, n)
    status_topic = topics.status_topic(prefix, "district", settings.mqtt_client_id)
    statuses: list[bytes] = []
    watcher = mqtt_access(mosquitto).client(f"watch-{prefix}")
    watcher.on_message = lambda c, u, m: statuses.append(m.payload)
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe(status_topic, qos=1)
    watcher.loop_start()
    proc = _gateway_process(settings, log_path)
    try:
        wait_for(lambda: any(b'"online"' in s for s in statuses), 20, what="gateway online")
        feeder = threading.Thread(target=publisher.send_many, args=([(t, p) for t, p, _ in stream],))
        feeder.start()
        wait_for(lambda: _distinct(influx_db) >= 600, 30, what="gateway writing")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = _distinct(influx_db)
        feeder.join(60)
        assert at_kill < n, "the kill came too late to test anything"
        wait_for(lambda: any(b'"offline"' in s for s in statuses[-3:]), 10, what="last will 'offline'")

        proc = _gateway_process(settings, log_path)  # same client id: resumes the session
        wait_for(lambda: _distinct(influx_db) == n, 60, what=f"all {n} readings stored (had {at_kill} at kill)")
        assert influx_db.count(M_PARKING_BAY) == n
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()[-3000:]
        # A clean stop says so (retained), unlike the will after the kill.
        wait_for(
            lambda: b'"offline"' in statuses[-1] and b'"connection_lost"' not in statuses[-1],
            10,
            what="a clean 'offline' status after SIGTERM",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        watcher.disconnect()
        watcher.loop_stop()


def test_duplicate_delivery_is_idempotent(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path, publisher: Publisher, run_gateway: Callable
) -> None:
    gw = run_gateway(gateway_settings(mosquitto, influx_db, prefix, tmp_path))
    stream = _bay_stream(prefix, 500)
    publisher.send_many([(t, p) for t, p, _ in stream])
    publisher.send_many([(t, p) for t, p, _ in stream[::-1]])  # every reading again (a replay)
    wait_for(lambda: gw.stats().accepted >= 1000, 20, what="both copies received")
    wait_for(lambda: gw.stats().queue_depth == 0 and gw.stats().acked >= 1001, 20, what="all acknowledged")
    assert influx_db.count(M_PARKING_BAY) == 500
    assert _distinct(influx_db) == 500
