"""The replay pacer on a real SQLite outbox and a fake clock: live first, backlog paced, nothing skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.outbox import Outbox
from edge.pacing import ConfirmWindow, ReplayPacer, ResendTimeout, TokenBucket


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


# -- the confirmation-clocked window ----------------------------------------------------------------


def test_the_window_doubles_per_round_trip_while_confirmations_are_prompt() -> None:
    clock = Clock()
    w = ConfirmWindow(initial=8, minimum=2, maximum=1000, target_delay_s=2.0, clock=clock)
    w.confirmed(8, delay_s=0.3)  # a whole window confirmed within the target: slow start doubles it
    assert w.size == 16
    w.confirmed(16, delay_s=0.3)
    assert w.size == 32


def test_a_late_confirmation_halves_the_window_once_per_round_trip() -> None:
    clock = Clock()
    w = ConfirmWindow(initial=64, minimum=2, maximum=1000, target_delay_s=2.0, clock=clock)
    w.confirmed(1, delay_s=0.3)  # the base delay: what a confirmation takes with no queue
    assert w.size == 65
    clock.now += 1.0
    w.confirmed(10, delay_s=5.3)  # 5 s of queue in front of the gateway: halve
    assert (w.size, w.slow_start, w.decreases) == (32, False, 1)
    clock.now += 1.0
    w.confirmed(10, delay_s=5.3)  # the same congestion, seen again within that round trip: one signal
    assert w.size == 32
    clock.now += 5.3
    w.confirmed(10, delay_s=5.3)  # a round trip later and still late: halve again
    assert w.size == 16
    # Prompt again: congestion avoidance adds about one per window's worth of confirmations, not n.
    w.confirmed(16, delay_s=0.5)
    assert w.size == 17


def test_a_slow_path_without_a_queue_is_not_congestion() -> None:
    # A loaded gateway batches and a busy broker is slow: every confirmation takes 3 s, none longer.
    # That is the base delay (RFC 6817), not a queue the replays built: the window keeps growing.
    clock = Clock()
    w = ConfirmWindow(initial=8, minimum=2, maximum=1000, target_delay_s=2.0, clock=clock)
    for _ in range(5):
        clock.now += 3.0
        w.confirmed(w.size, delay_s=3.0)
    assert w.size == 256 and w.decreases == 0
    assert w.base_delay() == 3.0


def test_the_base_delay_forgets_what_is_older_than_its_history() -> None:
    clock = Clock()
    w = ConfirmWindow(initial=8, minimum=2, maximum=1000, target_delay_s=2.0, clock=clock)
    w.confirmed(1, delay_s=0.2)
    clock.now += 60 * ConfirmWindow.BASE_HISTORY
    w.confirmed(1, delay_s=4.0)  # the fast path of ten minutes ago no longer counts
    assert w.base_delay() == 4.0 and w.decreases == 0


def test_the_window_never_falls_below_its_minimum_and_a_re_send_resets_it() -> None:
    clock = Clock()
    w = ConfirmWindow(initial=8, minimum=3, maximum=100, target_delay_s=1.0, clock=clock)
    w.confirmed(1, delay_s=0.1)
    for _ in range(10):
        clock.now += 51
        w.confirmed(1, delay_s=50.0)
    assert w.size == 3
    w.confirmed(200, delay_s=0.1)
    w.confirmed(200, delay_s=0.1)
    assert w.size <= 100, "capped at its maximum"
    w.timed_out()
    assert (w.size, w.timeouts) == (3, 1)
    w.reset()  # a new connection starts over in slow start
    assert (w.size, w.slow_start) == (8, True)


@pytest.mark.parametrize(
    "kwargs",
    [dict(minimum=0), dict(initial=1, minimum=2), dict(initial=50, maximum=10), dict(target_delay_s=0.0)],
)
def test_a_window_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ConfirmWindow(**kwargs)  # type: ignore[arg-type]


def test_the_backlog_stays_within_the_window_and_live_rows_do_not(outbox: Outbox) -> None:
    window = ConfirmWindow(initial=8, minimum=2, maximum=1000, target_delay_s=2.0)
    pacer = ReplayPacer(outbox, rate_per_s=None, window=window)
    pacer.begin()
    first = pacer.next(500, backlog_out=0)
    assert [i.id for i in first] == list(range(1, 9)), "at most a window of the backlog out"
    assert pacer.next(500, backlog_out=8) == [], "nothing more until confirmations come back"
    outbox.put_many([("t/live", b"live-1"), ("t/live", b"live-2")])
    assert [i.payload for i in pacer.next(500, backlog_out=8)] == [b"live-1", b"live-2"], "live rows are not held"
    window.confirmed(8, delay_s=0.2)  # the first eight confirmed promptly: the window doubles to 16
    assert [i.id for i in pacer.next(500, backlog_out=0)] == list(range(9, 25))


def test_the_resend_timeout_follows_rfc_6298() -> None:
    rto = ResendTimeout(floor_s=1.0, ceiling_s=3600.0)
    assert rto.value == 1.0, "no sample yet: the floor"
    rto.sample(10.0)  # first: SRTT = R, RTTVAR = R / 2, RTO = SRTT + 4 RTTVAR
    assert (rto.srtt, rto.rttvar, rto.value) == (10.0, 5.0, 30.0)
    rto.sample(2.0)  # RTTVAR = 3/4 5 + 1/4 |10 - 2| = 5.75; SRTT = 7/8 10 + 1/8 2 = 9
    assert rto.rttvar == pytest.approx(5.75)
    assert rto.srtt == pytest.approx(9.0)
    assert rto.value == pytest.approx(9.0 + 4 * 5.75)
    floor = ResendTimeout(floor_s=30.0, ceiling_s=60.0)
    floor.sample(0.1)
    assert floor.value == 30.0, "never below the configured timeout"
    floor.sample(500.0)
    assert floor.value == 60.0, "nor above the ceiling"


def test_the_bucket_says_how_long_until_its_next_token() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock)
    assert bucket.wait_s() == 0.0, "full: now"
    bucket.take(5)
    assert bucket.wait_s() == pytest.approx(0.1), "one token every 1/rate s"
    clock.now += 0.04
    assert bucket.wait_s() == pytest.approx(0.06)
    clock.now += 0.06
    assert bucket.wait_s() == 0.0 and bucket.take(1) == 1
    assert TokenBucket(None, 1, clock).wait_s() == 0.0, "unlimited never waits"


def test_the_pacer_names_the_wait_only_a_clock_can_end(outbox: Outbox) -> None:
    """What the MQTT thread sleeps on: a number when only the token bucket holds the backlog back, None when an
    event must (a confirmation opening the window, a PUBACK freeing room, a new row), so it never polls."""
    clock = Clock()
    window = ConfirmWindow(initial=8, minimum=2, maximum=1000, target_delay_s=2.0)
    pacer = ReplayPacer(outbox, rate_per_s=100.0, burst=4, window=window, clock=clock)
    pacer.begin()
    assert pacer.wait_s(50, backlog_out=0) == 0.0, "tokens and window room: go now"
    assert len(pacer.next(50, backlog_out=0)) == 4, "the burst"
    assert pacer.wait_s(50, backlog_out=4) == pytest.approx(0.01), "the bucket refills in 1/rate s"
    assert pacer.wait_s(50, backlog_out=8) is None, "the window is full: wait for a confirmation"
    assert pacer.wait_s(0, backlog_out=0) is None, "no room (in flight, unconfirmed): wait for the broker"
    unpaced = ReplayPacer(outbox, rate_per_s=None)
    unpaced.begin()
    unpaced.next(1000)
    assert unpaced.backlog_done and unpaced.wait_s(50) is None, "backlog sent: only a new row wakes it"
