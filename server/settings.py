"""The server's settings: environment variables ``DISTRICT_SERVER_*``.

Built once in :func:`server.main.main` (or by a test) and passed down; nothing
here is created at import time.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.mqtt_security import MqttClientFields, SecretFileError, check_private
from contracts.configfile import ConfigError
from server.keys import Role
from server.stores.bays import FLAP_KEEP


class ServerSettings(BaseSettings, MqttClientFields):
    """Broker credentials and TLS (``mqtt_username``, ``mqtt_password_file``, ``mqtt_ca_file``, ...) come
    from :class:`common.mqtt_security.MqttClientFields`, shared with the gateway."""

    model_config = SettingsConfigDict(
        env_prefix="DISTRICT_SERVER_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    #: The site configuration (YAML): lots, bays, devices.
    site_config: Path

    mqtt_host: str = "127.0.0.1"
    mqtt_port: Annotated[int, Field(gt=0, le=65535)] = 1883
    #: Default: ``district-server-<random>``, so two replicas never kick each other off.
    mqtt_client_id: str | None = None
    mqtt_keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    #: How long the broker queues for the server while its link is down. A
    #: longer outage is covered by the catch-up from InfluxDB on reconnect.
    mqtt_session_expiry_s: Annotated[int, Field(ge=0, le=86_400)] = 300
    topic_prefix: str = "district"

    influx_url: str = "http://127.0.0.1:8086"
    influx_db: str = "district"
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    #: For InfluxDB 2.x/3.x 1.x-compatibility endpoints (``Authorization: Token``).
    influx_token: SecretStr | None = None
    influx_timeout_s: Annotated[float, Field(gt=0)] = 10.0

    #: How far back the start-up bootstrap looks for each bay's last state.
    bootstrap_window_s: Annotated[float, Field(gt=0)] = 86_400.0
    #: How long start-up waits for the bootstrap before serving anyway.
    bootstrap_timeout_s: Annotated[float, Field(gt=0)] = 15.0
    #: How often the background task pings InfluxDB (and retries a failed bootstrap).
    db_check_interval_s: Annotated[float, Field(gt=0)] = 5.0

    #: DATEX II ``publicationCreator`` country (ISO 3166-1 alpha-2) of the interop feeds.
    feeds_country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "DE"
    #: Default language of the DATEX II feeds (the language lot names are written in).
    feeds_language: Annotated[str, Field(pattern=r"^[a-z]{2,3}$")] = "de"

    # -- displays (server.displays) --------------------------------------------
    #: Admin API keys, ``name:key`` pairs separated by commas (``ops:s3cret,alice:…``); the name
    #: is who the audit log records. ``X-API-Key`` must match one of them. Keys are never logged.
    api_keys: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict)
    #: A file of more admin keys, one ``name:key`` per line (``#`` comments), read at start.
    api_keys_file: Path | None = None
    # -- access control (server.auth, docs/access-control.md) ------------------
    #: The hashed API key file that ``district keys`` manages; re-read when it changes.
    #: Default: ``api-keys`` in ``state_dir``. ``api_keys``/``api_keys_file`` above stay admin keys.
    keys_file: Path | None = None
    #: How often (at most) the key file's mtime is checked, on a request that presents a key.
    keys_reload_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    #: Path prefix -> role, over the defaults (server.auth.DEFAULT_ACCESS): JSON or
    #: ``prefix=role,...``, e.g. ``/v1/parking=display,/metrics=operator``.
    access: Annotated[dict[str, Role], NoDecode] = Field(default_factory=dict)
    #: Where the server keeps what must survive a restart (display event ids, overrides, audit log).
    #: Default: ``$XDG_STATE_HOME/district`` (``~/.local/state/district``).
    state_dir: Path | None = None
    #: How often every display is recomputed (staleness is noticed within one tick).
    display_tick_s: Annotated[float, Field(gt=0, le=1.0)] = 0.5
    #: The longest an operator override may last (its ``until`` at most this far ahead).
    override_max_s: Annotated[float, Field(gt=0)] = 7 * 86_400.0
    #: SSE heartbeat (a comment line) on an idle display stream.
    sse_heartbeat_s: Annotated[float, Field(gt=0, le=30)] = 15.0

    # -- alerts (server.alerts) ----------------------------------------------------
    #: A bay is flapping when it changed status this many times within ``alert_flap_window_s``.
    #: At most :data:`server.stores.bays.FLAP_KEEP`, the changes each bay remembers.
    alert_flap_changes: Annotated[int, Field(ge=2, le=FLAP_KEEP)] = 6
    #: The flapping window. A simulated fleet running faster than real time (the demo at
    #: ``--speed 60``) divides it by its speed, or ordinary turnover reads as flapping.
    alert_flap_window_s: Annotated[float, Field(gt=0)] = 600.0

    # -- forecasts (server.forecast, docs/forecast.md) ---------------------------
    #: Refit every zone and lot forecast this often; 0 turns forecasts off.
    forecast_refresh_s: Annotated[float, Field(ge=0)] = 3600.0
    #: Public holidays for the forecasts' calendar (``holidays`` package): ISO 3166-1 country and
    #: subdivision, e.g. ``DE`` and ``SN`` (Saxony) for the Dresden demo. None: no holidays.
    holiday_country: Annotated[str | None, Field(pattern=r"^[A-Z]{2}$")] = None
    holiday_subdiv: str | None = None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        return parse_api_keys(value) if isinstance(value, str) else value

    @field_validator("access", mode="before")
    @classmethod
    def _parse_access(cls, value: Any) -> Any:
        return parse_access(value)

    def resolved_keys_file(self) -> Path:
        """``keys_file``, or ``api-keys`` in the state directory (where ``district keys`` writes by default)."""
        return self.keys_file if self.keys_file is not None else self.resolved_state_dir() / "api-keys"

    def admin_keys(self) -> dict[str, str]:
        """Every admin key by name: ``api_keys`` and ``api_keys_file`` (raises ConfigError)."""
        keys = {name: key.get_secret_value() for name, key in self.api_keys.items()}
        if self.api_keys_file is not None:
            path = self.api_keys_file
            try:
                check_private(path, "admin API key file")
            except SecretFileError as exc:
                raise ConfigError(path, [str(exc)]) from None
            try:
                keys.update(parse_api_keys(path.read_text(encoding="utf-8")))
            except OSError as exc:
                raise ConfigError(path, [f"{path}: cannot read: {exc.strerror or exc}"]) from None
            except ValueError as exc:
                raise ConfigError(path, [f"{path}: {exc}"]) from None
        return keys

    def resolved_state_dir(self) -> Path:
        """``state_dir``, or the user's state directory (``$XDG_STATE_HOME/district``)."""
        if self.state_dir is not None:
            return self.state_dir
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        if not base:  # pragma: no cover - no home directory at all
            base = tempfile.gettempdir()
        return Path(base) / "district"


def parse_api_keys(text: str) -> dict[str, str]:
    """``name:key`` pairs separated by commas or newlines (``#`` starts a comment line).

    The error names the bad entry's position, never its key.
    """
    keys: dict[str, str] = {}
    entries = [e.strip() for line in text.splitlines() if not line.lstrip().startswith("#") for e in line.split(",")]
    for n, entry in enumerate((e for e in entries if e), start=1):
        name, sep, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not sep or not name or not key:
            raise ValueError(f"API key entry {n} is not name:key")
        if name in keys:
            raise ValueError(f"API key name {name!r} appears twice")
        keys[name] = key
    return keys


def parse_access(value: Any) -> Any:
    """The ``access`` setting as text: JSON (``{"/v1/parking": "display"}``) or ``prefix=role`` pairs
    separated by commas."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    out: dict[str, str] = {}
    for n, pair in enumerate((p.strip() for p in text.split(",") if p.strip()), start=1):
        prefix, sep, role = pair.partition("=")
        if not sep:
            raise ValueError(f"access entry {n} is not prefix=role")
        out[prefix.strip()] = role.strip()
    return out
