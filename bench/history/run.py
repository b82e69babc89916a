"""History benchmark: lot occupancy from the rollups against the raw points, 2,338 bays over 30 days.

    .venv/bin/python bench/history/run.py [--days 30 --rounds 15 --json bench/history/results.json]

The Dresden site (``district/sites/dresden.yaml``: 5 lots, 2,338 bays), every
bay reporting every 5 minutes (its own phase) for ``--days`` simulated days
ending at the last local midnight: about 20 million raw ``parking_bay``
points, in the gateway's exact line protocol (checked against
``gateway.influx.line_protocol``), plus the gateway's per-lot snapshots (one a
minute, computed with numpy and checked against ``gateway.snapshots.HistoryTracker``
for one lot-day), written straight into a private InfluxDB (``start_influxd``,
temp dir, deleted at the end) in 5,000-line batches. The rollups are then
built as in production: the retention policies and continuous queries of
``gateway.retention.HistorySetup``, and the continuous queries' own
``SELECT ... INTO`` run over the whole range (``backfill_statements``; the
private InfluxDB runs no continuous queries by itself).

Measured, interleaved over ``--rounds`` rounds (the first is reported apart as "cold"):

* ``day_hourly_all_lots``: hourly occupancy of every lot over one local day,
  through ``server.history.read_buckets`` (what the endpoint runs: the newest
  rollup bucket, then the rollup; the raw tail is empty here). Target <= 100 ms.
* ``week_5m_one_lot``: a week by 5-minute steps for the largest lot (1,059 bays),
  the same way. Target <= 100 ms.
* ``raw_day_hourly_all_lots``: the same day from the raw bay points
  (``sum``/``count`` of ``occupied`` per hour and lot): the reference.
* ``raw_week_5m_one_lot``: the week from the raw points of that lot: a second reference.
* ``endpoint_*``: the HTTP endpoints in-process (ASGI: routing, auth, pydantic), the same spans.

The numbers of ``day_hourly_all_lots`` are checked against the numpy snapshots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time as wall
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "district" / "sites" / "dresden.yaml"
SHARED = Path(os.environ.get("DISTRICT_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

from contracts import ParkingBayState  # noqa: E402
from contracts import history as h  # noqa: E402
from contracts.configfile import load_model  # noqa: E402
from contracts.site import SiteConfig  # noqa: E402
from contracts.storage import to_points  # noqa: E402
from district.services import start_influxd  # noqa: E402
from firmware_sim.demand import load_targets  # noqa: E402
from gateway.influx import InfluxWriter, line_protocol  # noqa: E402
from gateway.retention import HistorySetup, RetentionPlan, backfill_statements  # noqa: E402
from gateway.snapshots import HistoryTracker  # noqa: E402

REPORT_S = 300
SNAPSHOT_S = 60
NS = 1_000_000_000
BIG_LOT = "dresdencentrumgalerie"
KEY = "bench-operator-key-0123456789"


# -- the simulated district -------------------------------------------------------------------------


class Lot:
    """One lot's bays: report phases (ns after the start), states per report (bays x reports, 0/1)."""

    def __init__(self, lot_id: str, bays: list[str], reports: int, rng: np.random.Generator) -> None:
        self.id = lot_id
        self.bays = bays
        self.device = f"edge-{lot_id}"
        n = len(bays)
        # Each bay's phase within the 5 minutes, to the microsecond; a distinct order within the lot.
        self.phase_us = np.sort(rng.choice(REPORT_S * 1_000_000, size=n, replace=False))
        rng.shuffle(self.phase_us)
        self.states = np.zeros((n, reports), dtype=np.int8)


