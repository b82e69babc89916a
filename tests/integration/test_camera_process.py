"""The real camera process (spawned) on the PETS clip, and on a camera that does not exist."""

from __future__ import annotations

import queue
import socket
import threading
import time
from datetime import datetime
from typing import Any

from contracts.messages import CameraHealth, FootfallCount
from edge.camera.camera_config import CameraConfig
from edge.camera.process import CameraProcess, CameraPump
from tests.conftest import SHARED, need, wait_for

PETS = SHARED / "data" / "footfall-video" / "PETS09-S2L1"
CLIP = PETS / "PETS09-S2L1_f0001-0300.mp4"
LINES = {"L1_road_west_x250": "plaza", "L2_road_centre_x430": "plaza", "L3_road_east_x650": "plaza"}


def pets_config(**kw: Any) -> CameraConfig:
    need(CLIP.is_file() and (PETS / "lines.json").is_file(), f"PETS clip not found at {PETS}")
    source = {"path": str(CLIP), **kw.pop("source", {})}
    return CameraConfig.model_validate(
        {"id": "cam-pets", "source": source, "lines_file": str(PETS / "lines.json"), "line_zones": LINES, **kw}
    )


def drain(cam: CameraProcess, timeout: float) -> list[object]:
    """Everything the process puts on its queue until it exits (it ends at the end of the file)."""
    items: list[object] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            items.append(cam.out.get(timeout=0.2))
        except queue.Empty:
            if not cam.is_alive():
                return items
    raise AssertionError(f"camera process still running after {timeout} s")


def plain(value: object) -> bool:
    """Only small plain values: no bytes, no arrays, nothing image-like."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return len(value) <= 64 and all(plain(v) for v in value)
    return value is None or (
        isinstance(value, str | int | float | bool | datetime) and (not isinstance(value, str) or len(value) <= 200)
    )


def test_pets_clip_counts_and_nothing_image_like_leaves_the_process() -> None:
    cam = CameraProcess(pets_config(interval_s=60), device_id="edge-cam-1", queue_size=64)
    try:
        cam.start()
        items = drain(cam, timeout=120)
        assert cam.exitcode == 0
    finally:
        cam.close()
    assert items, "the camera process sent nothing"
    for item in items:
        assert type(item) in (FootfallCount, CameraHealth), type(item)
        assert len(item.model_dump_json()) < 4096
        assert plain(item.model_dump()), item
    counts = [i for i in items if isinstance(i, FootfallCount)]
    assert counts and {m.zone_id for m in counts} == {"plaza"}
    assert {c.line_id for m in counts for c in m.lines} == set(LINES)
    towards, away = sum(m.towards for m in counts), sum(m.away for m in counts)
    # 300 frames, ~30 people crossing in ground truth; the engine finds most of them.
    assert towards >= 10 and away >= 3, (towards, away)
    last = counts[-1].occupancy
    assert last is not None and last >= towards - away  # clamped at 0 after every event
    health = [i for i in items if isinstance(i, CameraHealth)]
    assert health and all(h.camera_id == "cam-pets" for h in health)
    assert {h.state for h in health} <= {"starting", "ok"}


def test_stop_mid_stream_flushes_the_partial_interval() -> None:
    cfg = pets_config(source={"realtime": True, "loop": True}, health={"report_interval_s": 0.5})
    cam = CameraProcess(cfg, device_id="edge-cam-1")
    got: list[object] = []

    def ok_seen() -> bool:
        try:
            got.append(cam.out.get(timeout=0.2))
        except queue.Empty:
            return False
        return any(isinstance(i, CameraHealth) and i.state == "ok" and i.fps > 0 for i in got)

    try:
        cam.start()
        wait_for(ok_seen, timeout=60, what="camera reporting ok with a frame rate")
        assert cam.stop(timeout=15) == 0
        got += drain(cam, timeout=5)
    finally:
        cam.close()
    ok = [i for i in got if isinstance(i, CameraHealth) and i.state == "ok" and i.fps > 0]
    assert 4.0 < ok[-1].fps < 10.0  # paced to the clip's 7 fps
    counts = [i for i in got if isinstance(i, FootfallCount)]
    assert counts, "the interval in progress was not flushed at stop"
    assert all(m.observed_at > m.interval_start for m in counts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nonexistent_stream_reports_disconnected_and_keeps_retrying() -> None:
    cfg = CameraConfig.model_validate(
        {
            "id": "cam-ghost",
            "source": {
                "url": f"rtsp://127.0.0.1:{free_port()}/nope",
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
                "open_timeout_s": 2.0,
            },
            "lines": [{"name": "gate", "A": [0, 10], "B": [10, 10], "in_side_point": [5, 20], "zone": "plaza"}],
            "health": {"report_interval_s": 0.5, "disconnected_after_s": 1.0},
        }
    )
    cam = CameraProcess(cfg, device_id="edge-cam-1")
    counts: list[FootfallCount] = []
    stop = threading.Event()
    pump = CameraPump(cam.out, [cam], counts.extend, stop, stale_after_s=5.0)
    try:
        cam.start()
        pump.start()
        wait_for(
            lambda: [h.state for h in pump.health()] == ["disconnected"] and pump.received >= 3,
            timeout=60,
            what="disconnected health reports",
        )
        first = pump.received
        # Still alive and still reporting while it retries with backoff.
        wait_for(lambda: pump.received >= first + 4, timeout=30, what="more health reports while retrying")
        assert cam.is_alive()
        assert pump.health()[0].state == "disconnected" and pump.health()[0].fps == 0.0
        assert cam.stop(timeout=15) == 0
    finally:
        stop.set()
        pump.join(5)
        cam.close()
    assert counts == []  # a dead camera publishes no (zero) counts: silence stays distinguishable
    assert pump.errors == 0
    # Once the process is gone the pump reports it as disconnected, whatever it last said.
    assert pump.health()[0].state == "disconnected"
