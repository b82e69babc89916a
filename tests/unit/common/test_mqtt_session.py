"""common.mqtt_session: one setting picks MQTT 3.1.1 or 5; broker lists; rotating a paho client."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from common.mqtt_session import BrokerListError, SessionSpec, broker_list, parse_brokers, rotate_to
from gateway.settings import GatewaySettings


def test_v311_is_a_persistent_session_without_properties() -> None:
    spec = SessionSpec("3.1.1", "gw-1", 3600)
    client = spec.client()
    assert client.protocol == mqtt.MQTTv311
    assert client._clean_session is False
    assert spec.connect_kwargs() == {}
    assert spec.subscription("a/#") == [("a/#", 1)]


def test_v311_without_a_stable_id_is_clean() -> None:
    client = SessionSpec("3.1.1", "srv-x", persistent=False).client()
    assert client._clean_session is True


def test_v5_carries_expiry_and_receive_maximum() -> None:
    spec = SessionSpec("5", "gw-1", 3600, receive_maximum=500)
    assert spec.client().protocol == mqtt.MQTTv5
    kw = spec.connect_kwargs()
    assert kw["clean_start"] is False
    assert kw["properties"].SessionExpiryInterval == 3600 and kw["properties"].ReceiveMaximum == 500
    first = SessionSpec("5", "s", 60, first_clean=True).connect_kwargs()
    assert first["clean_start"] == mqtt.MQTT_CLEAN_START_FIRST_ONLY
    [(topic, options)] = spec.subscription("a/#", retained_again=False)
    assert topic == "a/#" and isinstance(options, SubscribeOptions)
    assert options.QoS == 1 and options.retainHandling == SubscribeOptions.RETAIN_SEND_IF_NEW_SUB


def test_broker_lists() -> None:
    assert parse_brokers("a:1, b:2 ,c", 1883) == [("a", 1), ("b", 2), ("c", 1883)]
    assert parse_brokers("[::1]:8883,[::1]") == [("::1", 8883), ("::1", 1883)]
    assert broker_list("h", 9, None) == [("h", 9)]
    assert broker_list("h", 9, "x:1") == [("x", 1)]
    for bad in ("", " , ", "a:0", "a:x", ":1", "[::1", "[::1]x"):
        with pytest.raises(BrokerListError):
            parse_brokers(bad)


def test_settings_take_the_protocol_and_refuse_a_bad_list() -> None:
    settings = GatewaySettings(mqtt_protocol="3.1.1", mqtt_brokers="127.0.0.1:1,127.0.0.1:2")
    assert settings.mqtt_protocol == "3.1.1"
    with pytest.raises(ValueError, match="port"):
        GatewaySettings(mqtt_brokers="a:99999")
    with pytest.raises(ValueError):
        GatewaySettings(mqtt_protocol="3.1")  # type: ignore[arg-type]


def test_rotate_to_points_paho_at_the_next_address() -> None:
    """Pins the paho attributes rotate_to sets: reconnect() must use them."""
    client = SessionSpec("3.1.1", "t").client()
    client.connect_async("127.0.0.1", 1)
    rotate_to(client, "127.0.0.2", 2)
    assert (client.host, client.port) == ("127.0.0.2", 2)
