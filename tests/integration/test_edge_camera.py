"""A camera inside the edge agent, on real footage and a real broker.

Counts must reach MQTT as footfall messages with nothing lost between the
camera process, the outbox and the broker; and nothing image-like may leave
the device: every payload is a small contract message.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from contracts import receive
from contracts.messages import DeviceStatus, FootfallCount
from district.services import Service
from edge.agent import EdgeAgent
from edge.camera.count_cli import count_video
from edge.camera.lines import load_lines
from edge.config import DeviceConfig
from tests.conftest import mqtt_access, need, wait_for

pytestmark = pytest.mark.integration

SITE = "testsite"
DEVICE = "edge-cam-test"


class Collector:
    def __init__(self, broker: Service, prefix: str) -> None:
        self.payloads: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt_access(broker).client(f"collector-{prefix}")
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"{prefix}/#", qos=1)
        self.client.loop_start()
        assert done.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.payloads.append((msg.topic, msg.payload))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.payloads)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_camera_counts_reach_mqtt_and_nothing_image_like_does(
    tmp_path: Path, shared_dir: Path, mosquitto: Service, prefix: str
) -> None:
    seq = shared_dir / "data" / "footfall-video" / "PETS09-S2L1"
    video = seq / "PETS09-S2L1_f0001-0300.mp4"
    need(video.exists(), f"footage not found: {video}")
    line_names = [line.name for line in load_lines(seq / "lines.json")]
    config = DeviceConfig.model_validate(
        {
            "device": {"id": DEVICE, "site_id": SITE},
            "mqtt": mqtt_access(mosquitto).edge_mqtt(topic_prefix=prefix),
            "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            "status_interval_s": 0.5,
            "cameras": [
                {
                    "id": "cam-1",
                    "source": {"path": str(video)},
                    "lines_file": str(seq / "lines.json"),
                    "line_zones": {name: "plaza" for name in line_names},
                    "interval_s": 1,
                    "health": {"report_interval_s": 0.5},
                }
            ],
        }
    )
    expected = count_video(video, load_lines(seq / "lines.json"), progress=False).to_json()["lines"]
    expected_total = sum(c["in"] + c["out"] for c in expected.values())
    assert expected_total > 0

    collector = Collector(mosquitto, prefix)
    agent = EdgeAgent(config)
    agent.start()
    try:

        def footfall() -> list[FootfallCount]:
            out = []
            for topic, payload in collector.snapshot():
                _, message = receive(topic, payload, prefix=prefix)
                if isinstance(message, FootfallCount):
                    out.append(message)
            return out

        def counted() -> int:
            return sum(m.towards + m.away for m in footfall())

        wait_for(lambda: counted() >= expected_total, 60, what="the file's crossings to reach MQTT")
        wait_for(lambda: not agent.cameras[0].is_alive(), 30, what="the camera to finish its file")
    finally:
        agent.stop()
        collector.close()

    messages = footfall()
    per_line: dict[str, list[int]] = {}
    for m in messages:
        assert m.zone_id == "plaza" and m.camera_id == "cam-1"
        for line in m.lines:
            per_line.setdefault(line.line_id, [0, 0])
            per_line[line.line_id][0] += line.towards
            per_line[line.line_id][1] += line.away
    # The agent path adds and loses nothing against the engine run on its own.
    assert per_line == {name: [c["in"], c["out"]] for name, c in expected.items()}

    statuses = []
    for topic, payload in collector.snapshot():
        # Privacy: only small, plain contract messages leave the device.
        assert len(payload) < 4096, f"{len(payload)}-byte payload on {topic}"
        _, message = receive(topic, payload, prefix=prefix)
        assert isinstance(message, FootfallCount | DeviceStatus)
        assert all(len(s) <= 200 for s in _strings(json.loads(payload))), "a long string could carry pixels"
        if isinstance(message, DeviceStatus):
            statuses.append(message)
    assert any(s.cameras and s.cameras[0].camera_id == "cam-1" for s in statuses), "camera health in the heartbeat"
