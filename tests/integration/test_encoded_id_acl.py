"""A device whose id holds '.' publishes on its encoded topic (contracts.topics: '.' -> '~2E') and the
broker's ACL, written by district provision, lets it there and not on another device's topics (real
Mosquitto, TLS, passwords, client certificates, the provisioned ACL).

The ``%u`` pattern also admits the raw-id topic (``.../edge.dresden.altmarkt/...``); no reader takes
that for a reading: ``contracts.topics.parse`` refuses a raw '.' (the gateway dead-letters it as
``bad_topic``)."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from contracts import topics
from contracts.configfile import load_model
from contracts.site import SiteConfig
from district.provision import ADMIN, GATEWAY, provision
from district.services import broker_access, free_port, start_mosquitto
from tests.conftest import wait_for
from tests.integration.pipeline import DRESDEN

pytestmark = pytest.mark.integration

DEVICE = "edge.dresden.altmarkt"


def test_the_acl_follows_the_encoded_id(tmp_path: Path) -> None:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(DRESDEN.read_text().replace("edge-dresdenaltmarkt", DEVICE))
    pki = provision(load_model(site_file, SiteConfig), tmp_path / "pki", broker_hosts=["127.0.0.1"],
                    install_dir=None, broker_dir=None)  # fmt: skip
    broker = start_mosquitto(tmp_path / "broker", port=free_port(), pki=pki)
    seen: list[str] = []
    lock = threading.Lock()
    clients: list[mqtt.Client] = []
    try:
        admin = broker_access(broker, ADMIN).client("acl-admin")
        admin.on_message = lambda c, u, m: (lock.acquire(), seen.append(m.topic), lock.release())
        admin.connect(broker.host, broker.port)
        admin.subscribe("district/#", qos=1)
        admin.loop_start()
        clients.append(admin)
        device = broker_access(broker, DEVICE).client("acl-device", protocol=mqtt.MQTTv311)
        got: list[str] = []
        device.on_message = lambda c, u, m: got.append(m.topic)
        device.connect(broker.host, broker.port)
        device.loop_start()
        clients.append(device)
        mine = topics.build("district", "dresden", DEVICE, "parking_bay")
        raw = "district/v1/dresden/edge.dresden.altmarkt/parking_bay"
        with pytest.raises(topics.TopicError):
            topics.parse(raw, "district")
        assert "~2E" in mine and "." not in mine
        stored = topics.stored_topic("district", "dresden", DEVICE)
        device.subscribe(stored, qos=1)
        for topic in (
            mine,
            raw,
            topics.build("district", "dresden", "edge-dresdenkarstadt", "parking_bay"),  # another device's
            "district/v1/dresden/edge~2Edresden~2Ekarstadt/parking_bay",
        ):
            device.publish(topic, b"{}", qos=1).wait_for_publish(5)
        device.publish(mine.replace("parking_bay", "status"), b"{}", qos=1).wait_for_publish(5)
        # The gateway confirms to it on its encoded stored topic, which it may read.
        gateway = broker_access(broker, GATEWAY).client("acl-gateway")
        gateway.connect(broker.host, broker.port)
        gateway.loop_start()
        clients.append(gateway)
        wait_for(lambda: device.is_connected() and gateway.is_connected(), 10, what="connected")
        gateway.publish(stored, b"{}", qos=1).wait_for_publish(5)
        wait_for(lambda: stored in got, 10, what="confirmation delivered to the device")
        wait_for(lambda: len(seen) >= 3, 10, what="the allowed publishes")
        with lock:
            allowed = sorted(set(seen) - {stored})
        assert allowed == sorted([mine, raw, mine.replace("parking_bay", "status")])
    finally:
        for client in clients:
            client.loop_stop()
            client.disconnect()
        broker.stop()
