"""gateway.shards: disjoint topic filters per worker, for brokers without $share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts import topics
from gateway.settings import GatewaySettings
from gateway.shards import ShardError, shard_filters, shard_of
from gateway.workers import plan_shards, settings_env, worker_settings

DRESDEN = Path(__file__).resolve().parents[3] / "district" / "sites" / "dresden.yaml"


def test_devices_are_dealt_out_in_turn_and_every_one_lands_once() -> None:
    devices = [f"dev-{i}" for i in range(40)] + ["sensor.1"]
    shards = shard_filters("district", "dresden", 3, devices)
    flat = [f for shard in shards for f in shard]
    assert sorted(flat) == sorted(topics.device_filter("district", "dresden", d) for d in devices)
    assert topics.device_filter("district", "dresden", "sensor.1") in shards[shard_of("sensor.1", devices, 3)]
    assert sorted(len(s) for s in shards) == [13, 14, 14]


def test_without_devices_the_kinds_are_dealt_out() -> None:
    shards = shard_filters("district", "dresden", 2)
    assert [len(s) for s in shards] == [2, 2]
    assert topics.subscription("district", "+", "parking_bay") in shards[0]
    with pytest.raises(ShardError, match="no topic filter"):
        shard_filters("district", "dresden", len(shards[0]) * 2 + 1)


def test_workers_get_their_shard_through_the_environment() -> None:
    settings = GatewaySettings(workers=3, ingest="shards", site_config=DRESDEN)
    plan = plan_shards(settings)
    assert plan is not None and len(plan) == 3
    second = worker_settings(settings, 2, plan)
    assert second.shard_filters == plan[1] and second.share_group is None
    assert second.mqtt_client_id == "district-gateway-w2"
    env = settings_env(second)
    assert json.loads(env["DISTRICT_GATEWAY_SHARD_FILTERS"]) == plan[1]
    assert plan_shards(GatewaySettings(workers=3)) is None
    by_kind = plan_shards(GatewaySettings(workers=2, ingest="shards", shard_by="kind", site_config=DRESDEN))
    assert by_kind is not None and all("/+/+/" in f for shard in by_kind for f in shard)
    assert worker_settings(GatewaySettings(workers=3), 1).share_group == "district-gateway"
