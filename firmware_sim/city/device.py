"""One simulated device that publishes MQTT itself, the way a real edge agent does.

A :class:`SimDevice` is an edge agent without sensors: readings go into its
own :class:`edge.outbox.Outbox` (SQLite, one file per device) numbered by
``epoch``/``seq``, and the edge's own publisher (:class:`edge.mqtt.MqttPublisher`,
one thread and one MQTT connection per device, the device id as username)
sends them and deletes each only when the gateway's ``stored`` confirmation
names it. So re-sends after an outage carry the same bytes and the store stays
idempotent, exactly as on a Pi.

What the simulation adds (:class:`SimPublisher`, a thin subclass):

* ``block()``/``unblock()``: the network is gone (partition, power off): the
  live connection is cut without a DISCONNECT (the broker publishes the last
  will) and no new one is tried until unblocked; then it connects at once
  (every blocked device at the same moment: the burst after a power cut);
* ``clock_offset_s``: the device's clock error, applied to every
  ``observed_at`` it stamps, its status included;
* ``battery_pct``: reported in the status heartbeat;
* ``publish_raw``: garbage on the device's own topics, outside the outbox
  (a real firmware bug would not keep garbage for re-sending either).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from contracts import topics
from contracts.messages import DeviceStatus, FootfallCount, LockerCompartmentState, ParkingBayState, encode
from edge.config import DeviceConfig
from edge.mqtt import HealthReporter, MqttPublisher
from edge.outbox import Outbox

log = logging.getLogger(__name__)

Reading = ParkingBayState | LockerCompartmentState | FootfallCount


class SimPublisher(MqttPublisher):
    """:class:`edge.mqtt.MqttPublisher` with a network switch, a clock error and a battery."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock_offset_s = 0.0
        self.battery_pct: float | None = None
        self._open = threading.Event()
        self._open.set()
        self._client: mqtt.Client | None = None

    # -- the network switch -------------------------------------------------------------------
    @property
    def blocked(self) -> bool:
        return not self._open.is_set()

    def block(self) -> None:
        """Cut the connection as a pulled cable would (no DISCONNECT) and stay offline."""
        self._open.clear()
        client = self._client
        sock = client.socket() if client is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def unblock(self) -> None:
        self._open.set()

    def _new_client(self) -> mqtt.Client:
        client = super()._new_client()
        self._client = client
        return client

    def _one_connection(self) -> bool:
        while not self._open.is_set():
            if self._stop.wait(0.2):
                return False
        return super()._one_connection()

    # -- what the device says about itself ------------------------------------------------------
    def _status(self, state: str, reason: str | None, cameras: Any = None) -> DeviceStatus:
        status = super()._status(state, reason, cameras)
        update: dict[str, Any] = {"observed_at": device_now(self.clock_offset_s)}
        if self.battery_pct is not None:
            update["battery_pct"] = round(max(0.0, min(100.0, self.battery_pct)), 1)
        return status.model_copy(update=update)

    def publish_raw(self, kind: str, payload: bytes) -> bool:
        """Publish ``payload`` as-is on this device's ``kind`` topic (QoS 0); False when not connected."""
        client = self._client
        if client is None or not self.connected.is_set():
            return False
        d = self.config.device
        topic = topics.build(self.config.mqtt.topic_prefix, d.site_id, d.id, kind)
        return client.publish(topic, payload, qos=0).rc == mqtt.MQTT_ERR_SUCCESS


def device_now(offset_s: float = 0.0) -> datetime:
    """The device's clock: real UTC time plus its error."""
    return datetime.fromtimestamp(time.time() + offset_s, UTC)


def _stamper(message: Reading) -> Any:
    def stamp(epoch: str, seq: int) -> bytes:
        return encode(message.model_copy(update={"epoch": epoch, "seq": seq}))

    return stamp


class SimDevice:
    """Outbox + publisher of one device; ``emit`` is what its sensors would call."""

    def __init__(self, config: DeviceConfig, kind: str) -> None:
        self.config = config
        self.id = config.device.id
        self.kind = kind
        self.stop_event = threading.Event()
        self.health = HealthReporter()
        self.outbox = Outbox(config.outbox.path, config.outbox.max_messages, synchronous=config.outbox.synchronous)
        self.publisher = SimPublisher(config, self.outbox, self.health, self.stop_event)
        #: False while the device is off (dropout, power cut): it produces nothing.
        self.powered = True
        self.emit_errors = 0
        self._topics: dict[str, str] = {}

    @property
    def clock_offset_s(self) -> float:
        return self.publisher.clock_offset_s

    def now(self) -> datetime:
        return device_now(self.publisher.clock_offset_s)

    def topic_for(self, kind: str) -> str:
        topic = self._topics.get(kind)
        if topic is None:
            d = self.config.device
            topic = self._topics[kind] = topics.build(self.config.mqtt.topic_prefix, d.site_id, d.id, kind)
        return topic

    def emit(self, messages: Sequence[Reading]) -> int:
        """Put readings in the outbox (numbered there); returns how many were stored."""
        if not messages:
            return 0
        try:
            self.outbox.put_readings([(self.topic_for(m.kind), _stamper(m)) for m in messages])
        except Exception:
            self.emit_errors += len(messages)
            log.exception("%s: could not store %d reading(s)", self.id, len(messages))
            return 0
        return len(messages)

    def start(self) -> None:
        self.publisher.start()

    def signal_stop(self) -> None:
        self.stop_event.set()
        self.publisher.wake()

    def join(self, timeout: float = 10.0) -> None:
        self.publisher.join(timeout)
        self.outbox.close()


def device_config(
    device_id: str,
    site_id: str,
    *,
    mqtt_section: dict[str, Any],
    outbox_dir: Path,
    status_interval_s: float = 30.0,
) -> DeviceConfig:
    """The edge configuration a simulated device runs with (its own identity, its own outbox file)."""
    return DeviceConfig.model_validate(
        {
            "device": {"id": device_id, "site_id": site_id, "firmware": "firmware_sim.city"},
            "mqtt": mqtt_section,
            "outbox": {"path": str(outbox_dir / f"{device_id}.sqlite"), "synchronous": "normal"},
            "status_interval_s": status_interval_s,
        }
    )
