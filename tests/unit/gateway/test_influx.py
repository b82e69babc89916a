"""InfluxWriter against a fake InfluxDB HTTP server: splitting, dropping, retriable and fatal errors.

The fake answers a partial write the way 1.x (400), 2.x (422 or 500) or 3.x
(400 with the refused line numbers) does; see ``FakeInflux.dialect``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common.influxdb import InfluxFatal, InfluxUnavailable
from gateway.influx import InfluxWriter


class FakeInflux:
    """Stores lines like 1.x does; a line containing BAD is a field type conflict."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.requests: list[int] = []  # lines per /write request
        self.script: list[tuple[int, bytes, dict[str, str]]] = []  # answers first, whatever the body
        self.max_lines = 10_000  # 413 above this
        self.queries: list[str] = []
        self.delay_s = 0.0  # before answering a /write
        self.auth: list[str | None] = []  # Authorization header of every request
        #: How a partial write is answered: "1x" (400), "2x-422", "2x-500", "3x" (400 naming the lines).
        self.dialect = "1x"

    def partial(self, lines: list[str]) -> tuple[int, bytes]:
        bad = [n for n, line in enumerate(lines, start=1) if "BAD" in line]
        text = f"partial write: field type conflict: dropped={len(bad)}"
        if self.dialect == "2x-422":
            return 422, json.dumps({"code": "unprocessable entity", "message": f"failure writing: {text}"}).encode()
        if self.dialect == "2x-500":
            return 500, json.dumps({"code": "internal error", "message": f"unexpected error: {text}"}).encode()
        if self.dialect == "3x-first-only":  # a server that lists only the first refused line
            data = [{"line_number": bad[0], "error_message": "first only"}]
            return 400, json.dumps({"error": "partial write of line protocol occurred", "data": data}).encode()
        if self.dialect == "3x":
            data = [{"original_line": lines[n - 1], "line_number": n, "error_message": f"conflict {n}"} for n in bad]
            return 400, json.dumps({"error": "partial write of line protocol occurred", "data": data}).encode()
        return 400, json.dumps({"error": text}).encode()


@pytest.fixture
def fake() -> Iterator[tuple[FakeInflux, str]]:
    state = FakeInflux()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Influxdb-Version", "1.6.7-fake")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            state.auth.append(self.headers.get("Authorization"))
            self._reply(204)

        def do_POST(self) -> None:
            state.auth.append(self.headers.get("Authorization"))
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            if self.path.startswith("/query"):
                state.queries.append(body)
                self._reply(200, b'{"results":[{"statement_id":0}]}')
                return
            lines = body.split("\n")
            state.requests.append(len(lines))
            time.sleep(state.delay_s)
            if state.script:
                self._reply(*state.script.pop(0))
                return
            if len(lines) > state.max_lines:
                self._reply(413, b'{"error":"Request Entity Too Large"}')
                return
            good = [line for line in lines if "BAD" not in line]
            state.stored.extend(good)
            if len(good) < len(lines):
                self._reply(*state.partial(lines))
                return
            self._reply(204)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def lines(n: int, bad: set[int] = frozenset()) -> list[str]:  # type: ignore[assignment]
    return [f"m,k=v f={'BAD' if i in bad else i}i {i}" for i in range(n)]


