"""A forecast whose schedule has stopped says so: ``stale`` once its ``made_at`` is more than twice the refresh
interval behind the service's clock, in the service and in what the forecast routes answer."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any, cast

import pytest

from server.forecast.service import ForecastService, ForecastState
from server.influx import InfluxClient
from server.routes.forecast import _meta
from tests.unit.server.test_alerts import make_site
from tests.unit.server.test_server_live import T0, FakeClock

REFRESH_S = 600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(clock: FakeClock) -> ForecastService:
    # No history is read here: the client is never used.
    return ForecastService(
        make_site(), cast(InfluxClient, None), is_holiday=lambda _d: False, clock=clock, refresh_s=REFRESH_S
    )


@pytest.mark.parametrize(
    ("age_s", "stale"),
    [(0, False), (REFRESH_S, False), (2 * REFRESH_S, False), (2 * REFRESH_S + 1, True), (10 * REFRESH_S, True)],
)
def test_a_forecast_is_stale_past_twice_the_refresh(
    service: ForecastService, clock: FakeClock, age_s: float, stale: bool
) -> None:
    made = ForecastState("insufficient_history", made_at=T0, detail="2.0 weeks of history")
    clock.advance(age_s)
    assert service.stale(made) is stale
    meta: dict[str, Any] = _meta(made, UTC, 3600, service)
    assert (meta["stale"], meta["refresh_s"]) == (stale, REFRESH_S)


def test_a_pending_forecast_is_not_stale_and_no_service_says_no_interval(
    service: ForecastService, clock: FakeClock
) -> None:
    clock.advance(timedelta(days=3).total_seconds())
    assert service.stale(ForecastState("pending")) is False
    assert service.stale(service.lots["L1"]) is False  # as the service starts: pending, never made
    meta = _meta(ForecastState("unavailable", detail="no InfluxDB"), UTC, 900, None)
    assert (meta["stale"], meta["refresh_s"]) == (False, None)
