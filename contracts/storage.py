"""How messages are stored in InfluxDB (1.x data model): the second contract.

The gateway writes with :func:`to_points`; the server reads with the names
defined here, so neither hard-codes the other's schema.

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
from datetime import UTC, datetime, timedelta

from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

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

#: Numeric shadow of ParkingSpot.status so history can be aggregated.
OCCUPIED_VALUE = {"free": 0, "occupied": 1}


#: Tag names, as the server's queries read them.
TAG_SITE = "site"
TAG_DEVICE = "device"
TAG_LOT = "lot"
TAG_BAY = "bay"
#: Fields every reading point carries besides its own.
F_READING_ID = "reading_id"
F_RECEIVED_NS = "received_ns"
F_EPOCH = "epoch"
F_SEQ = "seq"

_EPOCH_1970 = datetime(1970, 1, 1, tzinfo=UTC)


def to_ns(at: datetime) -> int:
    """``at`` (timezone-aware) as integer nanoseconds since the Unix epoch (exact, also before 1970)."""
    delta = at - _EPOCH_1970
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000


def from_ns(ns: int) -> datetime:
    """Inverse of :func:`to_ns` (to the microsecond; the tie-breaker digits are dropped)."""
    return _EPOCH_1970 + timedelta(microseconds=ns // 1000)


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


def to_points(message: Message, *, site_id: str, received_at: datetime, retained: bool = False) -> list[Point]:
    """The InfluxDB points one message becomes (usually one).

    ``retained``: the broker delivered a retained copy (on subscribing), not the live publish.
    """
    base_tags = {TAG_SITE: site_id, TAG_DEVICE: message.device_id}
    recv_ns = to_ns(received_at)
    at = point_ns(message, received_at=received_at, live_will=is_live_will(message, retained=retained))
    if isinstance(message, ParkingBayState):
        p = _point(M_PARKING_BAY, base_tags, at)
        p.tag(TAG_LOT, message.lot_id).tag(TAG_BAY, message.bay_id)
        p.field("status", message.status)
        if message.status in OCCUPIED_VALUE:
            p.field("occupied", OCCUPIED_VALUE[message.status])
        return [_common(p, message, recv_ns)]
    if isinstance(message, LockerCompartmentState):
        p = _point(M_LOCKER, base_tags, at)
        p.tag("bank", message.bank_id).tag("compartment", message.compartment_id)
        p.field("status", message.status).field("door", message.door)
        return [_common(p, message, recv_ns)]
    if isinstance(message, FootfallCount):
        interval_s = (message.observed_at - message.interval_start).total_seconds()
        if message.camera_id is not None:
            base_tags = {**base_tags, "camera": message.camera_id}
        points = []
        for line in message.lines:
            p = _point(M_FOOTFALL, base_tags, at)
            p.tag("zone", message.zone_id).tag("line", line.line_id)
            p.field("towards", line.towards).field("away", line.away).field("interval_s", float(interval_s))
            points.append(_common(p, message, recv_ns))
        if message.occupancy is not None:
            p = _point(M_ZONE_OCCUPANCY, base_tags, at)
            p.tag("zone", message.zone_id).field("occupancy", message.occupancy)
            points.append(_common(p, message, recv_ns))
        return points
    if isinstance(message, DeviceStatus):
        p = _point(M_DEVICE_STATUS, base_tags, at)
        p.field("state", message.state)
        for name in ("reason", "uptime_s", "battery_pct", "signal_dbm", "firmware", "outbox_pending"):
            value = getattr(message, name)
            if value is not None:
                p.field(name, float(value) if isinstance(value, (int, float)) and name != "outbox_pending" else value)
        points = [_common(p, message, recv_ns)]
        for cam in message.cameras:
            c = _point(M_CAMERA_HEALTH, base_tags, at)
            c.tag("camera", cam.camera_id).field("state", cam.state).field("fps", float(cam.fps))
            c.field("dropped_frames", cam.dropped_frames)
            if cam.last_frame_age_s is not None:
                c.field("last_frame_age_s", float(cam.last_frame_age_s))
            points.append(_common(c, message, recv_ns))
        return points
    raise TypeError(f"no storage mapping for {type(message).__name__}")  # pragma: no cover


def _point(measurement: str, tags: dict[str, str], at_ns: int) -> Point:
    p = Point(measurement)
    for key, value in tags.items():
        p.tag(key, value)
    p.time(at_ns, WritePrecision.NS)
    return p


def _common(p: Point, message: Message, recv_ns: int) -> Point:
    p.field(F_READING_ID, message.reading_id).field(F_RECEIVED_NS, recv_ns)
    if message.epoch is not None:
        p.field(F_EPOCH, message.epoch)
    if message.seq is not None:
        p.field(F_SEQ, message.seq)
    return p
