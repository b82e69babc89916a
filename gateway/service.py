"""The gateway: MQTT intake -> hand-off -> writer side (validation, batches, sink), acks after the write.

Start/stop sequence in one place::

    start: the metrics listener (a taken port fails first), the writer side
           (a child process: dead-letter file, CREATE DATABASE (a warning if
           it fails), the history sink, batch writer), the history thread
           (retention policies, continuous queries, rollup catch-up: retried
           in the background, never fatal), MQTT (retries until the broker
           answers), status heartbeat
    stop:  take no new messages, hand on and write everything taken, and
           acknowledge it (retrying up to stop_timeout_s), publish ``offline``,
           disconnect, stop the history thread and the metrics listener

What lives where: this process runs paho's loop, the acknowledgements, the
history thread and the metrics listener; the writer process
(``gateway.processor``) validates, batches, keeps the lot/locker snapshot
state and writes. Its counters, batch observations and late-point marks come
back with each report (``gateway.handoff``), so ``/metrics`` and the history
thread here see what the writer did.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from contracts.configfile import load_model
from contracts.site import SiteConfig
from gateway.handoff import Inbox, WriterLink
from gateway.influx import InfluxWriter
from gateway.intake import MqttIntake
from gateway.metrics import GatewayMetrics
from gateway.pipeline import GatewayStats, Stats
from gateway.retention import HistoryMaintainer, HistorySetup, RetentionPlan
from gateway.settings import GatewaySettings
from gateway.sink import Sink
from gateway.snapshots import LateMarks

log = logging.getLogger(__name__)


class Gateway:
    """One gateway. ``site`` overrides ``settings.site_config``.

    ``sink``: where readings go. Default: InfluxDB from ``settings``, written
    by a child process (``gateway.processor``) that creates the database on
    start when ``create_database``; with ``settings.history`` the gateway
    also sets up history in InfluxDB and the writer process adds lot and
    locker snapshots to what it writes (``docs/history.md``). A sink passed
    in is the caller's to prepare and close, is written from a thread of this
    process, and gets no history.
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
        self.history: HistoryMaintainer | None = None
        self._history_writer: InfluxWriter | None = None
        if sink is None and settings.history:
            self.history = self._history_maintainer(site)
        #: The intake's own counters (acks it could not send); the rest are the writer side's.
        self._stats = Stats()
        self._inbox = Inbox(settings.queue_bound)
        self.intake = MqttIntake(settings, self._inbox, self._stats, site=site)
        self.metrics = GatewayMetrics(
            client_id=settings.mqtt_client_id,
            site_id=self._site_id,
            stats=self.stats,
            queue_bound=settings.queue_bound,
            confirmations=lambda: self.intake.confirmations_sent,
            connected=self.intake.is_connected,
            writer_pid=lambda: self.writer_pid,
        )
        self._link = WriterLink(
            settings,
            site,
            self._inbox,
            self.intake,
            sink=sink,
            observe=self.metrics.observe_batch,
            late=self.history.late if self.history is not None else None,
        )
        self._status_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = False
        self._running = False

    def _history_maintainer(self, site: SiteConfig | None) -> HistoryMaintainer:
        """The history thread (started by :meth:`start`); the writer process notes its late points in ``late``."""
        settings = self.settings
        plan = RetentionPlan.of(
            settings.influx_db,
            raw_rp=settings.influx_rp,
            config=site.history if site is not None else None,
            raw_days=settings.history_raw_days,
            rollup_days=settings.history_rollup_days,
        )
        self._history_writer = InfluxWriter.from_settings(settings, rp=settings.influx_rp)
        return HistoryMaintainer(
            HistorySetup(self._history_writer.execute, plan), LateMarks(), interval_s=settings.history_interval_s
        )

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise RuntimeError("gateway already started")
        self._started = True
        settings = self.settings
        if settings.metrics_port is not None:  # first: a taken port fails before anything runs
            self.metrics.serve(settings.metrics_host, settings.metrics_port)
        try:
            self._link.start()  # the writer side has tried CREATE DATABASE when this returns
        except BaseException:
            self._close_history_and_metrics()
            raise
        self._running = True
        if self.history is not None:
            self.history.start()
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
        if not self._running or self._stop.is_set():
            return
        self._stop.set()
        self.intake.stop_intake()
        self._inbox.close()
        self._link.stop(self.settings.stop_timeout_s)
        if self._status_thread is not None:
            self._status_thread.join(5)
        self.intake.close()
        self._close_history_and_metrics()
        snap = self.stats()
        log.info(
            "gateway stopped: received=%d accepted=%d rejected=%d written_points=%d acked=%d",
            snap.received,
            snap.accepted,
            snap.rejected_total,
            snap.written_points,
            snap.acked,
        )

    def _close_history_and_metrics(self) -> None:
        if self.history is not None:
            self.history.stop()
        if self._history_writer is not None:
            self._history_writer.close()
        self.metrics.close()

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Connected and subscribed."""
        return self.intake.wait_ready(timeout)

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid (None before start, or when the writer side runs in a thread)."""
        return self._link.pid

    @property
    def writer_restarts(self) -> int:
        """How often the writer process died and was started again."""
        return self._link.restarts

    def stats(self) -> GatewayStats:
        """The writer side's counters, with this process's: queue depth (received, not yet handled), stale acks."""
        own = self._stats.snapshot(self._inbox.qsize())
        writer = self._link.stats()
        if writer is None:
            return own
        return replace(writer, queue_depth=own.queue_depth, stale_acks=writer.stale_acks + own.stale_acks)

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
