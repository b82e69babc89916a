"""How messages are stored in InfluxDB (1.x data model): the second contract.

The gateway writes with :func:`to_points`; the server reads with the names
defined here (:class:`LastStates` says what its bootstrap reads of each
resource, :data:`FOOTFALL_FIELDS` what it reads of footfall intervals), so
neither hard-codes the other's schema. A point is described by :class:`StoredPoint`
(measurement, tags, fields, time in ns), free of any client library: the
gateway's InfluxDB sink (``gateway/influx.py``) turns it into line protocol.

A point's key is measurement + tags + timestamp. The timestamp is the
device's ``observed_at`` (microseconds) plus a tie-breaker in the three
nanosecond digits below it (:func:`point_ns`): the device's ``seq`` modulo
1000 when it sends one, else a hash of the ``reading_id``. So two distinct
readings of one bay stamped in the same second by a whole-second clock keep
two points, while the *same* reading sent twice (QoS 1 redelivery,
store-and-forward replay) lands on the same key and overwrites itself:
storage is idempotent per reading.

A live last will (``status`` ``offline`` delivered by the broker, not a
retained copy) is stored at the moment it was received: its ``observed_at`` is
when the will was registered, possibly weeks earlier, and storing it there
would leave ``last(state)`` at the heartbeats that followed.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contracts.messages import (
    DeviceStatus,
    FootfallCount,
    LockerCompartmentState,
    Message,
    ParkingBayState,
)

M_PARKING_BAY = "parking_bay"
M_LOCKER = "locker_compartment"
M_FOOTFALL = "footfall"
M_ZONE_OCCUPANCY = "zone_occupancy"
M_DEVICE_STATUS = "device_status"
M_CAMERA_HEALTH = "camera_health"
#: The gateway's own counters (tags: gateway, site; see :func:`gateway_stats_point`).
M_GATEWAY_STATS = "gateway_stats"

#: Numeric shadow of ParkingSpot.status so history can be aggregated.
OCCUPIED_VALUE = {"free": 0, "occupied": 1}


#: Tag names, as the server's queries read them.
TAG_SITE = "site"
TAG_DEVICE = "device"
TAG_LOT = "lot"
TAG_BAY = "bay"
TAG_BANK = "bank"
TAG_COMPARTMENT = "compartment"
TAG_CAMERA = "camera"
TAG_ZONE = "zone"
TAG_LINE = "line"
TAG_GATEWAY = "gateway"
#: Fields every reading point carries besides its own.
F_READING_ID = "reading_id"
F_RECEIVED_NS = "received_ns"
F_EPOCH = "epoch"
F_SEQ = "seq"
#: Fields of ``parking_bay``: ``status`` (str), ``occupied`` (int 0/1, only when free/occupied).
F_STATUS = "status"
F_OCCUPIED = "occupied"
#: Fields of ``device_status`` besides ``state``; ``outbox_pending`` an int, the others float or str.
DEVICE_STATUS_FIELDS = ("reason", "uptime_s", "battery_pct", "signal_dbm", "firmware", "outbox_pending")
#: The point time column InfluxDB returns (``epoch=ns``: int ns, see :func:`from_ns`).
TIME = "time"

#: Fields of ``locker_compartment`` besides ``status``: the door, ``open``/``closed``/``unknown``.
F_DOOR = "door"
#: Fields of ``footfall`` (one point per line and interval) and ``zone_occupancy``.
F_TOWARDS = "towards"
F_AWAY = "away"
F_INTERVAL_S = "interval_s"
F_OCCUPANCY = "occupancy"


@dataclass(frozen=True, slots=True)
class LastStates:
    """What the server's bootstrap reads of one entity resource: each entity's last point.

    Points of ``measurement`` grouped by (``group_tag``, ``entity_tag``): the
    ``status`` field (one of ``statuses``), ``detail`` (a second state word, or
    None), and the reading's id, receive time (int ns) and sequence.
    """

    measurement: str
    group_tag: str
    entity_tag: str
    statuses: frozenset[str]
    detail: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields read, ``status`` first (the ``last()`` selector the others follow)."""
        return (F_STATUS, F_READING_ID, F_RECEIVED_NS, F_EPOCH, F_SEQ) + ((self.detail,) if self.detail else ())


