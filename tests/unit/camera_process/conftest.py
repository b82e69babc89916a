"""Fakes for the camera process unit tests: a scripted video source and a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from edge.camera.camera_config import SourceConfig


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
