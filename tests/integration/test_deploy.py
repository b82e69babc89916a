"""The shipped deployment files: compose validates, the broker config keeps
acknowledged messages across a SIGKILL as far as Mosquitto allows."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from district.services import Service, find_binary, free_port, start_mosquitto
from tests.conftest import REPO, need, wait_for


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_docker_compose_file_is_valid() -> None:
    cmd = compose_command()
    need(cmd is not None, "no docker compose client (apt-get install docker-compose)")
    assert cmd is not None
    out = subprocess.run([*cmd, "-f", str(REPO / "docker-compose.yml"), "config"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for service in ("mosquitto:", "influxdb:", "gateway:", "server:", "edge-sim:"):
        assert service in out.stdout
    # The broker must get the persistence config this repo ships.
    assert "deploy/mosquitto.conf" in out.stdout


def _deploy_conf_for_test(port: int, data: Path) -> str:
    """deploy/mosquitto.conf with only the listener and data path moved."""
    conf = (REPO / "deploy" / "mosquitto.conf").read_text()
    conf = re.sub(r"^listener .*$", f"listener {port} 127.0.0.1", conf, flags=re.M)
    conf = re.sub(r"^persistence_location .*$", f"persistence_location {data}/", conf, flags=re.M)
    return conf


@pytest.mark.integration
def test_deploy_broker_config_keeps_acknowledged_messages_across_sigkill(tmp_path: Path) -> None:
    need(find_binary("mosquitto") is not None, "mosquitto is not installed")
    import district.services as services

    port = free_port()
    data = tmp_path / "data"
    original = services.mosquitto_conf
    run_as = "user root\n" if original(port, data).startswith("user root") else ""
    services.mosquitto_conf = lambda p, d, host="127.0.0.1", **_: run_as + _deploy_conf_for_test(p, d)  # type: ignore[assignment]
    try:
        broker: Service = start_mosquitto(tmp_path, port=port)
    finally:
        services.mosquitto_conf = original

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    subscribed = threading.Event()

    def subscriber() -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="persistent-reader", protocol=mqtt.MQTTv5)
        c.on_subscribe = lambda *a: subscribed.set()
        return c

    reader = subscriber()
    reader.connect("127.0.0.1", port, clean_start=False, properties=props)
    reader.loop_start()
    reader.subscribe("persist/#", qos=1)
    assert subscribed.wait(5)
    reader.disconnect()
    reader.loop_stop()

    n = 1000
    writer = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="writer", protocol=mqtt.MQTTv5)
    writer.connect("127.0.0.1", port)
    writer.loop_start()
    infos = [writer.publish("persist/x", str(i), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
    writer.disconnect()
    writer.loop_stop()
    wait_for(lambda: (data / "mosquitto.db").exists(), 5, what="the broker to save its database")
    interval = int(re.search(r"^autosave_interval (\d+)", (REPO / "deploy" / "mosquitto.conf").read_text(), re.M)[1])

    broker.kill()
    broker = start_mosquitto(tmp_path, port=port)
    try:
        got: set[bytes] = set()
        reader = subscriber()
        reader.on_message = lambda c, u, m: got.add(m.payload)
        reader.connect("127.0.0.1", port, clean_start=False, properties=props)
        reader.loop_start()
        wait_for(lambda: len(got) >= n - interval, 10, what="queued messages after the broker restart")
        reader.disconnect()
        reader.loop_stop()
    finally:
        broker.stop()
    # At most the messages acknowledged since the last save may go.
    assert len(got) >= n - interval
