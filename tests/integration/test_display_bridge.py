"""The display bridge with real parts: real HTTP (a uvicorn server serving the sign-state contract,
tests/display_api.py), the real bridge (object or ``district display-bridge`` process), and the simulated
count display on the real pty bus (firmware_sim). No mocks: what the sign shows is read from the display.

Timings are short so the suite stays quick: the bridge re-writes every 1 s and falls back after 3 s
without the API; the display blanks itself after 3 s without a heartbeat; the API pings every second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.site import SiteConfig
from edge.displays.bridge import DisplayBridge
from edge.displays.config import BridgeConfig
from firmware_sim.count_display import CountDisplay
from firmware_sim.fleet import Fleet
from tests.conftest import REPO, wait_for
from tests.display_api import FakeDisplayApi

pytestmark = pytest.mark.integration

SITE = SiteConfig.model_validate({"site": {"id": "t", "name": "T", "timezone": "Europe/Berlin"}})
STALE_AFTER_S = 3.0
DISPLAY_TIMEOUT_S = 3.0
WRITE_INTERVAL_S = 1.0


@pytest.fixture
def api() -> Iterator[FakeDisplayApi]:
    server = FakeDisplayApi(heartbeat_s=1.0)
    server.set("vms", 57)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(SITE, tmp_path / "buses", speed=0, displays=["vms"], display_timeout_s=DISPLAY_TIMEOUT_S, tick_s=0.1)
    f.start()
    yield f
    f.stop()


@pytest.fixture
def sign(fleet: Fleet) -> CountDisplay:
    return fleet.display("vms")


def bridge_config(api: FakeDisplayApi, fleet: Fleet, **api_settings: object) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "api": {"url": api.url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, **api_settings},
            "displays": [{"display_id": "vms", "port": str(fleet.displays["vms"].bus.path)}],
            "write_interval_s": WRITE_INTERVAL_S,
            "stale_after_s": STALE_AFTER_S,
        }
    )


@pytest.fixture
def bridge(api: FakeDisplayApi, fleet: Fleet, sign: CountDisplay) -> Iterator[DisplayBridge]:
    b = DisplayBridge(bridge_config(api, fleet))
    b.start()
    wait_for(lambda: sign.shown().face == "57", 15, what="the first state on the sign")
    yield b
    b.stop()


def shows_within(sign: CountDisplay, face: str, timeout: float) -> float:
    """Seconds until the sign shows ``face``; fails after ``timeout``."""
    t0 = time.monotonic()
    wait_for(lambda: sign.shown().face == face, timeout, interval=0.01, what=f"the sign showing {face!r}")
    return time.monotonic() - t0


def outlast_the_watchdog(sign: CountDisplay) -> None:
    """Wait for enough re-writes to span more than the sign's comms-loss timeout."""
    writes = sign.shown().writes
    n = int(DISPLAY_TIMEOUT_S / WRITE_INTERVAL_S) + 1
    wait_for(lambda: sign.shown().writes >= writes + n, 3 * n * WRITE_INTERVAL_S, what=f"{n} more writes")


def test_every_change_reaches_the_sign_within_two_seconds(
    api: FakeDisplayApi, bridge: DisplayBridge, sign: CountDisplay
) -> None:
    latencies = []
    for value in (56, 55, 120, 0):
        api.set("vms", value)
        latencies.append(shows_within(sign, str(value), 5))
    api.set("vms", 2, text="LOW", state="low")
    latencies.append(shows_within(sign, "LOW", 5))
    api.set("vms", None, text="CLOSED", state="closed", mode="closed")
    latencies.append(shows_within(sign, "CLOSED", 5))
    print(f"change -> sign latencies: {', '.join(f'{t * 1000:.0f} ms' for t in latencies)}")
    assert max(latencies) < 2.0
    frame = sign.shown().frame
    assert (frame.mode, frame.state, frame.trusted, frame.link_lost) == ("closed", "closed", True, False)
    # re-written every second with a new heartbeat: the sign's own 3 s watchdog never fires
    beat, t0 = frame.heartbeat, time.monotonic()
    outlast_the_watchdog(sign)
    assert sign.shown().frame.heartbeat != beat and time.monotonic() - t0 > DISPLAY_TIMEOUT_S
    assert sign.comms_losses == 0 and sign.shown().face == "CLOSED"
    stats = bridge.stats()["vms"]
    assert stats["streaming"] and stats["malformed"] == 0 and stats["write_failures"] == 0


