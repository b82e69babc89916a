"""The camera process: one OS process per camera, frames never leave it.

    capture -> privacy mask -> health probe -> footfall engine -> zones
                                   |                                |
                                   +-- CameraHealth   FootfallCount-+--> bounded out queue

:func:`run_camera` is the loop that runs inside the process (Frigate-style).
What it puts on the out queue is checked at the boundary: only instances of
:data:`ALLOWED_TYPES` (small pydantic contract models, exact types, no
subclasses), re-validated from their JSON form, each under
:data:`MAX_ITEM_BYTES`. Anything else raises :class:`PrivacyViolation` in the
camera process: a frame, a crop or an image-derived feature cannot be queued,
by construction. A full queue drops the item and counts it; the camera loop
never blocks on its consumer.

:class:`CameraProcess` is the handle the agent uses (start / stop / is_alive);
it restarts nothing by itself. :class:`CameraPump` is the agent-side reader of
the shared queue: footfall messages go to the agent's ``emit``, health
snapshots are kept per camera for the status heartbeat
(``HealthReporter.set_camera_provider(pump.health)``).

``python -m edge.camera.process CAMERA.yaml`` runs one camera and prints each
message as a JSON line (``--check`` only validates the file).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import multiprocessing.process
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.runtime import watch_parent
from contracts.configfile import ConfigError, load_model
from contracts.messages import CameraHealth, FootfallCount, utcnow
from edge.camera.camera_config import CameraConfig
from edge.camera.capture import Capture, CaptureFactory, EndOfSource, open_source
from edge.camera.config import EngineConfig, PersonModelConfig, PrivacyConfig
from edge.camera.count import CrossingEvent
from edge.camera.engine import FootfallEngine
from edge.camera.health import FrameProbe, HealthTracker
from edge.camera.lines import CountingLine
from edge.camera.privacy import PrivacyMask
from edge.camera.yolox import load_session
from edge.camera.zones import ZoneCounter

log = logging.getLogger(__name__)

#: The only types that may leave a camera process.
ALLOWED_TYPES: tuple[type[BaseModel], ...] = (FootfallCount, CameraHealth)
#: No allowed message comes near this (a 64-line FootfallCount is ~5 KB).
MAX_ITEM_BYTES = 8 * 1024
#: Exit status of a camera process whose configuration cannot be used.
EXIT_CONFIG = 2

CameraMessage = FootfallCount | CameraHealth


class PrivacyViolation(TypeError):
    """Something other than an allowed small contract message was about to leave the camera process."""


class QueueLike(Protocol):
    def put_nowait(self, item: Any) -> None: ...


class StopLike(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Engine(Protocol):
    def process(self, frame_bgr: np.ndarray, frame_index: int, t_seconds: float) -> list[CrossingEvent]: ...

    def finish(self) -> list[CrossingEvent]: ...


EngineFactory = Callable[[list[CountingLine], EngineConfig], Engine]


def _default_engine(lines: list[CountingLine], cfg: EngineConfig) -> Engine:
    return FootfallEngine(lines, cfg)


def checked(item: object) -> CameraMessage:
    """The privacy boundary: return a clean copy of an allowed message, or raise PrivacyViolation."""
    kind = type(item)
    if kind not in ALLOWED_TYPES:
        raise PrivacyViolation(f"{kind.__module__}.{kind.__qualname__} may not leave the camera process")
    assert isinstance(item, FootfallCount | CameraHealth)
    try:
        data = item.model_dump_json(warnings="error")
    except PydanticSerializationError as exc:
        raise PrivacyViolation(f"{kind.__name__} carries a value that is not plain data: {exc}") from None
    if len(data) > MAX_ITEM_BYTES:
        raise PrivacyViolation(f"{kind.__name__} is {len(data)} bytes, more than {MAX_ITEM_BYTES}")
    try:
        clean: CameraMessage = type(item).model_validate_json(data)
        return clean
    except ValidationError as exc:
        raise PrivacyViolation(f"{kind.__name__} does not survive its own validation: {exc}") from None


class Emitter:
    """Puts checked messages on the out queue without ever blocking; counts what it drops."""

    def __init__(self, out: QueueLike, camera_id: str) -> None:
        self.out = out
        self.camera_id = camera_id
        self.sent = 0
        self.dropped = 0

    def put(self, item: object) -> bool:
        clean = checked(item)  # raises: a programming error must stop the camera, not leak
        try:
            self.out.put_nowait(clean)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("camera %s: out queue full, %d message(s) dropped so far", self.camera_id, self.dropped)
            return False
        self.sent += 1
        return True


def run_camera(
    config: CameraConfig,
    out: QueueLike,
    stop: StopLike,
    *,
    device_id: str,
    capture_factory: CaptureFactory = open_source,
    engine_factory: EngineFactory = _default_engine,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], datetime] = utcnow,
) -> int:
    """The camera loop. Returns when ``stop`` is set (0), a non-looping file ends (0), or the
    configuration cannot be used (EXIT_CONFIG). Puts only FootfallCount and CameraHealth on ``out``."""
    cam = config.id
    try:
        _, line_zones = config.resolve_lines()
        mask = PrivacyMask(config.privacy_polygons)
    except (OSError, ValueError) as exc:
        log.error("camera %s: unusable configuration: %s", cam, exc)
        return EXIT_CONFIG
    cv2.setNumThreads(config.cv_threads)
    # The mask is applied once, here, before health checks and the engine see the frame.
    engine_cfg = config.engine.model_copy(update={"privacy": PrivacyConfig()})
    emit = Emitter(out, cam)
    zones = ZoneCounter(
        line_zones,
        device_id=device_id,
        camera_id=cam,
        interval_s=config.interval_s,
        reset_at=config.occupancy_reset,
        timezone=config.timezone,
    )
    health = HealthTracker(cam, config.health, now=clock())
    probe = FrameProbe(config.health.frozen_mad)
    probed_at: float | None = None  # media time of the last probe
    luma, mad = 0.0, None
    capture = Capture(config.source, factory=capture_factory, clock=clock, wait=stop.wait)
    engine: Engine | None = None
    engine_errors = 0
    if isinstance(engine_cfg.detector, PersonModelConfig):
        # Load the person model before the first frame, not on it: a live stream must not stall on start-up.
        try:
            load_session(engine_cfg.detector.model_path)
        except (OSError, RuntimeError) as exc:
            log.error("camera %s: cannot load the person detector: %s", cam, exc)
            return EXIT_CONFIG
    busy_total = 0.0
    log.info(
        "camera %s: starting on %s (device %s, interval %d s)",
        cam,
        config.source.describe(),
        device_id,
        config.interval_s,
    )
    try:
        while not stop.is_set():
            try:
                frame = capture.read()
            except EndOfSource:
                break
            now = clock()
            events: list[CrossingEvent] = []
            if frame is not None:
                image = mask.apply(frame.image)
                h, w = image.shape[:2]
                if frame.new_segment or engine is None:
                    if engine is not None:
                        events += engine.finish()  # crossings the old stream's tracks still held
                    try:
                        lines, _ = config.resolve_lines((w, h))
                        engine = engine_factory(lines, engine_cfg)
                    except (OSError, ValueError, RuntimeError) as exc:
                        log.error("camera %s: cannot build the engine for %dx%d: %s", cam, w, h, exc)
                        return EXIT_CONFIG
                    probe.reset()
                    probed_at = None
                if probed_at is None or not 0 <= frame.t - probed_at < config.health.probe_interval_s:
                    luma, mad = probe.measure(image, mask.keep_mask(w, h) if mask.active else None)
                    probed_at = frame.t
                health.frame(now, frame.t, luma, mad)  # between probes: the last probe's reading
                t0 = clock()
                try:
                    events = engine.process(image, frame.index, frame.t)
                except Exception:  # one bad frame must not end the camera
                    engine_errors += 1
                    if engine_errors == 1 or engine_errors % 100 == 0:
                        log.exception(
                            "camera %s: engine failed on frame %d (%d failures)", cam, frame.index, engine_errors
                        )
                busy = clock() - t0
                busy_total += busy
                capture.skip_behind(busy)
                del image, frame
            health.set_connected(capture.connected, now)
            health.dropped_frames = capture.read_failures + capture.skipped
            wall = wall_clock()
            messages: list[FootfallCount] = []
            if health.state(now) == "ok":
                zones.resume(wall)
            elif zones.watching:
                messages += zones.pause(wall)
            messages += zones.update(wall, events)
            for m in messages:
                emit.put(m)
            if health.report_due(now):
                emit.put(health.snapshot(now))
    finally:
        try:
            if engine is not None:
                try:
                    for m in zones.update(wall_clock(), engine.finish()):
                        emit.put(m)
                except Exception:  # the held crossings are lost, the shutdown goes on
                    log.exception("camera %s: the engine failed to hand over its held crossings", cam)
            for m in zones.pause(wall_clock()):
                emit.put(m)
        finally:
            capture.close()
            log.info(
                "camera %s: stopped after %d frames (%.1f s in the engine), %d dropped frames, %d reconnects, "
                "%d engine errors, %d message(s) sent, %d dropped at the queue",
                cam,
                health.frames,
                busy_total,
                health.dropped_frames,
                max(capture.opens - 1, 0),
                engine_errors,
                emit.sent,
                emit.dropped,
            )
    return 0


#: After its agent has gone, a camera process has this long (seconds) to stop by itself, then it exits hard.
ORPHAN_GRACE_S = 5.0
#: Exit status of a camera process that had to exit hard because its agent had gone.
EXIT_ORPHANED = 3
#: How long (seconds) one wait on the cross-process stop event lasts before the watch is looked at again.
_WAIT_SLICE_S = 0.5


class _ParentWatch:
    """The stop event, also set when the agent that started this process has gone (SIGKILL, crash).

    A :func:`common.runtime.watch_parent` thread watches ``parent_pid``
    (default: the current parent), not the camera loop, so the process ends
    even while the loop is blocked in a read. When the agent has gone,
    nobody reads ``out`` any more, so the process does not wait at exit to
    flush it (``cancel_join_thread``), and if the loop has not ended within
    ``grace_s`` seconds (a source stuck in FFmpeg) the process exits with
    :data:`EXIT_ORPHANED`. ``watch=False`` starts no thread (for tests).
    """

    def __init__(
        self,
        stop: StopLike,
        out: Any = None,
        *,
        parent_pid: int | None = None,
        grace_s: float = ORPHAN_GRACE_S,
        watch: bool = True,
        exit_hard: Callable[[int], None] = os._exit,
    ) -> None:
        self._stop = stop
        self._out = out
        self._grace_s = grace_s
        self._exit_hard = exit_hard
        self.parent_gone = threading.Event()
        self.parent_pid = os.getppid() if parent_pid is None else parent_pid
        if watch:
            watch_parent(self.on_parent_gone, self.parent_pid, name="agent-watch")

    def on_parent_gone(self) -> None:
        """Stop the camera loop, stop waiting on the queue, and exit hard after the grace time."""
        self.parent_gone.set()
        cancel = getattr(self._out, "cancel_join_thread", None)
        if cancel is not None:
            cancel()
        timer = threading.Timer(self._grace_s, self._exit_hard, args=(EXIT_ORPHANED,))
        timer.daemon = True
        timer.start()

    def is_set(self) -> bool:
        return self.parent_gone.is_set() or self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Like ``Event.wait``: True as soon as the stop is set or the agent has gone, False after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.parent_gone.is_set():
            left = _WAIT_SLICE_S if deadline is None else min(_WAIT_SLICE_S, deadline - time.monotonic())
            if left <= 0:
                return False
            if self._stop.wait(left):
                return True
        return True


def _child_main(
    config: CameraConfig, device_id: str, out: QueueLike, stop: StopLike, log_level: int, agent_pid: int | None
) -> None:
    """Entry point of the camera process (spawned: imports from scratch, nothing inherited)."""
    # Ctrl-C, and the SIGTERM that systemd, ``timeout`` or a shell send to the whole process group, reach the
    # agent, which sets the stop event: the camera then flushes its interval. Dying of SIGTERM inside the
    # stop event's wait would leave the agent blocked for ever in ``Event.set()`` (a multiprocessing
    # Condition waits for every sleeper's acknowledgement, and a dead one never gives it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=log_level, format=f"%(asctime)s %(levelname)s camera[{config.id}] %(name)s: %(message)s"
        )
    # The agent's pid from the agent, so one that died before this line is seen at once; a
    # forkserver child's parent is the fork server (which exits with the agent): watch that.
    code = run_camera(config, out, _ParentWatch(stop, out, parent_pid=agent_pid), device_id=device_id)
    if code:
        sys.exit(code)


StartMethod = Literal["spawn", "forkserver"]


class CameraProcess:
    """Handle of one camera process. Restarts nothing by itself: the agent decides.

    ``out`` is the (bounded) queue the process writes to; share one between
    several cameras by passing it in (create it with :meth:`make_queue`).
    """

    def __init__(
        self,
        config: CameraConfig,
        *,
        device_id: str,
        out: Any = None,
        queue_size: int = 256,
        start_method: StartMethod = "spawn",
        log_level: int = logging.INFO,
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.log_level = log_level
        self._ctx: Any = multiprocessing.get_context(start_method)
        self._own_queue = out is None
        self.out = self._ctx.Queue(maxsize=queue_size) if out is None else out
        self._stop = self._ctx.Event()
        self._proc: multiprocessing.process.BaseProcess | None = None

    @staticmethod
    def make_queue(maxsize: int = 1024, start_method: StartMethod = "spawn") -> Any:
        return multiprocessing.get_context(start_method).Queue(maxsize=maxsize)

    @property
    def camera_id(self) -> str:
        return self.config.id

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def exitcode(self) -> int | None:
        return None if self._proc is None else self._proc.exitcode

    def start(self) -> None:
        """Start the process (again, after it ended: a fresh process with the same queue)."""
        if self.is_alive():
            raise RuntimeError(f"camera {self.camera_id} is already running")
        self._stop.clear()
        agent_pid = os.getpid() if self._ctx.get_start_method() == "spawn" else None
        self._proc = self._ctx.Process(
            target=_child_main,
            args=(self.config, self.device_id, self.out, self._stop, self.log_level, agent_pid),
            name=f"camera-{self.camera_id}",
            daemon=True,
        )
        self._proc.start()
        log.info("camera %s: process %d started", self.camera_id, self._proc.pid)

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def request_stop(self) -> None:
        """Set the stop event without waiting (stop several cameras in parallel, then :meth:`stop` each)."""
        self._set_stop()

    def _set_stop(self) -> None:
        # Only for a live process: one that died waiting on the event (SIGKILL, the OOM killer) left a
        # sleeper that ``Event.set()`` would wait for for ever.
        if self._proc is None or self._proc.is_alive():
            self._stop.set()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Set the stop event, wait up to ``timeout``, then kill. Returns the exit code.

        The process ignores SIGTERM (see ``_child_main``), so a camera that does not stop in time is killed.
        """
        self._set_stop()
        proc = self._proc
        if proc is None:
            return None
        proc.join(timeout)
        if proc.is_alive():
            log.warning("camera %s: did not stop within %.0f s; killing it", self.camera_id, timeout)
            proc.kill()
            proc.join(2.0)
        return proc.exitcode

    def close(self) -> None:
        """Stop, and release the queue if this handle created it."""
        self.stop()
        if self._proc is not None and not self._proc.is_alive():
            self._proc.close()
            self._proc = None
        if self._own_queue:
            self.out.close()
            self.out.join_thread()