#: Each bay's last ``parking_bay`` point.
BAY_HISTORY = LastStates(M_PARKING_BAY, TAG_LOT, TAG_BAY, frozenset({"free", "occupied", "closed", "unknown"}))
#: Each locker compartment's last ``locker_compartment`` point, with its door.
LOCKER_HISTORY = LastStates(
    M_LOCKER, TAG_BANK, TAG_COMPARTMENT, frozenset({"free", "occupied", "out_of_service", "unknown"}), F_DOOR
)
#: What a bay bootstrap reads (kept for readers of the first schema version).
BAY_STATE_FIELDS = BAY_HISTORY.fields
#: What the server reads of recent ``footfall`` points, grouped by zone, camera and line.
FOOTFALL_FIELDS = (F_TOWARDS, F_AWAY, F_INTERVAL_S, F_READING_ID, F_RECEIVED_NS)

#: A field value: str, int (line protocol ``i``), float or bool.
FieldValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """One point as stored: ``measurement``, ``tags`` (name -> value), ``fields`` (name -> value), ``time_ns``.

    ``time_ns`` is integer nanoseconds since the Unix epoch (:func:`to_ns`).
    The key of a point is measurement + tags + time: writing it twice stores it once.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int


_EPOCH_1970 = datetime(1970, 1, 1, tzinfo=UTC)


def to_ns(at: datetime) -> int:
    """``at`` (timezone-aware) as integer nanoseconds since the Unix epoch (exact, also before 1970)."""
    delta = at - _EPOCH_1970
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000


def from_ns(ns: int) -> datetime:
    """Inverse of :func:`to_ns` (UTC, to the microsecond; the tie-breaker digits are dropped)."""
    return _EPOCH_1970 + timedelta(microseconds=ns // 1000)


def ns_to_s(ns: int) -> float:
    """Integer nanoseconds since the Unix epoch (e.g. ``received_ns``) as POSIX seconds (float)."""
    return ns / 1e9


def tiebreak(message: Message) -> int:
    """0..999: the nanosecond digits that keep same-microsecond readings apart.

    ``seq % 1000`` when the device numbers its readings (consecutive readings
    then never collide, and a later one sorts later); else CRC-32 of the
    ``reading_id`` modulo 1000, so two readings of one series stamped in the
    same microsecond collide with probability 1/1000 (devices that stamp whole
    seconds should send ``seq``).
    """
    if message.seq is not None:
        return message.seq % 1000
    return zlib.crc32(message.reading_id.encode()) % 1000


def point_ns(message: Message, *, received_at: datetime | None = None, live_will: bool = False) -> int:
    """The timestamp (ns) of the message's points: ``observed_at`` plus :func:`tiebreak`.

    ``live_will``: a last will delivered live is stored at ``received_at``.
    """
    at = received_at if live_will and received_at is not None else message.observed_at
    return to_ns(at) + tiebreak(message)


def is_live_will(message: Message, *, retained: bool) -> bool:
    """An ``offline`` status the broker delivered live (not a retained copy): the device went away now."""
    return isinstance(message, DeviceStatus) and message.state == "offline" and not retained


def point_count(message: Message) -> int:
    """How many points :func:`to_points` makes of ``message`` (without building them; 1 for an unknown kind)."""
    if isinstance(message, FootfallCount):
        return len(message.lines) + (message.occupancy is not None)
    if isinstance(message, DeviceStatus):
        return 1 + len(message.cameras)
    return 1


def to_points(message: Message, *, site_id: str, received_at: datetime, retained: bool = False) -> list[StoredPoint]:
    """The points one message becomes (usually one; see :func:`point_count`).

    ``received_at``: when the gateway received it (timezone-aware; stored as
    ``received_ns``). ``retained``: the broker delivered a retained copy (on
    subscribing), not the live publish. Raises TypeError for a message kind
    without a mapping.
    """
    base_tags = {TAG_SITE: site_id, TAG_DEVICE: message.device_id}
    common = _common_fields(message, to_ns(received_at))
    at = point_ns(message, received_at=received_at, live_will=is_live_will(message, retained=retained))
    if isinstance(message, ParkingBayState):
        fields: dict[str, FieldValue] = {F_STATUS: message.status}
        if message.status in OCCUPIED_VALUE:
            fields[F_OCCUPIED] = OCCUPIED_VALUE[message.status]
        tags = {**base_tags, TAG_LOT: message.lot_id, TAG_BAY: message.bay_id}
        return [StoredPoint(M_PARKING_BAY, tags, {**fields, **common}, at)]
    if isinstance(message, LockerCompartmentState):
        tags = {**base_tags, TAG_BANK: message.bank_id, TAG_COMPARTMENT: message.compartment_id}
        return [StoredPoint(M_LOCKER, tags, {F_STATUS: message.status, F_DOOR: message.door, **common}, at)]
    if isinstance(message, FootfallCount):
        interval_s = (message.observed_at - message.interval_start).total_seconds()
        if message.camera_id is not None:
            base_tags = {**base_tags, TAG_CAMERA: message.camera_id}
        points = [
            StoredPoint(
                M_FOOTFALL,
                {**base_tags, TAG_ZONE: message.zone_id, TAG_LINE: line.line_id},
                {F_TOWARDS: line.towards, F_AWAY: line.away, F_INTERVAL_S: float(interval_s), **common},
                at,
            )
            for line in message.lines
        ]
        if message.occupancy is not None:
            tags = {**base_tags, TAG_ZONE: message.zone_id}
            points.append(StoredPoint(M_ZONE_OCCUPANCY, tags, {F_OCCUPANCY: message.occupancy, **common}, at))
        return points
    if isinstance(message, DeviceStatus):
        fields = {"state": message.state}
        for name in DEVICE_STATUS_FIELDS:
            value = getattr(message, name)
            if value is not None:
                fields[name] = float(value) if isinstance(value, (int, float)) and name != "outbox_pending" else value
        points = [StoredPoint(M_DEVICE_STATUS, base_tags, {**fields, **common}, at)]
        for cam in message.cameras:
            cam_fields: dict[str, FieldValue] = {
                "state": cam.state,
                "fps": float(cam.fps),
                "dropped_frames": cam.dropped_frames,
            }
            if cam.last_frame_age_s is not None:
                cam_fields["last_frame_age_s"] = float(cam.last_frame_age_s)
            tags = {**base_tags, TAG_CAMERA: cam.camera_id}
            points.append(StoredPoint(M_CAMERA_HEALTH, tags, {**cam_fields, **common}, at))
        return points
    raise TypeError(f"no storage mapping for {type(message).__name__}")  # pragma: no cover


def gateway_stats_point(
    *, gateway_id: str, site_id: str, counters: Mapping[str, FieldValue], time_ns: int
) -> StoredPoint:
    """The gateway's own counters as one :data:`M_GATEWAY_STATS` point.

    ``gateway_id``: its MQTT client id (tag ``gateway``); ``site_id``: tag
    ``site``; ``counters``: field name -> value (``received``, ``acked``,
    ``rejected_<reason>``, ``write_error``, ...; see ``docs/protocol.md``);
    ``time_ns``: when they were taken (ns since the Unix epoch).
    """
    return StoredPoint(M_GATEWAY_STATS, {TAG_GATEWAY: gateway_id, TAG_SITE: site_id}, dict(counters), time_ns)


def _common_fields(message: Message, recv_ns: int) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {F_READING_ID: message.reading_id, F_RECEIVED_NS: recv_ns}
    if message.epoch is not None:
        fields[F_EPOCH] = message.epoch
    if message.seq is not None:
        fields[F_SEQ] = message.seq
    return fields
