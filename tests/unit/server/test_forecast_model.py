"""The forecast model on synthetic series whose shape is known: it learns the week and the holidays,
its intervals cover about what they claim, and bad input is refused with a code."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from server.forecast import model
from server.forecast.model import (
    FEATURES,
    Forecast,
    ForecastError,
    ModelConfig,
    _conformal_quantiles,
    _design,
    _features,
    _level,
    calendar,
    forecast,
    holiday_calendar,
    point_forecast,
    seasonal_naive,
)

TZ = ZoneInfo("Europe/Berlin")
START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
HOLIDAY = date(2025, 3, 5)  # a Wednesday in the forecast window below


def synthetic(weeks: int, seed: int = 1, holidays: frozenset[date] = frozenset()) -> np.ndarray:
    """Hourly Poisson counts: a daily bump peaking at 13:00, Sundays at 30 %, holidays like Sundays."""
    rng = np.random.default_rng(seed)
    n = weeks * 168
    out = np.empty(n)
    for i in range(n):
        local = (START + timedelta(hours=i)).astimezone(TZ)
        day = 0.3 if local.weekday() == 6 or local.date() in holidays else 1.0
        out[i] = rng.poisson(200 * day * np.exp(-((local.hour - 13) ** 2) / 18) + 5)
    return out


def test_beats_seasonal_naive_and_covers() -> None:
    hols = frozenset({HOLIDAY, date(2025, 2, 5)})
    y = synthetic(9, holidays=hols)
    origin = int((datetime(2025, 3, 5, tzinfo=TZ) - START).total_seconds() // 3600)  # holiday at the origin
    fc = forecast(y[:origin], START, 48, tz=TZ, is_holiday=lambda d: d in hols)
    actual = y[origin : origin + 48]
    naive = seasonal_naive(y[:origin], 48, 168)
    assert fc.start == START + timedelta(hours=origin)
    assert np.mean(np.abs(fc.mean - actual)) < 0.6 * np.mean(np.abs(naive - actual))
    inside = np.mean((actual >= fc.lower) & (actual <= fc.upper))
    assert 0.6 <= inside <= 1.0
    assert np.all(fc.lower <= fc.mean) and np.all(fc.mean <= fc.upper) and np.all(fc.lower >= 0)


def test_upper_bound_clips_a_lot() -> None:
    y = np.clip(synthetic(6) / 2, 0, 100)
    cfg = ModelConfig(steps_per_day=24)
    fc = forecast(y, START, 24, tz=TZ, is_holiday=lambda _d: False, cfg=cfg, upper=100.0)
    assert fc.upper.max() <= 100.0 and fc.lower.min() >= 0.0


@pytest.mark.parametrize(
    ("values", "horizon", "code"),
    [
        (np.ones(3 * 168), 48, "insufficient_history"),
        (np.full(6 * 168, np.nan), 48, "insufficient_history"),
        (np.ones(6 * 168), 0, "bad_input"),
        (np.ones(6 * 168), 169, "bad_input"),
        (np.ones((2, 6 * 168)), 48, "bad_input"),
    ],
)
def test_bad_input_is_refused_with_a_code(values: np.ndarray, horizon: int, code: str) -> None:
    with pytest.raises(ForecastError) as info:
        forecast(values, START, horizon, tz=TZ, is_holiday=lambda _d: False)
    assert info.value.code == code


def test_naive_start_and_unknown_calendar_are_refused() -> None:
    with pytest.raises(ForecastError, match="timezone-aware"):
        forecast(synthetic(5), START.replace(tzinfo=None), 24, tz=TZ, is_holiday=lambda _d: False)
    with pytest.raises(ForecastError, match="unknown holiday calendar"):
        holiday_calendar("XX")
    assert holiday_calendar("DE", "SN")(date(2025, 11, 19))  # Buß- und Bettag, Saxony only
    assert not holiday_calendar("DE", "BE")(date(2025, 11, 19))
    assert not holiday_calendar(None)(date(2025, 12, 25))
    with pytest.raises(ForecastError, match="point_objective") as err:
        ModelConfig(point_objective="huber")
    assert err.value.code == "bad_input"


def test_conformal_quantiles_take_the_finite_sample_step() -> None:
    # Nine scores: the 80 % interval needs the ceil(10 * 0.9) = 9th and floor(10 * 0.1) = 1st of them.
    assert list(_conformal_quantiles(np.arange(1.0, 10.0), 0.1)) == [1.0, 9.0]
    # 99 scores: the 10th and the 90th (not the 9.9th and 89.1st a plain quantile would interpolate).
    assert list(_conformal_quantiles(np.arange(1.0, 100.0), 0.1)) == [10.0, 90.0]


def dropped(weeks: int, drops: list[tuple[int, int]], seed: int = 3) -> np.ndarray:
    """:func:`synthetic` with its level cut over the given [first, last) days, lockdown-like: each day of a
    drop keeps a random 10-70 % of its usual level, so the days after a shift are hard to foresee."""
    y = synthetic(weeks, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for a, b in drops:
        for day in range(a, b):
            y[day * 24 : (day + 1) * 24] = np.round(y[day * 24 : (day + 1) * 24] * rng.uniform(0.1, 0.7))
    return y


def test_intervals_widen_after_a_level_shift() -> None:
    """The history holds three erratic drops; right after a fourth begins, the interval is wider relative to the
    level than on an ordinary day, because errors after a shift were larger (the learned difficulty)."""
    weeks = 20
    y = dropped(weeks, [(30, 44), (70, 84), (110, 124)])
    calm = forecast(y, START, 48, tz=TZ, is_holiday=lambda _d: False)
    shifted_y = dropped(weeks, [(30, 44), (70, 84), (110, 124), (weeks * 7 - 1, weeks * 7)])  # the last day
    shifted = forecast(shifted_y, START, 48, tz=TZ, is_holiday=lambda _d: False)
    m = float(np.mean(y))

    def rel_width(fc: Forecast) -> float:
        return float(np.mean((fc.upper - fc.lower) / np.sqrt(fc.mean + m)))

    # 1.14 measured. The squared-error model on counts gave 1.31 (and 0.94 with a constant difficulty, plain
    # split-conformal); the relative target follows part of the drop in the point forecast (mean 16 instead
    # of 22), so less of it is left for the interval to absorb.
    assert rel_width(shifted) > 1.05 * rel_width(calm), (rel_width(shifted), rel_width(calm))


def test_coverage_over_many_series_is_near_nominal() -> None:
    """Twelve seeds of the synthetic series, 48 h each: the 80 % intervals hold 70-90 % of the actual hours."""
    inside, total = 0, 0
    for seed in range(12):
        y = synthetic(7, seed=seed)
        origin = len(y) - 48 - 24 * seed  # origins at different hours and weekdays
        fc = forecast(y[:origin], START, 48, tz=TZ, is_holiday=lambda _d: False)
        actual = y[origin : origin + 48]
        inside += int(np.count_nonzero((actual >= fc.lower) & (actual <= fc.upper)))
        total += 48
    assert 0.7 <= inside / total <= 0.9, inside / total


def test_point_forecast_is_a_median_not_pulled_up_by_rare_spikes() -> None:
    """Rare bursts (5 % of the first eight weeks' hours at four times their count), two calm weeks after: the
    absolute-loss point model forecasts the calm level, a squared-error one (the conditional mean) lies higher."""
    y = synthetic(10, seed=5)
    calm = y.copy()
    rng = np.random.default_rng(7)
    y[rng.choice(8 * 168, 8 * 168 // 20, replace=False)] *= 4
    origin = len(y) - 48

    def error(objective: str) -> float:
        cfg = ModelConfig(point_objective=objective)
        fc = forecast(y[:origin], START, 48, tz=TZ, is_holiday=lambda _d: False, cfg=cfg)
        return float(np.mean(np.abs(fc.mean - calm[origin:])))

    l1, l2 = error("l1"), error("regression")
    assert l1 < 0.7 * l2, (l1, l2)  # 5.0 against 10.3 measured


def test_level_is_last_weeks_mean_plus_one_with_a_four_week_fallback() -> None:
    cfg = ModelConfig(steps_per_day=24)
    y = np.concatenate([np.full(3 * 168, 9.0), np.full(168, 19.0)])
    assert _level(y, np.array([4 * 168]), cfg)[0] == 20.0
    y[3 * 168 + 18 :] = np.nan  # 18 hours left in the last week: less than a day, so the four weeks'
    assert _level(y, np.array([4 * 168]), cfg)[0] == pytest.approx(1 + (3 * 168 * 9 + 18 * 19) / (3 * 168 + 18))
    assert np.isnan(_level(np.full(4 * 168, np.nan), np.array([4 * 168]), cfg)[0])


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(),
        ModelConfig(recent_day=True, learning_rate=0.1),
        ModelConfig(members=2, recency_half_life_days=30.0),
    ],
)
def test_point_forecast_is_the_full_forecasts_mean(cfg: ModelConfig) -> None:
    """The screening path (one fit, no intervals) gives the full forecast's point values exactly."""
    y = synthetic(8, seed=3)
    full = forecast(y, START, 48, tz=TZ, is_holiday=lambda _d: False, cfg=cfg)
    assert np.array_equal(point_forecast(y, START, 48, tz=TZ, is_holiday=lambda _d: False, cfg=cfg), full.mean)
    with pytest.raises(ForecastError) as err:
        point_forecast(y[:100], START, 48, tz=TZ, is_holiday=lambda _d: False, cfg=cfg)
    assert err.value.code == "insufficient_history"


def test_recent_day_inputs_are_the_latest_day_before_the_origin_and_a_week_before_it() -> None:
    """For an origin at 06:00, step h = 3 (09:00) reads 09:00 yesterday; h = 20 (02:00 tomorrow) reads 02:00
    today (before the origin); h = 40 (22:00 tomorrow) reads 22:00 yesterday: never a value at or after the
    origin. ``lag_day_week`` is the same slot one week earlier."""
    cfg = ModelConfig(recent_day=True)
    y = np.arange(3 * 168, dtype=np.float64)  # y[i] = i: a feature's value is the index it was read at
    cal = calendar(START, len(y) + 48, cfg, TZ, lambda _d: False)
    o = 2 * 168 + 6
    x = _features(np.concatenate([y, np.full(48, np.nan)]), cal, np.array([o]), 48, cfg)
    lag_day = x[:, cfg.features.index("lag_day")]
    week = x[:, cfg.features.index("lag_day_week")]
    assert cfg.features[: len(FEATURES)] == FEATURES
    assert [lag_day[3], lag_day[20], lag_day[40]] == [o + 3 - 24, o + 20 - 24, o + 40 - 48]
    assert np.all(lag_day < o) and np.all(lag_day >= o - 48)
    assert np.array_equal(week, lag_day - 168)
    assert ModelConfig(recent_day=False).features == FEATURES  # off: the columns before it, unchanged


def test_members_each_fit_their_own_recency_sample_and_the_forecast_is_their_mean(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a half-life, member ``m`` keeps a training origin ``a`` days old with probability
    ``0.5 ** (a / half_life)`` (its own draw, seed ``m``, also its LightGBM seed): the kept counts are the
    expected ones within four standard deviations, young origins are kept more than old ones, every horizon
    row of an origin goes together, and the members' samples differ. Their forecast is the members' mean.
    ``members=1`` without a half-life is the single model on every row. Nonsense is refused."""
    y = synthetic(30, seed=5)
    dz = _design(y, START, 48, TZ, lambda _d: False, ModelConfig(), 0.0, np.inf)
    assert np.array_equal(dz.row_origin, np.repeat(np.arange(len(dz.origins)), 48))
    assert np.array_equal(dz.age, np.repeat((len(y) - dz.origins) / 24, 48))
    fits: list[tuple[int, int, int]] = []  # (rows, origins, seed) of each fit

    class Member:
        def __init__(self, value: float) -> None:
            self.value = value

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.full(len(x), self.value)

    def fake_fit_one(x: np.ndarray, target: np.ndarray, cfg: ModelConfig, seed: int) -> Member:
        fits.append((len(x), len(x) // 48, seed))
        return Member(10.0 * (seed + 1))

    monkeypatch.setattr(model, "_fit_one", fake_fit_one)
    half = 35.0
    members = model._fit(dz.xp, dz.tp, ModelConfig(members=2, recency_half_life_days=half), dz.row_origin, dz.age)
    assert np.array_equal(model._predict(members, dz.xp[:3]), [15.0, 15.0, 15.0])  # the mean of 10 and 20
    age = (len(y) - dz.origins) / 24
    p = 0.5 ** (age / half)
    assert [seed for _, _, seed in fits] == [0, 1]
    kept = [np.random.default_rng(seed).random(len(dz.origins)) < p for seed in (0, 1)]
    for (rows, _, _), keep in zip(fits, kept, strict=True):
        assert rows == 48 * int(keep.sum())  # whole origins, no NaN targets in this series
        assert abs(keep.sum() - p.sum()) < 4 * np.sqrt(np.sum(p * (1 - p)))
        assert keep[age < half].mean() > 0.6 > 0.2 > keep[age >= 4 * half].mean()
    assert not np.array_equal(kept[0], kept[1])
    fits.clear()
    model._fit(dz.xp, dz.tp, ModelConfig(), dz.row_origin, dz.age)
    assert fits == [(len(dz.tp), len(dz.origins), 0)]
    for bad in ({"members": 0}, {"recency_half_life_days": 0.0}, {"recency_half_life_days": -3.0}):
        with pytest.raises(ForecastError) as err:
            ModelConfig(**bad)  # type: ignore[arg-type]
        assert err.value.code == "bad_input"
