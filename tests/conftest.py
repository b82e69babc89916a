"""Shared fixtures: real Mosquitto and InfluxDB, started once per session.

Each test gets its own topic prefix and its own database, so tests never see
each other's messages. A missing service skips locally with a reason, and
fails in CI (CI=true), where skipping would hide a broken setup.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from district.services import Service, ServiceError, find_binary, start_influxd, start_mosquitto

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DISTRICT_SHARED", REPO.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip locally when a prerequisite is missing; fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    need(SHARED.is_dir(), f"shared data not found at {SHARED} (set DISTRICT_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    need(find_binary("mosquitto") is not None, "mosquitto is not installed (apt-get install mosquitto)")
    try:
        svc = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    except ServiceError as exc:
        pytest.fail(str(exc))
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    need(find_binary("influxd") is not None, "influxd is not installed (apt-get install influxdb)")
    try:
        svc = start_influxd(tmp_path_factory.mktemp("influxd"))
    except ServiceError as exc:
        pytest.fail(str(exc))
    yield svc
    svc.stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


class Influx:
    """A tiny 1.x HTTP helper for assertions (the product code has its own client)."""

    def __init__(self, url: str, db: str) -> None:
        self.url = url
        self.db = db

    def query(self, q: str) -> list[dict[str, Any]]:
        """Rows of the first result as dicts (tags included), [] if none."""
        params = urllib.parse.urlencode({"db": self.db, "q": q, "epoch": "ns"})
        with urllib.request.urlopen(f"{self.url}/query?{params}", timeout=10) as r:
            body = json.loads(r.read())
        rows: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise AssertionError(f"InfluxDB error: {result['error']}")
            for series in result.get("series", []):
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(series.get("tags") or {})
                    rows.append(row)
        return rows

    def count(self, measurement: str, field: str = "reading_id", where: str = "") -> int:
        rows = self.query(f'SELECT count("{field}") FROM "{measurement}" {where}')
        return int(rows[0]["count"]) if rows else 0


@pytest.fixture
def influx_db(influxd: Service) -> Iterator[Influx]:
    """A fresh database for one test."""
    db = f"t{uuid.uuid4().hex[:10]}"
    url = f"http://{influxd.host}:{influxd.port}"
    data = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
    urllib.request.urlopen(f"{url}/query", data=data, timeout=10).read()
    yield Influx(url, db)
    data = urllib.parse.urlencode({"q": f'DROP DATABASE "{db}"'}).encode()
    urllib.request.urlopen(f"{url}/query", data=data, timeout=10).read()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate} (last: {last!r})")
