"""The camera loop with fakes: privacy boundary, queue-full drops, intervals, health, config."""

from __future__ import annotations

import itertools
import queue
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from conftest import FakeClock, FakeSource, ScriptedFactory
from pydantic import ValidationError

from contracts.messages import CameraHealth, FootfallCount, LineCount
from edge.camera.camera_config import CameraConfig, SourceConfig, redact_url
from edge.camera.count import CrossingEvent
from edge.camera.process import EXIT_CONFIG, MAX_ITEM_BYTES, Emitter, PrivacyViolation, checked, run_camera

T0 = datetime(2024, 5, 1, 10, 0, 50, tzinfo=UTC)


def footfall(n_lines: int = 2) -> FootfallCount:
    return FootfallCount(
        device_id="edge-1",
        observed_at=T0,
        reading_id="r" * 32,
        zone_id="plaza",
        interval_start=T0 - timedelta(minutes=1),
        lines=[LineCount(line_id=f"l{i}", towards=1, away=0) for i in range(n_lines)],
        occupancy=3,
    )


def cam_config(**kw: object) -> CameraConfig:
    data: dict = {
        "id": "cam-1",
        "source": {"path": "/nonexistent/clip.mp4"},
        "lines": [
            {"name": "north", "A": [0, 24], "B": [64, 24], "in_side_point": [32, 40], "zone": "plaza"},
            {"name": "gate", "A": [32, 0], "B": [32, 48], "in_side_point": [10, 10], "zone": "market"},
        ],
        "interval_s": 10,
        "occupancy_reset": None,
        "health": {"frozen_after_s": 2.0, "report_interval_s": 1.0, "disconnected_after_s": 1.0},
        **kw,
    }
    if data["lines"] is None:  # lines come from lines_file instead
        del data["lines"]
    return CameraConfig.model_validate(data)


# -- privacy boundary ------------------------------------------------------------------------
def test_allowed_messages_pass_as_clean_copies() -> None:
    msg = footfall()
    out = checked(msg)
    assert out == msg and out is not msg
    health = CameraHealth(camera_id="cam-1", state="ok", fps=7.0, dropped_frames=0)
    assert checked(health) == health


@pytest.mark.parametrize(
    "item",
    [np.zeros((4, 4, 3), np.uint8), b"\xff\xd8jpeg", {"kind": "footfall"}, "text", [footfall()], None],
)
def test_anything_else_is_a_privacy_violation(item: object) -> None:
    with pytest.raises(PrivacyViolation):
        checked(item)


def test_subclasses_and_smuggled_arrays_are_rejected() -> None:
    class Sneaky(FootfallCount):
        thumbnail: bytes = b""

    with pytest.raises(PrivacyViolation):
        checked(Sneaky(**footfall().model_dump(), thumbnail=b"\x00" * 10))
    smuggled = footfall()
    object.__setattr__(smuggled, "occupancy", np.zeros((8, 8), np.uint8))
    with pytest.raises(PrivacyViolation):
        checked(smuggled)


def test_oversized_message_is_rejected() -> None:
    big = footfall(64).model_copy(update={"zone_id": "z" * 60})
    object.__setattr__(big, "lines", [LineCount(line_id="x" * 64, towards=999_999, away=999_999)] * 200)
    with pytest.raises(PrivacyViolation, match=str(MAX_ITEM_BYTES)):
        checked(big)


