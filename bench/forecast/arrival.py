"""Free bays at a driver's arrival: the live trend stretched, against the lot forecast's change.

Guidance (``server/guidance.py``, docs/guidance.md) projects a lot's free
bays to an arrival ``a`` minutes away. This bench compares, on ParkAPI's
Dresden curves (``parking.py``: the same lots, origin days and history), the
error of four projections of the free bays at ``q + a`` from what is known at
a query time ``q``:

- **hold**: the free bays now (no projection);
- **trend**: now plus the last window's rate times ``a`` (the curves are
  15-minute steps, so the window is 15 minutes; the server's is 10): what
  guidance did before forecasts, and still does without a fresh one;
- **trend then forecast**: the trend over its window, then the forecast's
  change from ``q + window`` to ``q + a``;
- **forecast**: the forecast's change from ``q`` to ``q + a``, read with
  ``Forecast.mean_at`` (what guidance does with a fresh forecast: this run
  chose it, README).

Each projection is clamped to ``[0, bays]``. The server refits hourly, so on
each origin day the lot's forecast is fitted at 07:00, 09:00, ... 17:00 from
the history before it (``point_forecast``: the mean is all guidance reads)
and queried at that hour and 15, 30 and 45 minutes after it.

What this can and cannot show: the curves are ParkAPI's forecasts, smooth,
without the minute-to-minute noise of real bays, which flatters the trend
(a smooth curve is locally straight) as much as the model (it learnt the
curve's own shape). It shows how far a stretched trend drifts from a daily
shape over 15 minutes to 4 hours, not the error on real lots.

Run from the project root: ``nice .venv/bin/python -m bench.forecast.arrival [--out arrival.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from bench.forecast.parking import DATA, ORIGINS_2016, ORIGINS_2019, TOTAL, load
from server.forecast.model import Forecast, ForecastError, holiday_calendar, point_forecast
from server.forecast.service import LOT_CONFIG, LOT_HISTORY_DAYS

#: Arrival times asked, minutes from the query (guidance's ``arrive_in_min`` allows 0-240).
ARRIVALS_MIN = (15, 30, 60, 120, 240)
#: Hours of the origin day at which the forecast is refitted (the server refits hourly; busy hours only).
FIT_HOURS = (7, 9, 11, 13, 15, 17)
#: Minutes after a fit at which guidance is asked (within the hour before the next refit).
QUERY_OFFSETS_MIN = (0, 15, 30, 45)
#: The trend's window on these curves: one 15-minute step.
WINDOW_MIN = 15
METHODS = ("hold", "trend", "trend_then_forecast", "forecast")

FreeAt = Callable[[datetime], float | None]


def projections(
    free_now: float, free_before: float, a: float, forecast_free: FreeAt, q: datetime, total: float
) -> dict[str, float]:
    """The four projections of the free bays ``a`` minutes after ``q`` (module docstring), clamped to ``[0,
    total]``. ``free_before``: the free bays one window before ``q``; ``forecast_free(t)``: the forecast's free
    bays at instant ``t`` (None outside it: the forecast terms then fall back as guidance does)."""
    rate = (free_now - free_before) / WINDOW_MIN
    span = min(a, WINDOW_MIN)
    out = {"hold": free_now, "trend": free_now + rate * a}

    def change(t0: float, t1: float) -> float | None:
        f0, f1 = forecast_free(q + timedelta(minutes=t0)), forecast_free(q + timedelta(minutes=t1))
        return None if f0 is None or f1 is None else f1 - f0

    later = change(span, a) if a > span else 0.0
    out["trend_then_forecast"] = free_now + rate * span + later if later is not None else out["trend"]
    whole = change(0, a)
    out["forecast"] = free_now + whole if whole is not None else out["trend"]
    return {k: min(total, max(0.0, v)) for k, v in out.items()}


def evaluate(data: Path = DATA) -> dict[str, object]:
    t_start = time.monotonic()
    cfg = LOT_CONFIG
    is_holiday = holiday_calendar("DE", "SN")
    errors: dict[int, dict[str, list[float]]] = {a: {m: [] for m in METHODS} for a in ARRIVALS_MIN}
    fits = skipped = 0
    fit_cpu = 0.0
    for lot, total in TOTAL.items():
        start, y = load(lot, data)
        for day, _note in ORIGINS_2019 if lot == "dresdencentrumgalerie" else ORIGINS_2016:
            for hour in FIT_HOURS:
                at = datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)
                o = int((at - start).total_seconds() // 900)
                hist = y[max(0, o - LOT_HISTORY_DAYS * 96) : o]
                cpu = time.process_time()
                try:
                    mean = point_forecast(hist, at - len(hist) * cfg.step, 96, tz=ZoneInfo("UTC"),
                                          is_holiday=is_holiday, cfg=cfg, upper=float(total))  # fmt: skip
                except ForecastError:
                    skipped += 1
                    continue
                fit_cpu += time.process_time() - cpu
                fits += 1
                fc = Forecast(start=at, step=cfg.step, mean=mean, lower=mean, upper=mean, coverage=0.8)

                def forecast_free(t: datetime, fc: Forecast = fc, total: float = total) -> float | None:
                    occ = fc.mean_at(t)
                    return None if occ is None else total - occ

                for off in QUERY_OFFSETS_MIN:
                    qi = o + off // 15
                    q = at + timedelta(minutes=off)
                    now, before = total - y[qi], total - y[qi - WINDOW_MIN // 15]
                    for a in ARRIVALS_MIN:
                        truth = total - y[qi + a // 15]
                        if np.isnan(now) or np.isnan(before) or np.isnan(truth):
                            continue
                        for m, v in projections(now, before, a, forecast_free, q, float(total)).items():
                            errors[a][m].append(abs(v - truth))
    table = {
        a: {m: {"mae_bays": statistics.fmean(e), "n": len(e)} for m, e in by.items() if e} for a, by in errors.items()
    }
    return {
        "fits": fits,
        "skipped": skipped,
        "fit_cpu_s_mean": fit_cpu / max(fits, 1),
        "wall_s": time.monotonic() - t_start,
        "mae_bays": table,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="ParkAPI's forecast_data folder")
    ap.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = ap.parse_args()
    res = evaluate(args.data)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    print("| arrival in | queries | " + " | ".join(f"MAE {m} (bays)" for m in METHODS) + " | forecast / trend |")
    print("|---:|---:|" + "---:|" * (len(METHODS) + 1))
    for a, by in res["mae_bays"].items():  # type: ignore[attr-defined]
        cells = " | ".join(f"{by[m]['mae_bays']:.1f}" for m in METHODS)
        ratio = by["forecast"]["mae_bays"] / by["trend"]["mae_bays"]
        print(f"| {a} min | {by['trend']['n']} | {cells} | {ratio:.2f} |")
    print(
        f"arrival (ParkAPI curves): {res['fits']} hourly fits ({res['skipped']} skipped),"
        f" {res['fit_cpu_s_mean']:.2f} s CPU per point fit; {res['wall_s']:.0f} s in all"
    )


if __name__ == "__main__":
    main()
