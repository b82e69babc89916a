"""Lockers and crowd levels: the live stores and their routes, on injected state (no broker, no database)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from contracts import CameraHealth, DeviceStatus, FootfallCount, LineCount, LockerCompartmentState
from contracts.site import SiteConfig
from server.app import create_app
from server.live import LiveState
from server.settings import ServerSettings
from tests.unit.server.test_server_live import FakeClock

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
_ids = iter(range(1, 10**9))


def make_site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "zones": [
                {"id": "z1", "name": "Square", "capacity": 100},
                {"id": "z2", "name": "Lane", "capacity": 50},
                {"id": "z3", "name": "No capacity"},
            ],
            "lockers": [
                {
                    "id": "k1",
                    "name": "Station",
                    "coords": {"lat": 51.0, "lng": 13.7},
                    "stale_after_s": 60,
                    "compartments": [
                        {"size": "S", "count": 3, "prefix": "S"},
                        {"size": "L", "count": 2, "prefix": "L"},
                    ],
                }
            ],
            "cameras": [
                {"id": "cam1", "device": "d-cam", "lines": [{"id": "l1", "zone": "z1"}, {"id": "l2", "zone": "z1"}]},
                {"id": "cam2", "device": "d-cam", "lines": [{"id": "l3", "zone": "z2"}]},
            ],
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock: FakeClock) -> LiveState:
    return LiveState(make_site(), clock)


def locker(live: LiveState, cid: str, status: str, door: str = "closed", age_s: float = 0) -> bool:
    at = live.clock() - timedelta(seconds=age_s)
    msg = LockerCompartmentState(
        device_id="d-lock", observed_at=at, reading_id=f"r{next(_ids):09d}", bank_id="k1",
        compartment_id=cid, status=status, door=door,  # type: ignore[arg-type]
    )  # fmt: skip
    return live.apply(msg, at)


def footfall(
    live: LiveState, zone: str, camera: str, lines: dict[str, tuple[int, int]], occupancy: int | None, rid: str = ""
) -> FootfallCount:
    end = live.clock()
    msg = FootfallCount(
        device_id="d-cam", observed_at=end, reading_id=rid or f"f{next(_ids):09d}", zone_id=zone, camera_id=camera,
        interval_start=end - timedelta(seconds=60),
        lines=[LineCount(line_id=k, towards=t, away=a) for k, (t, a) in lines.items()], occupancy=occupancy,
    )  # fmt: skip
    live.apply(msg, end)
    return msg


# -- lockers ---------------------------------------------------------------------


def test_a_bank_counts_each_size_and_never_shows_an_unheard_compartment_as_free(live: LiveState) -> None:
    locker(live, "S01", "free")
    locker(live, "S02", "occupied")
    locker(live, "L01", "out_of_service")
    bank = live.locker_bank("k1")
    assert bank is not None
    sizes = {s.size: (s.total, s.free, s.occupied, s.out_of_service, s.unknown) for s in bank.sizes}
    assert sizes == {"S": (3, 1, 1, 0, 1), "L": (2, 0, 0, 1, 1)}
    assert (bank.total, bank.free, bank.unknown, bank.state, bank.fresh) == (5, 1, 2, "open", True)


def test_a_stale_compartment_turns_unknown_and_a_bank_of_stale_ones_has_no_data(
    live: LiveState, clock: FakeClock
) -> None:
    locker(live, "S01", "free")
    clock.advance(61)
    bank = live.locker_bank("k1")
    assert bank is not None
    assert (bank.free, bank.unknown, bank.state, bank.fresh) == (0, 5, "nodata", False)
    assert bank.age_s == 61.0


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        ({"S01": "occupied", "S02": "occupied"}, "full"),
        ({"S01": "out_of_service"}, "out_of_service"),
        ({"S01": "occupied", "L02": "free"}, "open"),
    ],
)
def test_bank_state(live: LiveState, statuses: dict[str, str], state: str) -> None:
    for cid, status in statuses.items():
        locker(live, cid, status)
    bank = live.locker_bank("k1")
    assert bank is not None and bank.state == state


def test_an_open_door_is_listed_with_how_long_it_has_been_open(live: LiveState, clock: FakeClock) -> None:
    locker(live, "S01", "occupied", door="open")
    clock.advance(30)
    locker(live, "S01", "occupied", door="open")  # still open: the streak began 30 s ago
    clock.advance(15)
    bank = live.locker_bank("k1")
    assert bank is not None
    [door] = bank.doors_open
    assert (door.compartment_id, door.size, door.since, door.open_s) == ("S01", "S", T0, 45.0)
    locker(live, "S01", "free", door="closed")
    bank = live.locker_bank("k1")
    assert bank is not None and bank.doors_open == []
    locker(live, "S01", "free", door="open")
    bank = live.locker_bank("k1")
    assert bank is not None and bank.doors_open[0].open_s == 0.0  # a new streak


def test_a_compartment_not_in_the_site_is_refused_and_counted(live: LiveState) -> None:
    assert not locker(live, "X99", "free")
    assert live.lockers.counts["unknown_compartment"] == 1


# -- zones -----------------------------------------------------------------------


def test_a_zone_without_a_camera_report_has_no_data_never_zero_people(live: LiveState) -> None:
    zone = live.zone("z1")
    assert zone is not None
    assert (zone.state, zone.occupancy, zone.occupancy_state, zone.level, zone.trend) == (
        "nodata",
        None,
        "nodata",
        "nodata",
        "unknown",
    )
    assert (zone.last_15m.state, zone.last_15m.entries, zone.last_1h.state) == ("nodata", None, "nodata")


def test_entries_and_exits_of_the_last_completed_quarter_and_hour(live: LiveState, clock: FakeClock) -> None:
    clock.advance(60)  # 12:01
    footfall(live, "z1", "cam1", {"l1": (8, 1), "l2": (2, 0)}, occupancy=16)
    clock.advance(19 * 60)  # 12:20
    footfall(live, "z1", "cam1", {"l1": (9, 3)}, occupancy=22)
    zone = live.zone("z1")
    assert zone is not None
    q, h = zone.last_15m, zone.last_1h
    # 11 crossings: the quarter is published, but its 1 exit rests on fewer than k people (withheld, never 0).
    assert (q.start, q.end, q.state, q.entries, q.exits, q.withheld) == (
        T0, T0 + timedelta(minutes=15), "ok", 10, None, ["exits"]
    )  # fmt: skip
    assert (h.start, h.end, h.state, h.entries) == (T0 - timedelta(hours=1), T0, "nodata", None)
    # 22 people, published rounded to a multiple of k = 10 (server.stores.zones), and the share of that.
    assert (zone.state, zone.occupancy, zone.share, zone.level) == ("ok", 20, 0.2, "low")
    clock.advance(45 * 60)  # 13:05: the hour 12:00-13:00 is complete
    zone = live.zone("z1")
    assert zone is not None
    # 23 crossings, but its 19 entries minus the shown 10 of 12:00 would give the 9 of 12:15 (under k), and
    # its 4 exits are under k: both withheld (server.stores.zones, the hour and its quarters).
    h = zone.last_1h
    assert (h.state, h.entries, h.exits, h.withheld) == ("ok", None, None, ["entries", "exits"])
    assert zone.last_1h.end == T0 + timedelta(hours=1)


def test_a_redelivered_interval_is_counted_once(live: LiveState, clock: FakeClock) -> None:
    msg = footfall(live, "z1", "cam1", {"l1": (12, 0)}, occupancy=12, rid="dup0000001")
    live.apply(msg, live.clock())
    clock.advance(15 * 60)
    zone = live.zone("z1")
    assert zone is not None and zone.last_15m.entries == 12
    assert live.zones.counts["duplicate"] == 1


@pytest.mark.parametrize(
    ("occupancy", "level"),
    # Shares of the published occupancy (rounded to a multiple of k = 10, a half up): 34 is 30, 35 is 40.
    [(0, "low"), (34, "low"), (35, "moderate"), (40, "moderate"), (64, "moderate"), (65, "high"),
     (90, "very_high"), (250, "very_high")],
)  # fmt: skip
def test_crowd_level_thresholds_are_shares_of_capacity(live: LiveState, occupancy: int, level: str) -> None:
    footfall(live, "z1", "cam1", {"l1": (0, 0)}, occupancy=occupancy)
    zone = live.zone("z1")
    assert zone is not None and zone.level == level


def test_a_zone_goes_nodata_when_its_camera_is_silent_or_reported_broken(live: LiveState, clock: FakeClock) -> None:
    footfall(live, "z2", "cam2", {"l3": (1, 0)}, occupancy=1)
    assert live.zone("z2").state == "ok"  # type: ignore[union-attr]
    status = DeviceStatus(
        device_id="d-cam", observed_at=clock.now, reading_id="st00000001", state="degraded",
        cameras=[CameraHealth(camera_id="cam2", state="frozen", fps=0, dropped_frames=0)],
    )  # fmt: skip
    live.apply(status, clock.now)
    zone = live.zone("z2")
    assert zone is not None and (zone.state, zone.occupancy, zone.cameras.broken) == ("nodata", None, ["cam2"])
    live.apply(status.model_copy(update={"cameras": [], "reading_id": "st00000002"}), clock.now)
    assert live.zone("z2").state == "ok"  # type: ignore[union-attr]
    clock.advance(301)  # past the zone's stale_after_s (default 300 s)
    assert live.zone("z2").state == "nodata"  # type: ignore[union-attr]


def test_trend_follows_the_net_flow_of_the_last_completed_quarter(live: LiveState, clock: FakeClock) -> None:
    # A quarter with a direction withheld (under k) has no trend: the net flow would narrow it.
    quarters = [((20, 10), "rising"), ((10, 20), "falling"), ((4, 0), "suppressed"), ((12, 10), "steady"),
                ((30, 2), "suppressed"), ((0, 14), "suppressed")]  # fmt: skip
    clock.advance(60)  # 12:01
    footfall(live, "z1", "cam1", {"l1": quarters[0][0]}, occupancy=20)
    for i, (lines, trend) in enumerate(quarters):
        clock.advance(15 * 60)  # the quarter is complete; the next one's counts keep the zone fresh
        nxt = quarters[i + 1][0] if i + 1 < len(quarters) else (0, 0)
        footfall(live, "z1", "cam1", {"l1": nxt}, occupancy=20)
        assert live.zone("z1").trend == trend, lines  # type: ignore[union-attr]


def test_a_zone_without_capacity_has_counts_but_no_level(live: LiveState) -> None:
    footfall(live, "z3", "cam9", {"lx": (1, 0)}, occupancy=12)
    zone = live.zone("z3")
    assert zone is not None and (zone.state, zone.occupancy, zone.level, zone.share) == ("ok", 10, None, None)


# -- routes ----------------------------------------------------------------------


def get(live: LiveState, tmp_path: Path, path: str) -> httpx.Response:
    app = create_app(ServerSettings(site_config=tmp_path / "unused.yaml"), site=live.site, live=live, connect=False)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.get(path)

    return asyncio.run(go())


def test_routes_answer_lockers_and_zones_and_404_for_unknown_ids(live: LiveState, tmp_path: Path) -> None:
    locker(live, "S01", "free")
    footfall(live, "z1", "cam1", {"l1": (3, 1)}, occupancy=12)
    banks = get(live, tmp_path, "/v1/lockers").json()
    assert [(b["id"], b["free"], b["state"]) for b in banks] == [("k1", 1, "open")]
    assert get(live, tmp_path, "/v1/lockers/k1").json()["sizes"][0]["size"] == "S"
    zones = get(live, tmp_path, "/v1/zones").json()
    assert [(z["id"], z["state"]) for z in zones] == [("z1", "ok"), ("z2", "nodata"), ("z3", "nodata")]
    one = get(live, tmp_path, "/v1/zones/z1")
    assert one.headers["cache-control"] == "no-store"
    # Heard at 12:00, the interval is in the quarter 12:00-12:15, not complete yet: 11:45-12:00 has no data.
    assert (one.json()["occupancy"], one.json()["last_15m"]["state"]) == (10, "nodata")  # 12, rounded to k
    for path in ("/v1/lockers/nope", "/v1/zones/nope"):
        r = get(live, tmp_path, path)
        assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_the_crowd_feed_carries_the_live_zone(live: LiveState, clock: FakeClock, tmp_path: Path) -> None:
    footfall(live, "z1", "cam1", {"l1": (30, 4)}, occupancy=95)
    footfall(live, "z3", "cam9", {"lx": (13, 1)}, occupancy=12)
    clock.advance(15 * 60)  # the quarter 12:00-12:15 is complete; the cameras still report
    footfall(live, "z1", "cam1", {"l1": (0, 0)}, occupancy=95)
    footfall(live, "z3", "cam9", {"lx": (0, 0)}, occupancy=12)
    r = get(live, tmp_path, "/ngsi-ld/v1/entities/urn:ngsi-ld:CrowdFlowObserved:s1:z1?options=keyValues")
    assert r.status_code == 200, r.text
    body = r.json()
    # 95 people are published as 100 (rounded to a multiple of k = 10), so the share is 1.0.
    assert (body["peopleCountTowards"], body["occupancy"]) == (30, 1.0)
    # The 4 exits rest on fewer than k people: absent, and so is the sum that would reveal them.
    assert (body["peopleCountAwayState"], body["peopleCountState"]) == ("suppressed", "suppressed")
    assert not {"peopleCountAway", "peopleCount"} & set(body)
    assert (body["occupancyState"], body["occupancyBase"]) == ("coarsened", 10)
    assert (body["crowdLevel"], body["congested"]) == ("very_high", True)
    r = get(live, tmp_path, "/ngsi-ld/v1/entities/urn:ngsi-ld:CrowdFlowObserved:s1:z2?options=keyValues")
    assert r.json()["crowdLevel"] == "nodata" and "peopleCountTowards" not in r.json()
    r = get(live, tmp_path, "/ngsi-ld/v1/entities/urn:ngsi-ld:CrowdFlowObserved:s1:z3?options=keyValues")
    body = r.json()
    assert "crowdLevel" not in body and body["peopleCountTowards"] == 13  # no capacity: counts, no level
