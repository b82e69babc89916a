"""common.runtime: the stop signals, the parent watch and the supervised-child options."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from common import runtime
from common.runtime import SUPERVISOR_ENV, stop_on_signals, supervised, supervisor_pid, watch_parent
from tests.conftest import REPO


class FakeParent:
    """``getppid`` that answers ``pid`` until :meth:`die` is called, then 1 (init adopted us)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.calls = 0

    def die(self) -> None:
        self.pid = 1

    def __call__(self) -> int:
        self.calls += 1
        return self.pid


def test_watch_calls_back_once_when_the_parent_goes() -> None:
    parent = FakeParent(4242)
    gone = threading.Event()
    calls: list[int] = []

    def on_gone() -> None:
        calls.append(1)
        gone.set()

    thread = watch_parent(on_gone, 4242, interval_s=0.01, getppid=parent)
    assert thread is not None
    # Still the same parent after many checks: no callback.
    while parent.calls < 5:
        assert thread.is_alive()
        threading.Event().wait(0.01)
    assert not gone.is_set()
    parent.die()
    assert gone.wait(5), "on_gone not called within 5 s of the parent going"
    thread.join(5)
    assert not thread.is_alive() and calls == [1]


def test_watch_of_a_parent_already_gone_calls_back_at_once() -> None:
    gone = threading.Event()
    watch_parent(gone.set, 4242, interval_s=10, getppid=lambda: 1)
    assert gone.wait(5)


@pytest.mark.allow_logged_exceptions
def test_watch_survives_a_failing_callback(caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    thread = watch_parent(boom, 4242, interval_s=0.01, getppid=lambda: 1)
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    assert "stopping after the parent had gone failed" in caplog.text


def test_unsupervised_process_watches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SUPERVISOR_ENV, raising=False)
    assert watch_parent(lambda: None) is None


def test_supervisor_pid_is_taken_out_of_the_environment() -> None:
    env = {SUPERVISOR_ENV: "1234", "OTHER": "x"}
    assert supervisor_pid(env) == 1234
    assert env == {"OTHER": "x"}, "children of this process must not inherit the supervisor's pid"
    assert supervisor_pid(env) is None
    assert supervisor_pid({SUPERVISOR_ENV: "not-a-pid"}) is None
    assert supervisor_pid({SUPERVISOR_ENV: "0"}) is None


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in runtime.STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_each_stop_signal_sets_the_event(
    sig: signal.Signals, restore_handlers: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(SUPERVISOR_ENV, raising=False)
    caplog.set_level(logging.INFO, logger=runtime.__name__)
    stop = stop_on_signals()
    assert not stop.is_set()
    signal.raise_signal(sig)
    # Set by the relay thread a moment after the handler ran, not by the handler.
    assert stop.wait(5), f"{sig.name} did not set the stop event"
    assert f"received {sig.name}: stopping" in caplog.text


def test_a_signal_while_the_main_thread_holds_the_events_lock_still_stops() -> None:
    # The main loops wait on the stop event; a signal that lands while the main thread is inside
    # Event.wait/set holds the event's (non-reentrant) lock. A handler that sets the event itself
    # then waits for its own thread forever: the process never stops. In a child, so a hang fails.
    script = textwrap.dedent(
        """
        import signal
        from common.runtime import stop_on_signals

        stop = stop_on_signals(watch=False)
        with stop._cond:  # what Event.wait/set hold
            signal.raise_signal(signal.SIGTERM)
            for _ in range(1000):  # the Python handler runs here, between bytecodes
                pass
        print("stopped" if stop.wait(5) else "not stopped", flush=True)
        """
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=15, check=False, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung in its signal handler (it set the event while its own thread held the lock)")
    assert result.stdout.strip() == "stopped", result.stdout + result.stderr


def test_stop_on_signals_watches_the_supervisor(restore_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # The supervisor named in the environment is not our parent: it has gone.
    monkeypatch.setenv(SUPERVISOR_ENV, str(os.getppid() + 100_000))
    stop = stop_on_signals()
    assert stop.wait(5), "the stop event was not set although the supervisor had gone"
    assert SUPERVISOR_ENV not in os.environ


def test_supervised_children_get_their_own_session_and_the_supervisor_pid() -> None:
    kwargs = supervised({"A": "1"})
    assert kwargs["start_new_session"] is True
    assert kwargs["env"] == {"A": "1", SUPERVISOR_ENV: str(os.getpid())}
    if sys.platform.startswith("linux"):
        assert callable(kwargs["preexec_fn"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_no_parent_death_signal_from_a_worker_thread() -> None:
    # The kernel would signal the child when the forking *thread* ends.
    result: list[object] = ["unset"]
    worker = threading.Thread(target=lambda: result.__setitem__(0, runtime.die_with_parent()))
    worker.start()
    worker.join()
    assert result == [None]
    assert runtime.die_with_parent() is not None
