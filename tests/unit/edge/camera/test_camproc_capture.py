"""Capture: timestamps, end of file, looping, reconnect with capped exponential backoff, skipping."""

from __future__ import annotations

import pytest
from conftest import FakeClock, FakeSource, ScriptedFactory

from edge.camera.camera_config import SourceConfig
from edge.camera.capture import Backoff, Capture, EndOfSource


def no_jitter() -> float:
    return 0.5  # 2*0.5-1 = 0: no spread


def file_src(**kw: object) -> SourceConfig:
    return SourceConfig.model_validate({"path": "/nonexistent/video.mp4", **kw})


def stream_src(**kw: object) -> SourceConfig:
    return SourceConfig.model_validate(
        {"url": "rtsp://user:pw@10.0.0.9/s", "reconnect_min_s": 0.5, "reconnect_max_s": 8, **kw}
    )


def read_all(cap: Capture, limit: int = 10_000) -> list:
    frames = []
    for _ in range(limit):
        try:
            f = cap.read()
        except EndOfSource:
            return frames
        if f is not None:
            frames.append(f)
    raise AssertionError("source did not end")


def test_backoff_doubles_and_caps() -> None:
    b = Backoff(0.5, 8.0, rng=no_jitter)
    assert [b.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next() == 0.5


def test_backoff_jitter_stays_within_ten_percent_and_cap() -> None:
    lo, hi = Backoff(1.0, 4.0, rng=lambda: 0.0), Backoff(1.0, 4.0, rng=lambda: 1.0)
    assert [round(lo.next(), 3) for _ in range(4)] == [0.9, 1.8, 3.6, 3.6]
    assert [round(hi.next(), 3) for _ in range(4)] == [1.1, 2.2, 4.0, 4.0]


def test_file_timestamps_are_frame_index_over_fps_and_end(clock: FakeClock) -> None:
    cap = Capture(file_src(), factory=ScriptedFactory([FakeSource(5, fps=4.0)]), clock=clock, wait=clock.wait)
    frames = read_all(cap)
    assert [f.index for f in frames] == [1, 2, 3, 4, 5]
    assert [f.t for f in frames] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [f.new_segment for f in frames] == [True, False, False, False, False]
    assert clock.waits == []  # not paced: as fast as the CPU allows
    with pytest.raises(EndOfSource):
        cap.read()


def test_file_loop_keeps_time_increasing(clock: FakeClock) -> None:
    factory = ScriptedFactory([FakeSource(3, fps=2.0), FakeSource(3, fps=2.0), FakeSource(0)])
    cap = Capture(file_src(loop=True), factory=factory, clock=clock, wait=clock.wait, rng=no_jitter)
    frames, connected = [], []
    for _ in range(10):
        f = cap.read()
        connected.append(cap.connected)
        if f is not None:
            frames.append(f)
    # Reopened within the read that met the end: connected throughout, until the empty file fails.
    assert connected == [True] * 8 + [False] * 2, connected
    assert [f.t for f in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert [f.index for f in frames] == [1, 2, 3, 4, 5, 6]
    assert [f.new_segment for f in frames] == [True, False, False, True, False, False]
    # An empty file does not spin: it is a failure with backoff.
    assert cap.open_failures == 0 and cap.read_failures == 1 and not cap.connected


def test_realtime_file_is_paced_to_its_frame_rate(clock: FakeClock) -> None:
    cap = Capture(
        file_src(realtime=True), factory=ScriptedFactory([FakeSource(4, fps=5.0)]), clock=clock, wait=clock.wait
    )
    start = clock.now
    seen = []
    while True:
        try:
            f = cap.read()
        except EndOfSource:
            break
        if f is not None:
            seen.append((round(clock.now - start, 6), f.t))
    assert seen == [(0.0, 0.0), (0.2, 0.2), (0.4, 0.4), (0.6, 0.6)]


def test_realtime_file_skips_frames_when_processing_falls_behind(clock: FakeClock) -> None:
    cap = Capture(
        file_src(realtime=True), factory=ScriptedFactory([FakeSource(10, fps=10.0)]), clock=clock, wait=clock.wait
    )
    first = cap.read()
    assert first is not None and first.index == 1
    clock.advance(0.35)  # processing took 3.5 frame periods
    nxt = cap.read()
    assert nxt is not None
    assert (nxt.index, nxt.t) == (4, pytest.approx(0.3))
    assert cap.skipped == 2


def test_stream_reconnects_with_backoff_and_resets_after_a_frame(clock: FakeClock) -> None:
    factory = ScriptedFactory(
        [FakeSource(2), None, None, None, FakeSource(3), None],
        then=lambda: None,
    )
    cap = Capture(stream_src(), factory=factory, clock=clock, wait=clock.wait, rng=no_jitter, poll_s=100)
    got = [cap.read() for _ in range(20)]
    frames = [f for f in got if f is not None]
    assert len(frames) == 5
    assert [f.new_segment for f in frames] == [True, False, True, False, False]
    # grab failed -> 0.5 s, then three failed opens -> 1, 2, 4 s; a frame resets the backoff:
    # the next failure waits 0.5 s again.
    assert clock.waits[:5] == [0.5, 1.0, 2.0, 4.0, 0.5]
    assert cap.read_failures == 2 and cap.open_failures >= 3
    assert all(f.t >= 0 for f in frames) and [f.t for f in frames] == sorted(f.t for f in frames)


def test_stream_backoff_is_capped_and_polls_so_the_loop_can_report(clock: FakeClock) -> None:
    factory = ScriptedFactory([], then=lambda: None)
    cap = Capture(stream_src(), factory=factory, clock=clock, wait=clock.wait, rng=no_jitter, poll_s=0.5)
    for _ in range(200):
        assert cap.read() is None
        assert cap.retry_in is not None and cap.retry_in <= 8.0
    assert max(clock.waits) <= 0.5  # never blocks longer than one poll
    assert cap.backoff.failures >= 6  # 0.5+1+2+4+8+8... within 100 s of fake time


def test_open_that_raises_is_a_failed_attempt(clock: FakeClock) -> None:
    def boom(cfg: SourceConfig) -> FakeSource:
        raise RuntimeError("ffmpeg exploded")

    cap = Capture(stream_src(), factory=boom, clock=clock, wait=clock.wait, rng=no_jitter)
    assert cap.read() is None
    assert cap.open_failures == 1 and cap.retry_in == 0.5


def test_live_skip_behind_drops_buffered_frames(clock: FakeClock) -> None:
    cap = Capture(stream_src(), factory=ScriptedFactory([FakeSource(50, fps=10.0)]), clock=clock, wait=clock.wait)
    assert cap.read() is not None
    assert cap.skip_behind(0.05) == 0  # faster than the frame rate: nothing to skip
    assert cap.skip_behind(0.42) == 3  # 4 frames arrived meanwhile: keep the freshest
    nxt = cap.read()
    assert nxt is not None and nxt.index == 5
    assert cap.skipped == 3
    no_skip = Capture(stream_src(skip_to_live=False), factory=ScriptedFactory([FakeSource(5)]), clock=clock)
    no_skip.read()
    assert no_skip.skip_behind(1.0) == 0