def simulate(site: SiteConfig, start: datetime, reports: int, tz: ZoneInfo, seed: int) -> list[Lot]:
    """Bay states per report: a Markov chain per bay whose stationary occupancy follows the lot's daily curve."""
    rng = np.random.default_rng(seed)
    targets = load_targets(SHARED / "data" / "parking" / "parkapi-dresden", [lot.id for lot in site.parking])
    lots = []
    for cfg in site.parking:
        lot = Lot(cfg.id, cfg.bay_ids(), reports, rng)
        target, _ = targets[cfg.id]
        p = np.array(
            [target((start + timedelta(seconds=REPORT_S * k)).astimezone(tz)) for k in range(reports)], dtype=np.float64
        )
        p = np.clip(p, 0.0, 1.0)
        rate = 0.15  # chance per 5 minutes that a bay moves towards the target: ~30 min to follow the curve
        state = rng.random(len(lot.bays)) < p[0]
        for k in range(reports):
            u = rng.random(len(lot.bays))
            arrive = ~state & (u < rate * p[k])
            leave = state & (u < rate * (1.0 - p[k]))
            state = (state | arrive) & ~leave
            lot.states[:, k] = state
        lots.append(lot)
    return lots


def report_ns(start_ns: int, lot: Lot, k: int) -> np.ndarray:
    """Observation times (ns) of report ``k`` of every bay of the lot (the edge stamps microseconds)."""
    return start_ns + k * REPORT_S * NS + lot.phase_us.astype(np.int64) * 1000


