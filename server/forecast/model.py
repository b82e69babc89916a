"""Forecasts of a regular series (hourly footfall, 15-minute lot occupancy) with prediction intervals.

One model for both: a LightGBM regressor (gradient-boosted trees, Ke et al.
2017, ``lightgbm``) trained on *direct* multi-horizon rows. For an origin
``o`` (the first step not yet observed) and a step ``h`` ahead (0-based) the
target is ``y[o + h]`` and the features are known at ``o``:

- the calendar of the target step in the site's time zone: slot of the day,
  weekday, and whether the day is a public holiday (``holidays`` package),
  folded into a *day type* (a holiday counts as a Sunday), plus whether the
  same step one week earlier was a holiday (its value is then a poor guide);
- seasonal lags: ``y`` one and two weeks before the target, and the median of
  the same slot over the last four weeks (all at least one week back, so
  known at ``o`` for every horizon up to a week);
- the state at the origin: the last observed value, its deviation from the
  value one week earlier, the mean of the last day against the same day a
  week before (a level shift, e.g. a lockdown, shows here first), and ``h``;
- the latest day's profile (``recent_day``): the target's slot on the latest
  day before the origin and that slot a week earlier (day-ahead load
  forecasting's "lag 24 h beside lag 168 h", Hong & Fan 2016, Int. J.
  Forecasting 32:914).

Training rows come from origins every ``stride`` steps over the history, so
one model serves every horizon; the trees are few and shallow (cheap on a
Pi-class CPU: one fit on a year of hourly data takes well under a second of
one core here, bench/forecast/README.md).

The point model may be an average of ``members`` such fits (the server's zones
and lots use two), each on its own *recency sample* of the training origins:
an origin ``a`` days old is kept with probability ``0.5 ** (a / half_life)``
(``recency_half_life_days``), drawn with the member's seed, which also seeds
its LightGBM bagging. The sample carries exponential forgetting (Hong & Fan
2016, sec. 3) without weighting the fit, and averaging members fitted on
different samples lowers the forecast's variance (bagging, Breiman 1996,
Machine Learning 24:123). Chosen on bench/forecast by the fifth round's rule.

The point model is fitted to absolute error (LightGBM ``objective="l1"``):
it estimates the conditional median, the best point forecast under an
absolute-error measure such as MASE (Gneiting 2011, J. Am. Stat. Assoc.
106:746). Its target and the inputs in the series' units (:data:`LEVEL_FEATURES`)
are divided by the origin's level (:func:`_level`: 1 + the mean of the week
before the origin) and the prediction multiplied back, so the trees are not
bound to the levels of the training year (a reopening, a lockdown's floor);
DeepAR's scale handling (Salinas et al. 2020, Int. J. Forecasting 36:1181,
sec. 3.3). Both chosen on bench/forecast by a rule written before the runs
(``point_objective``, ``relative`` in :class:`ModelConfig` restore the
squared-error, count-scale model).

Prediction intervals are locally weighted split-conformal (Vovk et al. 2005;
Lei et al. 2018, sec. 5.2): the training origins are cut into ``folds``
contiguous blocks, each predicted by a model fitted on the others; each
out-of-fold error is divided by ``sqrt(prediction + scale)`` (counts vary
roughly like a Poisson's) and by a *difficulty*, a small LightGBM fitted,
cross-fitted too, to those scores' absolute values from the prediction, ``h``,
the day kind and ``log(day_ratio)`` (errors grow after a level shift and
around holidays, and the interval with them). The conformal quantiles of the
scores (finite-sample step; a Mondrian split for holidays and their
neighbours) are put around the point forecast of a model fitted on
everything. Intervals are clipped to ``[lower, upper]`` (0 and, for a lot,
its bays). Cost: ``(folds + 1) * members`` point fits and ``folds`` difficulty fits.

Bad input raises :class:`ForecastError` (``code``: ``bad_input`` or
``insufficient_history``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

#: Weeks of history the model needs at least: two seasonal lags and a calibration span after them.
MIN_HISTORY_WEEKS = 4
#: Features, in the order of the feature matrix's columns (documentation and tests).
FEATURES = (
    "slot",
    "daytype",
    "holiday",
    "holiday_week_before",
    "lag_week",
    "lag_2weeks",
    "median_4weeks",
    "last",
    "last_vs_week",
    "day_ratio",
    "lag_year",
    "h",
)
#: Inputs added with ``ModelConfig.recent_day`` (after :data:`FEATURES`): the same slot on the latest day fully
#: observed before the origin, and that slot one week earlier.
RECENT_DAY_FEATURES = ("lag_day", "lag_day_week")


class ForecastError(ValueError):
    """A forecast that cannot be made: ``code`` is ``bad_input`` or ``insufficient_history``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """How the model is fitted. Defaults chosen on bench/forecast (Auckland footfall, see its README)."""

    #: Steps per day: 24 for hourly, 96 for 15 minutes.
    steps_per_day: int = 24
    #: Origins used for training, every this many steps.
    stride: int = 6
    #: At most this many days of history are used (older is dropped: cost, and old habits).
    max_history_days: int = 400
    #: Blocks of training origins cross-fitted to calibrate the intervals.
    folds: int = 2
    #: Residuals are divided by ``(prediction + scale) ** spread_power`` (0.5: Poisson-like; 1: relative).
    spread_power: float = 0.5
    #: Central coverage of the prediction interval (0.8: the 10 % and 90 % quantiles).
    coverage: float = 0.8
    n_estimators: int = 150
    #: Trees of the difficulty model that scales the intervals (small: it learns a spread, not a level).
    difficulty_estimators: int = 50
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    #: LightGBM threads (1: the server shares a small CPU).
    threads: int = 1
    #: LightGBM objective of the point model: "l1" (absolute error: the conditional median, the best point
    #: forecast under MASE; Gneiting 2011) or "regression" (squared error: the conditional mean).
    point_objective: str = "l1"
    #: Fit the point model to values over the origin's level (:func:`_level`), then multiply back, so a
    #: level the history never held is still forecast (DeepAR's scale handling, Salinas et al. 2020, sec. 3.3).
    relative: bool = True
    #: Add :data:`RECENT_DAY_FEATURES`: the latest observed day's value at the target's slot, and a week before
    #: it (the "lag 24 h beside lag 168 h" of day-ahead load forecasting; Hong & Fan 2016, Int. J. Forecasting
    #: 32:914, sec. 3). Kept on bench/forecast by a rule written before the runs (its README).
    recent_day: bool = True
    #: Point models averaged (seeds 0, 1, ...); with ``recency_half_life_days`` each sees its own sample.
    members: int = 1
    #: Recency by sampling: each member keeps a training origin with probability ``0.5 ** (age / half_life)``
    #: (age in days from it to the forecast origin), drawn with the member's seed; ``inf`` keeps every origin.
    recency_half_life_days: float = math.inf

    def __post_init__(self) -> None:
        if self.steps_per_day <= 0 or 86_400 % self.steps_per_day:
            raise ForecastError("bad_input", f"steps_per_day must divide a day, got {self.steps_per_day}")
        if not 0 < self.coverage < 1:
            raise ForecastError("bad_input", f"coverage must lie in (0, 1), got {self.coverage}")
        if self.stride <= 0 or self.max_history_days < 7 * MIN_HISTORY_WEEKS or self.folds < 2:
            raise ForecastError("bad_input", "stride > 0, max_history_days >= 28 and folds >= 2 are required")
        if self.members < 1 or not self.recency_half_life_days > 0:
            raise ForecastError("bad_input", "members >= 1 and recency_half_life_days > 0 (inf: keep all) are required")
        if self.point_objective not in ("regression", "l1"):
            raise ForecastError(
                "bad_input", f"point_objective must be 'regression' or 'l1', got {self.point_objective!r}"
            )

    @property
    def step(self) -> timedelta:
        return timedelta(seconds=86_400 // self.steps_per_day)

    @property
    def week(self) -> int:
        return 7 * self.steps_per_day

    @property
    def features(self) -> tuple[str, ...]:
        """The feature matrix's columns, in order."""
        return FEATURES + RECENT_DAY_FEATURES if self.recent_day else FEATURES


@dataclass(frozen=True, slots=True)
class Forecast:
    """``mean``, ``lower`` and ``upper`` per step: step ``i`` starts at ``start + i * step`` (UTC).

    ``mean`` is the point forecast: with ``point_objective="l1"`` (the default) a conditional median; the name
    is the API's and stays.

    ``coverage`` is the nominal central coverage of ``[lower, upper]``.
    """

    start: datetime
    step: timedelta
    mean: Array
    lower: Array
    upper: Array
    coverage: float

    def times(self) -> list[datetime]:
        return [self.start + i * self.step for i in range(len(self.mean))]

    def mean_at(self, at: datetime) -> float | None:
        """The point forecast at the instant ``at`` (aware): each step's ``mean`` stands at its midpoint and is
        interpolated linearly between midpoints (held flat in the first and last half step); None outside the
        forecast's span ``[start, start + len(mean) * step)``."""
        x = (at - self.start) / self.step
        n = len(self.mean)
        if not 0 <= x < n:
            return None
        pos = min(max(x - 0.5, 0.0), n - 1.0)  # in steps from the first midpoint
        i = min(int(pos), n - 2)
        if i < 0:  # one step: flat
            return float(self.mean[0])
        return float(self.mean[i] + (self.mean[i + 1] - self.mean[i]) * (pos - i))


HolidayTest = Callable[[date], bool]


def holiday_calendar(country: str | None, subdiv: str | None = None) -> HolidayTest:
    """A test "is this local date a public holiday" from the ``holidays`` package; never true without a country.

    Raises :class:`ForecastError` for a country or subdivision the package does not know.
    """
    if not country:
        return lambda _d: False
    import holidays

    try:
        cal = holidays.country_holidays(country, subdiv=subdiv)
    except NotImplementedError as exc:
        raise ForecastError("bad_input", f"unknown holiday calendar {country!r}/{subdiv!r}: {exc}") from None
    return lambda d: d in cal


def calendar(start: datetime, n: int, cfg: ModelConfig, tz: ZoneInfo, is_holiday: HolidayTest) -> Array:
    """Per step from ``start`` (UTC, aware): columns slot of the local day, weekday (0 Monday), holiday (0/1)."""
    if start.tzinfo is None:
        raise ForecastError("bad_input", "start must be timezone-aware")
    out = np.empty((n, 3))
    step_s = 86_400 // cfg.steps_per_day
    cache: dict[date, float] = {}
    for i in range(n):
        local = (start + timedelta(seconds=i * step_s)).astimezone(tz)
        day = local.date()
        if day not in cache:
            cache[day] = 1.0 if is_holiday(day) else 0.0
        out[i, 0] = (local.hour * 3600 + local.minute * 60) // step_s
        out[i, 1] = local.weekday()
        out[i, 2] = cache[day]
    return out


def _features(y: Array, cal: Array, origins: npt.NDArray[np.int64], horizon: int, cfg: ModelConfig) -> Array:
    """Rows (origin-major, then h) x :data:`FEATURES` for targets ``origins[j] + h``; ``y``/``cal`` cover them."""
    w, d = cfg.week, cfg.steps_per_day
    h = np.arange(horizon)
    t = (origins[:, None] + h[None, :]).ravel()
    o = np.repeat(origins, horizon)
    hh = np.tile(h, len(origins)).astype(np.float64)

    def at(idx: npt.NDArray[np.int64]) -> Array:
        ok = (idx >= 0) & (idx < len(y))
        out = np.full(idx.shape, np.nan)
        out[ok] = y[idx[ok]]
        return out

    lag_w = at(t - w)
    lag_2w = at(t - 2 * w)
    stack = np.stack([at(t - k * w) for k in range(1, 5)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing slot: NaN, as wanted
        med4 = np.nanmedian(stack, axis=0)
    last = at(o - 1)
    last_vs = last - at(o - 1 - w)
    # Mean of the last day over the same day a week before (the level right now).
    csum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(y))])
    cnt = np.concatenate([[0], np.cumsum(~np.isnan(y))])

    def day_mean(end: npt.NDArray[np.int64]) -> Array:
        lo = np.clip(end - d, 0, len(y))
        hi = np.clip(end, 0, len(y))
        n = cnt[hi] - cnt[lo]
        with np.errstate(all="ignore"):
            return np.where(n >= d // 2, (csum[hi] - csum[lo]) / np.maximum(n, 1), np.nan)

    with np.errstate(all="ignore"):
        ratio = (day_mean(o) + 1.0) / (day_mean(o - w) + 1.0)
    lag_year = at(t - 365 * d)
    c = cal[t]
    c_week = cal[np.clip(t - w, 0, len(cal) - 1)]
    daytype = np.where(c[:, 2] > 0, 6.0, c[:, 1])
    cols = [c[:, 0], daytype, c[:, 2], c_week[:, 2], lag_w, lag_2w, med4, last, last_vs, ratio, lag_year, hh]
    if cfg.recent_day:
        # The same slot, the fewest whole days back that lie before the origin: one day for the first day ahead.
        recent = t - d * (np.tile(h, len(origins)) // d + 1)
        cols += [at(recent), at(recent - w)]
    return np.column_stack(cols)


def _day_kind(cal: Array, t: npt.NDArray[np.int64], cfg: ModelConfig) -> npt.NDArray[np.int64]:
    """1 where step ``t`` falls on a public holiday or the day before or after one, else 0."""
    d = cfg.steps_per_day
    near = np.zeros(len(t), dtype=bool)
    for shift in (-d, 0, d):
        near |= cal[np.clip(t + shift, 0, len(cal) - 1), 2] > 0
    return near.astype(np.int64)


#: Columns of ``cfg.features`` in the series' units (divided by the level when ``cfg.relative``).
LEVEL_FEATURES = ("lag_week", "lag_2weeks", "median_4weeks", "last", "last_vs_week", "lag_year", *RECENT_DAY_FEATURES)


def _over_level(x: Array, level: Array | float, cfg: ModelConfig) -> Array:
    """``x`` with its :data:`LEVEL_FEATURES` columns divided by ``level`` (one per row, or one for all)."""
    out = x.copy()
    cols = [k for k, name in enumerate(cfg.features) if name in LEVEL_FEATURES]
    out[:, cols] /= np.reshape(level, (-1, 1))
    return out


def _level(y: Array, origins: npt.NDArray[np.int64], cfg: ModelConfig) -> Array:
    """The level each origin's point model works relative to, in ``y``'s units: 1 + the mean of the week before
    the origin, or of the four weeks before it if the week holds less than a day of values; NaN if those hold
    less than a day too. ``origins``: indices into ``y`` of the first step not observed; one level per origin.
    The 1 keeps an all-zero week (a closed street) from dividing by zero (DeepAR's ``1 + mean``, Salinas et al.
    2020, sec. 3.3)."""
    w, d = cfg.week, cfg.steps_per_day
    csum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(y))])
    cnt = np.concatenate([[0], np.cumsum(~np.isnan(y))])

    def mean(span: int) -> tuple[Array, npt.NDArray[np.int64]]:
        lo = np.clip(origins - span, 0, len(y))
        hi = np.clip(origins, 0, len(y))
        n = cnt[hi] - cnt[lo]
        with np.errstate(all="ignore"):
            return (csum[hi] - csum[lo]) / np.maximum(n, 1), n

    m1, n1 = mean(w)
    m4, n4 = mean(4 * w)
    return 1.0 + np.where(n1 >= d, m1, np.where(n4 >= d, m4, np.nan))


