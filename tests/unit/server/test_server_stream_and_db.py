"""The MQTT handler and the database monitor, with fakes (no broker, no database)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.influxdb import InfluxError
from contracts import DeviceStatus, ParkingBayState, encode, storage, topics
from contracts.site import SiteConfig
from server.dbmonitor import DatabaseMonitor
from server.influx import BayRow, InfluxClient, last_bay_states_query
from server.live import BayReading, LiveState
from server.settings import ServerSettings
from server.stream import LiveStream

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
PREFIX = "district"


def make_site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "parking": [{"id": "L1", "name": "One", "coords": {"lat": 51.0, "lng": 13.7}, "bays": ["a", "b", "c"]}],
        }
    )


def bay(bay_id: str, status: str, at: datetime, rid: str) -> ParkingBayState:
    return ParkingBayState(device_id="d1", observed_at=at, reading_id=rid, lot_id="L1", bay_id=bay_id, status=status)  # type: ignore[arg-type]


@pytest.fixture
def live() -> LiveState:
    return LiveState(make_site(), clock=lambda: T0)


@pytest.fixture
def stream(live: LiveState, tmp_path: Path) -> LiveStream:
    return LiveStream(ServerSettings(site_config=tmp_path / "unused.yaml", topic_prefix=PREFIX), live)


def topic(kind: str = "parking_bay", site: str = "s1") -> str:
    return topics.build(PREFIX, site, "d1", kind)


# -- the MQTT handler -------------------------------------------------------------


def test_bad_messages_are_counted_and_do_not_stop_good_ones(stream: LiveStream, live: LiveState) -> None:
    good = bay("a", "free", T0, "r000000001")
    stream.handle(topic(), b"{not json")
    stream.handle(topic(), encode(bay("zz", "free", T0, "r000000002")))  # bay not on site
    stream.handle(topic(site="other"), encode(good))
    stream.handle(topic("status"), encode(good))  # kind mismatch
    stream.handle(topic(), encode(good))
    assert live.bay("L1", "a") == BayReading.from_message(good)
    health = stream.health()
    assert health.messages == 5
    assert health.rejected == {"not_json": 1, "unknown_entity": 1, "unknown_site": 1, "kind_mismatch": 1}
    assert health.last_message_age_s is not None and health.last_message_age_s < 5


def test_a_rejection_is_logged_once_per_reason_not_per_message(
    stream: LiveStream, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="server.stream"):
        for _ in range(50):
            stream.handle(topic(), b"garbage")
    assert stream.rejected["not_json"] == 50
    assert len([r for r in caplog.records if "not_json" in r.getMessage()]) == 1


@pytest.mark.allow_logged_exceptions
def test_a_handler_exception_is_logged_and_counted_not_raised(
    stream: LiveStream, live: LiveState, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Msg:
        topic = topic()
        payload = encode(bay("a", "free", T0, "r000000001"))

    def boom(message: Any) -> bool:
        raise RuntimeError("bug")

    monkeypatch.setattr(live, "apply_message", boom)
    with caplog.at_level(logging.ERROR, logger="server.stream"):
        stream._on_message(None, None, Msg())  # type: ignore[arg-type]
    assert stream.rejected["internal_error"] == 1
    assert any("handler failed" in r.getMessage() for r in caplog.records)


def test_device_status_is_kept(stream: LiveStream, live: LiveState) -> None:
    status = DeviceStatus(device_id="d1", observed_at=T0, reading_id="s000000001", state="degraded", reason="x")
    stream.handle(topic("status"), encode(status))
    assert live.devices()["d1"].status == status


def test_health_before_any_connection(stream: LiveStream) -> None:
    h = stream.health()
    assert (h.connected, h.last_message_age_s, h.messages) == (False, None, 0)


# -- InfluxDB client parsing (fake transport) ---------------------------------------


def fake_influx(handler: Any) -> tuple[InfluxClient, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://influx")
    return InfluxClient(http, "district"), http


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_last_bay_states_parses_rows_and_skips_bad_ones() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        series = [
            {"name": "parking_bay", "tags": {"lot": "L1", "bay": "a"}, "columns": ["time", "status", "reading_id"],
             "values": [[1_700_000_000_000_000_000, "free", "r1"]]},
            {"name": "parking_bay", "tags": {"lot": "L1", "bay": "b"}, "columns": ["time", "status", "reading_id"],
             "values": [[1_700_000_000_000_000_000, "bogus", "r2"]]},
            {"name": "parking_bay", "tags": {"lot": "L1"}, "columns": ["time", "status", "reading_id"],
             "values": [[1_700_000_000_000_000_000, "free", "r3"]]},
        ]  # fmt: skip
        return httpx.Response(200, json={"results": [{"statement_id": 0, "series": series}]})

    async def go() -> list[BayRow]:
        client, http = fake_influx(handler)
        async with http:
            return await client.last_bay_states("s1", 3600)

    rows = run(go())
    assert rows == [BayRow("L1", "a", "free", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), "r1")]
    params = seen[0].url.params
    assert params["db"] == "district" and params["epoch"] == "ns"
    assert params["q"] == last_bay_states_query("s1", 3600)
    assert '"parking_bay"' in params["q"] and "'s1'" in params["q"] and "3600s" in params["q"]


@pytest.mark.parametrize(
    ("status", "body", "needle"),
    [
        (200, {"results": [{"statement_id": 0, "error": "database not found: district"}]}, "database not found"),
        (400, {"error": "error parsing query"}, "HTTP 400"),
        (500, None, "no JSON"),
    ],
)
def test_query_errors_become_influx_errors(status: int, body: Any, needle: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, text="oops")
        return httpx.Response(status, json=body)

    async def go() -> None:
        client, http = fake_influx(handler)
        async with http:
            await client.query("SELECT 1")

    with pytest.raises(InfluxError, match=needle):
        run(go())


# -- the database monitor -------------------------------------------------------


class FakeInflux:
    def __init__(self) -> None:
        self.up = False
        self.rows: list[BayRow] = []
        self.queries = 0

    async def ping(self) -> None:
        if not self.up:
            raise InfluxError("ConnectError: refused")

    async def last_states(self, spec: storage.LastStates, site_id: str, window_s: float) -> list[BayRow]:
        """Bay rows for the bay query (counted in ``queries``); the site has no lockers."""
        if not self.up:
            raise InfluxError("ConnectError: refused")
        if spec is storage.BAY_HISTORY:
            self.queries += 1
            return self.rows
        return []

    async def footfall(self, site_id: str, window_s: float) -> list[object]:
        return []

    async def last_occupancy(self, site_id: str, window_s: float) -> list[object]:
        return []


def test_monitor_retries_the_bootstrap_until_it_succeeds_and_never_undoes_the_stream(live: LiveState) -> None:
    fake = FakeInflux()
    t = [100.0]
    monitor = DatabaseMonitor(fake, live, bootstrap_window_s=3600, interval_s=1, monotonic=lambda: t[0])  # type: ignore[arg-type]
    assert monitor.health().last_check_age_s is None

    run(monitor.check())
    h = monitor.health()
    assert (h.reachable, h.bootstrapped, h.last_check_age_s) == (False, False, 0.0)
    assert "refused" in (h.error or "")

    # Meanwhile the stream delivered a newer state for bay a.
    live.apply_bay("L1", "a", BayReading.of("occupied", T0, "stream0001"))
    fake.up = True
    fake.rows = [
        BayRow("L1", "a", "free", T0 - timedelta(minutes=5), "old0000001"),
        BayRow("L1", "b", "free", T0 - timedelta(minutes=5), "old0000002"),
        BayRow("L9", "x", "free", T0 - timedelta(minutes=5), "old0000003"),  # lot no longer configured
    ]
    t[0] = 102.5
    run(monitor.check())
    h = monitor.health()
    assert (h.reachable, h.bootstrapped, h.bootstrap_bays, h.error) == (True, True, 3, None)
    assert live.bay("L1", "a").status == "occupied"  # type: ignore[union-attr]
    assert live.bay("L1", "b").status == "free"  # type: ignore[union-attr]

    run(monitor.check())
    assert fake.queries == 1  # only after a good ping, and never again once it succeeded

    t[0] = 104.0
    assert monitor.health().last_check_age_s == 1.5
    fake.up = False
    run(monitor.check())
    assert monitor.health().reachable is False


def test_monitor_fills_gaps_the_stream_left_with_backoff_and_stops_when_complete(live: LiveState) -> None:
    """Start-up race: bootstrap before the gateway stored anything, subscribe after
    the edge published. The monitor fills the gaps from history, backing off."""
    fake = FakeInflux()
    fake.up = True
    t = [100.0]
    monitor = DatabaseMonitor(fake, live, bootstrap_window_s=3600, interval_s=1, monotonic=lambda: t[0])  # type: ignore[arg-type]
    run(monitor.check())  # bootstrap: nothing stored yet
    assert (monitor.bootstrapped, fake.queries, live.bay_count()) == (True, 1, 0)

    fake.rows = [BayRow("L1", "a", "free", T0, "gap0000001"), BayRow("L1", "b", "occupied", T0, "gap0000002")]
    t[0] = 100.5
    run(monitor.check())
    assert fake.queries == 1  # not due yet
    t[0] = 101.0
    run(monitor.check())
    assert (fake.queries, live.bay_count()) == (2, 2)
    t[0] = 102.5
    run(monitor.check())
    assert fake.queries == 2  # backed off: next after 2 s
    t[0] = 103.0
    fake.rows.append(BayRow("L1", "c", "free", T0, "gap0000003"))
    run(monitor.check())
    assert (fake.queries, live.bay_count(), monitor.gap_fills) == (3, 3, 2)
    t[0] = 1000.0
    run(monitor.check())
    assert fake.queries == 3  # every bay known: no more queries
