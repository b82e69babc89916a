"""The display engine: one computed state per configured sign, its event id, cached bytes and subscribers.

It recomputes every sign on a tick (``display_tick_s``, 0.5 s: staleness is
noticed within ``stale_after_s`` plus one tick) and promptly after the live
state changed (:attr:`server.live.LiveState.listeners`, called from the MQTT
thread; coalesced to one recompute per :attr:`DisplayEngine.coalesce_s`).

When what a sign shows changes (value, text, mode, state, stale, trusted or
the override), it gets the next event id (:mod:`server.displays.state`), its
JSON is serialized once, and every subscriber's slot is overwritten with the
new SSE frame (newest wins: a slow client skips intermediate states, never
the latest one, and costs one frame of memory). Between events the tick only
refreshes the informational fields (``data_age_s``, ``trust``, ``sources``)
in the cached body; the event id, ETag and ``updated_at`` stay.

Everything runs on the event loop except :meth:`DisplayEngine._on_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from contracts.site import Display, SiteConfig
from server import models
from server.displays.render import Override, Rendered, SourceView, gather, render, whole_seconds
from server.displays.state import ID_BLOCK, DisplayStateFile, audit_entry
from server.live import LiveState

log = logging.getLogger(__name__)

#: Live-state resources whose changes can move a sign (devices: a camera's health moves a zone).
WATCHED = frozenset({"bays", "zones", "devices"})


class OverrideRejected(ValueError):
    """An override the engine refuses (its ``until``, a missing text)."""


class Subscriber:
    """One SSE client of one sign: a one-frame slot (newest wins) and a wake-up event."""

    __slots__ = ("closed", "display_id", "pending", "wake")

    def __init__(self, display_id: str) -> None:
        self.display_id = display_id
        self.pending: bytes | None = None
        self.wake = asyncio.Event()
        self.closed = False

    def take(self) -> bytes | None:
        frame, self.pending = self.pending, None
        return frame

    def push(self, frame: bytes) -> None:
        self.pending = frame
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


@dataclass
class Sign:
    """One sign's current state as served: ``body`` (JSON), ``etag`` and ``frame`` (SSE) are pre-built."""

    config: Display
    override: Override | None = None
    rendered: Rendered | None = None
    key: tuple[object, ...] = ()
    info: tuple[object, ...] = ()
    event_id: int = 0
    updated_at: float = 0.0
    body: bytes = b""
    etag: str = ""
    #: The 200 answer's headers, ready for ASGI (content type and length, ETag, Cache-Control).
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    frame: bytes = b""
    subscribers: set[Subscriber] = field(default_factory=set)


def _override_key(o: Override | None) -> tuple[object, ...]:
    return () if o is None else (o.mode, o.text, o.until, o.by)


def _source_out(s: SourceView, stale_limit_s: float) -> models.SignSource:
    return models.SignSource(
        id=s.id,
        kind=s.kind,
        value=s.value,
        capacity=s.capacity,
        reporting=s.reporting,
        fresh=s.age_s is not None and s.age_s <= stale_limit_s,
        data_age_s=whole_seconds(s.age_s),
        closed=s.closed,
        level=s.level,
        suppressed=s.suppressed,
    )


def json_headers(body: bytes, etag: str) -> list[tuple[bytes, bytes]]:
    """A 200 answer's headers for ``body``: revalidate every time (``no-cache``) against ``etag``."""
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"etag", etag.encode()),
        (b"cache-control", b"no-cache"),
    ]


