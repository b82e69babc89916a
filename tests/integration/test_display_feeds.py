"""Display feeds with real sockets: 1,000 SSE clients churning, and a real server going stale and back.

The churn test runs the app under a real uvicorn in a thread (no broker or
database: the display engine does not need them) so it can count the
server loop's tasks and the engine's subscribers afterwards. The staleness
test runs ``district server`` as a process against real Mosquitto and
InfluxDB, with a raw MQTT publisher playing the lot's bay controller.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import struct
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from contracts import ParkingBayState, encode, new_reading_id, topics
from contracts.site import SiteConfig
from district.services import Service, free_port
from server.app import create_app
from server.displays import DisplayEngine
from server.live import BayReading, LiveState
from server.settings import ServerSettings
from tests.conftest import Influx, wait_for
from tests.integration.test_server import publisher
from tests.integration.test_server_main import start_server_process

pytestmark = pytest.mark.integration


# -- 1,000 SSE clients ---------------------------------------------------------------------------

CHURN_SITE = {
    "site": {"id": "churn", "name": "Churn"},
    "parking": [{"id": "L", "name": "Lot", "coords": {"lat": 51.0, "lng": 13.7}, "bays": {"prefix": "B", "count": 20}}],
    "displays": [{"id": "g", "kind": "garage", "coords": {"lat": 51.0, "lng": 13.7}, "lots": ["L"]}],
}


@contextmanager
def serve_app(live: LiveState, tmp_path: Path) -> Iterator[tuple[int, DisplayEngine, uvicorn.Server]]:
    settings = ServerSettings(site_config=tmp_path / "unused.yaml", state_dir=tmp_path / "state", sse_heartbeat_s=1.0)
    app = create_app(settings, site=live.site, live=live, connect=False)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=30, what="uvicorn to start")
        assert server.started
        yield port, app.state.displays, server
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop"


REQUEST = b"GET /v1/displays/g/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n"


async def one_client(port: int, how: str, hold: asyncio.Event | None = None) -> None:
    """One SSE client that goes away in its own manner (``how``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if how == "half-request":  # gone before the request is complete
            writer.write(REQUEST[:30])
            await writer.drain()
            return
        writer.write(REQUEST)
        await writer.drain()
        if how == "no-read":  # never reads a byte of the response
            return
        if how == "mid-headers":  # reads part of the status line
            await reader.read(5)
            return
        data = await asyncio.wait_for(reader.readuntil(b"\n\n"), 20)  # headers end with \r\n\r\n; then one event
        while b"event: state" not in data:
            data += await asyncio.wait_for(reader.readuntil(b"\n\n"), 20)
        if hold is not None:
            await hold.wait()
        if how == "reset":  # an abortive close: RST instead of FIN
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


def server_tasks(engine: DisplayEngine) -> int:
    """Tasks alive on the server's event loop (besides the one counting)."""

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    assert engine._loop is not None
    return asyncio.run_coroutine_threadsafe(count(), engine._loop).result(10)


def test_a_thousand_sse_clients_come_and_go_and_leave_nothing_behind(tmp_path: Path) -> None:
    site = SiteConfig.model_validate(CHURN_SITE)
    live = LiveState(site)
    stop = threading.Event()

    def sensor() -> None:  # keeps the sign changing, so frames are pushed while clients come and go
        n = 0
        while not stop.is_set():
            n += 1
            status = "free" if (n // 20) % 2 else "occupied"
            now = datetime.now(UTC)
            live.apply_bay("L", f"B{n % 20 + 1:03d}", BayReading.of(status, now, f"r{n:09d}", heard=now.timestamp()))
            time.sleep(0.01)

    hows = ["full", "reset", "no-read", "mid-headers", "half-request"]

    async def churn(port: int, n: int, batch: int = 100) -> None:
        for start in range(0, n, batch):
            await asyncio.gather(*(one_client(port, hows[(start + i) % len(hows)]) for i in range(batch)))

    with serve_app(live, tmp_path) as (port, engine, _server):
        feeder = threading.Thread(target=sensor, daemon=True)
        feeder.start()
        try:
            baseline_tasks = server_tasks(engine)

            # Many at once: 300 subscribers held open together, then dropped together.
            async def held() -> None:
                hold = asyncio.Event()
                clients = [asyncio.create_task(one_client(port, "full", hold)) for _ in range(300)]
                await asyncio.to_thread(wait_for, lambda: engine.subscriber_count == 300, 60, 0.05, "300 subscribers")
                hold.set()
                await asyncio.gather(*clients)

            asyncio.run(held())
            wait_for(lambda: engine.subscriber_count == 0, timeout=20, what="held subscribers gone")

            asyncio.run(churn(port, 200))  # warm-up: caches, pools, lazily built objects
            wait_for(lambda: engine.subscriber_count == 0, timeout=20, what="warm-up subscribers gone")
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                asyncio.run(churn(port, 1000))
                wait_for(lambda: engine.subscriber_count == 0, timeout=20, what="every subscriber gone")
                wait_for(lambda: server_tasks(engine) <= baseline_tasks, timeout=20, what="every stream task gone")
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
        finally:
            stop.set()
            feeder.join(10)
        growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
        top = [str(s) for s in after.compare_to(before, "lineno")[:8]]
        assert growth < 512 * 1024, f"memory grew {growth} bytes over 1,000 clients:\n" + "\n".join(top)
        assert engine.subscriber_count == 0
        assert engine.stats["subscribed"] == engine.stats["unsubscribed"]
        assert engine.stats["subscribed"] >= 1300 * 3 // 5  # full, reset, no-read at least got through
        assert not [s for s in engine.signs.values() if s.subscribers]
        assert engine.stats["events"] > 10  # states were pushed while clients came and went


# -- a real server: the sign goes to its fallback when its controller stops, and comes back ------------

STALE_S = 3.0
STALE_SITE = f"""
site: {{id: dtest, name: Display test site}}
parking:
  - id: lot1
    name: Lot One
    coords: {{lat: 51.05, lng: 13.73}}
    bays: [a, b, c, d]
    stale_after_s: 600
displays:
  - id: sign
    kind: garage
    coords: {{lat: 51.05, lng: 13.73}}
    lots: [lot1]
    stale_after_s: {STALE_S}
    fallback: text
    fallback_text: "---"
"""


class Controller:
    """A bay controller on the bus: publishes every bay's state every 0.3 s while running."""

    def __init__(self, broker: Service, prefix: str) -> None:
        self.broker = broker
        self.topic = topics.build(prefix, "dtest", "bays-1", "parking_bay")
        self.running = threading.Event()
        self.stopped = threading.Event()
        #: time.monotonic() when the broker acknowledged the last reading.
        self.last_acked = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with publisher(self.broker) as pub:
            while not self.stopped.is_set():
                if self.running.wait(0.05):
                    for bay_id, status in (("a", "free"), ("b", "free"), ("c", "free"), ("d", "occupied")):
                        msg = ParkingBayState(
                            device_id="bays-1",
                            observed_at=datetime.now(UTC),
                            reading_id=new_reading_id(),
                            lot_id="lot1",
                            bay_id=bay_id,
                            status=status,  # type: ignore[arg-type]
                        )
                        pub.publish(self.topic, encode(msg))
                    self.last_acked = time.monotonic()
                    time.sleep(0.3)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stopped.set()
        self._thread.join(10)


class SseFollower:
    """Records every state event of one sign's stream, with the time it arrived."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=60)) as client, client.stream("GET", self.url) as r:
            assert r.status_code == 200
            data = None
            for line in r.iter_lines():
                if self.closed.is_set():
                    return
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and data is not None:
                    self.events.append((time.monotonic(), data))
                    data = None

    def close(self) -> None:
        self.closed.set()
        # The thread ends at the next line (heartbeat within 15 s); it is a daemon either way.


def shows_number(state: dict[str, Any]) -> bool:
    return state["value"] is not None and state["state"] not in ("fallback", "blank")


def test_a_sign_falls_back_when_its_controller_stops_and_recovers(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(STALE_SITE)
    proc, port, log = start_server_process(mosquitto, influx_db, prefix, tmp_path, site)
    controller = Controller(mosquitto, prefix)
    follower: SseFollower | None = None
    polls: list[tuple[float, dict[str, Any]]] = []
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as client:

            def poll() -> dict[str, Any]:
                try:
                    r = client.get("/v1/displays/sign")
                except httpx.TransportError:
                    return {}
                if r.status_code != 200:
                    return {}
                body: dict[str, Any] = r.json()
                polls.append((time.monotonic(), body))
                return body

            wait_for(lambda: poll().get("display_id") == "sign" or proc.poll() is not None, 30, what="the API")
            assert proc.poll() is None, log.read_text()
            assert poll()["state"] == "fallback"  # nothing heard yet: never a number
            follower = SseFollower(f"{base}/v1/displays/sign/events")
            controller.start()
            controller.running.set()
            wait_for(lambda: poll().get("value") == 3, 15, interval=0.1, what="the number")
            wait_for(lambda: any(e["value"] == 3 for _, e in follower.events), 5, what="the number on the stream")

            time.sleep(1.0)  # a few more rounds: the last reading is well after the first ones

            # The controller stops: within stale_after_s + 2 s the sign shows its fallback, never the number.
            controller.running.clear()
            time.sleep(0.5)  # let a publish in progress finish
            stopped = controller.last_acked
            deadline = stopped + STALE_S + 2
            fallback = wait_for(
                lambda: (b := poll()).get("state") == "fallback" and b.get("stale") and b,
                STALE_S + 4,
                interval=0.1,
                what="fallback",
            )
            assert polls[-1][0] <= deadline, f"fallback after {polls[-1][0] - stopped:.2f} s"
            assert (fallback["value"], fallback["text"], fallback["stale"]) == (None, "---", True)
            while time.monotonic() < deadline + 1:  # and it stays so
                poll()
                time.sleep(0.1)
            wait_for(
                lambda: any(e["state"] == "fallback" and e["stale"] and t > stopped for t, e in follower.events),
                2,
                what="the fallback on the stream",
            )
            stream_fallback = min(
                t for t, e in follower.events if e["state"] == "fallback" and e["stale"] and t > stopped
            )
            assert stream_fallback <= deadline, f"stream fallback after {stream_fallback - stopped:.2f} s"

            # The number comes back when the controller does.
            controller.running.set()
            back = wait_for(lambda: (b := poll()).get("value") == 3 and b, 10, interval=0.1, what="the number again")
            assert back["state"] == "open" and back["stale"] is False
            resumed = time.monotonic()
            wait_for(lambda: any(e["value"] == 3 and t > stopped + STALE_S for t, e in follower.events), 5)

        # Never a stale number: whatever showed a number was younger than the limit, and between the
        # first fallback and the controller's return nothing showed one.
        for source, seen in (("poll", polls), ("sse", follower.events)):
            for _, state in seen:
                if shows_number(state):
                    assert state["data_age_s"] is not None and state["data_age_s"] <= STALE_S, (source, state)
            first_fb = min(t for t, e in seen if e["state"] == "fallback" and e["stale"] and t > stopped)
            during = [e for t, e in seen if first_fb <= t and t < resumed - 0.5]
            story = [
                (
                    round(t - stopped, 2),
                    e["event_id"],
                    e["value"],
                    e["state"],
                    e["stale"],
                    e["trusted"],
                    e["data_age_s"],
                )
                for t, e in seen
            ]
            assert during and all(not shows_number(e) for e in during), (source, resumed - stopped, story)
        ids = [e["event_id"] for _, e in follower.events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    finally:
        controller.close()
        if follower is not None:
            follower.close()
        asked = time.monotonic()
        proc.terminate()
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
    text = log.read_text()
    # An open event stream does not hold the stop up (uvicorn would wait 10 s for it).
    assert code == 0 and time.monotonic() - asked < 5, text
    assert "Traceback" not in text, text
