"""The batch writer's rules with a fake InfluxDB (behind the real InfluxSink) and a recording acknowledger."""

from __future__ import annotations

import json
import logging
import queue
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from common.influxdb import InfluxError, InfluxFatal, InfluxUnavailable
from contracts import ParkingBayState, new_reading_id, utcnow
from contracts.storage import StoredPoint
from gateway.influx import DroppedLine, InfluxSink, WriteResult, message_lines
from gateway.pipeline import (
    STOP,
    Accepted,
    Backoff,
    BatchWriter,
    DeadLetters,
    Item,
    QueueEntry,
    Rejected,
    Stats,
    dead_letter_record,
)
from gateway.sink import Sink


class FakeWriter:
    def __init__(
        self,
        fail_times: int = 0,
        drop_marker: str | None = None,
        status: int = 503,
        error: InfluxUnavailable | None = None,
        create_fails: bool = False,
    ) -> None:
        self.fail_times = fail_times
        self.drop_marker = drop_marker
        self.status = status
        self.error = error
        self.create_fails = create_fails
        self.batches: list[list[str]] = []
        self.calls = 0
        self.created = 0

    def write(self, lines: list[str]) -> WriteResult:
        self.calls += 1
        if self.fail_times:
            self.fail_times -= 1
            raise self.error or InfluxUnavailable("down", self.status)
        self.batches.append(list(lines))
        dropped = [
            DroppedLine(i, line, "HTTP 400: field type conflict")
            for i, line in enumerate(lines)
            if self.drop_marker and self.drop_marker in line
        ]
        return WriteResult(written=len(lines) - len(dropped), dropped=dropped, requests=1)

    def create_database(self) -> None:
        self.created += 1
        if self.create_fails:
            raise InfluxError("CREATE DATABASE: HTTP 401: unauthorized", 401)

    def close(self) -> None:
        pass


def accepted(mid: int, bay: str = "A001") -> Accepted:
    now = utcnow()
    msg = ParkingBayState(
        device_id="edge-1",
        observed_at=now - timedelta(seconds=1),
        reading_id=new_reading_id(),
        lot_id="lot-a",
        bay_id=bay,
        status="free",
    )
    return Accepted(mid, 1, 1, "p/v1/s/edge-1/parking_bay", "s", msg, now)


def rejected(mid: int) -> Rejected:
    return Rejected(mid, 1, 1, "p/v1/s/edge-1/parking_bay", b"\xffjunk", "not_json", "bad", utcnow())


