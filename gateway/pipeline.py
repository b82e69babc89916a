"""Between intake and the store: batching, retries, dead letters, acknowledgements, stats.

The intake puts one :data:`Item` per received message on a bounded queue, in
receive order: :class:`Accepted` (a valid message) or :class:`Rejected`. The
:class:`BatchWriter` takes items in that order, hands a batch of accepted
messages to a :class:`gateway.sink.Sink` (InfluxDB: ``gateway.influx.InfluxSink``,
which owns points and line protocol), and only when the sink has taken it
acknowledges every item of the batch, still in receive order. A rejected item
is written to the dead-letter file and acknowledged in its place in the line;
an InfluxDB outage stops the line (nothing acknowledged, nothing dropped)
until a retry succeeds. So does a configuration error InfluxDB reports
(credentials, missing database or bucket): logged as an error naming what to
fix, shown in the stats (``write_error``), retried at the slowest backoff.
A point InfluxDB refuses for good (partial write, beyond retention, type
conflict) is dead-lettered with InfluxDB's reason, counted, and its message
acknowledged with the rest: one bad point never stops the line.

Nothing here talks MQTT or HTTP, or knows a storage format: the sink and the
acknowledger are injected, so the rules are unit-tested with fakes.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Protocol

from common import retry
from contracts import Message, utcnow
from contracts.storage import StoredPoint, point_count
from gateway.sink import STORAGE_ERROR, Entry, Sink, SinkFatal, SinkResult, SinkUnavailable

log = logging.getLogger(__name__)

#: The write backoff's spread: each delay between 0.5x and 1x of its base, so gateways do not retry in lockstep.
WRITE_JITTER = retry.Jitter.below(0.5)
#: Bytes of a rejected payload kept in the dead-letter file.
DEAD_LETTER_PAYLOAD_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Accepted:
    mid: int
    qos: int
    #: The MQTT connection the message arrived on (see ``MqttIntake.ack``).
    gen: int
    topic: str
    site_id: str
    message: Message
    received_at: datetime
    #: A retained copy the broker sent on subscribing, not the live publish.
    retained: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    mid: int
    qos: int
    gen: int
    topic: str
    payload: bytes
    reason: str
    detail: str
    received_at: datetime
    #: (site, device, epoch, seq) when the payload still names them: a
    #: dead-lettered reading is confirmed too, since re-sending cannot help.
    confirm: tuple[str, str, str, int] | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message that is ours but not a reading (a confirmation, a cleared
    retained status): acknowledged in its place in the line, counted by
    ``reason``, neither stored nor dead-lettered."""

    mid: int
    qos: int
    gen: int
    topic: str
    reason: str
    received_at: datetime


Item = Accepted | Rejected | Ignored


class _Stop:
    """Queue sentinel: everything before it is written and acknowledged, then the writer ends."""


STOP = _Stop()
QueueEntry = Accepted | Rejected | Ignored | _Stop


class EntrySource(Protocol):
    """Where the batch writer takes items from: a :class:`queue.Queue`, or ``gateway.processor.BulkQueue``."""

    def get(self, *, timeout: float | None = None) -> QueueEntry:
        """The next entry; raise :class:`queue.Empty` after ``timeout`` seconds without one."""
        ...

    def qsize(self) -> int: ...


