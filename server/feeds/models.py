"""Response models of the JSON feeds: what ``/openapi.json`` promises.

The serializers build plain dicts (exact control over which keys are left
out); these models describe them, with unknown keys forbidden, so a test that
validates serializer output against them keeps the two in step, and a
schemathesis run checks served responses against the same schemas.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# -- ParkAPI -----------------------------------------------------------------


class ParkApiCoords(_Strict):
    lat: float
    lng: float


class ParkApiLot(_Strict):
    """One lot in ParkAPI's v1 city format."""

    id: str
    name: str
    coords: ParkApiCoords | None
    address: str | None
    lot_type: str | None = Field(description="Parkhaus, Tiefgarage or Parkplatz (ParkAPI's words).")
    region: str | None = Field(None, description="The district zone the lot serves (its name).")
    total: Annotated[int, Field(ge=0)]
    free: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Free bays with a fresh reading; 0 when closed; left out when the lot has no fresh data."
    )
    state: Literal["open", "closed", "nodata", "unknown"] = Field(
        description="open (also when full: ParkAPI has no full state), closed, or nodata (no fresh readings)."
    )
    forecast: bool = Field(description="Always false: no forecasts are served.")


class ParkApiCity(_Strict):
    """ParkAPI v1 city document (``offenesdresden/ParkAPI``, ``city_schema.json``)."""

    last_updated: str = Field(
        description="Newest reading behind the published counts, UTC, no offset (ParkAPI's form)."
    )
    last_downloaded: str = Field(description="When this answer was judged, UTC, no offset.")
    lots: list[ParkApiLot]


class ParkApiSite(_Strict):
    """A parking site with static and realtime fields (ParkAPI v3 / parkapi-sources)."""

    uid: str
    name: str
    purpose: Literal["CAR"]
    type: Literal["CAR_PARK", "UNDERGROUND", "OFF_STREET_PARKING_GROUND", "ON_STREET"]
    lat: float
    lon: float
    address: str | None = None
    capacity: Annotated[int, Field(ge=0)]
    has_realtime_data: bool = Field(description="True: the site has bay sensors (a static property in ParkAPI v3).")
    realtime_opening_status: Literal["OPEN", "CLOSED", "UNKNOWN"] = Field(
        description="UNKNOWN when the lot has no fresh readings."
    )
    realtime_capacity: Annotated[int, Field(ge=0)] | None = None
    realtime_free_capacity: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Free bays with a fresh reading; 0 when closed; left out without fresh data."
    )
    realtime_data_updated_at: str | None = Field(
        None, description="The newest reading (UTC, Z), even when stale; now for a closed lot; left out if none."
    )


class ParkApiSites(_Strict):
    items: list[ParkApiSite]


# -- NGSI-LD -----------------------------------------------------------------

Context = Annotated[list[str], Field(alias="@context", description="Smart Data Models and NGSI-LD core contexts.")]


class GeoPoint(_Strict):
    type: Literal["Point"]
    coordinates: Annotated[list[float], Field(min_length=2, max_length=2, description="[longitude, latitude]")]


class PostalAddress(_Strict):
    streetAddress: str


class DateTimeValue(_Strict):
    type_: Literal["DateTime"] = Field(alias="@type")
    value: str = Field(alias="@value")


class _Property(_Strict):
    type: Literal["Property"]
    observedAt: str | None = None


class TextProperty(_Property):
    value: str


class TextListProperty(_Property):
    value: list[str]


class IntProperty(_Property):
    value: int


class ShareProperty(_Property):
    value: Annotated[float, Field(ge=0, le=1)]


class BoolProperty(_Property):
    value: bool


class AddressProperty(_Property):
    value: PostalAddress


class DateTimeProperty(_Property):
    value: DateTimeValue


class GeoProperty(_Strict):
    type: Literal["GeoProperty"]
    value: GeoPoint


class Relationship(_Strict):
    type: Literal["Relationship"]
    object: str


class OffStreetParkingNormalized(_Strict):
    id: str
    type: Literal["OffStreetParking"]
    name: TextProperty
    location: GeoProperty
    address: AddressProperty | None = None
    category: TextListProperty
    totalSpotNumber: IntProperty
    availableSpotNumber: IntProperty | None = None
    occupiedSpotNumber: IntProperty | None = None
    occupancy: ShareProperty | None = None
    status: TextListProperty | None = None
    context: Context


