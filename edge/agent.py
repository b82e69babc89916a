"""The edge agent: the start/stop sequence in one place.

Start: outbox (so nothing read is ever lost) -> MQTT publisher -> sensor buses.
Stop: one :class:`threading.Event` reaches every thread; sensors stop first
(no new readings), then the publisher publishes ``offline``/``shutdown`` and
disconnects, then the outbox closes. Whatever is still pending stays in the
SQLite file and is published after the next start.

Cameras: one process each (frames never leave it), started after the
publisher like the sensor buses. Their footfall counts come back over one
bounded queue, drained by a :class:`CameraPump` into :meth:`EdgeAgent.emit`;
their health goes into the status heartbeat. A camera process that dies is
restarted with backoff; one that ended cleanly (a file source) or refused its
configuration is left alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from common.retry import Backoff
from contracts import topics
from contracts.messages import FootfallCount, LockerCompartmentState, ParkingBayState, encode
from edge.camera.process import EXIT_CONFIG, CameraProcess, CameraPump, stop_all
from edge.config import DeviceConfig
from edge.mqtt import HealthReporter, MqttPublisher
from edge.outbox import Outbox
from edge.sensors import ModbusBus, PymodbusReader, ReaderFactory, build_buses

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0


def _stamper(message: ParkingBayState | LockerCompartmentState | FootfallCount) -> Callable[[str, int], bytes]:
    def stamp(epoch: str, seq: int) -> bytes:
        return encode(message.model_copy(update={"epoch": epoch, "seq": seq}))

    return stamp


class EdgeAgent:
    def __init__(
        self,
        config: DeviceConfig,
        *,
        mqtt_password: str | None = None,
        reader_factory: ReaderFactory = PymodbusReader,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.stop_event = stop or threading.Event()
        self.health = HealthReporter()
        self._password = mqtt_password
        self._reader_factory = reader_factory
        self.outbox: Outbox | None = None
        self.publisher: MqttPublisher | None = None
        self.buses: list[ModbusBus] = []
        self.cameras: list[CameraProcess] = []
        self.pump: CameraPump | None = None
        self._camera_watch: threading.Thread | None = None
        self.camera_restarts = 0
        self._topics: dict[str, str] = {}
        self._started = time.monotonic()
        self.emit_errors = 0

    def topic_for(self, kind: str) -> str:
        topic = self._topics.get(kind)
        if topic is None:
            d = self.config.device
            topic = self._topics[kind] = topics.build(self.config.mqtt.topic_prefix, d.site_id, d.id, kind)
        return topic

    def emit(self, messages: Sequence[ParkingBayState | LockerCompartmentState | FootfallCount]) -> None:
        """Store readings in the outbox (the publisher sends them when it can).

        Each reading is numbered there: ``epoch`` and ``seq`` (the outbox row)
        are set on the message before it is encoded, once, so every re-send
        carries the very same bytes.
        """
        if self.outbox is None:
            raise RuntimeError("agent not started")
        try:
            self.outbox.put_readings([(self.topic_for(m.kind), _stamper(m)) for m in messages])
        except Exception:
            # A full disk must not stop the sensor loop; the next refresh re-sends every state.
            self.emit_errors += len(messages)
            log.exception("outbox: could not store %d reading(s); %d lost so far", len(messages), self.emit_errors)

    def start(self) -> None:
        c = self.config
        self.outbox = Outbox(c.outbox.path, c.outbox.max_messages, synchronous=c.outbox.synchronous)
        self.publisher = MqttPublisher(
            c, self.outbox, self.health, self.stop_event, password=self._password, started=self._started
        )
        self.publisher.start()
        self.buses = build_buses(
            c.sensors,
            device_id=c.device.id,
            emit=self.emit,
            health=self.health,
            stop=self.stop_event,
            reader_factory=self._reader_factory,
        )
        for bus in self.buses:
            bus.start()
        self._start_cameras()
        log.info(
            "edge agent %s/%s started: %d sensor controller(s) on %d bus(es), %d camera(s), broker %s:%d",
            c.device.site_id,
            c.device.id,
            len(c.sensors),
            len(self.buses),
            len(self.cameras),
            c.mqtt.host,
            c.mqtt.port,
        )

    def stop(self) -> None:
        """Signal every thread, wait for them in reverse start order, close the outbox."""
        self.stop_event.set()
        if self._camera_watch is not None:
            self._camera_watch.join(JOIN_TIMEOUT_S)
        stop_all(self.cameras, JOIN_TIMEOUT_S)
        if self.pump is not None:
            # Counts the cameras flushed on stop reach the outbox before it closes.
            while self.pump.drain_once(timeout=0.2):
                pass
            self.pump.join(JOIN_TIMEOUT_S)
        for bus in self.buses:
            bus.join(JOIN_TIMEOUT_S)
        if self.publisher is not None:
            self.publisher.wake()  # it may be asleep for up to IDLE_WAIT_S
            self.publisher.join(JOIN_TIMEOUT_S)
        if self.outbox is not None:
            pending = self.outbox.pending
            self.outbox.close()
            log.info("edge agent stopped; %d reading(s) kept in the outbox", pending)

    def _start_cameras(self) -> None:
        if not self.config.cameras:
            return
        out = CameraProcess.make_queue()
        level = logging.getLogger().getEffectiveLevel()
        self.cameras = [
            CameraProcess(cfg, device_id=self.config.device.id, out=out, log_level=level) for cfg in self.config.cameras
        ]
        self.pump = CameraPump(out, self.cameras, self.emit, self.stop_event)
        self.health.set_camera_provider(self.pump.health)
        self.pump.start()
        for cam in self.cameras:
            cam.start()
        self._camera_watch = threading.Thread(target=self._watch_cameras, name="camera-watch", daemon=True)
        self._camera_watch.start()

    def _watch_cameras(self) -> None:
        """Restart crashed camera processes with backoff (like systemd's Restart=on-failure)."""
        restart_at: dict[str, float] = {}
        # 2, 4, 8, ... 60 s, no jitter; a process that ran a minute starts it again.
        backoff = {cam.camera_id: Backoff(2.0, 60.0) for cam in self.cameras}
        started = {cam.camera_id: time.monotonic() for cam in self.cameras}
        while not self.stop_event.wait(1.0):
            now = time.monotonic()
            for cam in self.cameras:
                cid = cam.camera_id
                if cam.is_alive():
                    if now - started[cid] > 60:
                        backoff[cid].reset()  # it ran a minute: forget earlier failures
                    continue
                if cam.exitcode in (0, EXIT_CONFIG):
                    continue  # a file that ended, or a config it refused: a restart will not help
                if cid not in restart_at:
                    delay = backoff[cid].next_delay()
                    restart_at[cid] = now + delay
                    log.warning("camera %s exited with %s; restarting in %.0f s", cid, cam.exitcode, delay)
                elif now >= restart_at[cid]:
                    del restart_at[cid]
                    try:
                        cam.start()
                    except Exception:
                        log.exception("camera %s: restart failed", cid)
                    else:
                        started[cid] = now
                        self.camera_restarts += 1

    def run(self) -> None:
        """Start, block until the stop event is set, stop."""
        self.start()
        try:
            self.stop_event.wait()
        finally:
            self.stop()

    def __enter__(self) -> EdgeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
