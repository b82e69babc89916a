"""Pydantic models for the footfall engine.

Every tunable is expressed in physical terms so the same defaults carry over to
other cameras: sizes are fractions of the frame or of the (learned) expected
person height, and times are seconds. Nothing here is a raw pixel or frame count,
except the DNN input size, which is a property of the model file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from contracts.configfile import StrictModel


class MotionDetectorConfig(StrictModel):
    """Background subtraction at reduced resolution, with blob splitting by expected person size."""

    type: Literal["motion"] = "motion"
    work_width: int = Field(256, ge=64, le=1920, description="Width (px) frames are reduced to before analysis.")
    history_s: float = Field(20.0, gt=0, description="Background memory; a person still for much longer fades in.")
    var_threshold: float = Field(16.0, gt=0, description="MOG2 squared Mahalanobis threshold (noise level units).")
    shadow_ratio: float = Field(
        0.7, gt=0, lt=1, description="Pixels darkened to no less than this fraction of the background are shadow."
    )
    min_area: float = Field(0.2, gt=0, lt=1, description="Smallest blob, fraction of a person box.")
    split_width: float = Field(
        1.6, gt=1, description="A blob wider than this many expected person widths is split into several people."
    )


class DnnDetectorConfig(StrictModel):
    """SSD-style TFLite/ONNX detector run through cv2.dnn (optional, slower, needs a model file)."""

    type: Literal["dnn"] = "dnn"
    model_path: Path
    input_size: int = Field(300, ge=32, description="Square network input size (px) the model was exported with.")
    score_threshold: float = Field(0.4, gt=0, lt=1)
    person_class: int = Field(0, ge=0, description="Class index of 'person' in the model's output.")
    nms_iou: float = Field(0.5, gt=0, lt=1)
    swap_rb: bool = Field(True, description="Model expects RGB input (TFLite SSD does).")


class PersonModelConfig(StrictModel):
    """The YOLOX person detector (onnxruntime, one thread): which file, input size and score floor."""

    model_path: Path | None = Field(
        None,
        description="YOLOX ONNX file with symbolic H, W (PROVENANCE.md layout); None: the packaged YOLOX-nano "
        "(edge/camera/models/, Apache-2.0).",
    )
    input_width: int = Field(
        320,
        ge=64,
        le=1280,
        multiple_of=32,
        description="Network input width (px); the height follows the frame's aspect (rounded up to 32). 320 "
        "gave the best recall and precision on PETS (PROVENANCE.md: 0.90 / 0.88 vs 0.88 / 0.77 at 416).",
    )
    min_score: float = Field(
        0.1, gt=0, lt=1, description="Boxes below this person score are dropped (the tracker's low_score floor)."
    )
    nms_iou: float = Field(0.45, gt=0, lt=1, description="IoU above which the weaker overlapping box is dropped.")
    stride: int = Field(
        1, ge=1, le=30, description="Run the model on every stride-th frame; the tracker predicts in between."
    )


class PersonDetectorConfig(PersonModelConfig):
    """Boxes from the person detector; the right choice for cameras at head height and in crowds."""

    type: Literal["detector"] = "detector"


class HybridDetectorConfig(PersonModelConfig):
    """Motion proposes, the person detector confirms, sizes and splits.

    The model runs only on frames with motion or while people it saw may still be in view, and a box
    without motion under it (a poster, a mannequin, a reflection) scores as low: it may continue a
    person's track who stopped, never start one.
    """

    type: Literal["hybrid"] = "hybrid"
    motion: MotionDetectorConfig = Field(default_factory=MotionDetectorConfig)
    support: float = Field(
        0.05, ge=0, lt=1, description="Share of a box's pixels that must be foreground for the box to count as moving."
    )
    idle_after_s: float = Field(
        2.0, ge=0, description="With no motion and no box for this long, the model is not run (an empty scene)."
    )


DetectorConfig = Annotated[
    MotionDetectorConfig | DnnDetectorConfig | PersonDetectorConfig | HybridDetectorConfig,
    Field(discriminator="type"),
]


class PersonSizeConfig(StrictModel):
    """Prior for the expected person size; refined online from clean detections."""

    height_frac: float = Field(0.15, gt=0.01, lt=1, description="Prior person height as a fraction of frame height.")
    aspect: float = Field(0.38, gt=0.1, lt=1.5, description="Prior person width / height.")
    learn: bool = Field(True, description="Refine the size-vs-image-row model from observed detections.")


class TrackerConfig(StrictModel):
    """Kalman + Hungarian tracker of foot points. Distances are in expected person heights."""

    max_lost_s: float = Field(2.0, gt=0, description="A confirmed track coasts this long without detections.")
    reid_s: float = Field(
        30.0,
        ge=0,
        description="A new track born where a confirmed one was last seen at most this long ago continues it "
        "(a person who stood still long enough to fade into the background and then walked on).",
    )
    confirm_s: float = Field(0.4, ge=0, description="A track must be seen over this span before it may count.")
    gate: float = Field(0.5, gt=0, description="Largest frame-to-frame foot jump, in person heights.")
    max_speed: float = Field(1.0, gt=0, description="Gate growth while unseen: fastest plausible walk, heights / s.")
    accel: float = Field(1.2, gt=0, description="Process noise: plausible acceleration, person heights / s^2.")
    meas_noise: float = Field(0.08, gt=0, description="Foot-point measurement noise, person heights.")
    track_score: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Detector score from which a box is matched in the first round (ByteTrack's "
        "high-score set; Zhang et al. 2022). Motion boxes score 1.",
    )
    low_score: float = Field(
        0.1, gt=0, le=1, description="Lowest detector score a box may have to continue a track in the second round."
    )
    birth_score: float = Field(0.6, gt=0, le=1, description="Lowest detector score that starts a new track.")


class CountConfig(StrictModel):
    """Line-crossing logic."""

    hysteresis: float = Field(
        0.12, ge=0, description="Dead band each side of a line, in person heights, before a side change is committed."
    )
    clearance: float = Field(
        0.2,
        ge=0,
        description="A committed side change counts once the foot is this far past the line (person heights), or the "
        "track ends on the new side; coming back beyond the dead band first takes it back (no phantom crossings).",
    )


class PrivacyConfig(StrictModel):
    """Polygons (normalised 0..1 image coordinates) blanked before any analysis."""

    polygons: list[list[tuple[float, float]]] = Field(default_factory=list)


class EngineConfig(StrictModel):
    """Everything the footfall engine needs besides the counting lines."""

    detector: DetectorConfig = Field(
        default_factory=HybridDetectorConfig,
        description="How people are found: 'hybrid' (default: motion gates and vets the person detector; any view), "
        "'detector' (the model on every frame), 'motion' (no model; elevated and overhead views with people well "
        "apart, the cheapest), or 'dnn' (an SSD-layout TFLite/ONNX file). See docs/footfall.md.",
    )
    person: PersonSizeConfig = Field(default_factory=PersonSizeConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    count: CountConfig = Field(default_factory=CountConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @field_validator("detector", mode="before")
    @classmethod
    def _default_type(cls, v: Any) -> Any:
        """A detector section without ``type`` means the default hybrid detector; a bare name is its type.

        Except one that sets motion-detector fields (``history_s``, ``work_width``, ...): that was written
        when motion was the only detector, and keeps meaning it.
        """
        if isinstance(v, str):  # ``detector: hybrid`` for ``detector: {type: hybrid}``
            return {"type": v}
        motion_only = set(MotionDetectorConfig.model_fields) - set(HybridDetectorConfig.model_fields)
        if isinstance(v, dict) and "type" not in v:
            return {**v, "type": "motion" if motion_only & set(v) else "hybrid"}
        if isinstance(v, dict) and v.get("type") == "hybrid" and motion_only & set(v):
            keys = ", ".join(sorted(motion_only & set(v)))
            raise ValueError(f"hybrid's motion settings ({keys}) go under its motion: section")
        return v
