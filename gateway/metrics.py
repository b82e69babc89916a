"""The gateway's Prometheus metrics (docs/metrics.md), on a small HTTP listener of their own.

The registry and the listener live in the intake process (the one that
runs paho's loop and acknowledges to the broker). The counters the gateway
already keeps (:class:`gateway.pipeline.Stats`: received, accepted, rejected
by reason, written points, retries, acks...) are counted by the writer
process, which sends a snapshot with each report (``gateway.handoff``, at
least every 0.25 s while something changes, summed over writer restarts);
they are read from the latest one when Prometheus scrapes
(:class:`GatewayCollector`), so neither process pays per message for them.
Three histograms are observed once per written batch: its size in points,
how long the store took to take it, and the ack lag (from receiving its
oldest message to acknowledging the batch to the broker). The writer process
times the write and sends each batch's figures with the report that hands
its messages back; the intake observes them when it has sent the acks, so
the lag includes the hand-back. The writer process's CPU and memory are the
``district_gateway_writer_process_*`` series beside this process's
``process_*``.

``metrics_port`` (``DISTRICT_GATEWAY_METRICS_PORT``) starts the listener on
``metrics_host`` (default loopback); unset, there is none (the registry still
exists for tests). With ``workers = N`` worker *i* listens on
``metrics_port + i`` (``gateway.workers``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gateway.pipeline import GatewayStats

log = logging.getLogger(__name__)

#: Points per batch: one reading is 1 point (a footfall count a few), batch_size caps it at 5,000 by default.
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
#: Seconds per InfluxDB write.
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds from receiving to acknowledging: flush_interval_s (0.2 s) plus the write, more while InfluxDB is down.
ACK_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class GatewayMetrics:
    """One gateway's registry. ``stats``/``queue_bound``/``confirmations``/``connected``/``writer_pid`` are read
    on scrape (``writer_pid``: the writer process, None while there is none or it is a thread)."""

    def __init__(
        self,
        *,
        client_id: str,
        site_id: str,
        stats: Callable[[], GatewayStats],
        queue_bound: int,
        confirmations: Callable[[], int],
        connected: Callable[[], bool],
        writer_pid: Callable[[], int | None] = lambda: None,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_points = Histogram(
            "district_gateway_batch_points",
            "Points per batch written to the store.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            "district_gateway_write_duration_seconds",
            "Time the store took to take one batch (the successful attempt).",
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        self.ack_lag = Histogram(
            "district_gateway_ack_lag_seconds",
            "Per batch: from receiving its oldest message to acknowledging the batch to the broker.",
            buckets=ACK_LAG_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(GatewayCollector(client_id, site_id, stats, queue_bound, confirmations, connected))
        ProcessCollector(registry=self.registry)
        self.registry.register(WriterProcessCollector(writer_pid))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def observe_batch(self, points: int, write_s: float | None, ack_lag_s: float) -> None:
        """One committed batch: ``write_s`` None when nothing was written (rejects only)."""
        if write_s is not None:
            self.batch_points.observe(points)
            self.write_seconds.observe(write_s)
        self.ack_lag.observe(max(ack_lag_s, 0.0))

    def serve(self, host: str, port: int) -> None:
        """Start the HTTP listener (any path answers the metrics); OSError if the port is taken."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        self.port = server.server_port
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class WriterProcessCollector(Collector):
    """The writer process's ``process_*`` series, as ``district_gateway_writer_process_*``; none without one."""

    def __init__(self, pid: Callable[[], int | None]) -> None:
        self._pid = pid

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked: present only while a writer process runs

    def collect(self) -> Iterable[Metric]:
        pid = self._pid()
        if pid is None:
            return []
        # A collector per scrape (it reads /proc/stat once): the pid changes when the writer is restarted.
        return ProcessCollector(namespace="district_gateway_writer", pid=lambda: pid, registry=None).collect()


class GatewayCollector(Collector):
    """The gateway's counters as Prometheus families, read from a stats snapshot on each scrape."""

    def __init__(
        self,
        client_id: str,
        site_id: str,
        stats: Callable[[], GatewayStats],
        queue_bound: int,
        confirmations: Callable[[], int],
        connected: Callable[[], bool],
    ) -> None:
        self.client_id = client_id
        self.site_id = site_id
        self.stats = stats
        self.queue_bound = queue_bound
        self.confirmations = confirmations
        self.connected = connected

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked: rejection reasons appear as they happen

    def collect(self) -> Iterable[Metric]:
        snap = self.stats()
        info = GaugeMetricFamily("district_gateway_info", "This gateway (always 1).", labels=["client_id", "site"])
        info.add_metric([self.client_id, self.site_id], 1)
        yield info

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield counter(
            "district_gateway_messages_received", "MQTT messages received (readings, valid or not).", snap.received
        )
        yield counter("district_gateway_messages_accepted", "Messages that passed validation.", snap.accepted)
        rejected = CounterMetricFamily(
            "district_gateway_messages_rejected",
            "Messages rejected by validation (dead-lettered), by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(snap.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        ignored = CounterMetricFamily(
            "district_gateway_messages_ignored",
            "Messages of ours that are not readings (confirmations, cleared statuses), by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(snap.ignored.items()):
            ignored.add_metric([reason], n)
        yield ignored
        yield counter("district_gateway_points_written", "Points the store took (stored).", snap.written_points)
        yield counter(
            "district_gateway_points_dropped", "Points the store refused for good (dead-lettered).", snap.dropped_points
        )
        yield counter("district_gateway_batches", "Batches written.", snap.batches)
        yield counter("district_gateway_write_retries", "Failed write attempts, retried.", snap.write_retries)
        yield counter(
            "district_gateway_write_fatal",
            "Write attempts the store refused for a configuration error (credentials, missing database).",
            snap.write_fatal,
        )
        yield counter("district_gateway_messages_acked", "Messages acknowledged to the broker.", snap.acked)
        yield counter(
            "district_gateway_stale_acks",
            "Acks not sent because their connection was gone (the broker redelivers).",
            snap.stale_acks,
        )
        yield counter(
            "district_gateway_confirmations_sent",
            "End-to-end confirmations published to devices ({prefix}/v1/{site}/{device}/stored).",
            self.confirmations(),
        )
        yield GaugeMetricFamily(
            "district_gateway_queue_depth", "Messages waiting for the writer.", value=snap.queue_depth
        )
        yield GaugeMetricFamily("district_gateway_queue_capacity", "The intake queue's bound.", value=self.queue_bound)
        yield GaugeMetricFamily(
            "district_gateway_mqtt_connected",
            "1 while connected and subscribed to the broker.",
            value=float(self.connected()),
        )
        yield GaugeMetricFamily(
            "district_gateway_write_failing",
            "1 while the store refuses every write for a configuration error.",
            value=float(bool(snap.write_error)),
        )
