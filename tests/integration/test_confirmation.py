"""End-to-end confirmation on real Mosquitto and InfluxDB: a reading leaves the
edge's outbox when the gateway has stored it, not when the broker acknowledged it.

The edge agent runs with no sensors; readings enter through ``emit`` exactly
as a sensor driver's would (outbox first, then the MQTT thread).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import ParkingBayState, confirm, new_reading_id, topics, utcnow
from contracts.storage import M_PARKING_BAY
from district.provision import Provisioned
from district.services import Service, free_port, start_mosquitto
from edge.agent import EdgeAgent
from edge.config import DeviceConfig
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from tests.conftest import Influx, mqtt_access, wait_for

pytestmark = pytest.mark.integration

SITE = "district"
DEVICE = "bays-e2e"


def _edge(tmp_path: Path, prefix: str, broker: Service, **mqtt: Any) -> EdgeAgent:
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": DEVICE, "site_id": SITE},
            "mqtt": {
                **mqtt_access(broker).edge_mqtt(),
                "topic_prefix": prefix,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
                "keepalive_s": 5,
                "max_inflight": 100,
                **mqtt,
            },
            "outbox": {"path": str(tmp_path / "outbox.sqlite"), "max_messages": 100_000},
            "status_interval_s": 5,
        }
    )
    return EdgeAgent(cfg)


def _gateway(prefix: str, broker: Service, influx: Influx, tmp_path: Path) -> Gateway:
    settings = GatewaySettings.model_validate(
        {
            **mqtt_access(broker).settings(),
            "mqtt_client_id": f"gw-{prefix}",
            "topic_prefix": prefix,
            "influx_url": influx.url,
            "influx_db": influx.db,
            "flush_interval_s": 0.05,
            "confirm_interval_s": 0.05,
            "dead_letter_path": tmp_path / "dead.jsonl",
        }
    )
    return Gateway(settings)


def _readings(n: int, start: int = 0) -> list[ParkingBayState]:
    t0 = utcnow() - timedelta(minutes=1)
    return [
        ParkingBayState(
            device_id=DEVICE,
            observed_at=t0 + timedelta(microseconds=10 * (start + i)),
            reading_id=new_reading_id(),
            lot_id="lot-1",
            bay_id=f"B{(start + i) % 500:03d}",
            status="occupied" if i % 2 else "free",
        )
        for i in range(n)
    ]


def _stored_ids(influx: Influx) -> list[str]:
    return [str(r["reading_id"]) for r in influx.query(f'SELECT reading_id FROM "{M_PARKING_BAY}"')]


@pytest.fixture
def broker(tmp_path: Path, broker_pki: Provisioned) -> Iterator[Service]:
    """A broker of this test's own, so it can be killed (TLS and passwords, as every test broker)."""
    svc = start_mosquitto(tmp_path / "broker", port=free_port(), pki=broker_pki)
    yield svc
    svc.stop()


def test_outbox_keeps_broker_acked_readings_until_the_gateway_stored_them(
    tmp_path: Path, broker: Service, influx_db: Influx, prefix: str
) -> None:
    # The gateway's session will be new, so the 300 are not queued for it: the
    # edge re-sends them after confirm_timeout_s.
    agent = _edge(tmp_path, prefix, broker, confirm_timeout_s=2.0)
    agent.start()
    gw: Gateway | None = None
    try:
        sent = _readings(300)
        agent.emit(sent)
        assert agent.publisher is not None and agent.outbox is not None
        # The broker acknowledges every one ...
        wait_for(lambda: agent.publisher.stats["broker_acked"] >= 300, 15, what="300 PUBACKs")  # type: ignore[union-attr]
        # ... and the outbox still holds them all: no gateway has stored anything.
        assert agent.outbox.pending == 300
        assert agent.publisher.stats["confirmed"] == 0

        gw = _gateway(prefix, broker, influx_db, tmp_path)
        gw.start()
        assert gw.wait_ready(15)
        wait_for(lambda: agent.outbox.pending == 0, 30, what="outbox drained by confirmations")  # type: ignore[union-attr]
        ids = _stored_ids(influx_db)
        assert sorted(ids) == sorted(m.reading_id for m in sent)  # all stored, none twice
        assert agent.publisher.stats["confirmed"] == 300
        assert agent.publisher.stats["resends"] >= 1
    finally:
        agent.stop()
        if gw is not None:
            gw.stop()


