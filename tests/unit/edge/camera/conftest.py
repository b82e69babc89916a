"""Helpers for the camera unit tests (edge/camera/).

Synthetic fixed-camera scenes for the footfall engine: numpy-drawn walkers on a textured background.

A walker is a function of time returning its foot point (or None when absent);
walkers nearer the camera (larger foot y) are drawn last, so they hide the ones
behind them, as in a real elevated view. Static occluders are part of the
background. Frames get fresh sensor noise each time, like a real camera.

Fakes for the camera process: a scripted video source and a fake clock
(imported by the tests as ``from conftest import ...``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest

from edge.camera.camera_config import SourceConfig
from edge.camera.config import EngineConfig, MotionDetectorConfig, PersonSizeConfig
from edge.camera.count import CrossingEvent
from edge.camera.engine import FootfallEngine
from edge.camera.lines import CountingLine

W, H, FPS = 320, 240, 10.0
PERSON_H = 60.0
LINE = CountingLine("door", (160.0, 40.0), (160.0, 235.0), (80.0, 130.0))  # left of x=160 is "in"

Path_ = Callable[[float], tuple[float, float] | None]


@dataclass
class Walker:
    path: Path_
    colour: tuple[int, int, int]
    height: float = PERSON_H


def background(occluders: Sequence[tuple[int, int, int, int]] = (), seed: int = 1) -> np.ndarray:
    """Textured ground (blurred noise + gradient) with optional static pillars (x1, y1, x2, y2)."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3)).astype(np.float32), (0, 0), 3)
    grad = np.linspace(90, 150, H, dtype=np.float32)[:, None, None]
    bg = np.clip(0.35 * tex + grad, 0, 255).astype(np.uint8)
    for x1, y1, x2, y2 in occluders:
        cv2.rectangle(bg, (x1, y1), (x2, y2), (60, 160, 200), -1)
    return bg


def draw_walker(img: np.ndarray, foot: tuple[float, float], w: Walker, phase: float) -> None:
    fx, fy = foot
    h = w.height
    bw = 0.36 * h
    top = fy - h
    cv2.circle(img, (round(fx), round(top + 0.09 * h)), round(0.09 * h), (40, 60, 90), -1)
    cv2.rectangle(
        img, (round(fx - bw / 2), round(top + 0.18 * h)), (round(fx + bw / 2), round(top + 0.58 * h)), w.colour, -1
    )
    stride = 0.12 * h * np.sin(phase)
    for s in (-1, 1):  # legs swing, as real legs do
        cv2.line(
            img,
            (round(fx + s * 0.08 * h), round(top + 0.58 * h)),
            (round(fx + s * stride), round(fy)),
            (30, 30, 50),
            max(2, round(0.08 * h)),
        )


def render(
    walkers: Sequence[Walker],
    seconds: float,
    occluders: Sequence[tuple[int, int, int, int]] = (),
    seed: int = 2,
    front: Sequence[tuple[int, int, int, int]] = (),
) -> list[np.ndarray]:
    """Frames of the scene. ``front`` pillars are drawn over the walkers (occluders between them and the camera)."""
    bg = background(list(occluders) + list(front))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        img = bg.copy()
        feet = [(w.path(t), w) for w in walkers]
        for foot, w in sorted(((f, w) for f, w in feet if f is not None), key=lambda fw: fw[0][1]):
            draw_walker(img, foot, w, phase=t * 6.0)
        for x1, y1, x2, y2 in front:
            cv2.rectangle(img, (x1, y1), (x2, y2), (60, 160, 200), -1)
        noise = rng.normal(0, 2.5, img.shape)
        out.append(np.clip(img + noise, 0, 255).astype(np.uint8))
    return out


def linear(t0: float, p0: tuple[float, float], p1: tuple[float, float], speed_hps: float = 1.0) -> Path_:
    """Walk from p0 (appearing at t0) to p1 at ``speed_hps`` person heights per second, then vanish."""
    d = float(np.hypot(p1[0] - p0[0], p1[1] - p0[1]))
    dur = d / (speed_hps * PERSON_H)

    def path(t: float) -> tuple[float, float] | None:
        if t < t0 or t > t0 + dur:
            return None
        a = (t - t0) / dur
        return (p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1]))

    return path


def first_frame_past(path: Path_, x: float, seconds: float, rightwards: bool) -> int:
    """1-based index of the first frame whose foot is on the far side of x."""
    for i in range(int(seconds * FPS)):
        p = path(i / FPS)
        if p is not None and ((p[0] > x) if rightwards else (p[0] < x)):
            return i + 1
    raise AssertionError("walker never crosses")


def engine_cfg(**over: object) -> EngineConfig:
    """The motion engine on the synthetic scenes (drawn figures are motion tests, not a person detector's)."""
    over.setdefault("detector", MotionDetectorConfig())
    return EngineConfig(person=PersonSizeConfig(height_frac=PERSON_H / H), **over)  # type: ignore[arg-type]


def run_engine(
    frames: Sequence[np.ndarray], lines: Sequence[CountingLine] = (LINE,), cfg: EngineConfig | None = None
) -> tuple[FootfallEngine, list[CrossingEvent]]:
    eng = FootfallEngine(lines, cfg or engine_cfg())
    events: list[CrossingEvent] = []
    for i, f in enumerate(frames):
        events += eng.process(f, i + 1, i / FPS)
    return eng, events + eng.finish()


@pytest.fixture
def scene() -> object:
    """Namespace of the helpers above, for tests.

    Built from this module's own globals: several test folders have a
    ``conftest`` module, so ``sys.modules["conftest"]`` may be another one.
    """
    import types

    return types.SimpleNamespace(**{k: v for k, v in globals().items() if not k.startswith("__")})


# -- fakes for the camera process ----------------------------------------------------


class FakeClock:
    """Monotonic seconds that only move when told to (``wait`` moves them too)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


class FakeSource:
    """A scripted cv2.VideoCapture: ``frames`` images, then grab() fails (or the file ends)."""

    def __init__(
        self,
        frames: Sequence[np.ndarray] | int,
        *,
        fps: float = 10.0,
        opened: bool = True,
        on_grab: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(frames, int):
            frames = [np.full((48, 64, 3), 100 + (i % 50), np.uint8) for i in range(frames)]
        self.frames = list(frames)
        self.fps = fps
        self.opened = opened
        self.pos = 0
        self.released = False
        self.on_grab = on_grab

    def isOpened(self) -> bool:
        return self.opened

    def grab(self) -> bool:
        if self.on_grab is not None:
            self.on_grab()
        if self.pos >= len(self.frames):
            return False
        self.pos += 1
        return True

    def retrieve(self) -> tuple[bool, Any]:
        return True, self.frames[self.pos - 1]

    def get(self, prop_id: int) -> float:
        return self.fps

    def release(self) -> None:
        self.released = True


class ScriptedFactory:
    """Returns the scripted sources in order; ``None`` in the script means "open fails"."""

    def __init__(self, script: Sequence[FakeSource | None], *, then: Callable[[], FakeSource | None] | None = None):
        self.script = list(script)
        self.then = then
        self.calls: list[SourceConfig] = []

    def __call__(self, cfg: SourceConfig) -> FakeSource:
        self.calls.append(cfg)
        src = self.script.pop(0) if self.script else (self.then() if self.then else None)
        return src if src is not None else FakeSource(0, opened=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
