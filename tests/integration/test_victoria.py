"""The gateway's VictoriaMetrics sink against real Mosquitto, InfluxDB 1.x and victoria-metrics.

Readings go through the real gateway (its writer process builds the sinks
from settings) and are read back from VictoriaMetrics' ``/api/v1/export``:
every reading lands once, also when it was published twice, and beside
InfluxDB in fan-out; with VictoriaMetrics down nothing is acknowledged and
nothing lost.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import LockerCompartmentState, ParkingBayState, encode, new_reading_id, topics, utcnow
from contracts.storage import M_PARKING_BAY
from district.services import Service, ServiceError, VictoriaMetrics, find_binary
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from gateway.victoria import VictoriaSink, VictoriaWriter
from tests.conftest import Influx, mqtt_access, need, wait_for
from tests.integration.test_gateway import Publisher, run_gateway  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    need(
        find_binary(VictoriaMetrics.BINARY) is not None,
        "victoria-metrics is not installed (apt-get install victoria-metrics)",
    )
    try:
        svc = VictoriaMetrics.start(tmp_path_factory.mktemp("victoria"))
    except ServiceError as exc:
        pytest.fail(str(exc))
    yield svc
    svc.stop()


class Vm:
    """Reads VictoriaMetrics back for assertions (the product writes only)."""

    def __init__(self, svc: Service) -> None:
        self.url = f"http://{svc.host}:{svc.port}"

    def export(self, match: str) -> list[dict[str, Any]]:
        """``/api/v1/export`` after a flush of its buffers: one dict per series (metric, values, timestamps)."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10) as r:
            return [json.loads(line) for line in r.read().splitlines() if line.strip()]

    def samples(self, match: str) -> list[tuple[tuple[tuple[str, str], ...], int, float]]:
        """Every sample as (labels, ms, value), sorted."""
        out = []
        for series in self.export(match):
            labels = tuple(sorted(series["metric"].items()))
            out += [(labels, t, v) for t, v in zip(series["timestamps"], series["values"], strict=True)]
        return sorted(out)


def settings_for(mosquitto: Service, prefix: str, tmp_path: Path, **over: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        **mqtt_access(mosquitto).settings(),
        "mqtt_client_id": f"gw-{prefix}",
        "topic_prefix": prefix,
        "flush_interval_s": 0.05,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.5,
        "history": False,
        "dead_letter_path": tmp_path / "dead.jsonl",
    }
    return GatewaySettings.model_validate(values | over)


def readings(prefix: str, site: str, n: int, bays: int = 20) -> list[tuple[str, bytes]]:
    """``n`` bay readings of ``bays`` bays, 10 ms apart (distinct milliseconds: VictoriaMetrics' resolution)."""
    t0 = utcnow() - timedelta(minutes=5)
    out = []
    for i in range(n):
        reading = ParkingBayState(
            device_id="edge-vm",
            observed_at=t0 + timedelta(milliseconds=10 * i),
            reading_id=new_reading_id(),
            lot_id="lot-vm",
            bay_id=f"B{i % bays:03d}",
            status="occupied" if i % 3 else "free",
        )
        out.append((topics.build(prefix, site, "edge-vm", "parking_bay"), encode(reading)))
    return out


