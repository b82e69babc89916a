"""Demand model: drift toward the target, reproducibility, curve loading, fallback, lockers."""

from __future__ import annotations

import itertools
import random
import statistics
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware_sim.demand import (
    LockerDemand,
    LotDemand,
    OccupancyCurve,
    SimClock,
    fallback_percent,
    load_targets,
)

TZ = ZoneInfo("Europe/Berlin")


def run_lot(demand: LotDemand, start: datetime, steps: int, dt: float = 30.0) -> list[int]:
    now = start
    counts = []
    for _ in range(steps):
        now += timedelta(seconds=dt)
        demand.step(now, dt)
        counts.append(len(demand.parked))
    return counts


@pytest.mark.parametrize("target", [0.1, 0.5, 0.9])
def test_occupancy_drifts_to_a_constant_target_from_empty(target: float) -> None:
    demand = LotDemand("lot", 400, lambda _when: target, random.Random(7))
    counts = run_lot(demand, datetime(2025, 6, 10, 8, tzinfo=TZ), 3000)
    # Empty at first, then within a few time constants it holds the target with noise.
    assert counts[0] < 0.5 * target * 400
    settled = counts[600:]
    assert abs(statistics.mean(settled) - target * 400) < 0.04 * 400
    assert statistics.pstdev(settled) > 0, "a real lot churns"
    assert demand.arrivals > 400 and demand.departures > 300


def test_occupancy_follows_a_falling_target_by_early_departures() -> None:
    level = {"v": 0.95}
    demand = LotDemand("lot", 300, lambda _when: level["v"], random.Random(3))
    start = datetime(2025, 6, 10, 12, tzinfo=TZ)
    demand.fill(start)
    assert abs(len(demand.parked) - 285) <= 1
    level["v"] = 0.2
    counts = run_lot(demand, start, 240)  # two simulated hours
    assert counts[-1] < 0.3 * 300


def test_fill_and_steps_only_use_usable_bays() -> None:
    demand = LotDemand("lot", 50, lambda _when: 1.0, random.Random(1))
    start = datetime(2025, 6, 10, 12, tzinfo=TZ)
    blocked = {0, 1, 2, 49}
    changes = demand.fill(start, lambda i: i not in blocked)
    assert len(changes) == 46
    now = start
    for _ in range(100):
        now += timedelta(seconds=60)
        for index, occupied in demand.step(now, 60, lambda i: i not in blocked):
            assert not (occupied and index in blocked)


def test_same_seed_same_run_other_seed_other_run() -> None:
    start = datetime(2025, 6, 10, 9, tzinfo=TZ)

    def trace(seed: int) -> list[list[tuple[int, bool]]]:
        demand = LotDemand("lot", 200, lambda _when: 0.6, random.Random(seed))
        out = [demand.fill(start)]
        now = start
        for _ in range(200):
            now += timedelta(seconds=30)
            out.append(demand.step(now, 30))
        return out

    assert trace(42) == trace(42)
    assert trace(42) != trace(43)


def write_curve(path: Path, days: dict[str, list[float]]) -> None:
    lines = []
    for day, values in days.items():
        for slot, value in enumerate(values):
            h, m = divmod(slot * 15, 60)
            lines.append(f"{day}T{h:02d}:{m:02d}:00,{value:g}")
    path.write_text("\n".join(lines) + "\n")


def test_curve_loading_interpolates_and_clips(tmp_path: Path) -> None:
    path = tmp_path / "lot.csv"
    # 2016-06-13 is a Monday, 2016-06-18 a Saturday.
    write_curve(path, {"2016-06-13": [float(i) for i in range(96)], "2016-06-18": [111.0] * 96})
    with path.open("a") as f:
        f.write("garbage\n2016-06-13T99:00:00,5\n2016-06-14T00:00:00,nan\n")
    curve = OccupancyCurve.from_csv(path)
    assert set(curve.days) == {date(2016, 6, 13), date(2016, 6, 18)}
    monday = datetime(2025, 11, 24, 2, 0, tzinfo=TZ)  # a Monday: slot 8
    assert curve.percent(monday) == pytest.approx(8.0)
    assert curve.percent(monday + timedelta(minutes=7, seconds=30)) == pytest.approx(8.5)
    saturday = datetime(2025, 11, 22, 12, 0, tzinfo=TZ)
    assert curve.percent(saturday) == 100.0, "111 % in the source is clipped"
    assert curve.fraction(saturday) == 1.0


def test_curve_gaps_are_filled(tmp_path: Path) -> None:
    path = tmp_path / "lot.csv"
    path.write_text("2016-06-13T00:00:00,10\n2016-06-13T01:00:00,50\n")
    curve = OccupancyCurve.from_csv(path)
    slots = curve.days[date(2016, 6, 13)]
    assert slots[:5] == pytest.approx([10, 20, 30, 40, 50])
    assert slots[-1] == 50


