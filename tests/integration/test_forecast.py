"""Forecast endpoints end to end on real InfluxDB and the provisioned broker (TLS, passwords, ACL): five weeks
of stored footfall and lot snapshots are read back through the history module, fitted, and served; a zone
without history says so instead of zeros, and gets a forecast at the next scheduled refresh once its history
is stored; a cut link to the database at refresh time keeps the last forecast until it comes back."""

from __future__ import annotations

import itertools
import math
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from contracts import ParkingBayState, encode, new_reading_id, topics, utcnow
from contracts.site import SiteConfig
from district.services import Service
from tests.conftest import Influx, wait_for
from tests.integration.test_field_faults import CutProxy
from tests.integration.test_server import publisher, serve, settings_for

pytestmark = pytest.mark.integration

SITE_YAML = """
site: {id: fc, name: Forecast test site, timezone: Europe/Berlin}
zones:
  - {id: square, name: Square, capacity: 500}
  - {id: empty, name: Empty, capacity: 100}
parking:
  - id: lot1
    name: Lot One
    coords: {lat: 51.05, lng: 13.73}
    bays: {prefix: "B", count: 40, width: 2}
cameras:
  - id: cam1
    device: cam-node
    lines: [{id: north, zone: square}, {id: south, zone: empty}]
"""
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
#: Short, so the test sees a second scheduled run (each run fits two zones and one lot: a few seconds).
REFRESH_S = 3.0


def entries(at: datetime) -> int:
    """Entries in the hour starting at ``at``: a noon bump, quieter Sundays (local time)."""
    local = at.astimezone(BERLIN)
    day = 0.3 if local.weekday() == 6 else 1.0
    return round(100 * day * math.exp(-((local.hour - 13) ** 2) / 18)) + 2


def occupied(at: datetime) -> int:
    local = at.astimezone(BERLIN)
    return round(30 * math.exp(-((local.hour + local.minute / 60 - 14) ** 2) / 20)) + 3