def _ts(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class DisplayEngine:
    """Every configured sign of one site; :meth:`running` is its lifetime (the app's lifespan)."""

    def __init__(
        self,
        site: SiteConfig,
        live: LiveState,
        state_path: Path,
        *,
        tick_s: float = 0.5,
        coalesce_s: float = 0.05,
        override_max_s: float = 7 * 86_400.0,
        id_block: int = ID_BLOCK,
        wall_clock: Callable[[], float] | None = time.time,
    ) -> None:
        self.site = site
        self.live = live
        self.tick_s = tick_s
        self.coalesce_s = coalesce_s
        self.override_max_s = override_max_s
        self.file = DisplayStateFile(state_path, block=id_block)
        #: A fresh id range starts at this clock in ms (None: at 1).
        self.wall_clock = wall_clock
        self.signs: dict[str, Sign] = {d.id: Sign(d) for d in site.displays}
        self.stats: Counter[str] = Counter()
        self._next_id = 1
        self._last_id = 0
        self._list_body = b"[]"
        self._list_etag = '"0"'
        self._list_headers = json_headers(self._list_body, self._list_etag)
        self._list_dirty = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._poke_pending = False
        self._poke_handle: asyncio.TimerHandle | None = None
        self._last_refresh = 0.0
        self.started = False
        #: Set when the server begins to stop: streams end, new ones end at once.
        self.closing = False

    # -- lifetime ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DisplayEngine]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            if self.signs:  # a site without displays keeps no state file
                self.file.open()
        except (OSError, sqlite3.Error) as exc:
            # Signs must be served: keep going on a file that lasts as long as this process.
            fallback = Path(tempfile.mkdtemp(prefix="district-displays-")) / self.file.path.name
            log.warning(
                "display state file %s cannot be opened (%s); using %s: event ids and overrides will not"
                " survive a restart (set DISTRICT_SERVER_STATE_DIR)",
                self.file.path,
                exc,
                fallback,
            )
            self.file = DisplayStateFile(fallback, block=self.file.block)
            self.file.open()
        for display_id, override in (self.file.overrides() if self.file.is_open else {}).items():
            if display_id in self.signs:
                self.signs[display_id].override = override
        self.started = True
        self.refresh()
        self.live.listeners.append(self._on_change)
        self._task = asyncio.create_task(self._run(), name="display-tick")
        log.info("displays: %d sign(s), event ids from %d", len(self.signs), self._next_id)

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        with contextlib.suppress(ValueError):
            self.live.listeners.remove(self._on_change)
        if self._poke_handle is not None:
            self._poke_handle.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.close_streams()
        self.file.close()

    def close_streams(self) -> None:
        """End every event stream (the server is stopping: it need not wait for SSE clients)."""
        self.closing = True
        for sign in self.signs.values():
            for sub in list(sign.subscribers):
                sub.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self._safe_refresh()

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except Exception:
            log.exception("display refresh failed")

    # -- prompt recompute on live changes ----------------------------------------

    def _on_change(self, resource: str) -> None:
        """A live store changed (MQTT thread): recompute soon, at most once per ``coalesce_s``."""
        loop = self._loop
        if loop is None or self._poke_pending or resource not in WATCHED:
            return
        self._poke_pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._schedule_poke)

    def _schedule_poke(self) -> None:
        if not self.started or self._loop is None:
            return
        delay = max(0.0, self._last_refresh + self.coalesce_s - time.monotonic())
        self._poke_handle = self._loop.call_later(delay, self._poked)

    def _poked(self) -> None:
        self._poke_handle = None
        self._poke_pending = False
        if self.started:
            self.stats["pokes"] += 1
            self._safe_refresh()

    # -- computing ---------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute every sign now: expire overrides, render, and publish what changed."""
        self._last_refresh = time.monotonic()
        now = self.live.clock()
        now_ts = now.timestamp()
        for sign in self.signs.values():
            o = sign.override
            if o is not None and o.until <= now_ts:
                self.file.clear_override(sign.config.id, now_ts, "expiry", o, expired=True)
                sign.override = None
                log.info("display %s: %s override ended at its until", sign.config.id, o.mode)
            self._update(sign, now, now_ts)
        if self._list_dirty:
            self._list_body = b"[" + b",".join(s.body for s in self.signs.values()) + b"]"
            self._list_etag = f'"{max((s.event_id for s in self.signs.values()), default=0)}"'
            self._list_headers = json_headers(self._list_body, self._list_etag)
            self._list_dirty = False

    def _update(self, sign: Sign, now: datetime, now_ts: float) -> None:
        display = sign.config
        sources = gather(self.site, self.live, display, now)
        r = render(display, sources, sign.override)
        key = (*r.key, *_override_key(sign.override))
        outs = [_source_out(s, display.stale_limit_s) for s in sources]
        info = (r.trust, r.data_age_s, tuple(outs))
        if key == sign.key and info == sign.info:
            return
        event = key != sign.key
        if event:
            sign.event_id = self._issue_id()
            sign.updated_at = now_ts
            sign.key = key
            self.stats["events"] += 1
        sign.rendered, sign.info = r, info
        o = sign.override
        state = models.SignState(
            display_id=display.id,
            event_id=sign.event_id,
            value=r.value,
            text=r.text,
            mode=r.mode,
            state=r.state,
            stale=r.stale,
            trusted=r.trusted,
            trust=r.trust,
            trust_share=display.trust_share,
            data_age_s=r.data_age_s,
            stale_after_s=display.stale_limit_s,
            shows=display.shows,
            kind=display.kind,
            name=display.name,
            sources=outs,
            override=None
            if o is None
            else models.SignOverride(
                mode=o.mode, text=o.text, until=_ts(o.until), by=o.by, reason=o.reason, set_at=_ts(o.set_at)
            ),
            updated_at=_ts(sign.updated_at),
        )
        sign.body = state.model_dump_json().encode()
        sign.etag = f'"{sign.event_id}"'
        sign.headers = json_headers(sign.body, sign.etag)
        sign.frame = b"id: %d\nevent: state\ndata: %s\n\n" % (sign.event_id, sign.body)
        self._list_dirty = True
        if event:
            for sub in sign.subscribers:
                sub.push(sign.frame)

    def _issue_id(self) -> int:
        if self._next_id > self._last_id:
            floor = 0 if self.wall_clock is None else int(self.wall_clock() * 1000)
            self._next_id, self._last_id = self.file.reserve_ids(floor)
        issued = self._next_id
        self._next_id += 1
        return issued

    # -- reads ---------------------------------------------------------------------

    def sign(self, display_id: str) -> Sign | None:
        return self.signs.get(display_id)

    def list_body(self) -> tuple[bytes, str, list[tuple[bytes, bytes]]]:
        return self._list_body, self._list_etag, self._list_headers

    @property
    def subscriber_count(self) -> int:
        return sum(len(s.subscribers) for s in self.signs.values())

    # -- SSE subscribers --------------------------------------------------------------

    def subscribe(self, sign: Sign, last_event_id: str | None) -> Subscriber:
        """A new subscriber of ``sign``; it gets the current state at once unless it already has it."""
        sub = Subscriber(sign.config.id)
        if not self.started or self.closing:
            sub.close()
            return sub
        if last_event_id is None or last_event_id.strip() != str(sign.event_id):
            sub.push(sign.frame)
        sign.subscribers.add(sub)
        self.stats["subscribed"] += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sign = self.signs.get(sub.display_id)
        if sign is not None and sub in sign.subscribers:
            sign.subscribers.discard(sub)
            self.stats["unsubscribed"] += 1
        sub.closed = True

    # -- overrides -----------------------------------------------------------------------

    def set_override(
        self,
        sign: Sign,
        mode: models.OverrideMode,
        text: str | None,
        until: datetime,
        by: str,
        reason: str | None,
    ) -> None:
        """Put ``sign`` in ``mode`` until ``until`` (audited as ``by``); raises :class:`OverrideRejected`."""
        now_ts = self.live.clock().timestamp()
        until_ts = until.timestamp()
        if until_ts <= now_ts:
            raise OverrideRejected("until must be in the future")
        if until_ts > now_ts + self.override_max_s:
            raise OverrideRejected(f"until may be at most {self.override_max_s:.0f} s ahead")
        if mode == "text" and not text:
            raise OverrideRejected("mode text needs a text")
        if mode != "text" and text is not None:
            raise OverrideRejected(f"mode {mode} shows no text; leave text out")
        override = Override(mode, text, until_ts, by, reason, now_ts)
        self.file.set_override(sign.config.id, override)
        sign.override = override
        log.info("display %s: override %s until %s set by %s", sign.config.id, mode, until.isoformat(), by)
        self.refresh()

    def clear_override(self, sign: Sign, by: str) -> bool:
        """End ``sign``'s override now (audited as ``by``); False if it had none."""
        o = sign.override
        if o is None:
            return False
        self.file.clear_override(sign.config.id, self.live.clock().timestamp(), by, o, expired=False)
        sign.override = None
        log.info("display %s: override %s cleared by %s", sign.config.id, o.mode, by)
        self.refresh()
        return True

    def audit(self, display_id: str | None, limit: int) -> list[models.AuditEntry]:
        if not self.file.is_open:
            return []
        return [audit_entry(row) for row in self.file.audit(display_id, limit)]
