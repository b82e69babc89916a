"""Synthetic stored history: weeks of footfall and lot snapshots for a site, as the gateway stores them.

The simulated fleet (:mod:`firmware_sim.fleet`) produces readings from now on;
forecasts need four weeks of stored history and the analytics compare weeks
(``docs/forecast.md``, ``docs/analytics.md``). This module writes that
history directly into InfluxDB 1.x, generated, not recorded, for the site's
own entities only: every counting line of every configured camera (tagged with
its camera, device and zone) and every configured lot, nothing else.

* **Footfall** (5-minute intervals per line): people entering a zone per
  5 minutes follow a retail day (:data:`HOURLY`, by local hour) and week
  (:data:`WEEKDAY`, Sunday shut), scaled by the zone's ``capacity`` (1,500:
  1.0); each stays 10, 25 or 40 minutes (:data:`DWELL_MIN`) and leaves the
  way they came. A line with ``from_zone`` (a boundary between two zones)
  carries a quarter of the zone's entries and a fifth of its exits; the
  others share the rest evenly. A zone's ``street_line`` sees three
  passers-by each way per visitor.
* **Lots**, with an occupancy target (``targets``, e.g.
  :func:`firmware_sim.demand.load_targets`: ParkAPI's curves): the fleet's own
  demand model (:class:`firmware_sim.demand.LotDemand`: churn replaced at the
  target, the gap closed with time constant ``tau``, the mean dwell) in
  aggregate, counts per 5 minutes instead of bay by bay.
* **Lots without a target**: cars arrive in proportion to the lot's zone's
  footfall one hour later (the garage of ``scripts/analytics_example.py``),
  scaled to the lot's bays, and stay 1.5-2.5 h (:data:`PARK_MIN`).

Snapshots carry the gateway's ``arrivals`` count unless ``counted`` is off.
:func:`backfill` writes the points (``/write``, 5,000 lines a request), sets
up the gateway's retention policies and continuous queries and builds the
rollups over the span, as the gateway's catch-up would (it only rebuilds
within the raw retention, so an older span would have none).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from contracts import history as h
from contracts import storage
from contracts.site import SiteConfig
from contracts.storage import M_FOOTFALL, StoredPoint, to_ns
from firmware_sim.demand import LotDemand, TargetFn
from gateway.influx import InfluxWriter, line_protocol
from gateway.retention import HistorySetup, RetentionPlan, backfill_statements

#: People entering a zone per 5 minutes, by local hour (a retail day), and by weekday (Sunday: shops shut).
HOURLY = [0.3, 0.2, 0.2, 0.2, 0.2, 0.3, 0.6, 2, 5, 9, 14, 18, 22, 24, 20, 19, 21, 23, 17, 11, 6, 3, 1.5, 0.6]
WEEKDAY = [0.85, 0.9, 0.95, 1.0, 1.15, 1.35, 0.45]
DWELL_MIN = ([10, 25, 40], [0.25, 0.5, 0.25])
PARK_MIN = ([90, 120, 150], [0.3, 0.4, 0.3])
STEP = timedelta(minutes=5)
#: Shares of a zone's entries (and exits) crossing its boundary lines (``from_zone``).
VIA_BOUNDARY_IN, VIA_BOUNDARY_OUT = 0.25, 0.2
#: Passers-by each way on a zone's street line per visitor.
PASSERS_PER_VISITOR = 3
#: A zone of this capacity gets :data:`HOURLY` as it is.
REFERENCE_CAPACITY = 1500
#: Lines per ``/write`` request.
BATCH = 5000


def footfall_point(
    at: datetime, *, site: str, device: str, camera: str, zone: str, line: str, towards: int, away: int
) -> StoredPoint:
    """One interval [at, at + 5 min) of one line as the gateway stores it (:func:`contracts.storage.to_points`):
    at its end (``observed_at``, tiebreak 0), with a reading id of its own and ``received_ns`` the same time."""
    ns = to_ns(at + STEP)
    tags = {
        storage.TAG_SITE: site,
        storage.TAG_DEVICE: device,
        storage.TAG_CAMERA: camera,
        storage.TAG_ZONE: zone,
        storage.TAG_LINE: line,
    }
    fields: dict[str, storage.FieldValue] = {
        storage.F_TOWARDS: towards,
        storage.F_AWAY: away,
        storage.F_INTERVAL_S: STEP.total_seconds(),
        storage.F_READING_ID: f"history-{camera}-{ns}",
        storage.F_RECEIVED_NS: ns,
    }
    return StoredPoint(M_FOOTFALL, tags, fields, ns)


def steps(start: datetime, end: datetime) -> list[datetime]:
    """The 5-minute steps of [start, end)."""
    return [start + i * STEP for i in range(int((end - start) / STEP))]


def retail_rate(times: list[datetime], tz: ZoneInfo) -> np.ndarray:
    """Expected entries per 5 minutes at each time for a zone of :data:`REFERENCE_CAPACITY`."""
    local = [t.astimezone(tz) for t in times]
    return np.array([HOURLY[t.hour] * WEEKDAY[t.weekday()] for t in local], dtype=float)


@dataclass
class _Zone:
    doors: list[tuple[str, str, str]]  # (camera, device, line) leading into the zone from outside the site's zones
    boundaries: list[tuple[str, str, str]]  # lines with ``from_zone``


def footfall(site: SiteConfig, times: list[datetime], rate: np.ndarray, rng: np.random.Generator) -> list[StoredPoint]:
    """Footfall on every configured camera line over ``times`` (see the module docstring)."""
    sid = site.site.id
    street = {(z.street_line.camera, z.street_line.line): z.id for z in site.zones if z.street_line}
    zones: dict[str, _Zone] = {}
    street_lines: list[tuple[str, str, str, str, str]] = []  # camera, device, line, line's zone, zone it fronts
    for cam in site.cameras:
        for line in cam.lines:
            if (cam.id, line.id) in street:
                street_lines.append((cam.id, cam.device, line.id, line.zone, street[cam.id, line.id]))
                continue
            z = zones.setdefault(line.zone, _Zone([], []))
            (z.boundaries if line.from_zone else z.doors).append((cam.id, cam.device, line.id))
    capacity = {z.id: (z.capacity or REFERENCE_CAPACITY) / REFERENCE_CAPACITY for z in site.zones}
    n = len(times)
    points: list[StoredPoint] = []
    zone_rate: dict[str, np.ndarray] = {}
    for zone_id, z in zones.items():
        r = rate * capacity.get(zone_id, 1.0)
        zone_rate[zone_id] = r
        entries = rng.poisson(r)
        both = bool(z.boundaries and z.doors)
        # Who comes (and later leaves) by a boundary line: a share where the zone has doors too, else all.
        via = rng.binomial(entries, VIA_BOUNDARY_IN) if both else (entries if z.boundaries else entries * 0)
        who = np.repeat(np.arange(n), entries)
        stay = rng.choice(DWELL_MIN[0], size=len(who), p=DWELL_MIN[1]) // 5
        boundary_out = rng.random(len(who)) < VIA_BOUNDARY_OUT if both else np.full(len(who), not z.doors)
        leave = who + stay
        keep = leave < n  # people still inside at the end leave after it
        exits_door = np.bincount(leave[keep & ~boundary_out], minlength=n)[:n]
        exits_boundary = np.bincount(leave[keep & boundary_out], minlength=n)[:n]
        for lines, ins, outs in ((z.doors, entries - via, exits_door), (z.boundaries, via, exits_boundary)):
            if not lines:
                continue
            split = len(lines)
            ins_by = rng.multinomial(ins, [1 / split] * split)
            outs_by = rng.multinomial(outs, [1 / split] * split)
            for k, (cam_id, device, line_id) in enumerate(lines):
                points += [
                    footfall_point(at, site=sid, device=device, camera=cam_id, zone=zone_id, line=line_id,
                                   towards=int(ins_by[i, k]), away=int(outs_by[i, k]))
                    for i, at in enumerate(times)
                ]  # fmt: skip
    for cam_id, device, line_id, line_zone, fronts in street_lines:
        r = zone_rate.get(fronts, rate * capacity.get(fronts, 1.0))
        passers = rng.poisson(PASSERS_PER_VISITOR * np.stack([r, r], axis=1))
        points += [
            footfall_point(at, site=sid, device=device, camera=cam_id, zone=line_zone, line=line_id,
                           towards=int(passers[i, 0]), away=int(passers[i, 1]))
            for i, at in enumerate(times)
        ]  # fmt: skip
    return points


def _snapshot(site: str, lot: str, bays: int, occupied: int, at: datetime, arrivals: int | None) -> StoredPoint:
    return h.lot_occupancy_point(site_id=site, lot_id=lot, free=bays - occupied, occupied=occupied, unknown=0,
                                 time_ns=to_ns(at + STEP), arrivals=arrivals)  # fmt: skip


def garage(
    site: str, lot: str, bays: int, times: list[datetime], rate: np.ndarray, rng: np.random.Generator, counted: bool
) -> list[StoredPoint]:
    """Cars arriving one hour ahead of the footfall ``rate`` (0.35 per visitor at 400 bays), staying 1.5-2.5 h."""
    n = len(times)
    ahead = np.concatenate([rate[12:], np.full(min(12, n), rate[-1] if n else 0.0)])
    arrivals = rng.poisson(0.35 * ahead * bays / 400)
    leave = np.repeat(np.arange(n), arrivals) + rng.choice(PARK_MIN[0], size=int(arrivals.sum()), p=PARK_MIN[1]) // 5
    leaving = np.bincount(leave, minlength=n)[:n]
    points, occupied = [], 0
    for i, at in enumerate(times):
        occupied = min(bays, max(0, occupied + int(arrivals[i]) - int(leaving[i])))
        points.append(_snapshot(site, lot, bays, occupied, at, int(arrivals[i]) if counted else None))
    return points


def demand(
    site: str, lot: str, bays: int, target: TargetFn, times: list[datetime], tz: ZoneInfo,
    rng: np.random.Generator, counted: bool,
) -> list[StoredPoint]:  # fmt: skip
    """The fleet's :class:`LotDemand` in aggregate: departures at the mean dwell, arrivals towards the target."""
    model = LotDemand(lot, bays, target, random.Random(0))  # its parameters and target; counts drawn here
    dt = STEP.total_seconds()
    leave_p = 1.0 - math.exp(-dt / model.dwell.mean_s)
    close = 1.0 - math.exp(-dt / model.tau_s)
    points: list[StoredPoint] = []
    occupied = round(model.target_count(times[0].astimezone(tz))) if times else 0
    for at in times:
        goal = model.target_count((at + STEP).astimezone(tz))
        gone = int(rng.binomial(occupied, leave_p))
        net = goal * dt / model.dwell.mean_s + (goal - occupied) * close
        k = int(rng.poisson(abs(net)))
        came = min(k, bays - occupied + gone) if net > 0 else 0
        if net < 0:
            gone += min(k, occupied - gone)  # above target: some leave early
        occupied += came - gone
        points.append(_snapshot(site, lot, bays, occupied, at, came if counted else None))
    return points


