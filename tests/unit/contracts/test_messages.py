"""The wire contract: what is accepted, what is rejected and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from contracts import (
    DeviceStatus,
    FootfallCount,
    LineCount,
    LockerCompartmentState,
    MessageRejected,
    ParkingBayState,
    decode,
    encode,
    new_reading_id,
    receive,
    topics,
)
from contracts.site import SiteConfig

NOW = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)


def bay(**over: object) -> ParkingBayState:
    fields: dict[str, object] = dict(
        device_id="edge-1", observed_at=NOW, reading_id=new_reading_id(), lot_id="lot-a", bay_id="A001", status="free"
    )
    fields.update(over)
    return ParkingBayState.model_validate(fields)


def payload(**over: object) -> bytes:
    data = json.loads(encode(bay()))
    for key, value in over.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data).encode()


EXAMPLES = [
    bay(),
    LockerCompartmentState(
        device_id="edge-2",
        observed_at=NOW,
        reading_id=new_reading_id(),
        bank_id="b1",
        compartment_id="S01",
        status="occupied",
        door="closed",
    ),
    FootfallCount(
        device_id="cam-1",
        observed_at=NOW,
        reading_id=new_reading_id(),
        zone_id="z1",
        interval_start=NOW - timedelta(minutes=1),
        lines=[LineCount(line_id="gate", towards=3, away=1)],
        occupancy=2,
    ),
    DeviceStatus(device_id="cam-1", observed_at=NOW, reading_id=new_reading_id(), state="online", uptime_s=12.5),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.kind)
def test_every_kind_round_trips(message: object) -> None:
    assert decode(encode(message), now=NOW) == message  # type: ignore[arg-type]


def test_observed_at_is_normalised_to_utc_and_keeps_microseconds() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=1)))
    decoded = decode(payload(observed_at=local.isoformat()), now=NOW)
    assert decoded.observed_at == NOW
    assert decoded.observed_at.utcoffset() == timedelta(0)
    assert b'"observed_at":"2026-11-23T12:00:00.123456Z"' in encode(decoded)  # type: ignore[arg-type]


def test_unknown_keys_are_tolerated_on_the_wire() -> None:
    """An old gateway must survive a newer edge that adds a field."""
    assert decode(payload(battery_colour="green"), now=NOW).kind == "parking_bay"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (payload(kind="parking_space"), "unknown_kind"),
        (payload(kind=...), "unknown_kind"),
        (payload(bay_id=...), "missing_field"),
        (payload(status=1), "invalid_value"),
        (payload(lot_id=17), "wrong_type"),
        (payload(observed_at="yesterday"), "bad_timestamp"),
        (payload(observed_at="2026-11-23T12:00:00"), "bad_timestamp"),  # naive: whose clock?
        (payload(observed_at=(NOW + timedelta(hours=2)).isoformat()), "future_timestamp"),
        (payload(observed_at="1970-01-01T00:00:00Z"), "stale_timestamp"),
        (payload(schema_version=2), "unsupported_version"),
        (payload(bay_id="A/+/#"), "invalid_value"),
        (b"\xff\xfe\x00garbage", "not_json"),
        (b"[1, 2, 3]", "wrong_type"),
        (b"x" * 1_000_000, "too_large"),
        (b"", "not_json"),
    ],
)
def test_bad_payloads_are_rejected_with_a_countable_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MessageRejected) as info:
        decode(raw, now=NOW)
    assert info.value.reason == reason
    assert info.value.detail


def test_footfall_interval_must_precede_observed_at() -> None:
    data = json.loads(encode(EXAMPLES[2]))
    data["interval_start"] = (NOW + timedelta(seconds=1)).isoformat()
    with pytest.raises(MessageRejected) as info:
        decode(json.dumps(data).encode(), now=NOW)
    assert info.value.reason == "invalid_value"


def test_topics_build_and_parse_are_inverse() -> None:
    t = topics.build("acme/district", "dresden", "edge-1", "parking_bay")
    assert t == "acme/district/v1/dresden/edge-1/parking_bay"
    parsed = topics.parse(t, "acme/district")
    assert (parsed.site_id, parsed.device_id, parsed.kind) == ("dresden", "edge-1", "parking_bay")
    assert topics.subscription("acme/district") == "acme/district/v1/+/+/+"


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/s/d/parking_bay",
        "district/v2/s/d/parking_bay",
        "district/v1/s/d",
        "district/v1/s/d/x/parking_bay",
        "district/v1/s/d/bogus",
        "district/v1/s/+/parking_bay",
    ],
)
def test_foreign_topics_are_rejected(topic: str) -> None:
    with pytest.raises(MessageRejected) as info:
        receive(topic, encode(bay()), prefix="district", now=NOW)
    assert info.value.reason == "bad_topic"


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "+", "#", "x" * 65])
def test_topic_builder_refuses_ids_that_would_break_the_scheme(bad: str) -> None:
    with pytest.raises(topics.TopicError):
        topics.build("district", "site", bad, "status")


def test_topic_and_payload_must_agree() -> None:
    raw = encode(bay())
    with pytest.raises(MessageRejected) as info:
        receive("district/v1/s/edge-1/locker", raw, prefix="district", now=NOW)
    assert info.value.reason == "kind_mismatch"
    with pytest.raises(MessageRejected) as info:
        receive("district/v1/s/edge-9/parking_bay", raw, prefix="district", now=NOW)
    assert info.value.reason == "device_mismatch"


SITE = SiteConfig.model_validate(
    {
        "site": {"id": "s", "name": "S"},
        "zones": [{"id": "z1", "name": "Z"}],
        "parking": [
            {"id": "lot-a", "name": "A", "coords": {"lat": 51, "lng": 13}, "bays": {"prefix": "A", "count": 3}}
        ],
        "lockers": [
            {
                "id": "b1",
                "name": "B",
                "coords": {"lat": 51, "lng": 13},
                "compartments": [{"size": "S", "count": 2, "prefix": "S"}],
            }
        ],
    }
)


def test_site_configuration_rejects_readings_about_unknown_things() -> None:
    t = "district/v1/s/edge-1/parking_bay"
    assert receive(t, encode(bay()), prefix="district", site=SITE, now=NOW)[1].bay_id == "A001"
    for over, reason in (({"bay_id": "A004"}, "unknown_entity"), ({"lot_id": "lot-z"}, "unknown_entity")):
        with pytest.raises(MessageRejected) as info:
            receive(t, encode(bay(**over)), prefix="district", site=SITE, now=NOW)
        assert info.value.reason == reason
    with pytest.raises(MessageRejected) as info:
        receive("district/v1/elsewhere/edge-1/parking_bay", encode(bay()), prefix="district", site=SITE, now=NOW)
    assert info.value.reason == "unknown_site"


def test_committed_asyncapi_document_matches_the_models() -> None:
    from pathlib import Path

    from contracts.asyncapi import render

    committed = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.json"
    assert committed.read_text() == render(), "regenerate: python -m contracts.asyncapi > docs/asyncapi.json"
