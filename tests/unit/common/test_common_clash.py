"""ClashDetector: a client-id clash is named, backed off, and fatal only when it persists."""

from __future__ import annotations

from common.clash import SESSION_TAKEN_OVER, ClashDetector, quick_drops_for


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_session_taken_over_is_fatal_at_once() -> None:
    d = ClashDetector("gw", clock=Clock())
    d.connected()
    v = d.lost(SESSION_TAKEN_OVER)
    assert v.clash and v.fatal and "'gw'" in v.reason and "taken over" in v.reason


def test_one_quick_drop_is_an_ordinary_loss() -> None:
    clock = Clock()
    d = ClashDetector("gw", clock=clock)
    d.connected()
    clock.t += 2
    assert not d.lost(None).clash


def test_connections_that_lasted_are_never_a_clash() -> None:
    clock = Clock()
    d = ClashDetector("gw", clock=clock)
    for _ in range(10):
        d.connected()
        clock.t += 30  # a flaky link, but each connection held for 30 s
        assert not d.lost(None).clash


def test_repeated_quick_drops_back_off_longer_then_give_up() -> None:
    clock = Clock()
    d = ClashDetector("gw", quick_drops=2, backoff_s=60, fatal_after=3, clock=clock)
    verdicts = []
    for _ in range(6):
        d.connected()
        clock.t += 1
        verdicts.append(d.lost(None))
        clock.t += 1
    clashes = [v for v in verdicts if v.clash]
    assert [v.backoff_s for v in clashes] == [60, 120, 240]
    assert [v.fatal for v in clashes] == [False, False, True]
    assert "another client is probably using our client id 'gw'" in clashes[0].reason


def test_quick_drops_far_apart_do_not_add_up() -> None:
    clock = Clock()
    d = ClashDetector("gw", window_s=60, clock=clock)
    for _ in range(5):
        d.connected()
        clock.t += 1
        assert not d.lost(None).clash
        clock.t += 120  # the previous quick drop has left the window


def test_two_broker_restarts_in_a_minute_are_not_a_clash() -> None:
    """tests/chaos kills the broker twice within seconds: two quick drops, no backoff."""
    clock = Clock()
    d = ClashDetector("edge-1", clock=clock)
    for _ in range(2):
        d.connected()
        clock.t += 1
        assert not d.lost(None).clash
    d.connected()
    clock.t += 1
    assert d.lost(None).clash  # a third within the minute: now it is named


def test_a_client_of_a_three_node_cluster_needs_nine_quick_drops() -> None:
    """A failover's burst of quick drops (NATS election) is not a clash; a real clash still is."""
    clock = Clock()
    d = ClashDetector("gw", quick_drops=quick_drops_for(3), clock=clock)
    verdicts = []
    for _ in range(9):
        d.connected()
        clock.t += 2.0
        verdicts.append(d.lost(None))
    assert [v.clash for v in verdicts] == [False] * 8 + [True]
    assert quick_drops_for(1) == 3 and quick_drops_for(0) == 3