def test_fan_out_stores_every_reading_once_in_both_stores(
    mosquitto: Service,
    influx_db: Influx,
    victoria: Service,
    prefix: str,
    tmp_path: Path,
    run_gateway: Callable[[GatewaySettings], Gateway],  # noqa: F811
) -> None:
    site = f"{prefix}-site"
    settings = settings_for(
        mosquitto,
        prefix,
        tmp_path,
        sinks="influxdb,victoriametrics",
        influx_url=influx_db.url,
        influx_db=influx_db.db,
        vm_url=f"http://{victoria.host}:{victoria.port}",
    )
    gw = run_gateway(settings)
    sent = readings(prefix, site, 300)
    locker = LockerCompartmentState(
        device_id="lockers-vm",
        observed_at=utcnow() - timedelta(minutes=1),
        reading_id=new_reading_id(),
        bank_id="bank-vm",
        compartment_id="S01",
        status="out_of_service",
        door="open",
    )
    pub = Publisher(mosquitto)
    try:
        pub.send_many(sent)
        pub.send_many(sent[:100])  # a replay: the very same bytes again
        pub.send(topics.build(prefix, site, "lockers-vm", "locker"), encode(locker))
    finally:
        pub.close()
    wait_for(lambda: gw.stats().acked >= 401, 30, what="every message acknowledged")
    assert gw.stats().dropped_points == 0

    vm = Vm(victoria)
    occupied = wait_for(
        lambda: (s := vm.samples(f'{M_PARKING_BAY}_occupied{{site="{site}"}}')) and len(s) >= 300 and s,
        30,
        what="300 samples in VictoriaMetrics",
    )
    assert len(occupied) == 300, "each reading once, the replayed ones too"
    assert len({(labels, ms) for labels, ms, _ in occupied}) == 300
    assert {dict(labels)["bay"] for labels, _, _ in occupied} == {f"B{i:03d}" for i in range(20)}
    assert sum(v for _, _, v in occupied) == sum(1 for i in range(300) if i % 3)
    # The state word as an OpenMetrics StateSet: 4 bay states per reading, exactly one of them 1.
    states = vm.samples(f'{M_PARKING_BAY}_status{{site="{site}"}}')
    assert len(states) == 4 * 300 and sum(v for _, _, v in states) == 300
    assert not vm.export(f'{{__name__=~"{M_PARKING_BAY}_reading_id",site="{site}"}}'), "free text stays out"
    door = vm.samples(f'locker_compartment_door{{site="{site}",locker_compartment_door="open"}}')
    assert [v for _, _, v in door] == [1]
    # InfluxDB holds the same readings, once each.
    assert influx_db.count(M_PARKING_BAY, where=f"WHERE site = '{site}'") == 300


def test_nothing_is_acknowledged_while_victoria_metrics_is_down_and_nothing_lost(
    mosquitto: Service,
    prefix: str,
    tmp_path: Path,
    run_gateway: Callable[[GatewaySettings], Gateway],  # noqa: F811
) -> None:
    need(find_binary(VictoriaMetrics.BINARY) is not None, "victoria-metrics is not installed")
    own = VictoriaMetrics.start(tmp_path / "vm")
    port = own.port
    try:
        site = f"{prefix}-site"
        settings = settings_for(mosquitto, prefix, tmp_path, sinks="victoriametrics", vm_url=f"http://127.0.0.1:{port}")
        gw = run_gateway(settings)
        sent = readings(prefix, site, 100)
        first, second = sent[:50], sent[50:]
        pub = Publisher(mosquitto)
        try:
            pub.send_many(first)
            wait_for(lambda: gw.stats().acked >= 50, 20, what="the first 50 acknowledged")
            own.stop()  # a clean stop flushes: what was acknowledged is on disk
            pub.send_many(second)
            wait_for(lambda: gw.stats().write_retries >= 2, 20, what="the gateway retrying the write")
            assert gw.stats().acked < 100, "acknowledged while the store was down"
            own = VictoriaMetrics.start(tmp_path / "vm", port=port)
            wait_for(lambda: gw.stats().acked >= 100, 30, what="the rest acknowledged once it is back")
        finally:
            pub.close()
        vm = Vm(own)
        got = wait_for(
            lambda: (s := vm.samples(f'{M_PARKING_BAY}_occupied{{site="{site}"}}')) and len(s) >= 100 and s,
            30,
            what="100 samples",
        )
        assert len(got) == 100
    finally:
        own.stop()


def test_the_sink_reads_whether_the_server_deduplicates(victoria: Service, tmp_path: Path) -> None:
    sink = VictoriaSink(VictoriaWriter(f"http://{victoria.host}:{victoria.port}"))
    try:
        assert sink.dedup_interval() == "1ms" and sink.warn_unless_deduplicating()
    finally:
        sink.close()
    plain = VictoriaMetrics.start(tmp_path / "plain", dedup=None)
    sink = VictoriaSink(VictoriaWriter(f"http://{plain.host}:{plain.port}"))
    try:
        assert sink.dedup_interval() in ("0s", "0") and not sink.warn_unless_deduplicating()
    finally:
        sink.close()
        plain.stop()
