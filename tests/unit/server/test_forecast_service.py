"""A forecast whose schedule has stopped says so: ``stale`` once its ``made_at`` is more than twice the refresh
interval behind the service's clock, in the service and in what the forecast routes answer. Guidance reads a
lot's forecast at two instants (``Forecast.mean_at``, ``occupancy_change``), and only a fresh ``ok`` one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pytest

from contracts.site import SiteConfig
from server.forecast.model import Forecast
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


def quarter_forecast(start: datetime, means: list[float]) -> Forecast:
    m = np.array(means, dtype=np.float64)
    return Forecast(start=start, step=timedelta(minutes=15), mean=m, lower=m - 1, upper=m + 1, coverage=0.8)


def test_a_forecast_is_read_at_an_instant_between_its_steps_midpoints() -> None:
    fc = quarter_forecast(T0, [10.0, 20.0, 40.0])
    at = [fc.mean_at(T0 + timedelta(minutes=m)) for m in (0, 7.5, 15, 22.5, 30, 37.5, 44.99)]
    assert at == pytest.approx([10.0, 10.0, 15.0, 20.0, 30.0, 40.0, 40.0])
    assert fc.mean_at(T0 - timedelta(seconds=1)) is None and fc.mean_at(T0 + timedelta(minutes=45)) is None
    assert quarter_forecast(T0, [7.0]).mean_at(T0 + timedelta(minutes=14)) == 7.0


def test_occupancy_change_reads_a_fresh_ok_forecast_only(service: ForecastService, clock: FakeClock) -> None:
    fc = quarter_forecast(T0, [10.0, 20.0, 40.0])
    service.lots["L1"] = ForecastState("ok", made_at=T0, result=fc)
    assert service.occupancy_change("L1", T0 + timedelta(minutes=7.5), T0 + timedelta(minutes=30)) == 20.0
    assert service.occupancy_change("L1", T0 + timedelta(minutes=30), T0 + timedelta(minutes=7.5)) == -20.0
    assert service.occupancy_change("L1", T0, T0 + timedelta(minutes=50)) is None  # past its end
    assert service.occupancy_change("nope", T0, T0 + timedelta(minutes=5)) is None
    clock.advance(2 * REFRESH_S + 1)  # the schedule stopped: old figures are not used
    assert service.occupancy_change("L1", T0 + timedelta(minutes=7.5), T0 + timedelta(minutes=30)) is None
    clock.advance(-(2 * REFRESH_S + 1))
    service.lots["L1"] = ForecastState("insufficient_history", made_at=T0, detail="2 weeks")
    assert service.occupancy_change("L1", T0 + timedelta(minutes=7.5), T0 + timedelta(minutes=30)) is None


def test_a_zone_no_camera_counts_is_unavailable_not_waiting_for_history(clock: FakeClock) -> None:
    site = SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "zones": [{"id": "counted", "name": "Counted"}, {"id": "uncounted", "name": "Uncounted"}],
            "cameras": [{"id": "cam1", "device": "cam-node", "lines": [{"id": "door", "zone": "counted"}]}],
        }
    )
    service = ForecastService(site, cast(InfluxClient, None), is_holiday=lambda _d: False, clock=clock)
    state = asyncio.run(service._zone("uncounted", T0))  # no history is read: the client is never used
    assert (state.status, state.detail) == ("unavailable", "no camera line counts into this zone (site configuration)")
    with pytest.raises(AttributeError):  # the counted zone does read history (here: from no client at all)
        asyncio.run(service._zone("counted", T0))