def test_a_dropped_stream_is_reopened_and_polling_covers_a_missing_one(
    api: FakeDisplayApi, bridge: DisplayBridge, sign: CountDisplay
) -> None:
    link = bridge.links["vms"]
    connects = link.stats["sse_connects"]
    api.drop_streams()
    wait_for(lambda: link.stats["sse_connects"] > connects, 10, what="the stream reopened")
    assert api.hits["resumed"] >= 1, "it resumed with Last-Event-ID: no state sent twice"
    api.set("vms", 41)
    shows_within(sign, "41", 5)

    api.sse = False  # the API stops offering the stream: polling keeps the sign current
    api.drop_streams()
    wait_for(lambda: link.stats["sse_refused"] >= 1, 10, what="the stream refused")
    polls = api.hits["poll"]
    api.set("vms", 42)
    assert shows_within(sign, "42", 5) < 2.0
    wait_for(lambda: api.hits["not_modified"] >= 2, 10, what="conditional polls answered 304")
    assert api.hits["poll"] > polls

    api.sse = True
    wait_for(lambda: bridge.stats()["vms"]["streaming"], 10, what="back on the stream")
    api.set("vms", 43)
    shows_within(sign, "43", 5)
    assert sign.comms_losses == 0


def test_the_api_gone_blanks_the_sign_after_the_stale_limit_and_the_number_returns(
    api: FakeDisplayApi, bridge: DisplayBridge, sign: CountDisplay
) -> None:
    api.set("vms", 88)
    shows_within(sign, "88", 5)
    api.stop()
    t_stop = time.monotonic()
    wait_for(lambda: sign.shown().blank, STALE_AFTER_S + 5, interval=0.02, what="the sign blanked by the bridge")
    blank_after = time.monotonic() - t_stop
    print(f"API stopped -> sign blank after {blank_after:.2f} s (stale_after_s {STALE_AFTER_S})")
    # the last vouch (a ping or an event) came at most one ping period before the stop
    assert STALE_AFTER_S - 1.5 <= blank_after <= STALE_AFTER_S + 1.5
    frame = sign.shown().frame
    assert frame.link_lost and frame.state == "fallback" and frame.value is None
    outlast_the_watchdog(sign)  # the bridge keeps writing the fallback: the sign's watchdog stays quiet
    assert sign.comms_losses == 0 and sign.shown().blank

    api.start()
    t_back = time.monotonic()
    shows_within(sign, "88", 10)
    print(f"API back -> number back after {time.monotonic() - t_back:.2f} s")
    faces = [face for t, face in sign.history() if t >= t_stop]
    assert faces == ["", "88"], f"never the old number while the API was away: {faces}"


def test_malformed_states_are_counted_never_shown_and_the_sign_blanks_if_nothing_good_follows(
    api: FakeDisplayApi, bridge: DisplayBridge, sign: CountDisplay
) -> None:
    link = bridge.links["vms"]
    api.poll_body("vms", '{"display_id": "vms", "value": "lots"}')  # the resync poll is malformed too
    api.raw_event("vms", '{"display_id": "vms", "value": 99, "text": "99"')  # cut short
    api.raw_event("vms", "<html>502 Bad Gateway</html>")
    wait_for(lambda: link.stats["malformed"] >= 4, 10, what="malformed event and poll counted")
    assert sign.shown().face == "57", "the last good state stays"
    t0 = time.monotonic()
    wait_for(lambda: sign.shown().blank, STALE_AFTER_S + 5, what="blank: pings no longer vouch for it")
    assert time.monotonic() - t0 <= STALE_AFTER_S + 1.5
    assert bridge.stats()["vms"]["streaming"], "the stream itself stayed up"
    api.poll_body("vms", None)
    api.set("vms", 60)
    shows_within(sign, "60", 5)
    assert "99" not in [face for _, face in sign.history()]


def _bridge_process(api: FakeDisplayApi, fleet: Fleet) -> subprocess.Popen[bytes]:
    path = fleet.displays["vms"].bus.path
    args = ["display-bridge", "--api", api.url, "--display", f"vms={path}@1"]
    args += ["--write-interval", str(WRITE_INTERVAL_S), "--stale-after", "30", "--log-level", "INFO"]
    return subprocess.Popen(
        [sys.executable, "-m", "district.cli", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_the_bridge_process_stops_cleanly_and_a_killed_one_leaves_the_sign_blank(
    api: FakeDisplayApi, fleet: Fleet, sign: CountDisplay
) -> None:
    proc = _bridge_process(api, fleet)
    try:
        wait_for(lambda: sign.shown().face == "57" or proc.poll() is not None, 30, what="the process feeding the sign")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()
    assert sign.shown().blank and sign.shown().frame.link_lost, "a clean stop leaves the fallback, at once"
    assert "display bridge stopped" in out.decode()

    proc = _bridge_process(api, fleet)
    try:
        wait_for(lambda: sign.shown().face == "57" or proc.poll() is not None, 30, what="the second process")
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    wait_for(lambda: sign.shown().blank, DISPLAY_TIMEOUT_S + 5, interval=0.02, what="the sign's own watchdog")
    blank_after = time.monotonic() - t_kill
    print(f"bridge SIGKILLed -> sign blank after {blank_after:.2f} s (its comms-loss timeout {DISPLAY_TIMEOUT_S})")
    assert DISPLAY_TIMEOUT_S - WRITE_INTERVAL_S - 0.5 <= blank_after <= DISPLAY_TIMEOUT_S + 1.0
    assert sign.shown().comms_lost and sign.comms_losses == 1
