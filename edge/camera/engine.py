"""The footfall engine: frame in, line-crossing events out.

Pipeline per frame: privacy mask -> detector -> tracker -> line counter. Frames
never leave the engine; callers get events, counts and (for drawing) track
geometry as plain numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.camera.config import EngineConfig
from edge.camera.count import CrossingEvent, LineCrossingCounter
from edge.camera.detect import Detector, MotionDetector, PersonSizeModel, make_detector
from edge.camera.lines import CountingLine
from edge.camera.privacy import PrivacyMask
from edge.camera.track import Track, Tracker

log = logging.getLogger(__name__)

__all__ = ["CrossingEvent", "FootfallEngine", "TrackView"]


@dataclass(frozen=True)
class TrackView:
    """Read-only snapshot of a track, for drawing or telemetry."""

    id: int
    box: tuple[float, float, float, float]
    foot: tuple[float, float]
    confirmed: bool
    seen: bool  # detected in the latest frame (else coasting on prediction)
    trail: tuple[tuple[float, float], ...]


class FootfallEngine:
    """Counts people crossing the configured lines in a fixed camera's frames.

    Call :meth:`process` once per decoded frame, in order, with the frame's
    1-based index and its timestamp in seconds (frames may be skipped: the
    tracker uses real time steps).
    """

    def __init__(
        self, lines: Sequence[CountingLine], cfg: EngineConfig | None = None, detector: Detector | None = None
    ) -> None:
        self.cfg = cfg or EngineConfig()
        self.lines = list(lines)
        self.detector = detector or make_detector(self.cfg.detector)
        self.privacy = PrivacyMask(self.cfg.privacy.polygons)
        # The motion detector blanks the polygons in its small work image (conservatively); any other
        # detector gets a masked copy of the full frame.
        self._mask_frame = self.privacy.active
        if isinstance(self.detector, MotionDetector) and self.privacy.active:
            self.detector.privacy = self.privacy
            self._mask_frame = False
        self.tracker = Tracker(self.cfg.tracker)
        self.counter = LineCrossingCounter(self.lines, self.cfg.count)
        self.size: PersonSizeModel | None = None
        self.frames = 0
        # Recently lost confirmed tracks: (time lost, foot, per-line states), for re-identification by place.
        self._lost: list[tuple[float, tuple[float, float], dict[str, Any]]] = []

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Running totals: ``{line name: {"in": n, "out": n}}``."""
        return {k: dict(v) for k, v in self.counter.counts.items()}

    def tracks(self) -> list[TrackView]:
        """Current tracks (confirmed and tentative)."""
        return [TrackView(t.id, t.box, t.foot, t.confirmed, t.matched, tuple(t.trail)) for t in self.tracker.tracks]

    def process(self, frame_bgr: np.ndarray, frame_index: int, t_seconds: float) -> list[CrossingEvent]:
        """Analyse one frame; returns the crossing events completed on it (dated to the crossing frame)."""
        if self.size is None:
            h, w = frame_bgr.shape[:2]
            self.size = PersonSizeModel(self.cfg.person, w, h)
        size = self.size
        self.frames += 1
        frame = self.privacy.apply(frame_bgr) if self._mask_frame else frame_bgr
        dets = self.detector.detect(frame, t_seconds, size)
        pairs = self.tracker.update(dets, t_seconds, size)
        self.counter.birth_side = self.tracker.box_heights
        events: list[CrossingEvent] = []
        for tr, i in pairs:
            x1, y1, x2, y2, clean = (float(v) for v in dets[i, :5])
            foot = tr.z  # the detection's foot point as the tracker read it (partial views re-anchored)
            if tr.hits == 1:
                self._reidentify(tr.id, foot, frame_index, t_seconds, size)
            if clean and tr.confirmed and not tr.partial:
                size.observe(y2, y2 - y1, x2 - x1)
            events += self.counter.update(tr.id, foot, frame_index, t_seconds, self._height(tr), tr.confirmed)
        for tr in self.tracker.removed:
            if tr.confirmed:
                states = self.counter.snapshot(tr.id)
                if tr.left_view:
                    # Gone out of the picture: its held crossings are complete.
                    events += self.counter.release_held(states)
                    states = {}
                # Where and when the person was last *seen*, not where the coasting prediction ended up:
                # a prediction extrapolated over seconds lands far from the person and, worse, may sit
                # on the far side of a line the person never crossed.
                self._lost.append((tr.last_t, tr.trail[-1], states))
            self.counter.drop(tr.id)
        events += self._expire_lost(t_seconds)
        return events

    def _height(self, tr: Track) -> float:
        """Person height (px) for the counter's dead band: the tracker's measure (see ``Tracker._height``)."""
        assert self.size is not None
        return self.tracker._height(tr, self.size)

    def finish(self) -> list[CrossingEvent]:
        """End of the stream: crossings still held (the person had not yet cleared the line) count now."""
        out: list[CrossingEvent] = []
        for tr in self.tracker.tracks:
            if tr.confirmed:
                out += self.counter.release_held(self.counter.snapshot(tr.id))
            self.counter.drop(tr.id)
        self.tracker.tracks = []
        for _, _, states in self._lost:
            out += self.counter.release_held(states)
        self._lost = []
        return out

    def _expire_lost(self, t: float) -> list[CrossingEvent]:
        """Lost tracks not found again within ``reid_s``: a crossing they held was completed."""
        keep_s = self.cfg.tracker.reid_s
        out: list[CrossingEvent] = []
        keep = []
        for rec in self._lost:
            if t - rec[0] > keep_s:
                out += self.counter.release_held(rec[2])
            else:
                keep.append(rec)
        self._lost = keep
        return out

    def _reidentify(
        self, track_id: int, foot: tuple[float, float], frame: int, t: float, size: PersonSizeModel
    ) -> None:
        """A new track born where a confirmed one was recently lost continues its line sides."""
        h = float(size.height_at(foot[1]))
        best = None
        for k, (_, p, _) in enumerate(self._lost):
            d = ((p[0] - foot[0]) ** 2 + (p[1] - foot[1]) ** 2) ** 0.5 / h
            if d <= self.cfg.tracker.gate and (best is None or d < best[0]):
                best = (d, k)
        if best is not None:
            _, _, states = self._lost.pop(best[1])
            self.counter.inherit(track_id, states, frame, t)
            log.debug("track %d continues a lost track's line sides", track_id)
