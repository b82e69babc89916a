"""How every component opens its persistent MQTT session, over MQTT 3.1.1 or 5: one place, one setting.

Mosquitto speaks MQTT 5; the clustered brokers on Debian 12 (RabbitMQ 3.10's
MQTT plugin, NATS 2.9's JetStream MQTT) speak 3.1.1 only: a v5 CONNECT gets
no CONNACK or return code 1 (``../shared/research/clustered-brokers.md`` §0).
So edge, gateway and server each take one ``protocol`` setting (``"5"`` or
``"3.1.1"``) and build their paho client through :class:`SessionSpec`:

* MQTT 5: ``clean_start=False`` (or first-only) and a ``SessionExpiryInterval``
  property on CONNECT, and ``ReceiveMaximum`` when asked;
* MQTT 3.1.1: ``clean_session=False`` with the same fixed client id. There is
  no session expiry on the wire: the broker's own setting governs how long it
  keeps an absent client's session (Mosquitto ``persistent_client_expiration``,
  RabbitMQ ``mqtt.subscription_ttl``, 24 h by default, NATS
  ``mqtt.consumer_inactive_threshold``), and no receive maximum (RabbitMQ
  ``mqtt.prefetch``, NATS ``mqtt.max_ack_pending``, Mosquitto
  ``max_inflight_messages``).

Nothing the project needs travels only in MQTT 5 properties or reason codes:
payloads carry every field (docs/protocol.md), paho 2.x reports a 3.1.1
CONNACK return code and a SUBACK 0x80 as failing :class:`~paho.mqtt.reasoncodes.ReasonCode`
as it does for 5, and a refused 3.1.1 PUBLISH is never acknowledged at all
(the client re-sends after its confirmation timeout).

A client may know several broker addresses (the nodes of a cluster):
:func:`parse_brokers` reads ``host:port,host:port``, and
:func:`rotate_to` points a paho client at the next one after a failed or lost
connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

#: The protocol setting's values; ``"5"`` is the default everywhere.
MqttProtocol = Literal["3.1.1", "5"]
PROTOCOLS: dict[str, MQTTProtocolVersion] = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


class BrokerListError(ValueError):
    """A broker list that is not ``host:port[,host:port...]``."""


def parse_brokers(text: str, default_port: int = 1883) -> list[tuple[str, int]]:
    """``"a:1883, b:1884, c"`` -> ``[("a", 1883), ("b", 1884), ("c", default_port)]``.

    ``[::1]:1883`` for an IPv6 literal. Raises :class:`BrokerListError` for an
    empty list, an empty host, or a port outside 1-65535.
    """
    out: list[tuple[str, int]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        host, port = item, default_port
        if item.startswith("["):
            end = item.find("]")
            if end < 0:
                raise BrokerListError(f"broker {item!r}: unclosed '['")
            host, rest = item[1:end], item[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise BrokerListError(f"broker {item!r}: expected ':port' after ']'")
                port = _port(item, rest[1:])
        elif item.count(":") == 1:
            host, text_port = item.split(":")
            port = _port(item, text_port)
        if not host:
            raise BrokerListError(f"broker {item!r}: no host")
        out.append((host, port))
    if not out:
        raise BrokerListError("the broker list is empty")
    return out


def _port(item: str, text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise BrokerListError(f"broker {item!r}: port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise BrokerListError(f"broker {item!r}: port {port} is outside 1-65535")
    return port


def broker_list(host: str, port: int, brokers: str | None) -> list[tuple[str, int]]:
    """The addresses to try in order: ``brokers`` when set (``host:port,...``), else ``host``:``port``."""
    return parse_brokers(brokers, port) if brokers else [(host, port)]


def rotate_to(client: mqtt.Client, host: str, port: int) -> None:
    """Point a paho client that is not connected at ``host``:``port`` for its next (re)connect.

    paho 2.x's ``host``/``port`` setters refuse while its loop is between
    states (inside ``on_disconnect``/``on_connect_fail``), and it has no
    address list of its own, so this sets the two attributes its
    ``reconnect()`` reads. Pinned by tests/unit/common/test_mqtt_session.py.
    """
    client._host = host
    client._port = port


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """A persistent session: protocol, client id and (MQTT 5) its expiry.

    ``persistent=False``: a clean session each time (3.1.1 ``clean_session=True``,
    5 ``clean_start=True`` and expiry 0), for a client without a stable id.
    ``first_clean``: MQTT 5 only, start clean on the first connect and resume
    on reconnects (``MQTT_CLEAN_START_FIRST_ONLY``); 3.1.1 has no such mode
    and resumes (or, with a fresh id, starts) a persistent session.
    """

    protocol: MqttProtocol
    client_id: str
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int | None = None
    persistent: bool = True
    first_clean: bool = False

    @property
    def v5(self) -> bool:
        return self.protocol == "5"

    def client(self, **kwargs: Any) -> mqtt.Client:
        """A paho 2.x client (callback API 2) for this session; ``kwargs`` go to ``mqtt.Client``."""
        if not self.v5:
            kwargs["clean_session"] = not self.persistent
        return mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=PROTOCOLS[self.protocol], **kwargs
        )

    def connect_kwargs(self) -> dict[str, Any]:
        """Keywords for ``connect``/``connect_async`` beyond host, port and keepalive."""
        if not self.v5:
            return {}
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s if self.persistent else 0
        if self.receive_maximum is not None:
            props.ReceiveMaximum = self.receive_maximum
        clean: Any = True
        if self.persistent:
            clean = mqtt.MQTT_CLEAN_START_FIRST_ONLY if self.first_clean else False
        return {"clean_start": clean, "properties": props}

    def subscription(self, topic: str, *, retained_again: bool = True) -> list[tuple[str, Any]]:
        """``subscribe()``'s argument for one QoS 1 filter.

        ``retained_again=False`` asks an MQTT 5 broker not to resend retained
        messages for a subscription the session already had (Retain Handling 1);
        3.1.1 has no such option and the broker resends them (harmless:
        every message is idempotent).
        """
        if not self.v5:
            return [(topic, 1)]
        handling = (
            SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE if retained_again else SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
        )
        return [(topic, SubscribeOptions(qos=1, retainHandling=handling))]


def describe(addresses: Sequence[tuple[str, int]]) -> str:
    """``mqtt://a:1883, mqtt://b:1884`` for logs."""
    return ", ".join(f"mqtt://{h}:{p}" for h, p in addresses)
