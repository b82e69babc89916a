"""The hand-off between the intake and the writer side (gateway/handoff.py, gateway/processor.py), without MQTT.

The writer side runs here in a thread (the link's mode for a sink object) on
the same socket pair and pickles as the child process, with a recording sink.
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

import pytest

from contracts import ParkingBayState, encode, new_reading_id, topics, utcnow
from contracts.storage import to_ns
from gateway.handoff import ForwardedException, Inbox, WriterLink, _add, _Child, _log_here
from gateway.pipeline import Accepted, GatewayStats, Ignored, Rejected, Stats
from gateway.processor import BulkQueue, Classifier, LogForwarder, Raw, Report, Writer
from gateway.settings import GatewaySettings
from gateway.sink import Entry, Refused, SinkResult, SinkUnavailable
from gateway.snapshots import LateMarks
from tests.conftest import wait_for

PREFIX = "t"


def bay_payload(device: str = "bays-1", seq: int | None = None, status: str = "free") -> bytes:
    message = ParkingBayState(
        device_id=device,
        observed_at=utcnow() - timedelta(seconds=1),
        reading_id=new_reading_id(),
        lot_id="lot-1",
        bay_id="B1",
        status="occupied" if status == "occupied" else "free",
        epoch=None if seq is None else "e1",
        seq=seq,
    )
    return encode(message)


def bay_topic(device: str = "bays-1") -> str:
    return topics.build(PREFIX, "s1", device, "parking_bay")


def raw(seq: int, payload: bytes, topic: str | None = None, retain: bool = False) -> Raw:
    return (seq, bay_topic() if topic is None else topic, payload, retain, time.time_ns())


class RecordingSink:
    """Keeps what it was handed; fails ``fail`` times first; refuses entries whose bay is ``refuse_bay``."""

    def __init__(self, fail: int = 0, refuse_bay: str | None = None) -> None:
        self.fail = fail
        self.refuse_bay = refuse_bay
        self.written: list[Entry] = []
        self.lock = threading.Lock()

    def write(self, entries: Sequence[Entry]) -> SinkResult:
        if self.fail:
            self.fail -= 1
            raise SinkUnavailable("down")
        refused = [
            Refused(i, "influx_rejected", "no", b"line")
            for i, e in enumerate(entries)
            if isinstance(e, Accepted) and getattr(e.message, "bay_id", None) == self.refuse_bay
        ]
        with self.lock:
            self.written.extend(entries)
        return SinkResult(written=len(entries) - len(refused), refused=refused, requests=1)

    def close(self) -> None:
        pass

    def readings(self) -> list[Accepted]:
        with self.lock:
            return [e for e in self.written if isinstance(e, Accepted)]


def settings(tmp_path: Path, **over: object) -> GatewaySettings:
    values: dict[str, object] = {
        "topic_prefix": PREFIX,
        "flush_interval_s": 0.02,
        "stats_interval_s": 3600,
        "retry_initial_s": 0.01,
        "retry_max_s": 0.05,
        "dead_letter_path": tmp_path / "dead.jsonl",
        "receive_maximum": 50,
    }
    values.update(over)
    return GatewaySettings.model_validate(values)


# -- Inbox --------------------------------------------------------------------------------------


def test_inbox_keeps_order_hands_on_once_and_releases_what_was_handled() -> None:
    inbox = Inbox(bound=10)
    for mid in (11, 12, 13):
        assert inbox.put_raw(1, mid, 1, "a/b", b"x%d" % mid, False, mid)
    batch = inbox.take()
    assert [r[0] for r in batch] == [0, 1, 2] and [r[2] for r in batch] == [b"x11", b"x12", b"x13"]
    assert inbox.take() == []
    assert inbox.qsize() == 3
    assert inbox.release([0, 1]) == [(1, 11, 1), (1, 12, 1)]
    assert inbox.release([1]) == []  # handled twice (after a writer restart): acknowledged once
    assert inbox.qsize() == 1
    inbox.close_sockets()


def test_inbox_waits_when_full_until_messages_are_handled() -> None:
    inbox = Inbox(bound=2)
    inbox.put_raw(1, 1, 1, "t", b"", False, 0)
    inbox.put_raw(1, 2, 1, "t", b"", False, 0)
    done = threading.Event()

    def third() -> None:
        inbox.put_raw(1, 3, 1, "t", b"", False, 0)
        done.set()

    threading.Thread(target=third, daemon=True).start()
    assert not done.wait(0.2), "a full inbox took a third message"
    inbox.release([0])
    assert done.wait(2)
    assert inbox.qsize() == 2
    inbox.close_sockets()


def test_a_closed_inbox_takes_nothing_and_frees_a_waiting_put() -> None:
    inbox = Inbox(bound=1)
    inbox.put_raw(1, 1, 1, "t", b"", False, 0)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(inbox.put_raw(1, 2, 1, "t", b"", False, 0)), daemon=True)
    t.start()
    time.sleep(0.05)
    inbox.close()
    t.join(2)
    assert result == [False]
    assert not inbox.put_raw(1, 3, 1, "t", b"", False, 0)
    inbox.close_sockets()


def test_resend_all_hands_on_every_unhandled_message_again_in_receive_order() -> None:
    inbox = Inbox(bound=10)
    for mid in range(5):
        inbox.put_raw(1, mid, 1, "t", b"", False, 0)
    inbox.take()
    inbox.release([1, 3])
    inbox.put_raw(1, 9, 1, "t", b"", False, 0)  # not yet handed on
    assert inbox.resend_all() == 4
    assert [r[0] for r in inbox.take()] == [0, 2, 4, 5]
    inbox.close_sockets()


def test_an_armed_inbox_wakes_its_reader_at_the_next_message() -> None:
    inbox = Inbox(bound=10)
    wake = inbox.wake_socket()
    wake.settimeout(1)
    assert inbox.arm()
    inbox.put_raw(1, 1, 1, "t", b"", False, 0)
    assert wake.recv(16) == b"\0"
    assert not inbox.arm()  # a message waits: no need to be woken
    inbox.close_sockets()


# -- BulkQueue, Classifier -------------------------------------------------------------------------


def test_bulk_queue_is_fifo_and_times_out_like_queue() -> None:
    q: BulkQueue[int] = BulkQueue()
    q.put_many([1, 2])
    q.put(3)
    assert [q.get(timeout=0), q.get(timeout=0), q.get(timeout=0)] == [1, 2, 3]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    threading.Timer(0.05, q.put_many, args=([4],)).start()
    assert q.get(timeout=2) == 4


def test_classifier_sorts_raw_messages_through_the_contract_and_counts_them() -> None:
    stats = Stats()
    c = Classifier(PREFIX, None, stats)
    now_ns = time.time_ns()
    good = c.item((0, bay_topic(), bay_payload(seq=4), True, now_ns))
    assert isinstance(good, Accepted) and good.mid == 0 and good.retained and good.site_id == "s1"
    assert to_ns(good.received_at) == now_ns // 1000 * 1000
    bad = c.item((1, bay_topic(), bay_payload(seq=5).replace(b'"free"', b'"exploded"'), False, now_ns))
    assert isinstance(bad, Rejected) and bad.reason == "invalid_value" and bad.confirm == ("s1", "bays-1", "e1", 5)
    non_utf8 = c.item((2, None, b"{}", False, now_ns))
    assert isinstance(non_utf8, Rejected) and non_utf8.reason == "bad_topic"
    control = c.item((3, topics.stored_topic(PREFIX, "s1", "bays-1"), b"{}", False, now_ns))
    cleared = c.item((4, topics.status_topic(PREFIX, "s1", "bays-1"), b"", True, now_ns))
    assert isinstance(control, Ignored) and control.reason == "control"
    assert isinstance(cleared, Ignored) and cleared.reason == "status_cleared"
    snap = stats.snapshot()
    assert (snap.received, snap.accepted, snap.rejected, snap.ignored) == (
        3,
        1,
        {"invalid_value": 1, "bad_topic": 1},
        {"control": 1, "status_cleared": 1},
    )


# -- Writer: reports in receive order ---------------------------------------------------------------


def test_the_writer_reports_handled_messages_in_order_with_confirmations_and_stats(tmp_path: Path) -> None:
    reports: list[Report] = []
    sink = RecordingSink(fail=2, refuse_bay=None)
    w = Writer(settings(tmp_path), None, sink, reports.append)
    w.start()
    payloads = [bay_payload(seq=i) for i in range(1, 6)]
    w.feed([raw(i, p) for i, p in enumerate(payloads)])
    w.feed([raw(5, b"not json", bay_topic()), raw(6, b"{}", topics.stored_topic(PREFIX, "s1", "bays-1"))])
    wait_for(lambda: sum(len(r.handled) for r in reports) == 7, 10, what="all 7 reported")
    w.finish(1.0)
    w.report(done=True)
    handled = [seq for r in reports for seq in r.handled]
    assert handled == list(range(7))
    confirms: dict[tuple[str, str, str], list[int]] = {}
    for r in reports:
        for key, seqs in r.confirms.items():
            confirms.setdefault(key, []).extend(seqs)
    assert confirms == {("s1", "bays-1", "e1"): [1, 2, 3, 4, 5]}
    last = [r.stats for r in reports if r.stats is not None][-1]
    assert (last.accepted, last.rejected, last.ignored, last.write_retries, last.acked) == (
        5,
        {"not_json": 1},
        {"control": 1},
        2,
        7,
    )
    assert reports[-1].done
    assert [d for d in (tmp_path / "dead.jsonl").read_text().splitlines() if '"not_json"' in d]


# -- log records across the process boundary ------------------------------------------------------


@pytest.mark.allow_logged_exceptions
def test_a_forwarded_record_is_logged_here_with_its_exception(caplog: pytest.LogCaptureFixture) -> None:
    forwarder = LogForwarder()
    child = logging.getLogger("gateway.pipeline.child-test")
    child.addHandler(forwarder)
    child.propagate = False
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            child.exception("writer loop failed on %d", 3)
    finally:
        child.removeHandler(forwarder)
        child.propagate = True
    (record,) = pickle.loads(pickle.dumps(forwarder.take()))
    caplog.set_level(logging.INFO, logger="gateway")
    _log_here(record)
    (seen,) = [r for r in caplog.records if r.name == "gateway.pipeline.child-test"]
    assert seen.getMessage() == "writer loop failed on 3"
    assert seen.exc_info is not None and seen.exc_info[0] is ForwardedException
    assert "ValueError: boom" in str(seen.exc_info[1]) and "Traceback" in (seen.exc_text or "")


def test_stats_of_a_restarted_writer_add_up() -> None:
    a = GatewayStats(10, 8, {"x": 2}, 8, 1, 0, 10, 0, 2, 5, {"control": 1})
    b = GatewayStats(3, 3, {"x": 1, "y": 1}, 3, 0, 0, 3, 0, 1, 0, {}, write_error="bad token")
    total = _add(a, b)
    assert (total.received, total.accepted, total.rejected, total.acked, total.batches) == (
        13,
        11,
        {"x": 3, "y": 1},
        13,
        3,
    )
    assert total.ignored == {"control": 1} and total.write_error == "bad token"


# -- the link, in thread mode, with a recording acker ----------------------------------------------


class Acks:
    def __init__(self) -> None:
        self.acked: list[tuple[int, int, int]] = []
        self.confirmed: dict[tuple[str, str, str], list[int]] = {}

    def ack_raw(self, gen: int, mid: int, qos: int) -> None:
        self.acked.append((gen, mid, qos))

    def note_confirmations(self, seqs: dict[tuple[str, str, str], list[int]]) -> None:
        for key, more in seqs.items():
            self.confirmed.setdefault(key, []).extend(more)


@pytest.fixture
def link_parts(tmp_path: Path) -> Iterator[tuple[Inbox, Acks, RecordingSink, WriterLink]]:
    inbox = Inbox(bound=50)
    acks = Acks()
    sink = RecordingSink(fail=1)
    link = WriterLink(settings(tmp_path), None, inbox, acks, sink=sink)
    link.start()
    yield inbox, acks, sink, link
    link.stop(2.0)


def test_the_link_acknowledges_everything_in_receive_order_under_back_pressure(
    link_parts: tuple[Inbox, Acks, RecordingSink, WriterLink],
) -> None:
    inbox, acks, sink, link = link_parts
    n = 300  # six times the inbox bound: put_raw waits for acknowledgements
    for mid in range(1, n + 1):
        assert inbox.put_raw(7, mid, 1, bay_topic(), bay_payload(seq=mid), False, time.time_ns())
    wait_for(lambda: len(acks.acked) == n, 20, what=f"{n} acknowledged")
    assert acks.acked == [(7, mid, 1) for mid in range(1, n + 1)]
    assert acks.confirmed == {("s1", "bays-1", "e1"): list(range(1, n + 1))}
    assert [m.message.seq for m in sink.readings()] == list(range(1, n + 1))
    stats = link.stats()
    assert stats is not None and stats.accepted == n and stats.write_retries == 1


class ClosingConn:
    """A writer side's connection that notes when it is closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def test_a_dead_writers_connection_is_not_closed_under_a_batch_being_sent(tmp_path: Path) -> None:
    """CI, under load: the writer process was killed while the sending thread wrote a batch to it; the
    restart closed the connection mid-write, ``send_bytes`` raised TypeError (its handle gone), not OSError,
    the sending thread ended, and the intake stalled at 622 of 5,000 messages. The restart now closes the
    old connection only once no batch is being sent (the send lock)."""
    inbox = Inbox(bound=10)
    link = WriterLink(settings(tmp_path), None, inbox, Acks(), sink=RecordingSink())
    conn = ClosingConn()
    link._child = _Child(cast(Connection, conn), None, None)  # a writer side that has ended
    link._stop.set()  # stopping: the restart closes the old side and starts no other
    with link._send_lock:  # a batch is being sent
        restart = threading.Thread(target=link._restart)
        restart.start()
        assert not conn.closed.wait(0.5), "the connection was closed under a send"
    assert conn.closed.wait(5), "the connection was not closed once the send ended"
    restart.join(5)
    assert not restart.is_alive()
    inbox.close_sockets()


