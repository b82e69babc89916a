"""The gateway's writer side: validation, batching, the sink, dead letters, stats.

The intake (``gateway/intake.py``) keeps only paho's network loop: it hands
every received message on *raw* (:data:`Raw`: topic, payload, retain flag,
receive time, and a hand-off sequence number), in batches, through
:mod:`gateway.handoff`. What happens to a message after that runs here, by
default in a child process of its own (``python -m gateway.processor``), so
validation and line protocol do not share an interpreter lock with the
network loop:

* :class:`Classifier`: control traffic and cleared statuses are
  :class:`~gateway.pipeline.Ignored`; everything else goes through the
  contract's one door (:func:`contracts.receive`) and becomes
  :class:`~gateway.pipeline.Accepted` or :class:`~gateway.pipeline.Rejected`,
  counted by reason;
* :class:`~gateway.pipeline.BatchWriter`: batches, the sink, retries, dead
  letters, exactly as in a single-process gateway;
* :class:`Writer`: instead of acknowledging to the broker, it reports what
  was handled (:class:`Report`: sequence numbers in receive order, the
  readings to confirm, a stats snapshot, each batch's figures for the
  metrics, the oldest point written too late for the continuous queries, and
  the log records of this side), after each batch and every
  :data:`REPORT_INTERVAL_S` while something changed. The intake acknowledges
  those messages on the connection they came on, and serves the metrics and
  runs the history thread from what the reports say.
* With the InfluxDB sink and ``settings.history``, the sink is wrapped in
  :class:`gateway.snapshots.HistorySink`: the lot and locker snapshot state
  lives here, beside the batches it is computed from (a restarted writer
  process starts it afresh, as a restarted gateway does).

:func:`serve` runs a :class:`Writer` on one end of a socket pair (the child's
``main``, or a thread when the gateway was given a sink object). Messages on
the wire are pickles: ``("batch", [Raw, ...])``, ``("stop", give_up_after_s)``
one way, :class:`Report` the other; the first message to the child is
:class:`Init`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import pickle
import queue
import re
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

import contracts
from common.influxdb import InfluxError
from common.runtime import watch_parent
from contracts import MessageRejected, confirm, topics
from contracts.messages import ID_PATTERN
from contracts.site import SiteConfig
from contracts.storage import FieldValue, StoredPoint, from_ns, gateway_stats_point
from gateway.pipeline import (
    STOP,
    Accepted,
    Backoff,
    BatchWriter,
    DeadLetters,
    GatewayStats,
    Ignored,
    Item,
    QueueEntry,
    Rejected,
    Stats,
)
from gateway.settings import GatewaySettings
from gateway.sink import Sink
from gateway.snapshots import HistorySink, HistoryTracker, LateMarks

log = logging.getLogger(__name__)

#: One received message as the intake hands it on: (sequence number, topic (None: not UTF-8),
#: payload, retained, receive time in ns since the Unix epoch).
Raw = tuple[int, str | None, bytes, bool, int]

#: The dead-letter topic of a message whose topic is not UTF-8 (MQTT 3.1.1 §1.5.3 requires UTF-8).
NON_UTF8_TOPIC = "<topic is not UTF-8>"
#: Longest a change (stats, a log record) waits before the writer side reports it, in seconds.
REPORT_INTERVAL_S = 0.25
#: Most log records one report carries; more are counted and dropped (a log storm must not flood the pipe).
MAX_LOG_RECORDS = 500

#: One committed batch for the metrics: points, seconds the write took (None: nothing written),
#: ack lag at the commit in seconds, and when it was committed (ns since the Unix epoch).
Observed = tuple[int, float | None, float, int]

T = TypeVar("T")


class BulkQueue(Generic[T]):
    """An unbounded FIFO between the receiving thread and the batch writer, filled a batch at a time.

    One lock and one wake-up per batch instead of per message. Unbounded
    because the intake bounds what it hands on (``queue_bound`` messages not
    yet handled). ``get`` raises :class:`queue.Empty` like :class:`queue.Queue`.
    """

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())

    def put_many(self, items: Iterable[T]) -> None:
        with self._cond:
            self._items.extend(items)
            self._cond.notify()

    def put(self, item: T, timeout: float | None = None) -> None:
        self.put_many((item,))

    def get(self, *, timeout: float | None = None) -> T:
        try:
            return self._items.popleft()  # atomic; the common case takes no lock
        except IndexError:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty
                self._cond.wait(left)
            return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items)


def valid_id(value: str) -> bool:
    """Whether ``value`` is a valid device, site or epoch id (the contract's pattern)."""
    return re.match(ID_PATTERN, value) is not None


def confirmable(topic: str, payload: bytes) -> tuple[str, str, str, int] | None:
    """(site, device, epoch, seq) of a rejected reading, if the topic and payload still name them."""
    try:
        parts = topic.split("/")
        # topic levels may encode '.' (contracts.topics.encode_level); TopicError is a ValueError
        site_id, device_id = topics.decode_level(parts[-3]), topics.decode_level(parts[-2])
        data = json.loads(payload) if len(payload) <= contracts.MAX_PAYLOAD_BYTES else None
    except (IndexError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    epoch, seq = data.get("epoch"), data.get("seq")
    if not (isinstance(epoch, str) and isinstance(seq, int) and not isinstance(seq, bool)):
        return None
    if not (valid_id(site_id) and valid_id(device_id) and valid_id(epoch) and 0 <= seq <= confirm.MAX_SEQ):
        return None
    if data.get("device_id") != device_id:
        return None  # never confirm on behalf of a device the payload does not name
    return site_id, device_id, epoch, seq


def confirm_key(item: Item) -> tuple[str, str, str, int] | None:
    """(site, device, epoch, seq) to confirm once ``item`` is handled (stored or dead-lettered), if any."""
    if isinstance(item, Accepted):
        m = item.message
        if m.epoch is None or m.seq is None:
            return None
        return item.site_id, m.device_id, m.epoch, m.seq
    if isinstance(item, Rejected):
        return item.confirm
    return None


class Classifier:
    """Raw messages to pipeline items, through the contract's one door; counts each in ``stats``.

    In an item made here, ``mid`` is the hand-off sequence number (the intake
    keeps the MQTT ids), and ``qos``/``gen`` are 0.
    """

    def __init__(self, prefix: str, site: SiteConfig | None, stats: Stats) -> None:
        self._prefix = prefix
        self._site = site
        self._stats = stats

    def item(self, raw: Raw) -> Item:
        """One raw message as an item, counted."""
        return self.items([raw])[0]

    def items(self, batch: list[Raw]) -> list[Item]:
        """Raw messages as items, in order; counted once for the batch (one lock, not one per message)."""
        out: list[Item] = []
        rejected: Counter[str] = Counter()
        ignored: Counter[str] = Counter()
        for raw in batch:
            item = self._item(raw)
            if type(item) is Rejected:
                rejected[item.reason] += 1
            elif type(item) is Ignored:
                ignored[item.reason] += 1
            out.append(item)
        self._stats.count_batch(len(out) - ignored.total(), rejected, ignored)
        return out

    def _item(self, raw: Raw) -> Item:
        seq, topic, payload, retain, received_ns = raw
        received_at = from_ns(received_ns)
        if topic is None:
            return Rejected(seq, 0, 0, NON_UTF8_TOPIC, payload, "bad_topic", "topic is not UTF-8", received_at)
        if topics.is_control(topic, self._prefix):
            return Ignored(seq, 0, 0, topic, "control", received_at)
        if not payload and topic.endswith("/status"):
            # A retained status cleared by its owner (or an operator): nothing to store.
            return Ignored(seq, 0, 0, topic, "status_cleared", received_at)
        try:
            where, message = contracts.receive(topic, payload, prefix=self._prefix, site=self._site)
        except MessageRejected as exc:
            return Rejected(seq, 0, 0, topic, payload, exc.reason, exc.detail, received_at, confirmable(topic, payload))
        return Accepted(seq, 0, 0, topic, where.site_id, message, received_at, retain)


@dataclass(slots=True)
class Report:
    """What the writer side tells the intake.

    ``handled``: sequence numbers of messages stored or dead-lettered (or
    ignored), in receive order: the intake acknowledges them.
    ``confirms``: readings among them to confirm, seqs by (site, device, epoch).
    ``stats``: the writer side's counters now (None: unchanged).
    ``logs``: log records of the writer process, for the intake to log.
    ``ready``: the first report (the sink is set up); ``done``: the last (after ``stop``).
    ``observed``: the committed batches among them, for the metrics' histograms.
    ``late_ns``: the oldest point time written too late for the continuous queries since the last report.
    """

    handled: list[int] = field(default_factory=list)
    confirms: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    stats: GatewayStats | None = None
    logs: list[logging.LogRecord] = field(default_factory=list)
    ready: bool = False
    done: bool = False
    observed: list[Observed] = field(default_factory=list)
    late_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Init:
    """The first message to a writer process: its settings, the site, the log level to forward from."""

    settings: GatewaySettings
    site: SiteConfig | None
    log_level: int


class LogForwarder(logging.Handler):
    """Keeps this process's log records, made picklable, for the next :class:`Report`."""

    def __init__(self) -> None:
        super().__init__()
        self._records: list[logging.LogRecord] = []
        self._records_lock = threading.Lock()
        self._dropped = 0
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record = copy.copy(record)
            record.msg = record.getMessage()
            record.args = None
            if record.exc_info:
                exc_type, exc_value = record.exc_info[0], record.exc_info[1]
                record.exc_text = self._formatter.formatException(record.exc_info)
                record.forwarded_exc = (getattr(exc_type, "__name__", "Exception"), str(exc_value)[:500])
                record.exc_info = None
            with self._records_lock:
                if len(self._records) >= MAX_LOG_RECORDS:
                    self._dropped += 1
                    return
                self._records.append(record)
        except Exception:
            self.handleError(record)

    def take(self) -> list[logging.LogRecord]:
        with self._records_lock:
            records, self._records = self._records, []
            dropped, self._dropped = self._dropped, 0
        if dropped:
            note = logging.LogRecord(
                __name__, logging.WARNING, __file__, 0, "%d log records of the writer process dropped", (dropped,), None
            )
            records.append(note)
        return records


class Writer:
    """Classifier + batch writer + sink behind a :class:`Report` callback; see the module docstring.

    ``late``: where the sink notes points written too late (:class:`gateway.snapshots.HistorySink`);
    taken into each report.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        site: SiteConfig | None,
        sink: Sink,
        send: Callable[[Report], None],
        *,
        logs: LogForwarder | None = None,
        late: LateMarks | None = None,
    ) -> None:
        self.settings = settings
        self._site_id = site.site.id if site is not None else settings.site_id
        self._send = send
        self._logs = logs
        self.stats = Stats()
        self._q: BulkQueue[QueueEntry] = BulkQueue()
        self._classifier = Classifier(settings.topic_prefix, site, self.stats)
        self._dead = DeadLetters(settings.dead_letter_path)
        self._confirm = settings.confirm
        self._lock = threading.Lock()
        self._handled: list[int] = []
        self._confirms: dict[tuple[str, str, str], list[int]] = {}
        self._observed: list[Observed] = []
        self._late = late
        self._last_stats: GatewayStats | None = None
        self.batch_writer = BatchWriter(
            self._q,
            sink,
            self._handled_one,
            self.stats,
            self._dead,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
            backoff=Backoff(settings.retry_initial_s, settings.retry_max_s),
            stats_interval_s=settings.stats_interval_s,
            stats_points=self._stats_points,
            observe=self._observe,
            on_committed=self.report,
        )
        self._thread = threading.Thread(target=self._run, name="gateway-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def feed(self, batch: list[Raw]) -> None:
        """Validate a batch from the intake and queue it for the batch writer, in order."""
        self._q.put_many(self._classifier.items(batch))

    def finish(self, give_up_after_s: float) -> None:
        """Write and report everything fed so far (retrying up to ``give_up_after_s``), then end."""
        self.batch_writer.give_up_after(give_up_after_s)
        self._q.put(STOP)
        self._thread.join(give_up_after_s + self.settings.influx_timeout_s + 5)
        if self._thread.is_alive():
            log.error("the batch writer did not finish; unwritten messages stay unacknowledged")
            self.batch_writer.abort()
            self._thread.join(self.settings.influx_timeout_s + 5)
        self._dead.close()

    def abort(self) -> None:
        """End now: nothing more is written or reported (the intake is gone)."""
        self.batch_writer.abort()
        self._thread.join(self.settings.influx_timeout_s + 5)
        self._dead.close()

    def report(self, *, force: bool = False, ready: bool = False, done: bool = False) -> None:
        """Send what was handled since the last report, and the stats and log records if they changed."""
        with self._lock:
            handled, self._handled = self._handled, []
            confirms, self._confirms = self._confirms, {}
            observed, self._observed = self._observed, []
            late_ns = self._late.take() if self._late is not None else None
            snap = self.stats.snapshot(self._q.qsize())
            stats = snap if snap != self._last_stats else None
            self._last_stats = snap
            logs = self._logs.take() if self._logs is not None else []
            changed = handled or confirms or stats is not None or logs or observed or late_ns is not None
            if changed or force or ready or done:
                self._send(Report(handled, confirms, stats, logs, ready, done, observed, late_ns))

    def _observe(self, points: int, write_s: float | None, ack_lag_s: float) -> None:
        """The batch writer's figures for one committed batch: sent with the report that hands it back."""
        with self._lock:
            self._observed.append((points, write_s, ack_lag_s, time.time_ns()))

    def _handled_one(self, item: Item) -> None:
        """The batch writer's acknowledgement of one item: remembered for the next report."""
        key = confirm_key(item) if self._confirm else None
        with self._lock:
            self._handled.append(item.mid)
            if key is not None:
                site_id, device_id, epoch, seq = key
                self._confirms.setdefault((site_id, device_id, epoch), []).append(seq)

    def _run(self) -> None:
        try:
            self.batch_writer.run()
        finally:
            self.report()

    def _stats_points(self, snap: GatewayStats) -> list[StoredPoint]:
        """The gateway's counters as one point of the storage contract, stamped now."""
        counters: dict[str, FieldValue] = {
            "received": snap.received,
            "accepted": snap.accepted,
            "rejected": snap.rejected_total,
            "written_points": snap.written_points,
            "write_retries": snap.write_retries,
            "dropped_points": snap.dropped_points,
            "acked": snap.acked,
            "queue_depth": snap.queue_depth,
            "influx_rejected": snap.influx_rejected,
            "write_fatal": snap.write_fatal,
        }
        if snap.write_error:
            counters["write_error"] = snap.write_error[:300]
        for reason, count in snap.rejected.items():
            counters[f"rejected_{reason}"] = count
        for reason, count in snap.ignored.items():
            counters[f"ignored_{reason}"] = count
        point = gateway_stats_point(
            gateway_id=self.settings.mqtt_client_id, site_id=self._site_id, counters=counters, time_ns=time.time_ns()
        )
        return [point]


def serve(
    conn: Connection,
    settings: GatewaySettings,
    site: SiteConfig | None,
    sink: Sink,
    *,
    logs: LogForwarder | None = None,
    stopped: Callable[[], bool] | None = None,
    late: LateMarks | None = None,
) -> None:
    """Run a :class:`Writer` on ``conn`` until told to stop, or until the intake's end closes.

    ``stopped()`` true (a signal, the parent watch) ends it as an abort, within :data:`REPORT_INTERVAL_S`.
    ``late``: the sink's marks of points written too late (see :class:`Writer`).
    """
    send_lock = threading.Lock()

    def send(report: Report) -> None:
        data = pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL)
        # OSError: the intake is gone; the receiving loop notices and ends.
        with send_lock, contextlib.suppress(OSError):
            conn.send_bytes(data)

    writer = Writer(settings, site, sink, send, logs=logs, late=late)
    writer.start()
    writer.report(ready=True)
    next_report = time.monotonic() + REPORT_INTERVAL_S
    while True:
        if stopped is not None and stopped():
            writer.abort()
            return
        try:
            data = conn.recv_bytes() if conn.poll(max(0.0, next_report - time.monotonic())) else None
        except (EOFError, OSError):
            # The intake is gone (killed, or it gave up on us): whatever is not reported stays
            # unacknowledged in the broker and is redelivered; stop writing.
            writer.abort()
            return
        if data is not None:
            kind, payload = pickle.loads(data)
            if kind == "batch":
                writer.feed(payload)
            elif kind == "stop":
                writer.finish(float(payload))
                writer.report(done=True)
                return
        if time.monotonic() >= next_report:
            writer.report()  # stats and log records, also while batches keep coming
            next_report = time.monotonic() + REPORT_INTERVAL_S


def _create_database(sink: Any, settings: GatewaySettings) -> None:
    try:
        sink.create_database()
    except InfluxError as exc:
        # 2.x/3.x compatibility endpoints cannot create databases, and
        # InfluxDB may simply be down: the writer retries either way.
        log.warning("CREATE DATABASE %r failed (continuing): %s", settings.influx_db, exc)


def with_history(sink: Sink, settings: GatewaySettings, site: SiteConfig | None) -> tuple[HistorySink, LateMarks]:
    """``sink`` with lot/locker snapshots added (``docs/history.md``), and where it notes late points."""
    late = LateMarks()
    tracker = None
    if site is None:
        log.info("history: no site configuration, so no lot or locker snapshots (rollups of footfall only)")
    elif settings.share_group is not None:
        # Each worker sees a share of every lot's readings: no worker knows a lot's state.
        log.warning("history: no lot or locker snapshots from gateway workers (docs/history.md, workers)")
    else:
        tracker = HistoryTracker(site, every_s=settings.history_snapshot_s, warmup_s=settings.history_warmup_s)
    return HistorySink(sink, tracker, late=late), late


def main(argv: list[str] | None = None) -> int:
    """The writer process: ``python -m gateway.processor FD`` (FD: its end of the socket pair)."""
    from gateway.sink_fanout import build_sink

    args = sys.argv[1:] if argv is None else argv
    conn = Connection(int(args[0]))
    stopped = threading.Event()
    terminated = [False]

    def on_sigterm(signum: int, frame: object) -> None:
        # Only a flag: a handler that takes a lock (Event.set does) deadlocks when a second signal
        # interrupts it on the main thread while it holds that lock, and the process lives on.
        terminated[0] = True

    # Ctrl-C in a terminal reaches the intake, which stops this process in order through the pipe;
    # SIGTERM (the parent-death signal) and a vanished parent abort.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        init = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return 1
    assert isinstance(init, Init)
    logs = LogForwarder()
    root = logging.getLogger()
    root.handlers[:] = [logs]
    root.setLevel(init.log_level)
    watch_parent(stopped.set)
    sink, influx = build_sink(init.settings)
    if influx is not None and init.settings.create_database:
        _create_database(influx, init.settings)
    late = None
    if init.settings.history:
        sink, late = with_history(sink, init.settings, init.site)
    try:
        serve(
            conn,
            init.settings,
            init.site,
            sink,
            logs=logs,
            stopped=lambda: terminated[0] or stopped.is_set(),
            late=late,
        )
    finally:
        sink.close()
    return 0


if __name__ == "__main__":
    # Run the module's imported copy: what the intake pickles names gateway.processor, not __main__.
    from gateway.processor import main as _main

    sys.exit(_main())
