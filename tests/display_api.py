"""A small real HTTP server serving the sign-state contract, for the display bridge's tests.

Until the guidance API's display endpoints are merged, this serves exactly what docs/display-bridge.md
("The sign state") says the bridge consumes, over real HTTP (uvicorn on a free loopback port):

* ``GET /v1/displays/{id}``: the state, ``ETag: "<event_id>"``, ``304`` for a matching ``If-None-Match``;
* ``GET /v1/displays/{id}/events``: ``text/event-stream``, the current state at once (unless
  ``Last-Event-ID`` is its id), every change as ``id:/event: state/data:``, ``: ping`` every
  ``heartbeat_s``;
* ``404`` for an unknown display.

Tests drive it from their own thread: :meth:`FakeDisplayApi.set` publishes a state, :meth:`raw_event`
sends any text as an event (a malformed one), :meth:`drop_streams` ends every open stream,
``sse = False`` refuses streams (404), :meth:`stop` / :meth:`start` take the whole server away and back
on the same port. ``hits`` counts requests by kind.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from district.services import free_port


class FakeDisplayApi:
    def __init__(self, *, port: int | None = None, heartbeat_s: float = 1.0) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.heartbeat_s = heartbeat_s
        self.sse = True
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = {}
        self._poll_override: dict[str, str] = {}
        self._next_id = int(time.time() * 1000)
        self._streams: dict[str, set[asyncio.Queue[str | None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- driving it ---------------------------------------------------------------------------------
    def set(
        self,
        display_id: str,
        value: int | None,
        *,
        text: str | None = None,
        state: str = "open",
        mode: str = "auto",
        stale: bool = False,
        trusted: bool = True,
    ) -> int:
        """Publish a new state (a new event id); returns the id."""
        with self._lock:
            self._next_id += 1
            doc = {
                "display_id": display_id,
                "event_id": self._next_id,
                "value": value,
                "text": text if text is not None else ("" if value is None else str(value)),
                "mode": mode,
                "state": state,
                "stale": stale,
                "trusted": trusted,
                "trust": 1.0 if trusted else 0.0,
                "data_age_s": 3,
                "sources": [{"kind": "lot", "id": "lot-a"}],
                "updated_at": datetime.now(UTC).isoformat(),
            }
            self._states[display_id] = doc
        self._publish(display_id, _event(doc))
        return int(doc["event_id"])

    def raw_event(self, display_id: str, data: str, event_id: str = "") -> None:
        """Send ``data`` as a ``state`` event to every open stream of ``display_id`` (a malformed one)."""
        head = f"id: {event_id}\n" if event_id else ""
        self._publish(display_id, f"{head}event: state\ndata: {data}\n\n")

    def poll_body(self, display_id: str, body: str | None) -> None:
        """Answer polls of ``display_id`` with ``body`` (200, no ETag) instead of its state; None undoes it."""
        with self._lock:
            if body is None:
                self._poll_override.pop(display_id, None)
            else:
                self._poll_override[display_id] = body

    def drop_streams(self) -> None:
        """End every open event stream (the server side closes them)."""
        loop = self._loop
        if loop is None:
            return

        def drop() -> None:
            for queues in self._streams.values():
                for q in queues:
                    q.put_nowait(None)

        loop.call_soon_threadsafe(drop)

    def open_streams(self) -> int:
        return sum(len(q) for q in self._streams.values())

    # -- running it ---------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, name=f"fake-api:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"fake display API did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        self.drop_streams()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("fake display API did not stop")
        self._server = self._thread = None
        self._loop = None
        self._streams.clear()

    # -- the app ------------------------------------------------------------------------------------
    def _publish(self, display_id: str, text: str) -> None:
        loop = self._loop
        if loop is None:
            return

        def put() -> None:
            for q in self._streams.get(display_id, ()):
                q.put_nowait(text)

        loop.call_soon_threadsafe(put)

    def _current(self, display_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._states.get(display_id)

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/displays/{display_id}")
        async def poll(display_id: str, request: Request) -> Response:
            self._loop = asyncio.get_running_loop()
            self.hits["poll"] += 1
            with self._lock:
                override = self._poll_override.get(display_id)
            if override is not None:
                return Response(override, media_type="application/json")
            doc = self._current(display_id)
            if doc is None:
                return Response(status_code=404)
            etag = f'"{doc["event_id"]}"'
            if request.headers.get("if-none-match") == etag:
                self.hits["not_modified"] += 1
                return Response(status_code=304, headers={"ETag": etag})
            return Response(json.dumps(doc), media_type="application/json", headers={"ETag": etag})

        @app.get("/v1/displays/{display_id}/events")
        async def events(display_id: str, request: Request) -> Response:
            self._loop = asyncio.get_running_loop()
            self.hits["events"] += 1
            doc = self._current(display_id)
            if doc is None or not self.sse:
                return Response(status_code=404)
            queue: asyncio.Queue[str | None] = asyncio.Queue()
            self._streams.setdefault(display_id, set()).add(queue)
            if request.headers.get("last-event-id") != str(doc["event_id"]):
                queue.put_nowait(_event(doc))
            else:
                self.hits["resumed"] += 1

            async def stream() -> AsyncIterator[str]:
                try:
                    while True:
                        try:
                            item = await asyncio.wait_for(queue.get(), self.heartbeat_s)
                        except TimeoutError:
                            yield ": ping\n\n"
                            continue
                        if item is None:
                            return
                        yield item
                finally:
                    self._streams.get(display_id, set()).discard(queue)

            return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

        return app


def _event(doc: dict[str, Any]) -> str:
    return f"id: {doc['event_id']}\nevent: state\ndata: {json.dumps(doc)}\n\n"
