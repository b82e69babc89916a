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
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from district.provision import Provisioned
from district.services import BrokerAccess, Service, broker_access, find_binary, free_port, start_mosquitto
from tests.conftest import REPO, need, provision_test_broker, wait_for


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
    for service in ("provision:", "mosquitto:", "influxdb:", "gateway:", "server:", "edge-sim:"):
        assert service in out.stdout
    # The broker must get the persistence and TLS config this repo ships, and publish only its TLS port.
    assert "deploy/mosquitto.conf" in out.stdout
    config = yaml.safe_load(out.stdout)
    ports = [str(p) for svc in config["services"].values() for p in svc.get("ports", [])]
    assert not any("1883" in p for p in ports) and any("8883" in p for p in ports), ports
    for name in ("gateway", "server"):
        env = config["services"][name]["environment"]
        prefix = f"DISTRICT_{name.upper()}_"
        assert env[f"{prefix}MQTT_PORT"] == "8883" and env[f"{prefix}MQTT_PASSWORD_FILE"].startswith("/pki/")
        assert f"{prefix}MQTT_PASSWORD" not in env  # a password file, never the password itself


DEPLOY_CONF = REPO / "deploy" / "mosquitto.conf"


def _deploy_conf_for_test(port: int, data: Path, pki: Provisioned) -> str:
    """deploy/mosquitto.conf with only the listener, the data path and the provisioned files' directory moved."""
    conf = DEPLOY_CONF.read_text()
    conf = re.sub(r"^listener .*$", f"listener {port} 127.0.0.1", conf, flags=re.M)
    conf = re.sub(r"^persistence_location .*$", f"persistence_location {data}/", conf, flags=re.M)
    return conf.replace("/mosquitto/district/", f"{pki.broker.dir}/")


def _start_deploy_broker(tmp_path: Path, port: int, pki: Provisioned) -> Service:
    import district.services as services

    data = tmp_path / "data"
    original = services.mosquitto_conf
    run_as = "user root\n" if original(port, data).startswith("user root") else ""
    services.mosquitto_conf = lambda p, d, host="127.0.0.1", **_: run_as + _deploy_conf_for_test(p, d, pki)  # type: ignore[assignment]
    try:
        return start_mosquitto(tmp_path, port=port, pki=pki)
    finally:
        services.mosquitto_conf = original


def test_the_shipped_broker_config_has_no_plain_listener() -> None:
    """TLS only: every listener has the site CA and a certificate, nobody anonymous, certificates required."""
    lines = [line.split("#")[0].strip() for line in DEPLOY_CONF.read_text().splitlines()]
    settings = [line.split(None, 1) for line in lines if line]
    listeners = [i for i, s in enumerate(settings) if s[0] == "listener"]
    assert listeners and all(settings[i][1].split()[0] != "1883" for i in listeners)
    for n, i in enumerate(listeners):
        block = {s[0]: s[1] for s in settings[i + 1 : listeners[n + 1] if n + 1 < len(listeners) else None]}
        assert {"cafile", "certfile", "keyfile"} <= set(block), f"listener {settings[i][1]} is not TLS"
        assert block.get("require_certificate") == "true"
    top = dict(s for s in settings if len(s) == 2)
    assert top["allow_anonymous"] == "false" and top["per_listener_settings"] == "false"
    assert {"password_file", "acl_file"} <= set(top)


@pytest.mark.integration
def test_the_shipped_broker_config_refuses_plain_and_anonymous_clients(tmp_path: Path) -> None:
    need(find_binary("mosquitto") is not None, "mosquitto is not installed")
    pki = provision_test_broker(tmp_path / "pki", admin_topics=None)
    broker = _start_deploy_broker(tmp_path, free_port(), pki)
    try:
        good = broker_access(broker)
        # No TLS: the CONNECT is garbage to a TLS listener, which closes the connection without a CONNACK.
        answered: list[object] = []
        plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plain")
        plain.on_connect = lambda *a: answered.append(a)
        plain.connect(broker.host, broker.port)
        for _ in range(50):
            if plain.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        else:
            pytest.fail("the broker kept a plain connection open")
        assert answered == []
        anonymous = BrokerAccess(broker.host, broker.port, None, None, good.ca_file, good.cert_file, good.key_file)
        refused: list[str] = []
        c = anonymous.client("anonymous", protocol=mqtt.MQTTv5)
        c.on_connect = lambda cl, u, f, rc, p: refused.append(str(rc))
        c.connect(broker.host, broker.port)
        c.loop_start()
        wait_for(lambda: refused, 5, what="a CONNACK")
        c.loop_stop()
        assert refused == ["Not authorized"]
    finally:
        broker.stop()


@pytest.mark.integration
def test_deploy_broker_config_keeps_acknowledged_messages_across_sigkill(tmp_path: Path) -> None:
    need(find_binary("mosquitto") is not None, "mosquitto is not installed")
    port = free_port()
    data = tmp_path / "data"
    pki = provision_test_broker(tmp_path / "pki")
    broker: Service = _start_deploy_broker(tmp_path, port, pki)

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    subscribed = threading.Event()

    def subscriber() -> mqtt.Client:
        c = broker_access(broker).client("persistent-reader", protocol=mqtt.MQTTv5)
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
    writer = broker_access(broker).client("writer", protocol=mqtt.MQTTv5)
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
    broker = _start_deploy_broker(tmp_path, port, pki)
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
