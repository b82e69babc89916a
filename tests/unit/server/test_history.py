"""History queries as text, local buckets across DST changes, merging, peaks, and the routes' errors (no database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from contracts import history as h
from contracts.site import SiteConfig
from contracts.storage import to_ns
from server import history
from server.app import create_app
from server.dbmonitor import DatabaseMonitor
from server.history import HistoryRequestError, Window, resolve_window, rollup_for
from server.influx import InfluxClient
from server.keys import add_key
from server.live import LiveState
from server.settings import ServerSettings

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def window(frm: str | None, to: str | None, every: history.Every, tz: ZoneInfo = BERLIN) -> Window:
    return resolve_window(frm, to, every, tz, NOW)


def test_a_local_day_is_23_or_25_hours_on_the_dst_change_days() -> None:
    spring = window("2026-03-29", "2026-03-30", "1d")
    assert spring.buckets() == [
        (datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 3, 30, tzinfo=BERLIN)),
    ]
    assert spring.end - spring.start == timedelta(hours=23)
    assert spring.local(spring.start).isoformat() == "2026-03-29T00:00:00+01:00"
    assert spring.local(spring.end).isoformat() == "2026-03-30T00:00:00+02:00"
    autumn = window("2026-10-25", "2026-10-26", "1d")
    assert autumn.end - autumn.start == timedelta(hours=25)


def test_hourly_buckets_follow_local_hours_through_both_changes() -> None:
    w = window("2026-03-29", "2026-03-30", "1h")
    spring = w.buckets()
    assert len(spring) == 23
    assert [w.local(s).strftime("%H%z") for s, _ in spring[:4]] == ["00+0100", "01+0100", "03+0200", "04+0200"]
    w = window("2026-10-25", "2026-10-26", "1h")
    autumn = w.buckets()
    assert len(autumn) == 25
    assert [w.local(s).strftime("%H%z") for s, _ in autumn[1:5]] == ["01+0200", "02+0200", "02+0100", "03+0100"]
    assert all(e - s == timedelta(hours=1) for s, e in autumn)


def test_from_and_to_widen_to_whole_buckets_and_default_to_a_span_before_now() -> None:
    w = window("2026-03-29T01:07:00+01:00", "2026-03-29T03:01:00+02:00", "1h")
    assert (w.local(w.start).isoformat(), w.local(w.end).isoformat()) == (
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T04:00:00+02:00",
    )
    five = window("2026-03-29T00:02:30Z", "2026-03-29T00:10:00Z", "5m")
    assert (five.start_ns, five.end_ns) == (
        to_ns(datetime(2026, 3, 29, 0, 0, tzinfo=UTC)),
        to_ns(datetime(2026, 3, 29, 0, 10, tzinfo=UTC)),
    )
    unencoded = window("2026-03-29T01:07:00 01:00", "2026-03-29T03:01:00+02:00", "1h")  # "+" sent as is in a URL
    assert unencoded == w
    default = window(None, None, "1h")
    assert default.end == NOW and default.start == NOW - timedelta(days=7)


@pytest.mark.parametrize(
    ("frm", "to", "every", "code"),
    [
        ("2026-03-30", "2026-03-29", "1h", "empty_range"),
        ("2026-03-29", "2026-03-29", "1h", "empty_range"),
        ("2026-01-01", "2026-03-01", "5m", "span_too_long"),
        ("2024-01-01", "2026-03-01", "1h", "span_too_long"),
        ("yesterday", None, "1h", "bad_time"),
        ("2026-03-29T10:00:00", None, "1h", "time_without_offset"),
    ],
)
def test_bad_spans_are_refused_with_a_stable_code(frm: str, to: str | None, every: history.Every, code: str) -> None:
    with pytest.raises(HistoryRequestError) as caught:
        window(frm, to, every)
    assert caught.value.code == code


def test_the_coarsest_rollup_that_tiles_the_local_buckets_is_read() -> None:
    assert rollup_for(window("2026-03-29", "2026-03-31", "1d")) is h.ROLLUP_1H
    assert rollup_for(window("2026-10-24", "2026-10-27", "1h")) is h.ROLLUP_1H
    assert rollup_for(window("2026-03-29", "2026-03-30", "5m")) is h.ROLLUP_5M
    # Half-hour offsets: local hours are not UTC hours, so the 5-minute rollup serves.
    assert rollup_for(window("2026-03-29", "2026-03-30", "1h", ZoneInfo("Asia/Kolkata"))) is h.ROLLUP_5M
    assert rollup_for(window("2026-03-29", "2026-03-31", "1d", ZoneInfo("Australia/Adelaide"))) is h.ROLLUP_5M


def test_query_text_reads_rollups_by_combining_and_raw_points_by_aggregating() -> None:
    common = dict(tags={"site": "s", "lot": "a'b"}, start_ns=10, end_ns=20, every="1d", tz="Europe/Berlin")
    rollup = history.bucket_query(h.LOT_OCCUPANCY, db="db", rollup=h.ROLLUP_1H, **common)  # type: ignore[arg-type]
    assert rollup.startswith('SELECT sum("free_sum") AS "free_sum", min("free_min") AS "free_min"')
    assert 'sum("samples") AS "samples", sum("arrivals") AS "arrivals" FROM "db"."rollup_1h"."lot_occupancy"' in rollup
    assert rollup.endswith(
        """WHERE "site" = 's' AND "lot" = 'a\\'b' AND time >= 10 AND time < 20"""
        """ GROUP BY time(1d) fill(none) tz('Europe/Berlin')"""
    )
    raw = history.bucket_query(h.FOOTFALL, db="db", rollup=None, group_by=("camera", "line"), **common)  # type: ignore[arg-type]
    assert raw.startswith('SELECT sum("towards") AS "towards", sum("away") AS "away" FROM "footfall" WHERE')
    assert 'GROUP BY time(1d), "camera", "line" fill(none)' in raw
    newest = history.newest_bucket_query(
        h.LOT_OCCUPANCY, db="db", rollup=h.ROLLUP_5M, tags={"lot": "x"}, start_ns=1, end_ns=2
    )
    assert (
        newest == 'SELECT last("free_sum") FROM "db"."rollup_5m"."lot_occupancy"'
        " WHERE \"lot\" = 'x' AND time >= 1 AND time < 2"
    )