def write(influx: Influx, lines: list[str]) -> None:
    params = urllib.parse.urlencode({"db": influx.db, "precision": "ns"})
    for i in range(0, len(lines), 5000):
        req = urllib.request.Request(f"{influx.url}/write?{params}", data="\n".join(lines[i : i + 5000]).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204


def footfall_lines(zone: str, line: str) -> list[str]:
    """Five weeks of hourly footfall of one zone up to NOW, as the gateway stores it."""
    lines = []
    for k in range(35 * 24, 0, -1):
        at = NOW - timedelta(hours=k)
        ns = int((at + timedelta(minutes=59)).timestamp()) * 10**9  # an interval counts where it ends
        lines.append(f"footfall,site=fc,zone={zone},camera=cam1,line={line} towards={entries(at)}i,away=1i {ns}")
    return lines


def interpolated(points: list[dict[str, Any]], at: datetime) -> float:
    """docs/guidance.md's reading of a forecast at an instant: each 15-minute mean at its step's midpoint,
    linear between midpoints, flat in the first and last half step."""
    mids = [datetime.fromisoformat(p["start"]) + timedelta(minutes=7.5) for p in points]
    vals = [p["occupied"]["mean"] for p in points]
    if at <= mids[0]:
        return float(vals[0])
    for (t0, v0), (t1, v1) in itertools.pairwise(zip(mids, vals, strict=True)):
        if at <= t1:
            return float(v0 + (v1 - v0) * ((at - t0) / (t1 - t0)))
    return float(vals[-1])


def guided_by_the_forecast(api: httpx.Client, broker: Service, prefix: str) -> None:
    """Live bays heard a moment ago (so no trend yet): parking guidance for an arrival in 3 h takes the lot's
    forecast change from now to then, added to the live spaces."""
    bays = SiteConfig.model_validate(yaml.safe_load(SITE_YAML)).lot("lot1")
    assert bays is not None
    ids = bays.bay_ids()
    with publisher(broker) as pub:
        for i, bay_id in enumerate(ids):
            state = ParkingBayState(
                device_id="bays-1", observed_at=utcnow(), reading_id=new_reading_id(), lot_id="lot1",
                bay_id=bay_id, status="occupied" if i < 10 else "free",
            )  # fmt: skip
            pub.publish(topics.build(prefix, "fc", "bays-1", "parking_bay"), encode(state))
    wait_for(lambda: api.get("/v1/parking/lots/lot1").json()["free"] == 30, what="the live bays")
    before = datetime.now(UTC)
    answer = api.get("/v1/guidance/parking", params={"lat": 51.05, "lng": 13.73, "arrive_in_min": 180}).json()
    after = datetime.now(UTC)
    forecast = api.get("/v1/parking/lots/lot1/forecast").json()
    [entry] = answer["lots"]
    assert entry["trend"]["direction"] == "unknown" and entry["arrival_basis"] == "forecast", entry
    spaces = entry["spaces_beyond_reserve"]
    assert spaces == 30  # 30 free, no reserve: full_below 1
    # The server read "now" between before and after: the expected value lies between the two readings.
    bounds = [
        min(40.0, max(0.0, spaces - (interpolated(forecast["points"], t + timedelta(hours=3))
                                     - interpolated(forecast["points"], t))))
        for t in (before, after)
    ]  # fmt: skip
    assert min(bounds) - 0.1 <= entry["spaces_at_arrival"] <= max(bounds) + 0.1, (entry, bounds)
    assert "forecast" in entry["reasons"][2] and "on arrival in 180 min" in entry["reasons"][2]
    # Without an arrival time, nothing is projected.
    [plain] = api.get("/v1/guidance/parking", params={"lat": 51.05, "lng": 13.73}).json()["lots"]
    assert plain["arrival_basis"] is None and plain["spaces_at_arrival"] is None


@pytest.fixture
def stored(influx_db: Influx) -> Influx:
    lines = footfall_lines("square", "north")
    for k in range(35 * 96, 0, -1):
        at = NOW - timedelta(minutes=15 * k)
        occ = occupied(at)
        ns = int(at.timestamp()) * 10**9
        lines.append(f"lot_occupancy,site=fc,lot=lot1 free={40 - occ}i,occupied={occ}i,unknown=0i {ns}")
    write(stored_db := influx_db, lines)
    return stored_db


def test_forecasts_from_stored_history(tmp_path: Path, mosquitto: Service, stored: Influx, prefix: str) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE_YAML)
    settings = settings_for(
        site, prefix, mosquitto, stored.url, stored.db,
        forecast_refresh_s=REFRESH_S, holiday_country="DE", holiday_subdiv="SN", state_dir=tmp_path / "state",
    )  # fmt: skip
    with serve(settings) as api:
        arrival = (NOW + timedelta(hours=3)).isoformat()
        # Zones first, then lots: once the lot has its forecast, the first run is complete.
        lot = wait_for(lambda: (r := api.get("/v1/parking/lots/lot1/forecast", params={"arrival": arrival}).json())
                       ["status"] != "pending" and r, timeout=120, what="the first forecast run")  # fmt: skip
        zone = api.get("/v1/zones/square/forecast").json()
        assert zone["status"] == "ok", zone
        assert len(zone["points"]) == 48 and zone["step_s"] == 3600 and zone["coverage"] == 0.8
        assert (zone["refresh_s"], zone["stale"]) == (REFRESH_S, False)
        first = datetime.fromisoformat(zone["points"][0]["start"])
        assert first.astimezone(UTC) in (NOW, NOW + timedelta(hours=1))  # the hour may turn during the test
        errors = []
        for p in zone["points"]:
            start = datetime.fromisoformat(p["start"])
            band = p["entries"]
            assert band["lower"] <= band["mean"] <= band["upper"]
            errors.append(abs(band["mean"] - entries(start)))
        assert sum(errors) / len(errors) < 5, errors  # the pattern is exact: the model must find it

        empty = api.get("/v1/zones/empty/forecast").json()
        assert empty["status"] == "insufficient_history" and empty["points"] == [] and empty["detail"]

        assert lot["status"] == "ok", lot
        assert len(lot["points"]) == 96 and lot["step_s"] == 900 and lot["total"] == 40
        for p in lot["points"]:
            assert 0 <= p["free"]["lower"] <= p["free"]["mean"] <= p["free"]["upper"] <= 40
            assert abs(p["free"]["mean"] + p["occupied"]["mean"] - 40) < 0.2
        expected_free = 40 - occupied(NOW + timedelta(hours=3))
        assert abs(lot["arrival"]["free"]["mean"] - expected_free) < 3, lot["arrival"]

        assert api.get("/v1/zones/nope/forecast").status_code == 404
        nolot = api.get("/v1/parking/lots/nope/forecast")
        assert nolot.status_code == 404 and nolot.json()["error"] == "not_found"
        bad = api.get("/v1/parking/lots/lot1/forecast", params={"arrival": "2026-01-01T10:00"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "bad_time"
        # A '+' sent bare arrives as a space: the answer shows what arrived and says how to send it.
        plus = api.get("/v1/parking/lots/lot1/forecast?arrival=2026-11-30T10:00:00+01:00").json()["detail"][0]
        assert plus["input"] == "2026-11-30T10:00:00 01:00" and "%2B" in plus["msg"]
        far = api.get("/v1/parking/lots/lot1/forecast", params={"arrival": (NOW + timedelta(days=3)).isoformat()})
        assert far.json()["arrival"]["free"] is None

        guided_by_the_forecast(api, mosquitto, prefix)

        # The schedule: history stored after the first run is read by the next one.
        write(stored, footfall_lines("empty", "south"))
        later = wait_for(lambda: (r := api.get("/v1/zones/empty/forecast").json())["status"] == "ok" and r,
                         timeout=120, what="the next scheduled refresh")  # fmt: skip
        assert len(later["points"]) == 48
        assert datetime.fromisoformat(later["made_at"]) > datetime.fromisoformat(zone["made_at"])

        # Both routes document their errors: an unknown id (404) and a bad query (422).
        paths = api.get("/openapi.json").json()["paths"]
        for path in ("/v1/zones/{zone_id}/forecast", "/v1/parking/lots/{lot_id}/forecast"):
            answers = paths[path]["get"]["responses"]
            assert {"200", "404", "422"} <= answers.keys(), answers.keys()


def test_a_database_cut_at_refresh_time_keeps_the_last_forecast_and_it_recovers(
    tmp_path: Path, mosquitto: Service, stored: Influx, prefix: str
) -> None:
    """The link to InfluxDB is cut while refreshes run (a real TCP cut between the server and influxd): every
    forecast stays `ok` with its `made_at` and points, its `detail` naming the failed refresh, and guidance
    keeps its forecast basis; once the link is back, the next refresh replaces it."""
    site = tmp_path / "site.yaml"
    site.write_text(SITE_YAML)
    proxy = CutProxy(int(urllib.parse.urlsplit(stored.url).port or 0))
    settings = settings_for(
        site, prefix, mosquitto, f"http://127.0.0.1:{proxy.port}", stored.db,
        forecast_refresh_s=REFRESH_S, state_dir=tmp_path / "state",
    )  # fmt: skip
    try:
        with serve(settings) as api:
            first = wait_for(lambda: (r := api.get("/v1/parking/lots/lot1/forecast").json())["status"] == "ok" and r,
                             timeout=120, what="the first lot forecast")  # fmt: skip
            zone = api.get("/v1/zones/square/forecast").json()
            assert zone["status"] == "ok" and zone["detail"] is None
            proxy.cut()
            kept = wait_for(lambda: (r := api.get("/v1/parking/lots/lot1/forecast").json())["detail"] and r,
                            timeout=60, what="a refresh that failed on the cut link")  # fmt: skip
            assert kept["status"] == "ok" and not kept["stale"]
            assert kept["made_at"] >= first["made_at"] and kept["points"], kept
            assert "failed (InfluxDB failed the history query" in kept["detail"]
            assert f"this is the forecast made at {kept['made_at'][:19]}" in kept["detail"]
            zone_kept = wait_for(lambda: (r := api.get("/v1/zones/square/forecast").json())["detail"] and r,
                                 timeout=60, what="the zone's failed refresh")  # fmt: skip
            assert zone_kept["status"] == "ok" and len(zone_kept["points"]) == 48
            assert api.get("/v1/zones/empty/forecast").json()["status"] == "unavailable"  # never had one
            proxy.restore()
            back = wait_for(lambda: (r := api.get("/v1/parking/lots/lot1/forecast").json())["detail"] is None and r,
                            timeout=120, what="a refresh after the link came back")  # fmt: skip
            assert back["status"] == "ok" and back["made_at"] > kept["made_at"]
    finally:
        proxy.close()
