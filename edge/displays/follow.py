"""Following one sign's state from the guidance API: Server-Sent Events, falling back to polling.

A :class:`Follower` (one asyncio task per sign) keeps its :class:`Link` up to date:

* it opens ``GET /v1/displays/{id}/events`` (``Last-Event-ID`` = the last state it accepted) and takes
  every ``state`` event; the API sends the current state on connect and ``: ping`` at least every 30 s;
* when the stream fails, ends, or is not offered, it polls ``GET /v1/displays/{id}`` with
  ``If-None-Match`` every ``poll_interval_s`` while it waits to reopen the stream with backoff
  (:class:`common.retry.Backoff`), so the sign stays current either way;
* a malformed event or body (not JSON, a field of the wrong type, another display's id) is counted and
  logged, never shown; after a malformed event it polls once at once to get back in step.

The :class:`Link` is what the port writer thread reads: the last good state and the time the bridge
last *heard it vouched for* — a good event or poll, a ``304 Not Modified``, or any byte on a healthy
stream (the heartbeat) while no malformed state has come since the last good one. Past
``stale_after_s`` without that, :meth:`Link.frame` is the bridge's own fallback, not the last number.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import cast

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError
from pydantic import ValidationError

from common.retry import Backoff, Jitter
from contracts.fieldbus import DisplayFrame
from edge.displays.config import ApiConfig, DisplayLink
from edge.displays.sign import SignState, fallback_frame, frame_for
from edge.sensors.modbus import RateLimitedLog

log = logging.getLogger(__name__)

#: Event types that carry a sign state (``message`` is what an event without an ``event:`` line is).
STATE_EVENTS = frozenset({"state", "message"})


class Link:
    """One sign's latest good state and how recently the API vouched for it. Thread-safe.

    The follower calls :meth:`accept`, :meth:`confirm`, :meth:`alive` and :meth:`lost_step`; the port
    writer calls :meth:`frame` and :meth:`deadline`. ``wake`` is set on every accepted state, so the
    writer can write a change at once.
    """

    def __init__(
        self,
        config: DisplayLink,
        *,
        stale_after_s: float,
        wake: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.display_id = config.display_id
        self.stale_after_s = stale_after_s
        self.wake = wake or threading.Event()
        self._clock = clock
        self._lock = threading.Lock()
        self._state: SignState | None = None
        self._vouched_at = -math.inf
        self._in_step = False
        self.stats: Counter[str] = Counter()

    @property
    def state(self) -> SignState | None:
        with self._lock:
            return self._state

    def accept(self, state: SignState) -> None:
        """A good state from the API: it is what the sign shows from now."""
        with self._lock:
            old = self._state
            if old is not None and state.event_id < old.event_id:
                self.stats["event_id_backwards"] += 1
                log.warning(
                    "%s: event id went back from %d to %d; showing the newer state anyway",
                    self.display_id,
                    old.event_id,
                    state.event_id,
                )
            self._state = state
            self._vouched_at = self._clock()
            self._in_step = True
            self.stats["states"] += 1
        if old is None or frame_for(old) != frame_for(state):
            log.info("%s: %r (%s/%s, event %d)", self.display_id, state.text, state.mode, state.state, state.event_id)
        self.wake.set()

    def confirm(self) -> None:
        """The API says the state the bridge holds is still current (``304 Not Modified``)."""
        with self._lock:
            if self._state is not None:
                self._vouched_at = self._clock()
                self._in_step = True

    def alive(self) -> None:
        """The API is talking (a stream opened, a heartbeat): vouches only while in step with it."""
        with self._lock:
            if self._in_step:
                self._vouched_at = self._clock()

    def lost_step(self) -> None:
        """A malformed state came: heartbeats no longer vouch for the last good one."""
        with self._lock:
            self._in_step = False

    def frame(self, now: float | None = None) -> DisplayFrame:
        """What the sign must show now: the last good state while vouched for, else the fallback."""
        now = self._clock() if now is None else now
        with self._lock:
            state, vouched_at = self._state, self._vouched_at
        if state is None or now - vouched_at > self.stale_after_s:
            return fallback_frame(self.config.fallback_text, state.mode if state else "auto")
        return frame_for(state)

    def deadline(self) -> float:
        """Clock time at which the current state stops being vouched for (``inf`` when already not)."""
        with self._lock:
            if self._state is None:
                return math.inf
            return self._vouched_at + self.stale_after_s

    def etag(self) -> str | None:
        """The ``If-None-Match`` value for the state held (the API's ETag is ``"<event_id>"``)."""
        with self._lock:
            return None if self._state is None else f'"{self._state.event_id}"'


class _Heard:
    """The response as :class:`httpx_sse.EventSource` reads it (headers and text), calling ``on_data``
    for every chunk that arrives, comments included: httpx-sse drops ``: ping`` lines, and the
    heartbeat is how the bridge knows a quiet stream is still alive.

    ``on_data`` runs once the events in the chunk have been handled (when the decoder asks for the
    next one), so a malformed event's own bytes never vouch for the state before it."""

    def __init__(self, response: httpx.Response, on_data: Callable[[], None]) -> None:
        self._response = response
        self._on_data = on_data

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    async def aiter_text(self) -> AsyncIterator[str]:
        async for text in self._response.aiter_text():
            yield text
            self._on_data()


class Follower:
    """Keeps one :class:`Link` current from the API (module doc). One asyncio task runs :meth:`run`."""

    def __init__(
        self,
        link: Link,
        client: httpx.AsyncClient,
        api: ApiConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
    ) -> None:
        self.link = link
        self.display_id = link.display_id
        self._client = client
        self._api = api
        self._clock = clock
        self._backoff = backoff or Backoff(api.reconnect_min_s, api.reconnect_max_s, jitter=Jitter.symmetric(0.2))
        self._url = f"{api.base}/v1/displays/{link.display_id}"
        self._last_id: str | None = None
        self._warn = RateLimitedLog(log, 60.0, clock)
        self.stats = link.stats
        #: True while an SSE stream is open and delivering.
        self.streaming = False

    async def run(self) -> None:
        """Follow until cancelled. Never raises anything else: every failure is counted and retried."""
        next_stream = self._clock() if self._api.sse else math.inf
        while True:
            if self._clock() >= next_stream:
                delivered = False
                try:
                    delivered = await self._stream()
                except (httpx.HTTPError, SSEError) as exc:
                    self._fault("sse_error", f"event stream failed: {type(exc).__name__}: {exc}")
                except Exception:
                    self.stats["sse_error"] += 1
                    log.exception("%s: unexpected error on the event stream", self.display_id)
                finally:
                    self.streaming = False
                if delivered:
                    self._backoff.reset()
                next_stream = self._clock() + self._backoff.next_delay()
            await self._poll_until(next_stream)

    # -- Server-Sent Events -------------------------------------------------------------------------
    async def _stream(self) -> bool:
        """One event stream, until it ends or fails; True if it delivered a good state or a heartbeat."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self._last_id is not None:
            headers["Last-Event-ID"] = self._last_id
        timeout = httpx.Timeout(self._api.timeout_s, read=self._api.sse_idle_timeout_s)
        delivered = False

        def heard() -> None:
            nonlocal delivered
            delivered = True
            self.link.alive()

        async with self._client.stream("GET", f"{self._url}/events", headers=headers, timeout=timeout) as response:
            ctype = response.headers.get("content-type", "").partition(";")[0].strip()
            if response.status_code != 200 or ctype != "text/event-stream":
                self.stats["sse_refused"] += 1
                self._warn.warning(
                    "sse_refused",
                    "%s: no event stream (HTTP %d, %s); polling",
                    self.display_id,
                    response.status_code,
                    ctype or "no content type",
                )
                return False
            self.stats["sse_connects"] += 1
            self.streaming = True
            log.info("%s: following %s/events", self.display_id, self._url)
            self.link.alive()
            source = EventSource(cast(httpx.Response, _Heard(response, heard)))
            async for sse in source.aiter_sse():
                await self._on_event(sse)
        self._fault("sse_ended", "the event stream ended")
        return delivered

    async def _on_event(self, sse: ServerSentEvent) -> None:
        if not sse.data:
            # The SSE spec dispatches no event with an empty data buffer; httpx-sse does once an id was
            # seen (e.g. after each ``: ping``), so those are dropped here.
            return
        if sse.event not in STATE_EVENTS:
            self.stats["events_ignored"] += 1
            return
        state = self._parse(sse.data, "event")
        if state is None:
            await self._poll_once()  # get back in step now, not at the next event
            return
        self.stats["events"] += 1
        self._last_id = sse.id or str(state.event_id)
        self.link.accept(state)

    # -- polling ------------------------------------------------------------------------------------
    async def _poll_until(self, deadline: float) -> None:
        while True:
            await self._poll_once()
            left = deadline - self._clock()
            if left <= 0:
                return
            await asyncio.sleep(min(self._api.poll_interval_s, left))

    async def _poll_once(self) -> None:
        headers = {}
        etag = self.link.etag()
        if etag is not None:
            headers["If-None-Match"] = etag
        self.stats["polls"] += 1
        try:
            response = await self._client.get(self._url, headers=headers, timeout=self._api.timeout_s)
        except httpx.HTTPError as exc:
            self._fault("poll_error", f"poll failed: {type(exc).__name__}: {exc}")
            return
        if response.status_code == 304:
            self.stats["not_modified"] += 1
            self.link.confirm()
            return
        if response.status_code != 200:
            self._fault(f"http_{response.status_code}", f"poll answered HTTP {response.status_code}")
            return
        state = self._parse(response.content, "poll")
        if state is not None:
            self.link.accept(state)
            self._last_id = str(state.event_id)

    # -- shared -------------------------------------------------------------------------------------
    def _parse(self, data: str | bytes, where: str) -> SignState | None:
        try:
            state = SignState.model_validate_json(data)
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
            self._malformed(where, problem, data)
            return None
        if state.display_id != self.display_id:
            self._malformed(where, f"display_id {state.display_id!r}", data)
            return None
        return state

    def _malformed(self, where: str, problem: str, data: str | bytes) -> None:
        self.stats["malformed"] += 1
        self.link.lost_step()
        shown = data if isinstance(data, str) else data.decode("utf-8", "replace")
        self._warn.warning(
            f"malformed:{where}", "%s: malformed %s ignored (%s): %.120r", self.display_id, where, problem, shown
        )

    def _fault(self, reason: str, detail: str) -> None:
        self.stats[reason] += 1
        self._warn.warning(reason, "%s: %s", self.display_id, detail)
