"""The demo's flapping window: at 60x, ordinary turnover must not read as flapping, a flapping sensor must.

The demo once raised 122 ``bay_flapping`` alerts within 3 minutes (Centrum-Galerie's ordinary traffic at
``--speed 60`` against the server's 600 s window). Here the fleet's own demand model drives a lot at 60x
through the real alert engine, once with the default window and once with the demo's.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from contracts import ParkingBayState
from contracts.site import SiteConfig
from district.demo import flap_window_s
from firmware_sim.demand import LotDemand
from server.alerts import FLAP_CHANGES, FLAP_WINDOW_S, AlertEngine
from server.live import LiveState
from tests.unit.server.test_server_live import FakeClock

BAYS = 300
SPEED = 60.0
POLL_S = 0.5  # the demo's edge polls its bus every 0.5 s (district.demo.edge_config)
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def make_live(clock: FakeClock) -> LiveState:
    site = SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "parking": [{"id": "L1", "name": "One", "coords": {"lat": 51.0, "lng": 13.7},
                         "bays": {"prefix": "B", "count": BAYS}}],
            "devices": [{"id": "dev1", "kind": "bay_controller", "heartbeat_s": 10}],
        }
    )  # fmt: skip
    return LiveState(site, clock)


def flapping_alerts(window_s: float, *, faulty_bay: int | None = None, real_minutes: int = 20) -> set[str]:
    """Every bay flagged as flapping while the fleet's demand runs ``real_minutes`` at 60x (seeded)."""
    clock = FakeClock(T0)
    live = make_live(clock)
    engine = AlertEngine(live, flap_window_s=window_s)
    demand = LotDemand("L1", BAYS, target=lambda now: 0.85, rng=random.Random(7))
    n = 0

    def report(i: int, occupied: bool) -> None:
        nonlocal n
        n += 1
        msg = ParkingBayState(
            device_id="dev1", observed_at=clock.now, reading_id=f"r{n:09d}", lot_id="L1", bay_id=f"B{i + 1:03d}",
            status="occupied" if occupied else "free",
        )  # fmt: skip
        live.apply(msg, clock.now)

    sim_t = T0
    for i, occupied in demand.fill(sim_t):
        report(i, occupied)
    seen: set[str] = set()
    steps = int(real_minutes * 60 / POLL_S)
    for step in range(steps):
        clock.advance(POLL_S)
        sim_t = T0 + (clock.now - T0) * SPEED
        for i, occupied in demand.step(sim_t, POLL_S * SPEED):
            report(i, occupied)
        if faulty_bay is not None and step >= steps - 40:  # the last 20 s: a sensor flipping at every poll
            report(faulty_bay, step % 2 == 0)
        if step % 10 == 0:  # the engine evaluates every 5 s
            engine.evaluate()
            seen |= {a.subject.id for a in engine.alerts() if a.kind == "bay_flapping"}
    assert demand.arrivals > 100 * real_minutes, (
        "the demand model drove too little traffic for the test to mean anything"
    )
    return seen


def test_the_window_shrinks_with_the_speed_to_the_same_simulated_span() -> None:
    assert flap_window_s(60) == pytest.approx(FLAP_WINDOW_S / 60)
    assert flap_window_s(1) == flap_window_s(0.5) == flap_window_s(0) == FLAP_WINDOW_S
    assert flap_window_s(100_000) == 5.0  # never shorter than one evaluation


def test_ordinary_turnover_at_60x_floods_the_default_window_and_not_the_demos() -> None:
    assert len(flapping_alerts(FLAP_WINDOW_S)) > 10  # the fault: ordinary bays flagged (FLAP_CHANGES changes)
    assert flapping_alerts(flap_window_s(SPEED)) == set()


def test_a_sensor_flapping_at_every_poll_is_still_caught_with_the_demos_window() -> None:
    assert FLAP_CHANGES <= 20
    assert flapping_alerts(flap_window_s(SPEED), faulty_bay=0, real_minutes=5) == {"L1.B001"}
