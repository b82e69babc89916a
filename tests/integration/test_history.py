"""History end to end on real InfluxDB: the gateway's set-up, snapshots and rollups, and the endpoints' numbers.

* The gateway, started on a site, creates the retention policies and the
  continuous queries, and writes lot snapshots and locker transitions derived
  from the readings it stores.
* Two DST change days (Europe/Berlin: 2026-03-29 has 23 hours, 2026-10-25 has
  25) of readings, written with the gateway's own mapping and snapshot code,
  rolled up with the continuous queries' own ``SELECT ... INTO`` for part of
  the time (the rest stays raw, as if the continuous query had not run yet):
  every number the endpoints give is checked against one computed here from
  the readings, independently of the code under test.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from contracts import (
    FootfallCount,
    LineCount,
    LockerCompartmentState,
    Message,
    ParkingBayState,
    encode,
    topics,
    utcnow,
)
from contracts import history as h
from contracts.configfile import load_model
from contracts.site import SiteConfig
from contracts.storage import StoredPoint, to_ns, to_points
from district.services import Service
from gateway.influx import InfluxWriter, line_protocol
from gateway.retention import HistorySetup, RetentionPlan, backfill_statements, cq_name
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from gateway.snapshots import HistoryTracker
from tests.conftest import Influx, mqtt_access, wait_for
from tests.integration.test_server import health, publisher, serve, settings_for

pytestmark = pytest.mark.integration

BERLIN = ZoneInfo("Europe/Berlin")
SITE_ID = "hist"
KEY = "hist-operator-key-0123456789"
SITE_YAML = """
site: {id: hist, name: History test site, timezone: Europe/Berlin}
zones:
  - {id: square, name: Square, capacity: 500}
parking:
  - id: lot1
    name: Lot One
    coords: {lat: 51.05, lng: 13.73}
    bays: {prefix: "B", count: 4, width: 1}
    stale_after_s: 300
lockers:
  - id: bank1
    name: Bank One
    coords: {lat: 51.05, lng: 13.73}
    compartments: [{id: C1, size: S}, {id: C2, size: M}]
cameras:
  - id: cam1
    device: cam-node
    lines: [{id: north, zone: square}, {id: south, zone: square}]
"""
DAYS = (date(2026, 3, 29), date(2026, 10, 25))
DAY_NS = 86_400 * 10**9


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE_YAML)
    return path


def local(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=BERLIN).astimezone(UTC)


# -- the readings, and what they should show --------------------------------------------------------


def bay_occupied(bay_n: int, at: datetime) -> bool:
    """Bay n (1..4) is occupied from local 08:00 for 2n hours, every day."""
    hour = at.astimezone(BERLIN)
    start = datetime.combine(hour.date(), time(8), tzinfo=BERLIN).astimezone(UTC)
    return start <= at < start + timedelta(hours=2 * bay_n)


def occupied_at_snapshot(boundary: datetime) -> int:
    """Occupied bays in the snapshot at ``boundary``: each bay's reading 30 s earlier (they report every minute)."""
    return sum(bay_occupied(n, boundary - timedelta(seconds=30)) for n in range(1, 5))


