"""Cache YOLOX-nano person boxes per frame for the tracker comparison (compare.py).

    python bench/footfall/trackers/dump_detections.py      # writes $FOOTFALL_DETS/<SEQ>-320.npy

Each file is an object array with one ``(N, 5)`` float32 array per frame: ``x1, y1, x2, y2, score`` in
frame pixels, scores >= 0.05, after NMS (IoU 0.45), input width 320: the engine's person detector.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from edge.camera.yolox import PACKAGED_MODEL, YoloxSession  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "footfall-video"
CACHE = Path(os.environ.get("FOOTFALL_DETS", "/tmp/district-footfall-dets"))


def main() -> int:
    cv2.setNumThreads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    session = YoloxSession(PACKAGED_MODEL)
    for seq in sorted(d for d in DATA.iterdir() if d.is_dir()):
        video = next(iter(sorted(seq.glob("*.mp4"))), None)
        if video is None:
            continue
        cap = cv2.VideoCapture(str(video))
        out = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            out.append(session.infer(frame, 320, 0.05, 0.45))
        cap.release()
        arr = np.empty(len(out), dtype=object)
        arr[:] = out
        np.save(CACHE / f"{seq.name}-320.npy", arr, allow_pickle=True)
        print(f"{seq.name}: {len(out)} frames -> {CACHE / (seq.name + '-320.npy')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
