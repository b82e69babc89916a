"""The display bridge: sign states from the guidance API onto RS-485 Modbus RTU count displays.

::

    guidance API ──SSE / polling──▶ Follower (asyncio, one task per sign) ──▶ Link (state + vouched-for time)
                                                                                │
    count display ◀──FC 16 every change and every write_interval_s── PortWriter (one thread per serial port)

One thread runs an asyncio loop with one :class:`~edge.displays.follow.Follower` per sign (a shared
``httpx.AsyncClient``); one :class:`PortWriter` thread per serial port writes the signs on it, so a
slow serial line never holds up the API side and the API side never blocks on the line (the edge's
rule: field-bus I/O off the event loop). The two meet in a :class:`~edge.displays.follow.Link` per
sign.

The writer writes a sign's whole frame (HR 0..13) when what it must show changes, and again every
``write_interval_s`` with its heartbeat register advanced, so the display's comms-loss watchdog never
fires while the bridge is healthy, and always fires when it is not. When the API has not vouched for
a sign's state for ``stale_after_s`` the writer writes the sign's fallback (blank by default) with the
link-lost flag, and the number returns with the next good state. On a clean stop every sign gets its
fallback at once. A failed write is counted and retried at the next cycle; a port that fails or where
no display answers for 10 s is closed and reopened with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from common.retry import Backoff
from contracts.fieldbus import DISPLAY_WRITE_ADDRESS, DisplayFrame, DisplayMapError
from edge.displays.config import BridgeConfig
from edge.displays.follow import Follower, Link
from edge.displays.rtu import RtuWriter
from edge.displays.sign import fallback_frame
from edge.sensors.modbus import BadReply, BusGone, Line, NoResponse, RateLimitedLog, SerialLine, SerialSettings

log = logging.getLogger(__name__)

#: The counters every sign reports (zero when nothing happened), in the summary line's order.
SUMMARY_KEYS = ("events", "polls", "not_modified", "malformed", "sse_connects", "writes", "write_failures")
#: Wait this long before restarting a follower task that died of an unexpected error.
FOLLOWER_RESTART_S = 1.0


@dataclass
class _Slot:
    """A sign as its port writer sees it."""

    link: Link
    heartbeat: int
    #: The frame (heartbeat 0) the display last confirmed, None when unknown.
    written: DisplayFrame | None = None
    next_write: float = 0.0
    #: After a failed write, a change is not retried before this (the next cycle).
    hold_until: float = 0.0


class PortWriter:
    """One serial port and the signs on it (module doc). ``stats``: ``opens``, ``port_down``."""

    #: A port where no display has confirmed a write for this long (and 3 write intervals) is reopened.
    STUCK_AFTER_S = 10.0

    def __init__(
        self,
        serial: SerialSettings,
        links: list[Link],
        *,
        write_interval_s: float,
        stop: threading.Event,
        wake: threading.Event,
        line_factory: Callable[[SerialSettings], Line] = SerialLine,
        clock: Callable[[], float] = time.monotonic,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        first_heartbeat: Callable[[], int] = lambda: random.randrange(0x10000),
    ) -> None:
        self.serial = serial
        self.label = f"port {serial.port}"
        self.write_interval_s = write_interval_s
        self.wake = wake
        self._stop = stop
        self._line_factory = line_factory
        self._clock = clock
        self._backoff = Backoff(backoff_min_s, backoff_max_s)
        # A restarted bridge starts its heartbeat anywhere, so it is unlikely to repeat the one the
        # display holds (which would not count as a beat); the next cycle advances it anyway.
        self._slots = [_Slot(link, first_heartbeat() & 0xFFFF) for link in links]
        self._warn = RateLimitedLog(log, 60.0, clock)
        self._thread: threading.Thread | None = None
        self.stats: Counter[str] = Counter()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"display-port:{self.serial.port}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def serves(self, display_id: str) -> bool:
        return any(s.link.display_id == display_id for s in self._slots)

    def written(self, display_id: str) -> DisplayFrame | None:
        """The frame the display last confirmed (heartbeat 0), None when unknown."""
        return next((s.written for s in self._slots if s.link.display_id == display_id), None)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                writer = RtuWriter(self.serial, line_factory=self._line_factory, clock=self._clock)
            except BusGone as exc:
                self._down(str(exc))
                continue
            except Exception:
                log.exception("%s: unexpected error opening the port", self.label)
                self._down("cannot open the port (unexpected error)")
                continue
            self.stats["opens"] += 1
            log.info("%s: open (%d baud, %d display(s))", self.label, self.serial.baudrate, len(self._slots))
            try:
                self._cycle(writer)
                self._farewell(writer)
            except BusGone as exc:
                self._down(str(exc))
            except Exception:
                log.exception("%s: unexpected error while writing; reopening", self.label)
                self._down("unexpected error while writing")
            finally:
                try:
                    writer.close()
                except Exception:
                    log.exception("%s: error closing the port", self.label)
        log.info("%s: stopped", self.label)

    def _down(self, reason: str) -> None:
        self.stats["port_down"] += 1
        for slot in self._slots:
            slot.written = None
            slot.next_write = 0.0
            slot.link.stats["port_down"] += 1
        delay = self._backoff.next_delay()
        self._warn.warning(f"down:{reason}", "%s: %s; retrying in %.1f s", self.label, reason, delay)
        self._stop.wait(delay)

    def _cycle(self, writer: RtuWriter) -> None:
        """Write what is due until stopped (returns) or the port breaks (raises BusGone)."""
        last_ok = self._clock()
        while not self._stop.is_set():
            self.wake.clear()
            for slot in self._slots:
                now = self._clock()
                frame = slot.link.frame(now)
                due = now >= slot.next_write or (frame != slot.written and now >= slot.hold_until)
                if due and self._write(writer, slot, frame, now):
                    last_ok = self._clock()
                    self._backoff.reset()
            if self._clock() - last_ok > max(self.STUCK_AFTER_S, 3 * self.write_interval_s):
                raise BusGone("no display on the port confirms a write")
            self.wake.wait(self._idle())

    def _idle(self) -> float:
        """Seconds until something is due: a re-write, a change not yet written (at once, or after a failed
        write's hold), or a sign's state going stale (which may have passed while the last write ran)."""
        now = self._clock()
        due = []
        for slot in self._slots:
            due.append(slot.next_write)
            if slot.link.frame(now) != slot.written:
                due.append(max(now, slot.hold_until))
            deadline = slot.link.deadline()
            if deadline > now:
                due.append(deadline + 0.001)
        return max(0.0, min(due) - now)

    def _write(self, writer: RtuWriter, slot: _Slot, frame: DisplayFrame, now: float) -> bool:
        link, unit = slot.link, slot.link.config.unit
        slot.heartbeat = (slot.heartbeat + 1) & 0xFFFF
        try:
            regs = replace(frame, heartbeat=slot.heartbeat).registers()
        except DisplayMapError as exc:  # cannot happen for frames from frame_for; never show it anyway
            link.stats["unencodable"] += 1
            log.error("%s: cannot encode %r (%s); writing the fallback", link.display_id, frame, exc)
            frame = fallback_frame(link.config.fallback_text)
            regs = replace(frame, heartbeat=slot.heartbeat).registers()
        try:
            writer.write_registers(unit, DISPLAY_WRITE_ADDRESS, regs)
        except (NoResponse, BadReply) as exc:
            link.stats["write_failures"] += 1
            link.stats[f"write:{exc.reason}"] += 1
            slot.next_write = slot.hold_until = now + self.write_interval_s
            self._warn.warning(
                f"write:{link.display_id}:{exc.reason}",
                "%s: write to %s unit %d failed: %s (%s); retrying in %.1f s",
                link.display_id,
                self.serial.port,
                unit,
                exc,
                exc.reason,
                self.write_interval_s,
            )
            return False
        link.stats["writes"] += 1
        if frame != slot.written:
            link.stats["changes"] += 1
            log.info(
                "%s: sign %s unit %d shows %r (%s%s)",
                link.display_id,
                self.serial.port,
                unit,
                frame.face,
                frame.state,
                ", link lost" if frame.link_lost else "",
            )
        slot.written = frame
        slot.next_write = now + self.write_interval_s
        slot.hold_until = 0.0
        return True

    def _farewell(self, writer: RtuWriter) -> None:
        """On a clean stop: every sign shows its fallback at once (it could no longer be vouched for)."""
        for slot in self._slots:
            state = slot.link.state
            frame = fallback_frame(slot.link.config.fallback_text, state.mode if state else "auto")
            with contextlib.suppress(BusGone):
                self._write(writer, slot, frame, self._clock())


class DisplayBridge:
    """Followers for every configured sign and a writer per serial port (module doc).

    ``start()`` returns once the threads run; ``stop()`` (or setting ``stop``) ends them. ``transport``
    and ``line_factory`` let tests put fakes under the HTTP client and the serial line.
    """

    def __init__(
        self,
        config: BridgeConfig,
        *,
        api_key: str | None = None,
        stop: threading.Event | None = None,
        line_factory: Callable[[SerialSettings], Line] = SerialLine,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._api_key = api_key if api_key is not None else _secret(config)
        self._stop = stop or threading.Event()
        self._transport = transport
        self._clock = clock
        self.links: dict[str, Link] = {}
        self.ports: list[PortWriter] = []
        for port, displays in config.ports().items():
            wake = threading.Event()
            links = [Link(d, stale_after_s=config.stale_after_s, wake=wake, clock=clock) for d in displays]
            self.links.update((link.display_id, link) for link in links)
            self.ports.append(
                PortWriter(
                    config.serial.settings(port),
                    links,
                    write_interval_s=config.write_interval_s,
                    stop=self._stop,
                    wake=wake,
                    line_factory=line_factory,
                    clock=clock,
                )
            )
        self.followers: dict[str, Follower] = {}
        self._api_thread: threading.Thread | None = None
        self.api_errors = 0

    @property
    def stop_event(self) -> threading.Event:
        return self._stop

    def start(self) -> None:
        for port in self.ports:
            port.start()
        self._api_thread = threading.Thread(target=self._run_api, name="display-api", daemon=True)
        self._api_thread.start()
        log.info(
            "display bridge: %d sign(s) on %d port(s) from %s (SSE %s, stale after %g s)",
            len(self.links),
            len(self.ports),
            self.config.api.base,
            "on" if self.config.api.sse else "off",
            self.config.stale_after_s,
        )

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for port in self.ports:
            port.wake.set()
        if self._api_thread is not None:
            self._api_thread.join(timeout)
        for port in self.ports:
            port.join(timeout)
        log.info("display bridge stopped")

    def written(self, display_id: str) -> DisplayFrame | None:
        """What the bridge last had confirmed by the sign (heartbeat 0), None when unknown."""
        for port in self.ports:
            if port.serves(display_id):
                return port.written(display_id)
        raise KeyError(display_id)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per sign: its counters (events, polls, malformed, writes, write failures, ...) and what it shows."""
        out: dict[str, dict[str, Any]] = {}
        for display_id, link in self.links.items():
            written = self.written(display_id)
            follower = self.followers.get(display_id)
            out[display_id] = {
                **dict.fromkeys(SUMMARY_KEYS, 0),
                **link.stats,
                "shows": None if written is None else written.face,
                "streaming": bool(follower and follower.streaming),
            }
        return out

    def log_summary(self) -> None:
        for display_id, s in self.stats().items():
            log.info(
                "%s: shows %r, %s, %s",
                display_id,
                s["shows"],
                "streaming" if s["streaming"] else "polling",
                ", ".join(f"{k} {s[k]}" for k in SUMMARY_KEYS),
            )

    # -- the API side ---------------------------------------------------------------------------------
    def _run_api(self) -> None:
        try:
            asyncio.run(self._follow_all())
        except Exception:
            # The signs then go to their fallback after stale_after_s: nothing vouches for them any more.
            self.api_errors += 1
            log.exception("display bridge: the API side stopped")

    async def _follow_all(self) -> None:
        api = self.config.api
        headers = {"User-Agent": "district-display-bridge"}
        if self._api_key:
            headers[api.api_key_header] = self._api_key
        async with httpx.AsyncClient(headers=headers, transport=self._transport, timeout=api.timeout_s) as client:
            for display_id, link in self.links.items():
                self.followers[display_id] = Follower(link, client, api, clock=self._clock)
            tasks = [asyncio.create_task(self._guarded(f), name=f"follow:{d}") for d, f in self.followers.items()]
            try:
                while not self._stop.is_set():
                    await asyncio.sleep(0.1)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _guarded(self, follower: Follower) -> None:
        """Run a follower; one that dies of a bug is logged and restarted, never takes the others along."""
        while True:
            try:
                await follower.run()
            except Exception:
                follower.stats["follower_restarts"] += 1
                log.exception("%s: follower failed; restarting", follower.display_id)
            await asyncio.sleep(FOLLOWER_RESTART_S)


def _secret(config: BridgeConfig) -> str | None:
    key = config.api.api_key
    return None if key is None else key.get_secret_value()