def test_partial_buckets_from_the_rollup_and_raw_merge_exactly() -> None:
    merged: history.Values = {}
    history.merge_values(
        h.LOT_OCCUPANCY.aggregates, merged, {"free_sum": 100, "free_min": 3, "free_max": 9, "samples": 20}
    )
    history.merge_values(
        h.LOT_OCCUPANCY.aggregates,
        merged,
        {"free_sum": 50, "free_min": 1, "free_max": 5, "samples": 5, "free_mean": None},
    )
    assert (merged["free_sum"], merged["free_min"], merged["free_max"], merged["samples"]) == (150, 1, 9, 25)
    assert history.stat(merged, "free") == (6.0, 1, 9)
    assert history.stat({}, "free") == (None, None, None)


def test_peaks_pick_each_weekdays_busiest_local_hour_and_count_the_repeated_hour_once() -> None:
    # Sunday 2026-10-25 (clocks go back at 03:00 CEST): local 02:00 happens twice: 00:00Z and 01:00Z.
    hours = {
        to_ns(datetime(2026, 10, 25, 0, tzinfo=UTC)): (30.0, 1.0),  # 02:00 CEST
        to_ns(datetime(2026, 10, 25, 1, tzinfo=UTC)): (30.0, 2.0),  # 02:00 CET
        to_ns(datetime(2026, 10, 25, 12, tzinfo=UTC)): (50.0, 0.0),  # 13:00 CET
        # Two Mondays: 10:00 local is 40 and 20 (mean 30), 11:00 is 25 and 25.
        to_ns(datetime(2026, 10, 26, 9, tzinfo=UTC)): (40.0, 0.0),
        to_ns(datetime(2026, 10, 26, 10, tzinfo=UTC)): (25.0, 0.0),
        to_ns(datetime(2026, 11, 2, 9, tzinfo=UTC)): (20.0, 0.0),
        to_ns(datetime(2026, 11, 2, 10, tzinfo=UTC)): (25.0, 0.0),
    }
    peaks = {p.weekday: p for p in history.weekday_peaks(hours, BERLIN, combine="sum")}
    assert (peaks["sunday"].hour, peaks["sunday"].measure, peaks["sunday"].days) == (2, 60.0, 1)  # 30 + 30
    assert (peaks["monday"].hour, peaks["monday"].measure, peaks["monday"].days) == (10, 30.0, 2)
    assert (peaks["tuesday"].hour, peaks["tuesday"].days) == (None, 0)
    averaged = {p.weekday: p for p in history.weekday_peaks(hours, BERLIN, combine="mean")}
    assert (averaged["sunday"].hour, averaged["sunday"].measure, averaged["sunday"].other) == (13, 50.0, 0.0)


