"""bench/forecast/arrival.py's four projections of the free bays at an arrival, on a case worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.forecast.arrival import projections

Q = datetime(2016, 6, 15, 9, tzinfo=UTC)


def rising(t: datetime) -> float:
    """A forecast of free bays rising by one a minute from 20 at Q."""
    return 20.0 + (t - Q).total_seconds() / 60


def test_each_projection_as_its_docstring_says() -> None:
    # 40 free a window (15 min) ago, 50 now: +10 per window. Arrival in 30 min.
    got = projections(50.0, 40.0, 30, rising, Q, 100.0)
    assert got == pytest.approx({"hold": 50.0, "trend": 70.0, "trend_then_forecast": 75.0, "forecast": 80.0})
    # Clamped to the lot's bays, and to 0.
    assert max(projections(50.0, 40.0, 30, rising, Q, 60.0).values()) == 60.0
    assert projections(5.0, 40.0, 30, lambda t: 100 - rising(t), Q, 100.0)["trend_then_forecast"] == 0.0


def test_without_a_forecast_the_forecast_terms_fall_back_as_guidance_does() -> None:
    got = projections(50.0, 40.0, 60, lambda _t: None, Q, 100.0)
    assert got["trend_then_forecast"] == got["trend"] == got["forecast"] == 90.0 and got["hold"] == 50.0
