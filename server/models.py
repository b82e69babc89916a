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
TrendDirection = Literal["filling", "emptying", "steady", "unknown"]
LockerBankState = Literal["open", "full", "out_of_service", "nodata"]
CompartmentSize = Literal["S", "M", "L", "XL"]
CrowdLevel = Literal["low", "moderate", "high", "very_high", "nodata"]
CrowdTrend = Literal["rising", "falling", "steady", "unknown"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Coords(_Out):
    lat: float
    lng: float


class Trend(_Out):
    """How a lot's free count moved over the last minutes of the live stream."""

    direction: TrendDirection = Field(
        description="filling: free spaces fell by at least max(2, 1 % of the bays) in the window; emptying: rose"
        " by that much; steady: neither; unknown: less than a minute of live changes seen."
    )
    free_change: int | None = Field(description="Net change of free bays in the window (negative: filling).")
    window_s: float = Field(description="Seconds looked back (up to 600; less right after the server started).")


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
    trend: Trend = Field(description="Filling or emptying, from the live changes of the last 10 minutes.")


class LockerSize(_Out):
    """One compartment size of a locker bank."""

    size: CompartmentSize
    total: int = Field(description="Compartments of this size in the site configuration.")
    free: int = Field(description="Compartments whose fresh reading says free.")
    occupied: int = Field(description="Compartments whose fresh reading says occupied (a parcel waits).")
    out_of_service: int = Field(description="Compartments whose fresh reading says out of service.")
    unknown: int = Field(
        description="Compartments with no reading, a stale one, or status unknown: never counted as free."
    )


class OpenDoor(_Out):
    compartment_id: str
    size: CompartmentSize
    since: datetime = Field(description="When the door was first reported open in its current open streak (UTC).")
    open_s: float = Field(description="Seconds the door has been open at the moment of this answer.")


class LockerBank(_Out):
    """Live availability of one pickup-locker bank."""

    id: str
    name: str
    coords: Coords
    zone: str | None = None
    total: int
    free: int
    occupied: int
    out_of_service: int
    unknown: int
    sizes: list[LockerSize] = Field(description="Per compartment size (S, M, L, XL), sizes the bank has only.")
    doors_open: list[OpenDoor] = Field(description="Compartments whose fresh reading says the door is open.")
    state: LockerBankState = Field(
        description="nodata: no compartment has a fresh reading; open: at least one is free;"
        " out_of_service: every fresh one is out of service; full: otherwise."
    )
    observed_at: datetime | None = Field(description="When the newest compartment reading was heard (server clock).")
    age_s: float | None
    fresh: bool = Field(description="True when the newest reading was heard within the bank's freshness limit.")
    stale_after_s: float


class ZoneFlow(_Out):
    """People crossing into (entries) and out of (exits) a zone within [start, end]."""

    entries: int = Field(description="Crossings into the zone (FIWARE CrowdFlowObserved peopleCountTowards).")
    exits: int = Field(description="Crossings out of the zone (peopleCountAway).")
    start: datetime
    end: datetime


class ZoneCameras(_Out):
    configured: int = Field(description="Cameras with a counting line into this zone.")
    working: int = Field(description="Cameras heard within the zone's freshness limit and not reported broken.")
    broken: list[str] = Field(description="Cameras whose device reports them frozen, black or disconnected.")


class ZoneCrowd(_Out):
    """Crowd level of one zone, from its cameras' footfall counts."""

    id: str
    name: str
    capacity: int | None = Field(description="People the zone holds comfortably (site configuration).")
    coords: Coords | None = None
    state: Literal["ok", "nodata"] = Field(description="nodata: no working camera; every live number is then null.")
    occupancy: int | None = Field(description="Estimated people in the zone: the cameras' in-minus-out estimates.")
    share: float | None = Field(description="occupancy / capacity; null without either.")
    level: CrowdLevel | None = Field(
        description="low / moderate / high / very_high by the zone's crowd_levels thresholds on share"
        " (defaults 0.4 / 0.7 / 0.9); nodata without a working camera; null when the zone has no capacity."
    )
    trend: CrowdTrend = Field(
        description="rising / falling: net flow of the last 15 min beyond max(5, 2 % of capacity); steady otherwise."
    )
    last_15m: ZoneFlow | None
    last_1h: ZoneFlow | None
    observed_at: datetime | None = Field(description="When the newest interval was heard (server clock).")
    age_s: float | None
    fresh: bool
    stale_after_s: float
    cameras: ZoneCameras


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
