"""The pure formulas of footfall analytics and the k rule (server.analytics.maths, .privacy, .figures)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.storage import to_ns
from server.analytics import figures, maths
from server.analytics.privacy import Cell, publish, publish_cell, round_to_base, withhold_parts
from server.history import Window

T0 = datetime(2026, 3, 10, 9, tzinfo=UTC)


def test_capture_rate_is_entries_over_passers_by_and_undefined_without_passers() -> None:
    assert maths.capture_rate(30, 120) == 0.25
    assert maths.capture_rate(150, 100) == 1.5  # more came in than passed: shown, not capped
    assert maths.capture_rate(5, 0) is None


@pytest.mark.parametrize(
    ("entries", "exits", "start", "person_s", "end"),
    [
        # One person in at the first bucket, out at the third: half a bucket + a bucket + half a bucket.
        ([1, 0, 0], [0, 0, 1], 0, [150, 300, 150], 0),
        # Someone already inside at the start.
        ([0], [0], 2, [600], 2),
        # More exits than the zone held: clamped at 0 (a missed entry), never negative.
        ([0, 1], [3, 0], 1, [150, 150], 1),
        # No data counts as nobody crossing.
        ([None, 2], [None, None], 0, [0, 300], 2),
    ],
)
def test_occupancy_integral_by_trapezoids_from_cumulative_entries_minus_exits(
    entries: list[float | None], exits: list[float | None], start: float, person_s: list[float], end: float
) -> None:
    steps = maths.occupancy_integral(entries, exits, 300, start)
    assert [s.person_s for s in steps] == person_s
    assert steps[-1].end_occupancy == end


def test_occupancy_integral_rejects_mismatched_input() -> None:
    with pytest.raises(ValueError, match="equally long"):
        maths.occupancy_integral([1], [1, 2], 300)
    with pytest.raises(ValueError, match="positive"):
        maths.occupancy_integral([1], [1], 0)


def test_littles_law_gives_the_true_dwell_of_a_steady_stream() -> None:
    # 12 people every 5 minutes for 2 hours, each staying 30 minutes (6 buckets).
    ins = [12.0] * 24 + [0.0] * 6
    outs = [0.0] * 6 + [12.0] * 24
    steps = maths.occupancy_integral(ins, outs, 300)
    assert maths.dwell_time_s(sum(s.person_s for s in steps), sum(ins)) == pytest.approx(1800)
    assert maths.dwell_time_s(100, 0) is None


def test_net_arrivals_count_rises_only_and_not_across_gaps() -> None:
    assert maths.net_arrivals([10, 14, 12, None, 20, 25]) == [None, 4, 0, None, None, 5]


def test_percent_change() -> None:
    assert maths.percent_change(110, 100) == pytest.approx(10)
    assert maths.percent_change(50, 100) == pytest.approx(-50)
    assert maths.percent_change(5, 0) is None


def test_lagged_correlation_finds_the_lag_at_which_one_series_follows_the_other() -> None:
    x = [5, 20, 40, 10, 30, 15, 25, 50, 5, 35, 0, 0]
    y = [0, 0, *[2 * v for v in x[:-2]]]  # y follows x by two buckets
    lags = maths.lagged_correlation(x, y, 3)
    assert [c.lag for c in lags] == [0, 1, 2, 3]
    best = maths.best_lag(lags)
    assert best is not None and best.lag == 2 and best.r == pytest.approx(1.0)
    assert lags[2].pairs == 10


def test_lagged_correlation_is_none_with_too_few_pairs_or_a_constant_side() -> None:
    assert maths.lagged_correlation([1, None, 3], [1, 2, None], 0)[0].r is None
    assert maths.lagged_correlation([1, 2, 3, 4], [5, 5, 5, 5], 0)[0].r is None
    assert maths.best_lag(maths.lagged_correlation([1, 2, 3, 4], [5, 5, 5, 5], 1)) is None
    with pytest.raises(ValueError):
        maths.lagged_correlation([1], [1, 2], 0)


# -- the k rule --------------------------------------------------------------------------------------


def cell(i: int, crossings: float | None) -> Cell:
    start = T0 + timedelta(hours=i)
    return Cell(start, start + timedelta(hours=1), None if crossings is None else {"crossings": crossings})


@pytest.mark.parametrize(("n", "state"), [(0, "suppressed"), (9, "suppressed"), (10, "ok"), (11, "ok")])
def test_a_cell_below_k_is_suppressed_with_value_and_counts_withheld(n: int, state: str) -> None:
    shown = publish_cell(cell(0, n), figures.CROSSINGS, 10)
    assert shown["state"] == state
    if state == "ok":
        assert shown["value"] == n and shown["counts"] == {"crossings": n}
    else:
        assert shown["value"] is None and shown["counts"] is None


def test_a_cell_without_data_is_nodata_not_zero() -> None:
    shown = publish_cell(cell(0, None), figures.CROSSINGS, 10)
    assert shown == {**shown, "state": "nodata", "value": None, "counts": None}


def states(out: list[dict[str, object]]) -> list[tuple[object, int, int]]:
    """(state, first hour, hours) of each published cell."""
    return [
        (c["state"], int((c["start"] - T0) / timedelta(hours=1)), int((c["end"] - c["start"]) / timedelta(hours=1)))  # type: ignore[operator]
        for c in out
    ]


def test_runs_below_k_are_merged_into_a_wider_interval_until_they_reach_k() -> None:
    cells = [cell(0, 12), cell(1, 4), cell(2, 3), cell(3, 5), cell(4, 8), cell(5, 9), cell(6, None), cell(7, 30)]
    out = publish(cells, figures.CROSSINGS, 10, coarsen=True)
    assert states(out) == [("ok", 0, 1), ("coarsened", 1, 3), ("coarsened", 4, 2), ("nodata", 6, 1), ("ok", 7, 1)]
    assert out[1]["value"] == 12 and out[1]["counts"] == {"crossings": 12}
    assert out[2]["value"] == 17


def test_a_remainder_under_k_joins_the_nearest_published_cell_so_nothing_is_left_to_subtract() -> None:
    # 2 after a coarsened run, before a gap: joins the run before it.
    out = publish([cell(0, 4), cell(1, 7), cell(2, 2), cell(3, None), cell(4, 30)], figures.CROSSINGS, 10,
                  coarsen=True)  # fmt: skip
    assert states(out) == [("coarsened", 0, 3), ("nodata", 3, 1), ("ok", 4, 1)]
    assert out[0]["counts"] == {"crossings": 13}
    # At the start, before any published cell, across a gap: joins the next one, the gap inside the interval.
    out = publish([cell(0, 3), cell(1, None), cell(2, 20), cell(3, 1)], figures.CROSSINGS, 10, coarsen=True)
    assert states(out) == [("coarsened", 0, 4)]
    assert out[0]["counts"] == {"crossings": 24}
    # Whatever is published adds up to the total, so total minus the cells reveals nothing.
    counts = [5, None, 12, 3, 3, None, 40, 1, 0, 9, 2]
    out = publish([cell(i, n) for i, n in enumerate(counts)], figures.CROSSINGS, 10, coarsen=True)
    shown = sum(c["counts"]["crossings"] for c in out if c["counts"])  # type: ignore[index]
    assert shown == sum(n for n in counts if n is not None)
    assert all(c["state"] != "suppressed" for c in out)


def test_remainders_with_nothing_to_join_are_merged_together_or_stay_suppressed() -> None:
    out = publish([cell(0, 5), cell(1, None), cell(2, 6)], figures.CROSSINGS, 10, coarsen=True)
    assert states(out) == [("coarsened", 0, 3)]
    out = publish([cell(0, 3), cell(1, None), cell(2, 4)], figures.CROSSINGS, 10, coarsen=True)
    assert [c["state"] for c in out] == ["suppressed", "nodata", "suppressed"]
    assert all(c["value"] is None and c["counts"] is None for c in out)


def test_without_coarsening_every_cell_below_k_is_suppressed() -> None:
    out = publish([cell(0, 5), cell(1, 6)], figures.CROSSINGS, 10, coarsen=False)
    assert [c["state"] for c in out] == ["suppressed", "suppressed"]


def test_a_ratio_rests_on_the_smaller_of_its_counts_and_is_recomputed_when_coarsened() -> None:
    a = Cell(T0, T0 + timedelta(hours=1), {"entries": 6, "passers_by": 100})  # alone: 6 entries < k
    b = Cell(T0 + timedelta(hours=1), T0 + timedelta(hours=2), {"entries": 6, "passers_by": 20})
    out = publish([a, b], figures.CAPTURE_RATE, 10, coarsen=True)
    assert len(out) == 1 and out[0]["state"] == "coarsened"
    assert out[0]["value"] == pytest.approx(12 / 120)
    # Many entries but only 5 passers-by: still below k.
    assert publish_cell(Cell(T0, T0, {"entries": 50, "passers_by": 5}), figures.CAPTURE_RATE, 10)["state"] == (
        "suppressed"
    )


# -- figures -----------------------------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def test_capture_cells_take_a_missing_side_as_zero_and_no_side_as_no_data() -> None:
    window = Window(T0, T0 + timedelta(hours=3), "1h", BERLIN)
    starts = [to_ns(s) for s, _ in window.buckets()]
    cells = figures.capture_cells(window, {starts[0]: (5.0, 1.0)}, {starts[0]: (40.0, 60.0), starts[1]: (3.0, 0.0)})
    assert [c.counts for c in cells] == [{"entries": 5, "passers_by": 100}, {"entries": 0, "passers_by": 3}, None]


def test_zone_profile_averages_over_the_days_with_data() -> None:
    window = Window(T0, T0 + timedelta(days=8), "1h", BERLIN)  # T0 is 10:00 local on a Tuesday
    entries = {to_ns(T0): 20.0, to_ns(T0 + timedelta(days=7)): 40.0, to_ns(T0 + timedelta(days=1)): 5.0}
    hours, days = figures.zone_profile_cells(window, entries)
    assert hours[10].counts == {"entries": 65, "days": 3}
    assert days[1].counts == {"entries": 60, "days": 2}  # two Tuesdays
    assert days[2].counts == {"entries": 5, "days": 1}
    assert hours[9].counts is None
    published = publish(days, figures.ENTRIES_PER_DAY, 10, coarsen=False)
    assert published[1]["value"] == 30 and published[2]["state"] == "suppressed"
    assert figures.peak_label(published) == "tuesday"


# -- the zone history under the same rule ------------------------------------------------------------


def _hours(n: int) -> Window:
    return Window(T0, T0 + timedelta(hours=n), "1h", ZoneInfo("Europe/Berlin"))


def _zone_history(
    window: Window, per_hour: list[tuple[tuple[int, int], tuple[int, int]] | None], k: int = 10
) -> list[dict[str, object]]:
    """Zone history buckets for hourly ((north in, out), (south in, out)) crossings (None: no line reported)."""
    lines: dict[tuple[str, str], dict[int, tuple[float, float]]] = {("cam1", "north"): {}, ("cam1", "south"): {}}
    cameras: dict[str, dict[int, tuple[float, float]]] = {"cam1": {}}
    for (start, _), got in zip(window.buckets(), per_hour, strict=True):
        if got is not None:
            lines[("cam1", "north")][to_ns(start)] = (float(got[0][0]), float(got[0][1]))
            lines[("cam1", "south")][to_ns(start)] = (float(got[1][0]), float(got[1][1]))
            cameras["cam1"][to_ns(start)] = (120.0, 60.0)  # 2 people on average
    cells, line_keys, camera_keys = figures.zone_history_cells(window, lines, cameras)
    published = publish(cells, figures.ZONE_CROSSINGS, k, coarsen=True)
    return [figures.zone_history_bucket(c, line_keys, camera_keys, k) for c in published]


def test_zone_history_buckets_rest_on_their_crossings_in_and_out_on_all_lines() -> None:
    # 6 in + 4 out = 10 crossings: ok at k = 10, but every single count is under k: each one withheld.
    (ok,) = _zone_history(_hours(1), [((4, 2), (2, 2))])
    # The camera's mean estimate, 2 people, is under k too: withheld (it was shown as 2.0 before), never 0.
    assert ok["state"] == "ok" and (ok["entries"], ok["exits"]) == (None, None) and ok["occupancy_mean"] is None
    assert ok["withheld"] == ["entries", "exits", "occupancy_mean"]
    assert ok["lines"] == [
        {"camera": "cam1", "line": "north", "entries": None, "exits": None, "withheld": ["entries", "exits"]},
        {"camera": "cam1", "line": "south", "entries": None, "exits": None, "withheld": ["entries", "exits"]},
    ]
    # 9 crossings alone: suppressed, every count null and no line rows, never 0.
    (alone,) = _zone_history(_hours(1), [((4, 2), (2, 1))])
    assert alone == {"start": T0, "end": T0 + timedelta(hours=1), "state": "suppressed", "entries": None,
                     "exits": None, "withheld": [], "occupancy_mean": None, "lines": []}  # fmt: skip
    (nothing,) = _zone_history(_hours(1), [None])
    assert nothing["state"] == "nodata" and nothing["entries"] is None


def test_a_published_zone_bucket_shows_only_the_parts_that_reach_k_and_none_recoverable() -> None:
    # 30 in and 2 out on one line: the 30 shown, the 2 withheld (it was shown before).
    (one,) = _zone_history(_hours(1), [((30, 2), (0, 0))], k=10)
    # (The camera's mean estimate here is 2 people, under k: withheld in every bucket below.)
    assert (one["state"], one["entries"], one["exits"], one["withheld"]) == (
        "ok", 30, None, ["exits", "occupancy_mean"]
    )  # fmt: skip
    # north 30 in, south 0 in: the 0 is withheld, so the 30 is too (else 30 - 30 gives it); the total shown.
    assert one["lines"] == [
        {"camera": "cam1", "line": "north", "entries": None, "exits": None, "withheld": ["entries", "exits"]},
        {"camera": "cam1", "line": "south", "entries": None, "exits": None, "withheld": ["entries", "exits"]},
    ]
    # (25, 3) and (20, 0): entries all shown; exits 3 in all, under k: the whole exits group withheld.
    (two,) = _zone_history(_hours(1), [((25, 3), (20, 0))], k=10)
    assert (two["entries"], two["exits"], two["withheld"]) == (45, None, ["exits", "occupancy_mean"])
    assert [(r["entries"], r["exits"], r["withheld"]) for r in two["lines"]] == [
        (25, None, ["exits"]),
        (20, None, ["exits"]),
    ]
    # At k = 3 the same bucket shows the 3 exits, and the 0 beside them withholds the north 3 with it.
    (low,) = _zone_history(_hours(1), [((25, 3), (20, 0))], k=3)
    assert (low["entries"], low["exits"], low["withheld"]) == (45, 3, ["occupancy_mean"])
    assert [(r["entries"], r["exits"]) for r in low["lines"]] == [(25, None), (20, None)]


@pytest.mark.parametrize(
    ("total", "parts", "k", "expected"),
    [
        (30, [30], 10, (False, (False,))),  # one line: the part is the total
        (2, [2], 10, (True, (True,))),  # ... and is withheld with it
        (45, [25, 20], 10, (False, (False, False))),  # (25, 3), (20, 0): entries
        (3, [3, 0], 10, (True, (True, True))),  # ... exits: total under k, the whole group
        (41, [6, 5, 30], 10, (False, (True, True, False))),  # two small parts together reach k
        (49, [3, 4, 12, 30], 10, (False, (True, True, True, False))),  # 7 < k: the smallest shown (12) joins
        (56, [2, 12, 12, 30], 10, (False, (True, True, False, False))),  # a tie: the earlier line joins
        (30, [30, 0], 10, (False, (True, True))),  # a 0 is withheld too (rests on no one), so the 30 with it
        (9, [5, 4], 10, (True, (True, True))),  # total under k
        (10, [10], 10, (False, (False,))),  # exactly k is shown
        (5, [5, 0], 1, (False, (True, True))),  # k = 1: only a 0 is under k ...
        (5, [3, 2], 1, (False, (False, False))),  # ... so everything else shows
        (0, [0], 1, (True, (True,))),
        (0, [], 10, (True, ())),  # no lines: nothing to show
    ],
)
def test_withhold_parts_suppresses_under_k_then_enough_beside_them(
    total: int, parts: list[int], k: int, expected: tuple[bool, tuple[bool, ...]]
) -> None:
    assert withhold_parts(total, parts, k) == expected


@pytest.mark.parametrize(
    ("total", "parts", "k", "message"),
    [(10, [10], 0, "k must be"), (5, [6, -1], 10, "negative"), (-1, [], 10, "negative"), (10, [4, 5], 10, "sum")],
)
def test_withhold_parts_refuses_k_under_1_negative_counts_and_parts_that_do_not_add_up(
    total: int, parts: list[int], k: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        withhold_parts(total, parts, k)


@given(parts=st.lists(st.integers(min_value=0, max_value=40), max_size=6), k=st.integers(min_value=1, max_value=15))
def test_withhold_parts_shows_nothing_under_k_and_nothing_recoverable(parts: list[int], k: int) -> None:
    total = sum(parts)
    total_hidden, hidden = withhold_parts(total, parts, k)
    assert len(hidden) == len(parts)
    # (a) every shown figure rests on at least k people
    assert total_hidden or total >= k
    assert all(p >= k for p, h in zip(parts, hidden, strict=True) if not h)
    if total_hidden:
        assert all(hidden) and total < k  # a total is withheld only under k, and takes its parts along
    else:
        # (b) the total minus the shown parts: the withheld ones together, 0 (none) or at least k
        rest = sum(p for p, h in zip(parts, hidden, strict=True) if h)
        assert (rest == 0 and not any(hidden)) or rest >= k
        # nothing withheld that need not be: with every part at k or more, all are shown
        assert any(hidden) or all(p >= k for p in parts)


def test_a_weekday_peak_is_chosen_among_the_hours_that_reach_k_only() -> None:
    window = Window(T0, T0 + timedelta(days=1), "1h", ZoneInfo("Europe/Berlin"))  # a Tuesday, 10:00 local on
    at = [to_ns(s) for s, _ in window.buckets()]
    # 10:00 local: 9 entries, no exits (the busiest, but under k); 11:00: 8 in, 3 out (11 crossings).
    peaks = {name: (hour, cell) for name, hour, cell, _ in figures.zone_weekday_peaks(window, {
        at[0]: (9.0, 0.0), at[1]: (8.0, 3.0)}, 10)}  # fmt: skip
    hour, cell = peaks["tuesday"]
    assert hour == 11 and publish_cell(cell, figures.ZONE_PEAK_HOUR, 10)["value"] == 8.0
    # No hour reaches k: no hour is named, and the cell (the busiest) is suppressed.
    hour, cell = {n: (h, c) for n, h, c, _ in figures.zone_weekday_peaks(window, {at[0]: (9.0, 0.0)}, 10)}["tuesday"]
    assert hour is None and publish_cell(cell, figures.ZONE_PEAK_HOUR, 10)["state"] == "suppressed"
    hour, cell = {n: (h, c) for n, h, c, _ in figures.zone_weekday_peaks(window, {}, 10)}["monday"]
    assert hour is None and publish_cell(cell, figures.ZONE_PEAK_HOUR, 10)["state"] == "nodata"


@pytest.mark.parametrize(
    ("count", "base", "rounded"),
    # The nearest multiple of the base, a half up (an odd base has no half): conventional rounding.
    [(10, 10, 10), (14, 10, 10), (15, 10, 20), (24, 10, 20), (7, 5, 5), (8, 5, 10), (5, 1, 5), (4, 10, 0), (0, 3, 0)],
)
def test_round_to_base_gives_the_nearest_multiple_a_half_up(count: int, base: int, rounded: int) -> None:
    assert round_to_base(count, base) == rounded


@pytest.mark.parametrize(("count", "base", "message"), [(-1, 10, "negative"), (5, 0, "base"), (5, -10, "base")])
def test_round_to_base_refuses_a_negative_count_or_a_base_under_1(count: int, base: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        round_to_base(count, base)
