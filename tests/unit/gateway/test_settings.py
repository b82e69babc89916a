"""GatewaySettings: defaults, environment parsing, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.main import build_parser, settings_from
from gateway.settings import GatewaySettings


def test_defaults() -> None:
    s = GatewaySettings()
    assert (s.mqtt_client_id, s.topic_prefix, s.influx_url, s.influx_db) == (
        "district-gateway",
        "district",
        "http://127.0.0.1:8086",
        "district",
    )
    assert (s.batch_size, s.flush_interval_s, s.receive_maximum, s.queue_bound) == (5000, 0.2, 10_000, 20_000)
    assert s.create_database and s.site_config is None and s.influx_token is None


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTRICT_GATEWAY_MQTT_PORT", "11883")
    monkeypatch.setenv("DISTRICT_GATEWAY_INFLUX_URL", "https://influx.example:8086/")
    monkeypatch.setenv("DISTRICT_GATEWAY_INFLUX_TOKEN", "s3cret")
    monkeypatch.setenv("DISTRICT_GATEWAY_SITE_CONFIG", "/etc/district/site.yaml")
    monkeypatch.setenv("DISTRICT_GATEWAY_CREATE_DATABASE", "false")
    monkeypatch.setenv("DISTRICT_GATEWAY_QUEUE_MAX", "500")
    s = GatewaySettings()
    assert s.mqtt_port == 11883
    assert s.influx_url == "https://influx.example:8086"
    assert s.influx_token is not None and s.influx_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.site_config == Path("/etc/district/site.yaml")
    assert (s.create_database, s.queue_bound) == (False, 500)


@pytest.mark.parametrize(
    "field,value",
    [("topic_prefix", "bad/+/prefix"), ("influx_url", "influx:8086"), ("batch_size", 0), ("mqtt_port", 70000)],
)
def test_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings.model_validate({field: value})


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError):
        GatewaySettings.model_validate({"batchsize": 10})


def test_cli_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTRICT_GATEWAY_MQTT_HOST", "from-env")
    args = build_parser().parse_args(["--site", "s.yaml", "--mqtt-port", "1884", "--influx-db", "x"])
    s = settings_from(args)
    assert (s.mqtt_host, s.mqtt_port, s.influx_db, s.site_config) == ("from-env", 1884, "x", Path("s.yaml"))
