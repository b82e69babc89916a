"""Server-Sent Events for one sign (or the live feed): an ASGI response that follows a :class:`Subscriber`.

Frames: ``id: <event_id>\\nevent: state\\ndata: <JSON>\\n\\n`` on every change,
and a ``: ping`` comment after ``heartbeat_s`` without one. Two tasks per
client: the request's own (sending) and one that waits for the client's
disconnect, so a client that goes away is dropped at once, not at the next
heartbeat. Whatever ends the stream (disconnect, a failed send, cancellation,
the engine stopping), the subscriber is removed and the watcher task ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.displays.engine import Subscriber

log = logging.getLogger(__name__)

HEARTBEAT = b": ping\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Tell a reverse proxy (nginx) not to buffer the stream.
    (b"x-accel-buffering", b"no"),
]


class Feed(Protocol):
    """What hands out subscribers: the display engine, the live feed (:mod:`server.livefeed`)."""

    def unsubscribe(self, sub: Subscriber) -> None: ...


class EventStream(Response):
    """The stream of one subscriber's frames, until the client or the engine ends it."""

    media_type = "text/event-stream"

    def __init__(self, engine: Feed, subscriber: Subscriber, heartbeat_s: float, max_s: float | None = None) -> None:
        super().__init__(status_code=200)
        self.engine = engine
        self.subscriber = subscriber
        self.heartbeat_s = heartbeat_s
        self.max_s = max_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.subscriber
        loop = asyncio.get_running_loop()
        end = math.inf if self.max_s is None else loop.time() + self.max_s
        watcher = asyncio.create_task(self._watch(receive, sub), name=f"sse-watch-{sub.display_id}")
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            while not sub.closed:
                frame = sub.take()
                if frame is None:
                    left = end - loop.time()
                    if left <= 0:
                        break  # the client asked for a bounded stream (max_s)
                    sub.wake.clear()
                    try:
                        async with asyncio.timeout(min(self.heartbeat_s, left)):
                            await sub.wake.wait()
                    except TimeoutError:
                        if loop.time() >= end:
                            break
                        frame = HEARTBEAT
                    else:
                        continue
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            if not watcher.done():  # the engine or max_s ended it: finish the response cleanly
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-send
        finally:
            self.engine.unsubscribe(sub)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    @staticmethod
    async def _watch(receive: Receive, sub: Subscriber) -> None:
        """Wait for the client's disconnect, then end the stream."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                sub.close()
                return