def generate(
    site: SiteConfig,
    start: datetime,
    end: datetime,
    rng: np.random.Generator,
    *,
    scale: float = 1.0,
    counted: bool = True,
    targets: Mapping[str, TargetFn] | None = None,
    lots: Collection[str] | None = None,
) -> list[StoredPoint]:
    """Footfall on the site's camera lines and snapshots of its lots over [start, end) (UTC), 5-minute steps.

    ``lots``: only these of the site's lots (None: all of them).

    ``targets``: a lot's occupancy target (0..1 by local time) drives it with the fleet's demand model; a lot
    without one (``targets`` None: every lot) follows its zone's footfall. ``counted`` False drops the
    snapshots' ``arrivals``, as in data written before the gateway counted them.
    """
    tz = ZoneInfo(site.site.timezone)
    times = steps(start, end)
    if not times:
        return []
    rate = retail_rate(times, tz) * scale
    points = footfall(site, times, rate, rng)
    capacity = {z.id: (z.capacity or REFERENCE_CAPACITY) / REFERENCE_CAPACITY for z in site.zones}
    for lot in site.parking:
        if lots is not None and lot.id not in lots:
            continue
        target = (targets or {}).get(lot.id)
        if target is not None:
            points += demand(site.site.id, lot.id, lot.total, target, times, tz, rng, counted)
        else:
            lot_rate = rate * capacity.get(lot.zone or "", 1.0)
            points += garage(site.site.id, lot.id, lot.total, times, lot_rate, rng, counted)
    return points


