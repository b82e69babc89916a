"""The replay pacer on a real SQLite outbox and a fake clock: live first, backlog paced, nothing skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.outbox import Outbox
from edge.pacing import ReplayPacer, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    box = Outbox(tmp_path / "outbox.db", 100_000, synchronous="normal")
    box.put_many([("t/backlog", f"old-{i}".encode()) for i in range(1, 1001)])
    return box


def test_token_bucket_grants_its_rate_and_saves_at_most_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock)
    assert bucket.take(100) == 5  # starts full
    assert bucket.take(1) == 0
    clock.now += 0.5
    assert bucket.take(100) == 5
    clock.now += 60  # a quiet minute saves no more than the burst
    assert bucket.take(100) == 5
    assert TokenBucket(None, 1, clock).take(12345) == 12345
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0, 1)


def test_a_live_reading_goes_before_the_backlog(outbox: Outbox) -> None:
    clock = Clock()
    pacer = ReplayPacer(outbox, rate_per_s=100.0, burst=10, clock=clock)
    pacer.begin()
    first = pacer.next(50)
    assert [i.payload for i in first] == [f"old-{i}".encode() for i in range(1, 11)], "backlog: oldest first, paced"
    outbox.put("t/live", b"live-1")
    clock.now += 0.05  # 5 more tokens
    second = pacer.next(50)
    assert second[0].payload == b"live-1", "the live reading is published first"
    assert [i.payload for i in second[1:]] == [f"old-{i}".encode() for i in range(11, 16)]


def test_the_backlog_is_paced_and_every_row_is_sent_once(outbox: Outbox) -> None:
    clock = Clock()
    pacer = ReplayPacer(outbox, rate_per_s=200.0, burst=50, clock=clock)
    pacer.begin()
    sent: list[int] = []
    ticks = 0
    while not pacer.backlog_done:
        batch = pacer.next(50)
        assert len(batch) <= 50
        sent += [i.id for i in batch]
        clock.now += 0.05  # 10 tokens a tick
        ticks += 1
    assert sent == list(range(1, 1001)), "in order, none skipped, none twice"
    assert ticks >= (1000 - 50) / 10, "no faster than the rate allows"
    assert pacer.next(50) == []


def test_unlimited_is_the_old_oldest_first_walk(outbox: Outbox) -> None:
    pacer = ReplayPacer(outbox, rate_per_s=None)
    pacer.begin()
    assert [i.id for i in pacer.next(1000)] == list(range(1, 1001))


def test_rewind_sends_again_from_the_oldest_unconfirmed_row(outbox: Outbox) -> None:
    clock = Clock()
    pacer = ReplayPacer(outbox, rate_per_s=None, clock=clock)
    pacer.begin()
    assert len(pacer.next(1000)) == 1000
    outbox.put("t/live", b"live-1")
    assert [i.payload for i in pacer.next(10)] == [b"live-1"]
    outbox.ack(range(1, 500))  # confirmed
    pacer.rewind(500)
    again = [i.id for i in pacer.next(10_000)]
    assert again[0] == 1001, "the live row (already after the boundary) is sent again first"
    assert again[1:] == list(range(500, 1001))


def test_rewind_into_live_rows_leaves_the_backlog_alone(outbox: Outbox) -> None:
    pacer = ReplayPacer(outbox, rate_per_s=None)
    pacer.begin()
    pacer.next(1000)
    outbox.put_many([("t/live", b"a"), ("t/live", b"b")])
    pacer.next(10)
    pacer.rewind(1002)
    assert [i.payload for i in pacer.next(10)] == [b"b"]


def test_a_new_connection_makes_everything_pending_backlog_again(outbox: Outbox) -> None:
    pacer = ReplayPacer(outbox, rate_per_s=None)
    pacer.begin()
    pacer.next(10)
    outbox.put("t/live", b"live-1")
    pacer.begin()  # reconnect
    assert pacer.boundary == 1001
    assert [i.id for i in pacer.next(2000)] == list(range(1, 1002))
