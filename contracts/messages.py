"""Wire messages, version 1.

One pydantic model per message kind, discriminated by ``kind``. Every message
carries the schema version, the device that produced it, the device's own
observation time (``observed_at``, UTC) and a stable ``reading_id``: a reading
that is re-sent (store-and-forward after an outage, a QoS 1 redelivery) keeps
its id and its ``observed_at``, so storing it twice is idempotent.

Wire models tolerate unknown keys (an old gateway survives a newer edge);
configuration models elsewhere reject them.

Vocabulary follows what users already know: FIWARE ``ParkingSpot.status``
(free / occupied / closed / unknown), FIWARE ``CrowdFlowObserved``
(``peopleCountTowards`` / ``peopleCountAway`` become ``towards`` / ``away``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1

#: Largest payload any v1 message may have. A bay state is ~250 bytes, a
#: footfall interval with a dozen lines ~2 KB; anything near this is garbage.
MAX_PAYLOAD_BYTES = 64 * 1024

# Identifiers end up in MQTT topics and InfluxDB tags: keep them to a safe,
# readable alphabet so no escaping is ever needed and no wildcard sneaks in.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Ident = Annotated[str, Field(pattern=ID_PATTERN)]


def new_reading_id() -> str:
    """A fresh, globally unique reading id (32 hex chars)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Annotated[int, Field(ge=1)] = SCHEMA_VERSION
    device_id: Ident
    observed_at: AwareDatetime
    reading_id: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    #: The device's reading sequence (optional; our edge always sends both).
    #: ``seq`` grows with every reading the device makes and never goes back
    #: while ``epoch`` stays the same; ``epoch`` names the sequence and changes
    #: only when the device's store is reset. Within one epoch, ``seq`` orders a
    #: device's readings whatever its clock does; wall time (``observed_at``) is
    #: for display and history. The pair is also what the gateway confirms
    #: (``contracts.confirm``). ``seq`` fits InfluxDB's signed 64-bit integer.
    epoch: Ident | None = None
    seq: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None

    @field_validator("observed_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


ParkingSpotStatus = Literal["free", "occupied", "closed", "unknown"]


class ParkingBayState(_Message):
    """One bay's state, as a bay sensor sees it (FIWARE ParkingSpot)."""

    kind: Literal["parking_bay"] = "parking_bay"
    lot_id: Ident
    bay_id: Ident
    status: ParkingSpotStatus


LockerStatus = Literal["free", "occupied", "out_of_service", "unknown"]
DoorState = Literal["open", "closed", "unknown"]


class LockerCompartmentState(_Message):
    """One pickup-locker compartment: is it free, and is its door shut."""

    kind: Literal["locker"] = "locker"
    bank_id: Ident
    compartment_id: Ident
    status: LockerStatus
    door: DoorState = "unknown"


class LineCount(BaseModel):
    """Crossings of one counting line in one interval (FIWARE CrowdFlowObserved).

    ``towards`` counts crossings into the zone (the line's "in" side),
    ``away`` crossings out of it.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    line_id: Ident
    towards: Annotated[int, Field(ge=0, le=1_000_000)]
    away: Annotated[int, Field(ge=0, le=1_000_000)]


class FootfallCount(_Message):
    """People crossing a zone's lines during [interval_start, observed_at).

    ``observed_at`` is the end of the interval. ``occupancy`` is the camera's
    running in-minus-out estimate for the zone at that moment (clamped at 0).
    """

    kind: Literal["footfall"] = "footfall"
    zone_id: Ident
    #: The camera that counted, when a device has several (keeps their
    #: intervals for the same zone apart in storage).
    camera_id: Ident | None = None
    interval_start: AwareDatetime
    lines: Annotated[list[LineCount], Field(min_length=1, max_length=64)]
    occupancy: Annotated[int, Field(ge=0, le=1_000_000)] | None = None

    @field_validator("interval_start")
    @classmethod
    def _start_to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _interval_is_sane(self) -> FootfallCount:
        if self.interval_start >= self.observed_at:
            raise ValueError("interval_start must be before observed_at")
        if self.observed_at - self.interval_start > timedelta(hours=24):
            raise ValueError("a footfall interval may not exceed 24 h")
        return self

    @property
    def towards(self) -> int:
        return sum(line.towards for line in self.lines)

    @property
    def away(self) -> int:
        return sum(line.away for line in self.lines)


CameraState = Literal["ok", "frozen", "black", "disconnected", "starting"]


class CameraHealth(BaseModel):
    """Health of one camera stream, reported inside its device's status."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    camera_id: Ident
    state: CameraState
    fps: Annotated[float, Field(ge=0, le=1000)]
    dropped_frames: Annotated[int, Field(ge=0)]
    last_frame_age_s: Annotated[float, Field(ge=0)] | None = None


DeviceState = Literal["online", "degraded", "offline"]


class DeviceStatus(_Message):
    """Retained heartbeat of a device; its last will is the ``offline`` form.

    For ``offline`` sent as a last will, ``observed_at`` is when the will was
    registered (connect time, possibly weeks ago): consumers take the moment
    the broker delivers it (a live, non-retained delivery) as the moment the
    device went away, and :func:`decode` does not reject it as stale. An empty
    retained payload on a status topic clears the device's status.
    """

    kind: Literal["status"] = "status"
    state: DeviceState
    reason: Annotated[str, Field(max_length=200)] | None = None
    uptime_s: Annotated[float, Field(ge=0)] | None = None
    battery_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    signal_dbm: Annotated[float, Field(ge=-150, le=0)] | None = None
    firmware: Annotated[str, Field(max_length=64)] | None = None
    cameras: list[CameraHealth] = Field(default_factory=list, max_length=16)
    #: Readings waiting in the device's store-and-forward outbox.
    outbox_pending: Annotated[int, Field(ge=0)] | None = None


Message = Annotated[
    ParkingBayState | LockerCompartmentState | FootfallCount | DeviceStatus,
    Field(discriminator="kind"),
]
MESSAGE_KINDS: dict[str, type[_Message]] = {
    "parking_bay": ParkingBayState,
    "locker": LockerCompartmentState,
    "footfall": FootfallCount,
    "status": DeviceStatus,
}

_adapter: TypeAdapter[Message] = TypeAdapter(Message)


class MessageRejected(ValueError):
    """A payload that is not a valid v1 message. ``reason`` is a short,
    countable category; ``detail`` says exactly what was wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TimePolicy(BaseModel):
    """How far from the receiver's clock an ``observed_at`` may lie.

    Future: device clocks drift, so allow a little skew. Past: devices
    store and forward after outages, so allow days, but not 1970.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_future_s: float = 300.0
    max_age_s: float = 14 * 24 * 3600.0


def decode(payload: bytes, *, now: datetime | None = None, policy: TimePolicy | None = None) -> Message:
    """Parse and validate one payload; raise :class:`MessageRejected`.

    Never raises anything else, whatever the bytes are.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageRejected("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        message = _adapter.validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]  # a ValidationError always carries at least one
        reason = _reason_for(str(first["type"]))
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        detail = f"{loc}: {first['msg']}"
        if len(errors) > 1:
            detail += f" (+{len(errors) - 1} more)"
        raise MessageRejected(reason, detail) from None
    except Exception as exc:  # pragma: no cover - pydantic wraps everything, but never crash a loop
        raise MessageRejected("invalid", repr(exc)[:200]) from None
    if message.schema_version > SCHEMA_VERSION:
        # A minor, additive change would keep version 1; a higher version
        # means the meaning changed, so do not guess.
        raise MessageRejected("unsupported_version", f"schema_version {message.schema_version}")
    if isinstance(message, DeviceStatus) and message.state == "offline":
        # A last will carries the time it was registered (connect time, maybe
        # weeks ago); the moment it is delivered is when the device went away.
        # Only a clock far ahead is refused.
        check_time(message.observed_at, now=now, policy=policy, past=False)
    else:
        check_time(message.observed_at, now=now, policy=policy)
    return message


def check_time(
    observed_at: datetime, *, now: datetime | None = None, policy: TimePolicy | None = None, past: bool = True
) -> None:
    """Raise :class:`MessageRejected` if ``observed_at`` lies outside ``policy`` around ``now``.

    ``past=False`` checks only the future bound (a last will's time is old by design).
    """
    policy = policy or TimePolicy()
    now = now or utcnow()
    if observed_at > now + timedelta(seconds=policy.max_future_s):
        raise MessageRejected(
            "future_timestamp", f"observed_at {observed_at.isoformat()} is ahead of {now.isoformat()}"
        )
    if past and observed_at < now - timedelta(seconds=policy.max_age_s):
        raise MessageRejected(
            "stale_timestamp", f"observed_at {observed_at.isoformat()} is older than {policy.max_age_s:.0f} s"
        )


def encode(message: _Message) -> bytes:
    """Serialize a message for the wire (compact JSON, UTC with 'Z')."""
    return message.model_dump_json(exclude_none=True).encode()


def _reason_for(error_type: str) -> str:
    if error_type in ("json_invalid", "json_type"):
        return "not_json"
    if error_type in ("union_tag_invalid", "union_tag_not_found"):
        return "unknown_kind"
    if error_type == "missing":
        return "missing_field"
    if error_type in ("timezone_aware", "datetime_parsing", "datetime_from_date_parsing", "datetime_type"):
        return "bad_timestamp"
    if error_type == "value_error":
        return "invalid_value"
    if error_type.endswith("_type") or error_type.endswith("_parsing"):
        return "wrong_type"
    return "invalid_value"
