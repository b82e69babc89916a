"""Edge device configuration: one YAML file per device, top-level key ``device:``.

Loaded with :func:`contracts.configfile.load_model`, so every error carries its
file, line and column (``district check-config edge.yaml``). Unknown keys are
rejected: a typo must not silently fall back to a default.

A file that holds a secret (``mqtt.password`` written into it) is refused if
other users may read it; better, ``mqtt.password_file`` names a ``0600`` file
(what ``district provision`` writes). The process-level knobs that are not
part of a device's identity (which file to load, log level, a broker password
kept out of the file) live in
:class:`EdgeSettings`, built in :func:`edge.main.main` from the command line
and ``DISTRICT_EDGE_*`` environment variables.

Cameras are not configured here yet: the camera pipeline (``edge/camera/``)
will add its own list of camera configs; until then a ``cameras:`` key is
rejected like any other unknown key.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.mqtt_security import MqttSecurity
from common.mqtt_session import MqttProtocol, broker_list, parse_brokers
from contracts import topics
from contracts.configfile import StrictModel
from contracts.messages import Ident
from edge.camera.camera_config import CameraConfig
from edge.sensors import ModbusControllerConfig, sensor_config_type

# The two built-in kinds' config models, still importable from here (tools and
# the field reproductions in ../shared/bugcases import them by this path).
from edge.sensors.bay_controller import ModbusBayControllerConfig as ModbusBayControllerConfig
from edge.sensors.locker_controller import ModbusLockerControllerConfig as ModbusLockerControllerConfig


class DeviceInfo(StrictModel):
    id: Ident
    site_id: Ident
    firmware: Annotated[str, Field(max_length=64)] | None = None


class MqttTlsConfig(StrictModel):
    """TLS to the broker (``docs/security.md``): the agent verifies the broker's certificate against
    ``ca_file`` and its hostname against ``mqtt.host``, and refuses the broker if either fails."""

    #: PEM file of the CA that signed the broker's certificate (the site CA from ``district provision``).
    ca_file: Path
    #: This device's certificate (PEM), when the broker requires client certificates.
    cert_file: Path | None = None
    #: Its private key (PEM); refused if other users may read it (``chmod 600``).
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(StrictModel):
    host: str = "localhost"
    port: Annotated[int, Field(gt=0, lt=65536)] = 1883
    #: Several broker addresses (``host:port``, the nodes of a cluster) instead of ``host``/``port``:
    #: each new connection goes to the next one (common/mqtt_session.py).
    brokers: list[str] = Field(default_factory=list)
    #: MQTT protocol version: ``5``, or ``3.1.1`` for brokers without MQTT 5 (RabbitMQ 3.10, NATS 2.9).
    protocol: MqttProtocol = "5"
    #: The device's broker identity: its device id (the broker's ACL lets a
    #: username publish only under its own id, docs/security.md).
    username: str | None = None
    #: Better kept out of the file: ``password_file``, or DISTRICT_EDGE_MQTT_PASSWORD, which
    #: overrides both. A file holding it is refused if other users may read it.
    password: SecretStr | None = None
    #: A file whose first line is the password (``district provision`` writes one per device, mode 0600).
    password_file: Path | None = None
    #: TLS settings; None: plain MQTT (only for a broker on this machine's loopback).
    tls: MqttTlsConfig | None = None
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
    #: After a reconnect, readings from before it (the backlog) are published at most this many a
    #: second, readings taken since first and unpaced (edge/pacing.py); None: no limit. 200/s drains a
    #: day of a 40-bay controller in seconds while 50 controllers replaying at once stay within what
    #: one gateway takes (docs/scaling.md).
    replay_rate_per_s: Annotated[float, Field(gt=0)] | None = 200.0
    #: Backlog readings the pacer may send at once after a quiet spell (token bucket size).
    replay_burst: Annotated[int, Field(ge=1, le=100_000)] = 200
    #: ``stored`` delivery: backlog readings out (published, unconfirmed) at once, a window clocked by the
    #: gateway's confirmations (edge/pacing.py ``ConfirmWindow``): it starts at ``replay_window_initial``,
    #: grows while confirmations come back within ``replay_target_delay_s`` and halves when they come later,
    #: never below ``replay_window_min``. The target is the lag a live reading may meet behind replays.
    replay_window_initial: Annotated[int, Field(ge=1, le=100_000)] = 8
    replay_window_min: Annotated[int, Field(ge=1, le=100_000)] = 2
    replay_target_delay_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
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

    @field_validator("brokers")
    @classmethod
    def _brokers_ok(cls, value: list[str]) -> list[str]:
        if value:
            parse_brokers(",".join(value))
        return value

    def addresses(self) -> list[tuple[str, int]]:
        """Where to connect, in turn: ``brokers``, else ``host``:``port``."""
        return broker_list(self.host, self.port, ",".join(self.brokers) or None)

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        return self

    @model_validator(mode="after")
    def _window_ok(self) -> MqttConfig:
        if self.replay_window_min > self.replay_window_initial:
            raise ValueError("replay_window_min must not exceed replay_window_initial")
        if self.replay_window_initial > self.max_unconfirmed:
            raise ValueError("replay_window_initial must not exceed max_unconfirmed")
        return self

    def security(self, password: str | None = None) -> MqttSecurity:
        """Credentials and TLS for the client (``password``: an override from the environment).

        Reads ``password_file``; raises :class:`common.mqtt_security.SecretFileError` for a password
        or key file other users may read, :class:`ValueError` for a missing CA or certificate file.
        """
        tls = self.tls
        if password is None and self.password is not None:
            password = self.password.get_secret_value()
        return MqttSecurity.build(
            username=self.username,
            password=password,
            password_file=self.password_file,
            tls=tls is not None,
            ca_file=tls.ca_file if tls else None,
            cert_file=tls.cert_file if tls else None,
            key_file=tls.key_file if tls else None,
        )


class OutboxConfig(StrictModel):
    #: SQLite file; keep it on persistent storage (it must survive a reboot).
    path: Path = Path("outbox.sqlite")
    #: Bound on stored readings; when full the oldest are dropped and counted.
    max_messages: Annotated[int, Field(gt=0, le=10_000_000)] = 100_000
    #: SQLite ``synchronous``: ``full`` survives power cuts; ``normal`` only process crashes.
    synchronous: Literal["full", "normal"] = "full"


if TYPE_CHECKING:
    SensorConfig = ModbusControllerConfig
else:
    #: One ``sensors:`` entry: the union of the sensor kinds' config models, by ``type``, built from the
    #: one table of kinds (``edge.sensors.DRIVERS``; docs/sensor-kinds.md).
    SensorConfig = sensor_config_type()


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
