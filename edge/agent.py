"""The edge agent: the start/stop sequence in one place.

Start: outbox (so nothing read is ever lost) -> MQTT publisher -> sensor buses.
Stop: one :class:`threading.Event` reaches every thread; sensors stop first
(no new readings), then the publisher publishes ``offline``/``shutdown`` and
disconnects, then the outbox closes. Whatever is still pending stays in the
SQLite file and is published after the next start.

Seam for cameras: a camera process would be started after the MQTT publisher
like the sensor buses, write its footfall messages through :meth:`EdgeAgent.emit`
and report its health through ``agent.health.set_camera_provider(...)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from contracts import topics
from contracts.messages import LockerCompartmentState, ParkingBayState, encode
from edge.config import DeviceConfig
from edge.mqtt import DeviceHealth, MqttPublisher
from edge.outbox import Outbox
from edge.sensors import build_buses
from edge.sensors.modbus import ModbusBus, PymodbusReader, ReaderFactory

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0


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
        self.health = DeviceHealth()
        self._password = mqtt_password
        self._reader_factory = reader_factory
        self.outbox: Outbox | None = None
        self.publisher: MqttPublisher | None = None
        self.buses: list[ModbusBus] = []
        self._topics: dict[str, str] = {}
        self._started = time.monotonic()
        self.emit_errors = 0

    def topic_for(self, kind: str) -> str:
        topic = self._topics.get(kind)
        if topic is None:
            d = self.config.device
            topic = self._topics[kind] = topics.build(self.config.mqtt.topic_prefix, d.site_id, d.id, kind)
        return topic

    def emit(self, messages: Sequence[ParkingBayState | LockerCompartmentState]) -> None:
        """Store readings in the outbox (the publisher sends them when it can)."""
        if self.outbox is None:
            raise RuntimeError("agent not started")
        try:
            self.outbox.put_many([(self.topic_for(m.kind), encode(m)) for m in messages])
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
        log.info(
            "edge agent %s/%s started: %d sensor controller(s) on %d bus(es), broker %s:%d",
            c.device.site_id,
            c.device.id,
            len(c.sensors),
            len(self.buses),
            c.mqtt.host,
            c.mqtt.port,
        )

    def stop(self) -> None:
        """Signal every thread, wait for them in reverse start order, close the outbox."""
        self.stop_event.set()
        for bus in self.buses:
            bus.join(JOIN_TIMEOUT_S)
        if self.publisher is not None:
            self.publisher.join(JOIN_TIMEOUT_S)
        if self.outbox is not None:
            pending = self.outbox.pending
            self.outbox.close()
            log.info("edge agent stopped; %d reading(s) kept in the outbox", pending)

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
