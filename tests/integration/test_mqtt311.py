"""The whole path over MQTT 3.1.1 on Mosquitto (TLS, passwords, ACL as everywhere): edge -> gateway ->
InfluxDB -> confirmation back to the edge -> the server's live state, with no MQTT 5 feature at all.

The clustered brokers on Debian speak 3.1.1 only (docs/brokers.md); this pins that nothing the system
needs rides on MQTT 5 properties or reason codes.
"""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from contracts.configfile import load_model
from contracts.site import SiteConfig
from district.services import Service
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from server.live import LiveState
from server.settings import ServerSettings
from server.stream import LiveStream
from tests.conftest import Influx, mqtt_access, wait_for
from tests.integration.pipeline import DRESDEN, bay_readings, edge_agent, stored_ids

pytestmark = pytest.mark.integration


def test_edge_gateway_influx_confirmation_and_live_state_over_3_1_1(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    access = mqtt_access(mosquitto)
    gw = Gateway(
        GatewaySettings.model_validate(
            {
                **access.settings(),
                "mqtt_protocol": "3.1.1",
                "mqtt_client_id": f"gw-{prefix}",
                "topic_prefix": prefix,
                "site_config": DRESDEN,
                "influx_url": influx_db.url,
                "influx_db": influx_db.db,
                "flush_interval_s": 0.05,
                "confirm_interval_s": 0.05,
                "history": False,
            }
        )
    )
    site = load_model(DRESDEN, SiteConfig)
    live = LiveState(site)
    stream = LiveStream(
        ServerSettings.model_validate(
            {
                **access.settings(),
                "mqtt_protocol": "3.1.1",
                "mqtt_client_id": f"srv-{prefix}",
                "topic_prefix": prefix,
                "site_config": DRESDEN,
            }
        ),
        live,
    )
    agent = edge_agent("edge-dresdenaltmarkt", tmp_path, prefix, access, "3.1.1")
    gw.start()
    stream.start()
    try:
        assert gw.wait_ready(15)
        wait_for(lambda: stream.connected, 15, what="server connected")
        agent.start()
        sent = bay_readings("edge-dresdenaltmarkt", 200)
        agent.emit(sent)
        assert agent.outbox is not None and agent.publisher is not None
        # Confirmed back to the edge: the outbox is empty only once the gateway said it stored them.
        wait_for(lambda: agent.outbox.pending == 0, 30, what="outbox drained by confirmations")  # type: ignore[union-attr]
        assert agent.publisher.stats["confirmed"] == 200
        # The clients that did all this were 3.1.1 ones (a 3.1.1 CONNECT has no properties at all).
        protocols = {
            "gateway": gw.intake._client.protocol,
            "server": stream._client.protocol,  # type: ignore[union-attr]
            "edge": agent.publisher._session.client().protocol,
        }
        assert sorted(stored_ids(influx_db)) == sorted(m.reading_id for m in sent)
        # The server's live state has each bay's latest reading.
        latest = {m.bay_id: m for m in sent}
        wait_for(
            lambda: all(
                (r := live.bay("dresdenaltmarkt", b)) and r.reading_id == m.reading_id for b, m in latest.items()
            ),
            15,
            what="live state of 40 bays",
        )
    finally:
        agent.stop()
        stream.stop()
        gw.stop()
    assert protocols == {"gateway": mqtt.MQTTv311, "server": mqtt.MQTTv311, "edge": mqtt.MQTTv311}