def _fit(x: Array, target: Array, cfg: ModelConfig, origin: npt.NDArray[np.int64], age: Array) -> Any:
    """The point model: ``cfg.members`` boosters (a list), each on its recency sample (``origin``: each row's
    training origin, ``age``: its age in days)."""
    members = []
    for seed in range(cfg.members):
        keep = ~np.isnan(target)
        if math.isfinite(cfg.recency_half_life_days):
            draw = np.random.default_rng(seed).random(int(origin.max()) + 1)[origin]
            keep &= draw < 0.5 ** (age / cfg.recency_half_life_days)
        members.append(_fit_one(x[keep], target[keep], cfg, seed))
    return members


def _fit_one(x: Array, target: Array, cfg: ModelConfig, seed: int) -> Any:
    """One booster on rows ``_fit`` chose (no missing target)."""
    import lightgbm as lgb

    params = {
        "objective": cfg.point_objective,
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_child_samples,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "feature_fraction": 0.9,
        "num_threads": cfg.threads,
        "verbosity": -1,
        "seed": seed,
    }
    data = lgb.Dataset(x, target, categorical_feature=[1], free_raw_data=True)
    return lgb.train(params, data, num_boost_round=cfg.n_estimators)


def _predict(model: Any, x: Array) -> Array:
    if isinstance(model, list):
        return np.asarray(np.mean([_predict(m, x) for m in model], axis=0), dtype=np.float64)
    return np.asarray(model.predict(x), dtype=np.float64)


