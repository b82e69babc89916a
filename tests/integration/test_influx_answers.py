"""Bugcase 03 and its kin: every way InfluxDB answers a write, through the real gateway.

Real Mosquitto and the real influxd 1.6.7 (tests/conftest.py). Only 1.x is
installed, so 2.x and 3.x are played by :class:`Stub`, a loopback HTTP
server written here that forwards to the real influxd (which stores what it
stores) and rewrites its answer the way the other version answers: a partial
write as 2.x's 422 or 500, or as 3.x's 400 naming the refused lines; or
answers a scripted status (413, 429 with Retry-After, 503, 401, 403, 404)
without forwarding. Each test asserts what is stored, what is dead-lettered,
what is acknowledged, and that live readings after the trouble are stored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from contracts import ParkingBayState, encode, new_reading_id, topics, utcnow
from contracts.storage import M_PARKING_BAY
from district.services import Service
from gateway.service import Gateway
from tests.conftest import Influx, mqtt_access, wait_for
from tests.integration.test_gateway import gateway_settings

pytestmark = pytest.mark.integration

OLD = timedelta(days=3)  # a store-and-forward replay; the contract accepts 14 days


@dataclass
class Script:
    """Answer the next ``times`` writes with ``status``/``body``/``headers`` instead of forwarding."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 10**9


