"""BrokerAccess carries the MQTT version into every shape a component takes (demo, tests, benches)."""

from __future__ import annotations

from district.services import BrokerAccess
from edge.config import MqttConfig
from gateway.settings import GatewaySettings


def test_protocol_reaches_gateway_server_and_edge_settings() -> None:
    access = BrokerAccess("127.0.0.1", 1883, protocol="3.1.1")
    assert GatewaySettings.model_validate(access.settings()).mqtt_protocol == "3.1.1"
    assert access.env("server")["DISTRICT_SERVER_MQTT_PROTOCOL"] == "3.1.1"
    assert MqttConfig.model_validate(access.edge_mqtt()).protocol == "3.1.1"
    assert BrokerAccess.from_json(access.to_json()) == access
    # MQTT 5 is the default and adds nothing.
    plain = BrokerAccess("127.0.0.1", 1883)
    assert "mqtt_protocol" not in plain.settings() and "protocol" not in plain.edge_mqtt()
