"""Frames from a file, a USB camera or a network stream, with reconnection.

:class:`Capture` is a step function for the camera loop: each :meth:`Capture.read`
returns a frame or ``None`` ("nothing right now": reconnecting, or pacing a
file replay), never blocking longer than ``poll_s`` on its own (FFmpeg's open
and read timeouts bound the calls into OpenCV), so the loop can keep
reporting health while the camera is away. It raises :class:`EndOfSource`
only when a non-looping file ends.

Timestamps (``Frame.t``, seconds, increasing):

- files: ``(n - 1) / fps`` of the file (plus the length of earlier loops), so
  counting is deterministic and runs as fast as the CPU allows; with
  ``realtime`` the frames are additionally paced to the wall clock, and frames
  that fall behind are skipped like a live camera's;
- cameras and streams: the monotonic clock since the capture was created.

A failed open or read closes the source and retries after an exponential
backoff (``reconnect_min_s`` doubled up to ``reconnect_max_s``, +-10 % jitter),
reset by the first frame read after a reconnect. Everything runs on the
caller's thread; frames never leave it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from common import retry
from edge.camera.camera_config import SourceConfig

log = logging.getLogger(__name__)

#: Frame rate assumed for a file that reports none and has no ``fps`` configured.
DEFAULT_FPS = 25.0


class VideoSource(Protocol):
    """The part of cv2.VideoCapture the capture uses (fakes implement this in tests)."""

    def isOpened(self) -> bool: ...  # OpenCV spells it so

    def grab(self) -> bool: ...

    def retrieve(self) -> tuple[bool, Any]: ...

    def get(self, prop_id: int) -> float: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[SourceConfig], VideoSource]


class EndOfSource(Exception):
    """A file source without ``loop`` has no more frames."""


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray
    #: 1-based, increasing over the capture's whole life (across reconnects and loops).
    index: int
    #: Seconds, increasing (see module docstring).
    t: float
    #: First frame after (re)opening the source: per-stream state (tracks, background) should restart.
    new_segment: bool


def open_source(cfg: SourceConfig) -> VideoSource:
    """Open a source with OpenCV (FFmpeg for files and streams, V4L2 for devices)."""
    if cfg.kind == "device":
        assert cfg.device is not None
        cap = cv2.VideoCapture(cfg.device, cv2.CAP_V4L2)
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, cfg.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, cfg.height),
            (cv2.CAP_PROP_FPS, cfg.fps),
        ):
            if value is not None and cap.isOpened():
                cap.set(prop, float(value))
        return cap
    params = [cv2.CAP_PROP_N_THREADS, cfg.decoder_threads]
    if cfg.kind == "stream":
        assert cfg.url is not None
        if cfg.url.lower().startswith(("rtsp://", "rtsps://")):
            # Read by OpenCV at every open; an operator's own setting wins.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", f"rtsp_transport;{cfg.rtsp_transport}")
        params += [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(cfg.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(cfg.read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(cfg.url, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(str(cfg.path), cv2.CAP_FFMPEG, params)


class Backoff(retry.Backoff):
    """Camera reconnects: :class:`common.retry.Backoff` spread by ``± jitter`` (a fraction) and capped at ``max_s``.

    Seconds: ``min_s``, doubled (``factor``) per failure, at most ``max_s``.
    ``rng`` is the uniform [0, 1) source (a constant in tests).
    """

    def __init__(
        self,
        min_s: float,
        max_s: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.1,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(min_s, max_s, factor=factor, jitter=retry.Jitter.symmetric(jitter), rng=rng)

    next = retry.Backoff.next_delay  # the name the capture's tests use


class Capture:
    """Reads frames from one source; reconnects on its own. See the module docstring.

    ``wait(seconds)`` sleeps and returns True when the camera is asked to stop
    (``threading.Event.wait`` / ``multiprocessing.Event.wait``).
    """

    def __init__(
        self,
        cfg: SourceConfig,
        *,
        factory: CaptureFactory = open_source,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
        poll_s: float = 0.5,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.cfg = cfg
        self._factory = factory
        self._clock = clock
        self._wait = wait or _sleep
        self.poll_s = poll_s
        self.backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s, rng=rng)
        self._cap: VideoSource | None = None
        self._retry_at = clock()  # first open at once
        self._t0 = clock()
        self._index = 0
        self._seg_frames = 0  # frames read since the last open
        self._file_offset = 0.0  # media seconds of earlier loops
        self._fps: float | None = None  # source frame rate (files: for timestamps; live: for skipping)
        self._seg_wall0: float | None = None  # realtime replay: wall time of the segment's first frame
        self._new_segment = True
        #: Counters for health and logs.
        self.opens = 0
        self.open_failures = 0
        self.read_failures = 0
        self.skipped = 0
        self.ended = False

    @property
    def connected(self) -> bool:
        """The source is open (frames may still be slow to come)."""
        return self._cap is not None

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def retry_in(self) -> float | None:
        """Seconds until the next reconnect attempt (None when connected)."""
        return None if self._cap is not None else max(0.0, self._retry_at - self._clock())

    def read(self) -> Frame | None:
        """The next frame, or None if there is none right now. Raises EndOfSource at the end of a file."""
        if self.ended:
            raise EndOfSource(self.cfg.describe())
        if self._cap is None:
            delay = self._retry_at - self._clock()
            if delay > 0:
                self._wait(min(delay, self.poll_s))
                return None
            if not self._open():
                return None
        cap = self._cap
        assert cap is not None
        if self.cfg.realtime and not self._pace():
            return None
        if not cap.grab():
            self._end_or_fail("grab")
            return None
        ok, image = cap.retrieve()
        if not ok or image is None:
            self._end_or_fail("retrieve")
            return None
        self._index += 1
        self._seg_frames += 1
        if self.cfg.kind == "file":
            assert self._fps is not None
            t = self._file_offset + (self._seg_frames - 1) / self._fps
        else:
            t = self._clock() - self._t0
        if self._seg_frames == 1:
            self.backoff.reset()
            if self.cfg.realtime:
                self._seg_wall0 = self._clock()
        frame = Frame(image, self._index, t, self._new_segment)
        self._new_segment = False
        return frame

    def skip_behind(self, busy_s: float) -> int:
        """After ``busy_s`` of processing, drop the frames a live source buffered meanwhile.

        Returns how many were skipped (they count as dropped). Files and sources
        with no known frame rate skip nothing here (realtime replays skip in read()).
        """
        if self._cap is None or not self.cfg.skip_to_live or self.cfg.kind == "file" or not self._fps:
            return 0
        n = min(math.floor(busy_s * self._fps) - 1, math.ceil(2 * self._fps))
        skipped = 0
        for _ in range(max(n, 0)):
            if not self._cap.grab():
                self._end_or_fail("grab")
                break
            skipped += 1
            self._index += 1
        self.skipped += skipped
        return skipped

    def close(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            except Exception:
                log.exception("releasing %s failed", self.cfg.describe())
            self._cap = None

    # -- internals ----------------------------------------------------------------------
    def _open(self) -> bool:
        what = self.cfg.describe()
        try:
            cap = self._factory(self.cfg)
            opened = cap.isOpened()
        except Exception as exc:  # an OpenCV/FFmpeg error must not end the camera loop
            log.warning("opening %s raised %s", what, exc)
            cap, opened = None, False
        if cap is None or not opened:
            if cap is not None:
                cap.release()
            self.open_failures += 1
            self._schedule_retry(f"cannot open {what}")
            return False
        self._cap = cap
        self.opens += 1
        self._seg_frames = 0
        self._seg_wall0 = None
        self._new_segment = True
        self._fps = self._source_fps(cap)
        log.info("opened %s (%s fps)", what, f"{self._fps:.2f}" if self._fps else "unknown")
        return True

    def _source_fps(self, cap: VideoSource) -> float | None:
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS))
        except Exception:
            fps = 0.0
        if 0 < fps <= 240:
            return fps
        if self.cfg.kind == "file":
            fallback = self.cfg.fps or DEFAULT_FPS
            log.warning("%s reports no usable frame rate (%s); assuming %.1f", self.cfg.describe(), fps, fallback)
            return fallback
        return self.cfg.fps

    def _pace(self) -> bool:
        """Realtime replay: wait until the next frame is due; skip frames that are late. False: not yet."""
        if self._seg_wall0 is None or self._fps is None:
            return True
        assert self._cap is not None
        period = 1.0 / self._fps
        due = self._seg_wall0 + self._seg_frames * period  # due time of the next frame
        now = self._clock()
        if now < due:
            self._wait(min(due - now, self.poll_s))
            return self._clock() >= due
        late = math.floor((now - due) / period)
        if late >= 1 and self.cfg.skip_to_live:
            for _ in range(late):
                if not self._cap.grab():
                    return True  # let read() see the end
                self._seg_frames += 1
                self._index += 1
                self.skipped += 1
        return True

    def _end_or_fail(self, what: str) -> None:
        if self.cfg.kind == "file" and self._seg_frames > 0:
            self.close()
            if not self.cfg.loop:
                self.ended = True
                log.info("%s: end of file after %d frames", self.cfg.describe(), self._seg_frames)
                raise EndOfSource(self.cfg.describe())
            assert self._fps is not None
            self._file_offset += self._seg_frames / self._fps
            self._retry_at = self._clock()
            log.info("%s: end of file, starting again", self.cfg.describe())
            # Reopened here, within this read: a loop is not a disconnection (health would report the camera
            # disconnected and pause its zones for a moment at every loop). A failed reopen retries with backoff.
            self._open()
            return
        self.read_failures += 1
        self.close()
        self._schedule_retry(f"{what} failed on {self.cfg.describe()}")

    def _schedule_retry(self, why: str) -> None:
        delay = self.backoff.next_delay()
        self._retry_at = self._clock() + delay
        log.warning("%s; retrying in %.1f s (attempt %d)", why, delay, self.backoff.failures)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
