"""Limits of the wire contract: which timestamps and numbers pass the door, and why.

Sources: RFC 3339 §5.6 (date-time grammar, lower-case 't'/'z'), §4.3 (-00:00),
§5.7 (leap seconds); RFC 8259 §6 (Infinity/NaN are not JSON); InfluxDB 1.x line
protocol data types (int64, float64; timestamps int64 ns).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic.json_schema import models_json_schema

from contracts import DeviceStatus, MessageRejected, decode, encode, new_reading_id
from contracts.messages import (
    MAX_DURATION_S,
    MAX_WIRE_INT,
    MESSAGE_KINDS,
    STORE_TIME_MAX,
    STORE_TIME_MIN,
    parse_timestamp,
)
from contracts.storage import to_points
from gateway.influx import line_protocol

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def bay_payload(**over: object) -> bytes:
    data: dict[str, object] = {
        "kind": "parking_bay",
        "device_id": "edge-1",
        "observed_at": "2026-11-23T12:00:00Z",
        "reading_id": new_reading_id(),
        "lot_id": "lot-a",
        "bay_id": "A001",
        "status": "free",
    }
    data.update(over)
    return json.dumps(data).encode()


# (wire form, the UTC instant it means) — every one is RFC 3339 §5.6 date-time.
ACCEPTED = [
    ("2026-11-23T12:00:00Z", datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)),
    ("2026-11-23T13:00:00+01:00", datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)),
    ("2026-11-23T06:30:00-05:30", datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)),
    ("2026-11-23T12:00:00+00:00", datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)),
    ("2026-11-23T12:00:00-00:00", datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)),  # §4.3 unknown offset
    ("2026-11-23t12:00:00z", datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)),  # §5.6 NOTE
    ("2026-11-23T11:59:59.5Z", datetime(2026, 11, 23, 11, 59, 59, 500000, tzinfo=UTC)),
    ("2026-11-23T11:59:59.123456Z", datetime(2026, 11, 23, 11, 59, 59, 123456, tzinfo=UTC)),
    # More than 6 fraction digits: truncated to µs, never rounded up.
    ("2026-11-23T11:59:59.1234567Z", datetime(2026, 11, 23, 11, 59, 59, 123456, tzinfo=UTC)),
    ("2026-11-23T11:59:59.999999999999Z", datetime(2026, 11, 23, 11, 59, 59, 999999, tzinfo=UTC)),
    ("2026-11-22T23:59:59.9999999-00:00", datetime(2026, 11, 22, 23, 59, 59, 999999, tzinfo=UTC)),
    # Leap second (§5.7): 23:59:60 UTC on a month's last day -> 23:59:59.999999.
    ("2026-10-31T23:59:60Z", datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2026-10-31T23:59:60.5Z", datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2026-10-31T15:59:60-08:00", datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2026-11-01T01:29:60+01:30", datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)),
]

REJECTED = [
    ("2026-11-23 12:00:00Z", "space"),  # §5.6 NOTE allows it by choice; this contract does not
    ("2026-11-23T12:00:00", "naive"),
    ("2026-11-23t12:00:00", "naive"),
    ("2026-11-23T12:00:00.5", "naive"),
    ("2026-11-23T12:00Z", "expected"),  # seconds are required
    ("2026-11-23T12:00:00+0100", "expected"),
    ("2026-11-23T12:00:00+01", "expected"),
    ("2026-11-23T12:00:00,5Z", "expected"),
    ("2026-11-23T12:00:00.Z", "expected"),
    ("20261123T120000Z", "expected"),
    ("2026-11-23", "expected"),
    ("1700000000", "expected"),
    ("", "expected"),
    ("2026-11-23T12:00:00ZZ", "expected"),
    ("2026-11-23T12:00:00UTC", "expected"),
    ("\uff12\uff10\uff12\uff16-11-23T12:00:00Z", "expected"),  # full-width digits are not DIGIT
    ("2026-11-23T24:00:00Z", "hour"),
    ("2026-11-23T12:60:00Z", "minute"),
    ("2026-02-29T12:00:00Z", "day"),
    ("2026-13-01T12:00:00Z", "month"),
    ("2026-11-23T12:00:00+24:00", "offset"),
    ("2026-11-23T12:00:00+01:60", "offset"),
    ("2026-11-23T11:59:60Z", "leap second"),  # not 23:59 UTC
    ("2026-11-22T23:59:60Z", "leap second"),  # not a month's last day
    ("2026-10-31T23:59:60+01:00", "leap second"),  # 22:59:60 UTC
    ("0001-01-01T00:00:00+01:00", "range"),  # before year 1 in UTC
    ("1677-09-21T00:12:43.145224Z", "range"),  # one µs before InfluxDB 1.x's first nanosecond
    ("2262-04-11T23:47:16.854776Z", "range"),  # one µs after its last
    ("9999-12-31T23:59:60Z", "range"),
    (1700000000, "got int"),
    (1.7e9, "got float"),
    (None, "got NoneType"),
    (["2026-11-23T12:00:00Z"], "got list"),
]


@pytest.mark.parametrize(("text", "instant"), ACCEPTED, ids=[a for a, _ in ACCEPTED])
def test_rfc3339_forms_are_accepted_and_normalised_to_utc(text: str, instant: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == instant
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(("text", "instant"), ACCEPTED, ids=[a for a, _ in ACCEPTED])
def test_rfc3339_forms_pass_the_door(text: str, instant: datetime) -> None:
    message = decode(bay_payload(observed_at=text), now=instant)
    assert message.observed_at == instant
    assert message.observed_at.tzinfo == UTC


@pytest.mark.parametrize(("value", "why"), REJECTED, ids=[repr(v)[:40] for v, _ in REJECTED])
def test_other_forms_are_bad_timestamps_at_the_door(value: object, why: str) -> None:
    with pytest.raises(MessageRejected) as info:
        decode(bay_payload(observed_at=value), now=NOW)
    assert info.value.reason == "bad_timestamp"
    assert why in info.value.detail
    assert "observed_at" in info.value.detail


def test_interval_start_follows_the_same_rules() -> None:
    data = {
        "kind": "footfall",
        "device_id": "cam-1",
        "observed_at": "2026-11-23T12:00:00Z",
        "reading_id": new_reading_id(),
        "zone_id": "z1",
        "lines": [{"line_id": "gate", "towards": 1, "away": 0}],
    }
    ok = decode(json.dumps({**data, "interval_start": "2026-11-23t12:59:00+01:00"}).encode(), now=NOW)
    assert ok.interval_start == NOW - timedelta(minutes=1)  # type: ignore[union-attr]
    with pytest.raises(MessageRejected) as info:
        decode(json.dumps({**data, "interval_start": "2026-11-23 11:59:00Z"}).encode(), now=NOW)
    assert info.value.reason == "bad_timestamp"


def test_the_store_range_edges_are_exact() -> None:
    assert parse_timestamp("1677-09-21T00:12:43.145225Z") == STORE_TIME_MIN
    assert parse_timestamp("2262-04-11T23:47:16.854775Z") == STORE_TIME_MAX
    ns = lambda at: (int(at.timestamp()) * 1_000_000 + at.microsecond) * 1000  # noqa: E731 - as storage does
    assert ns(STORE_TIME_MAX) <= 2**63 - 2  # InfluxDB 1.x MaxNanoTime


def test_python_datetimes_must_be_aware() -> None:
    with pytest.raises(ValueError, match="naive"):
        DeviceStatus(device_id="d", observed_at=datetime(2026, 1, 1), reading_id=new_reading_id(), state="online")


# ---------------------------------------------------------------- numbers

STATUS = {
    "kind": "status",
    "device_id": "cam-1",
    "observed_at": "2026-11-23T12:00:00Z",
    "reading_id": "r" * 32,
    "state": "online",
    "epoch": "e1",
    "seq": 41,
    "uptime_s": 12.5,
    "battery_pct": 80.0,
    "signal_dbm": -70.0,
    "outbox_pending": 3,
    "cameras": [{"camera_id": "c1", "state": "ok", "fps": 10.0, "dropped_frames": 0, "last_frame_age_s": 0.1}],
}
FOOTFALL = {
    "kind": "footfall",
    "device_id": "cam-1",
    "observed_at": "2026-11-23T12:00:00Z",
    "reading_id": "r" * 32,
    "zone_id": "z1",
    "epoch": "e1",
    "seq": 42,
    "interval_start": "2026-11-23T11:59:00Z",
    "lines": [{"line_id": "gate", "towards": 3, "away": 1}],
    "occupancy": 2,
}
# Every numeric field of every message kind, as a path into one of the examples above.
NUMERIC_FIELDS: list[tuple[dict[str, Any], tuple[str | int, ...]]] = [
    (STATUS, ("schema_version",)),
    (STATUS, ("seq",)),
    (STATUS, ("uptime_s",)),
    (STATUS, ("battery_pct",)),
    (STATUS, ("signal_dbm",)),
    (STATUS, ("outbox_pending",)),
    (STATUS, ("cameras", 0, "fps")),
    (STATUS, ("cameras", 0, "dropped_frames")),
    (STATUS, ("cameras", 0, "last_frame_age_s")),
    (FOOTFALL, ("schema_version",)),
    (FOOTFALL, ("seq",)),
    (FOOTFALL, ("lines", 0, "towards")),
    (FOOTFALL, ("lines", 0, "away")),
    (FOOTFALL, ("occupancy",)),
]
FIELD_IDS = [".".join(map(str, path)) + f"@{ex['kind']}" for ex, path in NUMERIC_FIELDS]


def ex_value(example: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    node: Any = example
    for part in path:
        node = node.get(part) if isinstance(node, dict) else node[part]
    return node


def _with(example: dict[str, Any], path: tuple[str | int, ...], token: str) -> bytes:
    """The example as JSON text with the field at ``path`` replaced by the raw token."""
    marker = "__HERE__"
    data = json.loads(json.dumps(example))
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = marker
    return json.dumps(data).replace(f'"{marker}"', token).encode()


def test_the_examples_are_valid() -> None:
    for example in (STATUS, FOOTFALL):
        decode(json.dumps(example).encode(), now=NOW)


def _numeric_schema_paths() -> set[str]:
    """Every property the JSON schema of the message models types as a number or integer."""
    _, defs = models_json_schema([(m, "validation") for m in MESSAGE_KINDS.values()])
    found: set[str] = set()
    for model, schema in defs["$defs"].items():
        for name, prop in schema.get("properties", {}).items():
            for option in prop.get("anyOf", [prop]):
                if option.get("type") in ("number", "integer"):
                    found.add(f"{model}.{name}")
    return found


def test_the_table_covers_every_numeric_field_of_every_kind() -> None:
    """A new numeric field must be added to NUMERIC_FIELDS (and so to the checks below)."""
    covered = {"LineCount.towards", "LineCount.away", "FootfallCount.occupancy", "CameraHealth.fps"}
    covered |= {"CameraHealth.dropped_frames", "CameraHealth.last_frame_age_s"}
    covered |= {f"DeviceStatus.{n}" for n in ("uptime_s", "battery_pct", "signal_dbm", "outbox_pending")}
    covered |= {f"{m.__name__}.schema_version" for m in MESSAGE_KINDS.values()}
    covered |= {f"{m.__name__}.seq" for m in MESSAGE_KINDS.values()}
    assert _numeric_schema_paths() == covered


def test_every_numeric_field_has_bounds_the_store_can_hold() -> None:
    """Integers within ±(2**53 - 1) (I-JSON, inside InfluxDB's int64); floats bounded both ways."""
    _, defs = models_json_schema([(m, "validation") for m in MESSAGE_KINDS.values()])
    for model, schema in defs["$defs"].items():
        for name, prop in schema.get("properties", {}).items():
            for option in prop.get("anyOf", [prop]):
                if option.get("type") not in ("number", "integer"):
                    continue
                low = option.get("minimum", option.get("exclusiveMinimum"))
                high = option.get("maximum", option.get("exclusiveMaximum"))
                assert low is not None and high is not None, f"{model}.{name} is unbounded"
                assert -MAX_WIRE_INT <= low <= high <= MAX_WIRE_INT, f"{model}.{name}: [{low}, {high}]"
                if option["type"] == "number":
                    assert high <= MAX_DURATION_S, f"{model}.{name}"


@pytest.mark.parametrize(("example", "path"), NUMERIC_FIELDS, ids=FIELD_IDS)
@pytest.mark.parametrize("token", ["Infinity", "-Infinity", "NaN"])
def test_non_json_number_tokens_are_not_json(example: dict[str, Any], path: tuple[str | int, ...], token: str) -> None:
    with pytest.raises(MessageRejected) as info:
        decode(_with(example, path, token), now=NOW)
    assert info.value.reason == "not_json"
    assert "RFC 8259" in info.value.detail


@pytest.mark.parametrize(("example", "path"), NUMERIC_FIELDS, ids=FIELD_IDS)
@pytest.mark.parametrize("token", ["1e999", "-1e999", "1e300", "-1e300", "9007199254740992", "-9007199254740992"])
def test_numbers_that_do_not_fit_are_invalid_values(
    example: dict[str, Any], path: tuple[str | int, ...], token: str
) -> None:
    with pytest.raises(MessageRejected) as info:
        decode(_with(example, path, token), now=NOW)
    assert info.value.reason == "invalid_value"
    assert ".".join(map(str, path)) in info.value.detail


FLOAT_FIELDS = [(ex, path) for ex, path in NUMERIC_FIELDS if isinstance(ex_value(ex, path), float)]


@pytest.mark.parametrize(("example", "path"), FLOAT_FIELDS, ids=[".".join(map(str, path)) for _, path in FLOAT_FIELDS])
@pytest.mark.parametrize("token", ['"inf"', '"-Infinity"', '"NaN"', '"1e999"'])
def test_non_finite_strings_in_float_fields_are_invalid_values(
    example: dict[str, Any], path: tuple[str | int, ...], token: str
) -> None:
    """pydantic's lax mode reads a numeric string as a float; non-finite ones stay out."""
    with pytest.raises(MessageRejected) as info:
        decode(_with(example, path, token), now=NOW)
    assert info.value.reason == "invalid_value"


def test_the_tokens_are_refused_even_in_keys_this_version_ignores() -> None:
    raw = json.dumps(STATUS).encode()[:-1] + b', "future_metric": NaN}'
    with pytest.raises(MessageRejected) as info:
        decode(raw, now=NOW)
    assert info.value.reason == "not_json"


def test_the_same_letters_inside_strings_are_fine() -> None:
    message = decode(json.dumps({**STATUS, "reason": "NaN from Infinity sensor", "firmware": "NaN"}).encode(), now=NOW)
    assert isinstance(message, DeviceStatus)
    assert message.reason == "NaN from Infinity sensor"


def test_python_constructed_messages_are_held_to_the_same_limits() -> None:
    base = {"device_id": "d", "observed_at": NOW, "reading_id": new_reading_id(), "state": "online"}
    for field, value in (("uptime_s", math.inf), ("uptime_s", math.nan), ("outbox_pending", 2**63)):
        with pytest.raises(ValueError):
            DeviceStatus.model_validate({**base, field: value})


def test_largest_accepted_values_reach_the_store_intact() -> None:
    """At the upper bounds, the points carry every field with its value (nothing silently dropped)."""
    data = json.loads(json.dumps(STATUS))
    data.update(uptime_s=MAX_DURATION_S, outbox_pending=MAX_WIRE_INT)
    data["cameras"][0].update(dropped_frames=MAX_WIRE_INT, last_frame_age_s=MAX_DURATION_S, fps=1000)
    message = decode(json.dumps(data).encode(), now=NOW)
    assert decode(encode(message), now=NOW) == message  # type: ignore[arg-type]
    status, camera = (line_protocol(p) for p in to_points(message, site_id="s", received_at=NOW))
    assert f"uptime_s={MAX_DURATION_S:.0f}" in status
    assert f"outbox_pending={MAX_WIRE_INT}i" in status
    assert f"dropped_frames={MAX_WIRE_INT}i" in camera
    assert f"last_frame_age_s={MAX_DURATION_S:.0f}" in camera
