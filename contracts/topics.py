"""The MQTT topic scheme, version 1. Topics are built and parsed here only.

    {prefix}/v1/{site_id}/{device_id}/{kind}

``kind`` is the message kind (``parking_bay``, ``locker``, ``footfall``,
``status``), or a control kind that flows the other way: ``stored``, the
gateway's end-to-end confirmation to the device (:mod:`contracts.confirm`).
The major version sits in the topic so a future v2 can run beside v1 on one
broker; additive changes stay in v1 and bump nothing. ``status`` is
retained and is every device's last will (``offline``).

Examples::

    district/v1/dresden/lot-altmarkt-bus/parking_bay
    district/v1/dresden/cam-altmarkt-1/footfall
    district/v1/dresden/cam-altmarkt-1/status      (retained)
    district/v1/dresden/sensor~2E1/parking_bay    (device id ``sensor.1``)

Every level is valid on every broker the project runs on: an id may contain
``.`` (``contracts.messages.ID_PATTERN``), which NATS 2.9 refuses in a topic
(it closes the connection) and RabbitMQ's MQTT plugin rewrites to ``/``
(``../shared/research/clustered-brokers.md`` §1). So :func:`encode_level`
writes ``.`` as ``~2E`` (and ``~``, which no id contains, as ``~7E``) in the
site, device and prefix levels, and :func:`parse` decodes them. An id without
``.`` is its own topic level, so existing topics are unchanged. Only the
canonical form parses: a raw ``.`` or ``~41`` for ``A`` is refused, so one id
has one topic. docs/protocol.md "Topics".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.messages import ID_PATTERN, MESSAGE_KINDS

TOPIC_VERSION = "v1"
#: Kinds that are not readings: published to a device, never stored.
CONTROL_KINDS = ("stored",)
STORED = "stored"
DEFAULT_PREFIX = "district"

_ID = re.compile(ID_PATTERN)
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class TopicError(ValueError):
    """A topic that is not one of ours."""


#: Characters written as ``~XX`` (two upper-case hex digits) in a topic level: ``.`` (refused by NATS,
#: rewritten by RabbitMQ) and the escape character itself.
_ESCAPED = re.compile(r"[.~]")
_ESCAPE = re.compile(r"~([0-9A-F]{2})")


def encode_level(value: str) -> str:
    """An id (or prefix level) as it appears in a topic level: ``sensor.1`` -> ``sensor~2E1``."""
    return _ESCAPED.sub(lambda m: f"~{ord(m.group()):02X}", value)


def decode_level(level: str) -> str:
    """The id a topic level stands for (inverse of :func:`encode_level`).

    Raises :class:`TopicError` for a ``~`` that is not followed by two hex
    digits, or a level that is not the canonical encoding of what it decodes to.
    """
    if "~" not in level and "." not in level:
        return level
    value = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), level)
    if encode_level(value) != level:
        raise TopicError(f"topic level {level[:80]!r} is not a canonical encoding (~2E for '.', ~7E for '~')")
    return value


def _prefix_levels(prefix: str) -> str:
    return "/".join(encode_level(level) for level in prefix.split("/"))


@dataclass(frozen=True, slots=True)
class Topic:
    prefix: str
    site_id: str
    device_id: str
    kind: str

    def __str__(self) -> str:
        site, device = encode_level(self.site_id), encode_level(self.device_id)
        return f"{_prefix_levels(self.prefix)}/{TOPIC_VERSION}/{site}/{device}/{self.kind}"


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise TopicError(f"bad topic prefix {prefix!r}: use letters, digits, '_', '.', '-' and '/' between levels")
    return prefix


def build(prefix: str, site_id: str, device_id: str, kind: str) -> str:
    """The topic a device publishes ``kind`` messages on."""
    check_prefix(prefix)
    for name, value in (("site_id", site_id), ("device_id", device_id)):
        if not _ID.match(value):
            raise TopicError(f"bad {name} {value!r}")
    if kind not in MESSAGE_KINDS and kind not in CONTROL_KINDS:
        raise TopicError(f"unknown kind {kind!r}")
    return str(Topic(prefix, site_id, device_id, kind))


def status_topic(prefix: str, site_id: str, device_id: str) -> str:
    return build(prefix, site_id, device_id, "status")


def stored_topic(prefix: str, site_id: str, device_id: str) -> str:
    """Where the gateway confirms what it stored of ``device_id``'s readings (QoS 1, not retained)."""
    return build(prefix, site_id, device_id, STORED)