def write(url: str, db: str, points: list[StoredPoint]) -> None:
    """``/write`` the points, :data:`BATCH` lines a request (InfluxDB 1.x, ns precision), through the gateway's
    :class:`gateway.influx.InfluxWriter`; raises as :func:`_write` says."""
    writer = InfluxWriter(url, db, timeout_s=60)
    try:
        _write(writer, points)
    finally:
        writer.close()


def _write(writer: InfluxWriter, points: list[StoredPoint]) -> None:
    """Raises :class:`common.influxdb.InfluxError` (unreachable, refused) or RuntimeError if a line is dropped."""
    lines = [line_protocol(p) for p in points]
    for i in range(0, len(lines), BATCH):
        result = writer.write(lines[i : i + BATCH])
        if not result.ok:
            first = result.dropped[0]
            raise RuntimeError(f"InfluxDB refused {len(result.dropped)} lines, e.g. {first.line!r}: {first.error}")


@dataclass(frozen=True)
class Backfilled:
    weeks: int
    points: int
    seconds: float

    def __str__(self) -> str:
        if not self.weeks:
            return "history: no backfill (--history-weeks 0)"
        return f"history: {self.weeks} weeks backfilled ({self.points:,} points, synthetic) in {self.seconds:.1f} s"


def backfill(
    url: str,
    db: str,
    site: SiteConfig,
    weeks: int,
    *,
    targets: Mapping[str, TargetFn] | None = None,
    seed: int | None = None,
    now: datetime | None = None,
) -> Backfilled:
    """Write ``weeks`` of synthetic history ending at ``now`` (5-minute floor) and build its rollups.

    Run before the gateway starts on a new database: the raw points go in while the database's default policy
    still keeps everything, then the gateway's retention plan (:class:`gateway.retention.RetentionPlan` from
    the site's ``history:``, as the gateway makes it) is set up and the rollups built over the span.
    ``weeks`` 0 writes nothing and does not contact ``url``.
    """
    began = time.perf_counter()
    if weeks <= 0:
        return Backfilled(0, 0, 0.0)
    now = now or datetime.now(UTC)
    end = datetime.fromtimestamp(to_ns(now) // 10**9 // 300 * 300, UTC)
    start = end - timedelta(weeks=weeks)
    points = generate(site, start, end, np.random.default_rng(seed), targets=targets)
    writer = InfluxWriter(url, db, timeout_s=60)
    try:
        writer.create_database()
        _write(writer, points)
        setup = HistorySetup(writer.execute, RetentionPlan.of(db, config=site.history))
        setup.ensure()
        written = {p.measurement for p in points}
        for spec in h.ROLLUP_SPECS:
            if spec.measurement not in written:
                continue
            for rollup in h.ROLLUPS:
                # Whole buckets before ``end``: the continuous queries and the gateway's catch-up go on from there.
                stop = to_ns(end) // (rollup.seconds * 10**9) * (rollup.seconds * 10**9)
                for q in backfill_statements(spec, rollup, db, setup.raw_rp, to_ns(start), stop, chunk_s=7 * 86_400):
                    setup.execute(q)
    finally:
        writer.close()
    return Backfilled(weeks, len(points), time.perf_counter() - began)
