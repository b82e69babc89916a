"""MQTT intake: the one module that owns the gateway's paho client.

One paho-mqtt 2.x client, MQTT 5 or 3.1.1 (``mqtt_protocol``,
:mod:`common.mqtt_session`), a persistent session (``clean_start=False`` plus
a session expiry, or 3.1.1 ``clean_session=False``), so the broker queues for
the gateway while it is down and redelivers whatever it had sent but not seen
acknowledged. With ``mqtt_brokers`` (the nodes of a cluster) it moves to the
next address after a failed or lost connection. ``manual_ack``:
a message is acknowledged by :meth:`MqttIntake.ack`, which the writer calls
once InfluxDB has the message (or once a rejected one is in the dead-letter
file), in receive order.

``on_message`` stays short: it hands the message on raw (topic, payload,
retain flag, receive time) to the :class:`gateway.handoff.Inbox`, which
passes it in batches to the writer side (:mod:`gateway.processor`: validation,
batching, InfluxDB, dead letters), by default in a process of its own, so
paho's network loop has this process's interpreter lock to itself. The inbox
is bounded: when full, the network thread waits (TCP back-pressure on the
broker) instead of buffering without limit. The writer side reports what it
has stored; :class:`gateway.handoff.WriterLink` then acknowledges it here
(:meth:`MqttIntake.ack_raw`), in receive order.

Acknowledgement ids (``mid``) belong to one connection: after a reconnect the
broker resends every unacknowledged message, possibly reusing ids for new
messages once old ones are acknowledged. So each message is kept with the connection
generation it arrived on, and acks for an older generation are not sent: the
message is written anyway (idempotent) and acknowledged when its redelivered
copy comes through.

Subscription: everything under the prefix (``{prefix}/#``), so a message on a
topic that is not ours in shape is counted and dead-lettered (``bad_topic``),
not silently unmatched; with ``share_group`` set (worker processes,
:mod:`gateway.workers`), as one member of ``$share/{group}/{prefix}/#``: the
broker gives each message to one member; with ``shard_filters`` (shard
workers, for brokers without ``$share``), exactly those filters. Control traffic (``…/stored`` confirmations) and a
cleared retained status (empty payload on a status topic) are acknowledged
in their place and counted as :class:`~gateway.pipeline.Ignored` (by the writer side).

End-to-end confirmation (:mod:`contracts.confirm`): every acknowledged reading
that carries ``epoch``/``seq`` (stored, or dead-lettered: re-sending cannot
help) is collected per device and confirmed on ``{prefix}/v1/{site}/{device}/stored``
by a small thread every ``confirm_interval_s``: one QoS 1 publish per device
per interval, whatever the rate.

Client-id clash: when another client connects with our client id, the broker
closes our connection (with MQTT 5 reason 0x8E "session taken over", or, as
Mosquitto 2.0.11 does, without a word). Two gateways would then kick each
other off for ever. :class:`common.clash.ClashDetector` names it in the log;
the one that sees it backs off (60 s, then 120 s) so the other keeps the
session, and on reason 0x8E or a third clash it stops and reports a fatal
error (:attr:`MqttIntake.fatal`): the gateway exits with status 3.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import contracts
from common.clash import ClashDetector, quick_drops_for
from common.mqtt_security import MqttSecurity
from common.mqtt_session import SessionSpec, broker_list, describe, rotate_to
from contracts import DeviceStatus, confirm, new_reading_id, topics, utcnow
from contracts.site import SiteConfig
from gateway.pipeline import Item, RateLimitedLog, Stats
from gateway.processor import NON_UTF8_TOPIC, confirm_key, valid_id
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

FIRMWARE = "district-gateway 0.1.0"


class Handoff(Protocol):
    """Where ``on_message`` puts each message, raw (:class:`gateway.handoff.Inbox`)."""

    def put_raw(
        self, gen: int, mid: int, qos: int, topic: str | None, payload: bytes, retain: bool, received_ns: int
    ) -> bool: ...

    def qsize(self) -> int: ...


class MqttIntake:
    """paho's client: connection, subscription, raw hand-off, acknowledgements, confirmations, status.

    ``q``: where received messages go (raw); ``stats``: counts the
    acknowledgements that could not be sent (``stale_acks``).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        q: Handoff,
        stats: Stats,
        *,
        site: SiteConfig | None = None,
    ) -> None:
        self._settings = settings
        self._q = q
        self._stats = stats
        self._site = site
        self._prefix = settings.topic_prefix
        self._site_id = site.site.id if site is not None else settings.site_id
        #: Everything under the prefix; as one member of a shared subscription with ``share_group``
        #: (the broker then sends retained messages to no member on subscribing: MQTT 5 4.8.2).
        everything = topics.everything(self._prefix)
        self._filters = [everything if settings.share_group is None else f"$share/{settings.share_group}/{everything}"]
        if settings.shard_filters is not None:
            self._filters = list(settings.shard_filters)
        self._filter = ", ".join(self._filters)
        self._brokers = broker_list(settings.mqtt_host, settings.mqtt_port, settings.mqtt_brokers)
        self._broker_index = 0
        self._lock = threading.Lock()
        self._gen = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._sub_mid: int | None = None
        self._ever_connected = False
        self._closing = False
        self._started_at = time.monotonic()
        self._ratelog = RateLimitedLog(log)
        #: Set when running on cannot help (our session was taken over); ``fatal_reason`` says why.
        self.fatal = threading.Event()
        self.fatal_reason: str | None = None
        self.clash = ClashDetector(settings.mqtt_client_id, quick_drops=quick_drops_for(len(self._brokers)))
        #: (site, device, epoch) -> seqs handled since the last confirmation.
        self._to_confirm: dict[tuple[str, str, str], list[int]] = {}
        self._confirm_lock = threading.Lock()
        self._confirm_thread: threading.Thread | None = None
        self.confirmations_sent = 0
        self.status_topic: str | None = None
        if valid_id(settings.mqtt_client_id):
            self.status_topic = topics.status_topic(self._prefix, self._site_id, settings.mqtt_client_id)
        else:
            log.warning("client id %r is not a valid device id: no status topic", settings.mqtt_client_id)

        self._session = SessionSpec(
            settings.mqtt_protocol,
            settings.mqtt_client_id,
            settings.mqtt_session_expiry_s,
            receive_maximum=settings.receive_maximum,
        )
        client = self._session.client(manual_ack=True)
        client.max_inflight_messages_set(settings.confirm_inflight)
        #: Credentials and TLS (common.mqtt_security); raises SecretFileError for a password file others may read.
        self.security = MqttSecurity.from_settings(settings)
        self.security.apply(client)
        client.reconnect_delay_set(settings.mqtt_reconnect_min_s, settings.mqtt_reconnect_max_s)
        if self.status_topic is not None:
            will = self._status("offline", reason="connection lost")
            client.will_set(self.status_topic, contracts.encode(will), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        host, port = self._brokers[0]
        log.info(
            "connecting to %s as %r (MQTT %s, %s; persistent session), subscribing %s",
            describe(self._brokers),
            self._settings.mqtt_client_id,
            self._settings.mqtt_protocol,
            self.security.describe(),
            self._filter,
        )
        self._client.connect_async(
            host, port, keepalive=self._settings.mqtt_keepalive_s, **self._session.connect_kwargs()
        )
        # loop_start retries the first connection and every later one.
        self._client.loop_start()
        if self._settings.confirm:
            self._confirm_thread = threading.Thread(target=self._confirm_loop, name="gateway-confirm", daemon=True)
            self._confirm_thread.start()

    def stop_intake(self) -> None:
        """Take no more messages: later ones stay unacknowledged and are redelivered next session."""
        self._closing = True

    def close(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (retained), flush pending acks, disconnect cleanly, stop the network thread."""
        self._closing = True
        if self._confirm_thread is not None:
            self._confirm_thread.join(2.0)
            self._send_confirmations()
        if self.is_connected() and self.status_topic is not None:
            try:
                info = self._client.publish(
                    self.status_topic, contracts.encode(self._status("offline", reason="stopped")), qos=1, retain=True
                )
                # The PUBACK for this publish means every ack queued before it went out too.
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed (messages published from now on reach us)."""
        deadline = time.monotonic() + timeout
        return self._connected.wait(timeout) and self._subscribed.wait(max(0.0, deadline - time.monotonic()))

    def is_connected(self) -> bool:
        return self._connected.is_set()

    # -- acknowledgements (writer thread) ------------------------------------------

    def ack(self, item: Item) -> None:
        """Acknowledge a handled item (its ``mid``, ``qos`` and ``gen`` are the MQTT ones) and note it to confirm."""
        if self._settings.confirm:
            key = confirm_key(item)
            if key is not None:
                site_id, device_id, epoch, seq = key
                self.note_confirmations({(site_id, device_id, epoch): [seq]})
        self.ack_raw(item.gen, item.mid, item.qos)

    def ack_raw(self, gen: int, mid: int, qos: int) -> None:
        """Acknowledge message ``mid`` if it came on the current connection (generation ``gen``)."""
        if qos == 0:
            return
        with self._lock:
            if gen != self._gen or not self._connected.is_set():
                self._stats.add(stale_acks=1)
                return
            rc = self._client.ack(mid, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._ratelog(logging.WARNING, "ack", "ack of mid %d failed: %s", mid, mqtt.error_string(rc))

    # -- end-to-end confirmations -------------------------------------------------------

    def note_confirmations(self, seqs: dict[tuple[str, str, str], list[int]]) -> None:
        """Remember stored (or dead-lettered) readings, seqs by (site, device, epoch), for the next confirmation."""
        if not self._settings.confirm:
            return
        with self._confirm_lock:
            pending = self._to_confirm
            for key, more in seqs.items():
                pending.setdefault(key, []).extend(more)

    def _confirm_loop(self) -> None:
        while not self._closing:
            time.sleep(self._settings.confirm_interval_s)
            try:
                self._send_confirmations()
            except Exception:
                log.exception("sending confirmations failed")

    def _send_confirmations(self) -> None:
        if not self.is_connected():
            return  # kept until the next connection; the device re-sends meanwhile if it must
        with self._confirm_lock:
            pending, self._to_confirm = self._to_confirm, {}
        for (site_id, device_id, epoch), seqs in pending.items():
            topic = topics.stored_topic(self._prefix, site_id, device_id)
            for payload in confirm.encode(device_id, epoch, seqs, by=self._settings.mqtt_client_id):
                info = self._client.publish(topic, payload, qos=1)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    # The device re-sends what stays unconfirmed; storing it again is idempotent.
                    self._ratelog(logging.WARNING, "confirm", "confirmation to %s failed: %s", device_id, info.rc)
                else:
                    self.confirmations_sent += 1

    # -- status ------------------------------------------------------------------------

    def publish_status(self, state: str = "online", reason: str | None = None) -> None:
        if self.status_topic is None or not self.is_connected():
            return
        payload = contracts.encode(self._status(state, reason=reason))
        self._client.publish(self.status_topic, payload, qos=1, retain=True)

    def _status(self, state: str, *, reason: str | None = None) -> DeviceStatus:
        # The gateway has no store-and-forward outbox (what it has not stored
        # stays unacknowledged in the broker), so it leaves ``outbox_pending``
        # unset. Messages received but not yet handed on wait in the intake
        # queue: a live backlog is said in the reason; the gateway_stats
        # measurement carries the depth as ``queue_depth``.
        waiting = self._q.qsize()
        if waiting and state != "offline":
            reason = "; ".join(filter(None, (reason, f"intake queue: {waiting} message(s) waiting")))
        return DeviceStatus.model_validate(
            {
                "device_id": self._settings.mqtt_client_id,
                "observed_at": utcnow(),
                "reading_id": new_reading_id(),
                "state": state,
                "reason": reason[:200] if reason else reason,
                "uptime_s": round(time.monotonic() - self._started_at, 3),
                "firmware": FIRMWARE,
            }
        )

    # -- paho callbacks (network thread): short, and never raising --------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            if reason_code.is_failure:
                # Not connected: paho's loop retries; do not pretend otherwise.
                log.error("broker refused the connection: %s", reason_code)
                return
            with self._lock:
                self._gen += 1
                self._connected.set()
            self.clash.connected()
            # A backoff after a clash applies to that one wait only.
            client.reconnect_delay_set(self._settings.mqtt_reconnect_min_s, self._settings.mqtt_reconnect_max_s)
            if flags.session_present:
                log.info("connected; broker resumed our session")
            elif self._ever_connected:
                log.warning("connected, but the broker lost our session: messages it queued for us are gone")
            else:
                log.info("connected (new session)")
            self._ever_connected = True
            # Renewed on every CONNACK, even with a session: a cluster node that took the session over
            # may not have it (research: clustered-brokers.md §5.4). With a session, MQTT 5 is asked not to
            # resend every retained status.
            subs = [sub for f in self._filters for sub in self._session.subscription(
                f, retained_again=not flags.session_present)]  # fmt: skip
            _, self._sub_mid = client.subscribe(subs)
            self.publish_status("online")
        except Exception:
            log.exception("on_connect failed")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            with self._lock:
                self._gen += 1
                was_connected = self._connected.is_set()
                self._connected.clear()
                self._subscribed.clear()
            verdict = self.clash.lost(reason_code.value) if was_connected and not self._closing else None
            if verdict is not None and verdict.fatal:
                self.fatal_reason = (
                    f"{verdict.reason}; two gateways must not share a client id "
                    "(DISTRICT_GATEWAY_MQTT_CLIENT_ID): this one stops, the other keeps the session"
                )
                log.error("%s", self.fatal_reason)
                self._closing = True
                client.disconnect()  # ends paho's reconnect loop
                self.fatal.set()
            elif verdict is not None and verdict.clash:
                log.error(
                    "%s; two gateways must not share a client id (DISTRICT_GATEWAY_MQTT_CLIENT_ID): "
                    "backing off %.0f s so the other keeps the session",
                    verdict.reason,
                    verdict.backoff_s,
                )
                backoff = round(verdict.backoff_s)
                client.reconnect_delay_set(backoff, backoff)
            elif self._closing:
                log.info("disconnected")
                return
            elif was_connected:
                log.warning("lost the broker (%s); reconnecting", reason_code)
            else:
                self._ratelog(logging.WARNING, "connect", "cannot reach the broker (%s); retrying", reason_code)
            if not self._closing:
                self._next_broker(client)
        except Exception:
            log.exception("on_disconnect failed")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        try:
            self._ratelog(logging.WARNING, "connect", "cannot reach %s:%d; retrying", client.host, client.port)
            self._next_broker(client)
        except Exception:
            log.exception("on_connect_fail failed")

    def _next_broker(self, client: mqtt.Client) -> None:
        """With several broker addresses, the next connection attempt goes to the next one."""
        if len(self._brokers) > 1:
            self._broker_index = (self._broker_index + 1) % len(self._brokers)
            rotate_to(client, *self._brokers[self._broker_index])

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        try:
            failed = [rc for rc in reason_codes if rc.is_failure]
            if failed:
                log.error("subscription refused: %s", failed[0])
            elif mid == self._sub_mid:
                self._subscribed.set()
        except Exception:
            log.exception("on_subscribe failed")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if self._closing:
                return  # not acknowledged: redelivered to the next session
            try:
                topic: str | None = msg.topic
            except UnicodeDecodeError:
                topic = None  # paho exposes the raw bytes only through a private attribute
            payload = bytes(msg.payload)  # bytes already (no copy); the type says it may be a bytearray
            self._q.put_raw(self._gen, msg.mid, msg.qos, topic, payload, bool(msg.retain), time.time_ns())
        except Exception:
            log.exception("on_message failed for a message on %s", _topic_of(msg))


def _topic_of(msg: mqtt.MQTTMessage) -> str:
    try:
        return str(msg.topic)[:200]
    except UnicodeDecodeError:
        return NON_UTF8_TOPIC
