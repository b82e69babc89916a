"""Rolling-origin evaluation of the lot-occupancy forecast on ParkAPI's Dresden curves.

Data: ``../shared/data/parking/parkapi-dresden/forecast_data/<lot>.csv`` (ParkAPI,
MIT): rows ``timestamp,percent occupied`` every 15 minutes, 2015-11 to 2016-12
(Centrum-Galerie: 2019), naive local times (Europe/Berlin). Occupied bays are
``percent / 100 * total`` with the lot's bays from the demo site.

**What this can and cannot show.** These curves are ParkAPI's *forecasts*,
smooth model output, not counts of cars. The evaluation shows whether our
model, seeing only the curve before an origin, recovers the weekly and daily
shape and the holiday effects the curve contains, against repeating last
week, and whether the code path for 15-minute, 24-hour lot forecasts runs
end to end at a Pi-class cost. It cannot show accuracy on real occupancy:
real lots have noise, events, closures and sensor faults that the curves
smooth away, so real MASE will be higher and the interval coverage here
(curves are nearly deterministic) says little about coverage on real data.

Run: ``nice .venv/bin/python bench/forecast/parking.py [--data DIR] [--out results.json] [--markdown]
[--set FIELD=VALUE]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for bench.forecast.footfall

from bench.forecast.footfall import config_with
from server.forecast.model import ForecastError, ModelConfig, forecast, holiday_calendar, seasonal_naive
from server.forecast.service import LOT_CONFIG, LOT_HISTORY_DAYS

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "parking" / "parkapi-dresden" / "forecast_data"
TOTAL = {
    "dresdenaltmarkt": 400,
    "dresdencitycenter": 350,
    "dresdenkarstadt": 265,
    "dresdenwoehrlflorentinum": 264,
    "dresdencentrumgalerie": 1059,
}
HORIZON = 96  # 24 h of 15-minute steps
SEASON = 672  # one week
ORIGINS_2016 = [
    ("2016-01-06", "Epiphany week, ordinary"),
    ("2016-03-24", "Maundy Thursday into Good Friday"),
    ("2016-05-04", "day before Ascension"),
    ("2016-06-15", "ordinary mid-week"),
    ("2016-08-10", "summer holidays"),
    ("2016-10-02", "Sunday before German Unity Day"),
    ("2016-11-15", "Repentance Day eve (Buß- und Bettag 16 Nov, Saxony)"),
    ("2016-12-23", "before Christmas Eve"),
]
ORIGINS_2019 = [
    ("2019-03-06", "ordinary mid-week"),
    ("2019-04-18", "Maundy Thursday into Good Friday"),
    ("2019-05-29", "day before Ascension"),
    ("2019-07-10", "ordinary mid-week"),
    ("2019-10-02", "before German Unity Day"),
    ("2019-11-19", "Repentance Day eve (20 Nov 2019)"),
    ("2019-12-06", "Advent Friday"),
    ("2019-12-23", "before Christmas Eve"),
]


def load(lot: str, data: Path = DATA) -> tuple[datetime, np.ndarray]:
    """(first step as a naive-local time tagged UTC, occupied bays per 15 minutes, NaN where missing)."""
    rows = [line.split(",") for line in (data / f"{lot}.csv").read_text().split() if line]
    times = [datetime.fromisoformat(t) for t, _ in rows]
    first = times[0].replace(minute=times[0].minute // 15 * 15, second=0)
    n = int((times[-1] - first).total_seconds() // 900) + 1
    y = np.full(n, np.nan)
    for t, (_, pct) in zip(times, rows, strict=True):
        y[int((t - first).total_seconds() // 900)] = min(float(pct), 100.0) / 100 * TOTAL[lot]
    return first.replace(tzinfo=UTC), y


def evaluate(data: Path = DATA, cfg: ModelConfig = LOT_CONFIG) -> dict[str, object]:
    """Every lot and origin with ``cfg`` (the server's lots' by default)."""
    t0 = time.monotonic()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    is_holiday = holiday_calendar("DE", "SN")
    rows: list[dict[str, object]] = []
    fit_s = fit_cpu_s = 0.0
    for lot, total in TOTAL.items():
        start, y = load(lot, data)
        for day, note in ORIGINS_2019 if lot == "dresdencentrumgalerie" else ORIGINS_2016:
            at = datetime.fromisoformat(day).replace(tzinfo=UTC)
            o = int((at - start).total_seconds() // 900)
            hist, actual = y[max(0, o - LOT_HISTORY_DAYS * 96) : o], y[o : o + HORIZON]
            row: dict[str, object] = {"lot": lot, "origin": day, "note": note}
            t, cpu = time.monotonic(), time.process_time()
            try:
                fc = forecast(hist, at - len(hist) * cfg.step, HORIZON, tz=ZoneInfo("UTC"), is_holiday=is_holiday,
                              cfg=cfg, upper=float(total))  # fmt: skip
            except ForecastError as exc:
                row["skipped"] = f"{exc.code}: {exc}"
                rows.append(row)
                continue
            fit_s += time.monotonic() - t
            fit_cpu_s += time.process_time() - cpu
            naive = seasonal_naive(hist, HORIZON, SEASON)
            diff = np.abs(hist[SEASON:] - hist[:-SEASON])
            scale = float(np.nanmean(diff))
            ok = ~np.isnan(actual) & ~np.isnan(naive)
            row["mase"] = float(np.mean(np.abs(fc.mean[ok] - actual[ok])) / scale)
            row["mase_naive"] = float(np.mean(np.abs(naive[ok] - actual[ok])) / scale)
            row["covered"] = int(np.count_nonzero((actual[ok] >= fc.lower[ok]) & (actual[ok] <= fc.upper[ok])))
            row["steps"] = int(np.count_nonzero(ok))
            row["below"] = int(np.count_nonzero(actual[ok] < fc.lower[ok]))
            row["above"] = int(np.count_nonzero(actual[ok] > fc.upper[ok]))
            row["mae_bays"] = float(np.mean(np.abs(fc.mean[ok] - actual[ok])))
            rows.append(row)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = [r for r in rows if "mase" in r]
    per_lot = []
    for lot in TOTAL:
        mine = [r for r in done if r["lot"] == lot]
        if mine:
            per_lot.append(
                {
                    "lot": lot,
                    "evaluated": len(mine),
                    "median_mase": statistics.median(float(r["mase"]) for r in mine),  # type: ignore[arg-type]
                    "median_mase_naive": statistics.median(float(r["mase_naive"]) for r in mine),  # type: ignore[arg-type]
                    "median_mae_bays": statistics.median(float(r["mae_bays"]) for r in mine),  # type: ignore[arg-type]
                    "coverage_80": sum(int(r["covered"]) for r in mine)  # type: ignore[call-overload]
                    / sum(int(r["steps"]) for r in mine),  # type: ignore[call-overload]
                }
            )
    steps = sum(int(r["steps"]) for r in done)  # type: ignore[call-overload]
    med = statistics.median(float(r["mase"]) for r in done)  # type: ignore[arg-type]
    med_naive = statistics.median(float(r["mase_naive"]) for r in done)  # type: ignore[arg-type]
    return {
        "evaluated": len(done),
        "skipped": len(rows) - len(done),
        "median_mase": med,
        "median_mase_naive": med_naive,
        "ratio": med / med_naive,
        "coverage_80": sum(int(r["covered"]) for r in done) / steps,  # type: ignore[call-overload]
        "below_lower": sum(int(r["below"]) for r in done) / steps,  # type: ignore[call-overload]
        "above_upper": sum(int(r["above"]) for r in done) / steps,  # type: ignore[call-overload]
        "fit_s_mean": fit_s / max(len(done), 1),
        "fit_cpu_s_mean": fit_cpu_s / max(len(done), 1),
        "peak_rss_growth_mb": (rss1 - rss0) / 1024,  # ru_maxrss is in KiB on Linux
        "per_lot": per_lot,
        "wall_s": time.monotonic() - t0,
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="ParkAPI's forecast_data folder")
    ap.add_argument("--out", type=Path, default=None, help="write every row as JSON here")
    ap.add_argument("--markdown", action="store_true", help="print the per-lot table")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a candidate setting: the lots' ModelConfig with this field changed (repeatable), e.g. members=2",
    )
    args = ap.parse_args()
    res = evaluate(args.data, config_with(LOT_CONFIG, args.set))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    if args.markdown:
        print("| lot | origins | median MASE model | seasonal-naive | ratio | median MAE (bays) | 80 % coverage |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in res["per_lot"]:  # type: ignore[attr-defined]
            print(
                f"| {r['lot']} | {r['evaluated']} | {r['median_mase']:.3f} | {r['median_mase_naive']:.3f} |"
                f" {r['median_mase'] / r['median_mase_naive']:.2f} | {r['median_mae_bays']:.1f} |"
                f" {r['coverage_80']:.3f} |"
            )
    print(
        f"parking (ParkAPI curves): {res['evaluated']} lot-origins ({res['skipped']} skipped); median MASE model"
        f" {res['median_mase']:.3f} vs seasonal-naive {res['median_mase_naive']:.3f}: ratio {res['ratio']:.3f};"
        f" 80 % coverage {res['coverage_80']:.3f} (below {res['below_lower']:.3f}, above {res['above_upper']:.3f});"
        f" fit {res['fit_s_mean']:.2f} s per forecast ({res['fit_cpu_s_mean']:.2f} s CPU),"
        f" peak memory +{res['peak_rss_growth_mb']:.0f} MB;"
        f" {res['wall_s']:.0f} s in all"
    )


if __name__ == "__main__":
    main()