class RecordingWake(threading.Event):
    """The writer's wake-up event, recording each wait (seconds) and returning at once."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(-1.0 if timeout is None else timeout)
        return False


def run_writer(
    items: list[QueueEntry],
    writer: FakeWriter | Sink,
    tmp_path: Path,
    wake: RecordingWake | None = None,
    **kw: object,
) -> tuple[list[int], Stats, BatchWriter]:
    """Run a batch writer until STOP on ``writer`` (a fake InfluxDB behind the real InfluxSink, or any sink)."""
    q: queue.Queue[QueueEntry] = queue.Queue()
    for item in items:
        q.put(item)
    acks: list[int] = []
    stats = Stats()
    dead = DeadLetters(tmp_path / "dead.jsonl")
    options: dict[str, object] = {"batch_size": 1000, "flush_interval_s": 0.01, "stats_interval_s": 3600.0}
    options.update(kw)
    bw = BatchWriter(
        q,
        InfluxSink(writer) if isinstance(writer, FakeWriter) else writer,
        lambda item: acks.append(item.mid),
        stats,
        dead,
        backoff=Backoff(0.001, 0.002, jitter=lambda: 1.0),
        **options,  # type: ignore[arg-type]
    )
    if wake is not None:
        bw._wake = wake
    thread = threading.Thread(target=bw.run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    dead.close()
    return acks, stats, bw


def test_acks_follow_receive_order_across_valid_and_rejected(tmp_path: Path) -> None:
    items: list[QueueEntry] = [accepted(1), rejected(2), accepted(3), rejected(4), accepted(5), STOP]
    writer = FakeWriter()
    acks, stats, _ = run_writer(items, writer, tmp_path)
    assert acks == [1, 2, 3, 4, 5]
    assert sum(len(b) for b in writer.batches) == 3
    letters = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in letters] == ["not_json", "not_json"]
    assert stats.snapshot().acked == 5


def test_batches_respect_batch_size(tmp_path: Path) -> None:
    items: list[QueueEntry] = [accepted(i, bay=f"B{i:03d}") for i in range(1, 26)]
    writer = FakeWriter()
    acks, _, _ = run_writer([*items, STOP], writer, tmp_path, batch_size=10)
    assert [len(b) for b in writer.batches] == [10, 10, 5]
    assert acks == list(range(1, 26))


def test_outage_retries_with_backoff_and_acks_only_after_success(tmp_path: Path) -> None:
    writer = FakeWriter(fail_times=3)
    acks, stats, _ = run_writer([accepted(1), rejected(2), accepted(3), STOP], writer, tmp_path)
    assert writer.calls == 4
    assert acks == [1, 2, 3]
    snap = stats.snapshot()
    assert (snap.write_retries, snap.written_points, snap.dropped_points) == (3, 2, 0)


def test_missing_database_is_recreated(tmp_path: Path) -> None:
    writer = FakeWriter(fail_times=1, status=404)
    acks, _, _ = run_writer([accepted(1), STOP], writer, tmp_path)
    assert (writer.created, acks) == (1, [1])


def test_stop_during_outage_gives_up_without_acking(tmp_path: Path) -> None:
    writer = FakeWriter(fail_times=10**9)
    q: queue.Queue[QueueEntry] = queue.Queue()
    for entry in (accepted(1), accepted(2), STOP):
        q.put(entry)
    acks: list[Item] = []
    bw = BatchWriter(
        q,
        InfluxSink(writer),
        acks.append,
        Stats(),
        DeadLetters(None),
        batch_size=100,
        flush_interval_s=0.01,
        backoff=Backoff(0.001, 0.01),
    )
    thread = threading.Thread(target=bw.run)
    thread.start()
    bw.give_up_after(0.2)
    thread.join(5)
    assert not thread.is_alive()
    assert acks == []
    assert writer.calls > 3


def test_a_point_influx_rejects_is_dropped_dead_lettered_and_acked(tmp_path: Path) -> None:
    writer = FakeWriter(drop_marker="bay=POISON")
    acks, stats, _ = run_writer([accepted(1), accepted(2, bay="POISON"), accepted(3), STOP], writer, tmp_path)
    assert acks == [1, 2, 3]
    assert stats.snapshot().dropped_points == 1
    (letter,) = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert letter["reason"] == "influx_rejected" and "bay=POISON" in letter["payload"]


def test_a_rejected_point_carries_influxdb_reason_and_is_counted(tmp_path: Path) -> None:
    class Retention(FakeWriter):
        def write(self, lines: list[str]) -> WriteResult:
            result = super().write(lines)
            reason = "HTTP 422: failure writing points to database: partial write: points beyond retention policy"
            result.dropped = [DroppedLine(d.index, d.line, reason) for d in result.dropped]
            return result

    writer = Retention(drop_marker="bay=OLD")
    items: list[QueueEntry] = [accepted(1, bay="OLD"), *[accepted(i, bay=f"L{i}") for i in range(2, 12)], STOP]
    acks, stats, _ = run_writer(items, writer, tmp_path)
    assert acks == list(range(1, 12))  # the old reading's message too: it will never be storable
    snap = stats.snapshot()
    assert (snap.influx_rejected, snap.dropped_points, snap.written_points) == (1, 1, 10)
    (letter,) = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert letter["reason"] == "influx_rejected"
    assert letter["detail"].endswith("points beyond retention policy") and "bay=OLD" in letter["payload"]
    assert letter["topic"] == "p/v1/s/edge-1/parking_bay"


def fatal(status: int = 401) -> InfluxFatal:
    return InfluxFatal(f"write 1 lines: HTTP {status}: unauthorized; to fix: check influx_token", status, "check")


def test_a_configuration_error_is_loud_acks_nothing_and_waits_the_longest_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    class Watching(FakeWriter):
        def write(self, lines: list[str]) -> WriteResult:
            seen.append(stats_box[0].snapshot().write_error)
            return super().write(lines)

    stats_box: list[Stats] = [Stats()]
    writer = Watching(fail_times=4, error=fatal())
    wake = RecordingWake()
    q: queue.Queue[QueueEntry] = queue.Queue()
    for entry in (accepted(1), rejected(2), accepted(3), STOP):
        q.put(entry)
    acks: list[int] = []
    bw = BatchWriter(
        q,
        InfluxSink(writer),
        lambda item: acks.append(item.mid),
        stats_box[0],
        DeadLetters(None),
        batch_size=100,
        flush_interval_s=0.01,
        backoff=Backoff(0.001, 5.0, jitter=lambda: 1.0),
    )
    bw._wake = wake
    with caplog.at_level(logging.ERROR, logger="gateway.pipeline"):
        bw.run()
    assert wake.waits == [5.0, 5.0, 5.0, 5.0]  # the cap from the first failure on: no hot loop
    assert seen[0] == "" and all("HTTP 401" in text for text in seen[1:])  # shown while it lasts
    assert acks == [1, 2, 3]  # only once a write succeeded
    snap = stats_box[0].snapshot()
    assert (snap.write_fatal, snap.write_retries, snap.write_error, snap.dropped_points) == (4, 4, "", 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # rate-limited
    assert "nothing is acknowledged" in errors[0] and "to fix: check influx_token" in errors[0]


def test_stop_during_a_configuration_error_acks_nothing(tmp_path: Path) -> None:
    writer = FakeWriter(fail_times=10**9, error=fatal(403))
    q: queue.Queue[QueueEntry] = queue.Queue()
    for entry in (accepted(1), accepted(2), STOP):
        q.put(entry)
    acks: list[Item] = []
    stats = Stats()
    bw = BatchWriter(
        q,
        InfluxSink(writer),
        acks.append,
        stats,
        DeadLetters(None),
        batch_size=100,
        flush_interval_s=0.01,
        backoff=Backoff(0.001, 0.05),
    )
    thread = threading.Thread(target=bw.run)
    thread.start()
    bw.give_up_after(0.3)
    thread.join(5)
    assert not thread.is_alive() and acks == []
    assert 2 <= writer.calls <= 12  # waited about 0.05 s a time, not a spin
    assert "HTTP 403" in stats.snapshot().write_error


def test_missing_database_that_cannot_be_created_is_fatal(tmp_path: Path) -> None:
    error = InfluxFatal("write: HTTP 404: database not found; to fix: create it", 404, "create it")
    writer = FakeWriter(fail_times=2, error=error, create_fails=True)
    acks, stats, _ = run_writer([accepted(1), STOP], writer, tmp_path)
    assert (writer.created, acks, stats.snapshot().write_fatal) == (2, [1], 2)


def test_missing_database_that_is_created_is_not_fatal(tmp_path: Path) -> None:
    error = InfluxFatal("write: HTTP 404: database not found; to fix: create it", 404, "create it")
    writer = FakeWriter(fail_times=1, error=error)
    wake = RecordingWake()
    acks, stats, _ = run_writer([accepted(1), STOP], writer, tmp_path, wake=wake)
    assert (writer.created, acks, stats.snapshot().write_fatal) == (1, [1], 0)
    assert wake.waits == [0.001]  # the ordinary backoff, not the cap


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    writer = FakeWriter(fail_times=2, error=InfluxUnavailable("HTTP 429: slow down", 429, retry_after_s=0.75))
    wake = RecordingWake()
    acks, stats, _ = run_writer([accepted(1), STOP], writer, tmp_path, wake=wake)
    assert wake.waits == [0.75, 0.75] and acks == [1]
    assert stats.snapshot().write_fatal == 0


def test_stats_point_rides_along(tmp_path: Path) -> None:
    writer = FakeWriter()
    run_writer(
        [accepted(1), STOP],
        writer,
        tmp_path,
        # 0: due at the very first look (0.1 ms could pass unnoticed before the STOP on a fast box).
        stats_interval_s=0.0,
        stats_points=lambda snap: [StoredPoint("gateway_stats", {}, {"received": snap.received}, 0)],
    )
    assert any(line.startswith("gateway_stats") for batch in writer.batches for line in batch)


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(0.1, 1.0, jitter=lambda: 1.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.1
    half = Backoff(1.0, 8.0, jitter=lambda: 0.0)
    assert half.next() == 0.5  # jitter spreads within [0.5x, 1x]


def test_dead_letter_record_keeps_1kb_text_or_base64() -> None:
    at = utcnow()
    text = dead_letter_record(at, "t", "too_large", "d", b"a" * 5000)
    assert (text["payload"], text["payload_bytes"]) == ("a" * 1024, 5000)
    binary = dead_letter_record(at, "t", "not_json", "d", b"\xff\xfe")
    assert binary["payload_b64"] == "//4=" and "payload" not in binary
    assert str(text["time"]).endswith("Z")


def test_message_lines_use_the_storage_contract() -> None:
    (line,) = message_lines(accepted(1, bay="X1"))
    assert line.startswith("parking_bay,bay=X1,device=edge-1,lot=lot-a,site=s ")
    assert 'status="free"' in line


@pytest.mark.parametrize("gen,connected,sent", [(1, True, True), (0, True, False), (1, False, False)])
def test_intake_acks_only_on_the_connection_the_message_came_on(gen: int, connected: bool, sent: bool) -> None:
    from gateway.intake import MqttIntake
    from gateway.settings import GatewaySettings

    stats = Stats()
    intake = MqttIntake(GatewaySettings(), queue.Queue(), stats)
    sent_acks: list[int] = []
    intake._client.ack = lambda mid, qos: sent_acks.append(mid) or 0  # type: ignore[method-assign]
    intake._gen = 1
    if connected:
        intake._connected.set()
    intake.ack(Accepted(7, 1, gen, "t", "s", accepted(7).message, utcnow()))
    assert sent_acks == ([7] if sent else [])
    assert stats.snapshot().stale_acks == (0 if sent else 1)


@pytest.mark.parametrize("window", [None, 5000])
def test_the_intake_keeps_a_confirmation_window_wider_than_paho_default(window: int | None) -> None:
    # paho lets 20 QoS 1 publishes be in flight; a city's confirmations need far more (bench/scale).
    from gateway.intake import MqttIntake
    from gateway.settings import GatewaySettings

    settings = GatewaySettings() if window is None else GatewaySettings(confirm_inflight=window)
    intake = MqttIntake(settings, queue.Queue(), Stats())
    assert intake._client._max_inflight_messages == (window or 1000)
