"""The intake/writer split on real Mosquitto and InfluxDB: a killed writer process loses nothing,
a sink object (the writer side in a thread) gets every reading in order, and what the writer process
counts and notes reaches the metrics listener and the history thread of the intake process."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import urllib.request
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import ParkingBayState, encode, utcnow
from contracts.storage import M_PARKING_BAY
from district.services import Service, free_port
from gateway.pipeline import Accepted
from gateway.service import Gateway
from gateway.sink import Entry, SinkResult
from tests.conftest import Influx, wait_for
from tests.integration.test_gateway import Publisher, _bay_stream, _distinct, bay, gateway_settings, topic_of

pytestmark = pytest.mark.integration


def test_a_killed_writer_process_is_restarted_and_nothing_is_lost(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    publisher = Publisher(mosquitto)
    gw = Gateway(gateway_settings(mosquitto, influx_db, prefix, tmp_path, batch_size=100))
    gw.start()
    try:
        assert gw.wait_ready(15)
        first_pid = gw.writer_pid
        assert first_pid is not None and first_pid != os.getpid()
        stream = _bay_stream(prefix, 5000)
        feeder = threading.Thread(target=publisher.send_many, args=([(t, p) for t, p, _ in stream],))
        feeder.start()
        wait_for(lambda: _distinct(influx_db) >= 300, 30, what="the writer storing")
        os.kill(first_pid, signal.SIGKILL)
        at_kill = _distinct(influx_db)
        feeder.join(60)
        assert at_kill < len(stream), "the kill came too late to test anything"
        wait_for(lambda: _distinct(influx_db) == len(stream), 60, what=f"all {len(stream)} readings stored")
        assert influx_db.count(M_PARKING_BAY) == len(stream)
        wait_for(lambda: gw.stats().queue_depth == 0, 20, what="every message acknowledged")
        assert gw.writer_restarts == 1 and gw.writer_pid not in (None, first_pid)
        assert any("writer process" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    finally:
        gw.stop()
        publisher.close()


class Recording:
    """A sink object: the gateway runs its writer side in a thread and hands it validated messages."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.lock = threading.Lock()

    def write(self, entries: Sequence[Entry]) -> SinkResult:
        with self.lock:
            self.entries.extend(entries)
        return SinkResult(written=len(entries), requests=1)

    def close(self) -> None:
        pass

    def bays(self) -> list[str]:
        with self.lock:
            return [
                e.message.bay_id
                for e in self.entries
                if isinstance(e, Accepted) and isinstance(e.message, ParkingBayState)
            ]


def test_a_sink_object_is_written_from_a_thread_in_receive_order(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    publisher = Publisher(mosquitto)
    sink = Recording()
    gw = Gateway(gateway_settings(mosquitto, influx_db, prefix, tmp_path), sink=sink)
    gw.start()
    try:
        assert gw.wait_ready(15)
        assert gw.writer_pid is None
        readings = [bay(bay_id=f"AM-{i:03d}") for i in range(300)]
        publisher.send_many([(topic_of(prefix, m.device_id, "parking_bay"), encode(m)) for m in readings])
        wait_for(lambda: len(sink.bays()) == 300, 20, what="300 readings in the sink")
        assert sink.bays() == [m.bay_id for m in readings]
        wait_for(lambda: gw.stats().acked >= 300, 10, what="all acknowledged")
    finally:
        gw.stop()
        publisher.close()


def test_a_writer_process_given_a_burst_of_sigterms_exits_and_is_replaced(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM (the parent-death signal, an operator) ends the writer process, however many arrive; the
    gateway starts another. (Its handler only sets a flag: one that called ``Event.set`` deadlocked when a
    signal interrupted it while the parent watch thread set the same event, and the process lived on.)
    """
    caplog.set_level(logging.INFO, logger="gateway")
    publisher = Publisher(mosquitto)
    gw = Gateway(gateway_settings(mosquitto, influx_db, prefix, tmp_path))
    gw.start()
    try:
        assert gw.wait_ready(15)
        first_pid = gw.writer_pid
        assert first_pid is not None
        writer = psutil.Process(first_pid)
        for _ in range(200):
            with contextlib.suppress(ProcessLookupError):
                os.kill(first_pid, signal.SIGTERM)
        writer.wait(20)  # raises psutil.TimeoutExpired if it hangs
        wait_for(lambda: gw.writer_restarts == 1, 30, what="a new writer process")
        readings = [bay(bay_id=f"AM-{i:03d}") for i in range(50)]
        publisher.send_many([(topic_of(prefix, m.device_id, "parking_bay"), encode(m)) for m in readings])
        wait_for(lambda: influx_db.count(M_PARKING_BAY) == 50, 20, what="readings stored by the new writer")
    finally:
        gw.stop()
        publisher.close()


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def test_metrics_and_late_points_of_the_writer_process_reach_the_intakes_listener_and_history_thread(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    """The writer process counts, times the writes and notes late points; /metrics (served by the intake
    process) and the history thread (also there) must see them."""
    publisher = Publisher(mosquitto)
    port = free_port()
    gw = Gateway(gateway_settings(mosquitto, influx_db, prefix, tmp_path, metrics_port=port, history_interval_s=0.2))
    gw.start()
    try:
        assert gw.wait_ready(15)
        assert gw.writer_pid is not None and gw.history is not None
        assert gw.history.ready.wait(30), "history set-up did not finish"
        fresh = [bay(bay_id=f"AM-{i:03d}") for i in range(40)]
        old = bay(bay_id="AM-999", observed_at=utcnow() - timedelta(minutes=30))  # too late for the CQs
        publisher.send_many([(topic_of(prefix, m.device_id, "parking_bay"), encode(m)) for m in [*fresh, old]])
        # 41 readings and the gateway's own retained status, all counted by the writer process.
        m = wait_for(
            lambda: (v := _scrape(port)).get("district_gateway_messages_acked_total", 0) >= 41 and v,
            20,
            what="the readings acknowledged, as /metrics says",
        )
        assert 41 <= m["district_gateway_messages_received_total"] == m["district_gateway_messages_accepted_total"]
        assert m["district_gateway_messages_acked_total"] == m["district_gateway_messages_received_total"]
        assert m["district_gateway_points_written_total"] >= 41  # and the gateway's own stats points
        # Batches that carried messages (stats-only ones are written and counted but have no ack to time).
        assert 1 <= m["district_gateway_batch_points_count"] <= m["district_gateway_batches_total"]
        assert m["district_gateway_batch_points_sum"] >= 41
        assert m["district_gateway_write_duration_seconds_count"] == m["district_gateway_batch_points_count"]
        assert m["district_gateway_ack_lag_seconds_count"] >= 1
        assert m["district_gateway_writer_process_cpu_seconds_total"] > 0
        assert m["district_gateway_writer_process_resident_memory_bytes"] > 0
        # The late reading's rollup buckets are rebuilt by the history thread of this process.
        wait_for(lambda: gw.history is not None and gw.history.backfills > 0, 20, what="a backfill of the late point")
    finally:
        gw.stop()
        publisher.close()