def _difficulty_features(pred: Array, x: Array, kind: npt.NDArray[np.int64]) -> Array:
    """What the difficulty model sees: the point forecast, ``h``, the day kind (:func:`_day_kind`) and the
    level shift at the origin, ``log(day_ratio)`` (0 when the last day matched the same day a week before;
    a lockdown's first days show here)."""
    i = {name: k for k, name in enumerate(FEATURES)}  # the base columns come first in every feature set
    with np.errstate(all="ignore"):
        shift = np.log(x[:, i["day_ratio"]])
    return np.column_stack([pred, x[:, i["h"]], kind, np.where(np.isfinite(shift), shift, 0.0)])


def _fit_difficulty(x: Array, target: Array, cfg: ModelConfig) -> Any:
    """A small LightGBM regressor of the absolute score: the locally expected size of an error."""
    import lightgbm as lgb

    params = {
        "objective": "regression",
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_data_in_leaf": 50,
        "num_threads": cfg.threads,
        "verbosity": -1,
        "seed": 0,
    }
    return lgb.train(params, lgb.Dataset(x, target), num_boost_round=cfg.difficulty_estimators)


def _conformal_quantiles(score: Array, tail: float) -> Array:
    """The ``tail`` and ``1 - tail`` split-conformal quantiles of ``score``, with the finite-sample step.

    Lei et al. 2018, eq. (2): the ``ceil((n + 1)(1 - tail)) / n`` empirical quantile, so the interval keeps
    its coverage with few scores (a short history's holidays).
    """
    n = len(score)
    hi = min(1.0, math.ceil((n + 1) * (1 - tail)) / n)
    lo = max(0.0, math.floor((n + 1) * tail) / n)
    return np.quantile(score, [lo, hi], method="inverted_cdf")


