"""InfluxWriter against a fake InfluxDB 1.x HTTP server: splitting, dropping, retriable errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.influx import InfluxUnavailable, InfluxWriter


class FakeInflux:
    """Stores lines like 1.x does; a line containing BAD is a field type conflict."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.requests: list[int] = []  # lines per /write request
        self.script: list[int] = []  # statuses to answer first, whatever the body
        self.max_lines = 10_000  # 413 above this
        self.queries: list[str] = []


@pytest.fixture
def fake() -> Iterator[tuple[FakeInflux, str]]:
    state = FakeInflux()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Influxdb-Version", "1.6.7-fake")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(204)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            if self.path.startswith("/query"):
                state.queries.append(body)
                self._reply(200, b'{"results":[{"statement_id":0}]}')
                return
            lines = body.split("\n")
            state.requests.append(len(lines))
            if state.script:
                self._reply(state.script.pop(0), b'{"error":"timeout"}')
                return
            if len(lines) > state.max_lines:
                self._reply(413, b'{"error":"Request Entity Too Large"}')
                return
            good = [line for line in lines if "BAD" not in line]
            state.stored.extend(good)
            if len(good) < len(lines):
                err = f'{{"error":"partial write: field type conflict: dropped={len(lines) - len(good)}"}}'
                self._reply(400, err.encode())
                return
            self._reply(204)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
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


@pytest.mark.parametrize("status", [500, 503, 429, 404, 401])
def test_retriable_statuses_raise_and_drop_nothing(fake: tuple[FakeInflux, str], status: int) -> None:
    state, url = fake
    state.script = [status]
    with InfluxWriter(url, "db") as w:
        with pytest.raises(InfluxUnavailable) as info:
            w.write(lines(10))
        assert info.value.status == status
        assert info.value.database_missing is (status == 404)
        assert w.write(lines(10)).written == 10  # the caller's retry succeeds


def test_connection_refused_is_retriable() -> None:
    with InfluxWriter("http://127.0.0.1:1", "db", timeout_s=1) as w:
        with pytest.raises(InfluxUnavailable):
            w.write(lines(1))
        with pytest.raises(InfluxUnavailable):
            w.ping()


def test_ping_and_create_database(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    with InfluxWriter(url, 'we"ird', username="u", password="p") as w:
        assert w.ping() == "1.6.7-fake"
        w.create_database()
    assert state.queries == ["q=CREATE+DATABASE+%22we%5C%22ird%22"]