@pytest.mark.allow_logged_exceptions
def test_an_unexpected_error_handing_on_a_batch_loses_nothing_and_ends_no_thread(
    link_parts: tuple[Inbox, Acks, RecordingSink, WriterLink], caplog: pytest.LogCaptureFixture
) -> None:
    inbox, acks, _sink, link = link_parts
    send = link._send_batch
    failed: list[int] = []

    def flaky(**kw: bool) -> bool:
        if not failed and inbox._unsent:
            failed.append(len(inbox.take()))  # taken, then the hand-on fails
            raise TypeError("'NoneType' object cannot be interpreted as an integer")
        return send(**kw)

    link._send_batch = flaky  # type: ignore[method-assign]
    for mid in range(1, 21):
        assert inbox.put_raw(7, mid, 1, bay_topic(), bay_payload(seq=mid), False, time.time_ns())
    wait_for(lambda: len(acks.acked) == 20, 10, what="all 20 acknowledged after the failure")
    assert failed and sorted(acks.acked) == [(7, mid, 1) for mid in range(1, 21)]
    assert "handing a batch to the writer side failed" in caplog.text
    assert link._sender is not None and link._sender.is_alive()


def test_stopping_the_link_writes_and_acknowledges_what_was_taken(tmp_path: Path) -> None:
    inbox = Inbox(bound=1000)
    acks = Acks()
    sink = RecordingSink()
    link = WriterLink(settings(tmp_path, flush_interval_s=5.0, batch_size=100_000), None, inbox, acks, sink=sink)
    link.start()
    for mid in range(1, 101):
        inbox.put_raw(1, mid, 1, bay_topic(), bay_payload(), False, time.time_ns())
    inbox.close()
    link.stop(2.0)  # long before the 5 s flush interval
    assert [mid for _, mid, _ in acks.acked] == list(range(1, 101))
    assert len(sink.readings()) == 100


