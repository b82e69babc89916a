"""The edge's MQTT thread sleeps until something happens, and wakes at once when it does (real Mosquitto).

With the idle wait raised to two minutes, a reading written to the outbox, a
health change and a stop must still reach the broker (or end the thread) in
seconds: they wake the thread (edge/mqtt.py, the self-pipe), it does not
poll for them. If the wake-up were missing, each would wait the full two
minutes and these assertions would fail.
"""

from __future__ import annotations

import json
import queue
import time
from datetime import timedelta
from pathlib import Path

import pytest

import edge.mqtt
from contracts import ParkingBayState, new_reading_id, topics, utcnow
from district.services import Service
from edge.agent import EdgeAgent
from edge.config import DeviceConfig
from tests.conftest import mqtt_access, wait_for

pytestmark = pytest.mark.integration

SITE = "district"
DEVICE = "bays-wake"
#: Far longer than any wait below: only a wake-up can beat it.
IDLE_S = 120.0
PROMPT_S = 10.0


def test_an_idle_edge_wakes_for_a_reading_a_health_change_and_a_stop(
    tmp_path: Path, mosquitto: Service, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge.mqtt, "IDLE_WAIT_S", IDLE_S)
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": DEVICE, "site_id": SITE},
            "mqtt": {**mqtt_access(mosquitto).edge_mqtt(), "topic_prefix": prefix, "delivery": "broker"},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            "status_interval_s": 3600,
        }
    )
    received: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()
    sub = mqtt_access(mosquitto).client(f"wake-{prefix}")
    sub.on_message = lambda c, u, m: received.put((m.topic, json.loads(m.payload)))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe(f"{topics.build(prefix, SITE, DEVICE, 'parking_bay').rsplit('/', 1)[0]}/#", qos=1)
    sub.loop_start()

    def next_on(topic: str, within: float) -> dict[str, object]:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                got_topic, body = received.get(timeout=left)
            except queue.Empty:
                break
            if got_topic == topic:
                return body
        raise AssertionError(f"nothing on {topic} within {within:.0f} s (the idle wait is {IDLE_S:.0f} s)")

    agent = EdgeAgent(cfg)
    agent.start()
    try:
        assert agent.publisher is not None
        wait_for(agent.publisher.connected.is_set, 15, what="the edge connected")
        status_topic = topics.status_topic(prefix, SITE, DEVICE)
        assert next_on(status_topic, 15)["state"] == "online"
        time.sleep(1.0)  # the thread has gone to sleep for IDLE_S

        reading = ParkingBayState(
            device_id=DEVICE,
            observed_at=utcnow() - timedelta(seconds=1),
            reading_id=new_reading_id(),
            lot_id="lot-1",
            bay_id="B001",
            status="occupied",
        )
        agent.emit([reading])
        body = next_on(topics.build(prefix, SITE, DEVICE, "parking_bay"), PROMPT_S)
        assert body["reading_id"] == reading.reading_id, "the reading woke the thread"

        time.sleep(1.0)
        agent.health.set_problem("bus0", "no answer from unit 3")
        status = next_on(status_topic, PROMPT_S)
        assert status["state"] == "degraded" and "unit 3" in str(status["reason"]), "the health change woke it"

        time.sleep(1.0)
        t0 = time.monotonic()
        agent.stop()
        assert agent.publisher._thread is not None and not agent.publisher._thread.is_alive()
        assert time.monotonic() - t0 < PROMPT_S, "the stop woke it"
        assert next_on(status_topic, PROMPT_S)["reason"] == "shutdown"
    finally:
        agent.stop_event.set()
        if agent.publisher is not None:
            agent.publisher.wake()
        sub.loop_stop()
        sub.disconnect()


def test_a_paho_client_on_the_selector_loop_keeps_its_connection_alive(
    tmp_path: Path, mosquitto: Service, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paho's keepalive (PINGREQ) is sent from ``loop_misc``, which the selector loop must run while idle, even
    when its idle wait is longer than the keepalive: with a 5 s keepalive and nothing to publish, the broker
    drops a silent client after 1.5 x 5 s."""
    monkeypatch.setattr(edge.mqtt, "IDLE_WAIT_S", IDLE_S)
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": DEVICE, "site_id": SITE},
            "mqtt": {**mqtt_access(mosquitto).edge_mqtt(), "topic_prefix": prefix, "keepalive_s": 5},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            "status_interval_s": 3600,
        }
    )
    agent = EdgeAgent(cfg)
    agent.start()
    try:
        assert agent.publisher is not None
        wait_for(agent.publisher.connected.is_set, 15, what="the edge connected")
        time.sleep(12.0)  # > 1.5 keepalive periods with nothing else on the connection
        assert agent.publisher.stats["connects"] == 1, "one connection throughout: the pings went out"
        assert agent.publisher.connected.is_set()
    finally:
        agent.stop()