def test_clean_batch_is_one_request(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    with InfluxWriter(url, "db") as w:
        result = w.write(lines(100))
    assert (result.written, result.dropped, state.requests) == (100, [], [100])


def test_split_isolates_the_bad_points_and_keeps_the_rest(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    batch = lines(64, bad={5, 40})
    with InfluxWriter(url, "db") as w:
        result = w.write(batch)
    assert [d.index for d in result.dropped] == [5, 40]
    assert [d.line for d in result.dropped] == [batch[5], batch[40]]
    assert "field type conflict" in result.dropped[0].error
    assert result.written == 62
    assert set(state.stored) == set(batch) - {batch[5], batch[40]}
    assert result.requests < 64 / 2  # halving, not point by point


def test_413_splits_until_it_fits(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    state.max_lines = 30
    with InfluxWriter(url, "db") as w:
        result = w.write(lines(100))
    assert (result.written, result.dropped) == (100, [])
    assert max(n for n in state.requests if n <= 30) <= 30


@pytest.mark.parametrize("dialect", ["1x", "2x-422", "2x-500"])
def test_split_isolates_the_bad_points_in_every_dialect(fake: tuple[FakeInflux, str], dialect: str) -> None:
    state, url = fake
    state.dialect = dialect
    batch = lines(32, bad={7})
    with InfluxWriter(url, "db") as w:
        result = w.write(batch)
    assert [(d.index, d.line) for d in result.dropped] == [(7, batch[7])]
    assert result.dropped[0].error.startswith(f"HTTP {state.partial([batch[7]])[0]}: ")
    assert "field type conflict" in result.dropped[0].error
    assert (result.written, set(state.stored)) == (31, set(batch) - {batch[7]})


def test_3x_named_lines_are_dropped_without_splitting(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    state.dialect = "3x"
    batch = lines(100, bad={3, 50, 99})
    with InfluxWriter(url, "db") as w:
        result = w.write(batch)
    assert [(d.index, d.line, d.error) for d in result.dropped] == [
        (i, batch[i], f"HTTP 400: conflict {i + 1}") for i in (3, 50, 99)
    ]
    assert state.requests == [100, 97]  # the answer named them: one re-send of the rest, no halving
    assert result.written == 97 and set(state.stored) == set(batch) - {batch[3], batch[50], batch[99]}


def test_3x_answers_naming_one_line_at_a_time_do_not_exhaust_the_stack(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    state.dialect = "3x-first-only"
    n_bad = 1100  # more than Python's default recursion limit
    batch = lines(n_bad + 5, bad=set(range(n_bad)))
    with InfluxWriter(url, "db") as w:
        result = w.write(batch)
    assert [d.index for d in result.dropped] == list(range(n_bad))
    assert result.written == 5 and result.requests == n_bad + 1


def test_3x_line_numbers_out_of_range_fall_back_to_splitting(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    body = json.dumps(
        {"error": "partial write of line protocol occurred", "data": [{"line_number": 40, "error_message": "x"}]}
    ).encode()
    state.script = [(400, body, {})]  # names line 40 of a 16-line request: not to be trusted
    state.dialect = "3x"
    batch = lines(16, bad={2})
    with InfluxWriter(url, "db") as w:
        result = w.write(batch)
    assert [d.index for d in result.dropped] == [2]
    assert result.written == 15


@pytest.mark.parametrize(
    "status,headers,retry_after",
    [(500, {}, None), (503, {"Retry-After": "3"}, 3.0), (429, {"Retry-After": "1"}, 1.0), (502, {}, None)],
)
def test_retriable_answers_raise_and_drop_nothing(
    fake: tuple[FakeInflux, str], status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    state, url = fake
    state.script = [(status, b'{"error":"timeout"}', headers)]
    with InfluxWriter(url, "db") as w:
        with pytest.raises(InfluxUnavailable) as info:
            w.write(lines(10))
        assert not isinstance(info.value, InfluxFatal)
        assert (info.value.status, info.value.retry_after_s) == (status, retry_after)
        assert w.write(lines(10)).written == 10  # the caller's retry succeeds
    assert state.stored == lines(10)


@pytest.mark.parametrize(
    "status,body,needle",
    [
        (401, b'{"error":"authorization failed"}', "influx_token"),
        (403, b'{"code":"forbidden","message":"no write permission"}', "influx_token"),
        (404, b'{"error":"database not found: \\"db\\""}', "does not exist"),
        (400, b'{"error":"invalid precision"}', "refuses the request itself"),
        (301, b"", "no redirect"),
    ],
)
def test_fatal_answers_raise_naming_the_fix_and_drop_nothing(
    fake: tuple[FakeInflux, str], status: int, body: bytes, needle: str
) -> None:
    state, url = fake
    state.script = [(status, body, {})]
    with InfluxWriter(url, "db") as w, pytest.raises(InfluxFatal) as info:
        w.write(lines(10, bad={4}))
    assert info.value.status == status
    assert info.value.database_missing is (status == 404)
    assert needle in str(info.value) and needle in info.value.fix
    assert f"HTTP {status}" in str(info.value) and "'db'" in str(info.value)
    assert state.requests == [10]  # no splitting: the request, not a point, was refused


def test_connection_refused_is_retriable() -> None:
    with InfluxWriter("http://127.0.0.1:1", "db", timeout_s=1) as w:
        with pytest.raises(InfluxUnavailable):
            w.write(lines(1))
        with pytest.raises(InfluxUnavailable):
            w.ping()


def test_a_timeout_is_retriable_and_drops_nothing(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    state.delay_s = 0.5
    with InfluxWriter(url, "db", timeout_s=0.1) as w:
        with pytest.raises(InfluxUnavailable) as info:
            w.write(lines(3))
        assert not isinstance(info.value, InfluxFatal) and info.value.status == 0
        assert "Timeout" in str(info.value)


def test_token_is_sent_as_token_auth(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    with InfluxWriter(url, "db", token="s3cret") as w:
        w.write(lines(1))
    assert state.auth == ["Token s3cret"]


def test_ping_and_create_database(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    with InfluxWriter(url, 'we"ird', username="u", password="p") as w:
        assert w.ping() == "1.6.7-fake"
        w.create_database()
    assert state.queries == ["q=CREATE+DATABASE+%22we%5C%22ird%22"]
    assert state.auth == ["Basic dTpw", "Basic dTpw"]  # u:p
