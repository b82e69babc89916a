"""The Sink seam: a second store (or fan-out to two) plugs in without touching the batch writer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from contracts.storage import StoredPoint, gateway_stats_point
from gateway import influx
from gateway.influx import InfluxSink, line_protocol
from gateway.pipeline import STOP
from gateway.sink import STORAGE_ERROR, Entry, Refused, SinkResult, SinkUnavailable
from gateway.sink_fanout import FanOutSink
from tests.unit.gateway.test_pipeline import FakeWriter, accepted, rejected, run_writer


class RecordingSink:
    """A second store: keeps what it is given; fails the first ``fail_times`` writes; refuses ``refuse`` bays."""

    def __init__(self, fail_times: int = 0, refuse: str | None = None) -> None:
        self.fail_times = fail_times
        self.refuse = refuse
        self.batches: list[list[Entry]] = []
        self.closed = False

    def write(self, entries: Sequence[Entry]) -> SinkResult:
        if self.fail_times:
            self.fail_times -= 1
            raise SinkUnavailable("second store down", retry_after_s=0.001)
        self.batches.append(list(entries))
        refused = [
            Refused(i, "archive_rejected", "no room", b"x")
            for i, entry in enumerate(entries)
            if not isinstance(entry, StoredPoint) and getattr(entry.message, "bay_id", None) == self.refuse
        ]
        return SinkResult(written=len(entries) - len(refused), refused=refused, requests=1)

    def close(self) -> None:
        self.closed = True


def letters(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "dead.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_fan_out_writes_every_batch_to_both_stores_before_acking(tmp_path: Path) -> None:
    influxdb, second = FakeWriter(), RecordingSink()
    sink = FanOutSink(InfluxSink(influxdb), second)
    acks, stats, _ = run_writer([accepted(1), rejected(2), accepted(3), STOP], sink, tmp_path)
    assert acks == [1, 2, 3]
    assert [len(b) for b in influxdb.batches] == [2] and [len(b) for b in second.batches] == [2]
    assert stats.snapshot().written_points == 4  # two points in each store
    sink.close()
    assert second.closed


def test_fan_out_retries_the_whole_batch_when_one_store_is_down(tmp_path: Path) -> None:
    influxdb, second = FakeWriter(), RecordingSink(fail_times=2)
    acks, stats, _ = run_writer([accepted(1), accepted(2), STOP], FanOutSink(InfluxSink(influxdb), second), tmp_path)
    assert acks == [1, 2]
    assert len(influxdb.batches) == 3 and len(second.batches) == 1  # InfluxDB took it thrice: idempotent
    assert stats.snapshot().write_retries == 2


def test_a_refusal_by_the_second_store_is_dead_lettered_with_its_reason(tmp_path: Path) -> None:
    sink = FanOutSink(InfluxSink(FakeWriter()), RecordingSink(refuse="BAD"))
    acks, stats, _ = run_writer([accepted(1), accepted(2, bay="BAD"), STOP], sink, tmp_path)
    assert acks == [1, 2]
    (letter,) = letters(tmp_path)
    assert (letter["reason"], letter["topic"]) == ("archive_rejected", "p/v1/s/edge-1/parking_bay")
    assert stats.snapshot().dropped_points == 1


@pytest.mark.allow_logged_exceptions
def test_a_message_the_contract_cannot_map_is_dead_lettered_and_acked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = influx.to_points

    def to_points(message: object, **kw: object) -> list[StoredPoint]:
        if getattr(message, "bay_id", None) == "BUG":
            raise ValueError("no mapping")
        return real(message, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(influx, "to_points", to_points)
    writer = FakeWriter()
    acks, stats, _ = run_writer([accepted(1), accepted(2, bay="BUG"), accepted(3), STOP], writer, tmp_path)
    assert acks == [1, 2, 3] and [len(b) for b in writer.batches] == [2]
    (letter,) = letters(tmp_path)
    assert letter["reason"] == STORAGE_ERROR and "no mapping" in letter["detail"] and '"BUG"' in letter["payload"]
    snap = stats.snapshot()
    assert (snap.dropped_points, snap.influx_rejected, snap.written_points) == (1, 0, 2)


def test_gateway_stats_point_goes_through_the_contract() -> None:
    point = gateway_stats_point(
        gateway_id="gw-1", site_id="s", counters={"received": 3, "write_error": 'no "db"'}, time_ns=1_000
    )
    assert line_protocol(point) == 'gateway_stats,gateway=gw-1,site=s received=3i,write_error="no \\"db\\"" 1000'
