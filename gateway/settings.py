"""Gateway settings: one pydantic-settings class, built in ``main()`` and passed down.

Every field can be set from the environment with the ``DISTRICT_GATEWAY_``
prefix, e.g. ``DISTRICT_GATEWAY_MQTT_HOST=broker.local``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.mqtt_security import MqttClientFields
from contracts import topics

#: The stores ``sinks`` may name (gateway/sink_fanout.py: build_sink).
SINK_NAMES = ("influxdb", "victoriametrics")


class GatewaySettings(BaseSettings, MqttClientFields):
    """Broker credentials and TLS (``mqtt_username``, ``mqtt_password_file``, ``mqtt_ca_file``, ...) come
    from :class:`common.mqtt_security.MqttClientFields`, shared with the server."""

    model_config = SettingsConfigDict(
        env_prefix="DISTRICT_GATEWAY_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    # --- MQTT -------------------------------------------------------------
    mqtt_host: str = "127.0.0.1"
    mqtt_port: Annotated[int, Field(gt=0, lt=65536)] = 1883
    #: Stable on purpose: the broker keeps the gateway's session (its
    #: subscription and every unacknowledged message) under this id.
    mqtt_client_id: Annotated[str, Field(min_length=1, max_length=64)] = "district-gateway"
    mqtt_keepalive_s: Annotated[int, Field(ge=5, le=65535)] = 30
    #: How long the broker keeps the session while the gateway is away (MQTT 5; over 3.1.1 the
    #: broker's own setting applies, docs/protocol.md "MQTT 3.1.1 and 5").
    mqtt_session_expiry_s: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    mqtt_reconnect_min_s: Annotated[int, Field(ge=1)] = 1
    mqtt_reconnect_max_s: Annotated[int, Field(ge=1)] = 30
    #: MQTT v5 flow control: most unacknowledged messages the broker may send (3.1.1: the broker's
    #: setting, e.g. RabbitMQ ``mqtt.prefetch``).
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 10_000
    #: Hard bound of the intake queue. Mosquitto 2.0 overshoots the receive
    #: maximum after acknowledgements, so the gateway bounds itself too;
    #: when full, the MQTT thread waits (TCP back-pressure). 0 = 2 x receive_maximum.
    queue_max: Annotated[int, Field(ge=0)] = 0
    topic_prefix: str = topics.DEFAULT_PREFIX
    #: Intake processes. 1: this process receives, validates, writes and
    #: acknowledges everything. N > 1: a supervisor runs N worker processes
    #: (``gateway.workers``) that share the ingest through an MQTT 5 shared
    #: subscription; each has its own persistent session (client id
    #: ``{mqtt_client_id}-w{i}``), writer, acks and confirmations.
    workers: Annotated[int, Field(ge=1, le=32)] = 1
    #: Set: subscribe as a member of the shared subscription group
    #: ``$share/{share_group}/{prefix}/#`` (the broker gives each message to
    #: one member). Set by the supervisor for its workers; also lets separate
    #: gateway hosts share one ingest.
    share_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")] | None = None
    #: How ``workers = N > 1`` split the ingest: ``share``, one MQTT shared
    #: subscription (Mosquitto; ``$share`` is MQTT 5 and unknown to RabbitMQ
    #: 3.10 and NATS 2.9), or ``shards``: each worker owns a fixed set of topic
    #: filters (:mod:`gateway.shards`), with its own persistent session, on any
    #: broker and over MQTT 3.1.1 too (docs/brokers.md).
    ingest: Literal["share", "shards"] = "share"
    #: With ``ingest = "shards"``: cut by the site's listed devices (balanced, any number of workers up
    #: to the device count) or by reading kind (at most four workers; a few filters per session).
    shard_by: Literal["device", "kind"] = "device"
    #: Set: subscribe to exactly these topic filters instead of everything under
    #: the prefix (set by the supervisor for a shard worker; JSON list in the environment).
    shard_filters: list[str] | None = None

    #: End-to-end confirmation: tell each device which of its readings are
    #: stored (``{prefix}/v1/{site}/{device}/stored``), so its outbox keeps
    #: them until then, not only until the broker's PUBACK.
    confirm: bool = True
    #: How often pending confirmations are published (one message per device).
    confirm_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    #: QoS 1 messages the gateway may have in flight to the broker (paho's ``max_inflight_messages``;
    #: paho's default is 20). The gateway owes one confirmation per device every ``confirm_interval_s``:
    #: a city of 600 devices is up to 3,000 a second, which a window of 20 round trips cannot carry,
    #: and devices whose confirmations are late publish their readings again (bench/scale/README.md).
    confirm_inflight: Annotated[int, Field(ge=1, le=65535)] = 1000

    # --- site ---------------------------------------------------------------
    #: With a site configuration, readings about unknown lots, bays, banks,
    #: compartments or zones are rejected, and its site id names the gateway's status topic.
    site_config: Path | None = None
    #: Site id for the gateway's own status topic when there is no site configuration.
    site_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")] = "district"

    # --- InfluxDB (1.x HTTP API; 2.x/3.x via their 1.x compatibility endpoints) --
    influx_url: str = "http://127.0.0.1:8086"
    influx_db: Annotated[str, Field(min_length=1)] = "district"
    influx_rp: str | None = None
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    #: Sent as ``Authorization: Token ...`` (InfluxDB 2.x/3.x 1.x-compatible endpoints).
    influx_token: SecretStr | None = None
    influx_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    #: CREATE DATABASE on start; 2.x compatibility endpoints cannot, so failing is a warning.
    create_database: bool = True

    # --- stores (gateway/sink_fanout.py: build_sink) --------------------------
    #: Where readings are stored, comma-separated: ``influxdb``, ``victoriametrics``, or both
    #: (``influxdb,victoriametrics``: a batch is acknowledged once every store took it;
    #: docs/influxdb-writes.md, "VictoriaMetrics"). A plain string, so it survives the
    #: environment unchanged (``DISTRICT_GATEWAY_SINKS=influxdb,victoriametrics``).
    sinks: str = "influxdb"
    #: The part of VictoriaMetrics' write URL before ``/write``: ``http://host:8428`` (single node) or
    #: ``http://vminsert:8480/insert/<tenant>/influx`` (cluster).
    vm_url: str = "http://127.0.0.1:8428"
    vm_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    #: HTTP basic auth (VictoriaMetrics' ``-httpAuth.username``/``-httpAuth.password``).
    vm_username: str | None = None
    vm_password: SecretStr | None = None
    #: Sent as ``Authorization: Bearer ...`` (vmauth in front of a cluster); wins over basic auth.
    vm_token: SecretStr | None = None

    # --- batching and retries ----------------------------------------------
    #: Points per write (InfluxDB 1.x is happiest around 5,000).
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5_000
    #: Longest a received message waits for its batch to fill.
    flush_interval_s: Annotated[float, Field(gt=0)] = 0.2
    retry_initial_s: Annotated[float, Field(gt=0)] = 0.1
    retry_max_s: Annotated[float, Field(gt=0)] = 10.0
    #: On stop, how long to keep retrying the last batch before giving up
    #: (unwritten messages stay unacknowledged: the broker redelivers them).
    stop_timeout_s: Annotated[float, Field(ge=0)] = 10.0

    # --- metrics (gateway.metrics, docs/metrics.md) -------------------------
    #: Serve Prometheus metrics on this port (any path); unset: no listener.
    #: With ``workers = N``, worker *i* listens on ``metrics_port + i``.
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"

    # --- rejects and stats ----------------------------------------------
    #: JSON Lines file of rejected messages; None = log and count only.
    dead_letter_path: Path | None = None
    stats_interval_s: Annotated[float, Field(gt=0)] = 10.0
    #: How often the gateway refreshes its own retained status.
    status_interval_s: Annotated[float, Field(gt=0)] = 60.0

    # --- history (gateway/retention.py, gateway/snapshots.py, docs/history.md) ---
    #: Set up retention policies and rollups at start and write lot/locker snapshots (InfluxDB 1.x only;
    #: off for 2.x/3.x, which have no continuous queries: docs/history.md).
    history: bool = True
    #: Days raw readings are kept; overrides the site's ``history.raw_days`` (default 30).
    history_raw_days: Annotated[int, Field(ge=1, le=36_500)] | None = None
    #: Days the 5-minute and hourly rollups are kept; overrides the site's ``history.rollup_days`` (default 730).
    history_rollup_days: Annotated[int, Field(ge=1, le=36_500)] | None = None
    #: Seconds between lot and locker bank snapshots, in device time (must divide a day).
    history_snapshot_s: Annotated[int, Field(ge=1, le=3600)] = 60
    #: Device-time seconds after a group's first reading before its first snapshot (the bays' full refresh).
    history_warmup_s: Annotated[float, Field(ge=0)] = 120.0
    #: How often late points are looked for and their rollups rebuilt.
    history_interval_s: Annotated[float, Field(gt=0)] = 60.0

    @field_validator("history_snapshot_s")
    @classmethod
    def _snapshot_divides_a_day(cls, value: int) -> int:
        if 86_400 % value:
            raise ValueError("history_snapshot_s must divide a day (60, 300, ...)")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_ok(cls, value: str) -> str:
        return topics.check_prefix(value)

    @field_validator("influx_url", "vm_url")
    @classmethod
    def _url_ok(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the URL must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("sinks")
    @classmethod
    def _sinks_ok(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",")]
        unknown = [name for name in names if name not in SINK_NAMES]
        if unknown:
            raise ValueError(f"unknown store {unknown[0]!r}: choose from {', '.join(SINK_NAMES)}")
        if len(set(names)) != len(names):
            raise ValueError("each store at most once")
        return ",".join(names)

    @property
    def sink_names(self) -> list[str]:
        """``sinks`` as a list, in order."""
        return self.sinks.split(",")

    @model_validator(mode="after")
    def _history_needs_influxdb(self) -> GatewaySettings:
        if self.history and "influxdb" not in self.sink_names:
            raise ValueError(
                "history (retention policies, rollups, snapshots) needs the influxdb sink: "
                "add it to sinks or set history to false"
            )
        return self

    @property
    def queue_bound(self) -> int:
        return self.queue_max or 2 * self.receive_maximum