def towards_of(end: datetime) -> tuple[int, int]:
    """(north, south) entries of the footfall interval ending at ``end``."""
    minute = int(end.timestamp() // 60)
    return minute % 7, minute % 3


def readings(day: date) -> list[Message]:
    """A local day (and 10 minutes before it) of bay, locker and footfall readings, in time order."""
    start, end = local(day) - timedelta(minutes=10), local(day + timedelta(days=1))
    out: list[Message] = []
    seq = 0
    at = start
    while at < end:
        seq += 1
        obs = at + timedelta(seconds=30)
        for n in range(1, 5):
            status = "occupied" if bay_occupied(n, obs) else "free"
            out.append(
                ParkingBayState(
                    device_id="bays-1", observed_at=obs, reading_id=f"b{n}-{seq}-{day}", lot_id="lot1",
                    bay_id=f"B{n}", status=status, epoch="e1", seq=seq * 10 + n,  # type: ignore[arg-type]
                )
            )  # fmt: skip
        north, south = towards_of(at)
        out.append(
            FootfallCount(
                device_id="cam-node", observed_at=at, reading_id=f"f-{seq}-{day}", zone_id="square",
                camera_id="cam1", interval_start=at - timedelta(seconds=60), occupancy=north * 10,
                lines=[LineCount(line_id="north", towards=north, away=1),
                       LineCount(line_id="south", towards=south, away=0)],
            )
        )  # fmt: skip
        at += timedelta(minutes=1)
    # Lockers: C1 deposited at 09:10 and picked up at 11:40 (dwell 150 min), C2 deposited at 10:05, picked up 10:35.
    events = [(local(day) - timedelta(minutes=5), "C1", "free"), (local(day) - timedelta(minutes=5), "C2", "free")]
    events += [(local(day, 9, 10), "C1", "occupied"), (local(day, 10, 5), "C2", "occupied")]
    events += [(local(day, 10, 35), "C2", "free"), (local(day, 11, 40), "C1", "free")]
    for n, (when, cid, status) in enumerate(events):
        out.append(
            LockerCompartmentState(
                device_id="lockers-1", observed_at=when, reading_id=f"l{n}-{day}", bank_id="bank1",
                compartment_id=cid, status=status,  # type: ignore[arg-type]
            )
        )  # fmt: skip
    # Locker refreshes every minute too, so the bank snapshot knows both compartments.
    at = start
    while at < end:
        for cid in ("C1", "C2"):
            state = "free"
            if cid == "C1" and local(day, 9, 10) <= at < local(day, 11, 40):
                state = "occupied"
            if cid == "C2" and local(day, 10, 5) <= at < local(day, 10, 35):
                state = "occupied"
            out.append(
                LockerCompartmentState(
                    device_id="lockers-1", observed_at=at + timedelta(seconds=45),
                    reading_id=f"r-{cid}-{int(at.timestamp())}", bank_id="bank1", compartment_id=cid,
                    status=state,  # type: ignore[arg-type]
                )
            )  # fmt: skip
        at += timedelta(minutes=1)
    return sorted(out, key=lambda m: m.observed_at)


def write_lines(influx: Influx, lines: list[str]) -> None:
    params = urllib.parse.urlencode({"db": influx.db, "precision": "ns"})
    for i in range(0, len(lines), 5000):
        body = "\n".join(lines[i : i + 5000]).encode()
        req = urllib.request.Request(f"{influx.url}/write?{params}", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204


def store(influx: Influx, site: SiteConfig, messages: list[Message]) -> None:
    """What the gateway stores: each message's points (its mapping) and the tracker's derived points."""
    tracker = HistoryTracker(site, every_s=60, warmup_s=120)
    points: list[StoredPoint] = []
    for m in messages:
        points += to_points(m, site_id=SITE_ID, received_at=m.observed_at + timedelta(milliseconds=20))
        points += tracker.apply(m, site_id=SITE_ID)
    write_lines(influx, [line_protocol(p) for p in points])


@pytest.fixture
def history_db(influx_db: Influx, site_file: Path) -> Iterator[tuple[Influx, HistorySetup]]:
    """Both DST days stored and the rollups set up (raw kept 10 years: the days are past 30 days old)."""
    site = load_model(site_file, SiteConfig)
    for day in DAYS:
        store(influx_db, site, readings(day))
    writer = InfluxWriter(influx_db.url, influx_db.db)
    setup = HistorySetup(writer.execute, RetentionPlan(influx_db.db, raw_days=3650))
    setup.ensure()
    yield influx_db, setup
    writer.close()


def api(client: httpx.Client, path: str) -> dict[str, Any]:
    r = client.get(path, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def expected_lot_hours(day: date) -> dict[str, tuple[float, int, int]]:
    """Local hour start (ISO) -> (mean, min, max) occupied over the hour's minute snapshots."""
    out = {}
    at, end = local(day), local(day + timedelta(days=1))
    while at < end:
        values = [occupied_at_snapshot(at + timedelta(minutes=m)) for m in range(60)]
        out[at.astimezone(BERLIN).isoformat()] = (round(sum(values) / 60, 3), min(values), max(values))
        at += timedelta(hours=1)
    return out


def test_endpoints_answer_from_rollups_and_raw_in_local_buckets_across_dst(
    mosquitto: Service, history_db: tuple[Influx, HistorySetup], prefix: str, site_file: Path
) -> None:
    influx, setup = history_db
    spring, autumn = DAYS
    # Roll up everything before local noon of the autumn day, as the continuous queries would have;
    # the afternoon stays raw (the continuous query "has not run yet").
    cutoff = to_ns(local(autumn, 12))
    for spec in h.ROLLUP_SPECS:
        for rollup in h.ROLLUPS:
            for q in backfill_statements(spec, rollup, influx.db, setup.raw_rp, to_ns(local(spring)) - DAY_NS, cutoff):
                setup.execute(q)
    settings = settings_for(site_file, prefix, mosquitto, influx.url, influx.db, api_keys=f"ops:{KEY}")
    with serve(settings) as client:
        wait_for(lambda: health(client)[0] == 200, timeout=15, what="healthz ok")

        # -- hourly, both DST days: 23 and 25 local hours, each equal to the snapshot means -----------
        for day, hours in ((spring, 23), (autumn, 25)):
            body = api(client, f"/v1/parking/lots/lot1/history?from={day}&to={day + timedelta(days=1)}&every=1h")
            assert len(body["buckets"]) == hours
            want = expected_lot_hours(day)
            got = {
                b["start"]: (b["occupied"]["mean"], b["occupied"]["min"], b["occupied"]["max"]) for b in body["buckets"]
            }
            assert got == want
            assert all(b["samples"] == 60 for b in body["buckets"])
            assert all(b["free"]["mean"] + b["occupied"]["mean"] == 4 for b in body["buckets"])
        autumn_body = api(
            client, f"/v1/parking/lots/lot1/history?from={autumn}&to={autumn + timedelta(days=1)}&every=1h"
        )
        assert autumn_body["window"]["sources"] == ["rollup_1h", "raw"]
        assert [b["start"][11:] for b in autumn_body["buckets"][1:5]] == [
            "01:00:00+02:00", "02:00:00+02:00", "02:00:00+01:00", "03:00:00+01:00"
        ]  # fmt: skip

        # -- daily: one 25-hour bucket with 1,500 snapshots, the day from rollup and raw merged ---------
        day_body = api(client, f"/v1/parking/lots/lot1/history?from={autumn}&to={autumn + timedelta(days=1)}&every=1d")
        (bucket,) = day_body["buckets"]
        assert (bucket["start"], bucket["end"]) == ("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00")
        assert bucket["samples"] == 25 * 60
        minutes = [occupied_at_snapshot(local(autumn) + timedelta(minutes=m)) for m in range(25 * 60)]
        assert bucket["occupied"]["mean"] == round(sum(minutes) / len(minutes), 3)
        spring_day = api(
            client, f"/v1/parking/lots/lot1/history?from={spring}&to={spring + timedelta(days=1)}&every=1d"
        )
        assert spring_day["buckets"][0]["samples"] == 23 * 60 and spring_day["window"]["sources"] == ["rollup_1h"]

        # -- 5-minute buckets across the autumn seam (rollup_5m until noon, raw after) -------------------
        five = api(
            client,
            "/v1/parking/lots/lot1/history?from=2026-10-25T11:00:00%2B01:00&to=2026-10-25T13:00:00%2B01:00&every=5m",
        )
        assert five["window"]["sources"] == ["rollup_5m", "raw"] and len(five["buckets"]) == 24
        for b in five["buckets"]:
            start = datetime.fromisoformat(b["start"])
            values = [occupied_at_snapshot(start + timedelta(minutes=m)) for m in range(5)]
            assert (b["samples"], b["occupied"]["mean"]) == (5, round(sum(values) / 5, 3)), b["start"]

        # -- zone footfall per hour and per line (interval counted in the bucket where it ended) --------
        zone = api(client, f"/v1/zones/square/history?from={autumn}&to={autumn + timedelta(days=1)}&every=1h")
        # Every hour holds hundreds of crossings: all published as they are (the k rule: test_analytics.py).
        assert len(zone["buckets"]) == 25 and zone["privacy"] == {"k": 10}
        assert {b["state"] for b in zone["buckets"]} == {"ok"}
        for b in zone["buckets"]:
            start = datetime.fromisoformat(b["start"]).astimezone(UTC)
            ends = [start + timedelta(minutes=m) for m in range(60)]
            north = sum(towards_of(e)[0] for e in ends)
            south = sum(towards_of(e)[1] for e in ends)
            assert (b["entries"], b["exits"]) == (north + south, 60), b["start"]
            assert {x["line"]: x["entries"] for x in b["lines"]} == {"north": north, "south": south}
            assert b["occupancy_mean"] == round(north * 10 / 60, 3)

        # -- lockers: deposits, pickups, dwell, occupancy ----------------------------------------------
        bank = api(client, f"/v1/lockers/bank1/history?from={autumn}&to={autumn + timedelta(days=1)}&every=1h")
        by_hour = {b["start"][11:13] + b["start"][19:]: b for b in bank["buckets"]}
        assert (by_hour["09+01:00"]["deposits"], by_hour["10+01:00"]["deposits"]) == (1, 1)
        assert by_hour["10+01:00"]["pickups"] == 1 and by_hour["10+01:00"]["mean_dwell_s"] == 1800.0
        assert by_hour["11+01:00"]["pickups"] == 1 and by_hour["11+01:00"]["mean_dwell_s"] == 9000.0
        assert by_hour["12+01:00"]["deposits"] == 0 and by_hour["12+01:00"]["mean_dwell_s"] is None
        assert by_hour["10+01:00"]["occupied"] == {"mean": 1.5, "min": 1, "max": 2}
        assert sum(b["deposits"] for b in bank["buckets"]) == 2 == sum(b["pickups"] for b in bank["buckets"])

        # -- peaks: each weekday's busiest local hour --------------------------------------------------
        peaks = api(client, "/v1/parking/lots/lot1/peaks?from=2026-10-19&to=2026-10-26")
        sunday = next(p for p in peaks["peaks"] if p["weekday"] == "sunday")
        assert (sunday["hour"], sunday["occupied_mean"], sunday["days"]) == (9, 4.0, 1)
        # The readings begin ten minutes before Sunday: Saturday has its last hour only, the others nothing.
        assert [p["hour"] for p in peaks["peaks"]] == [None, None, None, None, None, 23, 9]
        zone_peaks = api(client, "/v1/zones/square/peaks?from=2026-10-19&to=2026-10-26")
        sunday = next(p for p in zone_peaks["peaks"] if p["weekday"] == "sunday")
        per_hour: dict[int, int] = {}
        for m in range(25 * 60):
            end = local(autumn) + timedelta(minutes=m)
            per_hour[end.astimezone(BERLIN).hour] = per_hour.get(end.astimezone(BERLIN).hour, 0) + sum(towards_of(end))
        best = max(per_hour, key=lambda hr: (per_hour[hr], -hr))
        assert (sunday["hour"], sunday["entries_mean"], sunday["state"]) == (best, float(per_hour[best]), "ok")
        assert [p["state"] for p in zone_peaks["peaks"]] == ["nodata"] * 5 + ["ok", "ok"]

        # -- errors -------------------------------------------------------------------------------------
        assert client.get("/v1/parking/lots/lot1/history").status_code == 401
        r = client.get("/v1/parking/lots/nope/history", headers={"X-API-Key": KEY})
        assert r.status_code == 404
        r = client.get(
            "/v1/parking/lots/lot1/history?every=5m&from=2026-01-01&to=2026-03-01", headers={"X-API-Key": KEY}
        )
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "span_too_long"


def gateway_settings(mosquitto: Service, influx: Influx, prefix: str, site_file: Path, **over: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        **mqtt_access(mosquitto).settings(), "mqtt_client_id": f"gw-{prefix}",
        "topic_prefix": prefix, "influx_url": influx.url, "influx_db": influx.db, "flush_interval_s": 0.05,
        "site_config": site_file, "history_warmup_s": 0,
    }  # fmt: skip
    values.update(over)
    return GatewaySettings.model_validate(values)


def test_the_gateway_sets_up_history_at_start_and_writes_snapshots_and_transitions(
    mosquitto: Service, influx_db: Influx, prefix: str, site_file: Path
) -> None:
    gw = Gateway(gateway_settings(mosquitto, influx_db, prefix, site_file))
    gw.start()
    try:
        assert gw.wait_ready(15)
        assert gw.history is not None
        assert gw.history.ready.wait(30), "history set-up did not finish"
        policies = {r["name"]: r for r in influx_db.query("SHOW RETENTION POLICIES")}
        assert policies["autogen"]["duration"] == "720h0m0s" and policies["autogen"]["default"]
        assert policies["rollup_5m"]["duration"] == policies["rollup_1h"]["duration"] == "17520h0m0s"
        shown = influx_db.query("SHOW CONTINUOUS QUERIES")
        names = {r["name"] for r in shown}
        for spec in h.ROLLUP_SPECS:
            for rollup in h.ROLLUPS:
                assert cq_name(spec, rollup, influx_db.db, "autogen") in names

        # Readings over three minutes of device time (10 minutes ago: the time policy allows it).
        t0 = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=10)
        sent: list[tuple[str, bytes]] = []
        for minute in range(3):
            for n in range(1, 5):
                status = "occupied" if n <= minute + 1 else "free"
                msg = ParkingBayState(
                    device_id="bays-1", observed_at=t0 + timedelta(minutes=minute, seconds=10 + n),
                    reading_id=f"r{minute}{n}{prefix}", lot_id="lot1", bay_id=f"B{n}", status=status,  # type: ignore[arg-type]
                )  # fmt: skip
                sent.append((topics.build(prefix, SITE_ID, "bays-1", "parking_bay"), encode(msg)))
        for when, status in (
            (t0, "free"),
            (t0 + timedelta(seconds=30), "occupied"),
            (t0 + timedelta(seconds=90), "free"),
        ):
            msg2 = LockerCompartmentState(
                device_id="lockers-1", observed_at=when, reading_id=f"l{status}{when.second}{prefix}",
                bank_id="bank1", compartment_id="C1", status=status,  # type: ignore[arg-type]
            )  # fmt: skip
            sent.append((topics.build(prefix, SITE_ID, "lockers-1", "locker"), encode(msg2)))
        with publisher(mosquitto) as pub:
            for topic, payload in sent:
                pub.publish(topic, payload)
        rows = wait_for(
            lambda: len(q := influx_db.query('SELECT * FROM "lot_occupancy"')) >= 2 and q, what="two lot snapshots"
        )
        # Boundary t0+1min: minute 0's readings (B1 occupied); t0+2min: minute 1's (B1, B2 occupied).
        assert [(r["free"], r["occupied"], r["unknown"]) for r in rows[:2]] == [(3, 1, 0), (2, 2, 0)]
        moves = wait_for(lambda: influx_db.query('SELECT * FROM "locker_transition"'), what="locker transitions")
        assert [(m["deposits"], m["pickups"], m["dwell_s"]) for m in moves] == [(1, 0, None), (0, 1, 60.0)]
    finally:
        gw.stop()