# -- routes ---------------------------------------------------------------------------------------

KEY = {"X-API-Key": "k-ops-0123456789"}
SITE = SiteConfig.model_validate(
    {
        "site": {"id": "s", "name": "S", "timezone": "Europe/Berlin"},
        "zones": [{"id": "z", "name": "Z"}],
        "parking": [{"id": "L", "name": "L", "coords": {"lat": 51, "lng": 13}, "bays": ["b1"]}],
        "lockers": [
            {"id": "K", "name": "K", "coords": {"lat": 51, "lng": 13}, "compartments": [{"id": "c", "size": "S"}]}
        ],
    }
)


def make_app(tmp_path: Path, transport: httpx.AsyncBaseTransport | None, keys_file: Path | None = None) -> FastAPI:
    settings = ServerSettings(
        site_config=tmp_path / "unused.yaml",
        state_dir=tmp_path / "state",
        api_keys="ops:k-ops-0123456789",  # type: ignore[arg-type]
        keys_file=keys_file,
    )
    live = LiveState(SITE, lambda: NOW)
    app = create_app(settings, site=SITE, live=live, connect=False)
    if transport is not None:
        client = InfluxClient(httpx.AsyncClient(transport=transport, base_url="http://influx"), "db")
        app.state.runtime.database = DatabaseMonitor(client, live, bootstrap_window_s=60, interval_s=5)
    return app


