"""``district count``: count line crossings in a video file.

    district count VIDEO --lines LINES.json --out RESULT.json [--annotate OUT.mp4]
                   [--detector hybrid|detector|motion|dnn] [--model PATH] [--config ENGINE.json]
                   [--resize F] [--frame-step N]

RESULT.json has the layout count_score.py reads:
``{"fps": f, "lines": {name: {"in": n, "out": n, "events": [{"frame": f, "direction": "in"}, ...]}}}``.
``--resize`` and ``--frame-step`` simulate another camera (resolution, frame rate) from the same file;
reported frame numbers stay those of the source file so results remain comparable with its ground truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from edge.camera.config import EngineConfig
from edge.camera.count import CrossingEvent
from edge.camera.engine import FootfallEngine
from edge.camera.lines import CountingLine, load_lines

log = logging.getLogger(__name__)


@dataclass
class CountResult:
    """Everything a run produced, as numbers (JSON-ready via :meth:`to_json`)."""

    fps: float
    lines: list[str]
    events: list[CrossingEvent] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0  # wall time spent decoding + processing
    cpu_seconds: float = 0.0  # CPU time of the process over the same span (insensitive to other load)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fps": self.fps, "lines": {}}
        for name in self.lines:
            evs = sorted((e for e in self.events if e.line == name), key=lambda e: e.frame)
            out["lines"][name] = {
                "in": sum(e.direction == "in" for e in evs),
                "out": sum(e.direction == "out" for e in evs),
                "events": [{"frame": e.frame, "direction": e.direction, "track_id": e.track_id} for e in evs],
            }
        return out


def open_video(path: str | Path, threads: int = 1) -> cv2.VideoCapture:
    """Open a video with a bounded number of decoder threads (one camera per Pi core)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
    if not cap.isOpened():
        raise OSError(f"cannot open video {path}")
    return cap


