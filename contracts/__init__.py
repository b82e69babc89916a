"""The shared contract: wire messages, topics, site configuration, storage schema.

Imported by edge, gateway, server and firmware_sim; imports none of them.
"""

from __future__ import annotations

from datetime import datetime

from contracts import topics
from contracts.messages import (
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    CameraHealth,
    DeviceStatus,
    FootfallCount,
    LineCount,
    LockerCompartmentState,
    Message,
    MessageRejected,
    ParkingBayState,
    TimePolicy,
    decode,
    encode,
    new_reading_id,
    utcnow,
)
from contracts.site import SiteConfig

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "CameraHealth",
    "DeviceStatus",
    "FootfallCount",
    "LineCount",
    "LockerCompartmentState",
    "Message",
    "MessageRejected",
    "ParkingBayState",
    "SiteConfig",
    "TimePolicy",
    "decode",
    "encode",
    "new_reading_id",
    "receive",
    "topics",
    "utcnow",
]


def receive(
    topic: str,
    payload: bytes,
    *,
    prefix: str,
    site: SiteConfig | None = None,
    now: datetime | None = None,
    policy: TimePolicy | None = None,
) -> tuple[topics.Topic, Message]:
    """Validate one received MQTT message: topic, payload, and their agreement.

    With a site configuration, readings about lots, bays, banks or
    compartments the site does not have are rejected too (``unknown_entity``),
    and so are readings about an entity the publishing device does not own
    (``not_owner``, :mod:`contracts.ownership`). Raises
    :class:`MessageRejected` (never anything else) with a countable reason.
    """
    try:
        where = topics.parse(topic, prefix)
    except topics.TopicError as exc:
        raise MessageRejected("bad_topic", str(exc)) from None
    message = decode(payload, now=now, policy=policy)
    if message.kind != where.kind:
        raise MessageRejected("kind_mismatch", f"topic says {where.kind!r}, payload says {message.kind!r}")
    if message.device_id != where.device_id:
        raise MessageRejected("device_mismatch", f"topic says {where.device_id!r}, payload says {message.device_id!r}")
    if site is not None:
        if where.site_id != site.site.id:
            raise MessageRejected("unknown_site", f"site {where.site_id!r} is not {site.site.id!r}")
        _check_entities(message, site)
        site.ownership.check(message)
    return where, message


def _check_entities(message: Message, site: SiteConfig) -> None:
    if isinstance(message, ParkingBayState):
        bays = site.bays_by_lot.get(message.lot_id)
        if bays is None:
            raise MessageRejected("unknown_entity", f"parking lot {message.lot_id!r} is not in the site configuration")
        if message.bay_id not in bays:
            raise MessageRejected("unknown_entity", f"bay {message.bay_id!r} is not in lot {message.lot_id!r}")
    elif isinstance(message, LockerCompartmentState):
        comps = site.compartments_by_bank.get(message.bank_id)
        if comps is None:
            raise MessageRejected("unknown_entity", f"locker bank {message.bank_id!r} is not in the site configuration")
        if message.compartment_id not in comps:
            raise MessageRejected(
                "unknown_entity", f"compartment {message.compartment_id!r} is not in bank {message.bank_id!r}"
            )
    elif isinstance(message, FootfallCount) and message.zone_id not in site.zone_ids:
        raise MessageRejected("unknown_entity", f"zone {message.zone_id!r} is not in the site configuration")