@dataclass(frozen=True, slots=True)
class _Design:
    """A history turned into training rows (:func:`_design`): what both the point fit and the intervals use."""

    start: datetime  # of the first step kept
    n: int  # steps of history kept
    cal: Array  # :func:`calendar` over the history and the horizon
    y_ext: Array  # the history, then ``horizon`` NaNs
    origins: npt.NDArray[np.int64]  # training origins
    x: Array  # features, origin-major then h
    target: Array
    lvl: Array  # each row's level (1 without ``cfg.relative``)
    xp: Array  # ``x`` with its level columns over ``lvl``: what the point model sees
    tp: Array  # ``target / lvl``: what the point model fits
    fold: npt.NDArray[np.int64]  # each row's cross-fitting block
    usable: list[int]  # blocks that can calibrate
    row_origin: npt.NDArray[np.int64]  # each row's index into ``origins``
    age: Array  # each row's origin's age in days at the forecast origin


def _design(
    values: Sequence[float] | Array,
    start: datetime,
    horizon: int,
    tz: ZoneInfo,
    is_holiday: HolidayTest,
    cfg: ModelConfig,
    lower: float,
    upper: float,
) -> _Design:
    """Check the request and build the training rows; raises :class:`ForecastError` as :func:`forecast` says."""
    if not 1 <= horizon <= cfg.week:
        raise ForecastError("bad_input", f"horizon must be 1..{cfg.week} steps, got {horizon}")
    if not lower < upper:
        raise ForecastError("bad_input", f"lower ({lower}) must be below upper ({upper})")
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1:
        raise ForecastError("bad_input", "values must be one-dimensional")
    keep = cfg.max_history_days * cfg.steps_per_day
    if len(y) > keep:
        start = start + (len(y) - keep) * cfg.step
        y = y[-keep:]
    w = cfg.week
    if len(y) < MIN_HISTORY_WEEKS * w:
        raise ForecastError(
            "insufficient_history", f"{len(y) / w:.1f} weeks of history; at least {MIN_HISTORY_WEEKS} are needed"
        )
    if np.count_nonzero(~np.isnan(y[-4 * w :])) < 2 * w:
        raise ForecastError("insufficient_history", "fewer than half of the last four weeks' values are present")
    n = len(y)
    cal = calendar(start, n + horizon, cfg, tz, is_holiday)
    y_ext = np.concatenate([y, np.full(horizon, np.nan)])

    # Training origins: every stride steps from two weeks in (two seasonal lags) to the last full horizon.
    origins = np.arange(2 * w, n - horizon + 1, cfg.stride, dtype=np.int64)
    x = _features(y_ext, cal, origins, horizon, cfg)
    target = y_ext[(origins[:, None] + np.arange(horizon)[None, :]).ravel()]
    if np.count_nonzero(~np.isnan(target)) < 50 * horizon:
        raise ForecastError("insufficient_history", "too few complete training windows")
    # Contiguous blocks of origins: each is predicted by models fitted on the others (cross-fitting), so the
    # calibration spans the whole history (its holidays and disruptions), not one recent month.
    fold = np.repeat(np.minimum(np.arange(len(origins)) * cfg.folds // len(origins), cfg.folds - 1), horizon)
    usable = [
        k
        for k in range(cfg.folds)
        if np.count_nonzero(~np.isnan(target[fold != k])) >= 20 * horizon and not np.all(np.isnan(target[fold == k]))
    ]  # a block without data (a sensor that was down for months) calibrates nothing
    if len(usable) < 2:
        raise ForecastError("insufficient_history", "too few blocks of the history can calibrate the intervals")
    # Without ``relative`` the level is 1: the same path, and dividing by 1.0 changes no value.
    lvl = np.repeat(_level(y_ext, origins, cfg), horizon) if cfg.relative else np.ones(len(target))
    xp, tp = _over_level(x, lvl, cfg), target / lvl
    row_origin = np.repeat(np.arange(len(origins), dtype=np.int64), horizon)
    age = np.repeat((n - origins) / cfg.steps_per_day, horizon)
    return _Design(start, n, cal, y_ext, origins, x, target, lvl, xp, tp, fold, usable, row_origin, age)


def _point(dz: _Design, horizon: int, cfg: ModelConfig, lower: float, upper: float) -> tuple[Array, Array]:
    """The point forecast of a model fitted on every training row, clipped; and the forecast's feature rows."""
    model = _fit(dz.xp, dz.tp, cfg, dz.row_origin, dz.age)
    origin = np.array([dz.n], dtype=np.int64)
    xf = _features(dz.y_ext, dz.cal, origin, horizon, cfg)
    lvl_f = float(_level(dz.y_ext, origin, cfg)[0]) if cfg.relative else 1.0
    return np.clip(_predict(model, _over_level(xf, lvl_f, cfg)) * lvl_f, lower, upper), xf


def point_forecast(
    values: Sequence[float] | Array,
    start: datetime,
    horizon: int,
    *,
    tz: ZoneInfo,
    is_holiday: HolidayTest,
    cfg: ModelConfig | None = None,
    lower: float = 0.0,
    upper: float = math.inf,
) -> Array:
    """:func:`forecast`'s ``mean`` alone, value for value, at about a third of its cost (one fit, no intervals).

    For screening a change of the point model on bench/forecast; same arguments and errors as :func:`forecast`.
    """
    cfg = cfg or ModelConfig()
    return _point(_design(values, start, horizon, tz, is_holiday, cfg, lower, upper), horizon, cfg, lower, upper)[0]


def forecast(
    values: Sequence[float] | Array,
    start: datetime,
    horizon: int,
    *,
    tz: ZoneInfo,
    is_holiday: HolidayTest,
    cfg: ModelConfig | None = None,
    lower: float = 0.0,
    upper: float = math.inf,
) -> Forecast:
    """Forecast ``horizon`` steps after a regular series.

    ``values``: one number per step (NaN where missing), the first step
    starting at ``start`` (aware; UTC or any zone), step ``cfg.step``; the
    forecast starts right after the last value. ``tz``: the site's time zone
    (calendar features are local). ``lower``/``upper`` clip the answer (0 and
    a lot's bays). Raises :class:`ForecastError`: ``bad_input`` (horizon not in
    1..one week, bounds reversed, naive ``start``), ``insufficient_history``
    (fewer than :data:`MIN_HISTORY_WEEKS` weeks, or fewer than half of the
    last four weeks' values present).
    """
    cfg = cfg or ModelConfig()
    dz = _design(values, start, horizon, tz, is_holiday, cfg, lower, upper)
    xp, tp = dz.xp, dz.tp
    oof = np.full(len(dz.target), np.nan)
    for k in dz.usable:
        held = dz.fold == k
        model = _fit(xp[~held], tp[~held], cfg, dz.row_origin[~held], dz.age[~held])
        oof[held] = np.maximum(_predict(model, xp[held]) * dz.lvl[held], lower)
    mean, xf = _point(dz, horizon, cfg, lower, upper)
    return _with_intervals(dz, oof, mean, xf, horizon, cfg, lower, upper)


def _with_intervals(
    dz: _Design, oof: Array, mean: Array, xf: Array, horizon: int, cfg: ModelConfig, lower: float, upper: float
) -> Forecast:
    """The forecast ``mean`` (features ``xf``) with its interval, calibrated on the out-of-fold forecasts ``oof``
    of the training rows of ``dz`` (module docstring: locally weighted split-conformal, Mondrian holidays)."""
    x, target, fold, n, cal = dz.x, dz.target, dz.fold, dz.n, dz.cal
    scale = float(np.nanmean(np.abs(dz.y_ext[:n])) or 1.0)
    steps = (dz.origins[:, None] + np.arange(horizon)[None, :]).ravel()
    ok = ~np.isnan(target) & ~np.isnan(oof)
    # Scores: out-of-fold errors over a Poisson-like spread, then over a learned difficulty (below).
    raw = (target - oof) / (oof + scale) ** cfg.spread_power
    kinds_all = _day_kind(cal, steps, cfg)
    diff_x = _difficulty_features(oof, x, kinds_all)
    floor = 0.05 * float(np.mean(np.abs(raw[ok])))
    sigma = np.full(len(target), np.nan)
    diff_models = []
    for k in dz.usable:
        held, other = (fold == k) & ok, (fold != k) & ok
        dm = _fit_difficulty(diff_x[other], np.abs(raw[other]), cfg)
        diff_models.append(dm)
        sigma[held] = np.maximum(_predict(dm, diff_x[held]), floor)
    score = raw[ok] / sigma[ok]
    kinds = kinds_all[ok]
    tail = (1 - cfg.coverage) / 2
    # Mondrian split (Vovk et al. 2005, ch. 4): holidays and their neighbours get their own quantiles when
    # the history holds enough of them (a day's worth of steps), the pooled ones otherwise.
    pooled = _conformal_quantiles(score, tail)
    quant = {}
    for g in (0, 1):
        sel = score[kinds == g]
        quant[g] = _conformal_quantiles(sel, tail) if len(sel) >= cfg.steps_per_day else pooled

    fk = _day_kind(cal, n + np.arange(horizon), cfg)
    fx = _difficulty_features(mean, xf, fk)
    sigma_f = np.maximum(np.mean([_predict(dm, fx) for dm in diff_models], axis=0), floor)
    spread = (mean + scale) ** cfg.spread_power * sigma_f
    q_lo = np.where(fk == 1, quant[1][0], quant[0][0])
    q_hi = np.where(fk == 1, quant[1][1], quant[0][1])
    lo = np.clip(mean + q_lo * spread, lower, upper)
    hi = np.clip(mean + q_hi * spread, lower, upper)
    return Forecast(start=dz.start + n * cfg.step, step=cfg.step, mean=mean, lower=lo, upper=hi, coverage=cfg.coverage)


def seasonal_naive(values: Sequence[float] | Array, horizon: int, season: int) -> Array:
    """The value one season before each forecast step (``season`` steps; a week: 168 hourly); NaN where missing."""
    y = np.asarray(values, dtype=np.float64)
    if not 1 <= horizon <= season or len(y) < season:
        raise ForecastError("bad_input", f"need horizon 1..{season} and at least {season} values")
    return y[len(y) - season : len(y) - season + horizon].copy()
