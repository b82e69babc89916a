"""The gateway's metrics: batch histograms from the writer, counters read from its stats, the HTTP listener."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from district.services import free_port
from gateway.metrics import GatewayMetrics
from gateway.pipeline import STOP, Stats
from tests.unit.gateway.test_pipeline import FakeWriter, accepted, rejected, run_writer


def metrics_for(stats: Stats, connected: bool = True) -> GatewayMetrics:
    return GatewayMetrics(
        client_id="gw-1",
        site_id="s",
        stats=lambda: stats.snapshot(queue_depth=7),
        queue_bound=20_000,
        confirmations=lambda: 12,
        connected=lambda: connected,
    )


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_each_written_batch_is_observed(tmp_path: Path) -> None:
    metrics = metrics_for(Stats())
    items = [accepted(1), rejected(2), accepted(3, "A002"), STOP]
    acks, _, _ = run_writer(items, FakeWriter(fail_times=1), tmp_path, observe=metrics.observe_batch)
    assert acks == [1, 2, 3]
    v = values(generate_latest(metrics.registry).decode())
    assert v[("district_gateway_batch_points_count", ())] == 1
    assert v[("district_gateway_batch_points_sum", ())] == 2
    assert v[("district_gateway_write_duration_seconds_count", ())] == 1  # the successful attempt only
    assert v[("district_gateway_ack_lag_seconds_count", ())] == 1
    assert 0 <= v[("district_gateway_ack_lag_seconds_sum", ())] < 10


def test_a_batch_of_rejects_only_has_an_ack_lag_but_no_write(tmp_path: Path) -> None:
    metrics = metrics_for(Stats())
    acks, _, _ = run_writer([rejected(1), STOP], FakeWriter(), tmp_path, observe=metrics.observe_batch)
    assert acks == [1]
    v = values(generate_latest(metrics.registry).decode())
    assert v[("district_gateway_ack_lag_seconds_count", ())] == 1
    assert v[("district_gateway_write_duration_seconds_count", ())] == 0


def test_the_collector_reads_the_stats_on_scrape() -> None:
    stats = Stats()
    metrics = metrics_for(stats)
    stats.count_received(None)
    stats.count_received(None)
    stats.count_received("not_json")
    stats.count_ignored("control")
    stats.add(written_points=2, acked=3, write_retries=1, batches=1)
    v = values(generate_latest(metrics.registry).decode())
    assert v[("district_gateway_messages_received_total", ())] == 3
    assert v[("district_gateway_messages_accepted_total", ())] == 2
    assert v[("district_gateway_messages_rejected_total", (("reason", "not_json"),))] == 1
    assert v[("district_gateway_messages_ignored_total", (("reason", "control"),))] == 1
    assert v[("district_gateway_points_written_total", ())] == 2
    assert v[("district_gateway_messages_acked_total", ())] == 3
    assert v[("district_gateway_write_retries_total", ())] == 1
    assert v[("district_gateway_confirmations_sent_total", ())] == 12
    assert v[("district_gateway_queue_depth", ())] == 7
    assert v[("district_gateway_queue_capacity", ())] == 20_000
    assert v[("district_gateway_mqtt_connected", ())] == 1
    assert v[("district_gateway_write_failing", ())] == 0
    assert v[("district_gateway_info", (("client_id", "gw-1"), ("site", "s")))] == 1
    stats.set_write_error("HTTP 401")
    stats.count_received(None)
    v = values(generate_latest(metrics.registry).decode())
    assert v[("district_gateway_write_failing", ())] == 1 and v[("district_gateway_messages_received_total", ())] == 4


def test_the_listener_serves_the_registry_and_stops() -> None:
    stats = Stats()
    stats.count_received(None)
    metrics = metrics_for(stats)
    port = free_port()
    metrics.serve("127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert values(text)[("district_gateway_messages_received_total", ())] == 1
    finally:
        metrics.close()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)
    except OSError:
        pass
    else:
        raise AssertionError("the listener still answers after close()")