@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def get(app: FastAPI, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        async with client_for(app) as c:
            return await c.get(path, headers=headers)

    return asyncio.run(go())


PATHS = [
    "/v1/parking/lots/L/history",
    "/v1/zones/z/history",
    "/v1/lockers/K/history",
    "/v1/parking/lots/L/peaks",
    "/v1/zones/z/peaks",
]


@pytest.mark.parametrize("path", PATHS)
def test_history_needs_an_operator_key(tmp_path: Path, path: str) -> None:
    keys_file = tmp_path / "api-keys"
    display = add_key(keys_file, "sign-1", "display")
    operator = add_key(keys_file, "ops-1", "operator")
    app = make_app(tmp_path, None, keys_file)
    assert get(app, path).status_code == 401
    assert get(app, path, {"X-API-Key": "wrong"}).status_code == 401  # not a key at all
    assert get(app, path, {"X-API-Key": display}).status_code == 403  # a key, but not an operator's
    assert get(app, path, {"X-API-Key": operator}).status_code == 503  # past the key check: no database here


@pytest.mark.parametrize("path", PATHS)
def test_unknown_ids_are_404_bad_spans_422_and_no_database_503(tmp_path: Path, path: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = make_app(tmp_path, httpx.MockTransport(refuse))
    unknown = path.replace("/L/", "/nope/").replace("/z/", "/nope/").replace("/K/", "/nope/")
    assert get(down, unknown, KEY).json()["error"] == "not_found"
    r = get(down, path + "?from=2026-03-30&to=2026-03-29", KEY)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "empty_range"
    r = get(down, path, KEY)
    assert r.status_code == 503 and r.json()["error"] == "history_unavailable"
    assert "ConnectError" in r.json()["detail"]
    without = get(make_app(tmp_path, None), path, KEY)
    assert without.status_code == 503 and "no InfluxDB connection" in without.json()["detail"]


def test_an_empty_history_is_every_bucket_with_no_data_not_zeros(tmp_path: Path) -> None:
    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": [{"statement_id": 0}]})

    app = make_app(tmp_path, httpx.MockTransport(empty))
    body = get(app, "/v1/parking/lots/L/history?from=2026-03-29&to=2026-03-30&every=1h", KEY).json()
    assert len(body["buckets"]) == 23 and body["window"]["sources"] == ["raw"]
    first = body["buckets"][0]
    assert first["samples"] == 0 and first["free"] == {"mean": None, "min": None, "max": None}
    zone = get(app, "/v1/zones/z/history?from=2026-10-25&to=2026-10-26&every=1d", KEY).json()
    assert zone["buckets"][0]["entries"] is None and zone["window"]["timezone"] == "Europe/Berlin"
    assert zone["buckets"][0]["state"] == "nodata" and zone["buckets"][0]["lines"] == []
    assert zone["privacy"] == {"k": 10}


def test_a_database_without_rollups_is_read_raw_and_other_failures_are_503(tmp_path: Path) -> None:
    asked: list[str] = []

    def no_rollups(request: httpx.Request) -> httpx.Response:
        q = request.url.params["q"]
        asked.append(q)
        if '"rollup_' in q:
            return httpx.Response(200, json={"results": [{"error": "retention policy not found: rollup_1h"}]})
        return httpx.Response(200, json={"results": [{"statement_id": 0}]})

    r = get(make_app(tmp_path, httpx.MockTransport(no_rollups)), "/v1/parking/lots/L/history", KEY)
    assert r.status_code == 200 and r.json()["window"]["sources"] == ["raw"]
    assert len(asked) == 2 and asked[1].startswith('SELECT sum("free") AS "free_sum"')

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": [{"error": "shard is being compacted"}]})

    r = get(make_app(tmp_path, httpx.MockTransport(broken)), "/v1/parking/lots/L/history", KEY)
    assert r.status_code == 503 and "shard is being compacted" in r.json()["detail"]


def test_buckets_the_size_of_the_rollups_are_read_as_stored_and_coarser_ones_combined(tmp_path: Path) -> None:
    asked: list[str] = []
    newest = to_ns(datetime(2026, 3, 29, 10, tzinfo=UTC))

    def rollups(request: httpx.Request) -> httpx.Response:
        q = request.url.params["q"]
        asked.append(q)
        if q.startswith("SELECT last("):
            return httpx.Response(
                200, json={"results": [{"series": [{"columns": ["time", "last"], "values": [[newest, 1]]}]}]}
            )
        return httpx.Response(200, json={"results": [{"statement_id": 0}]})

    app = make_app(tmp_path, httpx.MockTransport(rollups))
    assert get(app, "/v1/parking/lots/L/history?from=2026-03-29&to=2026-03-30&every=5m", KEY).status_code == 200
    _, stored, raw = asked
    assert stored.startswith('SELECT "free_sum", "free_min"') and "GROUP BY" not in stored
    assert f"time < {newest + 300 * 10**9}" in stored and f"time >= {newest + 300 * 10**9}" in raw
    asked.clear()
    assert get(app, "/v1/parking/lots/L/history?from=2026-03-29&to=2026-03-30&every=1d", KEY).status_code == 200
    assert asked[1].startswith('SELECT sum("free_sum") AS "free_sum"') and "GROUP BY time(1d)" in asked[1]
    assert history.points_query(h.FOOTFALL, db="db", rollup=h.ROLLUP_1H, tags={"zone": "z"}, start_ns=1, end_ns=2,
                                group_by=("camera", "line")) == (
        'SELECT "towards", "away" FROM "db"."rollup_1h"."footfall" WHERE "zone" = \'z\' AND time >= 1 AND time < 2'
        ' GROUP BY "camera", "line"'
    )  # fmt: skip