@pytest.mark.parametrize("autosave", [100, None], ids=["autosave-100", "no-autosave"])
def test_broker_sigkill_with_a_backlog_loses_nothing(
    tmp_path: Path, influx_db: Influx, prefix: str, autosave: int | None, broker_pki: Provisioned
) -> None:
    """The broker acknowledges before it saves; killed, it forgets what it acknowledged
    since its last save (with no autosave: the whole backlog and every session).
    Unconfirmed readings are re-sent, so every reading is stored exactly once."""
    port = free_port()
    broker = start_mosquitto(tmp_path / "broker", port=port, autosave_changes=autosave, pki=broker_pki)
    gw = _gateway(prefix, broker, influx_db, tmp_path)
    gw.start()
    assert gw.wait_ready(15)
    gw.stop()  # its persistent session now queues for it
    agent = _edge(tmp_path, prefix, broker, confirm_timeout_s=3.0)
    agent.start()
    gw = _gateway(prefix, broker, influx_db, tmp_path)
    try:
        sent = _readings(2_000)
        agent.emit(sent)
        assert agent.publisher is not None and agent.outbox is not None
        wait_for(lambda: agent.publisher.stats["broker_acked"] >= 2_000, 30, what="2,000 PUBACKs")  # type: ignore[union-attr]
        broker.proc.send_signal(signal.SIGKILL)
        broker.proc.wait(10)
        broker = start_mosquitto(tmp_path / "broker", port=port, autosave_changes=autosave, pki=broker_pki)
        gw.start()
        wait_for(lambda: agent.outbox.pending == 0, 60, what="outbox drained by confirmations")  # type: ignore[union-attr]
        ids = _stored_ids(influx_db)
        assert len(ids) == len(set(ids)) == 2_000
        assert set(ids) == {m.reading_id for m in sent}
        if autosave is None:
            # The broker kept nothing: every reading reached InfluxDB through a re-send.
            assert agent.publisher.stats["published"] >= 4_000
    finally:
        agent.stop()
        gw.stop()
        broker.stop()


def test_gateway_confirms_dead_lettered_readings_and_ignores_its_own_confirmations(
    tmp_path: Path, broker: Service, influx_db: Influx, prefix: str
) -> None:
    """A reading the gateway rejects will never be stored: it is confirmed so the edge stops re-sending."""
    got: list[bytes] = []
    sub = mqtt_access(broker).client(f"watch-{prefix}")
    sub.on_message = lambda c, u, m: got.append(bytes(m.payload))
    sub.connect(broker.host, broker.port)
    sub.subscribe(topics.stored_topic(prefix, SITE, DEVICE), qos=1)
    sub.loop_start()
    gw = _gateway(prefix, broker, influx_db, tmp_path)
    gw.start()
    try:
        assert gw.wait_ready(15)
        good = _readings(1)[0].model_copy(update={"epoch": "e1", "seq": 1})
        bad = json.loads(good.model_copy(update={"seq": 2, "reading_id": new_reading_id()}).model_dump_json())
        bad["status"] = "exploded"
        topic = topics.build(prefix, SITE, DEVICE, "parking_bay")
        sub.publish(topic, good.model_dump_json(), qos=1)
        sub.publish(topic, json.dumps(bad), qos=1)
        sub.publish(f"{prefix}/v1/{SITE}/{DEVICE}/parking_bay/extra", b"{}", qos=1)
        wait_for(lambda: gw.stats().acked >= 3, 10, what="three handled")

        def confirmed() -> set[int]:
            seqs: set[int] = set()
            for payload in got:
                c = confirm.decode(payload)
                assert c.epoch == "e1"
                seqs |= {s for lo, hi in c.seqs for s in range(lo, hi + 1)}
            return seqs

        wait_for(lambda: confirmed() == {1, 2}, 10, what="seqs 1 and 2 confirmed")
        stats = gw.stats()
        assert stats.rejected == {"invalid_value": 1, "bad_topic": 1}
        dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
        assert {d["reason"] for d in dead} == {"invalid_value", "bad_topic"}
        # The confirmations themselves come back through the gateway's subscription: ignored, not rejected.
        wait_for(lambda: gw.stats().ignored.get("control", 0) >= 1, 10, what="own confirmation ignored")
        assert len(_stored_ids(influx_db)) == 1
    finally:
        gw.stop()
        sub.loop_stop()
        sub.disconnect()
