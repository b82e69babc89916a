"""How messages are stored in InfluxDB (1.x data model): the second contract.

The gateway writes with :func:`to_points`; the server reads with the names
defined here, so neither hard-codes the other's schema.

A point's key is measurement + tags + timestamp. Timestamps are the device's
``observed_at`` at nanosecond precision, so two different readings of one bay
never collide (a bridge that rounded to seconds kept 60 of 2,000 readings),
while the *same* reading sent twice (QoS 1 redelivery, store-and-forward
replay) overwrites itself: storage is idempotent per reading.
"""

from __future__ import annotations

from datetime import datetime

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


def to_points(message: Message, *, site_id: str, received_at: datetime) -> list[Point]:
    """The InfluxDB points one message becomes (usually one)."""
    base_tags = {"site": site_id, "device": message.device_id}
    recv_ns = _ns(received_at)
    if isinstance(message, ParkingBayState):
        p = _point(M_PARKING_BAY, base_tags, message.observed_at)
        p.tag("lot", message.lot_id).tag("bay", message.bay_id)
        p.field("status", message.status)
        if message.status in OCCUPIED_VALUE:
            p.field("occupied", OCCUPIED_VALUE[message.status])
        return [_common(p, message, recv_ns)]
    if isinstance(message, LockerCompartmentState):
        p = _point(M_LOCKER, base_tags, message.observed_at)
        p.tag("bank", message.bank_id).tag("compartment", message.compartment_id)
        p.field("status", message.status).field("door", message.door)
        return [_common(p, message, recv_ns)]
    if isinstance(message, FootfallCount):
        interval_s = (message.observed_at - message.interval_start).total_seconds()
        if message.camera_id is not None:
            base_tags = {**base_tags, "camera": message.camera_id}
        points = []
        for line in message.lines:
            p = _point(M_FOOTFALL, base_tags, message.observed_at)
            p.tag("zone", message.zone_id).tag("line", line.line_id)
            p.field("towards", line.towards).field("away", line.away).field("interval_s", float(interval_s))
            points.append(_common(p, message, recv_ns))
        if message.occupancy is not None:
            p = _point(M_ZONE_OCCUPANCY, base_tags, message.observed_at)
            p.tag("zone", message.zone_id).field("occupancy", message.occupancy)
            points.append(_common(p, message, recv_ns))
        return points
    if isinstance(message, DeviceStatus):
        p = _point(M_DEVICE_STATUS, base_tags, message.observed_at)
        p.field("state", message.state)
        for name in ("reason", "uptime_s", "battery_pct", "signal_dbm", "firmware", "outbox_pending"):
            value = getattr(message, name)
            if value is not None:
                p.field(name, float(value) if isinstance(value, (int, float)) and name != "outbox_pending" else value)
        points = [_common(p, message, recv_ns)]
        for cam in message.cameras:
            c = _point(M_CAMERA_HEALTH, base_tags, message.observed_at)
            c.tag("camera", cam.camera_id).field("state", cam.state).field("fps", float(cam.fps))
            c.field("dropped_frames", cam.dropped_frames)
            if cam.last_frame_age_s is not None:
                c.field("last_frame_age_s", float(cam.last_frame_age_s))
            points.append(_common(c, message, recv_ns))
        return points
    raise TypeError(f"no storage mapping for {type(message).__name__}")  # pragma: no cover


def _point(measurement: str, tags: dict[str, str], at: datetime) -> Point:
    p = Point(measurement)
    for key, value in tags.items():
        p.tag(key, value)
    p.time(_ns(at), WritePrecision.NS)
    return p


def _common(p: Point, message: Message, recv_ns: int) -> Point:
    p.field("reading_id", message.reading_id).field("received_ns", recv_ns)
    return p


def _ns(at: datetime) -> int:
    # datetime carries microseconds; integer arithmetic avoids float rounding.
    return (int(at.timestamp()) * 1_000_000 + at.microsecond) * 1000