def test_full_queue_drops_and_counts_without_blocking() -> None:
    q: queue.Queue[object] = queue.Queue(maxsize=2)
    emit = Emitter(q, "cam-1")
    results = [emit.put(footfall()) for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert (emit.sent, emit.dropped, q.qsize()) == (2, 3, 2)


# -- the loop ----------------------------------------------------------------------------------
class FakeEngine:
    """Reports an 'in' crossing of 'north' on every 5th frame, an 'out' of 'gate' on every 7th."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, float]] = []
        self.finished = 0

    def finish(self) -> list[CrossingEvent]:
        self.finished += 1
        return []

    def process(self, frame_bgr: np.ndarray, frame_index: int, t_seconds: float) -> list[CrossingEvent]:
        self.frames.append((frame_index, t_seconds))
        out = []
        if frame_index % 5 == 0:
            out.append(CrossingEvent("north", "in", frame_index, t_seconds, 1))
        if frame_index % 7 == 0:
            out.append(CrossingEvent("gate", "out", frame_index, t_seconds, 2))
        return out


class WallClock:
    """Device UTC clock tied to the fake monotonic clock."""

    def __init__(self, mono: FakeClock) -> None:
        self.mono, self.base = mono, mono.now

    def __call__(self) -> datetime:
        return T0 + timedelta(seconds=self.mono.now - self.base)


def moving_frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(60, 200, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def run(
    config: CameraConfig,
    factory: ScriptedFactory,
    clock: FakeClock,
    *,
    per_frame_s: float = 0.1,
    stop_after: int | None = None,
) -> tuple[int, list[object], list[FakeEngine]]:
    engines: list[FakeEngine] = []

    def make_engine(lines: object, cfg: object) -> FakeEngine:
        engines.append(FakeEngine())
        return engines[-1]

    def advance() -> None:  # each grab takes one frame period of wall time
        clock.advance(per_frame_s)

    for src in factory.script:
        if src is not None:
            src.on_grab = advance
    q: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    if stop_after is not None:
        orig = clock.wait

        def wait(s: float) -> bool:
            orig(s)
            if clock.now - 1000.0 > stop_after:
                stop.set()
            return stop.is_set()

        stop.wait = wait  # type: ignore[method-assign]
    code = run_camera(
        config,
        q,
        stop,
        device_id="edge-1",
        capture_factory=factory,
        engine_factory=make_engine,
        clock=clock,
        wall_clock=WallClock(clock),
    )
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return code, items, engines


def test_file_run_publishes_aligned_intervals_counts_and_health(clock: FakeClock) -> None:
    factory = ScriptedFactory([FakeSource(moving_frames(250), fps=10.0)])
    code, items, engines = run(cam_config(), factory, clock)
    assert code == 0
    assert all(type(i) in (FootfallCount, CameraHealth) for i in items)
    counts = [i for i in items if isinstance(i, FootfallCount)]
    health = [i for i in items if isinstance(i, CameraHealth)]
    assert health[0].state in ("starting", "ok") and {h.state for h in health} <= {"starting", "ok"}
    assert health[-1].fps == pytest.approx(10.0, rel=0.05)
    # 25 s of frames from 10:00:50: intervals [..:50.1, 01:00), [01:00, 01:10), [01:10, 01:15.x) per zone.
    plaza = [m for m in counts if m.zone_id == "plaza"]
    assert [m.observed_at.second for m in plaza[:-1]] == [0, 10]
    assert plaza[1].interval_start == datetime(2024, 5, 1, 10, 1, 0, tzinfo=UTC)
    assert plaza[-1].observed_at > plaza[-2].observed_at  # the final partial interval at the end of the file
    assert sum(m.towards for m in plaza) == 250 // 5
    market = [m for m in counts if m.zone_id == "market"]
    assert sum(m.away for m in market) == 250 // 7 and all(m.occupancy == 0 for m in market)
    assert plaza[-1].occupancy == 250 // 5
    # The engine saw every frame with deterministic file timestamps.
    assert engines[0].frames[:3] == [(1, 0.0), (2, 0.1), (3, 0.2)]


def test_frozen_feed_pauses_counting_and_reports_frozen(clock: FakeClock) -> None:
    frames = moving_frames(30) + [moving_frames(1)[0]] * 60 + moving_frames(30)
    code, items, _ = run(cam_config(), ScriptedFactory([FakeSource(frames, fps=10.0)]), clock)
    assert code == 0
    states = [i.state for i in items if isinstance(i, CameraHealth)]
    assert "frozen" in states and states[-1] == "ok"
    counts = [i for i in items if isinstance(i, FootfallCount) and i.zone_id == "plaza"]
    covered = sum((m.observed_at - m.interval_start).total_seconds() for m in counts)
    assert covered < 12.0 - 3.0  # ~4 s of the 6 s frozen stretch (after the 2 s threshold) is not covered
    gaps = [b.interval_start - a.observed_at for a, b in itertools.pairwise(counts)]
    assert max(gaps) >= timedelta(seconds=3)


def test_the_picture_probe_runs_at_most_every_probe_interval(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe costs 8.6 ms at 1080p: at 10 fps and 0.2 s it runs on every 2nd frame, not every frame."""
    from edge.camera import process

    calls = []
    measure = process.FrameProbe.measure

    def counting(self: object, frame: np.ndarray, keep: object = None) -> tuple[float, float | None]:
        calls.append(1)
        return measure(self, frame, keep)  # type: ignore[arg-type]

    monkeypatch.setattr(process.FrameProbe, "measure", counting)
    frames = moving_frames(20) + [moving_frames(1)[0]] * 60
    cfg = cam_config(
        health={"frozen_after_s": 2.0, "report_interval_s": 1.0, "disconnected_after_s": 1.0, "probe_interval_s": 0.2}
    )
    code, items, engines = run(cfg, ScriptedFactory([FakeSource(frames, fps=10.0)]), clock)
    assert code == 0
    assert len(engines[0].frames) == 80  # counting still sees every frame
    # At most one probe per 0.2 s of media time (8 s here: <= 41), at least every third frame.
    assert 80 // 3 <= len(calls) <= 41
    assert "frozen" in [i.state for i in items if isinstance(i, CameraHealth)]


def test_dead_stream_reports_disconnected_and_publishes_no_counts(clock: FakeClock) -> None:
    cfg = cam_config(source={"url": "rtsp://10.0.0.9/s", "reconnect_min_s": 0.5, "reconnect_max_s": 4})
    code, items, _ = run(cfg, ScriptedFactory([], then=lambda: None), clock, stop_after=30)
    assert code == 0
    assert not any(isinstance(i, FootfallCount) for i in items)
    states = [i.state for i in items if isinstance(i, CameraHealth)]
    assert set(states) == {"disconnected"}  # the first open already failed: reconnecting
    assert len(states) >= 20  # kept reporting about once a second while retrying


def test_unusable_lines_exit_with_config_status(clock: FakeClock) -> None:
    cfg = cam_config(lines=None, lines_file="/nonexistent/lines.json")
    code, items, _ = run(cfg, ScriptedFactory([FakeSource(5)]), clock)
    assert code == EXIT_CONFIG and items == []


def test_missing_person_model_exits_with_config_status_before_the_stream_opens(clock: FakeClock) -> None:
    cfg = cam_config(engine={"detector": {"type": "hybrid", "model_path": "/nonexistent/yolox.onnx"}})
    factory = ScriptedFactory([FakeSource(5)])
    code, items, engines = run(cfg, factory, clock)
    assert code == EXIT_CONFIG and items == [] and engines == []
    assert factory.script[0] is not None and factory.script[0].pos == 0  # the camera was never read


@pytest.mark.allow_logged_exceptions
def test_engine_exception_is_logged_and_the_loop_goes_on(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    class Flaky(FakeEngine):
        def process(self, frame_bgr: np.ndarray, frame_index: int, t_seconds: float) -> list[CrossingEvent]:
            calls.append(frame_index)
            if frame_index == 3:
                raise RuntimeError("bad frame")
            return super().process(frame_bgr, frame_index, t_seconds)

    q: queue.Queue[object] = queue.Queue()
    code = run_camera(
        cam_config(),
        q,
        threading.Event(),
        device_id="edge-1",
        capture_factory=ScriptedFactory([FakeSource(moving_frames(12))]),
        engine_factory=lambda lines, cfg: Flaky(),
        clock=clock,
        wall_clock=WallClock(clock),
    )
    assert code == 0 and calls == list(range(1, 13))
    assert "engine failed on frame 3" in caplog.text


# -- configuration -----------------------------------------------------------------------------
def test_config_rejects_unknown_keys_and_ambiguous_sources() -> None:
    with pytest.raises(ValidationError, match="extra"):
        cam_config(colour="blue")
    with pytest.raises(ValidationError, match="exactly one"):
        SourceConfig.model_validate({"path": "a.mp4", "device": 0})
    with pytest.raises(ValidationError, match="file sources only"):
        SourceConfig.model_validate({"url": "rtsp://x/y", "loop": True})
    with pytest.raises(ValidationError, match="V4L2"):
        SourceConfig.model_validate({"device": "/etc/passwd"})
    with pytest.raises(ValidationError, match="divide a day"):
        cam_config(interval_s=7)
    with pytest.raises(ValidationError, match="time zone"):
        cam_config(timezone="Mars/Olympus")
    assert SourceConfig.model_validate({"device": "/dev/video0"}).kind == "device"


def test_privacy_polygons_have_one_home() -> None:
    """The camera's ``privacy:`` is where polygons go; the engine section refuses them in a camera config."""
    square = [[0.0, 0.0], [0.3, 0.0], [0.3, 0.2]]
    with pytest.raises(ValidationError, match="privacy polygons belong under the camera's privacy"):
        cam_config(engine={"privacy": {"polygons": [square]}})
    assert cam_config(privacy={"polygons": [square]}).privacy_polygons == [[(0.0, 0.0), (0.3, 0.0), (0.3, 0.2)]]


def test_lines_file_needs_a_zone_per_line(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "lines.json"  # type: ignore[operator]
    path.write_text(
        '{"image_size": [640, 480], "lines": [{"name": "L1", "A": [0, 100], "B": [640, 100],'
        ' "in_side_point": [320, 300]}]}'
    )
    with pytest.raises(ValueError, match="no zone for line"):
        cam_config(lines=None, lines_file=str(path)).resolve_lines()
    lines, zones = cam_config(lines=None, lines_file=str(path), line_zones={"L1": "plaza"}).resolve_lines((320, 240))
    assert zones == {"L1": "plaza"} and lines[0].a == (0.0, 50.0)  # rescaled to the frame


def test_passwords_never_reach_the_logs() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.9:554/stream1") == "rtsp://admin:***@10.0.0.9:554/stream1"
    assert redact_url("rtsp://10.0.0.9/stream1") == "rtsp://10.0.0.9/stream1"
    cfg = SourceConfig.model_validate({"url": "rtsp://admin:s3cret@10.0.0.9/s"})
    assert "s3cret" not in cfg.describe()
