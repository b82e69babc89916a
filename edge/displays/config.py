"""Display-bridge configuration: one YAML file, top-level key ``display_bridge:``.

Loaded with :func:`contracts.configfile.load_model` (every error located by
``file:line:col``; ``district check-config bridge.yaml`` checks it). Unknown
keys are rejected. The API key is better kept out of the file:
``DISTRICT_BRIDGE_API_KEY`` (:class:`BridgeSettings`) overrides it.

Times are seconds. See docs/display-bridge.md for what each setting does to
the sign, and deploy/display-bridge.example.yaml for a complete file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.configfile import StrictModel
from contracts.fieldbus import MAX_UNIT, MIN_UNIT, fit_text
from contracts.messages import Ident
from edge.sensors.modbus import Parity, SerialSettings

#: Header names an HTTP client may send (RFC 9110 token characters).
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


class ApiConfig(StrictModel):
    """Where the sign states come from: the guidance API (``GET /v1/displays/{id}`` and ``/events``)."""

    #: Base URL, e.g. ``http://guidance.district.local:8000`` (the ``/v1/...`` paths are appended).
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]
    #: Sent as ``api_key_header`` on every request when set (better: ``DISTRICT_BRIDGE_API_KEY``).
    api_key: SecretStr | None = None
    api_key_header: Annotated[str, Field(pattern=_HEADER_NAME)] = "X-API-Key"
    #: Follow ``/events`` (Server-Sent Events); false: poll only.
    sse: bool = True
    #: An SSE stream with no byte for this long is dropped and reopened (the API sends ``: ping`` at
    #: least every 30 s, so keep it above 30).
    sse_idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 45.0
    #: While there is no SSE stream: ``GET /v1/displays/{id}`` with ``If-None-Match`` this often.
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    #: Connect/read timeout of a poll and of opening a stream.
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: Reopening a failed SSE stream: first wait, doubled (with ±20 % jitter) up to the maximum; polls
    #: keep the sign current meanwhile.
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


class SerialConfig(StrictModel):
    """The RS-485 line settings, alike for every display port (docs/fieldbus.md, "Line settings")."""

    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    #: Wait this long for a display's answer to a write.
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5

    def settings(self, port: str) -> SerialSettings:
        return SerialSettings(port, self.baudrate, self.parity, self.stopbits, self.timeout_s)


class DisplayLink(StrictModel):
    """One sign: which API display it shows, and where it hangs on the RS-485 bus."""

    #: The API's display id (``/v1/displays/{display_id}``).
    display_id: Ident
    #: Serial device, e.g. ``/dev/serial/by-id/usb-FTDI_...`` (stable across reboots) or ``/dev/ttyUSB0``.
    port: Annotated[str, Field(min_length=1)]
    #: Modbus unit id of the display on that bus.
    unit: Annotated[int, Field(ge=MIN_UNIT, le=MAX_UNIT)] = 1
    #: What the sign shows when the bridge can no longer vouch for the API's state (and when it stops):
    #: blank by default; at most 16 printable ASCII characters (e.g. ``"---"``).
    fallback_text: Annotated[str, Field(max_length=16)] = ""

    @field_validator("fallback_text")
    @classmethod
    def _showable(cls, value: str) -> str:
        if fit_text(value) != value:
            raise ValueError("must be printable ASCII (a count display shows nothing else)")
        return value


class BridgeConfig(StrictModel):
    api: ApiConfig
    serial: SerialConfig = Field(default_factory=SerialConfig)
    displays: Annotated[list[DisplayLink], Field(min_length=1)]
    #: Every sign is re-written this often even when nothing changed (its heartbeat register advances), so
    #: its comms-loss watchdog (10 s on the simulated display) never fires while the bridge is healthy.
    write_interval_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    #: Heard nothing from the API for this long (no event, no heartbeat, no successful poll): the bridge
    #: writes each sign's ``fallback_text`` itself until the API answers again.
    stale_after_s: Annotated[float, Field(gt=0)] = 60.0
    #: A counters line per sign in the log this often (0: never).
    summary_interval_s: Annotated[float, Field(ge=0)] = 60.0

    @model_validator(mode="after")
    def _consistent(self) -> BridgeConfig:
        problems = []
        ids = Counter(d.display_id for d in self.displays)
        problems += [f"display {i} configured {n} times" for i, n in ids.items() if n > 1]
        units = Counter((d.port, d.unit) for d in self.displays)
        problems += [f"port {p}: unit {u} configured {n} times" for (p, u), n in units.items() if n > 1]
        if self.api.reconnect_max_s < self.api.reconnect_min_s:
            problems.append("api.reconnect_max_s must not be shorter than api.reconnect_min_s")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def ports(self) -> dict[str, list[DisplayLink]]:
        """The displays by serial port, in file order: one writer thread per port."""
        out: dict[str, list[DisplayLink]] = {}
        for d in self.displays:
            out.setdefault(d.port, []).append(d)
        return out


class BridgeFile(StrictModel):
    """The file's shape: everything under ``display_bridge:``."""

    display_bridge: BridgeConfig


class BridgeSettings(BaseSettings):
    """Process settings for ``district display-bridge`` (env prefix ``DISTRICT_BRIDGE_``); flags win."""

    model_config = SettingsConfigDict(env_prefix="DISTRICT_BRIDGE_", extra="ignore")

    config: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Overrides ``api.api_key`` from the file.
    api_key: SecretStr | None = None
