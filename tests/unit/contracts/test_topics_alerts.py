"""Alert topics: built in one place, taken for control traffic by everyone who listens to the prefix."""

from __future__ import annotations

import pytest

from contracts import topics


def test_alert_topics_are_control_traffic_not_readings() -> None:
    t = topics.alert_topic("district", "s1", "device_silent", "device", "edge-1")
    assert t == "district/v1/s1/alerts/device_silent/device/edge-1"
    assert topics.is_control(t, "district")
    with pytest.raises(topics.TopicError):
        topics.parse(t, "district")
    assert topics.alerts_filter("district", "s1") == "district/v1/s1/alerts/#"


@pytest.mark.parametrize(
    ("topic", "control"),
    [
        ("district/v1/s1/alerts/status", False),  # a device named "alerts" publishing its status: a reading
        ("district/v1/s1/edge-1/stored", True),
        ("district/v1/s1/edge-1/parking_bay", False),
        ("other/v1/s1/alerts/a/b/c", False),  # not ours
    ],
)
def test_what_is_control(topic: str, control: bool) -> None:
    assert topics.is_control(topic, "district") is control
