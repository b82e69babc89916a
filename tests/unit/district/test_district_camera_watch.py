"""The camera process's stop event that also fires when its edge agent has gone (edge.camera.process)."""

from __future__ import annotations

import os
import threading
import time

from edge.camera.process import EXIT_ORPHANED, _ParentWatch


class FakeQueue:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel_join_thread(self) -> None:
        self.cancelled = True


def test_agent_gone_stops_the_loop_drops_the_queue_flush_and_exits_hard_after_grace() -> None:
    stop = threading.Event()
    out = FakeQueue()
    exited: list[int] = []
    done = threading.Event()

    def exit_hard(code: int) -> None:
        exited.append(code)
        done.set()

    watch = _ParentWatch(stop, out, parent_pid=4242, grace_s=0.2, watch=False, exit_hard=exit_hard)
    assert not watch.is_set() and not watch.wait(0.05)
    started = time.monotonic()
    watch.on_parent_gone()
    assert watch.is_set() and watch.wait(10) and watch.wait(None)
    assert out.cancelled, "a dead agent's queue must not be flushed at exit"
    assert not stop.is_set(), "the agent's own stop event is left alone"
    assert done.wait(5) and exited == [EXIT_ORPHANED]
    assert time.monotonic() - started >= 0.2


def test_wait_returns_when_the_agent_sets_stop_and_after_the_timeout() -> None:
    stop = threading.Event()
    watch = _ParentWatch(stop, parent_pid=4242, watch=False, exit_hard=lambda code: None)
    t0 = time.monotonic()
    assert watch.wait(0.3) is False
    assert time.monotonic() - t0 >= 0.3
    threading.Timer(0.1, stop.set).start()
    assert watch.wait(10) is True and watch.is_set()


def test_the_watch_thread_sees_a_parent_that_is_not_ours() -> None:
    # Given a pid that is not our parent (the agent died before the camera started): stops at once.
    exited = threading.Event()
    watch = _ParentWatch(
        threading.Event(), parent_pid=os.getppid() + 100_000, grace_s=0.05, exit_hard=lambda c: exited.set()
    )
    assert watch.wait(5), "the watch did not notice the agent had gone"
    assert exited.wait(5)
