"""Between the intake and the writer side: raw messages one way in batches, reports the other.

The intake process runs paho's network loop and little else. Its
``on_message`` puts each message, raw, into the :class:`Inbox` (one lock, one
append; no validation). :class:`WriterLink` moves what the inbox holds to the
writer side (:mod:`gateway.processor`) as one pickle per batch, every
:data:`BATCH_DELAY_S` at most while messages flow, and applies the writer
side's reports as they come: it acknowledges the handled messages to the
broker on the connection each came on, in receive order, hands the readings
to confirm to the intake, keeps the stats, observes each committed batch in
the metrics (after its acks), passes late-point marks to the history thread,
and logs the writer process's log records here.

Delivery guarantees are the single-process gateway's:

* A message is acknowledged only after the writer side reported it stored
  (or dead-lettered, or ignored); until then the inbox keeps it, raw.
* The inbox holds at most ``queue_bound`` messages not yet handled; when
  full, paho's thread waits in ``on_message`` (TCP back-pressure on the
  broker), as it waited on the bounded queue before.
* One writer, in receive order: batches are sent in order, the writer side
  handles them in order, so readings of one device are stored and
  acknowledged in the order they arrived.
* If the writer process dies, it is started again (1 s, doubling up to 30 s
  while it keeps dying) and handed every message not yet reported handled,
  in order. Those it had stored already are stored again (idempotent:
  a point's key is measurement + tags + time) and confirmed again.

The writer side runs in a child process (``python -m gateway.processor``,
started here with :func:`common.runtime.supervised`: its own session, a
parent-death signal, and a parent watch), or, when the gateway was given a
sink object, in a thread of this process on the same socket pair.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Protocol

from common.runtime import supervised
from contracts.site import SiteConfig
from gateway.pipeline import GatewayStats, RateLimitedLog
from gateway.processor import Init, Raw, Report, serve
from gateway.settings import GatewaySettings
from gateway.sink import Sink
from gateway.snapshots import LateMarks

log = logging.getLogger(__name__)

#: While messages flow, the longest one waits in the inbox before it is handed on (seconds): a batch
#: is what arrives in this time (about 40 messages at 10,000 msg/s; one pickle and one write each).
BATCH_DELAY_S = 0.004
#: How long the writer side may take to start (interpreter, imports, CREATE DATABASE), in seconds.
START_TIMEOUT_S = 60.0
RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0


class ForwardedException(Exception):
    """Stands for an exception the writer process logged (its traceback is in the record's text)."""


class Acker(Protocol):
    """What the link acknowledges and confirms through (``gateway.intake.MqttIntake``)."""

    def ack_raw(self, gen: int, mid: int, qos: int) -> None: ...

    def note_confirmations(self, seqs: dict[tuple[str, str, str], list[int]]) -> None: ...


class Inbox:
    """Raw messages from paho's thread, kept until the writer side reports them handled.

    ``bound``: most messages not yet handled; :meth:`put_raw` waits while it
    is reached (paho's thread then stops reading the socket).
    """

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self._cond = threading.Condition(threading.Lock())
        #: seq -> (gen, mid, qos, raw), in receive order.
        self._waiting: dict[int, tuple[int, int, int, Raw]] = {}
        self._unsent: list[Raw] = []
        self._seq = 0
        self._closed = False
        self._armed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._ratelog = RateLimitedLog(log)

    def put_raw(
        self, gen: int, mid: int, qos: int, topic: str | None, payload: bytes, retain: bool, received_ns: int
    ) -> bool:
        """Keep one message (paho's thread); False if the inbox is closed (the message stays unacknowledged)."""
        with self._cond:
            while len(self._waiting) >= self._bound and not self._closed:
                if not self._cond.wait(0.5):
                    self._ratelog(
                        logging.WARNING, "queue_full", "intake queue full (%d): waiting for InfluxDB", self._bound
                    )
            if self._closed:
                return False
            seq = self._seq
            self._seq += 1
            raw: Raw = (seq, topic, payload, retain, received_ns)
            self._waiting[seq] = (gen, mid, qos, raw)
            self._unsent.append(raw)
            wake, self._armed = self._armed, False
        if wake:
            self.wake()
        return True

    def qsize(self) -> int:
        """Messages received and not yet handled (stored, dead-lettered or ignored)."""
        return len(self._waiting)

    def take(self) -> list[Raw]:
        """What was not yet handed on, in receive order."""
        with self._cond:
            batch, self._unsent = self._unsent, []
        return batch

    def arm(self) -> bool:
        """Ask :meth:`put_raw` to wake :meth:`wake_socket`'s reader at the next message; False if one waits."""
        with self._cond:
            self._armed = not self._unsent
            return self._armed

    def wake_socket(self) -> socket.socket:
        return self._wake_r

    def wake(self) -> None:
        """Wake :meth:`wake_socket`'s reader now."""
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"\0")

    def drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def release(self, seqs: list[int]) -> list[tuple[int, int, int]]:
        """(gen, mid, qos) of each handled message, in the order given; forgets them and makes room."""
        out: list[tuple[int, int, int]] = []
        with self._cond:
            pop = self._waiting.pop
            for seq in seqs:
                entry = pop(seq, None)
                if entry is not None:  # None: handled twice (handed on again after a writer restart)
                    out.append(entry[:3])
            self._cond.notify_all()
        return out

    def resend_all(self) -> int:
        """Hand on every message not yet handled again, in receive order (a new writer process); how many."""
        with self._cond:
            self._unsent = [entry[3] for entry in self._waiting.values()]
            return len(self._unsent)

    def close(self) -> None:
        """Take no more messages; wake paho's thread if it waits for room."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def close_sockets(self) -> None:
        self._wake_r.close()
        self._wake_w.close()


class _Child:
    """The writer side: a child process, or a thread of this process when given a sink object."""

    def __init__(self, conn: Connection, proc: subprocess.Popen[bytes] | None, thread: threading.Thread | None):
        self.conn = conn
        self.proc = proc
        self.thread = thread

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float) -> int | None:
        """Exit status (0 for a thread) once it has ended, None if still running after ``timeout``."""
        if self.proc is not None:
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        if self.thread is not None:
            self.thread.join(timeout)
            return None if self.thread.is_alive() else 0
        return 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class WriterLink:
    """The intake's end of the hand-off: see the module docstring.

    ``sink``: run the writer side in a thread of this process with this sink
    (the caller's to prepare and close); None: in a child process with the
    InfluxDB sink of ``settings``. ``observe(points, write_s, ack_lag_s)``:
    called per committed batch once its messages are acknowledged
    (``GatewayMetrics.observe_batch``). ``late``: where the writer side's
    late-point marks are noted (the history thread's).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        site: SiteConfig | None,
        inbox: Inbox,
        acker: Acker,
        *,
        sink: Sink | None = None,
        observe: Callable[[int, float | None, float], None] | None = None,
        late: LateMarks | None = None,
    ) -> None:
        self.settings = settings
        self._site = site
        self._inbox = inbox
        self._acker = acker
        self._sink = sink
        self._observe = observe
        self._late = late
        self._lock = threading.Lock()
        #: Held while a batch is taken and sent, and while a new writer is put in place.
        self._send_lock = threading.Lock()
        self._child: _Child | None = None
        self._stats: GatewayStats | None = None
        #: Counters of writer processes that have ended (a restarted writer counts from zero).
        self._carried: GatewayStats | None = None
        self._stop = threading.Event()
        self._give_up_s = settings.stop_timeout_s
        self._done = threading.Event()
        self._sender: threading.Thread | None = None
        self._receiver: threading.Thread | None = None
        self.restarts = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer side and wait until it is ready; raise RuntimeError if it does not start."""
        child, ready = self._spawn()
        if not ready:
            child.kill()
            child.wait(5)
            child.conn.close()
            self._inbox.close_sockets()
            raise RuntimeError("the gateway's writer process did not start (see the log above)")
        self._child = child
        self._sender = threading.Thread(target=self._send_loop, name="gateway-handoff", daemon=True)
        self._receiver = threading.Thread(target=self._receive_loop, name="gateway-reports", daemon=True)
        self._receiver.start()
        self._sender.start()

    def stop(self, give_up_after_s: float) -> None:
        """Hand on what is left, let the writer side store and report it (retrying up to ``give_up_after_s``)."""
        self._give_up_s = give_up_after_s
        self._stop.set()
        self._wake()
        wait_s = give_up_after_s + self.settings.influx_timeout_s + 10
        if self._sender is not None:
            self._sender.join(wait_s)
        if self._receiver is not None:
            self._receiver.join(wait_s)
        if not self._done.is_set():
            log.error("the writer side did not finish; what it did not report stored stays unacknowledged")
        child = self._child
        if child is not None:
            if child.wait(5) is None:
                child.kill()
                child.wait(5)
            child.conn.close()
        if self._sender is None or not self._sender.is_alive():
            self._inbox.close_sockets()

    @property
    def pid(self) -> int | None:
        """The writer process's pid (None: not started, or a thread)."""
        child = self._child
        return child.pid if child is not None else None

    def stats(self) -> GatewayStats | None:
        """The writer side's counters (every writer process's, summed), None before its first report."""
        with self._lock:
            if self._stats is None:
                return self._carried
            if self._carried is None:
                return self._stats
            return _add(self._carried, self._stats)

    # -- the writer side ------------------------------------------------------------------------

    def _spawn(self) -> tuple[_Child, bool]:
        """A new writer side, and whether it said ready."""
        ours, theirs = socket.socketpair()
        conn = Connection(ours.detach())
        if self._sink is not None:
            their_conn = Connection(theirs.detach())
            thread = threading.Thread(
                target=self._serve_in_thread, args=(their_conn, self._sink), name="gateway-writer-side", daemon=True
            )
            thread.start()
            child = _Child(conn, None, thread)
        else:
            fd = theirs.fileno()
            argv = [sys.executable, "-m", "gateway.processor", str(fd)]
            try:
                proc = subprocess.Popen(argv, pass_fds=(fd,), **supervised())
            finally:
                theirs.close()  # the child has its copy: EOF here when it exits
            child = _Child(conn, proc, None)
            level = min(logging.getLogger().getEffectiveLevel(), logging.getLogger("gateway").getEffectiveLevel())
            try:
                conn.send_bytes(pickle.dumps(Init(self.settings, self._site, level), protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                return child, False
        deadline = time.monotonic() + START_TIMEOUT_S + self.settings.influx_timeout_s
        while time.monotonic() < deadline:
            try:
                if not conn.poll(0.5):
                    if child.proc is not None and child.proc.poll() is not None:
                        break
                    continue
                report = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break
            self._apply(report)
            if report.ready:
                log.info("writer side started (%s)", f"pid {child.pid}" if child.pid else "in a thread")
                return child, True
        return child, False

    def _serve_in_thread(self, conn: Connection, sink: Sink) -> None:
        try:
            serve(conn, self.settings, self._site, sink)
        except Exception:
            log.exception("the writer side failed")
        finally:
            conn.close()

    def _restart(self) -> bool:
        """After the writer side died: start another and hand it everything unhandled. False when stopping."""
        delay = RESTART_MIN_S
        old = self._child
        if old is not None:
            status = old.wait(2)
            # Under the send lock: a batch being sent on this connection finishes (or fails with OSError)
            # first. Closed under a send, the connection's handle turns None mid-write, which raises
            # TypeError, not OSError, and would end the sending thread: the intake then stalls.
            with self._send_lock:
                old.conn.close()
            log.error(
                "the writer process (pid %s) ended (status %s) with %d messages not reported stored; "
                "starting another, which stores them again",
                old.pid,
                status,
                self._inbox.qsize(),
            )
        with self._lock:
            if self._stats is not None:
                self._carried = self._stats if self._carried is None else _add(self._carried, self._stats)
                self._stats = None
        while not self._stop.is_set():
            with self._send_lock:
                child, ready = self._spawn()
                if ready:
                    self._child = child
                    self.restarts += 1
                    self._inbox.resend_all()
                    self._wake()
                    return True
            child.kill()
            child.wait(5)
            child.conn.close()
            log.error("the writer process did not start; trying again in %.0f s", delay)
            self._stop.wait(delay)
            delay = min(RESTART_MAX_S, delay * 2)
        return False

    # -- the two threads ----------------------------------------------------------------------------

    def _send_loop(self) -> None:
        """Hand on the inbox in batches; after ``stop``, what is left and then the stop request."""
        wake = self._inbox.wake_socket()
        last_send = 0.0
        while not self._stop.is_set():
            since = time.monotonic() - last_send
            if since < BATCH_DELAY_S:
                ready = wait([wake], BATCH_DELAY_S - since)  # let a batch gather
            elif self._inbox.arm():
                ready = wait([wake], 1.0)  # idle until the next message
            else:
                ready = []
            if ready:
                self._inbox.drain_wake()
            if not self._stop.is_set() and self._send_guarded():
                last_send = time.monotonic()
        self._send_batch(final=True)

    def _send_guarded(self) -> bool:
        """:meth:`_send_batch`, and never an end of this thread: if this thread ended, the intake would stall
        with nothing said. On an unexpected error every unhandled message is handed on again (the writer side
        takes a message twice without harm) and the error is logged."""
        try:
            return self._send_batch()
        except Exception:
            log.exception("handing a batch to the writer side failed; handing every unhandled message on again")
            self._inbox.resend_all()
            self._stop.wait(0.1)
            return False

    def _send_batch(self, *, final: bool = False) -> bool:
        """Send what the inbox holds (and, ``final``, the stop request); whether a batch went."""
        with self._send_lock:
            child = self._child
            if child is None:
                return False
            batch = self._inbox.take()
            try:
                if batch:
                    child.conn.send_bytes(pickle.dumps(("batch", batch), protocol=pickle.HIGHEST_PROTOCOL))
                if final:
                    child.conn.send_bytes(pickle.dumps(("stop", self._give_up_s)))
            except OSError:
                return False  # the writer side died: the receiving thread starts another and hands all on again
            return bool(batch)

    def _receive_loop(self) -> None:
        """Apply reports until the writer side said done (or, stopping, ended)."""
        while True:
            child = self._child
            if child is None:
                return
            try:
                report = pickle.loads(child.conn.recv_bytes())
            except (EOFError, OSError):
                if self._stop.is_set() or not self._restart():
                    return
                continue
            self._apply(report)
            if report.done:
                self._done.set()
                return

    def _apply(self, report: Report) -> None:
        for record in report.logs:
            _log_here(record)
        if report.handled:
            for gen, mid, qos in self._inbox.release(report.handled):
                self._acker.ack_raw(gen, mid, qos)
        if report.confirms:
            self._acker.note_confirmations(report.confirms)
        if report.stats is not None:
            with self._lock:
                self._stats = report.stats
        if report.late_ns is not None and self._late is not None:
            self._late.note(report.late_ns)
        if report.observed and self._observe is not None:
            now_ns = time.time_ns()
            try:
                for points, write_s, lag_s, committed_ns in report.observed:
                    # The lag runs on to the acks just sent, a hop after the writer side committed.
                    self._observe(points, write_s, lag_s + max(0, now_ns - committed_ns) / 1e9)
            except Exception:
                log.exception("batch metrics failed")

    def _wake(self) -> None:
        self._inbox.wake()


def _log_here(record: logging.LogRecord) -> None:
    """Log a record of the writer process through this process's logger of the same name."""
    logger = logging.getLogger(record.name)
    if not logger.isEnabledFor(record.levelno):
        return
    forwarded = getattr(record, "forwarded_exc", None)
    if forwarded is not None:
        name, text = forwarded
        record.exc_info = (ForwardedException, ForwardedException(f"{name}: {text}"), None)
    logger.handle(record)


def _add(a: GatewayStats, b: GatewayStats) -> GatewayStats:
    """Counters of two writer processes, summed (the later one's write error and queue depth)."""
    rejected = dict(a.rejected)
    for k, v in b.rejected.items():
        rejected[k] = rejected.get(k, 0) + v
    ignored = dict(a.ignored)
    for k, v in b.ignored.items():
        ignored[k] = ignored.get(k, 0) + v
    return replace(
        b,
        received=a.received + b.received,
        accepted=a.accepted + b.accepted,
        rejected=rejected,
        written_points=a.written_points + b.written_points,
        write_retries=a.write_retries + b.write_retries,
        dropped_points=a.dropped_points + b.dropped_points,
        acked=a.acked + b.acked,
        stale_acks=a.stale_acks + b.stale_acks,
        batches=a.batches + b.batches,
        ignored=ignored,
        influx_rejected=a.influx_rejected + b.influx_rejected,
        write_fatal=a.write_fatal + b.write_fatal,
    )