def snapshots(start_ns: int, lot: Lot, boundaries: np.ndarray, stale_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(free, occupied) at each boundary: each bay's last report at or before it, fresh within ``stale_ns``.

    What ``gateway.snapshots.HistoryTracker`` computes, vectorised (bays report every 5 minutes, well
    inside the lot's 600 s stale limit, so every bay that reported is fresh).
    """
    reports = lot.states.shape[1]
    offset = boundaries[None, :] - start_ns - lot.phase_us.astype(np.int64)[:, None] * 1000
    k = np.floor_divide(offset, REPORT_S * NS)  # the last report at or before the boundary
    heard = (k >= 0) & (offset - np.maximum(k, 0) * REPORT_S * NS <= stale_ns)
    k = np.clip(k, 0, reports - 1)
    occ = np.take_along_axis(lot.states, k, axis=1).astype(np.int32)
    occupied = np.where(heard, occ, 0).sum(axis=0)
    free = np.where(heard, 1 - occ, 0).sum(axis=0)
    return free, occupied


# -- line protocol, fast and exactly the gateway's ----------------------------------------------------


def bay_lines(site_id: str, lot: Lot, start_ns: int, k: int, seq0: int, ids: str) -> list[str]:
    """Report ``k`` of every bay of the lot, in time order, as the gateway writes them (``to_points``)."""
    obs = report_ns(start_ns, lot, k)
    order = np.argsort(obs, kind="stable")
    out = []
    for rank, b in enumerate(order.tolist()):
        seq = seq0 + rank
        at_us = int(obs[b]) // 1000
        occupied = int(lot.states[b, k])
        status = "occupied" if occupied else "free"
        rid = ids[rank * 32 : rank * 32 + 32]
        out.append(
            f"parking_bay,bay={lot.bays[b]},device={lot.device},lot={lot.id},site={site_id}"
            f' epoch="e1",occupied={occupied}i,reading_id="{rid}",received_ns={(at_us + 20_000) * 1000}i,'
            f'seq={seq}i,status="{status}" {at_us * 1000 + seq % 1000}'
        )
    return out


def check_line_format(site_id: str, lot: Lot, start_ns: int) -> None:
    """The fast lines equal the gateway's mapping and line protocol for the first report."""
    ids = os.urandom(16 * len(lot.bays)).hex()
    fast = bay_lines(site_id, lot, start_ns, 0, 0, ids)
    obs = report_ns(start_ns, lot, 0)
    for rank, b in enumerate(np.argsort(obs, kind="stable").tolist()[:50]):
        at = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=int(obs[b]) // 1000)
        msg = ParkingBayState(
            device_id=lot.device, observed_at=at, reading_id=ids[rank * 32 : rank * 32 + 32], lot_id=lot.id,
            bay_id=lot.bays[b], status="occupied" if lot.states[b, 0] else "free", epoch="e1", seq=rank,
        )  # fmt: skip
        (point,) = to_points(msg, site_id=site_id, received_at=at + timedelta(milliseconds=20))
        assert line_protocol(point) == fast[rank], (line_protocol(point), fast[rank])


def check_snapshots(site: SiteConfig, lot: Lot, start_ns: int, day_start_ns: int) -> int:
    """The numpy snapshots of one lot-day equal ``HistoryTracker``'s, fed the same readings; boundaries compared."""
    cfg = site.lot(lot.id)
    assert cfg is not None
    tracker = HistoryTracker(site, every_s=SNAPSHOT_S, warmup_s=REPORT_S)
    first_k = max((day_start_ns - start_ns) // (REPORT_S * NS) - 2, 0)
    last_k = first_k + 86_400 // REPORT_S + 2
    got: dict[int, tuple[int, int]] = {}
    seq = 0
    for k in range(first_k, last_k):
        obs = report_ns(start_ns, lot, k)
        for b in np.argsort(obs, kind="stable").tolist():
            seq += 1
            at = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=int(obs[b]) // 1000)
            msg = ParkingBayState(
                device_id=lot.device, observed_at=at, reading_id=f"r{seq:012d}", lot_id=lot.id, bay_id=lot.bays[b],
                status="occupied" if lot.states[b, k] else "free", epoch="e1", seq=seq,
            )  # fmt: skip
            for p in tracker.apply(msg, site_id=site.site.id):
                got[p.time_ns] = (int(p.fields["free"]), int(p.fields["occupied"]))
    times = np.array(sorted(got), dtype=np.int64)
    free, occupied = snapshots(start_ns, lot, times, int(cfg.stale_after_s * NS))
    want = {int(t): (int(f), int(o)) for t, f, o in zip(times, free, occupied, strict=True)}
    assert got == want, "numpy snapshots differ from HistoryTracker's"
    return len(got)


# -- writing -------------------------------------------------------------------------------------------


class Writers:
    """``n`` threads, each with its own connection, writing 5,000-line batches from a bounded queue."""

    def __init__(self, url: str, db: str, n: int) -> None:
        self.q: queue.Queue[list[str] | None] = queue.Queue(maxsize=4 * n)
        self.lines = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(url, db), daemon=True) for _ in range(n)]
        for t in self._threads:
            t.start()

    def _run(self, url: str, db: str) -> None:
        writer = InfluxWriter(url, db, timeout_s=120)
        while (batch := self.q.get()) is not None:
            for attempt in range(5):
                try:
                    result = writer.write(batch)
                    if result.dropped:
                        self.errors.append(result.dropped[0].error)
                    break
                except Exception as exc:  # a slow or busy server: retry, as the gateway would
                    if attempt == 4:
                        self.errors.append(repr(exc))
                    wall.sleep(1 + attempt)
            with self._lock:
                self.lines += len(batch)
        writer.close()

    def put(self, batch: list[str]) -> None:
        self.q.put(batch)

    def close(self) -> None:
        for _ in self._threads:
            self.q.put(None)
        for t in self._threads:
            t.join()


def write_all(
    url: str, db: str, site: SiteConfig, lots: list[Lot], start_ns: int, reports: int, batch: int, writers: int
) -> dict[str, Any]:
    """Every bay report and every lot snapshot, in time order day by day, in ``batch``-line requests."""
    out = Writers(url, db, writers)
    site_id = site.site.id
    pending: list[str] = []
    seqs = {lot.id: 0 for lot in lots}
    t0 = wall.perf_counter()
    snaps = 0
    per_day = 86_400 // REPORT_S
    for day0 in range(0, reports, per_day):
        for k in range(day0, min(day0 + per_day, reports)):
            for lot in lots:
                ids = os.urandom(16 * len(lot.bays)).hex()
                pending += bay_lines(site_id, lot, start_ns, k, seqs[lot.id], ids)
                seqs[lot.id] += len(lot.bays)
                while len(pending) >= batch:
                    out.put(pending[:batch])
                    del pending[:batch]
        # The day's lot snapshots (what the gateway adds while it writes those readings).
        first, last = start_ns + day0 * REPORT_S * NS, start_ns + min(day0 + per_day, reports) * REPORT_S * NS
        boundaries = np.arange(first, last, SNAPSHOT_S * NS, dtype=np.int64)
        for lot, cfg in zip(lots, site.parking, strict=True):
            free, occupied = snapshots(start_ns, lot, boundaries, int(cfg.stale_after_s * NS))
            unknown = len(lot.bays) - free - occupied
            pending += [
                f"lot_occupancy,lot={lot.id},site={site_id} free={f}i,occupied={o}i,unknown={u}i {t}"
                for t, f, o, u in zip(
                    boundaries.tolist(), free.tolist(), occupied.tolist(), unknown.tolist(), strict=True
                )
            ]
            snaps += len(boundaries)
        print(
            f"  day {day0 // per_day + 1}/{-(-reports // per_day)}: {out.lines:,} lines written,"
            f" {out.lines / (wall.perf_counter() - t0):,.0f} lines/s",
            flush=True,
        )
    for i in range(0, len(pending), batch):
        out.put(pending[i : i + batch])
    out.close()
    elapsed = wall.perf_counter() - t0
    if out.errors:
        raise SystemExit(f"writes failed: {out.errors[:3]}")
    return {
        "lines": out.lines,
        "snapshot_points": snaps,
        "seconds": round(elapsed, 1),
        "lines_per_s": round(out.lines / elapsed),
    }


# -- measuring -------------------------------------------------------------------------------------------


async def measure(
    url: str, db: str, site: SiteConfig, tz: ZoneInfo, day: date, week_end: date, rounds: int, raw_rounds: int
) -> dict[str, Any]:
    import httpx

    from server.app import create_app
    from server.dbmonitor import DatabaseMonitor
    from server.history import Window, floor_bucket, local_midnight, read_buckets
    from server.influx import InfluxClient
    from server.live import LiveState
    from server.settings import ServerSettings

    http = httpx.AsyncClient(base_url=url, timeout=120)
    client = InfluxClient(http, db)
    site_id = site.site.id
    day_w = Window(local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz), "1h", tz)
    week_start = local_midnight(week_end - timedelta(days=7), tz)
    week_w = Window(floor_bucket(week_start, "5m", tz), local_midnight(week_end, tz), "5m", tz)
    raw_day = (
        f'SELECT sum("occupied") AS "occupied", count("occupied") AS "reports" FROM "parking_bay"'
        f" WHERE \"site\" = '{site_id}' AND time >= {day_w.start_ns} AND time < {day_w.end_ns}"
        f" GROUP BY time(1h), \"lot\" fill(none) tz('{tz.key}')"
    )
    raw_week = (
        f'SELECT sum("occupied") AS "occupied", count("occupied") AS "reports" FROM "parking_bay"'
        f" WHERE \"site\" = '{site_id}' AND \"lot\" = '{BIG_LOT}' AND time >= {week_w.start_ns}"
        f" AND time < {week_w.end_ns} GROUP BY time(5m) fill(none) tz('{tz.key}')"
    )
    live = LiveState(site)
    state = Path(tempfile.mkdtemp(prefix="bench-history-state-"))
    settings = ServerSettings(site_config=SITE, state_dir=state, api_keys=f"bench:{KEY}")  # type: ignore[arg-type]
    app = create_app(settings, site=site, live=live, connect=False)
    app.state.runtime.database = DatabaseMonitor(client, live, bootstrap_window_s=60, interval_s=60)
    headers = {"X-API-Key": KEY}
    day_path = f"/v1/parking/lots/{BIG_LOT}/history?every=1h&from={day}&to={day + timedelta(days=1)}"
    week_path = f"/v1/parking/lots/{BIG_LOT}/history?every=5m&from={week_end - timedelta(days=7)}&to={week_end}"

    results: dict[str, list[float]] = {}
    answers: dict[str, Any] = {}

    async def timed(name: str, coro: Any) -> Any:
        t = wall.perf_counter()
        value = await coro
        results.setdefault(name, []).append((wall.perf_counter() - t) * 1000)
        return value

    async with app.router.lifespan_context(app):
        api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench", headers=headers)
        for round_ in range(rounds):
            answers["day"] = await timed(
                "day_hourly_all_lots",
                read_buckets(client, h.LOT_OCCUPANCY, day_w, {"site": site_id}, group_by=("lot",)),
            )
            answers["week"] = await timed(
                "week_5m_one_lot", read_buckets(client, h.LOT_OCCUPANCY, week_w, {"site": site_id, "lot": BIG_LOT})
            )
            if round_ < raw_rounds:  # the raw reference takes seconds: fewer rounds of it
                answers["raw_day"] = await timed("raw_day_hourly_all_lots", client.query(raw_day))
                await timed("raw_week_5m_one_lot", client.query(raw_week))
            r = await timed("endpoint_day_hourly_one_lot", api.get(day_path))
            assert r.status_code == 200, r.text
            r = await timed("endpoint_week_5m_one_lot", api.get(week_path))
            assert r.status_code == 200, r.text
            answers["endpoint_week_buckets"] = len(r.json()["buckets"])
        await api.aclose()
    await http.aclose()
    shutil.rmtree(state, ignore_errors=True)
    summary = {}
    for name, ms in results.items():
        warm = ms[1:] or ms
        summary[name] = {
            "cold_ms": round(ms[0], 1),
            "median_ms": round(statistics.median(warm), 1),
            "p90_ms": round(sorted(warm)[math.ceil(0.9 * len(warm)) - 1], 1),
            "min_ms": round(min(warm), 1),
        }
    return {
        "timings": summary,
        "answers": answers,
        "day_window": [day_w.start_ns, day_w.end_ns],
        "week_window": [week_w.start_ns, week_w.end_ns],
    }


