"""Alerts: each rule raises, keeps its since while the cause holds, and clears itself when it goes;
raises and clears are published (retained) on the alert topics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts import CameraHealth, DeviceStatus, ParkingBayState
from contracts.site import SiteConfig
from server.alerts import AlertEngine
from server.app import create_app
from server.live import BayReading, LiveState
from server.settings import ServerSettings
from tests.unit.server.test_server_live import FakeClock

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
_n = iter(range(1, 10**9))


def make_site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "parking": [
                {"id": "L1", "name": "One", "coords": {"lat": 51.0, "lng": 13.7},
                 "bays": {"prefix": "B", "count": 20}, "stale_after_s": 600},
                {"id": "shut", "name": "Shut", "coords": {"lat": 51.0, "lng": 13.7}, "bays": ["x"], "closed": True},
            ],
            "devices": [{"id": "dev1", "kind": "bay_controller", "heartbeat_s": 10}],
        }
    )  # fmt: skip


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock: FakeClock) -> LiveState:
    return LiveState(make_site(), clock)


class Sent:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def engine(live: LiveState, sent: Sent) -> AlertEngine:
    e = AlertEngine(live)
    e.publish = sent
    return e


def kinds(engine: AlertEngine) -> dict[str, str]:
    return {a.id: a.severity for a in engine.alerts()}


def report_all(live: LiveState, clock: FakeClock, status: str = "occupied") -> None:
    for i in range(1, 21):
        bay(live, clock, f"B{i:03d}", status)


def bay(live: LiveState, clock: FakeClock, bay_id: str, status: str) -> None:
    msg = ParkingBayState(
        device_id="dev1", observed_at=clock.now, reading_id=f"r{next(_n):09d}", lot_id="L1", bay_id=bay_id,
        status=status,  # type: ignore[arg-type]
    )  # fmt: skip
    live.apply(msg, clock.now)


def status(live: LiveState, clock: FakeClock, **kw: object) -> None:
    live.apply(
        DeviceStatus(device_id="dev1", observed_at=clock.now, reading_id=f"s{next(_n):09d}", **kw),  # type: ignore[arg-type]
        clock.now,
    )


def test_a_lot_with_no_or_few_reporting_bays_raises_and_clears(
    engine: AlertEngine, live: LiveState, clock: FakeClock
) -> None:
    assert kinds(engine) == {"lot_underreported:lot:L1": "critical"}  # dev1 never heard, but only just started
    clock.advance(31)
    never = next(a for a in engine.alerts() if a.kind == "device_silent")
    assert "not heard since the server started 31 s ago" in never.text
    for i in range(1, 11):
        bay(live, clock, f"B{i:03d}", "free")
    alerts = {a.id: a for a in engine.alerts()}
    assert alerts["lot_underreported:lot:L1"].severity == "warning"
    assert "only 10 of 20 bays report (50 %)" in alerts["lot_underreported:lot:L1"].text
    report_all(live, clock)
    assert "lot_underreported:lot:L1" not in kinds(engine)
    assert "lot_underreported:lot:shut" not in kinds(engine)  # closed lots are exempt


def test_a_silent_device_raises_keeps_its_since_and_clears_when_heard(
    engine: AlertEngine, live: LiveState, clock: FakeClock, sent: Sent
) -> None:
    report_all(live, clock)
    status(live, clock, state="online")
    assert "device_silent:device:dev1" not in kinds(engine)
    clock.advance(31)  # 3 x 10 s heartbeat
    first = next(a for a in engine.alerts() if a.kind == "device_silent")
    assert first.since == clock.now and "silent for 31 s" in first.text
    clock.advance(10)
    again = next(a for a in engine.alerts() if a.kind == "device_silent")
    assert again.since == first.since  # the same alert, still open
    status(live, clock, state="online")
    assert "device_silent:device:dev1" not in kinds(engine)
    topics = [t for t, p in sent.messages if "device_silent" in t]
    assert topics and all(t == "district/v1/s1/alerts/device_silent/device/dev1" for t in topics)
    assert sent.messages[-1] == ("district/v1/s1/alerts/device_silent/device/dev1", b"")  # cleared, retained
    raised = next(json.loads(p) for t, p in sent.messages if "device_silent" in t and p)
    assert raised["severity"] == "critical" and raised["subject"] == {"type": "device", "id": "dev1"}


@pytest.mark.parametrize(
    ("fields", "alert", "severity"),
    [
        ({"battery_pct": 15.0}, "battery_low:device:dev1", "warning"),
        ({"battery_pct": 5.0}, "battery_low:device:dev1", "critical"),
        ({"state": "offline"}, "device_offline:device:dev1", "critical"),
        (
            {"state": "degraded", "cameras": [CameraHealth(camera_id="c1", state="frozen", fps=0, dropped_frames=0)]},
            "camera_frozen:camera:c1",
            "critical",
        ),
        ({"outbox_pending": 20_000}, "outbox_growing:device:dev1", "warning"),
    ],
)
def test_device_rules(
    engine: AlertEngine, live: LiveState, clock: FakeClock, fields: dict[str, object], alert: str, severity: str
) -> None:
    report_all(live, clock)
    status(live, clock, **{"state": "online", **fields})
    assert kinds(engine).get(alert) == severity
    status(live, clock, state="online")
    assert alert not in kinds(engine)


def test_a_clock_far_behind_raises(engine: AlertEngine, live: LiveState, clock: FakeClock) -> None:
    # Only a status from dev1: its readings at the right time would put the estimate at 0.
    live.apply(
        DeviceStatus(device_id="dev1", observed_at=clock.now - timedelta(minutes=5), reading_id="s-behind-01",
                     state="online"),
        clock.now,
    )  # fmt: skip
    alert = next(a for a in engine.alerts() if a.kind == "clock_offset")
    assert alert.severity == "warning" and "5 min behind" in alert.text and alert.value == 300.0


def test_an_outbox_growing_over_three_statuses_raises(engine: AlertEngine, live: LiveState, clock: FakeClock) -> None:
    report_all(live, clock)
    for pending in (50, 120, 400):
        status(live, clock, state="online", outbox_pending=pending)
        engine.evaluate()
        clock.advance(1)
    assert kinds(engine).get("outbox_growing:device:dev1") == "warning"
    status(live, clock, state="online", outbox_pending=10)
    assert "outbox_growing:device:dev1" not in kinds(engine)


def test_a_flapping_bay_raises_and_clears_after_the_window(
    engine: AlertEngine, live: LiveState, clock: FakeClock
) -> None:
    report_all(live, clock)
    for k in range(6):
        clock.advance(20)
        bay(live, clock, "B001", "free" if k % 2 == 0 else "occupied")
    assert kinds(engine).get("bay_flapping:bay:L1.B001") == "warning"
    clock.advance(601)
    report_all(live, clock)  # keep the lot fresh
    assert "bay_flapping:bay:L1.B001" not in kinds(engine)


def test_a_bay_stuck_while_its_lot_churns_raises_one_alert_per_lot(
    engine: AlertEngine, live: LiveState, clock: FakeClock
) -> None:
    # B001 was last seen to change long ago (from history: its reading's time is a lower bound).
    live.apply_bay("L1", "B001", BayReading.of("occupied", clock.now - timedelta(hours=30), "old-b001"))
    report_all(live, clock, "free")  # everything else reports (B001 now too: it turned free)
    live.apply_bay("L1", "B001", BayReading.of("occupied", clock.now, "b001-again"))
    clock.advance(61)
    # Churn: 19 bays change 4 times in ten minutes; B001 does not.
    for k in range(4):
        clock.advance(120)
        for i in range(2, 21):
            bay(live, clock, f"B{i:03d}", "occupied" if k % 2 == 0 else "free")
    bay(live, clock, "B001", "occupied")  # heard, unchanged
    assert "bays_stuck:lot:L1" not in kinds(engine)  # 9 min unchanged: far below the 6 h floor
    clock.advance(6 * 3600)
    for k in range(4):
        clock.advance(120)
        for i in range(2, 21):
            bay(live, clock, f"B{i:03d}", "occupied" if k % 2 == 0 else "free")
    bay(live, clock, "B001", "occupied")
    alert = next(a for a in engine.alerts() if a.kind == "bays_stuck")
    assert alert.subject.id == "L1" and "1 bay(s) unchanged" in alert.text and "B001 (occupied" in alert.text
    bay(live, clock, "B001", "free")
    assert "bays_stuck:lot:L1" not in kinds(engine)


def test_a_quiet_lot_raises_no_stuck_alert(engine: AlertEngine, live: LiveState, clock: FakeClock) -> None:
    report_all(live, clock)
    clock.advance(12 * 3600)
    report_all(live, clock)  # refreshes, no changes: night
    assert "bays_stuck:lot:L1" not in kinds(engine)


def test_a_reject_spike_raises_and_clears(live: LiveState, clock: FakeClock) -> None:
    counts = [(0, 0)]
    engine = AlertEngine(live, stream_counts=lambda: counts[-1])
    report_all(live, clock)
    engine.evaluate()
    counts.append((200, 30))
    assert "reject_rate:site:s1" in kinds(engine)
    counts.append((200, 30))
    engine._rejects.clear()  # the window moved on: only new samples count
    counts.append((400, 31))
    assert "reject_rate:site:s1" not in kinds(engine)


def test_the_flapping_thresholds_are_the_servers_settings(
    live: LiveState, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTRICT_SERVER_ALERT_FLAP_CHANGES", "3")
    monkeypatch.setenv("DISTRICT_SERVER_ALERT_FLAP_WINDOW_S", "30")
    settings = ServerSettings(site_config=tmp_path / "unused.yaml", state_dir=tmp_path)
    engine = create_app(settings, site=live.site, live=live, connect=False).state.alerts
    report_all(live, clock)
    for k in range(3):  # 3 changes 20 s apart: within 30 s only 2 of them
        clock.advance(20)
        bay(live, clock, "B001", "free" if k % 2 == 0 else "occupied")
    assert "bay_flapping:bay:L1.B001" not in kinds(engine)
    for k in range(3):  # 3 more changes 10 s apart (it is free now)
        clock.advance(10)
        bay(live, clock, "B001", "occupied" if k % 2 == 0 else "free")
    assert kinds(engine).get("bay_flapping:bay:L1.B001") == "warning"
    assert "changed 3 times in 30 s" in next(a.text for a in engine.alerts() if a.kind == "bay_flapping")
    monkeypatch.setenv("DISTRICT_SERVER_ALERT_FLAP_CHANGES", "33")  # more than a bay remembers (FLAP_KEEP)
    with pytest.raises(ValidationError, match="alert_flap_changes"):
        ServerSettings(site_config=tmp_path / "unused.yaml")
