"""Typed response models: what the API promises, documented in OpenAPI.

Field names follow what users already know: ParkAPI's lot fields and FIWARE's
OffStreetParking (``total`` is ``totalSpotNumber``, ``free`` is
``availableSpotNumber``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LotState = Literal["open", "full", "closed", "nodata"]
LotType = Literal["garage", "underground", "surface", "street"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Coords(_Out):
    lat: float
    lng: float


class ParkingLot(_Out):
    """Live availability of one parking lot."""

    id: str = Field(description="Lot id from the site configuration (ParkAPI id where there is one).")
    name: str
    coords: Coords
    address: str | None = None
    lot_type: LotType
    zone: str | None = Field(None, description="The district zone the lot serves.")
    total: int = Field(description="Bays in the site configuration (FIWARE totalSpotNumber).")
    free: int = Field(description="Bays whose fresh reading says free (FIWARE availableSpotNumber).")
    occupied: int = Field(description="Bays whose fresh reading says occupied.")
    unknown: int = Field(
        description="Bays with no reading, a reading older than the lot's freshness limit, or status unknown/closed."
        " A stale bay is never counted as free."
    )
    percent_free: float | None = Field(
        description="free / total in percent (one decimal); null when the lot has no fresh data."
    )
    state: LotState = Field(
        description="closed: closed in the site configuration; nodata: no bay has a fresh free/occupied reading;"
        " full: fewer free bays than the lot's reserve; open: otherwise."
    )
    observed_at: datetime | None = Field(
        description="When the newest bay reading was observed (UTC, on the server's clock: the device's own"
        " time corrected by its estimated clock offset), null if none was ever seen."
    )
    age_s: float | None = Field(description="Seconds from observed_at to the moment of this answer.")
    fresh: bool = Field(description="True when the newest reading was heard within the lot's freshness limit.")
    stale_after_s: float = Field(description="A bay not heard from for this long counts as unknown.")


class ErrorOut(_Out):
    """An error the client can show or act on."""

    error: str = Field(description="A short, stable category, e.g. not_found.")
    detail: str = Field(description="What exactly went wrong.")


class BrokerHealth(_Out):
    connected: bool
    last_message_age_s: float | None = Field(description="Seconds since the last message arrived (any kind).")
    messages: int = Field(0, description="Messages received since start.")
    rejected: dict[str, int] = Field(default_factory=dict, description="Rejected messages by reason.")
    error: str | None = None


class DatabaseHealth(_Out):
    reachable: bool
    last_check_age_s: float | None = Field(description="Seconds since the last /ping finished; null before the first.")
    error: str | None = None
    bootstrapped: bool = Field(description="Whether live state was loaded from InfluxDB at start (or since).")
    bootstrap_bays: int = Field(0, description="Bay states the bootstrap loaded.")


class DeviceHealth(_Out):
    seen: int = Field(description="Devices whose status message has been received.")
    by_state: dict[str, int] = Field(default_factory=dict, description="Devices per last reported state.")
    clock_offset_s: dict[str, float] = Field(
        default_factory=dict,
        description="Each device's estimated clock offset in seconds: the server's clock minus the device's"
        " (positive: the device is behind), the smallest received-minus-observed of its live messages"
        " over the last minute. Freshness is judged on the server's clock, so an offset never makes a"
        " device's readings stale.",
    )


class Health(_Out):
    status: Literal["ok", "degraded"]
    site: str
    uptime_s: float
    broker: BrokerHealth
    database: DatabaseHealth
    devices: DeviceHealth
