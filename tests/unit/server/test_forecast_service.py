"""A forecast whose schedule has stopped says so: ``stale`` once its ``made_at`` is more than twice the refresh
interval behind the service's clock, in the service and in what the forecast routes answer. Guidance reads a
lot's forecast at two instants (``Forecast.mean_at``, ``occupancy_change``), and only a fresh ``ok`` one. A
failed refresh keeps the last ``ok`` forecast (until it is stale) and a failed history read is retried early."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pytest

from common.influxdb import InfluxError
from contracts.site import SiteConfig
from server.forecast.model import Forecast, ForecastError
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


def ok_state(made_at: datetime) -> ForecastState:
    return ForecastState("ok", made_at=made_at, history_from=made_at - timedelta(days=60),
                         result=quarter_forecast(made_at, [10.0, 20.0]))  # fmt: skip


class Fits:
    """Stands in for the service's per-lot refit: each call for lot L1 takes the next outcome (a state or an
    exception; the last repeats); the site's other lot (closed) has too little history."""

    def __init__(self, *outcomes: ForecastState | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self, lot_id: str, total: int, now: datetime) -> ForecastState:
        if lot_id != "L1":
            return ForecastState("insufficient_history", made_at=now, detail="closed")
        self.calls += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (InfluxError("connection refused"), "InfluxDB failed the history query: connection refused"),
        pytest.param(
            RuntimeError("a bug in a fit"), "forecast failed: RuntimeError",
            marks=pytest.mark.allow_logged_exceptions,  # logged with its traceback, as it must be
        ),
    ],
)  # fmt: skip
def test_a_failed_refresh_keeps_the_last_ok_forecast_and_says_so_until_it_is_stale(
    service: ForecastService, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, failure: Exception, cause: str
) -> None:
    good = ok_state(T0)
    monkeypatch.setattr(service, "_lot", Fits(good, failure))
    asyncio.run(service.refresh(only={("lot", "L1")}))
    assert service.lots["L1"] is good
    clock.advance(REFRESH_S)
    asyncio.run(service.refresh(only={("lot", "L1")}))
    kept = service.lots["L1"]
    assert (kept.status, kept.made_at, kept.result) == ("ok", T0, good.result)
    assert kept.detail == (
        f"the refresh at {(T0 + timedelta(seconds=REFRESH_S)).isoformat(timespec='seconds')} failed ({cause});"
        f" this is the forecast made at {T0.isoformat(timespec='seconds')}"
    )
    assert service.occupancy_change("L1", T0 + timedelta(minutes=7.5), T0 + timedelta(minutes=22.5)) == 10.0
    clock.advance(REFRESH_S + 1)  # now older than twice the refresh: stale, and guidance lets go of it
    assert service.stale(kept) and service.occupancy_change("L1", T0, T0 + timedelta(minutes=20)) is None
    assert service.failed == ({("lot", "L1")} if isinstance(failure, InfluxError) else set())


def test_a_failed_refresh_with_no_ok_forecast_before_is_unavailable_and_history_errors_replace_an_ok_one(
    service: ForecastService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "_lot", Fits(InfluxError("timed out")))
    asyncio.run(service.refresh(only={("lot", "L1")}))
    state = service.lots["L1"]
    assert (state.status, state.result, state.detail) == (
        "unavailable",
        None,
        "InfluxDB failed the history query: timed out",
    )
    # Not a failure of the refresh but what the history now says: it is answered, not papered over.
    monkeypatch.setattr(service, "_lot", Fits(ok_state(T0), ForecastError("insufficient_history", "2.0 weeks")))
    asyncio.run(service.refresh(only={("lot", "L1")}))
    asyncio.run(service.refresh(only={("lot", "L1")}))
    assert (service.lots["L1"].status, service.lots["L1"].detail) == ("insufficient_history", "2.0 weeks")
    assert service.failed == set()


def test_a_history_read_that_failed_is_retried_before_the_next_refresh(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = ForecastService(make_site(), cast(InfluxClient, None), is_holiday=lambda _d: False, clock=clock,
                              refresh_s=3600, retry_s=0.02)  # fmt: skip
    fits = Fits(InfluxError("refused"), InfluxError("refused"), ok_state(T0))
    monkeypatch.setattr(service, "_lot", fits)

    async def go() -> None:
        task = asyncio.create_task(service.run())
        try:
            async with asyncio.timeout(5):
                while service.lots["L1"].status != "ok":
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(go())
    assert fits.calls == 3 and service.runs == 1  # the first run, then two retries of L1 alone (after 0.02, 0.04 s)
    assert service.failed == set()
