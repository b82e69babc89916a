"""The MQTT subscriber that keeps :class:`server.live.LiveState` current.

paho 2.x in its own network thread, MQTT 5 or 3.1.1 (``mqtt_protocol``,
:mod:`common.mqtt_session`), its own client id and a session that outlives a
link blip: over MQTT 5 the first connect starts clean, later ones resume
(``clean_start`` first-only, ``mqtt_session_expiry_s``), so the broker queues
what is published while the link is down and delivers it on reconnect. MQTT
3.1.1 has no session expiry: with a configured ``mqtt_client_id`` the session
is persistent (the broker's own expiry applies), with a random one it is clean
(a persistent session per server start would pile up on the broker until it
expired; RabbitMQ keeps one queue for each). The catch-up below covers both.
With ``mqtt_brokers`` it moves to the next address after a failed or lost connection.
Whenever a reconnect finds no session (the broker restarted, the blip outlived
the expiry) or resumes one, the server also asks for a catch-up from
InfluxDB (:meth:`server.dbmonitor.DatabaseMonitor.request_catch_up`), which
the gateway's persistent session kept complete: a full garage is never shown
as free because a link blinked. Subscriptions are QoS 1 and renewed on every
(re)connect; paho reconnects by itself with backoff.

Every message goes through ``contracts.receive(..., site=site)``. A rejected
message is counted by reason and logged (the first of each reason, then every
1000th), never raised; the handler is wrapped so nothing can kill paho's loop.
The handler only validates and updates a dict, so it stays far below paho's
keepalive budget (paho issue #914).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

import contracts
from common.mqtt_security import MqttSecurity
from common.mqtt_session import SessionSpec, broker_list, describe, rotate_to
from contracts import MessageRejected, topics
from server import models
from server.live import LiveState
from server.settings import ServerSettings

log = logging.getLogger(__name__)

#: Kinds the server follows: every reading kind, each kept by its live store.
KINDS = ("parking_bay", "locker", "footfall", "status")


class LiveStream:
    """Subscribes to the site's topics and applies each valid message to ``live``."""

    def __init__(self, settings: ServerSettings, live: LiveState) -> None:
        self.settings = settings
        self.live = live
        self.prefix = topics.check_prefix(settings.topic_prefix)
        self.site_id = live.site.site.id
        self.client_id = settings.mqtt_client_id or f"district-server-{uuid.uuid4().hex[:10]}"
        self._lock = threading.Lock()
        self._connected = False
        self._last_message: float | None = None  # time.monotonic()
        self._messages = 0
        self._last_error: str | None = None
        self.rejected: Counter[str] = Counter()
        self._client: mqtt.Client | None = None
        self._ever_connected = False
        self._brokers = broker_list(settings.mqtt_host, settings.mqtt_port, settings.mqtt_brokers)
        self._broker_index = 0
        #: Called (from the MQTT thread) after every reconnect, with or without a resumed session:
        #: something may have been missed either way (a blip outlasting the broker's delivery).
        self.on_reconnect: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background; returns at once (the broker may be down)."""
        session = SessionSpec(
            self.settings.mqtt_protocol,
            self.client_id,
            self.settings.mqtt_session_expiry_s,
            persistent=self.settings.mqtt_protocol == "5" or self.settings.mqtt_client_id is not None,
            first_clean=True,
        )
        client = session.client()
        security = MqttSecurity.from_settings(self.settings)  # credentials and TLS (common.mqtt_security)
        security.apply(client)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        host, port = self._brokers[0]
        log.info(
            "connecting to %s as %s (MQTT %s, %s; prefix %r, site %r)",
            describe(self._brokers),
            self.client_id,
            self.settings.mqtt_protocol,
            security.describe(),
            self.prefix,
            self.site_id,
        )
        client.connect_async(host, port, keepalive=self.settings.mqtt_keepalive_s, **session.connect_kwargs())
        client.loop_start()

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.disconnect()
        except Exception:  # disconnecting a client that never connected
            log.debug("disconnect failed", exc_info=True)
        client.loop_stop()
        with self._lock:
            self._connected = False
        log.info("MQTT subscriber stopped")

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish QoS 1, retained (alerts); paho queues it while the link is down."""
        client = self._client
        if client is None:
            return
        info = client.publish(topic, payload, qos=1, retain=True)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("MQTT publish on %s failed: %s", topic[:200], mqtt.error_string(info.rc))

    # -- health ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def health(self) -> models.BrokerHealth:
        now = time.monotonic()
        with self._lock:
            age = None if self._last_message is None else round(now - self._last_message, 3)
            return models.BrokerHealth(
                connected=self._connected,
                last_message_age_s=age,
                messages=self._messages,
                rejected=dict(self.rejected),
                error=None if self._connected else self._last_error,
            )

    # -- paho callbacks (network thread) -----------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        try:
            if reason_code.is_failure:
                with self._lock:
                    self._connected = False
                    self._last_error = f"connect refused: {reason_code}"
                log.warning("MQTT connect refused: %s", reason_code)
                return
            result, _ = client.subscribe([(topics.subscription(self.prefix, self.site_id, kind), 1) for kind in KINDS])
            if result != mqtt.MQTT_ERR_SUCCESS:
                log.warning("MQTT subscribe failed: %s", mqtt.error_string(result))
            with self._lock:
                self._connected = True
                self._last_error = None
                again = self._ever_connected
                self._ever_connected = True
            session = bool(flags.session_present)
            log.info(
                "MQTT %s; subscribed to %s kinds under %s/v1/%s",
                ("reconnected, session resumed" if session else "reconnected, no session") if again else "connected",
                KINDS,
                self.prefix,
                self.site_id,
            )
            if again and self.on_reconnect is not None:
                self.on_reconnect()
        except Exception:
            log.exception("MQTT on_connect handler failed")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        try:
            where = f"{client.host}:{client.port}"
            self._next_broker(client)
            with self._lock:
                first = self._last_error is None or not self._last_error.startswith("cannot connect")
                self._connected = False
                self._last_error = f"cannot connect to {where}"
            if first:
                log.warning("MQTT: cannot connect to %s; retrying with backoff", where)
        except Exception:
            log.exception("MQTT on_connect_fail handler failed")

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode], properties: Any
    ) -> None:
        try:
            failed = [str(rc) for rc in reason_codes if rc.is_failure]
            if failed:
                with self._lock:
                    self._last_error = f"subscription refused: {', '.join(failed)}"
                log.error("MQTT subscription refused: %s", failed)
        except Exception:
            log.exception("MQTT on_subscribe handler failed")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        try:
            with self._lock:
                was = self._connected
                self._connected = False
                self._last_error = f"disconnected: {reason_code}"
            if was:
                log.warning("MQTT disconnected (%s); paho reconnects with backoff", reason_code)
            if self._client is not None:
                self._next_broker(client)
        except Exception:
            log.exception("MQTT on_disconnect handler failed")

    def _next_broker(self, client: mqtt.Client) -> None:
        """With several broker addresses, the next connection attempt goes to the next one."""
        if len(self._brokers) > 1:
            self._broker_index = (self._broker_index + 1) % len(self._brokers)
            rotate_to(client, *self._brokers[self._broker_index])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload = msg.payload
            self.handle(msg.topic, payload if isinstance(payload, bytes) else bytes(payload), retained=bool(msg.retain))
        except Exception:
            self._reject("internal_error", "handler raised")
            log.exception("MQTT message handler failed on %s", msg.topic[:200])

    def handle(self, topic: str, payload: bytes, *, retained: bool = False, now: datetime | None = None) -> None:
        """Validate one message and apply it; rejections are counted, never raised.

        ``retained``: a copy the broker kept (sent on subscribing), not a live publish.
        An empty payload on a status topic clears that device's status.
        """
        with self._lock:
            self._messages += 1
            self._last_message = time.monotonic()
        now = now or self.live.clock()
        if not payload and topic.endswith("/status"):
            try:
                where = topics.parse(topic, self.prefix)
            except topics.TopicError as exc:
                self._reject("bad_topic", str(exc))
                return
            self.live.clear_device_status(where.device_id)
            return
        try:
            _, message = contracts.receive(topic, payload, prefix=self.prefix, site=self.live.site, now=now)
        except MessageRejected as exc:
            self._reject(exc.reason, f"{topic[:200]}: {exc.detail}")
            return
        self.live.apply(message, now, retained=retained)

    def _reject(self, reason: str, detail: str) -> None:
        with self._lock:
            self.rejected[reason] += 1
            n = self.rejected[reason]
        if n == 1 or n % 1000 == 0:
            log.warning("rejected message (%s, %d so far): %s", reason, n, detail)
