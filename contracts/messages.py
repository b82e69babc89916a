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

Numbers: every numeric field fits the store
-------------------------------------------
Readings end up in InfluxDB 1.x, whose line protocol has two numeric field
types: signed 64-bit integers and IEEE 754 float64 (InfluxDB 1.x docs, "Line
protocol reference", *Data types*). influxdb-client silently drops a non-finite
float from the line, and a larger integer fails the write. So, checked here at
the door (:func:`decode`), before anything is acknowledged:

* every float field is finite (``allow_inf_nan=False``) and has explicit lower
  and upper bounds; durations are at most :data:`MAX_DURATION_S` (a century);
* every integer field has explicit bounds inside ``±MAX_WIRE_INT``
  (2**53 - 1): the I-JSON limit (RFC 7493 §2.2) that any JSON consumer,
  JavaScript included, reads exactly, and well inside int64;
* the JSON tokens ``Infinity``, ``-Infinity`` and ``NaN`` are not JSON
  (RFC 8259 §6) and are rejected as ``not_json`` wherever they appear, even in
  a key this version ignores (Python's ``json.dumps`` emits them by default;
  the reason tells the device's author which encoder to fix);
* a number that is valid JSON but does not fit its field — ``1e999`` (it
  overflows float64 to infinity), ``"inf"`` as a string, a count above its
  bound — is rejected as ``invalid_value``.

Timestamps: RFC 3339 ``date-time``
----------------------------------
``observed_at`` and ``interval_start`` are strings of RFC 3339 §5.6
``date-time``, checked by :func:`parse_timestamp` (table in its docstring), and
normalised to UTC. Anything else is ``bad_timestamp``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Literal

import pydantic_core
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1

#: Largest payload any v1 message may have. A bay state is ~250 bytes, a
#: footfall interval with a dozen lines ~2 KB; anything near this is garbage.
MAX_PAYLOAD_BYTES = 64 * 1024

# Identifiers end up in MQTT topics and InfluxDB tags: keep them to a safe,
# readable alphabet so no escaping is ever needed and no wildcard sneaks in.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Ident = Annotated[str, Field(pattern=ID_PATTERN)]

#: Largest integer any wire field may carry: 2**53 - 1, the I-JSON limit
#: (RFC 7493 §2.2), exact in every JSON parser and in InfluxDB 1.x's int64.
MAX_WIRE_INT = 2**53 - 1
#: Largest duration (seconds) any wire field may carry: a century.
MAX_DURATION_S = 100 * 365.25 * 86_400.0

#: The time range InfluxDB 1.x can store: timestamps are int64 nanoseconds
#: since the epoch, minus two sentinel values (InfluxDB 1.x ``models.MinNanoTime``
#: and ``MaxNanoTime``), truncated to the microseconds a datetime carries.
STORE_TIME_MIN = datetime(1677, 9, 21, 0, 12, 43, 145225, tzinfo=UTC)
STORE_TIME_MAX = datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC)

# RFC 3339 §5.6 date-time; 'T' and 'Z' may be lower case (§5.6 NOTE). re.ASCII:
# \d is [0-9] only, not every Unicode digit.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


#: The form almost every device sends: UTC ('Z'), seconds 00-59, at most 6 fraction digits. These
#: are parsed by ``datetime.fromisoformat`` (0.1 µs, against 2.3 µs for :func:`_parse_rfc3339`);
#: anything else, and anything ``fromisoformat`` refuses (a 30th of February), takes the full parser.
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:[0-5]\d(?:\.\d{1,6})?Z", re.ASCII)


def _bad_timestamp(value: object, why: str) -> PydanticCustomError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return PydanticCustomError(
        "rfc3339_timestamp", "{value} is not an RFC 3339 date-time: {why}", {"value": shown, "why": why}
    )


def parse_timestamp(value: object) -> datetime:
    """An RFC 3339 §5.6 ``date-time`` string (or an aware datetime) as a UTC datetime.

    =====================================  ========  ===========================================
    form                                   verdict   why / result
    =====================================  ========  ===========================================
    ``2026-11-23T12:00:00Z``               accepted  §5.6
    ``2026-11-23T13:00:00+01:00``          accepted  any offset ±HH:MM (§5.6), normalised to UTC
    ``2026-11-23T06:30:00-05:30``          accepted  idem
    ``2026-11-23t12:00:00z``               accepted  lower case 't', 'z': §5.6 NOTE
    ``2026-11-23T12:00:00.5Z``             accepted  ``time-secfrac`` is ``"." 1*DIGIT`` (§5.6)
    ``...T12:00:00.123456789Z``            accepted  more than 6 digits: *truncated* to µs (never
                                                     rounded up into the next second or day)
    ``2026-11-23T12:00:00-00:00``          accepted  unknown local offset (§4.3): the time is UTC
    ``2016-12-31T23:59:60Z``               accepted  leap second (§5.6, §5.7): mapped to
                                                     ``23:59:59.999999`` of the same day (POSIX
                                                     time has no :60; it stays before midnight)
    ``2016-12-31T15:59:60-08:00``          accepted  the same leap second, local time (§5.7)
    ``2026-11-23T12:34:60Z``               rejected  :60 only at 23:59 UTC on a month's last day
    ``2026-11-23 12:00:00Z``               rejected  a space: §5.6 NOTE lets applications choose
                                                     it; this contract does not (the ABNF says
                                                     'T'; a space usually marks an SQL timestamp)
    ``2026-11-23T12:00:00``                rejected  naive: no offset, whose clock? (§4.4)
    ``2026-11-23T12:00Z``, ``...+0100``,   rejected  not the §5.6 ABNF (seconds and the offset's
    ``...+01``, ``...,5Z``, ``20261123T``            colon are required, the fraction uses '.')
    ``2026-11-23``, ``1700000000``, 17e8   rejected  a date, or epoch seconds, is not a date-time
    ``2026-02-30T...``, ``T24:00:00Z``,    rejected  no such date or time (§5.7)
    ``+24:00`` offset
    years before 1677-09-21 or after       rejected  outside InfluxDB 1.x's int64-nanosecond
    2262-04-11 (UTC)                                 time range (:data:`STORE_TIME_MIN`/``MAX``)
    =====================================  ========  ===========================================

    Errors: raises ``PydanticCustomError`` of type ``rfc3339_timestamp``, which
    :func:`decode` counts as ``bad_timestamp``.
    """
    if type(value) is str and _RFC3339_UTC.fullmatch(value):
        try:
            fast = datetime.fromisoformat(value)  # aware, UTC: the pattern ends in 'Z'
        except ValueError:
            pass  # no such date or time: the full parser says why
        else:
            if STORE_TIME_MIN <= fast <= STORE_TIME_MAX:
                return fast
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise _bad_timestamp(value, "no UTC offset (naive)")
        at = value
    elif isinstance(value, str):
        at = _parse_rfc3339(value)
    else:
        raise _bad_timestamp(value, f"expected a string, got {type(value).__name__}")
    try:
        at = at.astimezone(UTC)
    except OverflowError:
        raise _bad_timestamp(value, "outside the range of time the store can hold") from None
    if not STORE_TIME_MIN <= at <= STORE_TIME_MAX:
        raise _bad_timestamp(value, "outside the range of time the store can hold")
    return at


def _parse_rfc3339(text: str) -> datetime:
    m = _RFC3339.fullmatch(text)
    if m is None:
        if len(text) >= 11 and text[10] == " ":
            raise _bad_timestamp(text, "date and time must be separated by 'T', not a space")
        if _RFC3339.fullmatch(text + "Z"):
            raise _bad_timestamp(text, "no UTC offset (naive)")
        raise _bad_timestamp(text, "expected YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, offset = m.group(7), m.group(8)
    micro = int((frac or "0")[:6].ljust(6, "0"))  # truncated, not rounded
    if offset in ("Z", "z"):
        tz = UTC
    else:
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            raise _bad_timestamp(text, "offset hour must be 00-23 and minute 00-59")
        delta = timedelta(hours=oh, minutes=om)
        tz = timezone(-delta if offset[0] == "-" else delta)
    leap = second == 60
    try:
        if leap:
            at = datetime(year, month, day, hour, minute, 59, 999_999, tzinfo=tz)
        else:
            at = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise _bad_timestamp(text, str(exc)) from None
    if leap:
        try:
            utc = at.astimezone(UTC)
            next_day = (utc + timedelta(seconds=1)).day
        except OverflowError:
            raise _bad_timestamp(text, "outside the range of time the store can hold") from None
        if (utc.hour, utc.minute) != (23, 59) or next_day != 1:
            raise _bad_timestamp(text, "a leap second (:60) falls at 23:59:60 UTC on a month's last day")
    return at


#: An RFC 3339 date-time, normalised to UTC (see :func:`parse_timestamp`).
Timestamp = Annotated[AwareDatetime, BeforeValidator(parse_timestamp)]


def new_reading_id() -> str:
    """A fresh, globally unique reading id (32 hex chars)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Annotated[int, Field(ge=1, le=MAX_WIRE_INT)] = SCHEMA_VERSION
    device_id: Ident
    observed_at: Timestamp
    reading_id: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    #: The device's reading sequence (optional; our edge always sends both).
    #: ``seq`` grows with every reading the device makes and never goes back
    #: while ``epoch`` stays the same; ``epoch`` names the sequence and changes
    #: only when the device's store is reset. Within one epoch, ``seq`` orders a
    #: device's readings whatever its clock does; wall time (``observed_at``) is
    #: for display and history. The pair is also what the gateway confirms
    #: (``contracts.confirm``). ``seq`` is at most MAX_WIRE_INT (exact in every JSON reader, inside InfluxDB's int64).
    epoch: Ident | None = None
    seq: Annotated[int, Field(ge=0, le=MAX_WIRE_INT)] | None = None

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
    interval_start: Timestamp
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
    fps: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
    #: Frames lost since the camera process started.
    dropped_frames: Annotated[int, Field(ge=0, le=MAX_WIRE_INT)]
    last_frame_age_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)] | None = None


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
    uptime_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)] | None = None
    battery_pct: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    signal_dbm: Annotated[float, Field(ge=-150, le=0, allow_inf_nan=False)] | None = None
    firmware: Annotated[str, Field(max_length=64)] | None = None
    cameras: list[CameraHealth] = Field(default_factory=list, max_length=16)
    #: Readings waiting in the device's store-and-forward outbox.
    outbox_pending: Annotated[int, Field(ge=0, le=MAX_WIRE_INT)] | None = None


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


_DEFAULT_POLICY = TimePolicy()
_DEFAULT_LIMITS = (timedelta(seconds=_DEFAULT_POLICY.max_future_s), timedelta(seconds=_DEFAULT_POLICY.max_age_s))


def decode(payload: bytes, *, now: datetime | None = None, policy: TimePolicy | None = None) -> Message:
    """Parse and validate one payload; raise :class:`MessageRejected`.

    Never raises anything else, whatever the bytes are. Reasons: ``too_large``;
    ``not_json`` (not RFC 8259 JSON, including the tokens ``Infinity``/``NaN``,
    §6); ``unknown_kind``; ``missing_field``; ``wrong_type``; ``bad_timestamp``
    (not an RFC 3339 §5.6 date-time, see :func:`parse_timestamp`);
    ``invalid_value`` (out of range, including non-finite numbers such as
    ``1e999``); ``unsupported_version``; ``future_timestamp``;
    ``stale_timestamp``.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageRejected("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    if b"Infinity" in payload or b"NaN" in payload:
        # pydantic's JSON parser accepts these tokens (and skips them in ignored
        # keys); a strict parse tells a token from the same letters in a string.
        try:
            pydantic_core.from_json(payload, allow_inf_nan=False)
        except ValueError as exc:
            raise MessageRejected("not_json", f"{exc} (Infinity and NaN are not JSON, RFC 8259 §6)") from None
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
    future, age = _limits(policy)
    now = now or utcnow()
    if observed_at > now + future:
        raise MessageRejected(
            "future_timestamp", f"observed_at {observed_at.isoformat()} is ahead of {now.isoformat()}"
        )
    if past and observed_at < now - age:
        raise MessageRejected(
            "stale_timestamp", f"observed_at {observed_at.isoformat()} is older than {age.total_seconds():.0f} s"
        )


def _limits(policy: TimePolicy | None) -> tuple[timedelta, timedelta]:
    """(max future, max age) of ``policy``; the default policy's are computed once."""
    if policy is None:
        return _DEFAULT_LIMITS
    return timedelta(seconds=policy.max_future_s), timedelta(seconds=policy.max_age_s)


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
    if error_type in (
        "rfc3339_timestamp",
        "timezone_aware",
        "datetime_parsing",
        "datetime_from_date_parsing",
        "datetime_type",
    ):
        return "bad_timestamp"
    if error_type == "finite_number":
        return "invalid_value"
    if error_type == "value_error":
        return "invalid_value"
    if error_type.endswith("_type") or error_type.endswith("_parsing"):
        return "wrong_type"
    return "invalid_value"
