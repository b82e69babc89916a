"""Person detectors: the default weight-free motion detector and an optional DNN detector.

Every detector returns an ``(N, 5)`` float array of ``x1, y1, x2, y2, clean`` in
full-frame pixels, where ``clean`` is 1 for a box believed to hold exactly one
whole person (usable to learn the person-size model) and 0 otherwise (a piece of a
split blob, a partial silhouette).

Why a motion detector: on a Pi-class core a DNN manages a few frames per second,
while a fixed camera makes moving people the only thing that changes. The hard
part is turning foreground blobs into individual people; for that the detector
relies on :class:`PersonSizeModel`, the expected person height as a function of
the image row (perspective), learned online from clean isolated silhouettes.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.camera.config import (
    DetectorConfig,
    DnnDetectorConfig,
    HybridDetectorConfig,
    MotionDetectorConfig,
    PersonModelConfig,
    PersonSizeConfig,
)
from edge.camera.privacy import PrivacyMask

log = logging.getLogger(__name__)

EMPTY = np.zeros((0, 5), np.float32)
EMPTY6 = np.zeros((0, 6), np.float32)
_SPECKLE = np.ones((2, 2), np.uint8)


class PersonSizeModel:
    """Expected person height (px) as a linear function of the foot row: ``h = a + b * y``.

    Starts from a flat prior (a fraction of frame height) and is refitted from
    clean detections. Ground-plane perspective makes height roughly linear in the
    foot row for a fixed camera, which is all we need to tell one person from two.
    """

    _MAX_SAMPLES = 400
    _REFIT_EVERY = 15
    _MIN_SAMPLES = 20

    def __init__(self, cfg: PersonSizeConfig, frame_w: int, frame_h: int) -> None:
        self.cfg = cfg
        self.frame_w, self.frame_h = frame_w, frame_h
        self.a = cfg.height_frac * frame_h
        self.b = 0.0
        self.aspect = cfg.aspect
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=self._MAX_SAMPLES)
        self._since_fit = 0
        self._typical_y = 0.6 * frame_h

    def height_at(self, y: float | np.ndarray) -> float | np.ndarray:
        """Expected person height (px) for a foot point at image row y."""
        lo = 0.02 * self.frame_h
        return (
            np.maximum(self.a + self.b * np.asarray(y, dtype=np.float64), lo)
            if isinstance(y, np.ndarray)
            else max(self.a + self.b * float(y), lo)
        )

    @property
    def typical_height(self) -> float:
        """Expected height (px) at the median foot row of the people seen so far (prior: mid-frame)."""
        return float(self.height_at(self._typical_y))

    def width_at(self, y: float) -> float:
        return float(self.height_at(y)) * self.aspect

    def observe(self, y_foot: float, height: float, width: float) -> None:
        """Feed one clean silhouette; silhouettes that do not look like one upright person are ignored."""
        if not self.cfg.learn or height <= 0:
            return
        ratio = width / height
        if not 0.2 <= ratio <= 0.65:
            return
        if len(self._samples) >= self._MIN_SAMPLES:
            expected = float(self.height_at(y_foot))
            if not 0.6 * expected <= height <= 1.6 * expected:
                return
        self._samples.append((y_foot, height, width))
        self._since_fit += 1
        if self._since_fit >= self._REFIT_EVERY and len(self._samples) >= self._MIN_SAMPLES:
            self._refit()

    def _refit(self) -> None:
        self._since_fit = 0
        s = np.asarray(self._samples)
        y, h, w = s[:, 0], s[:, 1], s[:, 2]
        self._typical_y = float(np.median(y))
        a, b = float(np.median(h)), 0.0
        if np.std(y) > 0.05 * self.frame_h:
            # Two rounds of least squares, dropping the worst residuals: robust enough, cheap.
            keep = np.ones(len(y), bool)
            for _ in range(2):
                b_fit, a_fit = np.polyfit(y[keep], h[keep], 1)
                resid = np.abs(h - (a_fit + b_fit * y))
                keep = resid <= max(np.percentile(resid, 80), 1e-6)
            # Judge the fit where people were actually seen: extrapolated to the top row it may well
            # reach zero (the horizon can be in view), which is perspective, not a bad fit.
            y_lo, y_hi = float(np.percentile(y, 2)), float(np.percentile(y, 98))
            lo_h, hi_h = a_fit + b_fit * y_lo, a_fit + b_fit * y_hi
            # Perspective never makes people shrink towards the camera by much; reject wild fits.
            if b_fit >= -0.05 and min(lo_h, hi_h) > 0.02 * self.frame_h:
                a, b = float(a_fit), float(b_fit)
        self.a, self.b = a, b
        self.aspect = float(np.clip(np.median(w / h), 0.25, 0.6))
        log.debug("person size model: h = %.1f + %.3f*y, aspect %.2f (%d samples)", a, b, self.aspect, len(y))


class Detector(Protocol):
    """Anything that turns a frame into person boxes."""

    def detect(self, frame_bgr: np.ndarray, t_seconds: float, size: PersonSizeModel) -> np.ndarray:
        """Return (N, 5) float32 ``x1, y1, x2, y2, clean`` in frame pixels."""
        ...


class MotionDetector:
    """MOG2 background subtraction at reduced resolution + size-aware blob splitting."""

    def __init__(self, cfg: MotionDetectorConfig) -> None:
        self.cfg = cfg
        self._mog: cv2.BackgroundSubtractorMOG2 | None = None
        self._factor = 1
        self._work = (0, 0)  # analysis image size (w, h)
        self._scale = (1.0, 1.0)  # frame px per work px (x, y)
        self._last_t: float | None = None
        self._n = 0
        # Set by the engine: privacy polygons are then blanked in the work image (cheap) instead of the frame.
        self.privacy: PrivacyMask | None = None

    def _setup(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        # The analysis image is always work_width wide (aspect kept), whatever the stream resolution, so
        # every pixel-level step (MOG2 noise statistics, morphology) sees the scene at the same scale.
        # An integer INTER_AREA reduction first (fast path, averages sensor noise), then, when the stream
        # width is not a multiple of work_width, a cheap resize of the reduced image to the exact size.
        ww = min(self.cfg.work_width, w)
        self._factor = max(1, w // ww)
        self._work = (ww, max(1, round(h * ww / w)))
        self._scale = (w / self._work[0], h / self._work[1])
        self._mog = cv2.createBackgroundSubtractorMOG2(
            history=500, varThreshold=self.cfg.var_threshold, detectShadows=True
        )
        self._mog.setShadowThreshold(self.cfg.shadow_ratio)
        self._mog.setShadowValue(0)  # shadows are background here: the mask comes out binary (0/255)
        log.info("motion detector: %dx%d analysed at %dx%d", w, h, *self._work)

    def _learning_rate(self, t: float) -> float:
        """Per-frame learning rate giving a background memory of ``history_s`` whatever the frame rate."""
        self._n += 1
        dt = 0.0 if self._last_t is None else max(t - self._last_t, 0.0)
        self._last_t = t
        steady = 1.0 - math.exp(-dt / self.cfg.history_s) if dt > 0 else 0.0
        return steady if self._n > 1 else 1.0

    @property
    def frame_px_per_work_px(self) -> float:
        """Scale from the work image to the frame (the work image keeps the frame's aspect); 1 before any frame."""
        return self._scale[0]

    def work_image(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The frame reduced to the work size (see :meth:`_setup`)."""
        if self._mog is None:
            self._setup(frame_bgr)
        k = self._factor
        small = frame_bgr
        if k > 1:
            h, w = frame_bgr.shape[:2]
            src = frame_bgr[: h - h % k, : w - w % k]
            small = cv2.resize(src, (src.shape[1] // k, src.shape[0] // k), interpolation=cv2.INTER_AREA)
        if small.shape[1] != self._work[0] or small.shape[0] != self._work[1]:
            interp = cv2.INTER_AREA if small.shape[1] > self._work[0] else cv2.INTER_LINEAR
            small = cv2.resize(small, self._work, interpolation=interp)
        if self.privacy is not None and self.privacy.active:
            small = self.privacy.apply_reduced(small, frame_bgr.shape[1], frame_bgr.shape[0])
        return small

    def foreground(self, frame_bgr: np.ndarray, t_seconds: float) -> np.ndarray:
        """Binary (0/255) foreground mask at work resolution, shadows removed."""
        small = self.work_image(frame_bgr)
        assert self._mog is not None
        return self._mog.apply(small, learningRate=self._learning_rate(t_seconds))

    def detect(self, frame_bgr: np.ndarray, t_seconds: float, size: PersonSizeModel) -> np.ndarray:
        fg = self.foreground(frame_bgr, t_seconds)
        k = self.frame_px_per_work_px
        # Kernels scale with the typical person at work resolution: join a torso to its legs,
        # bridge a thin lamp post, but not two people a shoulder apart.
        h_work = size.typical_height / k
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        kw = max(1, round(0.12 * h_work))
        kh = max(1, round(0.22 * h_work))
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kw, kh)))
        n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(fg, 8, cv2.CV_32S, cv2.CCL_GRANA)
        blobs = self._merge_fragments(stats[1:n].astype(np.float64), list(range(1, n)), k, size)
        out: list[tuple[float, float, float, float, float]] = []
        for x, y, w, h, area, ids in blobs:
            foot = (y + h) * k
            hp = float(size.height_at(foot))
            wp = hp * size.aspect
            if area * k * k < self.cfg.min_area * hp * wp:
                continue
            if len(ids) == 1 and w * k > self.cfg.split_width * wp:
                xi, yi, wi, hi = int(x), int(y), int(w), int(h)
                out.extend(self._split(labels[yi : yi + hi, xi : xi + wi] == ids[0], xi, yi, k, size))
            else:
                out.append((x * k, y * k, (x + w) * k, (y + h) * k, 1.0 if len(ids) == 1 else 0.0))
        return np.asarray(out, np.float32).reshape(-1, 5)

    @staticmethod
    def _merge_fragments(
        stats: np.ndarray, labels: list[int], k: float, size: PersonSizeModel
    ) -> list[tuple[float, float, float, float, float, list[int]]]:
        """Greedily join blobs whose union still fits one person's box.

        A person seen through a thin occluder (pole, sign, railing) or with clothing close to the
        background breaks into pieces; without this each piece would become a track and a crossing
        would count twice.
        """
        blobs = [
            (float(x), float(y), float(w), float(h), float(a), [lab])
            for (x, y, w, h, a), lab in zip(stats, labels, strict=True)
        ]
        # Specks far below a person's size are noise; dropping them first keeps the merge cheap.
        blobs = [b for b in blobs if b[4] * k * k >= 0.02 * size.height_at((b[1] + b[3]) * k) ** 2 * size.aspect]
        merged = True
        while merged and len(blobs) > 1:
            merged = False
            best: tuple[float, int, int] | None = None
            for i in range(len(blobs)):
                xi, yi, wi, hi = blobs[i][:4]
                for j in range(i + 1, len(blobs)):
                    xj, yj, wj, hj = blobs[j][:4]
                    x0, y0 = min(xi, xj), min(yi, yj)
                    x1, y1 = max(xi + wi, xj + wj), max(yi + hi, yj + hj)
                    hp = float(size.height_at(y1 * k)) / k
                    if x1 - x0 <= 1.2 * hp * size.aspect and y1 - y0 <= 1.25 * hp:
                        gap = (x1 - x0) * (y1 - y0) - wi * hi - wj * hj
                        if best is None or gap < best[0]:
                            best = (gap, i, j)
            if best is not None:
                _, i, j = best
                a, b = blobs[i], blobs[j]
                x0, y0 = min(a[0], b[0]), min(a[1], b[1])
                x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
                blobs[i] = (x0, y0, x1 - x0, y1 - y0, a[4] + b[4], a[5] + b[5])
                del blobs[j]
                merged = True
        return blobs

    def _split(
        self, mask: np.ndarray, x0: int, y0: int, k: float, size: PersonSizeModel
    ) -> list[tuple[float, float, float, float, float]]:
        """Split a wide blob into side-by-side people at the emptiest columns near the even cuts."""
        h, w = mask.shape
        foot = (y0 + h) * k
        wp = size.width_at(foot) / k
        parts = max(2, round(w / wp))
        cols = mask.sum(axis=0).astype(np.float32)
        cuts = [0]
        for j in range(1, parts):
            centre = j * w / parts
            lo, hi = int(max(cuts[-1] + 1, centre - 0.35 * wp)), int(min(w - 1, centre + 0.35 * wp))
            cut = lo + int(np.argmin(cols[lo : hi + 1])) if hi >= lo else int(centre)
            cuts.append(cut)
        cuts.append(w)
        out = []
        min_px = self.cfg.min_area * (size.height_at(foot) * size.width_at(foot)) / (k * k)
        for c0, c1 in itertools.pairwise(cuts):
            piece = mask[:, c0:c1]
            if piece.sum() < 0.5 * min_px:
                continue
            rows = np.flatnonzero(piece.any(axis=1))
            out.append(((x0 + c0) * k, (y0 + rows[0]) * k, (x0 + c1) * k, (y0 + rows[-1] + 1) * k, 0.0))
        return out


class DnnDetector:
    """SSD-style person detector from a TFLite or ONNX file (optional; slow on a Pi, needs a model file).

    The model must produce the TFLite ``TFLite_Detection_PostProcess`` layout: boxes ``[1, N, 4]``
    (ymin, xmin, ymax, xmax, normalised), classes ``[1, N]``, scores ``[1, N]``, count ``[1]``.
    cv2.dnn is tried first; OpenCV 5.0 cannot parse uint8-quantised TFLite graphs, so for those the
    LiteRT interpreter (``ai-edge-litert``, optional dependency) is used with one thread.
    """

    def __init__(self, cfg: DnnDetectorConfig) -> None:
        self.cfg = cfg
        path = Path(cfg.model_path)
        if not path.is_file():
            raise FileNotFoundError(f"DNN model not found: {path}")
        self._net: cv2.dnn.Net | None = None
        self._interp: object | None = None
        try:
            self._net = cv2.dnn.readNetFromTFLite(str(path)) if path.suffix == ".tflite" else cv2.dnn.readNet(str(path))
            log.info("DNN detector: %s loaded with cv2.dnn", path)
        except cv2.error as exc:
            if path.suffix != ".tflite":
                raise
            log.info("cv2.dnn cannot load %s (%s); using LiteRT", path, str(exc).splitlines()[-1][:120])
            self._interp = _litert_interpreter(path)

    def _run(self, frame_bgr: np.ndarray) -> list[np.ndarray]:
        s = self.cfg.input_size
        if self._interp is not None:
            it = self._interp
            inp = it.get_input_details()[0]  # type: ignore[attr-defined]
            img = cv2.resize(frame_bgr, (s, s), interpolation=cv2.INTER_AREA)
            if self.cfg.swap_rb:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            if inp["dtype"] != np.uint8:
                img = (img.astype(np.float32) - 127.5) / 127.5
            it.set_tensor(inp["index"], img[None])  # type: ignore[attr-defined]
            it.invoke()  # type: ignore[attr-defined]
            return [it.get_tensor(d["index"]) for d in it.get_output_details()]  # type: ignore[attr-defined]
        assert self._net is not None
        blob = cv2.dnn.blobFromImage(frame_bgr, 1 / 127.5, (s, s), (127.5, 127.5, 127.5), swapRB=self.cfg.swap_rb)
        self._net.setInput(blob)
        return list(self._net.forward(self._net.getUnconnectedOutLayersNames()))

    def detect(self, frame_bgr: np.ndarray, t_seconds: float, size: PersonSizeModel) -> np.ndarray:
        outs = self._run(frame_bgr)
        if len(outs) < 3:
            raise ValueError(f"DNN model gave {len(outs)} outputs; expected SSD post-process boxes/classes/scores")
        boxes = outs[0].reshape(-1, 4)
        classes = outs[1].reshape(-1)
        scores = outs[2].reshape(-1)
        h, w = frame_bgr.shape[:2]
        keep = (np.round(classes).astype(int) == self.cfg.person_class) & (scores >= self.cfg.score_threshold)
        if not keep.any():
            return EMPTY
        b, sc = boxes[keep], scores[keep]
        xyxy = np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=1)
        rects = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in xyxy]
        idx = np.asarray(
            cv2.dnn.NMSBoxes(rects, sc.astype(float).tolist(), self.cfg.score_threshold, self.cfg.nms_iou), int
        ).reshape(-1)
        out = np.zeros((len(idx), 5), np.float32)
        out[:, :4] = xyxy[idx]
        out[:, 4] = 1.0
        return out


def _litert_interpreter(path: Path) -> object:
    """A one-thread LiteRT (or legacy tflite-runtime) interpreter, or a clear error when neither is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise RuntimeError(
                f"{path} needs a TFLite runtime: pip install ai-edge-litert (cv2.dnn cannot read quantised TFLite)"
            ) from exc
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    return interp


def _clean(boxes: np.ndarray, frame_w: int, frame_h: int, min_score: float) -> np.ndarray:
    """1.0 for boxes fit to learn person sizes from: confident, inside the frame, not overlapping another."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.float32)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    margin = 0.01 * max(frame_w, frame_h)
    inside = (x1 > margin) & (y1 > margin) & (x2 < frame_w - margin) & (y2 < frame_h - margin)
    ix = np.maximum(0, np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]))
    iy = np.maximum(0, np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]))
    np.fill_diagonal(ix, 0)
    alone = (ix * iy).max(axis=1) <= 0.3 * ((x2 - x1) * (y2 - y1))
    clean: np.ndarray = (inside & alone & (boxes[:, 4] >= min_score)).astype(np.float32)
    return clean


class PersonDetector:
    """Person boxes from YOLOX-nano (:mod:`edge.camera.yolox`), optionally on every k-th frame only.

    Returns ``(N, 6)`` float32 ``x1, y1, x2, y2, clean, score``; on frames skipped by ``stride`` it returns
    no boxes and the tracker predicts. Raises ``FileNotFoundError`` at construction if the model is missing.
    """

    _CLEAN_SCORE = 0.6  # only confident, isolated boxes teach the person-size model

    def __init__(self, cfg: PersonModelConfig) -> None:
        from edge.camera.yolox import load_session

        self.cfg = cfg
        self.session = load_session(cfg.model_path)
        self._n = 0
        log.info(
            "person detector: %s, input width %d, every %d frame(s)", self.session.path, cfg.input_width, cfg.stride
        )

    def boxes(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Run the model on one frame: ``(N, 6)`` boxes with scores (see the class docstring)."""
        raw = self.session.infer(frame_bgr, self.cfg.input_width, self.cfg.min_score, self.cfg.nms_iou)
        h, w = frame_bgr.shape[:2]
        out = np.empty((len(raw), 6), np.float32)
        out[:, :4] = raw[:, :4]
        out[:, 4] = _clean(raw, w, h, self._CLEAN_SCORE)
        out[:, 5] = raw[:, 4]
        return out

    def detect(self, frame_bgr: np.ndarray, t_seconds: float, size: PersonSizeModel) -> np.ndarray:
        self._n += 1
        if (self._n - 1) % self.cfg.stride:
            return EMPTY6
        return self.boxes(frame_bgr)


class HybridDetector:
    """Motion gates and vets the person detector (see :class:`~edge.camera.config.HybridDetectorConfig`).

    Per frame: the motion detector's foreground mask (cheap). The model runs if the mask holds a
    person-sized blob or it returned a box with motion under it within ``idle_after_s``; each box then
    keeps its score if at least ``support`` of its area is foreground, else its score is capped just under
    the tracker's ``track_score`` (``low_cap``) so it can only continue a track. Output as
    :class:`PersonDetector`.
    """

    def __init__(self, cfg: HybridDetectorConfig, low_cap: float = 0.49) -> None:
        self.cfg = cfg
        self.motion = MotionDetector(cfg.motion)
        self.person = PersonDetector(cfg)
        self.low_cap = low_cap
        self._last_box_t: float | None = None
        self.model_runs = 0
        self.frames = 0

    def detect(self, frame_bgr: np.ndarray, t_seconds: float, size: PersonSizeModel) -> np.ndarray:
        self.frames += 1
        # An opening removes sensor-noise speckles, which would otherwise keep the model awake on an empty scene.
        fg = cv2.morphologyEx(self.motion.foreground(frame_bgr, t_seconds), cv2.MORPH_OPEN, _SPECKLE)
        k = self.motion.frame_px_per_work_px
        min_px = self.cfg.motion.min_area * size.typical_height**2 * size.aspect / (k * k)
        moving = False
        if cv2.countNonZero(fg) >= min_px:  # cheap test first; then one blob must be person-sized
            n, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(fg, 8, cv2.CV_32S, cv2.CCL_GRANA)
            moving = n > 1 and int(stats[1:, cv2.CC_STAT_AREA].max()) >= min_px
        recent = self._last_box_t is not None and 0 <= t_seconds - self._last_box_t <= self.cfg.idle_after_s
        if not (moving or recent) or (self.frames - 1) % self.cfg.stride:
            return EMPTY6
        self.model_runs += 1
        boxes = self.person.boxes(frame_bgr)
        if len(boxes) == 0:
            return boxes
        integral = cv2.integral(fg, sdepth=cv2.CV_32S)
        hw, ww = fg.shape
        x1 = np.clip((boxes[:, 0] / k).astype(int), 0, ww)
        x2 = np.clip(np.ceil(boxes[:, 2] / k).astype(int), 0, ww)
        y1 = np.clip((boxes[:, 1] / k).astype(int), 0, hw)
        y2 = np.clip(np.ceil(boxes[:, 3] / k).astype(int), 0, hw)
        on = (integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]) / 255.0
        area = np.maximum((x2 - x1) * (y2 - y1), 1)
        still = on / area < self.cfg.support
        boxes[still, 5] = np.minimum(boxes[still, 5], self.low_cap)
        boxes[still, 4] = 0.0
        if not still.all():
            # Only a moving person keeps the model awake: a poster or a mannequin in view must not.
            self._last_box_t = t_seconds
        return boxes


def make_detector(cfg: DetectorConfig) -> Detector:
    """Build the detector named by ``cfg.type`` ("motion", "detector", "hybrid" or "dnn")."""
    if cfg.type == "motion":
        return MotionDetector(cfg)
    if cfg.type == "detector":
        return PersonDetector(cfg)
    if cfg.type == "hybrid":
        return HybridDetector(cfg)
    if cfg.type == "dnn":
        return DnnDetector(cfg)
    raise ValueError(f"unknown detector type {cfg.type!r}")
