"""Worker processes: each worker's settings, and their round trip through the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.settings import GatewaySettings
from gateway.workers import settings_env, worker_settings


def test_worker_settings_own_id_shared_group_own_dead_letters() -> None:
    s = GatewaySettings(mqtt_client_id="gw-a", workers=3, dead_letter_path=Path("/var/lib/gw/dead.jsonl"))
    w2 = worker_settings(s, 2)
    assert (w2.workers, w2.mqtt_client_id, w2.share_group) == (1, "gw-a-w2", "gw-a")
    assert w2.dead_letter_path == Path("/var/lib/gw/dead.w2.jsonl")
    assert worker_settings(s.model_copy(update={"share_group": "hall"}), 1).share_group == "hall"


def test_settings_survive_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = worker_settings(
        GatewaySettings(workers=2, influx_token=SecretStr("s3cret"), confirm=False, site_config=Path("/s.yaml")), 1
    )
    for key, value in settings_env(s).items():
        monkeypatch.setenv(key, value)
    assert GatewaySettings() == s


def test_share_group_must_be_a_plain_name() -> None:
    with pytest.raises(ValueError):
        GatewaySettings(share_group="a/b")
    with pytest.raises(ValueError):
        GatewaySettings(workers=0)
