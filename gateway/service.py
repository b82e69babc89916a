"""The gateway: MQTT intake -> bounded queue -> batch writer -> sink (InfluxDB), acks after the write.

Start/stop sequence in one place::

    start: dead-letter file, CREATE DATABASE (a warning if it fails), the
           history thread (retention policies, continuous queries, rollup
           catch-up: retried in the background, never fatal), writer
           thread, MQTT (retries until the broker answers), status heartbeat
    stop:  take no new messages, write and acknowledge everything taken
           (retrying up to stop_timeout_s), publish ``offline``, stop the
           history thread, disconnect
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from common.influxdb import InfluxError
from contracts.configfile import load_model
from contracts.site import SiteConfig
from contracts.storage import FieldValue, StoredPoint, gateway_stats_point
from gateway.influx import InfluxSink, InfluxWriter
from gateway.intake import MqttIntake
from gateway.metrics import GatewayMetrics
from gateway.pipeline import STOP, Backoff, BatchWriter, DeadLetters, GatewayStats, QueueEntry, Stats
from gateway.retention import HistoryMaintainer, HistorySetup, RetentionPlan
from gateway.settings import GatewaySettings
from gateway.sink import Sink
from gateway.snapshots import HistorySink, HistoryTracker, LateMarks

log = logging.getLogger(__name__)


class Gateway:
    """One gateway. ``site`` overrides ``settings.site_config``.

    ``sink``: where readings go (default: InfluxDB from ``settings``, created
    on start when ``create_database``, closed on stop); a sink passed in is
    the caller's to prepare and close. With the default sink and
    ``settings.history``, the gateway also sets up history in InfluxDB and
    adds lot and locker snapshots to what it writes (``docs/history.md``).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        site: SiteConfig | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.settings = settings
        if site is None and settings.site_config is not None:
            site = load_model(settings.site_config, SiteConfig)  # raises ConfigError with line numbers
        self.site = site
        self._site_id = site.site.id if site is not None else settings.site_id
        self._influx: InfluxSink | None = None
        self.history: HistoryMaintainer | None = None
        self._history_writer: InfluxWriter | None = None
        if sink is None:
            self._influx = sink = InfluxSink.from_settings(settings)
            if settings.history:
                sink = self._history_sink(sink, site)
        self._sink: Sink = sink
        self._stats = Stats()
        self._q: queue.Queue[QueueEntry] = queue.Queue(maxsize=settings.queue_bound)
        self._dead = DeadLetters(None)
        self.intake = MqttIntake(settings, self._q, self._stats, site=site)
        self.metrics = GatewayMetrics(
            client_id=settings.mqtt_client_id,
            site_id=self._site_id,
            stats=self.stats,
            queue_bound=settings.queue_bound,
            confirmations=lambda: self.intake.confirmations_sent,
            connected=self.intake.is_connected,
        )
        self._batch_writer: BatchWriter | None = None
        self._writer_thread: threading.Thread | None = None
        self._status_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = False

    def _history_sink(self, sink: InfluxSink, site: SiteConfig | None) -> Sink:
        """The InfluxDB sink with lot/locker snapshots added, and the history thread (started by :meth:`start`)."""
        settings = self.settings
        late = LateMarks()
        tracker = None
        if site is None:
            log.info("history: no site configuration, so no lot or locker snapshots (rollups of footfall only)")
        elif settings.share_group is not None:
            # Each worker sees a share of every lot's readings: no worker knows a lot's state.
            log.warning("history: no lot or locker snapshots from gateway workers (docs/history.md, workers)")
        else:
            tracker = HistoryTracker(site, every_s=settings.history_snapshot_s, warmup_s=settings.history_warmup_s)
        plan = RetentionPlan.of(
            settings.influx_db,
            raw_rp=settings.influx_rp,
            config=site.history if site is not None else None,
            raw_days=settings.history_raw_days,
            rollup_days=settings.history_rollup_days,
        )
        self._history_writer = InfluxWriter.from_settings(settings, rp=settings.influx_rp)
        self.history = HistoryMaintainer(
            HistorySetup(self._history_writer.execute, plan), late, interval_s=settings.history_interval_s
        )
        return HistorySink(sink, tracker, late=late)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise RuntimeError("gateway already started")
        self._started = True
        settings = self.settings
        if settings.metrics_port is not None:  # first: a taken port fails before anything runs
            self.metrics.serve(settings.metrics_host, settings.metrics_port)
        self._dead = DeadLetters(settings.dead_letter_path)
        self._batch_writer = BatchWriter(
            self._q,
            self._sink,
            self.intake.ack,
            self._stats,
            self._dead,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
            backoff=Backoff(settings.retry_initial_s, settings.retry_max_s),
            stats_interval_s=settings.stats_interval_s,
            stats_points=self._stats_points,
            observe=self.metrics.observe_batch,
        )
        if self._influx is not None and self.settings.create_database:
            try:
                self._influx.create_database()
            except InfluxError as exc:
                # 2.x/3.x compatibility endpoints cannot create databases, and
                # InfluxDB may simply be down: the writer retries either way.
                log.warning("CREATE DATABASE %r failed (continuing): %s", self.settings.influx_db, exc)
        if self.history is not None:
            self.history.start()
        self._writer_thread = threading.Thread(target=self._batch_writer.run, name="gateway-writer", daemon=True)
        self._writer_thread.start()
        self.intake.start()
        self._status_thread = threading.Thread(target=self._status_loop, name="gateway-status", daemon=True)
        self._status_thread.start()
        log.info(
            "gateway started: site %s, InfluxDB %s db %r, batches of %d points / %.2f s",
            self._site_id,
            self.settings.influx_url,
            self.settings.influx_db,
            self.settings.batch_size,
            self.settings.flush_interval_s,
        )

    def stop(self) -> None:
        """Write and acknowledge what was taken, then disconnect. Idempotent."""
        if self._batch_writer is None or self._stop.is_set():
            return
        writer = self._batch_writer
        self._stop.set()
        self.intake.stop_intake()
        writer.give_up_after(self.settings.stop_timeout_s)
        try:
            self._q.put(STOP, timeout=self.settings.stop_timeout_s)
        except queue.Full:
            writer.abort()
        if self._writer_thread is not None:
            self._writer_thread.join(self.settings.stop_timeout_s + self.settings.influx_timeout_s + 5)
            if self._writer_thread.is_alive():
                log.error("writer did not finish; unacknowledged messages will be redelivered")
                writer.abort()
                self._writer_thread.join(self.settings.influx_timeout_s + 5)
        if self._status_thread is not None:
            self._status_thread.join(5)
        self.intake.close()
        if self.history is not None:
            self.history.stop()
        if self._history_writer is not None:
            self._history_writer.close()
        if self._influx is not None:
            self._influx.close()
        self._dead.close()
        self.metrics.close()
        snap = self.stats()
        log.info(
            "gateway stopped: received=%d accepted=%d rejected=%d written_points=%d acked=%d",
            snap.received,
            snap.accepted,
            snap.rejected_total,
            snap.written_points,
            snap.acked,
        )

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Connected and subscribed."""
        return self.intake.wait_ready(timeout)

    def stats(self) -> GatewayStats:
        return self._stats.snapshot(self._q.qsize())

    # -- internals -----------------------------------------------------------------------

    def _status_loop(self) -> None:
        while not self._stop.wait(self.settings.status_interval_s):
            try:
                error = self.stats().write_error
                if error:
                    # Nothing is being stored: say so where operators and the server look.
                    self.intake.publish_status("degraded", reason=f"InfluxDB refuses writes: {error}"[:200])
                else:
                    self.intake.publish_status("online")
            except Exception:
                log.exception("status heartbeat failed")

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
