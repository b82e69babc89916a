"""Shared fixtures: real Mosquitto and InfluxDB, started once per session.

The broker runs as in production: TLS only, a password and a client
certificate for every client, and the ACL, all from ``district provision``
(``broker_pki``). Every client a test makes gets its credentials from one
helper, :func:`mqtt_access` (the admin identity by default, which the test
broker's ACL lets read and write every prefix); ``tests/integration/test_security.py``
checks the least-privilege identities on brokers of its own.

Each test gets its own topic prefix and its own database, so tests never see
each other's messages. A missing service skips locally with a reason, and
fails in CI (CI=true), where skipping would hide a broken setup.

Every test also fails when the project's code logged an exception meanwhile
(a callback or background thread that caught one and logged it, where the
test would not otherwise see it); a test that provokes one on purpose says
so with ``@pytest.mark.allow_logged_exceptions``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.configfile import load_model
from contracts.site import SiteConfig
from district.demo import DEMO_SITE
from district.provision import ADMIN, Provisioned, provision
from district.services import (
    BrokerAccess,
    Service,
    ServiceError,
    broker_access,
    find_binary,
    start_influxd,
    start_mosquitto,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DISTRICT_SHARED", REPO.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() == "true"


#: The project's top-level loggers (each module logs to ``logging.getLogger(__name__)``).
PROJECT_LOGGERS = ("contracts", "common", "edge", "gateway", "server", "firmware_sim", "district")


class _ExceptionRecords(logging.Handler):
    """Collects ERROR+ records that carry an exception (``log.exception``, ``exc_info=...``)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_logged_exceptions(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when project code logged an exception during it (setup and teardown included).

    Callbacks (paho's, the camera pump's) and background threads catch and log
    what goes wrong so they keep running; without this a test passes while
    its code quietly fails behind it. Opt out with
    ``@pytest.mark.allow_logged_exceptions`` where the test provokes one.
    """
    if request.node.get_closest_marker("allow_logged_exceptions") is not None:
        yield
        return
    handler = _ExceptionRecords()
    loggers = [logging.getLogger(name) for name in PROJECT_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    if handler.records:
        lines = [
            f"{r.name}: {r.getMessage()} ({r.exc_info[0].__name__ if r.exc_info and r.exc_info[0] else '?'}:"
            f" {r.exc_info[1] if r.exc_info else ''})"
            for r in handler.records[:10]
        ]
        pytest.fail(
            f"{len(handler.records)} exception(s) logged by the code under test"
            " (mark the test @pytest.mark.allow_logged_exceptions if it provokes them on purpose):\n"
            + "\n".join(lines),
            pytrace=False,
        )


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Services started by tests (``district server``'s display state) keep state in a temp dir, not ~."""
    path = tmp_path_factory.mktemp("state-home")
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old


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


def provision_test_broker(out: Path, **kw: Any) -> Provisioned:
    """The demo site's identities, a broker certificate for loopback, and an admin that may use every
    topic (tests each take their own prefix). ``kw`` goes to :func:`district.provision.provision`."""
    site = load_model(DEMO_SITE, SiteConfig)
    options: dict[str, Any] = {
        "broker_hosts": ["127.0.0.1", "localhost"],
        "install_dir": None,
        "broker_dir": None,
        "admin_topics": ["#"],
    }
    return provision(site, out, **(options | kw))


@pytest.fixture(scope="session")
def broker_pki(tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    """The session broker's provisioned files (site CA, broker certificate, passwords, ACL, identities)."""
    return provision_test_broker(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory, broker_pki: Provisioned) -> Iterator[Service]:
    """The session broker: TLS, passwords, client certificates and the ACL, on a free loopback port."""
    need(find_binary("mosquitto") is not None, "mosquitto is not installed (apt-get install mosquitto)")
    try:
        svc = start_mosquitto(tmp_path_factory.mktemp("mosquitto"), pki=broker_pki)
    except ServiceError as exc:
        pytest.fail(str(exc))
    yield svc
    svc.stop()


def mqtt_access(broker: Service, identity: str = ADMIN, host: str | None = None) -> BrokerAccess:
    """How a test's client reaches ``broker`` as ``identity``: the one place tests get broker credentials.

    ``.client(id)`` gives a ready paho client, ``.settings()`` gateway/server
    settings keywords, ``.env("gateway")`` their environment, ``.edge_mqtt()``
    an edge configuration's ``mqtt:`` section.
    """
    return broker_access(broker, identity, host)


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
