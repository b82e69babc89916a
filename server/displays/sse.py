"""Server-Sent Events for one sign: an ASGI response that follows a :class:`Subscriber`.

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

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.displays.engine import DisplayEngine, Subscriber

log = logging.getLogger(__name__)

HEARTBEAT = b": ping\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Tell a reverse proxy (nginx) not to buffer the stream.
    (b"x-accel-buffering", b"no"),
]


class EventStream(Response):
    """The stream of one subscriber's frames, until the client or the engine ends it."""

    media_type = "text/event-stream"

    def __init__(self, engine: DisplayEngine, subscriber: Subscriber, heartbeat_s: float) -> None:
        super().__init__(status_code=200)
        self.engine = engine
        self.subscriber = subscriber
        self.heartbeat_s = heartbeat_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.subscriber
        watcher = asyncio.create_task(self._watch(receive, sub), name=f"sse-watch-{sub.display_id}")
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            while not sub.closed:
                frame = sub.take()
                if frame is None:
                    sub.wake.clear()
                    try:
                        async with asyncio.timeout(self.heartbeat_s):
                            await sub.wake.wait()
                    except TimeoutError:
                        frame = HEARTBEAT
                    else:
                        continue
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            if not watcher.done():  # the engine ended it: finish the response cleanly
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
