"""Unit tests of the line-crossing counter, lines.json loading, config validation and privacy masks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from edge.camera.config import EngineConfig, HybridDetectorConfig, PrivacyConfig
from edge.camera.count import LineCrossingCounter
from edge.camera.detect import make_detector
from edge.camera.engine import FootfallEngine
from edge.camera.lines import CountingLine, load_lines
from edge.camera.privacy import PrivacyMask

LINE = CountingLine("L", (100.0, 0.0), (100.0, 200.0), (50.0, 100.0))  # x < 100 is "in"
H = 60.0  # person height (px) used for the hysteresis band


def feed(
    xs: list[float],
    y: float = 100.0,
    confirmed: bool = True,
    track: int = 1,
    counter: LineCrossingCounter | None = None,
) -> list[Any]:
    c = counter or LineCrossingCounter([LINE])
    out = []
    for i, x in enumerate(xs):
        out += c.update(track, (x, y), i + 1, i / 10, H, confirmed)
    return out


def test_crossing_dated_to_first_frame_on_new_side() -> None:
    evs = feed([130, 120, 110, 102, 98, 92, 80, 70])
    assert [(e.direction, e.frame) for e in evs] == [("in", 5)]


def test_jitter_inside_band_is_ignored_and_counted_once_when_committed() -> None:
    evs = feed([130, 110, 101, 99, 101, 98, 102, 99, 101, 97, 85, 70])
    assert [e.direction for e in evs] == ["in"]


def test_each_real_crossing_counts() -> None:
    evs = feed([130, 110, 80, 70, 90, 120, 130, 100, 70])
    assert [e.direction for e in evs] == ["in", "out", "in"]


def test_passing_beyond_segment_end_not_counted() -> None:
    assert feed([130, 110, 80, 70], y=260.0) == []


def test_unconfirmed_events_released_on_confirmation_or_dropped() -> None:
    c = LineCrossingCounter([LINE])
    assert feed([130, 110, 80], confirmed=False, counter=c) == []
    later = c.update(1, (70.0, 100.0), 4, 0.3, H, True)
    assert [(e.direction, e.frame) for e in later] == [("in", 3)]
    c2 = LineCrossingCounter([LINE])
    feed([130, 110, 80], confirmed=False, counter=c2, track=7)
    c2.drop(7)
    assert c2.counts == {"L": {"in": 0, "out": 0}}


def test_gap_interpolates_crossing_frame() -> None:
    c = LineCrossingCounter([LINE])
    c.update(1, (130.0, 100.0), 1, 0.0, H, True)
    c.update(1, (120.0, 100.0), 2, 0.1, H, True)
    evs = c.update(1, (60.0, 100.0), 8, 0.7, H, True)  # unseen in frames 3-7; crossed about a third of the way
    assert len(evs) == 1 and 3 <= evs[0].frame <= 5


def test_inherited_side_counts_a_crossing_once() -> None:
    c = LineCrossingCounter([LINE])
    feed([130, 120, 110], counter=c)
    states = c.snapshot(1)
    c.drop(1)
    c.inherit(2, states)
    evs = c.update(2, (70.0, 100.0), 9, 0.8, H, True)
    assert [e.direction for e in evs] == ["in"]


def test_line_side_orientation_and_scaling() -> None:
    assert LINE.side((50, 10)) > 0 > LINE.side((150, 10))
    flipped = CountingLine("L", (100.0, 200.0), (100.0, 0.0), (50.0, 100.0))
    assert flipped.side((50, 10)) > 0
    s = LINE.scaled(0.5, 0.5)
    assert s.a == (50.0, 0.0) and s.side((20, 10)) > 0
    with pytest.raises(ValueError):
        CountingLine("bad", (0.0, 0.0), (0.0, 10.0), (0.0, 5.0))


def test_load_lines_json_format_and_rescale(tmp_path: Path) -> None:
    doc = {
        "sequence": "x",
        "image_size": [768, 576],
        "lines": [
            {"name": "L1", "A": [250, 180], "B": [250, 340], "in_side_point": [150, 260], "in_means": "westbound"},
            {"name": "L2", "A": [430, 170], "B": [430, 440], "in_side_point": [330, 300]},
        ],
    }
    p = tmp_path / "lines.json"
    p.write_text(json.dumps(doc))
    lines = load_lines(p)
    assert [ln.name for ln in lines] == ["L1", "L2"]
    assert lines[0].side((200, 260)) > 0  # west of x=250 is "in"
    half = load_lines(p, (384, 288))
    assert half[1].a == (215.0, 85.0)
    doc["lines"].append(dict(doc["lines"][0]))
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="duplicate"):
        load_lines(p)


@pytest.mark.parametrize(
    "bad",
    [
        {"bogus": 1},
        {"tracker": {"max_lost": 2}},
        {"detector": {"type": "motion", "history": 5}},
        {"detector": {"type": "hog"}},
        {"count": {"hysteresis": -1}},
    ],
)
def test_config_rejects_unknown_or_invalid(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        EngineConfig.model_validate(bad)


def test_config_defaults_and_detector_factory() -> None:
    cfg = EngineConfig.model_validate({"detector": {"history_s": 5}})
    assert cfg.detector.type == "motion"
    assert type(make_detector(cfg.detector)).__name__ == "MotionDetector"
    dnn = EngineConfig.model_validate({"detector": {"type": "dnn", "model_path": "/nonexistent/model.tflite"}})
    with pytest.raises(FileNotFoundError):
        make_detector(dnn.detector)


def test_privacy_mask_blanks_pixels_before_detection() -> None:
    seen: list[np.ndarray] = []

    class Spy:
        def detect(self, frame: np.ndarray, t: float, size: Any) -> np.ndarray:
            seen.append(frame.copy())
            return np.zeros((0, 5), np.float32)

    poly = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]  # right half
    cfg = EngineConfig(privacy=PrivacyConfig(polygons=[poly]))
    eng = FootfallEngine([LINE], cfg, detector=Spy())
    frame = np.full((100, 200, 3), 200, np.uint8)
    eng.process(frame, 1, 0.0)
    assert (seen[0][:, 101:] == 0).all()
    assert (seen[0][:, :99] == 200).all()
    assert (frame == 200).all()  # caller's frame untouched
    with pytest.raises(ValueError):
        PrivacyMask([[(0.0, 0.0), (1.0, 1.0)]])


def test_privacy_mask_hides_walker_from_counting(scene: Any) -> None:
    path = scene.linear(1.0, (40, 180), (290, 190))
    frames = scene.render([scene.Walker(path, (200, 40, 40))], 6.0)
    _, events = scene.run_engine(frames)
    assert len(events) == 1
    band = [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]  # lower half of the image, where the walker is
    _, masked = scene.run_engine(frames, cfg=scene.engine_cfg(privacy=PrivacyConfig(polygons=[band])))
    assert masked == []


def test_privacy_mask_in_work_image_is_conservative() -> None:
    from edge.camera.config import MotionDetectorConfig
    from edge.camera.detect import MotionDetector

    poly = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]  # right half
    det = MotionDetector(MotionDetectorConfig(work_width=256))
    det.privacy = PrivacyMask([poly])
    frame = np.full((576, 770, 3), 200, np.uint8)  # 770 / 256: integer reduction then a final resize
    frame[:, 385:] = 255  # masked content that must not leak into any kept work pixel
    small = det.work_image(frame)
    assert small.shape[1] == 256
    kept = small[small.any(axis=2)]
    assert len(kept) > 0 and (kept == 200).all()
    assert (small[:, 128:] == 0).all()


# -- what a new user typed (a fresh user's trial of `district count` and camera configs) -----------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"name": "L1", "A": [0, 0], "B": [10, 0], "in_side_pont": [5, 5]},
            r"lines\[0\] \('L1'\): missing in_side_point; unknown key\(s\) in_side_pont",
        ),
        (
            {"nmae": "L1", "A": [0, 0], "B": [10, 0], "in_side_point": [5, 5]},
            r"lines\[0\]: missing name; unknown key\(s\) nmae",
        ),
        (
            {"name": "L1", "A": ["480x", 0], "B": [10, 0], "in_side_point": [5, 5]},
            r"lines\[0\] \('L1'\): could not convert",
        ),
        ("L1", r"lines\[0\]: expected a mapping"),
    ],
)
def test_a_lines_file_typo_is_a_clear_error_naming_the_entry(entry: Any, message: str, tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text(json.dumps({"lines": [entry]}))
    with pytest.raises(ValueError, match=message):
        load_lines(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"lines.json: not valid JSON"):
        load_lines(path)


def test_detector_shorthand_and_misplaced_hybrid_motion_settings() -> None:
    assert EngineConfig.model_validate({"detector": "hybrid"}).detector.type == "hybrid"
    assert EngineConfig.model_validate({"detector": "motion"}).detector.type == "motion"
    with pytest.raises(pydantic.ValidationError, match="go under its motion: section"):
        EngineConfig.model_validate({"detector": {"type": "hybrid", "history_s": 10}})
    cfg = EngineConfig.model_validate({"detector": {"type": "hybrid", "motion": {"history_s": 10}}})
    assert isinstance(cfg.detector, HybridDetectorConfig) and cfg.detector.motion.history_s == 10


def test_count_model_applies_to_the_default_mode_and_config_takes_yaml(tmp_path: Path) -> None:
    from edge.camera.count_cli import build_config, parser

    def cfg(*argv: str) -> EngineConfig:
        return build_config(parser().parse_args(["v.mp4", "--lines", "l.json", "--out", "o.json", *argv]))

    assert getattr(cfg("--model", "/m/big.onnx").detector, "model_path", None) == Path("/m/big.onnx")
    assert cfg("--detector", "detector", "--model", "/m/x.onnx").detector.type == "detector"
    with pytest.raises(SystemExit, match="does not apply"):
        cfg("--detector", "motion", "--model", "/m/x.onnx")
    yml = tmp_path / "engine.yaml"
    yml.write_text("detector: {type: detector, stride: 2}\ncount: {clearance: 0.3}\n")
    c = cfg("--config", str(yml))
    assert (c.detector.type, getattr(c.detector, "stride", None), c.count.clearance) == ("detector", 2, 0.3)
