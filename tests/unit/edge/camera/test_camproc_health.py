"""Camera health: frozen vs a noisy static scene, black, disconnected, frame rate."""

from __future__ import annotations

import numpy as np
import pytest

from edge.camera.camera_config import HealthConfig
from edge.camera.health import FrameProbe, HealthTracker
from edge.camera.privacy import PrivacyMask

CFG = HealthConfig(frozen_after_s=5.0, black_after_s=3.0, disconnected_after_s=2.0, fps_window_s=1.0)
FPS = 10.0


def scene(rng: np.random.Generator, h: int = 240, w: int = 320) -> np.ndarray:
    """A textured static street-like picture."""
    y, x = np.mgrid[0:h, 0:w]
    base = 90 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0) + rng.normal(0, 10, (h, w))
    return np.clip(np.repeat(base[..., None], 3, axis=2), 0, 255).astype(np.uint8)


def noisy(frame: np.ndarray, rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    """The same scene through a real sensor: fresh noise on every frame."""
    return np.clip(frame.astype(np.float32) + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


def feed(tracker: HealthTracker, probe: FrameProbe, frames: list[np.ndarray], t0: float) -> list[str]:
    states = []
    for i, f in enumerate(frames):
        t = t0 + i / FPS
        luma, mad = probe.measure(f)
        tracker.frame(1000.0 + t, t, luma, mad)
        states.append(tracker.state(1000.0 + t))
    return states


def test_identical_frames_become_frozen_after_the_threshold() -> None:
    rng = np.random.default_rng(1)
    still = noisy(scene(rng), rng)
    tracker, probe = HealthTracker("cam", CFG, now=1000.0), FrameProbe(CFG.frozen_mad)
    states = feed(tracker, probe, [still] * 80, 0.0)
    assert states[0] == "ok"
    assert states[49] == "ok"  # 4.9 s unchanged
    assert states[50] == "frozen" and states[-1] == "frozen"  # 5.0 s
    # The picture moves again: ok at once.
    assert feed(tracker, probe, [noisy(still, rng)], 8.0) == ["ok"]


def test_noisy_static_scene_is_not_frozen() -> None:
    rng = np.random.default_rng(2)
    base = scene(rng)
    for sigma in (1.0, 2.0):
        tracker, probe = HealthTracker("cam", CFG, now=1000.0), FrameProbe(CFG.frozen_mad)
        states = feed(tracker, probe, [noisy(base, rng, sigma) for _ in range(120)], 0.0)
        assert set(states) == {"ok"}, sigma


def test_slow_drift_below_threshold_per_frame_still_resets_the_run() -> None:
    # Each frame differs from the previous by less than the threshold, but the picture does
    # change over time: compared with the run's first frame it is not frozen.
    rng = np.random.default_rng(3)
    base = scene(rng).astype(np.float32)
    frames = [np.clip(base + 0.03 * i, 0, 255).astype(np.uint8) for i in range(0, 100)]
    tracker, probe = HealthTracker("cam", HealthConfig(frozen_after_s=5.0, frozen_mad=0.5), now=1000.0), FrameProbe(0.5)
    states = feed(tracker, probe, frames, 0.0)
    assert "frozen" not in states


def test_black_after_threshold_even_with_noise() -> None:
    rng = np.random.default_rng(4)
    dark = [np.clip(rng.normal(6, 3, (120, 160, 3)), 0, 255).astype(np.uint8) for _ in range(40)]
    tracker, probe = HealthTracker("cam", CFG, now=1000.0), FrameProbe(CFG.frozen_mad)
    states = feed(tracker, probe, dark, 0.0)
    assert states[29] == "ok" and states[30] == "black" and states[-1] == "black"
    assert feed(tracker, probe, [scene(rng)], 4.0) == ["ok"]


def test_black_wins_over_frozen() -> None:
    black = np.zeros((60, 80, 3), np.uint8)
    tracker, probe = HealthTracker("cam", CFG, now=1000.0), FrameProbe(CFG.frozen_mad)
    assert feed(tracker, probe, [black] * 70, 0.0)[-1] == "black"


def test_starting_then_disconnected_without_frames() -> None:
    tracker = HealthTracker("cam", CFG, now=1000.0)
    assert tracker.state(1001.9) == "starting"
    assert tracker.state(1002.0) == "disconnected"
    snap = tracker.snapshot(1002.0)
    assert (snap.state, snap.fps, snap.last_frame_age_s) == ("disconnected", 0.0, None)


def test_no_frame_for_a_while_or_reconnecting_is_disconnected() -> None:
    rng = np.random.default_rng(5)
    tracker, probe = HealthTracker("cam", CFG, now=1000.0), FrameProbe(CFG.frozen_mad)
    feed(tracker, probe, [noisy(scene(rng), rng) for _ in range(20)], 0.0)  # frames up to t=1.9
    assert tracker.state(1003.8) == "ok"
    assert tracker.state(1003.9) == "disconnected"  # 2 s after the last frame
    assert tracker.snapshot(1003.9).last_frame_age_s == pytest.approx(2.0)
    tracker.frame(1004.0, 4.0, 100.0, None)
    assert tracker.state(1004.0) == "ok"
    tracker.set_connected(False, 1004.1)
    assert tracker.state(1004.1) == "disconnected"  # at once, no waiting


def test_fps_is_measured_and_decays_when_frames_stop() -> None:
    tracker = HealthTracker("cam", CFG, now=0.0)
    for i in range(60):
        tracker.frame(i / 12.5, i / 12.5, 100.0, 5.0)
    last = 59 / 12.5
    assert tracker.fps(last) == pytest.approx(12.5, rel=0.01)
    assert tracker.fps(last + 1.0) < 3.0  # one window later it has mostly decayed
    tracker.read_failed()
    tracker.skipped(4)
    assert tracker.snapshot(last).dropped_frames == 5


def test_report_is_periodic_and_immediate_on_change() -> None:
    tracker = HealthTracker("cam", CFG, now=0.0)
    assert tracker.report_due(0.0)  # first: starting
    assert not tracker.report_due(1.0)
    tracker.frame(1.1, 0.0, 100.0, None)
    assert tracker.report_due(1.1)  # starting -> ok
    tracker.frame(3.0, 0.5, 100.0, 1.0)
    assert not tracker.report_due(3.5)
    tracker.frame(6.0, 1.0, 100.0, 1.0)
    assert tracker.report_due(6.2)  # 5 s after the last report


def test_probe_ignores_privacy_masked_area() -> None:
    # Left half bright and masked, right half dark: luminance must be that of the right half.
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :80] = 250
    frame[:, 80:] = 8
    mask = PrivacyMask([[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]])
    masked = mask.apply(frame)
    luma, _ = FrameProbe(0.05).measure(masked, mask.keep_mask(160, 120))
    assert luma == pytest.approx(8, abs=1.0)
    unmasked_luma, _ = FrameProbe(0.05).measure(masked)
    assert unmasked_luma < 6  # without weights the blanked half would darken it
