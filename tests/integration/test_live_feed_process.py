"""``district server`` with a live-feed client connected: the client gets the site at once, and a stop
does not wait for it (uvicorn waits up to 10 s for open responses; the server ends its streams first)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from district.services import Service
from tests.conftest import Influx, wait_for
from tests.integration.test_server_main import start_server_process, status_of

pytestmark = pytest.mark.integration


def test_a_stop_ends_live_feed_streams_at_once(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    proc, port, log = start_server_process(mosquitto, influx_db, prefix, tmp_path)
    try:
        wait_for(
            lambda: status_of(f"http://127.0.0.1:{port}/healthz") == 200 or proc.poll() is not None,
            timeout=30,
            what="healthz",
        )
        assert proc.poll() is None, log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /v1/live/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
            received = b""
            while received.count(b"\nevent: ") < 4:  # lots, lockers, zones, displays, at once
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
            assert b" 200 OK" in received.split(b"\r\n", 1)[0]
            for name in (b"lots", b"lockers", b"zones", b"displays"):
                assert b"\nevent: " + name + b"\n" in received
            stopped = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            while sock.recv(65536):  # the stream ends (the server closes it), no hang
                pass
            assert proc.wait(30) == 0, log.read_text()
            assert time.monotonic() - stopped < 5, "the stop waited for the live-feed client"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in log.read_text()