@dataclass(frozen=True, slots=True)
class GatewayStats:
    received: int
    accepted: int
    rejected: dict[str, int]
    written_points: int
    write_retries: int
    dropped_points: int
    acked: int
    stale_acks: int
    batches: int
    queue_depth: int
    ignored: dict[str, int] = field(default_factory=dict)
    #: Points the store refused for good (InfluxDB: dead-lettered as ``influx_rejected``); also in ``dropped_points``.
    influx_rejected: int = 0
    #: Write attempts InfluxDB refused for a configuration error (see ``write_error``).
    write_fatal: int = 0
    #: What InfluxDB says is wrong with the configuration and how to fix it, while it refuses
    #: every write; "" once a write succeeds.
    write_error: str = ""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class Stats:
    """Thread-safe counters shared by intake and writer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        #: Messages that are ours but not readings (confirmations, cleared statuses), by reason.
        self.ignored: Counter[str] = Counter()
        self.written_points = 0
        self.write_retries = 0
        self.dropped_points = 0
        self.acked = 0
        #: Acks not sent because the connection the message came on is gone
        #: (the broker redelivers it on the new one).
        self.stale_acks = 0
        self.batches = 0
        self.influx_rejected = 0
        self.write_fatal = 0
        self.write_error = ""

    def count_received(self, rejected_reason: str | None) -> None:
        with self._lock:
            self.received += 1
            if rejected_reason is None:
                self.accepted += 1
            else:
                self.rejected[rejected_reason] += 1

    def count_batch(self, received: int, rejected: Counter[str], ignored: Counter[str]) -> None:
        """``received`` messages (readings or not), of which ``rejected`` by reason, and ``ignored`` ones."""
        with self._lock:
            self.received += received
            self.accepted += received - rejected.total()
            self.rejected.update(rejected)
            self.ignored.update(ignored)

    def count_ignored(self, reason: str) -> None:
        with self._lock:
            self.ignored[reason] += 1

    def set_write_error(self, text: str) -> None:
        """Record (or, with "", clear) the configuration error that blocks every write."""
        with self._lock:
            self.write_error = text

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self, queue_depth: int = 0) -> GatewayStats:
        with self._lock:
            return GatewayStats(
                received=self.received,
                accepted=self.accepted,
                rejected=dict(self.rejected),
                written_points=self.written_points,
                write_retries=self.write_retries,
                dropped_points=self.dropped_points,
                acked=self.acked,
                stale_acks=self.stale_acks,
                batches=self.batches,
                queue_depth=queue_depth,
                ignored=dict(self.ignored),
                influx_rejected=self.influx_rejected,
                write_fatal=self.write_fatal,
                write_error=self.write_error,
            )


class Backoff(retry.Backoff):
    """InfluxDB write retries: :class:`common.retry.Backoff` with every delay spread over [0.5x, 1x] of its base.

    Seconds: ``initial``, 2x, 4x, ... capped at ``maximum``. The spread keeps
    many gateways coming back after one outage from hitting InfluxDB in
    lockstep. ``jitter`` is the uniform [0, 1) source (a constant in tests).
    """

    def __init__(self, initial: float, maximum: float, jitter: Callable[[], float] = random.random) -> None:
        super().__init__(initial, maximum, jitter=WRITE_JITTER, rng=jitter)

    next = retry.Backoff.next_delay  # the name the gateway's tests use


class RateLimitedLog:
    """Log a repeated event at most once per ``every`` seconds per key, with a count of the rest."""

    def __init__(self, logger: logging.Logger, every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._log = logger
        self._every = every
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, level: int, key: str, msg: str, *args: object) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._every:
                self._suppressed[key] += 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            self._log.log(level, msg + " (+%d similar suppressed)", *args, suppressed)
        else:
            self._log.log(level, msg, *args)


class DeadLetters:
    """Rejected messages as JSON Lines: time, topic, reason, detail, payload (first 1 KB).

    ``payload`` holds the text if the kept bytes are UTF-8, else ``payload_b64``
    holds them base64-encoded; ``payload_bytes`` is the full length.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the gateway

    def add(self, *, at: datetime, topic: str, reason: str, detail: str, payload: bytes) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(dead_letter_record(at, topic, reason, detail, payload), ensure_ascii=False) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def dead_letter_record(at: datetime, topic: str, reason: str, detail: str, payload: bytes) -> dict[str, object]:
    kept = payload[:DEAD_LETTER_PAYLOAD_BYTES]
    record: dict[str, object] = {
        "time": at.isoformat().replace("+00:00", "Z"),
        "topic": topic,
        "reason": reason,
        "detail": detail,
        "payload_bytes": len(payload),
    }
    try:
        record["payload"] = kept.decode("utf-8")
    except UnicodeDecodeError:
        record["payload_b64"] = base64.b64encode(kept).decode("ascii")
    return record


@dataclass
class _Batch:
    items: list[Item] = field(default_factory=list)
    #: What the sink is handed: accepted items and the gateway's own points, in order.
    entries: list[Entry] = field(default_factory=list)
    #: For each entry, the index of its item in ``items`` (-1: the gateway's own stats).
    owners: list[int] = field(default_factory=list)
    #: Points the entries become (``batch_size`` counts these).
    points: int = 0
    started: float = 0.0