# -- what the metrics and the history thread get from the writer side ----------------------------


def test_each_committed_batch_is_reported_for_the_metrics(tmp_path: Path) -> None:
    reports: list[Report] = []
    w = Writer(settings(tmp_path), None, RecordingSink(fail=1), reports.append)
    w.start()
    w.feed([raw(i, bay_payload()) for i in range(5)])
    wait_for(lambda: sum(len(r.handled) for r in reports) == 5, 10, what="all 5 reported")
    w.finish(1.0)
    observed = [o for r in reports for o in r.observed]
    assert sum(points for points, _, _, _ in observed) == 5
    for points, write_s, lag_s, committed_ns in observed:
        assert points > 0 and write_s is not None and write_s >= 0  # the successful attempt
        assert 0 <= lag_s < 10 and abs(committed_ns - time.time_ns()) < 10 * 10**9
    # A batch's figures travel with the report that hands its messages back, never before it.
    for r in reports:
        assert not r.observed or r.handled


def test_late_marks_of_the_writer_side_go_with_the_next_report(tmp_path: Path) -> None:
    reports: list[Report] = []
    late = LateMarks()
    w = Writer(settings(tmp_path, dead_letter_path=None), None, RecordingSink(), reports.append, late=late)
    late.note(2_000)
    late.note(1_000)
    w.report()
    assert reports[-1].late_ns == 1_000
    w.report(force=True)
    assert reports[-1].late_ns is None  # taken once


