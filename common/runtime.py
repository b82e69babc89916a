"""What every long-running component's ``main`` needs, and what a supervisor
needs so that its children never outlive it.

* :func:`stop_on_signals`: one stop event that SIGINT, SIGTERM and SIGHUP
  reach, so a service manager, Ctrl-C and a closed terminal stop a component
  the same way. Under a supervisor it also watches the parent (below). The
  signal handler itself only writes the signal's number to a pipe; a thread
  logs it and sets the event (:class:`_SignalRelay`).
* :func:`watch_parent`: a daemon thread that notices when the process that
  started this one has gone (``os.getppid()`` changes when the kernel
  reparents an orphan) and calls back. Portable (Linux and macOS), and it
  catches what a parent-death signal cannot: a parent that died before the
  child was set up, or a child that ignores the signal.
* :func:`die_with_parent`: a ``preexec_fn`` that asks the Linux kernel to send
  SIGTERM to the child when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
  the only tool for binaries we cannot change (mosquitto, influxd).
* :func:`supervised`: the ``Popen`` keyword arguments a supervisor uses for a
  child: its own session (Ctrl-C reaches only the supervisor, which stops the
  children in order), the parent-death signal, and the supervisor's pid in
  :data:`SUPERVISOR_ENV` so a Python child starts its parent watch.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: The signals that stop a component cleanly: Ctrl-C, a service manager, a closed terminal.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Set by :func:`supervised` in a child's environment: the pid of the supervisor it must not outlive.
SUPERVISOR_ENV = "DISTRICT_SUPERVISOR_PID"
#: How often (seconds) :func:`watch_parent` looks at the parent pid.
WATCH_INTERVAL_S = 0.5

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class _SignalRelay:
    """Stop signals to the stop event, outside the signal handler.

    Python runs a signal handler on the main thread between two bytecodes of
    whatever it was doing. If that was inside ``Event.wait``/``Event.set``
    (the main loops wait on the stop event) or a logging call, the thread
    holds the event's lock or a handler's lock, and a handler that sets the
    event or logs waits for a lock its own thread holds: the process hangs
    and never stops. So the handler only writes the signal number to a
    non-blocking pipe (no Python lock), and a daemon thread reads it, logs
    and sets the event.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        #: The event the latest :func:`stop_on_signals` call handed out (its handlers replaced any earlier ones).
        self.event: threading.Event | None = None
        threading.Thread(target=self._run, name="stop-signals", daemon=True).start()

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # the pipe is full: wake-ups are pending anyway
            os.write(self._write_fd, bytes((signum,)))

    def _run(self) -> None:
        while True:
            data = os.read(self._read_fd, 64)
            for signum in data:
                log.info("received %s: stopping", signal.Signals(signum).name)
            event = self.event
            if event is not None:
                event.set()


_relay: _SignalRelay | None = None


def stop_on_signals(stop: threading.Event | None = None, *, watch: bool = True) -> threading.Event:
    """Install SIGINT/SIGTERM/SIGHUP handlers that set (and return) ``stop``. Main thread only.

    The event is set (and the signal logged) by a thread a moment after the
    handler ran, never by the handler (see :class:`_SignalRelay`). With
    ``watch`` (the default) and :data:`SUPERVISOR_ENV` set, also start
    :func:`watch_parent` so the event is set when the supervisor has gone.
    Raises ValueError when called from another thread than the main one.
    """
    global _relay
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("stop_on_signals() must be called from the main thread")
    event = stop or threading.Event()
    if _relay is None or _relay.pid != os.getpid():  # a forked child has the pipe but not the thread
        _relay = _SignalRelay()
    _relay.event = event
    for sig in STOP_SIGNALS:
        signal.signal(sig, _relay.handler)
    if watch:
        watch_parent(event.set)
    return event


def supervisor_pid(environ: dict[str, str] | None = None) -> int | None:
    """The supervisor pid from :data:`SUPERVISOR_ENV`, removed from ``environ`` (default ``os.environ``)
    so the process's own children do not inherit it; None if unset or not a positive number."""
    env: Any = os.environ if environ is None else environ
    raw = env.pop(SUPERVISOR_ENV, None)
    if raw is None:
        return None
    try:
        pid = int(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a pid", SUPERVISOR_ENV, raw)
        return None
    return pid if pid > 0 else None


def watch_parent(
    on_gone: Callable[[], None],
    parent_pid: int | None = None,
    *,
    interval_s: float = WATCH_INTERVAL_S,
    getppid: Callable[[], int] = os.getppid,
    name: str = "parent-watch",
) -> threading.Thread | None:
    """Call ``on_gone()`` once, from a daemon thread, when this process's parent is no longer ``parent_pid``.

    ``parent_pid`` defaults to :func:`supervisor_pid` (None: not supervised,
    nothing is watched and None is returned). The parent is checked every
    ``interval_s`` seconds; if it is already gone at the call, ``on_gone``
    runs within the first check. Returns the started thread.
    """
    expected = supervisor_pid() if parent_pid is None else parent_pid
    if expected is None:
        return None

    def run() -> None:
        while getppid() == expected:
            time.sleep(interval_s)
        log.warning("parent process %d is gone (parent now %d): stopping", expected, getppid())
        try:
            on_gone()
        except Exception:
            log.exception("stopping after the parent had gone failed")

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when its parent dies (Linux only).

    Returns None where the kernel has no parent-death signal (macOS) or when
    called outside the main thread: the kernel sends the signal when the
    *thread* that forked the child ends, so a child forked from a worker
    thread would be stopped when that thread returns. Everything the function
    needs is resolved here, in the parent: between fork and exec the child only
    calls ``prctl`` and ``getppid`` (no imports, no locks, no logging), which
    keeps ``preexec_fn``'s documented deadlock risk out of reach. If the parent
    died before ``prctl`` took effect, the child signals itself.
    """
    prctl = _load_prctl()
    if prctl is None:
        return None
    if threading.current_thread() is not threading.main_thread():
        log.debug("not setting a parent-death signal: %s is not the main thread", threading.current_thread().name)
        return None
    parent = os.getpid()
    getppid, kill, me = os.getppid, os.kill, os.getpid
    sig_arg = ctypes.c_ulong(int(sig))

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig_arg, 0, 0, 0)
        if getppid() != parent:  # the parent died between fork and prctl
            kill(me(), int(sig))

    return preexec


def supervised(env: dict[str, str] | None = None) -> dict[str, Any]:
    """``Popen`` keyword arguments for a child that must not outlive this process.

    Its own session (``start_new_session``), :func:`die_with_parent` where
    available, and ``env`` (default ``os.environ``) plus :data:`SUPERVISOR_ENV`
    set to this process's pid.
    """
    kwargs: dict[str, Any] = {
        "start_new_session": True,
        "env": {**(os.environ if env is None else env), SUPERVISOR_ENV: str(os.getpid())},
    }
    preexec = die_with_parent()
    if preexec is not None:
        kwargs["preexec_fn"] = preexec
    return kwargs