class Stub:
    """InfluxDB 2.x/3.x in front of the real 1.6.7; see the module docstring.

    ``mode``: how a partial write is answered: "1x" (as is), "2x-422",
    "2x-500", "3x". ``script``: answers instead of forwarding.
    ``max_lines``: 413 for requests with more lines. ``refuse_create``:
    CREATE DATABASE is refused as 2.x refuses it (no such thing there).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "1x"
        self.script: Script | None = None
        self.max_lines: int | None = None
        self.refuse_create = False
        #: (monotonic time, lines, status answered) of every /write.
        self.writes: list[tuple[float, int, int]] = []
        #: Called on each scripted answer; what it returns is kept in ``observed``.
        self.observe: Callable[[], object] | None = None
        self.observed: list[object] = []
        self.lock = threading.Lock()

    def forward(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(self.upstream + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def write(self, path: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        lines = body.decode().split("\n")
        with self.lock:
            script = self.script
            if script is not None and script.times > 0:
                script.times -= 1
                if self.observe is not None:
                    self.observed.append(self.observe())
                return script.status, script.body, script.headers
        if self.max_lines is not None and len(lines) > self.max_lines:
            return (
                413,
                b'{"code":"request too large","message":"unable to read data: http: request body too large"}',
                {},
            )
        ctype = {"Content-Type": "text/plain; charset=utf-8"}
        status, data = self.forward("POST", path, body, ctype)
        if status != 400 or b"partial write" not in data:
            return status, data, {}
        error = json.loads(data)["error"]
        if self.mode == "2x-422":
            message = "failure writing points to database: " + error
            return 422, json.dumps({"code": "unprocessable entity", "message": message}).encode(), {}
        if self.mode == "2x-500":
            message = "unexpected error writing points to database: " + error
            return 500, json.dumps({"code": "internal error", "message": message}).encode(), {}
        if self.mode == "3x":  # 3.x names each refused line: find them one by one upstream
            refused = []
            for number, line in enumerate(lines, start=1):
                one_status, one = self.forward("POST", path, line.encode(), ctype)
                if one_status != 204:
                    refused.append(
                        {"original_line": line[:80], "line_number": number, "error_message": json.loads(one)["error"]}
                    )
            return 400, json.dumps({"error": "partial write of line protocol occurred", "data": refused}).encode(), {}
        return status, data, {}

    def serve(self) -> tuple[ThreadingHTTPServer, threading.Thread]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                status, body = stub.forward("GET", self.path, None, {})
                self.reply(status, body, {})

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                if self.path.startswith("/write"):
                    status, data, headers = stub.write(self.path, body)
                    with stub.lock:
                        stub.writes.append((time.monotonic(), body.count(b"\n") + 1, status))
                    self.reply(status, data, headers)
                elif stub.refuse_create and b"CREATE" in urllib.parse.unquote_plus(body.decode()).encode():
                    self.reply(403, b'{"code":"forbidden","message":"insufficient permissions"}', {})
                else:
                    ctype = {"Content-Type": self.headers.get("Content-Type", "application/x-www-form-urlencoded")}
                    status, data = stub.forward("POST", self.path, body, ctype)
                    self.reply(status, data, {})

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        return server, thread

    def answered(self, status: int) -> int:
        with self.lock:
            return sum(1 for _, _, s in self.writes if s == status)


@pytest.fixture
def stub(influx_db: Influx) -> Iterator[tuple[Stub, str]]:
    s = Stub(influx_db.url)
    server, thread = s.serve()
    yield s, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def publish(mosquitto: Service) -> Iterator[Callable[[list[ParkingBayState], str], None]]:
    client = mqtt_access(mosquitto).client(f"pub-{uuid.uuid4().hex[:8]}")
    client.max_queued_messages_set(0)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()

    def send(readings: list[ParkingBayState], prefix: str) -> None:
        topic = topics.build(prefix, "district", "bays-1", "parking_bay")
        infos = [client.publish(topic, encode(r), qos=1) for r in readings]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()

    yield send
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def run_gateway(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[..., Gateway]]:
    """Start an in-process gateway; stop it after the test; fail on any logged exception."""
    caplog.set_level(logging.INFO, logger="gateway")
    running: list[Gateway] = []

    def start(mosquitto: Service, url: str, db: str, prefix: str, tmp_path: Path, **over: object) -> Gateway:
        # no gateway_stats point (stats every hour): the counts below are exact
        defaults: dict[str, object] = {"stats_interval_s": 3600, "stop_timeout_s": 1}
        gw = Gateway(gateway_settings(mosquitto, Influx(url, db), prefix, tmp_path, **{**defaults, **over}))
        gw.start()
        running.append(gw)
        assert gw.wait_ready(15), "gateway did not connect and subscribe"
        return gw

    yield start
    for gw in running:
        gw.stop()
    crashed = [r for r in caplog.records if r.name.startswith("gateway") and r.exc_info]
    assert not crashed, f"a gateway thread raised: {crashed[0].getMessage()}"


def readings(n: int, *, age: timedelta = timedelta(0), tag: str = "L") -> list[ParkingBayState]:
    t0 = utcnow() - age - timedelta(seconds=1)
    return [
        ParkingBayState(
            device_id="bays-1",
            observed_at=t0 + timedelta(microseconds=i),
            reading_id=new_reading_id(),
            lot_id="lot-1",
            bay_id=f"{tag}{i:03d}",
            status="occupied",
        )
        for i in range(n)
    ]


def stored_ids(influx: Influx) -> set[str]:
    return {r["reading_id"] for r in influx.query(f'SELECT reading_id FROM "{M_PARKING_BAY}"')}


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def one_day_retention(influx: Influx) -> None:
    q = f'ALTER RETENTION POLICY "autogen" ON "{influx.db}" DURATION 1d SHARD DURATION 1h'
    data = urllib.parse.urlencode({"q": q}).encode()
    with urllib.request.urlopen(f"{influx.url}/query", data=data, timeout=10) as r:
        assert "error" not in json.loads(r.read())["results"][0]


# -- drop the bad point, store the rest, carry on ------------------------------------------------


@pytest.mark.parametrize(
    "mode,status",
    [("direct", 400), ("2x-422", 422), ("2x-500", 500), ("3x", 400)],
    ids=["1.x-real-400", "2.x-422", "2.x-500", "3.x-400-line-errors"],
)
def test_a_point_beyond_retention_is_dead_lettered_and_the_rest_flows(
    mosquitto: Service,
    influx_db: Influx,
    stub: tuple[Stub, str],
    prefix: str,
    tmp_path: Path,
    publish: Callable[[list[ParkingBayState], str], None],
    run_gateway: Callable[..., Gateway],
    mode: str,
    status: int,
) -> None:
    s, stub_url = stub
    s.mode = mode
    one_day_retention(influx_db)
    url = influx_db.url if mode == "direct" else stub_url
    # ../shared/bugcases/03: the database's own 1-day policy is an operator's choice; with no
    # history.raw_days configured the gateway keeps it (docs/history.md) and InfluxDB refuses the old point.
    gw = run_gateway(mosquitto, url, influx_db.db, prefix, tmp_path)
    wait_for(lambda: gw.stats().acked >= 1, 10, what="the gateway's own status acknowledged")
    (old,) = readings(1, age=OLD, tag="OLD")
    live = readings(50)
    publish([old, *live], prefix)

    wait_for(lambda: gw.stats().acked >= 52, 15, what="the old and the 50 live readings acknowledged")
    assert stored_ids(influx_db) == {r.reading_id for r in live}
    (letter,) = dead_letters(tmp_path)
    assert letter["reason"] == "influx_rejected"
    assert letter["detail"].startswith(f"HTTP {status}: ")
    assert "points beyond retention policy" in letter["detail"]
    assert old.reading_id in letter["payload"] and letter["topic"].endswith("/bays-1/parking_bay")
    snap = gw.stats()
    assert (snap.influx_rejected, snap.dropped_points, snap.write_fatal, snap.write_error) == (1, 1, 0, "")
    if mode != "direct":
        assert s.answered(status) >= 1, "the stub never answered the partial write the 2.x/3.x way"
    if mode == "3x":  # the answer named the line: dropped and the rest re-sent once, no halving
        answers = [(n, st) for _, n, st in s.writes]
        (at,) = [i for i, (_, st) in enumerate(answers) if st == 400]
        if answers[at][0] > 1:
            assert answers[at + 1] == (answers[at][0] - 1, 204)

    more = readings(20, tag="M")  # and the pipeline goes on
    publish(more, prefix)
    wait_for(lambda: stored_ids(influx_db) >= {r.reading_id for r in more}, 10, what="later live readings stored")
    wait_for(lambda: gw.stats().acked >= 72, 10, what="later live readings acknowledged")
    assert len(dead_letters(tmp_path)) == 1


def test_413_splits_until_it_fits_and_drops_nothing(
    mosquitto: Service,
    influx_db: Influx,
    stub: tuple[Stub, str],
    prefix: str,
    tmp_path: Path,
    publish: Callable[[list[ParkingBayState], str], None],
    run_gateway: Callable[..., Gateway],
) -> None:
    s, url = stub
    s.max_lines = 7
    gw = run_gateway(mosquitto, url, influx_db.db, prefix, tmp_path)
    live = readings(60)
    publish(live, prefix)
    wait_for(lambda: gw.stats().acked >= 61, 15, what="all acknowledged")
    assert stored_ids(influx_db) == {r.reading_id for r in live}
    assert dead_letters(tmp_path) == [] and gw.stats().dropped_points == 0
    assert s.answered(413) >= 1 and max(n for _, n, st in s.writes if st == 204) <= 7


# -- retry: nothing dropped, nothing acknowledged until stored ---------------------------------------


@pytest.mark.parametrize(
    "status,headers,gap_s",
    [(429, {"Retry-After": "1"}, 0.9), (503, {}, 0.02)],
    ids=["429-retry-after", "503"],
)
def test_overload_is_retried_and_loses_nothing(
    mosquitto: Service,
    influx_db: Influx,
    stub: tuple[Stub, str],
    prefix: str,
    tmp_path: Path,
    publish: Callable[[list[ParkingBayState], str], None],
    run_gateway: Callable[..., Gateway],
    status: int,
    headers: dict[str, str],
    gap_s: float,
) -> None:
    s, url = stub
    gw = run_gateway(mosquitto, url, influx_db.db, prefix, tmp_path)
    wait_for(lambda: gw.stats().acked >= 1, 10, what="the gateway's own status acknowledged")
    s.observe = lambda: (gw.stats().acked, len(stored_ids(influx_db)))
    s.script = Script(status, b'{"code":"too many requests","message":"slow down"}', headers, times=2)
    live = readings(30)
    publish(live, prefix)
    wait_for(lambda: s.answered(status) == 2, 10, what=f"two {status} answers")
    assert s.observed == [(1, 0), (1, 0)]  # nothing acknowledged or stored while refused
    wait_for(lambda: gw.stats().acked >= 31, 15, what="all acknowledged once InfluxDB takes them")
    assert stored_ids(influx_db) == {r.reading_id for r in live}
    assert dead_letters(tmp_path) == [] and gw.stats().dropped_points == 0
    times = [t for t, _, st in s.writes]
    refused_at = [t for t, _, st in s.writes if st == status]
    after = [t for t in times if t > refused_at[-1]]
    assert after[0] - refused_at[-1] >= gap_s  # Retry-After: 1 beats the 0.5 s backoff cap
    assert refused_at[1] - refused_at[0] >= gap_s
    more = readings(10, tag="M")
    publish(more, prefix)
    wait_for(lambda: stored_ids(influx_db) >= {r.reading_id for r in more}, 10, what="later readings stored")


# -- fatal: loud, in the stats, nothing acknowledged, no hot loop; resumes once fixed -----------------


@pytest.mark.parametrize(
    "status,body,needle,refuse_create",
    [
        (401, b'{"code":"unauthorized","message":"Unauthorized"}', "influx_token", False),
        (403, b'{"code":"forbidden","message":"insufficient permissions for write"}', "influx_token", False),
        (404, b'{"code":"not found","message":"bucket \\"district\\" not found"}', "does not exist", True),
    ],
    ids=["401", "403", "404-2.x-bucket"],
)
def test_a_configuration_error_is_loud_keeps_everything_and_resumes_once_fixed(
    mosquitto: Service,
    influx_db: Influx,
    stub: tuple[Stub, str],
    prefix: str,
    tmp_path: Path,
    publish: Callable[[list[ParkingBayState], str], None],
    run_gateway: Callable[..., Gateway],
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: bytes,
    needle: str,
    refuse_create: bool,
) -> None:
    s, url = stub
    s.refuse_create = refuse_create
    s.script = Script(status, body)
    gw = run_gateway(mosquitto, url, influx_db.db, prefix, tmp_path)
    live = readings(30)
    publish(live, prefix)
    wait_for(lambda: gw.stats().write_fatal >= 2, 10, what="the writer refused twice")
    time.sleep(1.5)
    snap = gw.stats()
    assert (snap.acked, snap.written_points, snap.dropped_points) == (0, 0, 0)
    assert stored_ids(influx_db) == set() and dead_letters(tmp_path) == []
    assert f"HTTP {status}" in snap.write_error and needle in snap.write_error
    refused = s.answered(status)
    assert refused <= 8, f"{refused} refused writes in ~2 s: a hot loop"  # ~0.5 s apart (retry_max_s)
    errors = [r.getMessage() for r in caplog.records if r.name == "gateway.pipeline" and r.levelno >= logging.ERROR]
    assert errors and "nothing is acknowledged" in errors[0] and needle in errors[0]

    s.script = None  # the operator fixes the token / creates the bucket
    wait_for(lambda: gw.stats().acked >= 31, 10, what="everything acknowledged once fixed")
    assert stored_ids(influx_db) == {r.reading_id for r in live}
    assert gw.stats().write_error == "" and dead_letters(tmp_path) == []
    more = readings(10, tag="M")
    publish(more, prefix)
    wait_for(lambda: stored_ids(influx_db) >= {r.reading_id for r in more}, 10, what="later readings stored")


def test_1x_database_dropped_while_running_is_created_again(
    mosquitto: Service,
    influx_db: Influx,
    prefix: str,
    tmp_path: Path,
    publish: Callable[[list[ParkingBayState], str], None],
    run_gateway: Callable[..., Gateway],
) -> None:
    gw = run_gateway(mosquitto, influx_db.url, influx_db.db, prefix, tmp_path)
    wait_for(lambda: gw.stats().acked >= 1, 10, what="the gateway's own status acknowledged")
    data = urllib.parse.urlencode({"q": f'DROP DATABASE "{influx_db.db}"'}).encode()
    urllib.request.urlopen(f"{influx_db.url}/query", data=data, timeout=10).read()
    live = readings(20)
    publish(live, prefix)
    wait_for(lambda: gw.stats().acked >= 21, 15, what="acknowledged after the database was created again")
    assert stored_ids(influx_db) == {r.reading_id for r in live}
    snap = gw.stats()
    assert (snap.write_fatal, snap.write_error, snap.dropped_points) == (0, "", 0)
    assert snap.write_retries >= 1  # it did meet the 404
