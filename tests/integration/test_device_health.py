"""Device health against a real broker (bugcase 02): a retained heartbeat is judged by its own time,
and a device that stops sending heartbeats without a will turns silent."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from contracts import DeviceStatus, encode, new_reading_id, topics, utcnow
from district.services import Service
from tests.conftest import Influx, wait_for
from tests.integration.test_server import health, publisher, serve, settings_for

pytestmark = pytest.mark.integration

SITE_YAML = """
site: {id: itest, name: Integration test site}
devices:
  - {id: dev1, kind: bay_controller, heartbeat_s: 1}
  - {id: dev9, kind: camera_node, heartbeat_s: 60}
"""


def test_silent_and_long_retained_devices_are_not_online(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE_YAML)
    old = DeviceStatus(
        device_id="dev9", observed_at=utcnow() - timedelta(days=13), reading_id=new_reading_id(), state="online"
    )
    settings = settings_for(site, prefix, mosquitto, influx_db.url, influx_db.db, api_keys="ops:op-key-1")
    with publisher(mosquitto) as pub:
        pub.publish(topics.status_topic(prefix, "itest", "dev9"), encode(old), retain=True)
        with serve(settings) as client:
            wait_for(lambda: health(client)[0] == 200, timeout=15, what="healthz ok")
            beat = DeviceStatus(device_id="dev1", observed_at=utcnow(), reading_id=new_reading_id(), state="online")
            pub.publish(topics.status_topic(prefix, "itest", "dev1"), encode(beat), retain=True)
            wait_for(
                lambda: health(client)[1]["devices"]["by_state"] == {"online": 1, "silent": 1},
                what="dev1 online (live), dev9 silent (13-day-old retained heartbeat)",
            )
            # dev1 stops without a will: after 3 x its heartbeat_s it is silent.
            wait_for(lambda: health(client)[1]["devices"]["by_state"] == {"silent": 2}, timeout=10, what="dev1 silent")
            devices = client.get("/v1/devices", headers={"X-API-Key": "op-key-1"}).json()
            by_id = {d["id"]: d for d in devices}
            assert by_id["dev9"]["status_retained"] is True
            assert by_id["dev9"]["last_heard_age_s"] > 13 * 86400 - 60
            assert by_id["dev1"]["last_heard_age_s"] > 3
