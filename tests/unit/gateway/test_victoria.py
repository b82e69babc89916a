"""VictoriaMetrics sink: its answers table, the data-model mapping, and choosing sinks from settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contracts.storage import StoredPoint
from gateway.influx import Action, InfluxSink, line_protocol
from gateway.settings import GatewaySettings
from gateway.sink_fanout import FanOutSink, build_sink
from gateway.victoria import STATE_SETS, VictoriaSink, classify_vm_write, vm_points


@pytest.mark.parametrize(
    ("status", "body", "action"),
    [
        (204, b"", Action.STORED),
        (200, b"", Action.STORED),
        (0, b"", Action.RETRY),
        (400, b'unsupported path requested: "/insert/0/influx/write"', Action.FATAL),
        (400, b"cannot parse influx line protocol: line too long", Action.DROP_BAD_POINTS),
        (400, b"cannot read request body", Action.FATAL),
        (401, b"", Action.FATAL),
        (403, b"", Action.FATAL),
        (404, b"not found", Action.FATAL),
        (413, b"", Action.DROP_BAD_POINTS),
        (429, b"", Action.RETRY),
        (503, b"cannot handle more than 8 concurrent inserts during 1m0s", Action.RETRY),
        (500, b"storage is in read-only mode", Action.RETRY),
        (302, b"", Action.FATAL),
    ],
)
def test_every_answer_row(status: int, body: bytes, action: Action) -> None:
    decision = classify_vm_write(status, {}, body)
    assert decision.action is action
    if action is Action.FATAL:
        assert "vm_" in decision.fix, "a fatal answer names the setting to fix"


def test_retry_after_is_honoured() -> None:
    assert classify_vm_write(503, {"Retry-After": "7"}, b"").retry_after_s == 7.0


def test_numbers_stay_states_become_state_sets_free_text_is_left_out() -> None:
    point = StoredPoint(
        "parking_bay",
        {"site": "s", "bay": "B1"},
        {"status": "occupied", "occupied": 1, "reading_id": "r-1", "received_ns": 5, "ok": True},
        1_700_000_000_123_456_789,
    )
    lines = [line_protocol(p) for p in vm_points(point)]
    assert lines[0] == "parking_bay,bay=B1,site=s occupied=1i,ok=true,received_ns=5i 1700000000123456789"
    states = STATE_SETS[("parking_bay", "status")]
    assert len(lines) == 1 + len(states)
    assert "parking_bay,bay=B1,parking_bay_status=occupied,site=s status=1i 1700000000123456789" in lines
    assert "parking_bay,bay=B1,parking_bay_status=free,site=s status=0i 1700000000123456789" in lines
    assert not any("reading_id" in line for line in lines)


def test_a_state_the_contract_does_not_know_yet_is_kept_as_one_more_state() -> None:
    point = StoredPoint("device_status", {"device": "d"}, {"state": "hibernating"}, 1)
    got = {p.tags["device_status_state"]: p.fields["state"] for p in vm_points(point)}
    assert got["hibernating"] == 1 and got["online"] == 0 and sum(got.values()) == 1


def test_a_point_of_free_text_only_writes_nothing() -> None:
    assert vm_points(StoredPoint("gateway_stats", {"gateway": "g"}, {"write_error": "boom"}, 1)) == []


def test_settings_choose_one_store_or_both() -> None:
    sink, influx = build_sink(GatewaySettings(sinks="victoriametrics", history=False, vm_url="http://127.0.0.1:9"))
    assert isinstance(sink, VictoriaSink) and influx is None
    sink.close()
    sink, influx = build_sink(GatewaySettings(sinks="influxdb,victoriametrics", vm_url="http://127.0.0.1:9"))
    assert isinstance(sink, FanOutSink) and isinstance(influx, InfluxSink)
    assert [type(s) for s in sink.sinks] == [InfluxSink, VictoriaSink]
    sink.close()


def test_history_without_influxdb_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="history"):
        GatewaySettings(sinks="victoriametrics")
    with pytest.raises(ValidationError, match="at most once"):
        GatewaySettings(sinks="influxdb,influxdb")
    with pytest.raises(ValidationError, match="unknown store"):
        GatewaySettings(sinks="influxdb,prometheus")
    with pytest.raises(ValidationError, match="http"):
        GatewaySettings(vm_url="localhost:8428")
