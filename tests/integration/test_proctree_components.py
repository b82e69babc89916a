"""Every long-running component stops cleanly on SIGHUP (a closed terminal), and,
started under a supervisor, stops by itself when that supervisor is SIGKILLed
(issue 8, item 8).

The second case has no parent-death signal: the supervisor here is a bare
Python process that only sets ``DISTRICT_SUPERVISOR_PID``, so what is tested
is the component's own parent watch (``common.runtime.watch_parent``), the
part that also works on macOS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from common.runtime import SUPERVISOR_ENV
from district.demo import DEMO_SITE, _device
from district.services import BrokerAccess, Service, free_port
from tests.conftest import Influx, mqtt_access, wait_for
from tests.proctree import wait_all_gone

pytestmark = pytest.mark.integration

COMPONENTS = ["sim", "edge", "gateway", "server"]


@dataclass
class Component:
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[str], bool]  # given the log so far
    stopped_cleanly: Callable[[str], bool]
    after: Callable[[], None] = lambda: None  # further checks once it has exited


def component(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> Component:
    cli = [sys.executable, "-m", "district.cli", name]
    if name == "sim":
        buses = tmp_path / "buses"

        def links_removed() -> None:
            assert not list(buses.glob("*")), "the simulator left its bus links behind"

        return Component(
            [*cli, "--site", str(DEMO_SITE), "--bus-dir", str(buses), "--speed", "0"],
            {},
            lambda log: (buses / "buses.json").exists(),
            lambda log: "fleet stopped" in log,
            links_removed,
        )
    if name == "edge":
        config = tmp_path / "edge.yaml"
        device = _device("edge-proctree", "dresden", BrokerAccess("127.0.0.1", free_port()), tmp_path / "outbox.sqlite")
        config.write_text(yaml.safe_dump(device))
        return Component(
            [*cli, "--config", str(config)],
            {},
            lambda log: "edge agent dresden/edge-proctree started" in log,
            lambda log: "edge agent stopped" in log,
        )
    mosquitto: Service = request.getfixturevalue("mosquitto")
    influx: Influx = request.getfixturevalue("influx_db")
    if name == "gateway":
        env = {
            **mqtt_access(mosquitto).env("gateway"),
            "DISTRICT_GATEWAY_MQTT_CLIENT_ID": f"proctree-{os.getpid()}-{tmp_path.name}",
            "DISTRICT_GATEWAY_INFLUX_URL": influx.url,
            "DISTRICT_GATEWAY_INFLUX_DB": influx.db,
            "DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(tmp_path / "dead.jsonl"),
        }
        return Component(
            [*cli, "--site", str(DEMO_SITE)], env, lambda log: "connected" in log, lambda log: "gateway stopped" in log
        )
    env = {
        **mqtt_access(mosquitto).env("server"),
        "DISTRICT_SERVER_INFLUX_URL": influx.url,
        "DISTRICT_SERVER_INFLUX_DB": influx.db,
    }
    return Component(
        [*cli, "--site", str(DEMO_SITE), "--host", "127.0.0.1", "--port", str(free_port())],
        env,
        lambda log: "Application startup complete" in log,
        lambda log: "MQTT subscriber stopped" in log and "Application shutdown complete" in log,
    )


def wait_ready(c: Component, log: Path, alive: Callable[[], bool]) -> None:
    wait_for(lambda: c.ready(log.read_text()) or not alive(), timeout=60, what="the component to start")
    assert alive(), log.read_text()


@pytest.mark.parametrize("name", COMPONENTS)
def test_sighup_stops_the_component_cleanly(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    c = component(name, tmp_path, request)
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(c.argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **c.env})
    try:
        wait_ready(c, log, lambda: proc.poll() is None)
        proc.send_signal(signal.SIGHUP)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 0, text
    assert c.stopped_cleanly(text), text
    assert "Traceback" not in text
    c.after()


#: A supervisor that sets the environment variable (argv[1]) and nothing else: no parent-death signal.
SUPERVISOR = """
import os, subprocess, sys, time
env = {**os.environ, sys.argv[1]: str(os.getpid())}
with open(sys.argv[2], "wb") as out:
    child = subprocess.Popen(sys.argv[3:], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
print(child.pid, flush=True)
time.sleep(3600)
"""


@pytest.mark.parametrize("name", COMPONENTS)
def test_the_component_stops_by_itself_when_its_supervisor_is_killed(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    c = component(name, tmp_path, request)
    log = tmp_path / f"{name}.log"
    log.touch()
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, SUPERVISOR_ENV, str(log), *c.argv],
        stdout=subprocess.PIPE,
        env={**os.environ, **c.env},
    )
    child: psutil.Process | None = None
    try:
        assert supervisor.stdout is not None
        child = psutil.Process(int(supervisor.stdout.readline()))
        wait_ready(c, log, child.is_running)
        supervisor.kill()
        supervisor.wait(10)
        left = wait_all_gone([child], 20)
        assert not left, f"{name} still running 20 s after its supervisor was killed:\n{log.read_text()}"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        if supervisor.stdout is not None:
            supervisor.stdout.close()
        if child is not None and child.is_running():
            child.kill()
    text = log.read_text()
    assert f"parent process {supervisor.pid} is gone" in text, text
    assert c.stopped_cleanly(text), text
    assert "Traceback" not in text
    c.after()
