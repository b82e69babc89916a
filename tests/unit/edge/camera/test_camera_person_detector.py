"""The packaged person detector: the model travels with its licence, decodes to frame pixels, fails clearly."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.camera.config import EngineConfig, HybridDetectorConfig, PersonDetectorConfig
from edge.camera.detect import HybridDetector, PersonDetector, PersonSizeModel, make_detector
from edge.camera.yolox import PACKAGED_MODEL, input_size_for


def test_packaged_model_matches_its_provenance_and_carries_its_licence() -> None:
    folder = PACKAGED_MODEL.parent
    prov = (folder / "PROVENANCE.md").read_text()
    digest = hashlib.sha256(PACKAGED_MODEL.read_bytes()).hexdigest()
    assert re.search(rf"\| {PACKAGED_MODEL.name} \| \d+ \| {digest} \|", prov)
    assert "Apache License" in (folder / "LICENSE-Apache-2.0.txt").read_text()


@pytest.mark.parametrize(
    ("frame", "width", "expected"),
    [((640, 480), 320, (320, 256)), ((768, 576), 320, (320, 256)), ((1920, 1080), 416, (416, 256))],
)
def test_input_size_keeps_the_aspect_in_whole_strides(
    frame: tuple[int, int], width: int, expected: tuple[int, int]
) -> None:
    assert input_size_for(*frame, width) == expected


def test_input_width_must_be_a_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        input_size_for(640, 480, 300)
    with pytest.raises(ValueError):
        PersonDetectorConfig(input_width=300)


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    cfg = PersonDetectorConfig(model_path=tmp_path / "nope.onnx")
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        make_detector(cfg)


def test_default_engine_is_hybrid_and_old_motion_sections_stay_motion() -> None:
    assert EngineConfig().detector.type == "hybrid"
    assert EngineConfig.model_validate({"detector": {}}).detector.type == "hybrid"
    assert EngineConfig.model_validate({"detector": {"stride": 2}}).detector.type == "hybrid"
    assert EngineConfig.model_validate({"detector": {"work_width": 320}}).detector.type == "motion"


def _person_frame(scene: Any, x: float) -> np.ndarray:
    """One rendered frame (320x240) with a walker whose foot is at (x, 185)."""
    frames = scene.render([scene.Walker(lambda t: (x, 185.0), (200, 40, 40))], 0.1)
    return np.asarray(frames[0])


def test_detector_boxes_are_in_frame_pixels_with_scores(scene: Any) -> None:
    det = PersonDetector(PersonDetectorConfig())
    frame = _person_frame(scene, 120.0)
    size = PersonSizeModel(EngineConfig().person, frame.shape[1], frame.shape[0])
    boxes = det.detect(frame, 0.0, size)
    assert boxes.shape[1] == 6
    best = boxes[np.argmax(boxes[:, 5])]
    assert best[5] >= 0.5
    foot_x, foot_y = (best[0] + best[2]) / 2, best[3]
    assert abs(foot_x - 120.0) < 8 and abs(foot_y - 185.0) < 10, best


def test_detector_stride_runs_the_model_on_every_kth_frame(scene: Any) -> None:
    det = PersonDetector(PersonDetectorConfig(stride=3))
    frame = _person_frame(scene, 120.0)
    size = PersonSizeModel(EngineConfig().person, frame.shape[1], frame.shape[0])
    found = [len(det.detect(frame, i / 10, size)) > 0 for i in range(6)]
    assert found == [True, False, False, True, False, False]


def test_hybrid_skips_the_model_on_an_empty_still_scene(scene: Any) -> None:
    det = make_detector(HybridDetectorConfig())
    assert isinstance(det, HybridDetector)
    empty = np.asarray(scene.render([], 0.1)[0])
    size = PersonSizeModel(EngineConfig().person, empty.shape[1], empty.shape[0])
    frames = scene.render([], 3.0)  # sensor noise only
    assert all(len(det.detect(f, i / 10, size)) == 0 for i, f in enumerate(frames))
    assert det.model_runs == 0


def test_hybrid_demotes_a_poster_and_sleeps_once_the_passer_by_has_gone(scene: Any) -> None:
    # A life-size poster of a person at x=60 (static: drawn after the noise, legs fixed) and a passer-by who
    # walks out of the picture after about 2.5 s. The poster never scores as a person that may start a
    # track, and once the passer-by has gone the model stops within idle_after_s (2 s).
    walker = scene.linear(0.5, (200, 185), (340, 190))
    frames = scene.render([scene.Walker(walker, (40, 160, 40))], 8.0)
    poster = scene.Walker(lambda t: (60.0, 185.0), (200, 40, 40))
    for f in frames:
        scene.draw_walker(f, (60.0, 185.0), poster, phase=0.0)
    det = make_detector(HybridDetectorConfig())
    assert isinstance(det, HybridDetector)
    size = PersonSizeModel(EngineConfig().person, frames[0].shape[1], frames[0].shape[0])
    runs = []
    for i, f in enumerate(frames):
        boxes = det.detect(f, i / 10, size)
        runs.append(det.model_runs)
        poster_boxes = boxes[np.abs((boxes[:, 0] + boxes[:, 2]) / 2 - 60.0) < 15] if len(boxes) else boxes
        assert all(poster_boxes[:, 5] < 0.5), (i, poster_boxes)
    gone = next(i for i in range(len(frames)) if i / 10 > 0.5 and walker(i / 10) is None)
    assert runs[gone] > 0.5 * gone  # the model ran while someone walked
    assert runs[-1] - runs[min(gone + 25, len(frames) - 1)] == 0  # and sleeps 2.5 s after they left
    # The same frame to the plain detector: a confident box, so the demotion above is hybrid's doing.
    assert PersonDetector(PersonDetectorConfig()).detect(frames[-1], 0.0, size)[:, 5].max() >= 0.5
