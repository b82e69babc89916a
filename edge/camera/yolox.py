"""YOLOX-nano person detector on onnxruntime (one thread, no download at run time).

Model: YOLOX-Nano (Megvii, Apache-2.0; Ge et al., "YOLOX: Exceeding YOLO Series in 2021",
arXiv:2107.08430), COCO-80, exported to ONNX with symbolic input H, W. The packaged copy and its
licence live in ``edge/camera/models/`` (see PROVENANCE.md there); a camera config may point at
another file with the same tensor layout.

Tensor layout (PROVENANCE.md of the model): input ``images`` float32 ``[1, 3, H, W]``, BGR, raw
0-255, letterboxed at the top-left onto a canvas of 114; output ``[1, N, 85]`` with
N = sum over strides 8, 16, 32 of (H/s)(W/s), rows stride 8 first, each grid row-major. Per row:
``cx, cy = (out[0:2] + (gx, gy)) * s``, ``w, h = exp(out[2:4]) * s``; column 4 is objectness and
5..84 the class probabilities, both already through a sigmoid. Person score = obj * p(person).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: The packaged model (Apache-2.0; the licence file sits beside it).
PACKAGED_MODEL = Path(__file__).resolve().parent / "models" / "yolox_nano_dynhw.onnx"

_STRIDES = (8, 16, 32)
_PAD_VALUE = 114.0
_PERSON = 0
_EMPTY = np.zeros((0, 5), np.float32)


def input_size_for(frame_w: int, frame_h: int, width: int) -> tuple[int, int]:
    """Network input (W, H) for a frame: ``width`` wide (multiple of 32), height keeping the aspect.

    The height is rounded *up* to a multiple of 32 so the whole frame fits (letterbox pads the rest):
    640x480 and 768x576 at width 320 give 320x256 (one stride-32 row of padding).
    """
    if width % 32:
        raise ValueError(f"YOLOX input width must be a multiple of 32, got {width}")
    h = int(np.ceil(width * frame_h / frame_w / 32.0)) * 32
    return width, max(h, 32)


def load_session(model_path: Path | None = None, threads: int = 1) -> YoloxSession:
    """The process's session for a model file (default: the packaged one), loaded once.

    A camera rebuilds its engine on every new stream segment (a reconnect, a resolution change); the model
    stays loaded, so a reconnect costs no reload (about 0.1 s and a burst of allocations).
    """
    return _cached_session(Path(model_path or PACKAGED_MODEL).resolve(), threads)


@functools.lru_cache(maxsize=4)
def _cached_session(model_path: Path, threads: int) -> YoloxSession:
    return YoloxSession(model_path, threads)


class YoloxSession:
    """One onnxruntime session of a YOLOX model: frame in, person boxes with scores out.

    Raises ``FileNotFoundError`` if the model file is missing and ``RuntimeError`` if onnxruntime is not
    installed or the file does not have the YOLOX layout (checked once at load with a blank frame).
    """

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        if not model_path.is_file():
            raise FileNotFoundError(f"person detector model not found: {model_path}")
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise RuntimeError("the person detector needs onnxruntime: pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self._sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self._input = self._sess.get_inputs()[0].name
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.path = model_path

    def _grid(self, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Cell offsets (N, 2) and strides (N, 1) for an input of w x h, cached per size."""
        key = (w, h)
        if key not in self._grids:
            offs, strides = [], []
            for s in _STRIDES:
                gy, gx = np.mgrid[0 : h // s, 0 : w // s]
                offs.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
                strides.append(np.full((gx.size, 1), s))
            self._grids[key] = (np.concatenate(offs).astype(np.float32), np.concatenate(strides).astype(np.float32))
        return self._grids[key]

    def infer(self, frame_bgr: np.ndarray, input_w: int, min_score: float, nms_iou: float) -> np.ndarray:
        """Person boxes ``(N, 5)`` float32 ``x1, y1, x2, y2, score`` in frame pixels, after NMS.

        ``input_w`` is the network input width (px, multiple of 32); ``min_score`` the lowest person
        score kept (0..1); ``nms_iou`` the IoU above which the weaker of two boxes is suppressed.
        """
        fh, fw = frame_bgr.shape[:2]
        w, h = input_size_for(fw, fh, input_w)
        r = min(w / fw, h / fh)
        rw, rh = round(fw * r), round(fh * r)
        canvas = np.full((h, w, 3), _PAD_VALUE, np.float32)
        canvas[:rh, :rw] = cv2.resize(frame_bgr, (rw, rh), interpolation=cv2.INTER_LINEAR)
        blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
        out = self._sess.run(None, {self._input: blob})[0][0]
        score = out[:, 4] * out[:, 5 + _PERSON]
        keep = score >= min_score
        if not keep.any():
            return _EMPTY
        offs, strides = self._grid(w, h)
        o, s, sc = out[keep], strides[keep], score[keep]
        cxy = (o[:, 0:2] + offs[keep]) * s
        wh = np.exp(np.minimum(o[:, 2:4], 10.0)) * s
        xyxy = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1) / r
        np.clip(xyxy, [0, 0, 0, 0], [fw, fh, fw, fh], out=xyxy)
        rects = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        idx = np.asarray(cv2.dnn.NMSBoxes(rects.tolist(), sc.tolist(), min_score, nms_iou), int).reshape(-1)
        res = np.empty((len(idx), 5), np.float32)
        res[:, :4] = xyxy[idx]
        res[:, 4] = sc[idx]
        return res
