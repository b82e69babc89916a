"""/v1/guidance/parking and /v1/guidance/lockers through the app, on injected live state (no broker, no database)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import LockerCompartmentState, ParkingBayState
from contracts.site import SiteConfig
from server import guidance
from server.app import create_app
from server.live import LiveState
from server.settings import ServerSettings

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
_ids = iter(range(1, 10**9))
M = 1 / 111_195  # degrees of latitude per metre


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def at(metres: float) -> dict[str, float]:
    return {"lat": 51.0 + metres * M, "lng": 13.7}


def make_site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "zones": [{"id": "square", "name": "Square", "coords": at(0)}, {"id": "nowhere", "name": "No coords"}],
            "parking": [
                {"id": "near", "name": "Near", "coords": at(100), "bays": {"prefix": "N", "count": 10},
                 "full_below": 3, "stale_after_s": 120},
                {"id": "mid", "name": "Mid", "coords": at(900), "bays": {"prefix": "M", "count": 10},
                 "entrances": [{"name": "Back door", "coords": at(400)}]},
                {"id": "shut", "name": "Shut", "coords": at(50), "bays": {"prefix": "C", "count": 4}, "closed": True},
            ],
            "lockers": [
                {"id": "k1", "name": "Station", "coords": at(30), "stale_after_s": 60,
                 "compartments": [{"size": "S", "count": 2, "prefix": "S"}, {"size": "L", "count": 2, "prefix": "L"}]},
                {"id": "k2", "name": "Far station", "coords": at(700),
                 "compartments": [{"size": "M", "count": 2, "prefix": "M"}]},
            ],
        }
    )  # fmt: skip


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock: FakeClock) -> LiveState:
    return LiveState(make_site(), clock)


def bays(live: LiveState, lot: str, prefix: str, statuses: str) -> None:
    """One reading per bay, now: ``statuses`` is a string of f (free) and o (occupied)."""
    now = live.clock()
    for n, s in enumerate(statuses, start=1):
        msg = ParkingBayState(
            device_id="d-bays", observed_at=now, reading_id=f"r{next(_ids):09d}", lot_id=lot,
            bay_id=f"{prefix}{n:03d}", status="free" if s == "f" else "occupied",
        )  # fmt: skip
        live.apply(msg, now)


def locker(live: LiveState, bank: str, cid: str, status: str) -> None:
    now = live.clock()
    msg = LockerCompartmentState(
        device_id="d-lock", observed_at=now, reading_id=f"r{next(_ids):09d}", bank_id=bank,
        compartment_id=cid, status=status, door="closed",  # type: ignore[arg-type]
    )  # fmt: skip
    live.apply(msg, now)


def get(live: LiveState, tmp_path: Path, path: str, **params: Any) -> httpx.Response:
    app = create_app(ServerSettings(site_config=tmp_path / "unused.yaml"), site=live.site, live=live, connect=False)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.get(path, params=params)

    return asyncio.run(go())


def test_lots_ranked_for_a_zone_with_the_closed_one_left_out(live: LiveState, tmp_path: Path) -> None:
    bays(live, "near", "N", "ffffffoooo")  # 6 free, reserve 3: 4 spaces to spare
    bays(live, "mid", "M", "ffffffffff")
    bays(live, "shut", "C", "ffff")
    r = get(live, tmp_path, "/v1/guidance/parking", zone="square")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["destination"] == {"source": "zone", "id": "square", "name": "Square", "coords": at(0)}
    assert [(e["lot_id"], e["rank"]) for e in body["lots"]] == [("near", 1), ("mid", 2)]
    assert (body["available"], body["unavailable"], body["outside_site"], body["note"]) == (2, 1, False, None)
    near, mid = body["lots"]
    assert (near["free"], near["reserve"], near["spaces_beyond_reserve"], near["state"]) == (6, 3, 4, "open")
    assert near["walk_m"] == pytest.approx(100 * guidance.CIRCUITY, abs=0.5)
    assert (mid["entrance"]["name"], mid["walk_m"]) == ("Back door", pytest.approx(400 * guidance.CIRCUITY, abs=1))
    assert set(near["score_parts"]) == {"walk_min", "space_risk_min", "trend_min", "freshness_min"}
    assert len(near["reasons"]) == 4 and near["summary"].startswith("1. Near:")

    listed = get(live, tmp_path, "/v1/guidance/parking", zone="square", include_unavailable="true").json()
    assert [(e["lot_id"], e["rank"], e["reason"]) for e in listed["lots"]][-1] == ("shut", None, "closed")


def test_a_lot_that_goes_stale_or_full_drops_below_every_lot_with_space(
    live: LiveState, clock: FakeClock, tmp_path: Path
) -> None:
    bays(live, "near", "N", "ffffffffff")
    clock.advance(100)
    bays(live, "mid", "M", "ffffffffff")
    first = get(live, tmp_path, "/v1/guidance/parking", lat=51.0, lng=13.7).json()
    assert [e["lot_id"] for e in first["lots"]] == ["near", "mid"]
    clock.advance(21)  # near's readings are now 121 s old: past its 120 s
    answer = get(live, tmp_path, "/v1/guidance/parking", lat=51.0, lng=13.7, include_unavailable=True).json()
    assert [(e["lot_id"], e["available"], e["reason"]) for e in answer["lots"]] == [
        ("mid", True, None),
        ("shut", False, "closed"),
        ("near", False, "stale"),
    ]
    bays(live, "near", "N", "ffoooooooo")  # fresh again, but 2 free is below its reserve of 3
    answer = get(live, tmp_path, "/v1/guidance/parking", lat=51.0, lng=13.7, include_unavailable=True).json()
    assert [(e["lot_id"], e["reason"]) for e in answer["lots"]] == [("mid", None), ("shut", "closed"), ("near", "full")]
    assert answer["lots"][2]["summary"] == "Near is full: 2 free, fewer than its reserve of 3."


def test_a_filling_lot_from_the_live_stream_pays_the_trend_term(
    live: LiveState, clock: FakeClock, tmp_path: Path
) -> None:
    bays(live, "mid", "M", "ffffffffff")
    clock.advance(120)
    bays(live, "mid", "M", "ooooofffff")  # 5 bays taken within the trend window
    [mid] = get(live, tmp_path, "/v1/guidance/parking", zone="square").json()["lots"]
    assert (mid["trend"]["direction"], mid["trend"]["free_change"]) == ("filling", -5)
    assert mid["score_parts"]["trend_min"] == guidance.FILLING_MIN
    # With an arrival time the trend projects spaces instead: -5 bays in 120 s, 2 min more: about 0 left.
    [mid] = get(live, tmp_path, "/v1/guidance/parking", zone="square", arrive_in_min=2).json()["lots"]
    assert mid["spaces_at_arrival"] == 0.0 and mid["score_parts"]["trend_min"] > 0


def test_no_lot_with_space_is_an_empty_ranking_with_the_reasons(live: LiveState, tmp_path: Path) -> None:
    bays(live, "near", "N", "oooooooooo")
    body = get(live, tmp_path, "/v1/guidance/parking", zone="square").json()
    assert body["lots"] == []
    assert body["note"] == "no lot with space: 1 closed, 1 nodata, 1 full (include_unavailable=true lists them)"


def test_a_destination_outside_the_site_is_an_empty_answer_that_says_so(live: LiveState, tmp_path: Path) -> None:
    bays(live, "near", "N", "ffffffffff")
    body = get(live, tmp_path, "/v1/guidance/parking", lat=48.1, lng=11.6).json()
    assert (body["outside_site"], body["lots"], body["available"]) == (True, [], 0)
    assert body["note"].startswith("the destination is outside the site: the nearest lot")
    lockers = get(live, tmp_path, "/v1/guidance/lockers", lat=-33.9, lng=151.2).json()
    assert (lockers["outside_site"], lockers["banks"]) == (True, [])


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({}, "destination_missing", "lat"),
        ({"lat": 51.0}, "destination_incomplete", "lng"),
        ({"lng": 13.7}, "destination_incomplete", "lat"),
        ({"lat": 51.0, "lng": 13.7, "zone": "square"}, "destination_ambiguous", "zone"),
        ({"zone": "square", "locker_bank": "k1"}, "destination_ambiguous", "zone"),
        ({"zone": "nowhere"}, "zone_without_coords", "zone"),
        ({"lat": 91, "lng": 13.7}, "less_than_equal", "lat"),
        ({"lat": "nan", "lng": 13.7}, "less_than_equal", "lat"),
        ({"lat": 51.0, "lng": -181}, "greater_than_equal", "lng"),
        ({"zone": "square", "limit": 0}, "greater_than_equal", "limit"),
        ({"zone": "square", "limit": 101}, "less_than_equal", "limit"),
        ({"zone": "square", "arrive_in_min": -1}, "greater_than_equal", "arrive_in_min"),
        ({"zone": "x" * 65}, "string_too_long", "zone"),
    ],
)
def test_a_malformed_destination_is_a_422_that_says_what_to_send(
    live: LiveState, tmp_path: Path, params: dict[str, Any], code: str, param: str
) -> None:
    r = get(live, tmp_path, "/v1/guidance/parking", **params)
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert (err["type"], err["loc"]) == (code, ["query", param])
    assert err["msg"]


@pytest.mark.parametrize(
    ("path", "params", "detail"),
    [
        ("/v1/guidance/parking", {"zone": "nope"}, "no zone 'nope' in site 's1'"),
        ("/v1/guidance/parking", {"locker_bank": "nope"}, "no locker bank 'nope' in site 's1'"),
        ("/v1/guidance/lockers", {"zone": "nope"}, "no zone 'nope' in site 's1'"),
    ],
)
def test_an_unknown_zone_or_bank_is_a_404(
    live: LiveState, tmp_path: Path, path: str, params: dict[str, Any], detail: str
) -> None:
    r = get(live, tmp_path, path, **params)
    assert (r.status_code, r.json()) == (404, {"error": "not_found", "detail": detail})


def test_a_locker_bank_as_the_parking_destination(live: LiveState, tmp_path: Path) -> None:
    bays(live, "near", "N", "ffffffffff")
    body = get(live, tmp_path, "/v1/guidance/parking", locker_bank="k1").json()
    assert body["destination"]["source"] == "locker_bank" and body["destination"]["coords"] == at(30)
    assert body["lots"][0]["walk_m"] == pytest.approx(70 * guidance.CIRCUITY, abs=0.5)


def test_locker_guidance_offers_the_smallest_fitting_free_size_from_fresh_banks(
    live: LiveState, clock: FakeClock, tmp_path: Path
) -> None:
    locker(live, "k1", "S01", "free")
    locker(live, "k1", "L01", "free")
    locker(live, "k2", "M01", "free")
    body = get(live, tmp_path, "/v1/guidance/lockers", size="M", zone="square").json()
    assert [(b["bank_id"], b["size_offered"], b["free_of_size"]) for b in body["banks"]] == [
        ("k1", "L", 1),
        ("k2", "M", 1),
    ]
    clock.advance(61)  # k1's 60 s freshness passes; k2 keeps the default 600 s
    body = get(live, tmp_path, "/v1/guidance/lockers", size="M", zone="square", include_unavailable=True).json()
    assert [(b["bank_id"], b["rank"], b["reason"]) for b in body["banks"]] == [("k2", 1, None), ("k1", None, "stale")]
    r = get(live, tmp_path, "/v1/guidance/lockers", size="XXL", zone="square")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "size"]
    r = get(live, tmp_path, "/v1/guidance/lockers", size="S")
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "destination_missing"


def test_openapi_documents_both_endpoints_and_publishes_the_formula(live: LiveState, tmp_path: Path) -> None:
    spec = get(live, tmp_path, "/openapi.json").json()
    parking = spec["paths"]["/v1/guidance/parking"]["get"]
    lockers = spec["paths"]["/v1/guidance/lockers"]["get"]
    assert parking["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ParkingGuidance")
    assert lockers["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/LockerGuidance")
    for op in (parking, lockers):
        assert op["summary"] and op["responses"]["404"] and op["responses"]["422"]
    for text in ("score = walk_min", "10 * exp(-spaces / 10)", "free - reserve + 1", "1.3", "1.34 m/s", "3000 m"):
        assert text in parking["description"], text
    params = {p["name"]: p["schema"] for p in parking["parameters"]}
    lat = next(s for s in params["lat"]["anyOf"] if s.get("type") == "number")
    assert (lat["minimum"], lat["maximum"]) == (-90, 90)
    assert (params["limit"]["minimum"], params["limit"]["maximum"], params["limit"]["default"]) == (1, 100, 5)
