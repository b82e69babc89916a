"""The live-state feed: lots, lockers, zones and signs as Server-Sent Events, one event per change.

The web console (and any dashboard) follows the whole site over one
connection (``GET /v1/live/events``) instead of polling four lists. Each event
carries a resource's whole summary, the same JSON as its list endpoint:

======== ======================= ===========================================
event    data                    same as
======== ======================= ===========================================
lots     list of ParkingLot      ``GET /v1/parking/lots``
lockers  list of LockerBank      ``GET /v1/lockers``
zones    list of ZoneCrowd       ``GET /v1/zones``
displays list of SignState       ``GET /v1/displays``
======== ======================= ===========================================

When an event is sent: the live stores' change hook
(:attr:`server.live.LiveState.listeners`, called from the MQTT thread) marks
the resources a change moves (a bay its lot list; a device's status the
zones, since a broken camera makes a zone ``nodata``); every ``tick_s`` all
are looked at, because time alone moves a summary (a bay turning stale, a
lot going ``nodata``). A resource gets an event only when its summary changed
in more than the fields that move with the clock (``age_s``, ``window_s``,
``open_s``); signs when the display list's ETag changed. A zone's flows are
clock-aligned windows under the k rule (:mod:`server.stores.zones`): they
change only when a window completes, and the event carries only the public
figures, so a zones event every minute reveals no per-minute count. At most one round
of events per ``min_interval_s`` (0.5 s): each resource at most twice a second.

Subscribers reuse the display streams' machinery (:mod:`server.displays.sse`):
one slot per resource holding its newest frame, so a slow client skips
summaries it had no time to read, never the newest one, and costs at most
four frames. A new (or reconnecting) client gets every current summary at
once: they are small, and a client never has to merge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from pydantic import TypeAdapter

from server import models
from server.displays.engine import DisplayEngine, Subscriber
from server.live import LiveState

log = logging.getLogger(__name__)

#: The feed's event names, in the order a client receives them on connect.
RESOURCES: tuple[str, ...] = ("lots", "lockers", "zones", "displays")
#: Which summaries a live-store change can move.
MOVES: dict[str, tuple[str, ...]] = {
    "bays": ("lots",),
    "lockers": ("lockers",),
    "zones": ("zones",),
    "devices": ("zones",),
}
#: Fields that change with the clock alone: they ride along but never cause an event.
VOLATILE = frozenset({"age_s", "open_s", "window_s"})

_LOTS = TypeAdapter(list[models.ParkingLot])
_LOCKERS = TypeAdapter(list[models.LockerBank])
_ZONES = TypeAdapter(list[models.ZoneCrowd])


def without_volatile(value: Any) -> Any:
    """``value`` (JSON-like) with every :data:`VOLATILE` key removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


class LiveSubscriber(Subscriber):
    """One client of the live feed: one slot per resource, newest frame wins."""

    __slots__ = ("slots",)

    def __init__(self) -> None:
        super().__init__("live")
        self.slots: dict[str, bytes] = {}

    def offer(self, resource: str, frame: bytes) -> None:
        self.slots[resource] = frame
        self.wake.set()

    def take(self) -> bytes | None:
        if not self.slots:
            return None
        frame = b"".join(self.slots[r] for r in RESOURCES if r in self.slots)
        self.slots.clear()
        return frame


class LiveFeed:
    """The site's live summaries as SSE frames; :meth:`running` is its lifetime (the app's lifespan)."""

    def __init__(
        self,
        live: LiveState,
        displays: DisplayEngine | None = None,
        *,
        min_interval_s: float = 0.5,
        tick_s: float = 1.0,
        wall_clock: Callable[[], float] | None = time.time,
    ) -> None:
        self.live = live
        self.displays = displays
        self.min_interval_s = min_interval_s
        self.tick_s = tick_s
        #: Event ids rise; they start at the wall clock in ms so a restarted server is unlikely to reuse one.
        self._next_id = 1 if wall_clock is None else int(wall_clock() * 1000)
        self.frames: dict[str, bytes] = {}
        self._keys: dict[str, object] = {}
        self.subscribers: set[LiveSubscriber] = set()
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._poke_pending = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.started = False
        self.closing = False

    # -- lifetime -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LiveFeed]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.closing = False
        self.flush(RESOURCES)
        self.started = True
        self.live.listeners.append(self._on_change)
        self._task = asyncio.create_task(self._run(), name="live-feed")

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        with contextlib.suppress(ValueError):
            self.live.listeners.remove(self._on_change)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.close_streams()

    def close_streams(self) -> None:
        """End every stream (the server is stopping)."""
        self.closing = True
        for sub in list(self.subscribers):
            sub.close()

    # -- changes ------------------------------------------------------------------------

    def _on_change(self, resource: str) -> None:
        """A live store changed (MQTT thread): mark what it moves and wake the loop once."""
        moves = MOVES.get(resource)
        loop, wake = self._loop, self._wake
        if moves is None or loop is None or wake is None:
            return
        with self._lock:
            self._pending.update(moves)
            if self._poke_pending:
                return
            self._poke_pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(wake.set)

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_tick - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            with self._lock:
                due = self._pending
                self._pending = set()
                self._poke_pending = False
            if loop.time() >= next_tick:
                due = set(RESOURCES)
                next_tick = loop.time() + self.tick_s
            due.add("displays")  # an ETag compare: cheap enough to look every round
            try:
                self.flush(due)
            except Exception:
                log.exception("live feed refresh failed")
            # Coalesce: whatever changes meanwhile goes out together in the next round.
            await asyncio.sleep(self.min_interval_s)

    # -- frames ---------------------------------------------------------------------------

    def flush(self, due: Iterable[str]) -> None:
        """Recompute the ``due`` summaries; send an event for each that changed."""
        now = self.live.clock()
        for resource in RESOURCES:
            if resource not in due:
                continue
            built = self._build(resource, now)
            if built is None:
                continue
            key, body = built
            if key == self._keys.get(resource):
                continue
            event_id = self._next_id
            self._next_id += 1
            frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, resource.encode(), body)
            self._keys[resource] = key
            self.frames[resource] = frame
            self.stats[f"events_{resource}"] += 1
            for sub in self.subscribers:
                sub.offer(resource, frame)

    def _build(self, resource: str, now: Any) -> tuple[object, bytes] | None:
        if resource == "displays":
            engine = self.displays
            if engine is None or not engine.started:
                return ("none", b"[]") if resource not in self._keys else None
            body, etag, _ = engine.list_body()
            return etag, body
        data: Any
        if resource == "lots":
            data = _LOTS.dump_python(self.live.lots(now), mode="json")
        elif resource == "lockers":
            data = _LOCKERS.dump_python(self.live.locker_banks(now), mode="json")
        else:
            data = _ZONES.dump_python(self.live.crowd(now), mode="json")
        key = json.dumps(without_volatile(data), sort_keys=True)
        return key, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    # -- subscribers --------------------------------------------------------------------

    def subscribe(self) -> LiveSubscriber:
        """A new subscriber; it gets every current summary at once."""
        sub = LiveSubscriber()
        if not self.started or self.closing:
            sub.close()
            return sub
        for resource in RESOURCES:
            frame = self.frames.get(resource)
            if frame is not None:
                sub.offer(resource, frame)
        self.subscribers.add(sub)
        self.stats["subscribed"] += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            self.stats["unsubscribed"] += 1
        sub.closed = True

    @property
    def subscriber_count(self) -> int:
        return len(self.subscribers)