def everything(prefix: str) -> str:
    """Filter for every topic under ``prefix``: readings, control, and whatever else arrives there."""
    check_prefix(prefix)
    return f"{_prefix_levels(prefix)}/#"


#: The level after the site id under which the server publishes its alerts (retained):
#: ``{prefix}/v1/{site}/alerts/{kind}/{subject type}/{subject id}``. Six levels after the prefix,
#: where a reading has exactly three, so no reading filter matches it and no reading is taken for one.
ALERTS = "alerts"


def alert_topic(prefix: str, site_id: str, kind: str, subject_type: str, subject_id: str) -> str:
    """Where an alert about ``subject_type``/``subject_id`` is published (retained; empty payload: cleared)."""
    check_prefix(prefix)
    levels = (site_id, ALERTS, kind, subject_type, subject_id)
    return "/".join((_prefix_levels(prefix), TOPIC_VERSION, *(encode_level(v) for v in levels)))


def alerts_filter(prefix: str, site_id: str = "+") -> str:
    """Filter for every alert of a site."""
    check_prefix(prefix)
    return f"{_prefix_levels(prefix)}/{TOPIC_VERSION}/{_site_level(site_id)}/{ALERTS}/#"


def is_control(topic: str, prefix: str) -> bool:
    """Whether ``topic`` is one of ours but carries control traffic (not a reading): a confirmation
    (``.../{device}/stored``) or an alert (``.../{site}/alerts/...``)."""
    head = f"{_prefix_levels(prefix)}/{TOPIC_VERSION}/"
    if not topic.startswith(head):
        return False
    parts = topic[len(head) :].split("/")
    if len(parts) >= 4 and parts[1] == ALERTS:
        return True
    return len(parts) == 3 and parts[2] in CONTROL_KINDS


def subscription(prefix: str, site_id: str = "+", kind: str = "+") -> str:
    """Filter for every device's ``kind`` messages (all kinds by default)."""
    check_prefix(prefix)
    return f"{_prefix_levels(prefix)}/{TOPIC_VERSION}/{_site_level(site_id)}/+/{kind}"


def device_filter(prefix: str, site_id: str, device_id: str) -> str:
    """Filter for every message kind of one device (a gateway shard, :mod:`gateway.shards`)."""
    check_prefix(prefix)
    if not _ID.match(device_id):
        raise TopicError(f"bad device_id {device_id!r}")
    return f"{_prefix_levels(prefix)}/{TOPIC_VERSION}/{_site_level(site_id)}/{encode_level(device_id)}/+"


def _site_level(site_id: str) -> str:
    return site_id if site_id == "+" else encode_level(site_id)


def parse(topic: str, prefix: str) -> Topic:
    """Split a topic into its parts; raise :class:`TopicError` if it is not ours."""
    head = f"{_prefix_levels(prefix)}/{TOPIC_VERSION}/"
    if not topic.startswith(head):
        raise TopicError(f"topic {topic[:120]!r} is outside {head!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 3:
        raise TopicError(f"topic {topic[:120]!r} needs site/device/kind after {head!r}")
    site_id, device_id, kind = decode_level(parts[0]), decode_level(parts[1]), parts[2]
    if not _ID.match(site_id) or not _ID.match(device_id):
        raise TopicError(f"topic {topic[:120]!r} has a bad site or device id")
    if kind not in MESSAGE_KINDS:
        raise TopicError(f"topic {topic[:120]!r} has unknown kind {kind!r}")
    return Topic(prefix, site_id, device_id, kind)