def stop_all(processes: Sequence[CameraProcess], timeout: float = 10.0) -> None:
    """Stop every camera in parallel: one stop signal to all, then wait for each."""
    for p in processes:
        p.request_stop()
    deadline = time.monotonic() + timeout
    for p in processes:
        p.stop(max(0.1, deadline - time.monotonic()))


class CameraPump:
    """Agent side: drains a camera queue in a thread.

    FootfallCount messages go to ``emit`` (the agent's outbox); the latest
    CameraHealth per camera is kept for the status heartbeat. :meth:`health`
    reports a camera whose process is dead, or whose snapshots stopped
    coming, as ``disconnected`` (a snapshot carries no time of its own).
    """

    def __init__(
        self,
        out: Any,
        cameras: Sequence[CameraProcess],
        emit: Callable[[list[FootfallCount]], None],
        stop: threading.Event,
        *,
        stale_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.cameras = list(cameras)
        self._emit = emit
        self._stop = stop
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[CameraHealth, float]] = {}
        self._thread: threading.Thread | None = None
        self.received = 0
        self.errors = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="camera-pump", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def drain_once(self, timeout: float = 0.5) -> bool:
        """Handle at most one item; False if none came within ``timeout``."""
        try:
            item = self.out.get(timeout=timeout)
        except queue.Empty:
            return False
        self.received += 1
        try:
            if isinstance(item, CameraHealth):
                with self._lock:
                    self._latest[item.camera_id] = (item, self._clock())
            elif isinstance(item, FootfallCount):
                self._emit([item])
            else:  # pragma: no cover - the camera side makes this impossible
                raise TypeError(f"unexpected {type(item).__name__} from a camera")
        except Exception:
            self.errors += 1
            log.exception("camera pump: handling %s failed", type(item).__name__)
        return True

    def health(self) -> list[CameraHealth]:
        """One CameraHealth per configured camera (the HealthReporter camera provider)."""
        now = self._clock()
        out: list[CameraHealth] = []
        with self._lock:
            latest = dict(self._latest)
        for cam in self.cameras:
            snap, at = latest.get(cam.camera_id, (None, now))
            if snap is None:
                state = "starting" if cam.is_alive() else "disconnected"
                out.append(CameraHealth(camera_id=cam.camera_id, state=state, fps=0.0, dropped_frames=0))
                continue
            waited = now - at
            age = None if snap.last_frame_age_s is None else snap.last_frame_age_s + waited
            if not cam.is_alive() or waited > self.stale_after_s:
                snap = snap.model_copy(update={"state": "disconnected", "fps": 0.0})
            out.append(snap.model_copy(update={"last_frame_age_s": None if age is None else round(age, 3)}))
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.drain_once()
            except Exception:  # the queue itself broke (a child killed mid-write): log, go on
                self.errors += 1
                log.exception("camera pump: reading the queue failed")
                self._stop.wait(1.0)
        while self.drain_once(timeout=0.05):  # what the cameras flushed while stopping
            pass