class OffStreetParkingKeyValues(_Strict):
    id: str
    type: Literal["OffStreetParking"]
    name: str
    location: GeoPoint
    address: PostalAddress | None = None
    category: list[str]
    totalSpotNumber: int
    availableSpotNumber: int | None = None
    occupiedSpotNumber: int | None = None
    occupancy: Annotated[float, Field(ge=0, le=1)] | None = None
    status: list[str] | None = None
    context: Context


SpotStatus = Literal["free", "occupied", "closed", "unknown"]


class SpotStatusProperty(_Property):
    value: SpotStatus


class ParkingSpotNormalized(_Strict):
    id: str
    type: Literal["ParkingSpot"]
    name: TextProperty
    category: TextListProperty
    location: GeoProperty
    status: SpotStatusProperty
    refParkingSite: Relationship
    context: Context


class ParkingSpotKeyValues(_Strict):
    id: str
    type: Literal["ParkingSpot"]
    name: str
    category: list[str]
    location: GeoPoint
    status: SpotStatus
    refParkingSite: str
    context: Context


CrowdLevelValue = Literal["low", "moderate", "high", "very_high", "nodata", "suppressed"]
#: Why a peopleCount* attribute is absent although the zone is live: it rests on fewer than k people, or would give
#: one back (``peopleCountState`` for the sum or the whole quarter; ``peopleCountTowardsState`` /
#: ``peopleCountAwayState`` for one direction).
PeopleCountState = Literal["suppressed"]
#: How ``occupancy`` is published: ``coarsened`` (the share of the occupancy rounded to a multiple of
#: ``occupancyBase``, the site's k) or ``suppressed`` (absent: the estimate is under k people).
OccupancyState = Literal["coarsened", "suppressed"]


class CrowdLevelProperty(_Property):
    value: CrowdLevelValue


class PeopleCountStateProperty(_Property):
    value: PeopleCountState


class OccupancyStateProperty(_Property):
    value: OccupancyState


class OccupancyBaseProperty(_Property):
    value: Annotated[int, Field(ge=1, description="The rounding base of the occupancy, in people (k).")]


class CrowdFlowObservedNormalized(_Strict):
    id: str
    type: Literal["CrowdFlowObserved"]
    name: TextProperty
    location: GeoProperty | None = None
    dateObserved: TextProperty | None = None
    dateObservedFrom: DateTimeProperty | None = None
    dateObservedTo: DateTimeProperty | None = None
    peopleCountTowards: IntProperty | None = None
    peopleCountAway: IntProperty | None = None
    peopleCount: IntProperty | None = None
    peopleCountState: PeopleCountStateProperty | None = None
    peopleCountTowardsState: PeopleCountStateProperty | None = None
    peopleCountAwayState: PeopleCountStateProperty | None = None
    occupancy: ShareProperty | None = None
    occupancyState: OccupancyStateProperty | None = None
    occupancyBase: OccupancyBaseProperty | None = None
    congested: BoolProperty | None = None
    crowdLevel: CrowdLevelProperty
    context: Context


class CrowdFlowObservedKeyValues(_Strict):
    id: str
    type: Literal["CrowdFlowObserved"]
    name: str
    location: GeoPoint | None = None
    dateObserved: str | None = None
    dateObservedFrom: str | None = None
    dateObservedTo: str | None = None
    peopleCountTowards: int | None = None
    peopleCountAway: int | None = None
    peopleCount: int | None = None
    peopleCountState: PeopleCountState | None = None
    peopleCountTowardsState: PeopleCountState | None = None
    peopleCountAwayState: PeopleCountState | None = None
    occupancy: Annotated[float, Field(ge=0, le=1)] | None = None
    occupancyState: OccupancyState | None = None
    occupancyBase: Annotated[int, Field(ge=1)] | None = None
    congested: bool | None = None
    crowdLevel: CrowdLevelValue
    context: Context


Entity = (
    OffStreetParkingNormalized
    | OffStreetParkingKeyValues
    | ParkingSpotNormalized
    | ParkingSpotKeyValues
    | CrowdFlowObservedNormalized
    | CrowdFlowObservedKeyValues
)


class ProblemDetails(_Strict):
    """An NGSI-LD error (ETSI GS CIM 009 ProblemDetails)."""

    type: str = Field(description="e.g. https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound")
    title: str
    detail: str | None = None
