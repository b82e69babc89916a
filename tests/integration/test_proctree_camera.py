"""A camera process never outlives its edge agent (issue 8, item 8).

A real ``district edge`` with one camera replaying the PETS clip (looping, in
real time, so it would run forever) and no broker to reach: SIGKILL the agent
and every process below it, the camera process first of all, is gone within a
deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from contracts.configfile import load_model
from contracts.site import SiteConfig
from district.demo import DEMO_SITE, camera_edge_config
from district.services import BrokerAccess, free_port
from tests.conftest import SHARED, need
from tests.proctree import Output, descendants, survivors, wait_all_gone

PETS = SHARED / "data" / "footfall-video" / "PETS09-S2L1"
DIE_WITHIN_S = 15.0


def camera_processes(agent: int) -> list[psutil.Process]:
    return [p for p in descendants(agent) if "spawn_main" in " ".join(p.cmdline())]


def _camera_agent_config(tmp_path: Path) -> Path:
    need((PETS / "lines.json").is_file() and any(PETS.glob("*.mp4")), f"PETS footage not found at {PETS}")
    site = load_model(DEMO_SITE, SiteConfig)
    config = camera_edge_config(
        PETS,
        site.cameras[0],
        site_id=site.site.id,
        access=BrokerAccess("127.0.0.1", free_port()),  # nobody listens: the agent keeps retrying, the camera counts
        outbox=tmp_path / "outbox.sqlite",
    )
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _start_agent(path: Path, *, start_new_session: bool = False) -> subprocess.Popen[bytes]:
    """``district edge --config PATH`` as a child, its output piped (read with :class:`tests.proctree.Output`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "district.cli", "edge", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=start_new_session,
    )


def test_sigterm_to_the_whole_process_group_stops_the_agent_and_its_camera(tmp_path: Path) -> None:
    """What systemd (KillMode=control-group), ``timeout`` and a shell's job control do: SIGTERM to every process.

    The camera process ignores it (its agent stops it through the stop event and it flushes its interval);
    before, it died inside the multiprocessing event's wait and the agent's ``Event.set()`` then blocked for
    ever on the dead waiter.
    """
    agent = _start_agent(_camera_agent_config(tmp_path), start_new_session=True)
    output = Output(agent)
    tree: list[psutil.Process] = []
    try:
        assert output.wait_for("starting on", 60) is not None, output.rest()
        tree = descendants(agent.pid)
        assert camera_processes(agent.pid)
        time.sleep(1.0)  # the camera is waiting on its stop event between frames
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(DIE_WITHIN_S) == 0, output.rest()
        left = wait_all_gone(tree, DIE_WITHIN_S)
        assert not left, f"still running after SIGTERM to the group: {left}"
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        output.close()


def test_camera_process_dies_when_its_edge_agent_is_sigkilled(tmp_path: Path) -> None:
    agent = _start_agent(_camera_agent_config(tmp_path))
    output = Output(agent)
    tree: list[psutil.Process] = []
    try:
        started = output.wait_for("process", 60)  # "camera cam-...: process PID started"
        assert started is not None and "camera" in started, output.rest()
        deadline = time.monotonic() + 30
        while not (cameras := camera_processes(agent.pid)):
            assert time.monotonic() < deadline, "no camera process under the agent within 30 s"
            time.sleep(0.1)
        # The camera is working (reading frames), not merely started.
        assert output.wait_for("starting on", 60) is not None, output.rest()
        tree = descendants(agent.pid)
        assert all(c in tree for c in cameras)

        agent.send_signal(signal.SIGKILL)
        assert agent.wait(10) == -signal.SIGKILL
        left = wait_all_gone(tree, DIE_WITHIN_S)
        assert not left, f"still running {DIE_WITHIN_S:.0f} s after the edge agent was killed: {left}"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        for p in tree:
            if survivors([p]):
                p.kill()
        output.close()  # after the kill: every writer of the pipe is gone
