"""common.retry: the one backoff policy, and the delays each retry loop gets from it."""

from __future__ import annotations

import pytest

from common.retry import MAX_FACTOR, NO_JITTER, Backoff, Jitter
from edge.camera.capture import Backoff as CaptureBackoff
from gateway.pipeline import Backoff as WriteBackoff


def delays(b: Backoff, n: int) -> list[float]:
    return [round(b.next_delay(), 6) for _ in range(n)]


def test_doubles_to_the_cap_and_reset_starts_again() -> None:
    b = Backoff(0.5, 8.0)
    assert delays(b, 7) == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert b.failures == 7
    b.reset()
    assert (b.failures, b.next_delay()) == (0, 0.5)


def test_factor_and_an_initial_above_the_cap() -> None:
    assert delays(Backoff(1.0, 100.0, factor=3.0), 5) == [1.0, 3.0, 9.0, 27.0, 81.0]
    assert delays(Backoff(1.0, 1.0, factor=1.0), 3) == [1.0, 1.0, 1.0]
    assert delays(Backoff(10.0, 4.0), 2) == [4.0, 4.0]


def test_symmetric_jitter_stays_within_its_fraction_and_the_cap() -> None:
    lo = Backoff(1.0, 4.0, jitter=Jitter.symmetric(0.1), rng=lambda: 0.0)
    mid = Backoff(1.0, 4.0, jitter=Jitter.symmetric(0.1), rng=lambda: 0.5)
    hi = Backoff(1.0, 4.0, jitter=Jitter.symmetric(0.1), rng=lambda: 1.0)
    assert delays(lo, 4) == [0.9, 1.8, 3.6, 3.6]
    assert [mid.next_delay() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]  # exact at the centre
    assert delays(hi, 4) == [1.1, 2.2, 4.0, 4.0]  # capped after the spread too


def test_jitter_below_never_exceeds_the_base() -> None:
    lo = Backoff(1.0, 8.0, jitter=Jitter.below(0.5), rng=lambda: 0.0)
    hi = Backoff(1.0, 8.0, jitter=Jitter.below(0.5), rng=lambda: 1.0)
    assert delays(lo, 3) == [0.5, 1.0, 2.0]
    assert [hi.next_delay() for _ in range(3)] == [1.0, 2.0, 4.0]


def test_random_delays_stay_in_range() -> None:
    b = Backoff(0.2, 5.0, jitter=Jitter(0.3, 0.2))
    for _ in range(200):
        base = min(5.0, 0.2 * 2.0 ** min(b.failures, 64))
        assert 0.7 * base <= b.next_delay() <= min(5.0, 1.2 * base)


def test_many_failures_do_not_overflow() -> None:
    b = Backoff(0.001, 3600.0, factor=MAX_FACTOR)
    for _ in range(10_000):
        b.next_delay()
    assert b.next_delay() == 3600.0


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((-1.0, 1.0), {}), ((1.0, -1.0), {}), ((1.0, 2.0), {"factor": 0.5}), ((1.0, 2.0), {"factor": 1e6})],
)
def test_bad_parameters_are_refused(args: tuple[float, float], kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("down", "up"), [(-0.1, 0.0), (0.0, 1.5)])
def test_bad_jitter_is_refused(down: float, up: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        Jitter(down, up)


def test_no_jitter_is_the_default() -> None:
    assert Backoff(1.0, 2.0).jitter == NO_JITTER == Jitter(0.0, 0.0)


# -- what each loop gets (the old hand-rolled formulas, kept) -------------------------------------


def test_edge_mqtt_reconnect_defaults() -> None:
    """edge/mqtt.py: reconnect_min_s 0.5 doubling to reconnect_max_s 30, no jitter."""
    assert delays(Backoff(0.5, 30.0), 8) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_edge_camera_restarts() -> None:
    """edge/agent.py _watch_cameras: was min(60, 2 ** min(n, 6)) for the n-th failure (n from 1)."""
    old = [min(60.0, 2.0 ** min(n, 6)) for n in range(1, 9)]
    assert delays(Backoff(2.0, 60.0), 8) == old


def test_demo_child_restarts() -> None:
    """district/demo.py: was min(30, 2 ** min(restarts, 5)) (restarts from 0)."""
    old = [min(30.0, 2.0 ** min(k, 5)) for k in range(8)]
    assert delays(Backoff(1.0, 30.0), 8) == old


def test_gateway_write_backoff_keeps_its_half_to_full_spread() -> None:
    assert delays(WriteBackoff(0.1, 1.0, jitter=lambda: 1.0), 6) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert delays(WriteBackoff(0.1, 1.0, jitter=lambda: 0.0), 3) == [0.05, 0.1, 0.2]
    assert isinstance(WriteBackoff(1, 2), Backoff)


def test_capture_backoff_keeps_its_ten_percent_spread() -> None:
    assert delays(CaptureBackoff(1.0, 4.0, rng=lambda: 0.0), 4) == [0.9, 1.8, 3.6, 3.6]
    assert isinstance(CaptureBackoff(1, 2), Backoff)
