"""The server's settings: environment variables ``DISTRICT_SERVER_*``.

Built once in :func:`server.main.main` (or by a test) and passed down; nothing
here is created at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTRICT_SERVER_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    #: The site configuration (YAML): lots, bays, devices.
    site_config: Path

    mqtt_host: str = "127.0.0.1"
    mqtt_port: Annotated[int, Field(gt=0, le=65535)] = 1883
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
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