def check_day(answer: Any, lots: list[Lot], site: SiteConfig, start_ns: int, day_w: tuple[int, int]) -> int:
    """Hourly mean occupied per lot from the rollups equals the mean of the numpy snapshots."""
    checked = 0
    for lot, cfg in zip(lots, site.parking, strict=True):
        by_time = answer.of((lot.id,))
        for at in range(day_w[0], day_w[1], 3600 * NS):
            boundaries = np.arange(at, at + 3600 * NS, SNAPSHOT_S * NS, dtype=np.int64)
            _, occupied = snapshots(start_ns, lot, boundaries, int(cfg.stale_after_s * NS))
            v = by_time[at]
            assert v["samples"] == 60 and v["occupied_sum"] == int(occupied.sum()), (lot.id, at, v)
            assert (v["occupied_min"], v["occupied_max"]) == (int(occupied.min()), int(occupied.max()))
            checked += 1
    return checked


def settle(pid: int, *, below: float = 15.0, window_s: float = 10.0, limit_s: float = 900.0) -> float:
    """Seconds until InfluxDB's CPU use stays below ``below`` % for ``window_s`` (its compactions after the
    bulk write are done), at most ``limit_s``: queries are measured on a settled store, as in production."""
    import psutil

    proc = psutil.Process(pid)
    t0 = wall.perf_counter()
    proc.cpu_percent(None)
    quiet = 0.0
    while quiet < window_s and wall.perf_counter() - t0 < limit_s:
        wall.sleep(2.0)
        quiet = quiet + 2.0 if proc.cpu_percent(None) < below else 0.0
    return wall.perf_counter() - t0


