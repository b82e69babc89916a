"""Topic levels valid on Mosquitto, RabbitMQ and NATS: ids with '.' are encoded reversibly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import topics
from contracts.messages import MESSAGE_KINDS

ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
prefixes = st.from_regex(r"\A[A-Za-z0-9_.-]{1,12}(/[A-Za-z0-9_.-]{1,12}){0,2}\Z")
kinds = st.sampled_from(sorted(MESSAGE_KINDS))


@given(prefixes, ids, ids, kinds)
def test_parse_inverts_build_and_no_level_holds_a_dot(prefix: str, site: str, device: str, kind: str) -> None:
    topic = topics.build(prefix, site, device, kind)
    assert "." not in topic and " " not in topic
    assert not {"+", "#"} & set(topic)
    assert topics.parse(topic, prefix) == topics.Topic(prefix, site, device, kind)


@given(ids)
def test_levels_round_trip_and_plain_ids_are_unchanged(value: str) -> None:
    level = topics.encode_level(value)
    assert topics.decode_level(level) == value
    assert (level == value) == ("." not in value)


def test_examples() -> None:
    assert (
        topics.build("district", "dresden", "sensor.1", "parking_bay") == "district/v1/dresden/sensor~2E1/parking_bay"
    )
    assert topics.build("a.b", "s", "d", "status") == "a~2Eb/v1/s/d/status"
    assert topics.device_filter("district", "dres.den", "10.0.0.7") == "district/v1/dres~2Eden/10~2E0~2E0~2E7/+"
    assert topics.stored_topic("district", "s", "x.y") == "district/v1/s/x~2Ey/stored"
    assert topics.alert_topic("district", "s", "stale", "device", "x.y") == "district/v1/s/alerts/stale/device/x~2Ey"


@pytest.mark.parametrize("level", ["a~2e", "a~41", "a~", "a~2", "~7E", "sensor.1"])
def test_only_the_canonical_encoding_parses(level: str) -> None:
    with pytest.raises(topics.TopicError):
        topics.parse(f"district/v1/s/{level}/status", "district")