def frames(cap: cv2.VideoCapture, resize: float = 1.0, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (1-based source frame index, frame), keeping every ``step``-th frame, optionally rescaled."""
    idx = 0
    while True:
        ok = cap.grab()
        if not ok:
            return
        idx += 1
        if (idx - 1) % step:
            continue
        ok, frame = cap.retrieve()
        if not ok:
            return
        if resize != 1.0:
            interp = cv2.INTER_AREA if resize < 1 else cv2.INTER_LINEAR
            frame = cv2.resize(frame, None, fx=resize, fy=resize, interpolation=interp)
        yield idx, frame


_COLOURS = [
    (255, 99, 71),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (0, 128, 128),
    (170, 110, 40),
]


def draw(frame: np.ndarray, engine: FootfallEngine) -> np.ndarray:
    """Annotate a copy of the frame with lines, tracks and running counts."""
    img = frame.copy()
    counts = engine.counts
    for ln in engine.lines:
        a = (round(ln.a[0]), round(ln.a[1]))
        b = (round(ln.b[0]), round(ln.b[1]))
        cv2.line(img, a, b, (0, 255, 255), 2)
        c = counts[ln.name]
        cv2.putText(
            img,
            f"{ln.name} in {c['in']} out {c['out']}",
            (a[0] + 4, a[1] - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 255, 255),
            1,
            cv2.LINE_AA,
        )
    for tv in engine.tracks():
        col = _COLOURS[tv.id % len(_COLOURS)] if tv.confirmed else (160, 160, 160)
        x1, y1, x2, y2 = (round(v) for v in tv.box)
        cv2.rectangle(img, (x1, y1), (x2, y2), col, 2 if tv.seen else 1)
        if len(tv.trail) > 1:
            cv2.polylines(img, [np.round(np.asarray(tv.trail)).astype(np.int32)], False, col, 1, cv2.LINE_AA)
        cv2.circle(img, (round(tv.foot[0]), round(tv.foot[1])), 3, col, -1)
        cv2.putText(img, str(tv.id), (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, col, 1, cv2.LINE_AA)
    return img


def count_video(
    video: str | Path,
    lines: list[CountingLine] | str | Path,
    cfg: EngineConfig | None = None,
    annotate: str | Path | None = None,
    resize: float = 1.0,
    step: int = 1,
    progress: bool = True,
) -> CountResult:
    """Run the engine over a whole video file."""
    cap = open_video(video)
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if fps <= 0:
        log.warning("video %s reports no frame rate; assuming 25", video)
        fps = 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    w = round(cap.get(cv2.CAP_PROP_FRAME_WIDTH) * resize)
    h = round(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) * resize)
    if not isinstance(lines, list):
        lines = load_lines(lines, (w, h))
    engine = FootfallEngine(lines, cfg)
    writer: cv2.VideoWriter | None = None
    if annotate:
        writer = cv2.VideoWriter(str(annotate), cv2.VideoWriter.fourcc(*"mp4v"), fps / step, (w, h))
    result = CountResult(fps=fps, lines=[ln.name for ln in lines])
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        for idx, frame in tqdm(
            frames(cap, resize, step),
            total=n and -(-n // step),
            unit="f",
            disable=not progress,
            desc=Path(video).name,
            leave=False,
        ):
            result.events += engine.process(frame, idx, (idx - 1) / fps)
            result.frames += 1
            if writer is not None:
                writer.write(draw(frame, engine))
        result.events += engine.finish()
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    result.seconds = time.perf_counter() - t0
    result.cpu_seconds = time.process_time() - c0
    log.info("%s: %d frames in %.1f s, counts %s", video, result.frames, result.seconds, engine.counts)
    return result


def build_config(args: argparse.Namespace) -> EngineConfig:
    """Engine config from --config (YAML or JSON: a camera's ``engine:`` section) with --detector/--model overrides.

    Raises ``SystemExit`` with a message when --model cannot apply (motion mode uses no model) and
    ``ValueError`` for an unreadable config file.
    """
    data: dict[str, Any] = {}
    if args.config:
        try:
            loaded = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))  # JSON is YAML too
        except yaml.YAMLError as exc:
            raise ValueError(f"{args.config}: not YAML or JSON: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of EngineConfig fields, got {type(loaded).__name__}")
        data = loaded or {}
    det = data.get("detector", {})
    det = {"type": det} if isinstance(det, str) else dict(det)
    if args.detector is not None and det.get("type") != args.detector:
        det = {"type": args.detector}
    if args.model:
        kind = det.get("type", "hybrid")
        if kind == "motion":
            raise SystemExit("--model does not apply to --detector motion (it uses no model)")
        det.setdefault("type", kind)
        det["model_path"] = args.model
    if det.get("type") == "dnn" and not det.get("model_path"):
        raise SystemExit("--detector dnn needs --model PATH (a .tflite or .onnx file)")
    if det:
        data["detector"] = det
    return EngineConfig.model_validate(data)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="district count", description="Count people crossing lines in a video.")
    p.add_argument("video", help="video file (anything FFmpeg decodes)")
    p.add_argument("--lines", required=True, help="lines.json with the counting lines")
    p.add_argument("--out", required=True, help="where to write the result JSON")
    p.add_argument("--annotate", help="also write an annotated mp4 here")
    p.add_argument(
        "--detector",
        choices=["hybrid", "detector", "motion", "dnn"],
        help="detection mode (default: --config's, else hybrid; see docs/footfall.md)",
    )
    p.add_argument(
        "--model", help="model file: YOLOX .onnx for hybrid/detector (default: the packaged one), SSD for dnn"
    )
    p.add_argument("--config", help="engine configuration, YAML or JSON (a camera's engine: section)")
    p.add_argument("--resize", type=float, default=1.0, help="rescale frames by this factor (robustness tests)")
    p.add_argument("--frame-step", type=int, default=1, help="keep every N-th frame (robustness tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``district count``; returns a process exit status."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cv2.setNumThreads(1)
    try:
        cfg = build_config(args)
        res = count_video(
            args.video,
            args.lines,
            cfg,
            args.annotate,
            args.resize,
            max(1, args.frame_step),
            progress=not args.no_progress,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        log.error("count failed: %s", exc)
        return 2
    Path(args.out).write_text(json.dumps(res.to_json(), indent=1) + "\n", encoding="utf-8")
    totals = {k: (v["in"], v["out"]) for k, v in res.to_json()["lines"].items()}
    log.info("wrote %s: %s (%.1f frames/s)", args.out, totals, res.frames / max(res.seconds, 1e-9))
    return 0


if __name__ == "__main__":
    sys.exit(main())
