"""One worked example of each footfall analytic on the Dresden demo site (docs/analytics.md).

The demo's one camera replays a short recorded clip, so a running demo does not
produce weeks of footfall, nor a street line or a line shared by two zones.
This script writes demo-site data instead, with known parameters, and asks the
real API for every analytic:

* the site: ``district/sites/dresden.yaml`` plus what analytics need and the
  demo lacks: a second camera on the Altmarkt node, at the north end of Prager
  Straße, with a pavement line (the passers-by: Altmarkt's ``street_line``) and
  a line across the Seestraße crossing between Prager Straße and the Altmarkt
  (``from_zone``: the flow between the two zones);
* the data (seeded): 5-minute footfall intervals for the last ``--weeks``
  weeks and the same week a year earlier (6 % fewer people), with a daily and
  weekly retail profile; everyone who enters the Altmarkt stays 10, 25 or
  40 minutes (25 % / 50 % / 25 %: 25 min on average); 3 passers-by each way on
  Prager Straße per Altmarkt visitor; a quarter of the visitors come across
  the Seestraße crossing and a fifth leave that way; cars arrive at the
  Altmarkt garage in proportion to the footfall one hour later and stay 1.5-2.5 h;
* rolled up as the gateway's continuous queries would, then the server (the
  real app under uvicorn, on a private InfluxDB) is asked each endpoint.

Run: ``.venv/bin/python scripts/analytics_example.py`` (about a minute). It
starts its own influxd in a temporary directory and stops it (by pid) at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time as time_module
import urllib.parse
import urllib.request
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import uvicorn
import yaml

from contracts import history as h
from contracts.configfile import load_model
from contracts.site import SiteConfig
from contracts.storage import M_FOOTFALL, StoredPoint, to_ns
from district.demo import DEMO_SITE
from district.services import free_port, start_influxd
from gateway.influx import InfluxWriter, line_protocol
from gateway.retention import HistorySetup, RetentionPlan, backfill_statements
from server.app import create_app
from server.settings import ServerSettings

BERLIN = ZoneInfo("Europe/Berlin")
KEY = "analytics-example-key-0123456789"
SITE_ID = "dresden"
#: People entering the Altmarkt per 5 minutes, by local hour (a retail day), and by weekday (Sunday: shops shut).
HOURLY = [0.3, 0.2, 0.2, 0.2, 0.2, 0.3, 0.6, 2, 5, 9, 14, 18, 22, 24, 20, 19, 21, 23, 17, 11, 6, 3, 1.5, 0.6]
WEEKDAY = [0.85, 0.9, 0.95, 1.0, 1.15, 1.35, 0.45]
DWELL_MIN = ([10, 25, 40], [0.25, 0.5, 0.25])
PARK_MIN = ([90, 120, 150], [0.3, 0.4, 0.3])
STEP = timedelta(minutes=5)


def site_file(out: Path) -> Path:
    """The demo site plus a street line, a boundary line (and the camera that counts them)."""
    data = yaml.safe_load(Path(DEMO_SITE).read_text())
    data["cameras"].append(
        {
            "id": "cam-prager-north",
            "device": "edge-cam-altmarkt",
            "name": "Prager Straße, north end",
            "lines": [
                {"id": "prager_pavement", "zone": "prager-strasse"},
                {"id": "seestrasse_crossing", "zone": "altmarkt", "from_zone": "prager-strasse"},
            ],
        }
    )
    for zone in data["zones"]:
        if zone["id"] == "altmarkt":
            zone["street_line"] = {"camera": "cam-prager-north", "line": "prager_pavement"}
    path = out / "dresden-analytics.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    load_model(path, SiteConfig, strict=False)
    return path


def footfall_point(at: datetime, zone: str, camera: str, line: str, towards: int, away: int) -> StoredPoint:
    """One interval [at, at + 5 min) of one line, as the gateway stores it (fields trimmed to the counts)."""
    tags = {"site": SITE_ID, "device": "edge-cam-altmarkt", "camera": camera, "zone": zone, "line": line}
    return StoredPoint(M_FOOTFALL, tags, {"towards": towards, "away": away, "interval_s": 300.0}, to_ns(at) + 1)


def generate(
    start: datetime, end: datetime, scale: float, rng: np.random.Generator, *, counted: bool = True
) -> list[StoredPoint]:
    """Footfall and garage snapshots over [start, end) (UTC), 5-minute steps.

    The snapshots carry the arrivals the gateway counts (bays gone free -> occupied); ``--no-counted-arrivals``
    drops them, as in data written before the gateway counted them.
    """
    steps = int((end - start) / STEP)
    times = [start + i * STEP for i in range(steps)]
    rate = np.array([HOURLY[t.astimezone(BERLIN).hour] * WEEKDAY[t.astimezone(BERLIN).weekday()] for t in times])
    rate *= scale
    entries = rng.poisson(rate)
    via_crossing = rng.binomial(entries, 0.25)
    exits_door = np.zeros(steps + 12, dtype=int)
    exits_crossing = np.zeros(steps + 12, dtype=int)
    for i, n in enumerate(entries):
        if n == 0:
            continue
        stays = rng.choice(DWELL_MIN[0], size=n, p=DWELL_MIN[1]) // 5
        crossing = rng.random(n) < 0.2
        for s, c in zip(stays, crossing, strict=True):
            (exits_crossing if c else exits_door)[i + s] += 1
    # Cars: arrivals follow the footfall one hour (12 steps) later; each stays 1.5-2.5 h.
    ahead = np.concatenate([rate[12:], np.full(12, rate[-1])])
    arrivals = rng.poisson(0.35 * ahead)
    leaving = np.zeros(steps + 40, dtype=int)
    for i, n in enumerate(arrivals):
        for s in rng.choice(PARK_MIN[0], size=n, p=PARK_MIN[1]) // 5:
            leaving[i + s] += 1
    points: list[StoredPoint] = []
    lines = ["L1_road_west_x250", "L2_road_centre_x430", "L3_road_east_x650"]
    occupied = 0
    for i, at in enumerate(times):
        door_in = rng.multinomial(entries[i] - via_crossing[i], [1 / 3] * 3)
        door_out = rng.multinomial(exits_door[i], [1 / 3] * 3)
        for line, n, x in zip(lines, door_in, door_out, strict=True):
            points.append(footfall_point(at, "altmarkt", "cam-altmarkt-north", line, int(n), int(x)))
        points.append(
            footfall_point(at, "altmarkt", "cam-prager-north", "seestrasse_crossing", int(via_crossing[i]),
                           int(exits_crossing[i]))
        )  # fmt: skip
        passers = rng.poisson(3 * rate[i], size=2)
        points.append(
            footfall_point(at, "prager-strasse", "cam-prager-north", "prager_pavement", int(passers[0]),
                           int(passers[1]))
        )  # fmt: skip
        occupied = min(400, max(0, occupied + int(arrivals[i]) - int(leaving[i])))
        points.append(
            h.lot_occupancy_point(site_id=SITE_ID, lot_id="dresdenaltmarkt", free=400 - occupied,
                                  occupied=occupied, unknown=0, time_ns=to_ns(at + STEP),
                                  arrivals=int(arrivals[i]) if counted else None)
        )  # fmt: skip
    return points


def write(url: str, db: str, points: list[StoredPoint]) -> None:
    lines = [line_protocol(p) for p in points]
    params = urllib.parse.urlencode({"db": db, "precision": "ns"})
    for i in range(0, len(lines), 5000):
        req = urllib.request.Request(
            f"{url}/write?{params}", data="\n".join(lines[i : i + 5000]).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 204


def abbreviate(value: Any, depth: int = 0) -> Any:
    """Lists cut to their first 3 items (and how many there were), for printing."""
    if isinstance(value, list):
        head = [abbreviate(v, depth + 1) for v in value[:3]]
        return head + ([f"... {len(value)} in all"] if len(value) > 3 else [])
    if isinstance(value, dict):
        return {k: abbreviate(v, depth + 1) for k, v in value.items()}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--no-counted-arrivals", action="store_true", help="snapshots without `arrivals`")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rng = np.random.default_rng(args.seed)
    today = datetime.now(BERLIN).date()
    end = datetime.combine(today, time(0), tzinfo=BERLIN).astimezone(UTC)
    start = end - timedelta(days=7 * args.weeks)
    year_end = datetime.combine(today - timedelta(days=364), time(0), tzinfo=BERLIN).astimezone(UTC)
    with tempfile.TemporaryDirectory(prefix="analytics-example-") as tmp:
        work = Path(tmp)
        site = site_file(work)
        influxd = start_influxd(work / "influxd")
        try:
            url = f"http://{influxd.host}:{influxd.port}"
            urllib.request.urlopen(f"{url}/query", data=b"q=CREATE+DATABASE+district", timeout=10).read()
            counted = not args.no_counted_arrivals
            points = generate(start, end, 1.0, rng, counted=counted)
            points += generate(year_end - timedelta(days=7), year_end, 1 / 1.06, rng, counted=counted)
            write(url, "district", points)
            writer = InfluxWriter(url, "district")
            setup = HistorySetup(writer.execute, RetentionPlan("district", raw_days=3650))
            setup.ensure()
            for spec in h.ROLLUP_SPECS:
                for rollup in h.ROLLUPS:
                    for q in backfill_statements(spec, rollup, "district", setup.raw_rp,
                                                 to_ns(year_end - timedelta(days=8)), to_ns(end)):  # fmt: skip
                        setup.execute(q)
            writer.close()
            ask(site, url, today)
        finally:
            influxd.stop()


def ask(site: Path, influx_url: str, today: date) -> None:
    settings = ServerSettings(
        site_config=site, influx_url=influx_url, influx_db="district", api_keys={"example": KEY},
        mqtt_port=free_port(), bootstrap_timeout_s=1, state_dir=site.parent / "state",
    )  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise SystemExit("the server did not start")
            threading.Event().wait(0.1)
        week = f"from={today - timedelta(days=7)}&to={today}"
        day = f"from={today - timedelta(days=2)}&to={today - timedelta(days=1)}"
        requests = [
            f"/v1/analytics/zones/altmarkt/peaks?from={today - timedelta(days=28)}&to={today}",
            f"/v1/analytics/lots/dresdenaltmarkt/peaks?from={today - timedelta(days=28)}&to={today}",
            f"/v1/analytics/zones/altmarkt/change?to={today}",
            f"/v1/analytics/zones/altmarkt/capture-rate?{week}&every=1d",
            f"/v1/analytics/zones/altmarkt/dwell-time?{day}&every=1h",
            f"/v1/analytics/zones/altmarkt/dwell-time?{week}&every=1d",
            f"/v1/analytics/flows?{week}&every=1d",
            f"/v1/analytics/areas/altmarkt/parking-footfall?{week}&max_lag_h=3",
        ]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for path in requests:
                began = time_module.perf_counter()
                r = client.get(path, headers={"X-API-Key": KEY})
                took_ms = (time_module.perf_counter() - began) * 1000
                print(
                    f"GET {path}  ->  {r.status_code} in {took_ms:.0f} ms (this machine, one request; not a benchmark)"
                )
                print(json.dumps(abbreviate(r.json()), ensure_ascii=False, indent=1))
                print()
    finally:
        server.should_exit = True
        thread.join(30)


if __name__ == "__main__":
    main()
