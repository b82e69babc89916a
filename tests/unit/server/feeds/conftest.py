"""One site with a lot in every state the feeds must tell apart, judged at T0.

* ``open``: underground, 4 bays, stale after 60 s: one fresh free, one fresh
  occupied, one free heard 600 s ago (stale: unknown, never free), one never heard.
* ``full``: garage, 3 bays, reserve 2: one free, two occupied, all fresh: full
  with 1 free, every bay known.
* ``closed``: surface, closed in the configuration, its one bay fresh and free.
* ``stale``: street, its only reading 120 s old (limit 60 s): nodata.
* ``never``: garage, never heard from: nodata without any time.
* ``my:lot``: a lot id with a colon, one fresh free bay ``b:1``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.site import SiteConfig
from server import models
from server.feeds.zones import ZoneSnapshot
from server.live import BayReading, LiveState

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)


def make_site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test site"},
            "zones": [
                {"id": "z-live", "name": "Market", "capacity": 200, "coords": {"lat": 51.05, "lng": 13.74}},
                {"id": "z-none", "name": "Arcade"},
            ],
            "parking": [
                {
                    "id": "open",
                    "name": "Open Garage",
                    "coords": {"lat": 51.0, "lng": 13.7},
                    "address": "Street 1",
                    "lot_type": "underground",
                    "zone": "z-live",
                    "bays": {"prefix": "B", "count": 4},
                    "stale_after_s": 60,
                },
                {
                    "id": "full",
                    "name": "Full House",
                    "coords": {"lat": 51.01, "lng": 13.71},
                    "lot_type": "garage",
                    "bays": ["a", "b", "c"],
                    "full_below": 2,
                    "stale_after_s": 60,
                },
                {
                    "id": "closed",
                    "name": "Closed Yard",
                    "coords": {"lat": 51.02, "lng": 13.72},
                    "lot_type": "surface",
                    "bays": ["x"],
                    "closed": True,
                },
                {
                    "id": "stale",
                    "name": "Stale Street",
                    "coords": {"lat": 51.03, "lng": 13.73},
                    "lot_type": "street",
                    "bays": ["s1", "s2"],
                    "stale_after_s": 60,
                },
                {"id": "never", "name": "Never Heard", "coords": {"lat": 51.04, "lng": 13.74}, "bays": ["n1"]},
                {"id": "my:lot", "name": "Colon", "coords": {"lat": 51.05, "lng": 13.75}, "bays": ["b:1"]},
            ],
        }
    )


def reading(status: str, age_s: float, n: int) -> BayReading:
    return BayReading.of(status, T0 - timedelta(seconds=age_s), f"r{n:09d}")


@pytest.fixture
def live() -> LiveState:
    state = LiveState(make_site(), clock=lambda: T0)
    for n, (lot, bay, status, age) in enumerate(
        [
            ("open", "B001", "free", 10),
            ("open", "B002", "occupied", 3),
            ("open", "B003", "free", 600),
            ("full", "a", "free", 5),
            ("full", "b", "occupied", 5),
            ("full", "c", "occupied", 4),
            ("closed", "x", "free", 1),
            ("stale", "s1", "free", 120),
            ("my:lot", "b:1", "free", 2),
        ],
        start=1,
    ):
        assert state.apply_bay(lot, bay, reading(status, age, n))
    return state


@pytest.fixture
def lots(live: LiveState) -> dict[str, models.ParkingLot]:
    return {lot.id: lot for lot in live.lots()}


LIVE_ZONE = ZoneSnapshot(
    id="z-live",
    name="Market",
    coords=models.Coords(lat=51.05, lng=13.74),
    capacity=200,
    occupancy=150,  # published by the zone store as a multiple of k
    occupancy_state="coarsened",
    occupancy_base=10,
    entries_15m=40,
    exits_15m=25,
    flow_state="ok",
    window_start=T0 - timedelta(minutes=15),
    window_end=T0,
    level="high",
    trend="filling",
    observed_at=T0 - timedelta(seconds=5),
    fresh=True,
)
