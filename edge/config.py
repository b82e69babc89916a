"""Edge device configuration: one YAML file per device, top-level key ``device:``.

Loaded with :func:`contracts.configfile.load_model`, so every error carries its
file, line and column (``district check-config edge.yaml``). Unknown keys are
rejected: a typo must not silently fall back to a default.

The process-level knobs that are not part of a device's identity (which file
to load, log level, a broker password kept out of the file) live in
:class:`EdgeSettings`, built in :func:`edge.main.main` from the command line
and ``DISTRICT_EDGE_*`` environment variables.

Cameras are not configured here yet: the camera pipeline (``edge/camera/``)
will add its own list of camera configs; until then a ``cameras:`` key is
rejected like any other unknown key.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts import topics
from contracts.configfile import StrictModel
from contracts.messages import Ident
from contracts.site import BayRange, Compartment, CompartmentRange
from edge.camera.camera_config import CameraConfig

#: Modbus allows at most 125 registers per read request.
MAX_REGISTERS_PER_READ = 125
#: A register map holds at most this many points (table at IR 100..).
MAX_POINTS = 65_535 - 100


class DeviceInfo(StrictModel):
    id: Ident
    site_id: Ident
    firmware: Annotated[str, Field(max_length=64)] | None = None


class MqttConfig(StrictModel):
    host: str = "localhost"
    port: Annotated[int, Field(gt=0, lt=65536)] = 1883
    username: str | None = None
    #: Better kept out of the file: DISTRICT_EDGE_MQTT_PASSWORD overrides it.
    password: SecretStr | None = None
    topic_prefix: str = topics.DEFAULT_PREFIX
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    #: Stable client id for the persistent session; default ``edge-{site_id}-{device_id}``.
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    #: Readings published but not yet acknowledged by the broker; the outbox holds the rest.
    max_inflight: Annotated[int, Field(ge=1, le=1000)] = 50
    #: Reconnect backoff: first wait, then doubled up to the maximum.
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0
    #: When a reading may leave the outbox: ``stored`` once the gateway confirms
    #: it stored it (end-to-end, docs/protocol.md "Delivery"); ``broker`` on the
    #: broker's PUBACK (for a site whose gateway does not confirm).
    delivery: Literal["stored", "broker"] = "stored"
    #: ``stored`` delivery: a reading published this long ago and not yet
    #: confirmed is published again (the broker may have lost it).
    confirm_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: ``stored`` delivery: readings published but not yet confirmed, at most.
    max_unconfirmed: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    #: How long the broker keeps the device's session (its subscription to
    #: confirmations, and confirmations queued meanwhile) while it is away.
    session_expiry_s: Annotated[int, Field(ge=0, le=2**32 - 1)] = 7 * 24 * 3600

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_ok(cls, value: str) -> str:
        try:
            return topics.check_prefix(value)
        except topics.TopicError as exc:
            raise ValueError(str(exc)) from None


class OutboxConfig(StrictModel):
    #: SQLite file; keep it on persistent storage (it must survive a reboot).
    path: Path = Path("outbox.sqlite")
    #: Bound on stored readings; when full the oldest are dropped and counted.
    max_messages: Annotated[int, Field(gt=0, le=10_000_000)] = 100_000
    #: SQLite ``synchronous``: ``full`` survives power cuts; ``normal`` only process crashes.
    synchronous: Literal["full", "normal"] = "full"


Parity = Literal["N", "E", "O"]


class _ModbusController(StrictModel):
    port: Annotated[str, Field(min_length=1)]
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    #: Modbus unit (slave) id of the controller on the bus.
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    #: Wait this long for an answer before counting the request as unanswered.
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    #: Every point's state is re-published this often even when unchanged, so
    #: the server can tell fresh from stale.
    refresh_interval_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    #: A controller that has not answered for this long gets its points published as ``unknown``.
    unknown_after_s: Annotated[float, Field(gt=0)] = 60.0

    def point_ids(self) -> list[str]:
        raise NotImplementedError

    @property
    def group_id(self) -> str:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.port} unit {self.unit}"

    @model_validator(mode="after")
    def _points_ok(self) -> _ModbusController:
        ids = self.point_ids()
        if not ids:
            raise ValueError("no points configured")
        if len(ids) > MAX_POINTS:
            raise ValueError(f"{len(ids)} points is more than the register map holds ({MAX_POINTS})")
        dups = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dups:
            raise ValueError(f"duplicate point id(s): {', '.join(dups[:10])}")
        if self.refresh_interval_s < self.poll_interval_s:
            raise ValueError("refresh_interval_s must not be shorter than poll_interval_s")
        return self


class ModbusBayControllerConfig(_ModbusController):
    """A parking-guidance bay controller (register map v1, device type 1)."""

    type: Literal["modbus_bay_controller"]
    lot_id: Ident
    #: Bay ids in register order: a list, or a ``{prefix, count, start, width}`` range.
    bays: list[Ident] | BayRange

    def point_ids(self) -> list[str]:
        return list(self.bays) if isinstance(self.bays, list) else self.bays.ids()

    @property
    def group_id(self) -> str:
        return self.lot_id


class ModbusLockerControllerConfig(_ModbusController):
    """A pickup-locker controller (register map v1, device type 2)."""

    type: Literal["modbus_locker_controller"]
    bank_id: Ident
    #: Compartments in register order: ids, or the site file's compartment
    #: entries (``{id, size}`` or ``{size, count, prefix, start, width}``).
    compartments: Annotated[list[Ident | Compartment | CompartmentRange], Field(min_length=1)]

    def point_ids(self) -> list[str]:
        out: list[str] = []
        for item in self.compartments:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, Compartment):
                out.append(item.id)
            else:
                out.extend(f"{item.prefix}{n:0{item.width}d}" for n in range(item.start, item.start + item.count))
        return out

    @property
    def group_id(self) -> str:
        return self.bank_id


SensorConfig = Annotated[
    ModbusBayControllerConfig | ModbusLockerControllerConfig,
    Field(discriminator="type"),
]


class DeviceConfig(StrictModel):
    device: DeviceInfo
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    #: Status heartbeat period (retained ``status`` topic).
    status_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    sensors: list[SensorConfig] = Field(default_factory=list)
    #: One process per camera; frames never leave it (edge/camera/process.py).
    cameras: list[CameraConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sensors_consistent(self) -> DeviceConfig:
        problems: list[str] = []
        cam_dups = [c for c, n in Counter(cam.id for cam in self.cameras).items() if n > 1]
        if cam_dups:
            problems.append(f"duplicate camera id(s): {', '.join(sorted(cam_dups))}")
        by_port: dict[str, tuple[int, str, int]] = {}
        units: Counter[tuple[str, int]] = Counter()
        points: Counter[tuple[str, str, str]] = Counter()
        for s in self.sensors:
            serial = (s.baudrate, s.parity, s.stopbits)
            seen = by_port.setdefault(s.port, serial)
            if seen != serial:
                problems.append(f"port {s.port}: controllers on one bus need the same baudrate/parity/stopbits")
            units[(s.port, s.unit)] += 1
            for pid in s.point_ids():
                points[(s.type, s.group_id, pid)] += 1
        problems += [f"port {port}: unit {unit} configured {n} times" for (port, unit), n in units.items() if n > 1]
        dup_points = [f"{g}/{p}" for (_, g, p), n in points.items() if n > 1]
        if dup_points:
            problems.append(f"point(s) read by more than one controller: {', '.join(sorted(dup_points)[:10])}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"edge-{self.device.site_id}-{self.device.id}"


class EdgeSettings(BaseSettings):
    """Process settings for ``district edge`` (env prefix ``DISTRICT_EDGE_``)."""

    model_config = SettingsConfigDict(env_prefix="DISTRICT_EDGE_", extra="ignore")

    config: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Overrides ``mqtt.password`` from the device file.
    mqtt_password: SecretStr | None = None