def disk_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--raw-rounds", type=int, default=5, help="rounds that also run the (slow) raw reference queries")
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--writers", type=int, default=2)
    p.add_argument("--seed", type=int, default=20261129)
    p.add_argument("--workdir", type=Path, default=None, help="where the temp dir goes (default: the system's)")
    p.add_argument("--keep", action="store_true", help="keep the InfluxDB data dir (printed) instead of deleting it")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    site = load_model(SITE, SiteConfig)
    tz = ZoneInfo(site.site.timezone)
    today = datetime.now(tz).date()
    end = datetime.combine(today, datetime.min.time(), tzinfo=tz)
    start = datetime.combine(today - timedelta(days=args.days), datetime.min.time(), tzinfo=tz)
    start_ns = int(start.timestamp()) * NS
    reports = int((end - start).total_seconds()) // REPORT_S
    bays = sum(len(lot.bay_ids()) for lot in site.parking)
    print(f"site {site.site.id}: {len(site.parking)} lots, {bays:,} bays; {args.days} days from {start.date()}:"
          f" {bays * reports:,} raw points")  # fmt: skip

    t = wall.perf_counter()
    lots = simulate(site, start, reports, tz, args.seed)
    simulate_s = wall.perf_counter() - t
    check_line_format(site.site.id, lots[0], start_ns)
    check_day_index = min(2, args.days - 1)
    checked_snaps = check_snapshots(site, lots[0], start_ns, start_ns + check_day_index * 86_400 * NS)
    print(
        f"simulated in {simulate_s:.1f} s; line format and {checked_snaps} snapshots checked against the gateway's code"
    )

    work = Path(tempfile.mkdtemp(prefix="bench-history-", dir=args.workdir))
    influx = start_influxd(work / "influxdb")
    results: dict[str, Any] = {}
    try:
        url, db = f"http://{influx.host}:{influx.port}", "bench"
        writer = InfluxWriter(url, db, timeout_s=600)
        writer.create_database()
        setup = HistorySetup(writer.execute, RetentionPlan(db, raw_days=args.days + 30))
        setup.ensure()  # as the gateway does at start: policies and continuous queries
        print("writing ...", flush=True)
        written = write_all(url, db, site, lots, start_ns, reports, args.batch, args.writers)
        print(f"wrote {written['lines']:,} lines in {written['seconds']} s ({written['lines_per_s']:,}/s)")

        t = wall.perf_counter()
        statements = 0
        for rollup in h.ROLLUPS:
            for q in backfill_statements(
                h.LOT_OCCUPANCY, rollup, db, setup.raw_rp, start_ns, int(end.timestamp()) * NS
            ):
                writer.execute(q)
                statements += 1
        backfill_s = wall.perf_counter() - t
        print(f"rollups built in {backfill_s:.1f} s ({statements} SELECT ... INTO statements)")
        settle_s = settle(influx.pid)
        print(f"InfluxDB idle again after {settle_s:.0f} s (compactions after the bulk write)")
        counts = {
            name: writer.execute(q)[0]["values"][0][1]
            for name, q in {
                "raw_points": 'SELECT count("occupied") FROM "parking_bay"',
                "snapshots": 'SELECT count("free") FROM "lot_occupancy"',
                "rollup_5m_points": 'SELECT count("samples") FROM "bench"."rollup_5m"."lot_occupancy"',
                "rollup_1h_points": 'SELECT count("samples") FROM "bench"."rollup_1h"."lot_occupancy"',
            }.items()
        }
        print(f"stored: {counts}")

        day = today - timedelta(days=2)  # a whole day inside the range
        measured = asyncio.run(measure(url, db, site, tz, day, today - timedelta(days=1), args.rounds, args.raw_rounds))
        hours_checked = check_day(measured["answers"]["day"], lots, site, start_ns, tuple(measured["day_window"]))
        timings = measured["timings"]
        ratio = {
            "day_hourly_all_lots_vs_raw": round(
                timings["day_hourly_all_lots"]["median_ms"] / timings["raw_day_hourly_all_lots"]["median_ms"], 4
            ),
            "week_5m_one_lot_vs_raw": round(
                timings["week_5m_one_lot"]["median_ms"] / timings["raw_week_5m_one_lot"]["median_ms"], 4
            ),
            "week_5m_one_lot_vs_raw_day": round(
                timings["week_5m_one_lot"]["median_ms"] / timings["raw_day_hourly_all_lots"]["median_ms"], 4
            ),
        }
        results = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "influxdb": writer.ping(),
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
            "site": site.site.id,
            "lots": len(site.parking),
            "bays": bays,
            "days": args.days,
            "report_every_s": REPORT_S,
            "range": [start.isoformat(), end.isoformat()],
            "measured_day": day.isoformat(),
            "measured_week_end": (today - timedelta(days=1)).isoformat(),
            "stored": counts,
            "simulate_s": round(simulate_s, 1),
            "write": written,
            "backfill": {"seconds": round(backfill_s, 1), "statements": statements},
            "disk_mb": disk_mb(work / "influxdb"),
            "rounds": args.rounds,
            "raw_rounds": args.raw_rounds,
            "settle_s": round(settle_s, 1),
            "timings": timings,
            "ratios": ratio,
            "checked": {"snapshot_boundaries_vs_tracker": checked_snaps, "lot_hours_vs_numpy": hours_checked,
                        "endpoint_week_buckets": measured["answers"]["endpoint_week_buckets"]},
            "targets_ms": {"day_hourly_all_lots": 100, "week_5m_one_lot": 100},
        }  # fmt: skip
        writer.close()
        print(json.dumps({"timings": timings, "ratios": ratio}, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        influx.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
