"""The demo's process tree dies together (issue 8, item 8).

A real ``district demo`` on a one-lot site without a camera (broker, database,
simulator, one edge agent, gateway, server): killed with SIGKILL, every
descendant is gone within a deadline and its ports are free; SIGHUP (a closed
terminal) stops it cleanly; a second demo on the same API port fails at once,
naming the process that holds it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from district.demo import DEMO_SITE
from district.services import find_binary, free_port, port_free
from tests.conftest import need
from tests.proctree import Output, descendants, listening_ports, survivors, wait_all_gone

pytestmark = pytest.mark.e2e

#: From SIGKILL of the supervisor to the last child gone. Children get SIGTERM
#: at once and stop cleanly in about 2 s; the Python ones also poll their parent.
DIE_WITHIN_S = 20.0
UP_WITHIN_S = 60.0


@dataclass
class RunningDemo:
    proc: subprocess.Popen[bytes]
    output: Output
    port: int
    workdir: Path
    tree: list[psutil.Process]


@pytest.fixture(scope="module")
def small_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dresden site cut to one 20-bay lot: one bus, one edge agent, no lockers, no camera."""
    site = yaml.safe_load(DEMO_SITE.read_text())
    lot = site["parking"][0]
    lot["bays"]["count"] = 20
    site.update(parking=[lot], lockers=[], cameras=[], displays=[])
    site["devices"] = [d for d in site["devices"] if d["id"] == f"edge-{lot['id']}"]
    path = tmp_path_factory.mktemp("site") / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def demo_argv(site: Path, port: int, workdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "district.cli",
        "demo",
        "--site",
        str(site),
        "--port",
        str(port),
        "--workdir",
        str(workdir),
        "--footage",
        str(workdir / "no-footage"),
        "--summary-s",
        "1000",
    ]


def launch(site: Path, port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], Output]:
    proc = subprocess.Popen(
        demo_argv(site, port, workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, Output(proc)


@pytest.fixture
def demo(small_site: Path, tmp_path: Path) -> Iterator[RunningDemo]:
    need(
        find_binary("mosquitto") is not None and find_binary("influxd") is not None,
        "mosquitto and influxdb must be installed for the demo",
    )
    port = free_port()
    workdir = tmp_path / "demo"
    proc, output = launch(small_site, port, workdir)
    tree: list[psutil.Process] = []
    try:
        if output.wait_for("District demo is up", UP_WITHIN_S) is None:
            pytest.fail(f"demo not up within {UP_WITHIN_S:.0f} s:\n{output.rest()[-4000:]}")
        tree = descendants(proc.pid)
        yield RunningDemo(proc, output, port, workdir, tree)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for p in tree:  # never leave anything behind for the next test, whatever failed
            if survivors([p]):
                p.kill()
        output.close()  # after the kill: every writer of the pipe is gone


def names(tree: list[psutil.Process]) -> str:
    return " ".join(sorted(" ".join(p.cmdline()[:5]) for p in tree))


def test_the_tree_is_what_the_test_expects(demo: RunningDemo) -> None:
    # Guards the other tests: they would pass vacuously on an empty tree.
    cmds = names(demo.tree)
    for part in ("mosquitto", "influxd", "district.cli sim", "district.cli edge", "gateway", "server"):
        assert part in cmds, f"{part} not among the demo's children: {cmds}"
    assert demo.port in listening_ports(demo.tree)


def test_sigkill_of_the_supervisor_takes_every_child_with_it(demo: RunningDemo) -> None:
    ports = listening_ports(demo.tree)
    assert len(ports) >= 4, ports  # API, broker, database HTTP and RPC
    demo.proc.kill()
    assert demo.proc.wait(10) == -signal.SIGKILL
    left = wait_all_gone(demo.tree, DIE_WITHIN_S)
    assert not left, f"still running {DIE_WITHIN_S:.0f} s after the supervisor was killed: {left}"
    held = sorted(p for p in ports if not port_free(p))
    assert not held, f"ports still held after the tree died: {held}"
    # SIGTERM, not SIGKILL, reached the children: the simulator cleaned up after itself.
    assert not list((demo.workdir / "buses").glob("*")), "the simulator did not stop cleanly"


def test_sighup_stops_the_demo_cleanly(demo: RunningDemo) -> None:
    demo.proc.send_signal(signal.SIGHUP)  # what closing the terminal sends
    try:
        code = demo.proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail("the demo did not stop within 30 s of SIGHUP")
    out = demo.output.rest()
    assert code == 0, out[-4000:]
    assert "received SIGHUP: stopping" in out and "demo stopped" in out
    assert not survivors(demo.tree), "children left running after SIGHUP"
    assert not list((demo.workdir / "buses").glob("*"))


def test_a_second_demo_on_the_same_port_names_the_holder(demo: RunningDemo, small_site: Path, tmp_path: Path) -> None:
    server = [p for p in demo.tree if "server" in p.cmdline()]
    assert len(server) == 1
    proc, output = launch(small_site, demo.port, tmp_path / "second")
    try:
        code = proc.wait(20)  # fails fast: before starting a broker or a database
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        output.close()
        pytest.fail("the second demo did not give up within 20 s")
    out = output.close()
    assert code == 1, out
    expected = (
        rf"port {demo.port} is held by pid {server[0].pid} \(district server --site \S+ .*\); stop it or use --port"
    )
    assert re.search(expected, out), out
    assert "Traceback" not in out
    assert "mosquitto" not in out and "started" not in out, "the second demo started children"
    assert demo.proc.poll() is None and len(survivors(demo.tree)) == len(demo.tree), "the first demo was disturbed"
