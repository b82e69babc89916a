"""Footfall engine on the real PETS09-S2L1 clip, scored by the project's count_score.py.

Skips when the shared data is absent, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DISTRICT_SHARED", REPO.parent / "shared"))
SEQ = SHARED / "data" / "footfall-video" / "PETS09-S2L1"
SCORER = SHARED / "tools" / "count_score.py"
VIDEO = SEQ / "PETS09-S2L1_f0001-0300.mp4"


def _need_data() -> None:
    missing = [p for p in (VIDEO, SEQ / "lines.json", SEQ / "gt_counts.json", SCORER) if not p.is_file()]
    need(not missing, f"PETS09-S2L1 footfall data missing: {', '.join(map(str, missing))} (set DISTRICT_SHARED)")


def test_pets_counts_meet_targets(tmp_path: Path) -> None:
    _need_data()
    from edge.camera.count_cli import main

    out = tmp_path / "pets.json"
    assert main([str(VIDEO), "--lines", str(SEQ / "lines.json"), "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert set(result["lines"]) == {ln["name"] for ln in json.loads((SEQ / "lines.json").read_text())["lines"]}
    scored = subprocess.run(
        [sys.executable, str(SCORER), str(out), str(SEQ / "gt_counts.json")], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"count accuracy ([-\d.]+)\s+event F1 ([-\d.]+)", scored)
    assert m, scored
    acc, f1 = float(m.group(1)), float(m.group(2))
    assert acc >= 0.95, scored
    assert f1 >= 0.90, scored


def test_dnn_detector_finds_people_on_pets(tmp_path: Path) -> None:
    _need_data()
    model = SHARED / "models" / "ssd_mobilenet_v1_coco_quant" / "detect.tflite"
    need(model.is_file(), f"model not found: {model}")
    need(importlib.util.find_spec("ai_edge_litert") is not None, "ai-edge-litert not installed (pip install .[dnn])")
    import cv2

    from edge.camera.config import DnnDetectorConfig, PersonSizeConfig
    from edge.camera.detect import PersonSizeModel, make_detector

    cap = cv2.VideoCapture(str(VIDEO))
    ok, frame = cap.read()
    cap.release()
    assert ok
    det = make_detector(DnnDetectorConfig(model_path=model, score_threshold=0.3))
    boxes = det.detect(frame, 0.0, PersonSizeModel(PersonSizeConfig(), frame.shape[1], frame.shape[0]))
    assert boxes.shape[1] == 5 and len(boxes) >= 2
    assert (boxes[:, 3] > boxes[:, 1]).all()
