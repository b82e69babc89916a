"""Camera health: frame rate, dropped frames, frame age, and frozen / black / disconnected detection.

:class:`FrameProbe` turns a frame into two numbers (mean luminance, and the mean
absolute difference of a tiny grey thumbnail against a reference frame);
:class:`HealthTracker` turns those numbers and the capture's events into a
state and :class:`contracts.CameraHealth` snapshots. Both stay inside the
camera process; only the snapshot (a state name and a few numbers) leaves.

Frozen means the *identical* picture repeats (a hung encoder, a stuck
buffer): the thumbnail is compared with the first frame of the current
unchanged run, not with the previous frame, so a slow drift cannot hide a
change and sensor noise on a static scene (a quiet street at night) keeps
resetting the run. Durations of black/frozen are measured on the frames'
own timestamps (file replays faster than real time stay consistent);
frame rate, frame age and disconnection on the monotonic wall clock.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from contracts.messages import CameraHealth, CameraState
from edge.camera.camera_config import HealthConfig

log = logging.getLogger(__name__)

THUMB_SIZE = (80, 60)


class FrameProbe:
    """Per-frame picture statistics on an 80x60 float grey thumbnail.

    ``keep`` is an optional uint8 mask (255 = analysable) of the privacy-masked
    frame, so blanked areas neither darken the luminance nor dilute the difference.
    """

    def __init__(self, frozen_mad: float) -> None:
        self.frozen_mad = frozen_mad
        self._ref: np.ndarray | None = None
        self._weights: np.ndarray | None = None
        self._weights_key: tuple[int, int, int] | None = None

    def reset(self) -> None:
        self._ref = None

    def measure(self, frame_bgr: np.ndarray, keep: np.ndarray | None = None) -> tuple[float, float | None]:
        """(mean luminance 0..255, MAD to the reference or None on the first frame / after a change).

        The reference is replaced by this frame whenever the difference reaches
        ``frozen_mad``; a MAD below it means "same picture as the run's first frame".
        """
        # Two steps: an integer-ratio uint8 area reduction (OpenCV's fast path) to about twice
        # the thumbnail, then grey and float averaging, so the noise of a live scene survives rounding.
        h, w = frame_bgr.shape[:2]
        k = max(1, min(w // (2 * THUMB_SIZE[0]), h // (2 * THUMB_SIZE[1])))
        small = cv2.resize(frame_bgr, (w // k, h // k), interpolation=cv2.INTER_AREA) if k > 1 else frame_bgr
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        thumb = cv2.resize(grey.astype(np.float32), THUMB_SIZE, interpolation=cv2.INTER_AREA)
        w = self._weights_for(keep)
        if w is None:
            luma = float(thumb.mean())
        else:
            # Cells partly inside a blanked polygon carry their blank share; undo it.
            thumb = np.divide(thumb, w, out=np.zeros_like(thumb), where=w > 0.05)
            luma = float((thumb * w).sum() / max(float(w.sum()), 1e-6))
        if self._ref is None or self._ref.shape != thumb.shape:
            self._ref = thumb
            return luma, None
        diff = np.abs(thumb - self._ref)
        mad = float(diff.mean()) if w is None else float((diff * w).sum() / max(float(w.sum()), 1e-6))
        if mad >= self.frozen_mad:
            self._ref = thumb
        return luma, mad

    def _weights_for(self, keep: np.ndarray | None) -> np.ndarray | None:
        if keep is None:
            return None
        key = (keep.shape[0], keep.shape[1], id(keep))
        if self._weights is None or self._weights_key != key:
            self._weights = cv2.resize(keep.astype(np.float32) / 255.0, THUMB_SIZE, interpolation=cv2.INTER_AREA)
            self._weights_key = key
        return self._weights


class HealthTracker:
    """State machine and counters for one camera.

    Feed it :meth:`frame` for every decoded frame, :meth:`read_failed` /
    :meth:`skipped` for lost frames, :meth:`set_connected` from the capture;
    read :meth:`state` and :meth:`snapshot` whenever. ``now`` is monotonic seconds.
    """

    def __init__(self, camera_id: str, cfg: HealthConfig, *, now: float) -> None:
        self.camera_id = camera_id
        self.cfg = cfg
        self.dropped_frames = 0
        self.frames = 0
        self._connected = True
        self._started = now
        self._disconnected_since: float | None = None
        self._last_frame: float | None = None  # monotonic
        self._dt: float | None = None  # EWMA of frame spacing
        self._dark_since: float | None = None  # frame time t
        self._same_since: float | None = None  # frame time t of the current unchanged run's first frame
        self._last_t: float | None = None
        self._state: CameraState = "starting"
        self._last_report: float | None = None
        self._reported_state: CameraState | None = None

    # -- inputs -------------------------------------------------------------------------
    def frame(self, now: float, t: float, luma: float, mad: float | None) -> None:
        """One frame decoded at monotonic ``now`` with media time ``t`` and its probe numbers."""
        self.frames += 1
        if self._last_frame is not None:
            dt = max(now - self._last_frame, 1e-6)
            if self._dt is None:
                self._dt = dt
            else:
                a = 1.0 - math.exp(-dt / self.cfg.fps_window_s)
                self._dt += a * (dt - self._dt)
        self._last_frame = now
        self._connected = True
        self._disconnected_since = None
        if self._last_t is not None and t < self._last_t:
            # A new segment (file loop, reconnect with its own clock): durations restart.
            self._dark_since = self._same_since = None
        self._last_t = t
        if luma < self.cfg.black_luma:
            if self._dark_since is None:
                self._dark_since = t
        else:
            self._dark_since = None
        if mad is None or mad >= self.cfg.frozen_mad or self._same_since is None:
            self._same_since = t  # the picture changed: a new unchanged run starts here
        self._update_state(now)

    def read_failed(self, n: int = 1) -> None:
        self.dropped_frames += n

    def skipped(self, n: int) -> None:
        """Frames discarded because processing could not keep up."""
        self.dropped_frames += n

    def set_connected(self, connected: bool, now: float) -> None:
        """The capture's view: False while reconnecting."""
        if not connected and self._connected:
            self._disconnected_since = now
            self._dark_since = self._same_since = None
        self._connected = connected
        self._update_state(now)

    # -- outputs ------------------------------------------------------------------------
    def state(self, now: float) -> CameraState:
        self._update_state(now)
        return self._state

    def fps(self, now: float) -> float:
        if self._dt is None or self._last_frame is None:
            return 0.0
        age = now - self._last_frame
        dt = self._dt
        if age > dt:  # no frame for longer than usual: let the estimate decay
            a = 1.0 - math.exp(-age / self.cfg.fps_window_s)
            dt += a * (age - dt)
        return min(1.0 / dt, 1000.0)

    def last_frame_age(self, now: float) -> float | None:
        return None if self._last_frame is None else max(0.0, now - self._last_frame)

    def snapshot(self, now: float) -> CameraHealth:
        age = self.last_frame_age(now)
        return CameraHealth(
            camera_id=self.camera_id,
            state=self.state(now),
            fps=round(self.fps(now), 2),
            dropped_frames=self.dropped_frames,
            last_frame_age_s=None if age is None else round(age, 3),
        )

    def report_due(self, now: float) -> bool:
        """True when a snapshot should be sent now (periodically, and at once on a state change)."""
        state = self.state(now)
        if (
            self._last_report is None
            or state != self._reported_state
            or now - self._last_report >= self.cfg.report_interval_s
        ):
            self._last_report, self._reported_state = now, state
            return True
        return False

    def _update_state(self, now: float) -> None:
        new = self._compute(now)
        if new != self._state:
            log.log(
                logging.INFO if new in ("ok", "starting") else logging.WARNING,
                "camera %s: %s -> %s",
                self.camera_id,
                self._state,
                new,
            )
            self._state = new

    def _compute(self, now: float) -> CameraState:
        cfg = self.cfg
        if not self._connected:
            return "disconnected"
        if self._last_frame is None:
            return "disconnected" if now - self._started >= cfg.disconnected_after_s else "starting"
        if now - self._last_frame >= cfg.disconnected_after_s:
            return "disconnected"
        t = self._last_t if self._last_t is not None else 0.0
        if self._dark_since is not None and t - self._dark_since >= cfg.black_after_s:
            return "black"
        if self._same_since is not None and t - self._same_since >= cfg.frozen_after_s:
            return "frozen"
        return "ok"
