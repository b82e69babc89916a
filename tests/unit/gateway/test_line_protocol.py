"""The gateway's own line-protocol serializer against influxdb-client's ``Point``, the oracle.

``gateway.influx.line_protocol`` replaced ``Point.to_line_protocol()`` for speed
(docs/influxdb-writes.md); it must produce the same bytes for every point:
random measurements, tags and fields, every special character line protocol
escapes, every field type, non-finite floats, empty tags.
"""

from __future__ import annotations

import math
import warnings
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from contracts import LockerCompartmentState, ParkingBayState, new_reading_id, utcnow
from contracts.messages import CameraHealth, DeviceStatus, FootfallCount, LineCount
from contracts.storage import FieldValue, StoredPoint, gateway_stats_point, to_points
from gateway import influx
from gateway.influx import line_protocol


def oracle(point: StoredPoint) -> str:
    """influxdb-client's line for the point (what the gateway wrote before its own serializer)."""
    p = Point(point.measurement)
    for key, value in point.tags.items():
        p.tag(key, value)
    for name, field_value in point.fields.items():
        p.field(name, field_value)
    p.time(point.time_ns, WritePrecision.NS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # a measurement starting with '#': not ours to judge
        return str(p.to_line_protocol())


#: Text rich in what line protocol escapes: comma, equals, space, quotes, backslash, newline, tab, CR.
SPECIAL = ",= \"\\\n\t\r#'"
text = st.text(alphabet=st.sampled_from(SPECIAL + "ab"), max_size=8) | st.text(
    alphabet=st.sampled_from(SPECIAL) | st.characters(codec="utf-8"), max_size=12
)
field_value: st.SearchStrategy[FieldValue] = st.one_of(
    text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
points = st.builds(
    StoredPoint,
    measurement=text.filter(bool),
    tags=st.dictionaries(text, text, max_size=5),
    fields=st.dictionaries(text, field_value, max_size=6),
    time_ns=st.integers(min_value=-(2**63) + 2, max_value=2**63 - 1),
)


@settings(max_examples=1500, deadline=None)
@given(points)
def test_random_points_match_influxdb_client(point: StoredPoint) -> None:
    assert line_protocol(point) == oracle(point)


@settings(max_examples=300, deadline=None)
@given(st.lists(points, min_size=1, max_size=8))
def test_the_escape_caches_never_change_a_line(batch: list[StoredPoint]) -> None:
    # The same names and values again, in another order, after others filled the caches.
    for point in batch + batch[::-1]:
        assert line_protocol(point) == oracle(point)


def test_the_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(influx, "_CACHE_MAX", 3)
    for i in range(10):
        point = StoredPoint(f"m{i}", {f"t{i}": f"v {i}"}, {f"f{i}": i}, i)
        assert line_protocol(point) == oracle(point)
    assert max(len(influx._measurements), len(influx._keys), len(influx._tag_values)) <= 3


def test_edge_cases_by_hand() -> None:
    cases = [
        StoredPoint("m", {}, {}, 1),  # no fields: no line
        StoredPoint("m", {"a": "x"}, {"f": math.nan, "g": math.inf}, 1),  # only non-finite: no line
        StoredPoint("m", {"a": "ends\\"}, {"f": 1.0}, 1),  # trailing backslash in a tag value
        StoredPoint("m", {"": "x", "b": ""}, {"f": -0.0}, 1),  # empty tag key / value left out
        StoredPoint("we,ird m=x", {"k y": "v,=w"}, {"s": 'q"u\\ote', "t": True, "u": False}, 0),
        StoredPoint("m", {}, {"big": 2**63 - 1, "small": -(2**63), "e": 1e300, "tiny": 5e-324}, -5),
    ]
    for point in cases:
        assert line_protocol(point) == oracle(point), point


def test_every_message_kind_as_the_contract_maps_it() -> None:
    now = utcnow()
    common = {"observed_at": now, "reading_id": new_reading_id(), "epoch": "e1", "seq": 7}
    messages = [
        ParkingBayState(device_id="bays-1", lot_id="lot-a", bay_id="A1", status="occupied", **common),
        ParkingBayState(device_id="bays-1", lot_id="lot-a", bay_id="A1", status="closed", **common),
        LockerCompartmentState(device_id="lk-1", bank_id="b1", compartment_id="c1", status="free", **common),
        FootfallCount(
            device_id="cam-1",
            camera_id="c0",
            zone_id="z1",
            interval_start=now - timedelta(minutes=1),
            lines=[LineCount(line_id="l1", towards=3, away=1), LineCount(line_id="l2", towards=0, away=9)],
            occupancy=4,
            **common,
        ),
        DeviceStatus(
            device_id="dev-1",
            state="degraded",
            reason='a "quoted", spaced\\reason',
            uptime_s=12.5,
            battery_pct=80,
            firmware="fw 1.0",
            outbox_pending=3,
            cameras=[CameraHealth(camera_id="c0", state="ok", fps=12.0, dropped_frames=2, last_frame_age_s=0.1)],
            **common,
        ),
    ]
    for message in messages:
        for point in to_points(message, site_id="site-1", received_at=now):
            assert line_protocol(point) == oracle(point)
    stats = gateway_stats_point(
        gateway_id="gw", site_id="s", counters={"received": 5, "write_error": "HTTP 401: no"}, time_ns=1
    )
    assert line_protocol(stats) == oracle(stats)