def test_day_mapping_keeps_the_weekday_and_the_season(shared_dir: Path) -> None:
    curve = OccupancyCurve.from_csv(shared_dir / "data/parking/parkapi-dresden/forecast_data/dresdenaltmarkt.csv")
    for day in (date(2025, 11, 22), date(2026, 3, 2), date(2024, 2, 29), date(2030, 7, 14)):
        mapped = curve.day_for(day)
        assert mapped.weekday() == day.weekday()
        assert abs((mapped.replace(year=2000) - day.replace(year=2000, day=min(day.day, 28))).days) <= 10
    # A Saturday afternoon in a shopping garage is busier than the small hours.
    assert curve.percent(datetime(2025, 11, 22, 14, tzinfo=TZ)) > curve.percent(datetime(2025, 11, 22, 4, tzinfo=TZ))


def test_targets_from_the_data_dir_and_fallbacks(tmp_path: Path) -> None:
    folder = tmp_path / "forecast_data"
    folder.mkdir()
    write_curve(folder / "known.csv", {"2016-06-13": [40.0] * 96})
    (folder / "broken.csv").write_text("not,a,curve\n")
    targets = load_targets(tmp_path, ["known", "missing", "broken"])
    assert targets["known"][1].endswith("known.csv")
    assert targets["missing"][1] == "built-in"
    assert targets["broken"][1] == "built-in"
    when = datetime(2025, 11, 24, 14, tzinfo=TZ)
    assert targets["known"][0](when) == pytest.approx(0.4)
    assert targets["missing"][0](when) == pytest.approx(fallback_percent(when) / 100)
    # The folder itself is accepted too; a missing dir means built-in for all.
    assert load_targets(folder, ["known"])["known"][1].endswith("known.csv")
    assert load_targets(tmp_path / "nope", ["known"])["known"][1] == "built-in"
    assert load_targets(None, ["known"])["known"][1] == "built-in"


def test_fallback_shape() -> None:
    monday, saturday, sunday = (datetime(2025, 11, d, tzinfo=TZ) for d in (24, 29, 30))
    for day in (monday, saturday, sunday):
        assert fallback_percent(day.replace(hour=3)) < 10
    assert 60 < fallback_percent(monday.replace(hour=15)) <= 100
    assert fallback_percent(saturday.replace(hour=13)) > fallback_percent(monday.replace(hour=13))
    assert fallback_percent(sunday.replace(hour=14)) < 25
    # Smooth: no jump over 8 points in 15 minutes (ParkAPI curves rise ~6 points per 15 min at opening).
    values = [fallback_percent(monday + timedelta(minutes=15 * i)) for i in range(96)]
    assert max(abs(a - b) for a, b in itertools.pairwise(values)) < 8


def test_sim_clock_speed_and_naive_start() -> None:
    t = {"now": 100.0}
    clock = SimClock(60, TZ, datetime(2025, 11, 24, 10, 0), monotonic=lambda: t["now"])
    assert clock.now() == datetime(2025, 11, 24, 10, 0, tzinfo=TZ)
    t["now"] += 2.0
    assert clock.now() == datetime(2025, 11, 24, 10, 2, tzinfo=TZ)
    frozen = SimClock(0, TZ, monotonic=lambda: t["now"])
    first = frozen.now()
    t["now"] += 50
    assert frozen.now() == first
    with pytest.raises(ValueError):
        SimClock(-1, TZ)


def locker_day(seed: int, day: date) -> tuple[LockerDemand, list[tuple[datetime, int, bool, bool]]]:
    demand = LockerDemand("bank", ["S"] * 12 + ["M"] * 8 + ["L"] * 4, random.Random(seed), TZ)
    now = datetime.combine(day, datetime.min.time(), TZ)
    events = []
    for _ in range(24 * 60):
        now += timedelta(minutes=1)
        events += [(now, i, occ, door) for i, occ, door in demand.step(now)]
    return demand, events


def test_lockers_deliver_in_the_morning_and_pick_up_later() -> None:
    demand, events = locker_day(5, date(2025, 11, 24))  # a Monday
    assert demand.delivered > 5
    assert 0 < demand.picked_up <= demand.delivered
    deliveries = [t for t, _i, occ, door in events if door and not occ]
    assert deliveries and all(7 <= t.hour < 11 for t in deliveries)
    pickups = [t for t, _i, occ, door in events if door and occ]
    assert all(8 <= t.hour <= 21 for t in pickups)
    # Every door that opens closes again, soon.
    opened: dict[int, datetime] = {}
    for t, i, _occ, door in events:
        if door:
            opened[i] = t
        elif i in opened:
            assert t - opened.pop(i) <= timedelta(minutes=2)
    assert not opened


def test_lockers_no_deliveries_on_sunday_and_reproducible() -> None:
    demand, _events = locker_day(5, date(2025, 11, 30))
    assert demand.delivered == 0
    assert locker_day(9, date(2025, 11, 25))[1] == locker_day(9, date(2025, 11, 25))[1]