# -- command line ----------------------------------------------------------------------------
class CameraSettings(BaseSettings):
    """``python -m edge.camera.process`` settings (env prefix ``DISTRICT_CAMERA_``)."""

    model_config = SettingsConfigDict(env_prefix="DISTRICT_CAMERA_", extra="ignore")

    config: Path | None = None
    device_id: str = "camera-test"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    queue_size: int = 256


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="district camera", description="Run one camera process; print its messages.")
    p.add_argument("config", nargs="?", help="camera YAML (CameraConfig); env DISTRICT_CAMERA_CONFIG")
    p.add_argument("--device-id", help="device id stamped on footfall messages; env DISTRICT_CAMERA_DEVICE_ID")
    p.add_argument("--check", action="store_true", help="validate the file (and its lines) and exit")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = p.parse_args(argv)
    overrides = {
        k: v
        for k, v in (("config", args.config), ("device_id", args.device_id), ("log_level", args.log_level))
        if v is not None
    }
    settings = CameraSettings(**overrides)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.config is None:
        p.error("a camera config file is required")
    try:
        config = load_model(settings.config, CameraConfig)
        config.resolve_lines()
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, ValueError) as exc:
        print(f"{settings.config}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        print(f"{settings.config}: ok")
        return 0
    cam = CameraProcess(
        config,
        device_id=settings.device_id,
        queue_size=settings.queue_size,
        log_level=logging.getLevelName(settings.log_level),
    )
    cam.start()
    try:
        while cam.is_alive() or not _empty(cam.out):
            try:
                item = cam.out.get(timeout=0.5)
            except queue.Empty:
                continue
            print(item.model_dump_json(exclude_none=True), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        code = cam.stop()
        while not _empty(cam.out):
            print(cam.out.get().model_dump_json(exclude_none=True), flush=True)
        cam.close()
    return code or 0


def _empty(q: Any) -> bool:
    try:
        return bool(q.empty())
    except (OSError, ValueError):
        return True


if __name__ == "__main__":
    sys.exit(main())