class BatchWriter:
    """The writer loop: collect a batch, write it to ``sink`` (retrying), then acknowledge it in order.

    A batch holds at most ``batch_size`` points (as
    :func:`contracts.storage.point_count` counts them) and waits at most
    ``flush_interval_s`` seconds for more. ``stats_points`` makes the
    gateway's own points from its counters every ``stats_interval_s`` seconds;
    they ride along with the next batch. ``run()`` returns after it has taken :data:`STOP` from the queue and
    handled everything before it, or once ``abort()`` was called.
    """

    def __init__(
        self,
        q: EntrySource,
        sink: Sink,
        ack: Callable[[Item], None],
        stats: Stats,
        dead_letters: DeadLetters,
        *,
        batch_size: int,
        flush_interval_s: float,
        backoff: retry.Backoff,
        stats_interval_s: float = 10.0,
        stats_points: Callable[[GatewayStats], list[StoredPoint]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[int, float | None, float], None] | None = None,
        on_committed: Callable[[], None] | None = None,
    ) -> None:
        self._q = q
        self._sink = sink
        self._ack = ack
        self._stats = stats
        self._dead = dead_letters
        self._batch_size = batch_size
        self._flush_interval = flush_interval_s
        self._backoff = backoff
        self._stats_interval = stats_interval_s
        self._stats_points = stats_points
        self._on_committed = on_committed
        self._clock = clock
        #: Per committed batch: points, seconds the write took (None: nothing written), ack lag in seconds.
        self._observe = observe
        self._write_s: float | None = None
        self._next_stats = clock() + stats_interval_s
        self._last_stats: tuple[float, int] = (clock(), 0)
        self._stopping = False
        self._give_up_at: float | None = None
        self._wake = threading.Event()
        self._aborted = False
        self._ratelog = RateLimitedLog(log)
        #: Clock time of the first configuration error of the current run of them, else None.
        self._failing_since: float | None = None

    # -- control (any thread) ---------------------------------------------------

    def give_up_after(self, seconds: float) -> None:
        """Stop retrying a failing write ``seconds`` from now (used on shutdown)."""
        self._give_up_at = self._clock() + seconds

    def abort(self) -> None:
        """End now: whatever is not yet written stays unacknowledged."""
        self._aborted = True
        self._give_up_at = self._clock()
        self._wake.set()

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        while not self._aborted:
            batch = _Batch()
            try:
                self._collect(batch)
                if batch.items or batch.entries:
                    self._commit(batch)
            except Exception:
                # A bug must not stop the gateway: this batch stays
                # unacknowledged (redelivered on the next session) and the loop goes on.
                log.exception("writer loop failed on a batch of %d messages", len(batch.items))
            if self._stopping:
                return

    def _collect(self, batch: _Batch) -> None:
        while batch.points < self._batch_size and not self._aborted:
            now = self._clock()
            if now >= self._next_stats:
                self._emit_stats(batch, now)
            if batch.items:
                timeout = batch.started + self._flush_interval - now
                if timeout <= 0:
                    return
            else:
                timeout = max(0.0, min(self._next_stats - now, 0.5))
            try:
                entry = self._q.get(timeout=timeout)
            except queue.Empty:
                if batch.entries and not batch.items:
                    return  # only stats waiting: write them
                continue
            if isinstance(entry, _Stop):
                self._stopping = True
                return
            if not batch.items:
                batch.started = self._clock()
            self._add(batch, entry)

    def _add(self, batch: _Batch, item: Item) -> None:
        index = len(batch.items)
        batch.items.append(item)
        if isinstance(item, Ignored):
            return
        if isinstance(item, Rejected):
            self._dead.add(
                at=item.received_at, topic=item.topic, reason=item.reason, detail=item.detail, payload=item.payload
            )
            self._ratelog(logging.WARNING, item.reason, "rejected %s: %s: %s", item.topic, item.reason, item.detail)
            return
        batch.entries.append(item)
        batch.owners.append(index)
        batch.points += point_count(item.message)

    def _commit(self, batch: _Batch) -> None:
        result = self._write_with_retries(batch)
        if result is None:
            return
        self._stats.add(written_points=result.written, batches=1)
        for refused in result.refused:
            owner = batch.owners[refused.index]
            item = None if owner < 0 else batch.items[owner]
            topic = "" if item is None else item.topic
            if refused.reason == STORAGE_ERROR:  # logged by the sink, with its traceback
                self._stats.add(dropped_points=1)
                at = utcnow() if item is None else item.received_at
            else:
                self._stats.add(dropped_points=1, influx_rejected=1)
                at = utcnow()
                self._ratelog(
                    logging.ERROR, refused.reason, "the store rejected a point of %s: %s", topic, refused.detail
                )
            self._dead.add(at=at, topic=topic, reason=refused.reason, detail=refused.detail, payload=refused.payload)
        self._dead.flush()
        for item in batch.items:
            self._ack(item)
        self._stats.add(acked=len(batch.items))
        if self._observe is not None and batch.items:
            try:
                lag = (utcnow() - batch.items[0].received_at).total_seconds()
                self._observe(batch.points, self._write_s if batch.entries else None, lag)
            except Exception:
                log.exception("batch metrics failed")
        if self._on_committed is not None:
            self._on_committed()

    def _write_with_retries(self, batch: _Batch) -> SinkResult | None:
        """Write the batch until the sink takes it; None if told to give up (nothing acknowledged).

        Retriable failures wait the backoff (or the server's ``Retry-After``,
        whichever is longer); a configuration error waits the longest backoff,
        so a gateway with a wrong token neither spins nor needs a restart once
        the token is fixed. Nothing is dropped while waiting.
        """
        if not batch.entries:
            return SinkResult()
        while True:
            try:
                started = time.perf_counter()
                result = self._sink.write(batch.entries)
                self._write_s = time.perf_counter() - started
            except Exception as exc:
                self._stats.add(write_retries=1)
                delay = self._after_failure(exc, batch)
                if self._give_up_at is not None:
                    left = self._give_up_at - self._clock()
                    if left <= 0:
                        log.error(
                            "giving up on a batch of %d messages: they stay unacknowledged and "
                            "the broker redelivers them to the next gateway session",
                            len(batch.items),
                        )
                        self._stopping = True
                        return None
                    delay = min(delay, left)
                self._wake.wait(delay)
                continue
            self._backoff.reset()
            if self._failing_since is not None:
                log.warning(
                    "InfluxDB takes the gateway's writes again (after %.0f s)", self._clock() - self._failing_since
                )
                self._failing_since = None
                self._stats.set_write_error("")
            return result

    def _after_failure(self, exc: Exception, batch: _Batch) -> float:
        """Log and count a failed write; the seconds to wait before the next attempt."""
        if not isinstance(exc, SinkUnavailable):
            log.error("unexpected error writing %d points; will retry", batch.points, exc_info=exc)
            return self._backoff.next_delay()
        if isinstance(exc, SinkFatal):
            if self._failing_since is None:
                self._failing_since = self._clock()
            self._stats.add(write_fatal=1)
            self._stats.set_write_error(str(exc))
            self._ratelog(
                logging.ERROR,
                "influx_fatal",
                "InfluxDB refuses every write until its configuration is fixed; nothing is acknowledged "
                "(the broker keeps the %d messages of this batch and all after it): %s",
                len(batch.items),
                exc,
            )
            self._backoff.next_delay()
            return self._backoff.max_s
        self._ratelog(logging.WARNING, "unavailable", "InfluxDB write failed, will retry: %s", exc)
        delay = self._backoff.next_delay()
        if exc.retry_after_s is not None:
            delay = max(delay, exc.retry_after_s)
        return delay

    def _emit_stats(self, batch: _Batch, now: float) -> None:
        self._next_stats = now + self._stats_interval
        snap = self._stats.snapshot(self._q.qsize())
        then, received_then = self._last_stats
        rate = (snap.received - received_then) / max(now - then, 1e-9)
        self._last_stats = (now, snap.received)
        log.info(
            "stats: received=%d (%.0f/s) accepted=%d rejected=%d %s written_points=%d retries=%d "
            "dropped_points=%d acked=%d queue=%d",
            snap.received,
            rate,
            snap.accepted,
            snap.rejected_total,
            dict(sorted(snap.rejected.items())),
            snap.written_points,
            snap.write_retries,
            snap.dropped_points,
            snap.acked,
            snap.queue_depth,
        )
        if self._stats_points is not None:
            try:
                points = self._stats_points(snap)
            except Exception:
                log.exception("cannot build the stats point")
                return
            batch.entries.extend(points)
            batch.owners.extend([-1] * len(points))
            batch.points += len(points)
