"""Multi-person tracker on foot points: constant-velocity Kalman + Hungarian assignment.

All noise and gating figures are in units of the expected person height at the
track's image row, and the Kalman filter takes the real time step, so the same
configuration works for any resolution, perspective and frame rate (including
dropped frames).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.camera.config import TrackerConfig
from edge.camera.detect import PersonSizeModel

log = logging.getLogger(__name__)

_CHI2_GATE = 9.21  # 2 degrees of freedom, 99 %
_PARTIAL = 0.75  # a box shorter than this fraction of the tracked height shows only part of the person
_INIT_SPEED = 1.0  # person heights / s: prior spread of a new track's velocity
_BIG = 1e9


@dataclass
class Track:
    """One tracked person. ``x`` is the Kalman state (foot x, foot y, vx, vy) in frame pixels (per second)."""

    id: int
    x: np.ndarray
    P: np.ndarray
    t: float  # time of the state
    first_t: float
    last_t: float  # last time a detection was assigned
    height: float
    width: float
    hits: int = 1
    confirmed: bool = False
    matched: bool = True  # a detection was assigned in the latest update
    partial: bool = False  # the latest detection showed only part of the person (see Tracker._feet)
    left_view: bool = False  # removed because it went out of the picture (not merely unseen)
    z: tuple[float, float] = (0.0, 0.0)  # the foot point measured in the latest update
    trail: list[tuple[float, float]] = field(default_factory=list)

    @property
    def foot(self) -> tuple[float, float]:
        return float(self.x[0]), float(self.x[1])

    @property
    def box(self) -> tuple[float, float, float, float]:
        fx, fy = self.foot
        return fx - self.width / 2, fy - self.height, fx + self.width / 2, fy


class Tracker:
    """Associates per-frame detections with persistent track ids."""

    _TRAIL = 30

    def __init__(self, cfg: TrackerConfig) -> None:
        self.cfg = cfg
        self.tracks: list[Track] = []
        self.removed: list[Track] = []  # tracks dropped in the latest update
        self._next_id = 1
        self.box_heights = False  # set by update() when the detections carry scores (a person detector)

    def _height(self, tr: Track, size: PersonSizeModel) -> float:
        """The person height (px) a track's distances are measured in.

        With a person detector each box is one person, so the track's own (smoothed) box height is the
        best measure, also across a crowd of very different distances; motion blobs are not (a blob may
        hold a group or a torso), so there the perspective model's height at the foot row is used.
        """
        return tr.height if self.box_heights else float(size.height_at(tr.x[1]))

    def _predict(self, tr: Track, t: float, h: float) -> None:
        dt = t - tr.t
        if dt <= 0:
            return
        f = np.array([[1.0, 0, dt, 0], [0, 1.0, 0, dt], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
        q = (self.cfg.accel * h) ** 2
        q11, q12, q22 = q * dt**4 / 4, q * dt**3 / 2, q * dt**2
        tr.x = f @ tr.x
        tr.P = f @ tr.P @ f.T + np.array([[q11, 0, q12, 0], [0, q11, 0, q12], [q12, 0, q22, 0], [0, q12, 0, q22]])
        tr.t = t

    @staticmethod
    def _feet(dets: np.ndarray, pred_y: np.ndarray, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Foot point of each detection as seen by each track: x (D,), y (T, D), partial (T, D).

        A box much shorter than the track's person is a partial view: feet hidden by a bench, a sign
        or a car, the head cut off by the frame or an awning, a person half merged into another blob.
        Its bottom is then the foot only if that end agrees with the prediction better than the top
        does; otherwise the foot is the box top plus the tracked height. Without this a walker passing
        behind a low sign "jumps" upwards, the filter learns a false vertical velocity, and the track
        flies off and is lost right at the line.
        """
        fx = (dets[:, 0] + dets[:, 2]) / 2
        bottom = np.broadcast_to(dets[None, :, 3], (len(heights), len(dets)))
        top_anchored = dets[None, :, 1] + heights[:, None]
        partial = (dets[None, :, 3] - dets[None, :, 1]) < _PARTIAL * heights[:, None]
        use_top = partial & (np.abs(top_anchored - pred_y[:, None]) < np.abs(bottom - pred_y[:, None]))
        return fx, np.where(use_top, top_anchored, bottom), partial

    def _cost(self, tracks: list[Track], dets: np.ndarray, t: float, size: PersonSizeModel) -> np.ndarray:
        """Track x detection cost (foot distance in person heights, plus size change); _BIG if implausible.

        The Kalman spread only gates (Mahalanobis); the cost itself is a plain distance, so a long-unseen
        track with a wide spread does not win detections from a track seen a moment ago.
        """
        pos = np.array([tr.x[:2] for tr in tracks])  # (T, 2)
        heights = np.array([tr.height for tr in tracks])
        fx, fy, _ = self._feet(dets, pos[:, 1], heights)
        h = np.array([self._height(tr, size) for tr in tracks], dtype=np.float64)  # (T,)
        cov = np.array([tr.P[:2, :2] for tr in tracks])  # (T, 2, 2)
        r2 = (self.cfg.meas_noise * h) ** 2
        sxx, sxy, syy = cov[:, 0, 0] + r2, cov[:, 0, 1], cov[:, 1, 1] + r2
        det = sxx * syy - sxy * sxy
        dx = fx[None, :] - pos[:, None, 0]  # (T, D)
        dy = fy - pos[:, None, 1]
        m2 = (syy[:, None] * dx * dx - 2 * sxy[:, None] * dx * dy + sxx[:, None] * dy * dy) / det[:, None]
        dist = np.hypot(dx, dy) / h[:, None]
        # Euclidean cap grows with time unseen: a walker may have turned or stopped meanwhile.
        unseen = np.array([t - tr.last_t for tr in tracks])
        cap = self.cfg.gate + self.cfg.max_speed * unseen
        # Height change between the track and the blob is a strong hint of a wrong pairing.
        dh = np.log(np.maximum(dets[None, :, 3] - dets[None, :, 1], 1.0) / heights[:, None])
        ok = (m2 <= _CHI2_GATE) & (dist <= cap[:, None])
        return np.where(ok, dist + 0.5 * np.abs(dh), _BIG)

    def _assign(
        self, tracks: list[Track], dets: np.ndarray, free: list[int], t: float, size: PersonSizeModel
    ) -> list[tuple[Track, int]]:
        if not tracks or not free:
            return []
        cost = self._cost(tracks, dets[free], t, size)
        rows, cols = linear_sum_assignment(cost)
        return [(tracks[r], free[c]) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _BIG]

    @staticmethod
    def _measure(tr: Track, det: np.ndarray) -> tuple[np.ndarray, bool]:
        """Foot measurement of det for track tr and whether it is a partial view (scalar :meth:`_feet`)."""
        x1, y1, x2, y2 = (float(v) for v in det[:4])
        partial = y2 - y1 < _PARTIAL * tr.height
        fy = y2
        if partial and abs(y1 + tr.height - tr.x[1]) < abs(y2 - tr.x[1]):
            fy = y1 + tr.height
        return np.array([(x1 + x2) / 2, fy]), partial

    def update(self, dets: np.ndarray, t: float, size: PersonSizeModel) -> list[tuple[Track, int]]:
        """Advance all tracks to time t and assign detections; returns (track, detection index) pairs.

        ``dets`` is ``(N, 5)`` ``x1, y1, x2, y2, clean`` or ``(N, 6)`` with a detector score in column 5
        (missing means 1). Matching cascade: confirmed tracks seen on the previous frame choose first, then
        tentative ones seen on the previous frame, then coasting ones; first over the boxes scoring at least
        ``track_score``, then (ByteTrack, Zhang et al. 2022, arXiv:2110.06864) the tracks left over take
        boxes between ``low_score`` and ``track_score``. Only boxes scoring ``birth_score`` start tracks.
        A track born a frame ago from a stray fragment (two people splitting apart, a leg) must not take
        a person's detection from that person's established track.
        """
        self.removed = []
        recent = [tr for tr in self.tracks if tr.matched and tr.confirmed]
        tentative = [tr for tr in self.tracks if tr.matched and not tr.confirmed]
        older = [tr for tr in self.tracks if not tr.matched]
        for tr in self.tracks:
            self._predict(tr, t, self._height(tr, size))
            tr.matched = False
        pairs: list[tuple[Track, int]] = []
        if dets.shape[1] > 5:
            score, self.box_heights = dets[:, 5], True
        else:
            score = np.ones(len(dets), np.float32)
        free = [i for i in range(len(dets)) if score[i] >= self.cfg.track_score]
        low = [i for i in range(len(dets)) if self.cfg.low_score <= score[i] < self.cfg.track_score]
        for group in (recent, tentative, older):
            for tr, c in self._assign(group, dets, free, t, size):
                self._correct(tr, dets[c], t, size)
                pairs.append((tr, c))
                free.remove(c)
        # ByteTrack's second association: tracks still unmatched may continue on low-score boxes (a person
        # half hidden by another, blurred, or in shade); low-score boxes never start a track.
        for group in (recent, tentative, older):
            for tr, c in self._assign([tr for tr in group if not tr.matched], dets, low, t, size):
                self._correct(tr, dets[c], t, size)
                pairs.append((tr, c))
                low.remove(c)
        for c in free:
            if score[c] >= self.cfg.birth_score:
                pairs.append((self._birth(dets[c], t, size), c))
        self._prune(t, size)
        return pairs

    def _correct(self, tr: Track, det: np.ndarray, t: float, size: PersonSizeModel) -> None:
        z, partial = self._measure(tr, det)
        h = self._height(tr, size)
        r = (self.cfg.meas_noise * h) ** 2
        a, b, d = tr.P[0, 0] + r, tr.P[0, 1], tr.P[1, 1] + r
        det_s = a * d - b * b
        s_inv = np.array([[d, -b], [-b, a]]) / det_s  # closed-form 2x2 inverse: np.linalg.inv is slow
        k = tr.P[:, :2] @ s_inv
        tr.x = tr.x + k @ (z - tr.x[:2])
        tr.P = tr.P - k @ tr.P[:2, :]
        if not partial:  # a partial view says nothing about the person's size
            tr.height = 0.7 * tr.height + 0.3 * float(det[3] - det[1])
            tr.width = 0.7 * tr.width + 0.3 * float(det[2] - det[0])
        tr.partial, tr.z = partial, (float(z[0]), float(z[1]))
        tr.hits += 1
        tr.last_t = t
        tr.matched = True
        if not tr.confirmed and tr.hits >= 2 and t - tr.first_t >= self.cfg.confirm_s:
            tr.confirmed = True
            log.debug("track %d confirmed at t=%.2f", tr.id, t)
        tr.trail.append(tr.foot)
        del tr.trail[: -self._TRAIL]

    def _birth(self, det: np.ndarray, t: float, size: PersonSizeModel) -> Track:
        foot = np.array([(det[0] + det[2]) / 2, det[3], 0.0, 0.0])
        h = float(det[3] - det[1]) if self.box_heights else float(size.height_at(foot[1]))
        p = np.diag([(self.cfg.meas_noise * h) ** 2] * 2 + [(_INIT_SPEED * h) ** 2] * 2)
        tr = Track(self._next_id, foot, p, t, t, t, float(det[3] - det[1]), float(det[2] - det[0]))
        tr.z = (float(foot[0]), float(foot[1]))
        tr.confirmed = self.cfg.confirm_s == 0
        tr.trail.append(tr.foot)
        self._next_id += 1
        self.tracks.append(tr)
        return tr

    def _prune(self, t: float, size: PersonSizeModel) -> None:
        keep: list[Track] = []
        for tr in self.tracks:
            unseen = t - tr.last_t
            limit = self.cfg.max_lost_s if tr.confirmed else min(self.cfg.max_lost_s, max(self.cfg.confirm_s, 1e-9))
            fx, fy = tr.foot
            outside = not (0 <= fx <= size.frame_w and 0 <= fy <= size.frame_h * 1.05)
            if unseen > limit or (outside and not tr.matched):
                tr.left_view = outside
                self.removed.append(tr)
            else:
                keep.append(tr)
        self.tracks = keep
