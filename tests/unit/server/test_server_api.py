"""The HTTP API on injected live state (no broker, no database).

Requests go through httpx's ASGI transport: starlette's TestClient warns
(an error here) unless the separate ``httpx2`` package is installed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from contracts.site import SiteConfig
from server import models
from server.app import create_app
from server.live import BayReading, LiveState
from server.settings import ServerSettings

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)


def make_site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "parking": [
                {
                    "id": "L1",
                    "name": "One",
                    "coords": {"lat": 51.0, "lng": 13.7},
                    "address": "Street 1",
                    "lot_type": "underground",
                    "bays": {"prefix": "B", "count": 4},
                    "stale_after_s": 60,
                },
                {"id": "L2", "name": "Two", "coords": {"lat": 51.1, "lng": 13.8}, "bays": ["x"], "closed": True},
            ],
        }
    )


class FakeBroker:
    def __init__(self, connected: bool) -> None:
        self.connected = connected

    def health(self) -> models.BrokerHealth:
        return models.BrokerHealth(connected=self.connected, last_message_age_s=1.5, messages=7)


class FakeDatabase:
    def __init__(self, reachable: bool) -> None:
        self.reachable = reachable

    def health(self) -> models.DatabaseHealth:
        return models.DatabaseHealth(
            reachable=self.reachable,
            last_check_age_s=0.5,
            error=None if self.reachable else "ConnectError",
            bootstrapped=self.reachable,
        )


@pytest.fixture
def live() -> LiveState:
    state = LiveState(make_site(), clock=lambda: T0)
    state.apply_bay("L1", "B001", BayReading.of("free", T0 - timedelta(seconds=10), "r000000001"))
    state.apply_bay("L1", "B002", BayReading.of("occupied", T0 - timedelta(seconds=3), "r000000002"))
    state.apply_bay("L1", "B003", BayReading.of("free", T0 - timedelta(seconds=600), "r000000003"))  # stale
    return state


class Client:
    """A synchronous face on httpx's ASGI transport."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def get(self, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.get(path)

        return asyncio.run(go())


@pytest.fixture
def client(live: LiveState, tmp_path: Path) -> Client:
    settings = ServerSettings(site_config=tmp_path / "unused.yaml")
    return Client(create_app(settings, site=live.site, live=live, connect=False))


def test_lots_lists_every_lot_with_live_counts(client: Client) -> None:
    r = client.get("/v1/parking/lots")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    lots = r.json()
    assert [lot["id"] for lot in lots] == ["L1", "L2"]
    one = lots[0]
    assert {k: one[k] for k in ("total", "free", "occupied", "unknown", "state", "fresh", "age_s")} == {
        "total": 4,
        "free": 1,  # the stale free bay is not counted
        "occupied": 1,
        "unknown": 2,
        "state": "open",
        "fresh": True,
        "age_s": 3.0,
    }
    assert one["coords"] == {"lat": 51.0, "lng": 13.7}
    assert one["lot_type"] == "underground"
    assert one["observed_at"] == "2026-05-04T11:59:57Z"
    assert one["percent_free"] == 25.0
    assert lots[1]["state"] == "closed"


def test_one_lot_and_a_clear_404(client: Client) -> None:
    r = client.get("/v1/parking/lots/L1")
    assert r.status_code == 200
    assert r.json()["id"] == "L1"
    assert r.headers["cache-control"] == "no-store"
    r = client.get("/v1/parking/lots/nope")
    assert r.status_code == 404
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {"error": "not_found", "detail": "no parking lot 'nope' in site 's1'"}


def test_health_is_degraded_without_broker_and_database(client: Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"
    assert body["broker"]["connected"] is False
    assert body["database"]["reachable"] is False


@pytest.mark.parametrize(
    ("broker", "database", "code", "status"),
    [(True, True, 200, "ok"), (False, True, 503, "degraded"), (True, False, 503, "degraded")],
)
def test_health_follows_broker_and_database(
    client: Client, live: LiveState, broker: bool, database: bool, code: int, status: str
) -> None:
    from contracts import DeviceStatus

    live.apply_device_status(DeviceStatus(device_id="d1", observed_at=T0, reading_id="s000000001", state="online"))
    runtime = client.app.state.runtime
    runtime.broker = FakeBroker(broker)
    runtime.database = FakeDatabase(database)
    r = client.get("/healthz")
    assert r.status_code == code
    body = r.json()
    assert body["status"] == status
    assert body["site"] == "s1"
    assert body["broker"]["connected"] is broker
    assert body["broker"]["last_message_age_s"] == 1.5
    assert body["database"]["reachable"] is database
    assert body["database"]["last_check_age_s"] == 0.5
    assert body["devices"] == {"seen": 1, "by_state": {"online": 1}, "clock_offset_s": {"d1": 0.0}}
    assert r.headers["cache-control"] == "no-store"


def test_openapi_describes_every_endpoint(client: Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/v1/parking/lots", "/v1/parking/lots/{lot_id}", "/healthz"} <= set(paths)
    for path in paths.values():
        op = path["get"]
        assert op["summary"] and op["description"]
    one = paths["/v1/parking/lots/{lot_id}"]["get"]["responses"]
    assert one["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ParkingLot")
    assert one["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert paths["/healthz"]["get"]["responses"]["503"]
    lot_schema = spec["components"]["schemas"]["ParkingLot"]
    assert {"free", "occupied", "unknown", "state", "observed_at", "age_s", "fresh"} <= set(lot_schema["properties"])
    assert set(lot_schema["properties"]["state"]["enum"]) == {"open", "full", "closed", "nodata"}


def test_main_without_a_site_file_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.main import main

    monkeypatch.delenv("DISTRICT_SERVER_SITE_CONFIG", raising=False)
    assert main([]) == 2
    assert "site_config" in capsys.readouterr().err
