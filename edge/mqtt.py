"""The one module that owns the paho-mqtt 2.x client.

One thread does everything MQTT: connect, run paho's network loop, publish
from the outbox, acknowledge, heartbeat. Sensors never touch the client; they
write to the outbox, so a slow or absent broker never blocks a sensor read.

* MQTT 5 or 3.1.1 (``mqtt.protocol``, :mod:`common.mqtt_session`), QoS 1,
  stable client id, persistent session (``clean_start=False`` and a session
  expiry; 3.1.1 ``clean_session=False``), so confirmations queued while the
  device was away still reach it. With ``mqtt.brokers`` (the nodes of a
  cluster), each new connection goes to the next address.
* End-to-end delivery (``mqtt.delivery: stored``, the default): a reading
  leaves the outbox when the gateway confirms it *stored* it, on
  ``{prefix}/v1/{site}/{device}/stored`` (:mod:`contracts.confirm`), not on
  the broker's PUBACK, which Mosquitto sends before its persistence file is
  written. A reading published ``confirm_timeout_s`` ago and still
  unconfirmed is published again, with the same bytes (storage is idempotent);
  while the gateway confirms nothing at all (it is away, the broker holds our
  readings for it) the wait doubles, so an outage does not pile duplicates
  into the broker's queue.
  ``delivery: broker`` deletes on PUBACK, for a gateway that does not confirm.
* A second client with our client id takes our connection over (MQTT 5
  reason 0x8E, or the broker closing us again and again right after
  accepting us, :class:`common.clash.ClashDetector`): named in the log, and
  the reconnect backs off (60 s, doubling) so the two stop kicking each other
  off. An edge never exits over it: its outbox keeps every reading meanwhile.
* Last will: retained ``DeviceStatus(state="offline", reason="connection_lost")``
  on the device's status topic. On every connect a retained ``online`` (or
  ``degraded``) status replaces it; a heartbeat repeats it every
  ``status_interval_s`` and whenever the device's health changes; a clean
  stop publishes retained ``offline`` with reason ``shutdown`` and waits for
  its PUBACK before disconnecting.
* Connected means CONNACK accepted, never merely "the TCP socket opened".
* Each connection gets a fresh paho client and walks the outbox from its
  oldest row: whatever was in flight when a connection dropped is published
  again with the same bytes; readings written during the connection go
  before that backlog, which is paced (:mod:`edge.pacing`). At most ``max_inflight`` readings are
  unacknowledged at a time; the outbox holds the rest.
* Reconnects back off from ``reconnect_min_s`` doubling to ``reconnect_max_s``, no jitter
  (:class:`common.retry.Backoff`); a connection the broker had accepted starts it again.
* The thread sleeps until something happens: it runs paho's network loop
  through paho's external-event-loop calls (``socket``, ``want_write``,
  ``loop_read``/``loop_write``/``loop_misc``) on a :mod:`selectors` selector
  that also watches a wake-up socket pair (the self-pipe trick). A new row in
  the outbox, a health change or :meth:`MqttPublisher.wake` ends the wait at
  once; otherwise it ends when the broker sends something, when the replay
  pacer's token bucket refills, or after at most :data:`IDLE_WAIT_S`. An idle
  device therefore costs about one wake-up a second, not twenty: at city
  scale (600 devices on one simulator box) that polling was most of the
  simulator's CPU (bench/scale).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from common.clash import ClashDetector, quick_drops_for
from common.mqtt_session import SessionSpec
from common.retry import Backoff
from contracts import confirm, topics
from contracts.messages import CameraHealth, DeviceStatus, encode, new_reading_id, utcnow
from edge.config import DeviceConfig
from edge.outbox import Outbox
from edge.pacing import ConfirmWindow, ReplayPacer, ResendTimeout

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
SHUTDOWN_ACK_TIMEOUT_S = 3.0
#: Longest sleep of the MQTT thread with nothing to do (s): re-send and heartbeat checks run at least this often.
IDLE_WAIT_S = 1.0
#: Longest wait before re-sending while the gateway confirms nothing at all (it is away).
MAX_SILENT_WAIT_S = 3600.0
MAX_REASON = 200


class HealthReporter:
    """What the status heartbeat reports: problems by source, and camera health.

    Sensors (and later cameras) call :meth:`set_problem`; any problem makes
    the device ``degraded`` with the problems as the reason.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}
        self.version = 0
        self._cameras: Callable[[], list[CameraHealth]] | None = None
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` (on the caller's thread, must not block) whenever the reported problems change."""
        self._listeners.append(fn)

    def set_problem(self, source: str, problem: str | None) -> None:
        with self._lock:
            old = self._problems.get(source)
            if problem == old:
                return
            if problem is None:
                del self._problems[source]
            else:
                self._problems[source] = problem
            self.version += 1
        for listener in self._listeners:
            listener()

    def set_camera_provider(self, provider: Callable[[], list[CameraHealth]] | None) -> None:
        """The seam for the camera pipeline: a callable giving each camera's health."""
        self._cameras = provider

    def snapshot(self) -> tuple[str, str | None, list[CameraHealth]]:
        with self._lock:
            problems = [self._problems[k] for k in sorted(self._problems)]
        cameras: list[CameraHealth] = []
        if self._cameras is not None:
            try:
                cameras = self._cameras()
            except Exception:
                log.exception("camera health provider failed")
        if not problems:
            return "online", None, cameras
        reason = "; ".join(problems)
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 3] + "..."
        return "degraded", reason, cameras


class Wakeup:
    """A socket pair another thread writes a byte to, to end the MQTT thread's wait at once (the self-pipe trick).

    :meth:`set` never blocks and never raises (a full pair already means "wake"; a closed one, "stopped").
    """

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def set(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: a wake is already pending; OSError: closed
            self._writer.send(b"\0")

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            while self.reader.recv(4096):
                pass

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


class MqttPublisher:
    """Publishes the outbox and the device status; run in its own thread."""

    def __init__(
        self,
        config: DeviceConfig,
        outbox: Outbox,
        health: HealthReporter,
        stop: threading.Event,
        *,
        password: str | None = None,
        started: float | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.health = health
        self._stop = stop
        m = config.mqtt
        #: Credentials and TLS (common.mqtt_security); raises SecretFileError for a secret file others may read.
        self.security = m.security(password)
        self._started = started if started is not None else time.monotonic()
        self.status_topic = topics.status_topic(m.topic_prefix, config.device.site_id, config.device.id)
        self.stored_topic = topics.stored_topic(m.topic_prefix, config.device.site_id, config.device.id)
        self.end_to_end = m.delivery == "stored"
        #: Set while a connection is up (CONNACK accepted); cleared when it drops.
        self.connected = threading.Event()
        self.stats: dict[str, int] = {
            "connects": 0,
            "connect_failures": 0,
            "published": 0,
            "acked": 0,
            "broker_acked": 0,
            "confirmed": 0,
            "resends": 0,
            "bad_confirmations": 0,
            "taken_over": 0,
            #: Connections refused because the broker's certificate did not verify (CA or hostname).
            "tls_refused": 0,
            #: Publishes the broker refused (PUBACK reason >= 0x80, e.g. 0x87 not authorised by its ACL).
            "refused": 0,
        }
        self._thread: threading.Thread | None = None
        # per-connection state, only touched by the MQTT thread
        self._connack: ReasonCode | None = None
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (outbox id, when published, monotonic)
        self._acked: list[int] = []
        #: Live readings first, the backlog after, paced and (end to end) clocked by confirmations (edge/pacing.py).
        window = (
            ConfirmWindow(
                initial=m.replay_window_initial,
                minimum=m.replay_window_min,
                maximum=m.max_unconfirmed,
                target_delay_s=m.replay_target_delay_s,
            )
            if self.end_to_end
            else None
        )
        self.pacer = ReplayPacer(outbox, rate_per_s=m.replay_rate_per_s, burst=m.replay_burst, window=window)
        #: Backlog rows of this connection published and not yet confirmed (what the window bounds).
        self._backlog_out = 0
        #: How late confirmations come (RFC 6298): a re-send waits at least this long.
        self.resend_timeout = ResendTimeout(m.confirm_timeout_s, MAX_SILENT_WAIT_S)
        self._status_mids: set[int] = set()
        self._lost = False
        self._lost_reason: int | None = None
        #: The broker refused a publish on this connection (see _on_publish).
        self._refused = False
        self.clash = ClashDetector(config.client_id, quick_drops=quick_drops_for(len(config.mqtt.addresses())))
        #: Published and PUBACKed, waiting for the gateway: outbox id -> when published (monotonic).
        self._awaiting: dict[int, float] = {}
        #: Inclusive seq ranges the gateway confirmed, not yet deleted from the outbox.
        self._confirmed: list[tuple[int, int]] = []
        #: Per confirming gateway (the confirmation's ``by``): when the newest reading it confirmed was
        #: published, and when it last confirmed anything (both monotonic). Each gateway stores what it
        #: receives in order, so once every gateway heard from lately has confirmed a reading published after
        #: our oldest unconfirmed one, that one was lost; a confirmation of older ones only means a gateway is
        #: behind. With several gateway workers on a shared subscription a device's readings alternate between
        #: them, and one worker running ahead of another is not a loss.
        self._confirmed_by: dict[str, tuple[float, float]] = {}
        #: When the last confirmation arrived (monotonic); while none arrive, re-sends back off
        #: (the shared policy: confirm_timeout_s doubling to MAX_SILENT_WAIT_S, reset by a confirmation).
        self._last_confirmed_at = 0.0
        self._silent = Backoff(config.mqtt.confirm_timeout_s, MAX_SILENT_WAIT_S)
        self._silent_wait = self._silent.next_delay()
        self._session = SessionSpec(m.protocol, config.client_id, m.session_expiry_s)
        self._addresses = m.addresses()
        self._address = 0
        #: The MQTT thread's wake-up pair, open while :meth:`run` runs.
        self._wakeup: Wakeup | None = None
        outbox.add_listener(self.wake)
        health.add_listener(self.wake)

    def wake(self) -> None:
        """End the MQTT thread's wait now (any thread; a no-op when it is not running)."""
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.set()

    @property
    def awaiting_confirmation(self) -> int:
        """Readings the broker has acknowledged that wait for the gateway's confirmation (any thread)."""
        return len(self._awaiting)

    @property
    def in_flight(self) -> int:
        """Readings published on this connection that the broker has not acknowledged yet (any thread)."""
        return len(self._inflight)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="mqtt", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        self._wakeup = Wakeup()
        try:
            self._run()
        finally:
            wakeup, self._wakeup = self._wakeup, None
            wakeup.close()
        log.info("mqtt: stopped")

    def _run(self) -> None:
        m = self.config.mqtt
        backoff = Backoff(m.reconnect_min_s, m.reconnect_max_s)
        while not self._stop.is_set():
            try:
                ok = self._one_connection()
            except Exception:
                log.exception("mqtt: unexpected error; reconnecting")
                ok = False
            self.connected.clear()
            if self._stop.is_set():
                break
            if ok:  # the broker had accepted us: start again from reconnect_min_s
                backoff.reset()
            delay = backoff.next_delay()
            verdict = self.clash.lost(self._lost_reason) if ok else None
            if verdict is not None and verdict.clash:
                self.stats["taken_over"] += 1
                wait = max(verdict.backoff_s, m.reconnect_max_s)
                log.error("mqtt: %s (a second agent with this device's configuration?); backing off %.0f s",
                          verdict.reason, wait)  # fmt: skip
                self._stop.wait(wait)
                continue
            log.info("mqtt: reconnecting in %.1f s", delay)
            self._stop.wait(delay)

    # -- one connection --------------------------------------------------------------------------
    def _new_client(self) -> mqtt.Client:
        client = self._session.client()
        client.max_inflight_messages_set(self.config.mqtt.max_inflight + 10)
        self.security.apply(client)
        will = self._status("offline", "connection_lost")
        client.will_set(self.status_topic, encode(will), qos=1, retain=True)
        client.on_connect = self._guard(self._on_connect)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_publish = self._guard(self._on_publish)
        client.on_message = self._guard(self._on_message)
        return client

    def _one_connection(self) -> bool:
        """Connect, serve until the connection drops or stop; True if it was up."""
        m = self.config.mqtt
        self._connack = None
        self._inflight.clear()
        self._acked.clear()
        self._status_mids.clear()
        self._awaiting.clear()
        self._backlog_out = 0
        self.pacer.begin()
        self._lost = False
        self._lost_reason = None
        self._refused = False
        client = self._new_client()
        sel: selectors.BaseSelector | None = None
        host, port = self._addresses[self._address]
        # The next connection goes to the next broker address (a cluster's nodes), whatever ends this one.
        self._address = (self._address + 1) % len(self._addresses)
        try:
            try:
                client.connect(host, port, keepalive=m.keepalive_s, **self._session.connect_kwargs())
            except ssl.SSLCertVerificationError as exc:
                # Not our broker, or not the name we were given: never send it a reading or a password.
                self.stats["connect_failures"] += 1
                self.stats["tls_refused"] += 1
                log.error("mqtt: refusing %s:%d: its certificate does not verify: %s", host, port,
                          exc.verify_message or exc)  # fmt: skip
                return False
            except (OSError, ValueError) as exc:
                self.stats["connect_failures"] += 1
                log.warning("mqtt: cannot connect to %s:%d: %s", host, port, exc)
                return False
            sel = selectors.DefaultSelector()
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while self._connack is None and not self._lost and time.monotonic() < deadline:
                if self._net_step(client, sel, 0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
            if self._connack is None or self._connack.is_failure:
                self.stats["connect_failures"] += 1
                log.warning("mqtt: %s:%d did not accept the connection: %s", host, port, self._connack or "no CONNACK")
                return False
            self.stats["connects"] += 1
            self.clash.connected()
            if self.end_to_end:
                client.subscribe(self.stored_topic, qos=1)
            self.connected.set()
            log.info(
                "mqtt: connected to %s:%d as %s; %d pending", host, port, self.config.client_id, self.outbox.pending
            )
            self._serve(client, sel)
            return not self._refused  # refused publishes: back off as after a failed connect
        finally:
            self.connected.clear()
            if sel is not None:
                sel.close()
            self._flush_acks()
            # disconnect() is a no-op when the connection is already gone; a socket left open
            # (no CONNACK, a stop mid-handshake) is closed through paho's public accessor.
            client.disconnect()
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _net_step(self, client: mqtt.Client, sel: selectors.BaseSelector, timeout: float) -> MQTTErrorCode:
        """One round of paho's network loop, as ``client.loop(timeout)`` does it, but on ``sel``.

        Waits up to ``timeout`` s for the broker's socket or the wake-up pair, then reads, writes and runs
        paho's keepalive housekeeping (paho's external-event-loop API: ``socket``, ``want_write``,
        ``loop_read``, ``loop_write``, ``loop_misc``). A selector (epoll on Linux), unlike paho's ``select``,
        has no 1,024-descriptor ceiling, which a simulator with hundreds of devices per process would reach.
        """
        sock = client.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        wakeup = self._wakeup
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.want_write() else 0)
        try:
            key = sel.get_map().get(sock)
            if key is None:
                sel.register(sock, events)
                if wakeup is not None and wakeup.reader not in sel.get_map():
                    sel.register(wakeup.reader, selectors.EVENT_READ)
            elif key.events != events:
                sel.modify(sock, events)
            # TLS may hold a decrypted record the socket no longer shows as readable: do not wait then.
            pending = sock.pending() if hasattr(sock, "pending") else 0
            ready = sel.select(0.0 if pending else timeout)
        except (OSError, ValueError):  # the socket was closed under us (a cut cable, block())
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        readable = writable = False
        for k, mask in ready:
            if wakeup is not None and k.fileobj is wakeup.reader:
                wakeup.clear()
            else:
                readable = bool(mask & selectors.EVENT_READ)
                writable = bool(mask & selectors.EVENT_WRITE)
        for due, step in ((readable or pending, client.loop_read), (writable, client.loop_write)):
            if due:
                rc = step()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return rc
                if client.socket() is None:
                    return MQTTErrorCode.MQTT_ERR_CONN_LOST
        return client.loop_misc()

    def _room(self) -> int:
        """How many more readings this connection may publish now (``max_inflight``, ``max_unconfirmed``)."""
        m = self.config.mqtt
        room = m.max_inflight - len(self._inflight)
        if self.end_to_end:
            room = min(room, m.max_unconfirmed - len(self._awaiting) - len(self._inflight))
        return room

    def _serve(self, client: mqtt.Client, sel: selectors.BaseSelector) -> None:
        status_every = self.config.status_interval_s
        health_seen = -1
        next_status = 0.0
        wait = 0.0
        while not self._stop.is_set():
            if self._net_step(client, sel, wait) != MQTTErrorCode.MQTT_ERR_SUCCESS or self._lost:
                log.warning("mqtt: connection lost; %d reading(s) pending", self.outbox.pending)
                return
            if self._refused:
                return
            self._flush_acks()
            now = time.monotonic()
            self._resend_unconfirmed(now)
            if now >= next_status or self.health.version != health_seen:
                health_seen = self.health.version
                if not self._publish_status(client):
                    return
                next_status = now + status_every
            if not self._pump(client):
                return
            # Sleep until the broker, the outbox or the pacer has something, or the next heartbeat.
            # (paho sends its keepalive PINGREQ from loop_misc: wake at least twice per keepalive period)
            wait = min(IDLE_WAIT_S, self.config.mqtt.keepalive_s / 2, max(0.0, next_status - now))
            paced = self.pacer.wait_s(self._room(), self._backlog_out)
            if paced is not None:
                wait = min(wait, paced)
        self._shutdown(client, sel)

    def _pump(self, client: mqtt.Client) -> bool:
        room = self._room()
        now = time.monotonic()
        for item in self.pacer.next(room, self._backlog_out):
            info = client.publish(item.topic, item.payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.warning("mqtt: publish failed (%s); reconnecting", mqtt.error_string(info.rc))
                return False
            self._inflight[info.mid] = (item.id, now)
            self.stats["published"] += 1
            if self.pacer.is_backlog(item.id):
                self._backlog_out += 1
        return True

    def _flush_acks(self) -> None:
        if self._confirmed:
            ranges, self._confirmed = confirm.ranges_merge(self._confirmed), []
            try:
                self.stats["confirmed"] += self.outbox.ack_ranges(ranges)
            except Exception:
                # the rows stay pending and are re-published: a duplicate, never a loss
                log.exception("outbox: cannot delete confirmed reading(s)")
        if self._acked:
            batch, self._acked = self._acked, []
            self.stats["acked"] += len(batch)
            try:
                self.outbox.ack(batch)
            except Exception:
                log.exception("outbox: cannot delete %d acknowledged reading(s)", len(batch))

    def _resend_unconfirmed(self, now: float) -> None:
        """Publish again from the oldest reading the gateway has not confirmed in time.

        If the gateway confirmed readings *published after* the oldest
        meanwhile, the oldest was lost (a broker that restarted between our
        reconnects, a queue that overflowed): re-send once it is
        ``confirm_timeout_s`` old. Confirmations of readings published before
        it only say the gateway is working through a backlog: that is not a
        loss, and re-sending then would only add to the flood, so the wait
        runs from the last confirmation instead. If the gateway confirmed nothing at all,
        it is most likely away and the broker is holding our readings for it:
        re-sending would only pile duplicates into that queue, so each silent
        round doubles the wait (``confirm_timeout_s`` × 2^k, at most
        :data:`MAX_SILENT_WAIT_S`). A reconnect re-sends everything anyway.
        """
        if not self._awaiting:
            return
        since = next(iter(self._awaiting.values()))
        lost = self._lost_before(since, now)
        # A proven loss (later readings confirmed by every gateway) goes again after confirm_timeout_s. Otherwise
        # never sooner than confirmations have lately taken (RFC 6298 over their delays): a gateway working
        # through a long queue is late, and a re-send would only lengthen the queue it is late behind.
        wait = self.config.mqtt.confirm_timeout_s if lost else max(self._silent_wait, self.resend_timeout.value)
        # Not lost, and the gateway confirms older readings: it is behind, not away; wait from its last confirmation.
        start = since if lost else max(since, self._last_confirmed_at)
        if now - start < wait:
            return
        oldest = min(self._awaiting)  # live readings go first: the first published is not the oldest row
        if not lost:
            self._silent_wait = self._silent.next_delay()
        self.stats["resends"] += 1
        log.warning(
            "mqtt: %d reading(s) not confirmed by the gateway within %.0f s (%s); publishing again from #%d",
            len(self._awaiting),
            wait,
            "later ones were" if lost else "nothing was",
            oldest,
        )
        self._awaiting.clear()
        self._backlog_out = sum(1 for row, _ in self._inflight.values() if self.pacer.is_backlog(row))
        if self.pacer.window is not None:
            self.pacer.window.timed_out()
        self.pacer.rewind(oldest)

    def _lost_before(self, since: float, now: float) -> bool:
        """Whether every gateway heard from within ``confirm_timeout_s`` confirmed a reading published after ``since``
        (monotonic seconds).
        """
        window = self.config.mqtt.confirm_timeout_s
        recent = [newest for newest, heard in self._confirmed_by.values() if now - heard <= window]
        return bool(recent) and min(recent) > since

    def _status(self, state: str, reason: str | None, cameras: list[CameraHealth] | None = None) -> DeviceStatus:
        return DeviceStatus.model_validate(
            {
                "device_id": self.config.device.id,
                "observed_at": utcnow(),
                "reading_id": new_reading_id(),
                "state": state,
                "reason": reason,
                "uptime_s": round(time.monotonic() - self._started, 3),
                "firmware": self.config.device.firmware,
                "outbox_pending": self.outbox.pending,
                "cameras": cameras or [],
            }
        )

    def current_status(self) -> DeviceStatus:
        state, reason, cameras = self.health.snapshot()
        return self._status(state, reason, cameras)

    def _publish_status(self, client: mqtt.Client, status: DeviceStatus | None = None) -> bool:
        status = status or self.current_status()
        info = client.publish(self.status_topic, encode(status), qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning("mqtt: status publish failed (%s)", mqtt.error_string(info.rc))
            return False
        self._status_mids.add(info.mid)
        return True

    def _shutdown(self, client: mqtt.Client, sel: selectors.BaseSelector) -> None:
        """Clean stop: retained offline/shutdown, acknowledged, then DISCONNECT."""
        self._status_mids.clear()
        if not self._publish_status(client, self._status("offline", "shutdown")):
            return
        deadline = time.monotonic() + SHUTDOWN_ACK_TIMEOUT_S
        while self._status_mids and not self._lost and time.monotonic() < deadline:
            if self._net_step(client, sel, 0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        self._flush_acks()
        if self._status_mids:
            log.warning("mqtt: shutdown status not acknowledged within %.0f s", SHUTDOWN_ACK_TIMEOUT_S)
        client.disconnect()
        deadline = time.monotonic() + 1.0
        while not self._lost and time.monotonic() < deadline:
            if self._net_step(client, sel, 0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        log.info("mqtt: disconnected cleanly; %d reading(s) pending", self.outbox.pending)

    # -- paho callbacks (called inside client.loop, on this thread) ------------------------------
    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        def wrapped(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("mqtt: error in %s", fn.__name__)

        return wrapped

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._connack = reason

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._lost = True
        self._lost_reason = reason.value if isinstance(reason, ReasonCode) else None

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        inflight = self._inflight.pop(mid, None)
        if isinstance(reason, ReasonCode) and reason.is_failure:
            # The broker took the packet but not the message (its ACL says this identity may not publish
            # there): the reading stays in the outbox, and this connection ends so the reconnect backoff
            # paces the retries instead of a tight loop of refusals.
            self._status_mids.discard(mid)
            self.stats["refused"] += 1
            if not self._refused:
                log.error(
                    "mqtt: the broker refused a publish (%s): may user %r publish as device %r? (docs/security.md);"
                    " readings stay in the outbox",
                    reason,
                    self.config.mqtt.username,
                    self.config.device.id,
                )
            self._refused = True
            return
        if inflight is None:
            self._status_mids.discard(mid)
            return
        row, published = inflight
        self.stats["broker_acked"] += 1
        if not self.end_to_end:
            self._acked.append(row)
        else:
            # The broker has it; the outbox keeps it until the gateway confirms.
            self._awaiting[row] = published

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self.stored_topic:
            return
        try:
            c = confirm.decode(bytes(msg.payload))
        except confirm.ConfirmationRejected as exc:
            self.stats["bad_confirmations"] += 1
            log.warning("mqtt: unreadable confirmation on %s: %s", msg.topic, exc)
            return
        if c.device_id != self.config.device.id or c.epoch != self.outbox.epoch:
            return  # for an earlier outbox file: nothing of it is left here
        heard = time.monotonic()
        self._confirmed.extend(c.seqs)
        self._last_confirmed_at = heard
        self._silent.reset()
        self._silent_wait = self._silent.next_delay()
        by = c.by or ""
        newest = self._confirmed_by.get(by, (0.0, heard))[0]
        popped: list[tuple[int, float]] = []  # (row, when published) of what this confirmation settles
        for lo, hi in c.seqs:
            if hi - lo < len(self._awaiting):
                for row in range(lo, hi + 1):
                    published = self._awaiting.pop(row, None)
                    if published is not None:
                        popped.append((row, published))
            else:
                kept = {}
                for r, t in self._awaiting.items():
                    if lo <= r <= hi:
                        popped.append((r, t))
                    else:
                        kept[r] = t
                self._awaiting = kept
        if self._inflight:
            confirmed = [mid for mid, (row, _) in self._inflight.items() if any(lo <= row <= hi for lo, hi in c.seqs)]
            for mid in confirmed:
                popped.append(self._inflight.pop(mid))
        if popped:
            newest = max(newest, max(t for _, t in popped))
            self.resend_timeout.sample(heard - min(t for _, t in popped))
            backlog = [t for row, t in popped if self.pacer.is_backlog(row)]
            if backlog:
                self._backlog_out = max(0, self._backlog_out - len(backlog))
                if self.pacer.window is not None:
                    self.pacer.window.confirmed(len(backlog), heard - min(backlog))
        self._confirmed_by[by] = (newest, heard)
