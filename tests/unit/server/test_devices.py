"""Device health: silent past a multiple of heartbeat_s, retained statuses judged by their own time
(bugcase 02 and its family), wills, readings as signs of life, and the operator-only routes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from contracts import CameraHealth, DeviceStatus, ParkingBayState
from contracts.site import SiteConfig
from server.app import create_app
from server.live import LiveState
from server.settings import ServerSettings
from tests.unit.server.test_server_live import FakeClock

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
_n = iter(range(1, 10**9))


def make_site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "parking": [{"id": "L1", "name": "One", "coords": {"lat": 51.0, "lng": 13.7}, "bays": ["a"]}],
            "devices": [
                {"id": "dev1", "kind": "bay_controller", "heartbeat_s": 2},
                {"id": "dev9", "kind": "camera_node", "heartbeat_s": 60},
                {"id": "quiet", "kind": "locker_controller", "heartbeat_s": 10, "silent_after_heartbeats": 5},
            ],
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock: FakeClock) -> LiveState:
    return LiveState(make_site(), clock)


def status(device: str, at: datetime, state: str = "online", **kw: object) -> DeviceStatus:
    return DeviceStatus(device_id=device, observed_at=at, reading_id=f"st{next(_n):08d}", state=state, **kw)  # type: ignore[arg-type]


def state_of(live: LiveState, device: str) -> str:
    d = live.device(device)
    assert d is not None
    return d.state


def test_a_configured_device_never_heard_is_unknown_not_online(live: LiveState) -> None:
    assert [(d.id, d.state) for d in live.device_health()] == [
        ("dev1", "unknown"),
        ("dev9", "unknown"),
        ("quiet", "unknown"),
    ]


@pytest.mark.parametrize(
    ("silence_s", "expected"),
    [(0, "online"), (5.9, "online"), (6.1, "silent"), (3600, "silent")],  # dev1: 3 x 2 s
)
def test_a_device_silent_past_its_multiple_of_heartbeat_s_is_silent(
    live: LiveState, clock: FakeClock, silence_s: float, expected: str
) -> None:
    live.apply(status("dev1", clock.now), clock.now)
    clock.advance(silence_s)
    assert state_of(live, "dev1") == expected


def test_the_multiple_is_configured_per_device(live: LiveState, clock: FakeClock) -> None:
    live.apply(status("quiet", clock.now), clock.now)
    clock.advance(49)
    assert state_of(live, "quiet") == "online"
    clock.advance(2)
    assert state_of(live, "quiet") == "silent"
    assert live.device("quiet").silent_after_s == 50.0  # type: ignore[union-attr]


@pytest.mark.parametrize("age", [timedelta(days=13), timedelta(hours=1), timedelta(seconds=181)])
def test_a_retained_status_is_judged_by_its_own_time_not_its_delivery(
    live: LiveState, clock: FakeClock, age: timedelta
) -> None:
    # The broker hands an old retained heartbeat to a server that just subscribed (bugcase 02).
    live.apply(status("dev9", clock.now - age), clock.now, retained=True)
    d = live.device("dev9")
    assert d is not None and d.state == "silent" and d.status_retained is True
    assert d.last_heard_at == clock.now - age


def test_a_fresh_retained_status_counts_as_online(live: LiveState, clock: FakeClock) -> None:
    live.apply(status("dev9", clock.now - timedelta(seconds=30)), clock.now, retained=True)
    assert state_of(live, "dev9") == "online"


def test_a_retained_status_from_a_device_whose_clock_is_behind_is_corrected_by_its_offset(
    live: LiveState, clock: FakeClock
) -> None:
    behind = timedelta(minutes=11)
    live.apply(status("dev9", clock.now - behind), clock.now)  # live: the offset is learnt (11 min)
    live.apply(status("dev9", clock.now - behind, reason="retained copy"), clock.now, retained=True)
    d = live.device("dev9")
    assert d is not None and d.state == "online" and d.clock_offset_s == 660.0


def test_a_last_will_is_offline_whatever_its_age(live: LiveState, clock: FakeClock) -> None:
    live.apply(status("dev1", clock.now), clock.now)
    live.apply(status("dev1", clock.now - timedelta(days=3), state="offline"), clock.now)
    d = live.device("dev1")
    assert d is not None and (d.state, d.reported_state) == ("offline", "offline")
    assert d.last_heard_at == clock.now  # the will says it went away, not that it was heard


def test_readings_keep_a_device_heard_between_heartbeats(live: LiveState, clock: FakeClock) -> None:
    live.apply(status("dev1", clock.now), clock.now)
    for _ in range(5):
        clock.advance(4)
        reading = ParkingBayState(
            device_id="dev1", observed_at=clock.now, reading_id=f"r{next(_n):09d}", lot_id="L1", bay_id="a",
            status="free",
        )  # fmt: skip
        live.apply(reading, clock.now)
    assert state_of(live, "dev1") == "online"


def test_a_device_the_site_does_not_list_is_shown_with_defaults(live: LiveState, clock: FakeClock) -> None:
    live.apply(status("stranger", clock.now), clock.now)
    d = live.device("stranger")
    assert d is not None and (d.configured, d.kind, d.heartbeat_s, d.silent_after_s) == (False, None, 60.0, 180.0)
    assert [x.id for x in live.device_health()][-1] == "stranger"


def test_health_fields_come_from_the_last_status(live: LiveState, clock: FakeClock) -> None:
    cam = CameraHealth(camera_id="c1", state="frozen", fps=0.0, dropped_frames=17, last_frame_age_s=42.0)
    live.apply(
        status("dev9", clock.now, state="degraded", reason="camera c1 frozen", battery_pct=12.5, signal_dbm=-97,
               firmware="1.2.3", outbox_pending=40, uptime_s=3600, cameras=[cam]),
        clock.now,
    )  # fmt: skip
    d = live.device("dev9")
    assert d is not None
    assert (d.state, d.reason, d.battery_pct, d.signal_dbm, d.firmware, d.outbox_pending) == (
        "degraded", "camera c1 frozen", 12.5, -97, "1.2.3", 40,
    )  # fmt: skip
    assert [(c.camera_id, c.state, c.dropped_frames) for c in d.cameras] == [("c1", "frozen", 17)]


# -- routes ----------------------------------------------------------------------------------------


def get(live: LiveState, tmp_path: Path, path: str, key: str | None = None) -> httpx.Response:
    settings = ServerSettings(site_config=tmp_path / "unused.yaml", api_keys="ops:op-secret-1", state_dir=tmp_path)
    app = create_app(settings, site=live.site, live=live, connect=False)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.get(path, headers={"X-API-Key": key} if key else {})

    return asyncio.run(go())


def test_device_routes_need_an_operator_key(live: LiveState, clock: FakeClock, tmp_path: Path) -> None:
    live.apply(status("dev1", clock.now), clock.now)
    for path in ("/v1/devices", "/v1/devices/dev1"):
        assert get(live, tmp_path, path).status_code == 401
        assert get(live, tmp_path, path, "wrong").status_code == 401  # an unknown key: authenticate again
    r = get(live, tmp_path, "/v1/devices", "op-secret-1")
    assert r.status_code == 200 and [d["state"] for d in r.json()] == ["online", "unknown", "unknown"]
    assert get(live, tmp_path, "/v1/devices/nope", "op-secret-1").status_code == 404


def test_healthz_counts_judged_states(live: LiveState, clock: FakeClock, tmp_path: Path) -> None:
    live.apply(status("dev1", clock.now), clock.now)
    live.apply(status("dev9", clock.now - timedelta(days=13)), clock.now, retained=True)
    body = get(live, tmp_path, "/healthz").json()
    assert body["devices"]["by_state"] == {"online": 1, "silent": 1}
    clock.advance(7)
    body = get(live, tmp_path, "/healthz").json()
    assert body["devices"]["by_state"] == {"silent": 2}