def test_the_link_observes_batches_after_their_acks_and_notes_late_points(tmp_path: Path) -> None:
    inbox = Inbox(bound=50)
    acks = Acks()
    seen: list[tuple[int, float | None, float, int]] = []
    late = LateMarks()
    link = WriterLink(
        settings(tmp_path),
        None,
        inbox,
        acks,
        sink=RecordingSink(),
        observe=lambda points, write_s, lag_s: seen.append((points, write_s, lag_s, len(acks.acked))),
        late=late,
    )
    link.start()
    try:
        for mid in range(1, 21):
            inbox.put_raw(1, mid, 1, bay_topic(), bay_payload(), False, time.time_ns())
        wait_for(lambda: sum(s[0] for s in seen) == 20, 10, what="20 points observed")
        assert all(acked > 0 for *_, acked in seen), "observed before its acks were sent"
        assert all(write_s is not None and lag_s >= 0 for _, write_s, lag_s, _ in seen)
        # Applied as the writer process's reports are (a thread-mode writer side has no history sink).
        link._apply(Report(late_ns=5_000, observed=[(3, 0.01, 0.2, time.time_ns() - 100_000_000)]))
        assert late.take() == 5_000
        points, write_s, lag_s, _ = seen[-1]
        assert (points, write_s) == (3, 0.01) and 0.29 < lag_s < 5  # the lag runs on to this process's acks
    finally:
        link.stop(2.0)
