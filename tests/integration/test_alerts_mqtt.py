"""Alerts on a real broker: raised retained on the alert topic, cleared with an empty retained payload."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from contracts import DeviceStatus, encode, new_reading_id, topics, utcnow
from district.services import Service
from tests.conftest import Influx, mqtt_access, wait_for
from tests.integration.test_server import health, publisher, serve, settings_for

pytestmark = pytest.mark.integration

SITE_YAML = """
site: {id: itest, name: Integration test site}
devices:
  - {id: dev1, kind: bay_controller, heartbeat_s: 60}
"""


class Watcher:
    """Subscribes to the site's alert topics and keeps the last payload per topic (retained included)."""

    def __init__(self, broker: Service, prefix: str) -> None:
        self.last: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = mqtt_access(broker).client(f"alerts-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"{prefix}/v1/itest/alerts/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.last[msg.topic] = bytes(msg.payload)

    def get(self, topic: str) -> bytes | None:
        with self._lock:
            return self.last.get(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_an_alert_is_published_retained_and_cleared(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE_YAML)
    settings = settings_for(site, prefix, mosquitto, influx_db.url, influx_db.db, api_keys="ops:op-key-1")
    topic = f"{prefix}/v1/itest/alerts/battery_low/device/dev1"
    watcher = Watcher(mosquitto, prefix)
    try:
        with serve(settings) as client, publisher(mosquitto) as pub:
            wait_for(lambda: health(client)[0] == 200, timeout=15, what="healthz ok")
            low = DeviceStatus(
                device_id="dev1", observed_at=utcnow(), reading_id=new_reading_id(), state="online", battery_pct=7.5
            )
            pub.publish(topics.status_topic(prefix, "itest", "dev1"), encode(low))
            wait_for(lambda: watcher.get(topic), timeout=15, what="battery alert published")
            body = json.loads(watcher.get(topic) or b"{}")
            assert (body["severity"], body["subject"]) == ("critical", {"type": "device", "id": "dev1"})
            listed = client.get("/v1/alerts", headers={"X-API-Key": "op-key-1"}).json()
            assert "battery_low:device:dev1" in [a["id"] for a in listed]
            assert client.get("/v1/alerts").status_code == 401

            # Retained: a system that subscribes later still learns of it.
            late = Watcher(mosquitto, prefix)
            try:
                wait_for(lambda: late.get(topic), what="retained alert delivered to a late subscriber")
            finally:
                late.close()

            ok = low.model_copy(update={"reading_id": new_reading_id(), "battery_pct": 80.0, "observed_at": utcnow()})
            pub.publish(topics.status_topic(prefix, "itest", "dev1"), encode(ok))
            wait_for(lambda: watcher.get(topic) == b"", timeout=15, what="alert cleared (empty retained payload)")
    finally:
        watcher.close()
