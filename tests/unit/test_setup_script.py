"""scripts/setup's profiles: the demo installs only what it runs, the tests everything they start.

``--list`` prints a profile's system packages whatever is installed, so these hold on any machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ["mosquitto", "influxdb"]
TESTS = ["prometheus", "victoria-metrics", "rabbitmq-server", "nats-server", "docker-compose", "chromium",
         "chromium-driver", "fonts-dejavu-core"]  # fmt: skip


def setup(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup"), *args], capture_output=True, text=True, timeout=30)


def test_the_demo_profile_installs_the_broker_and_the_database_alone() -> None:
    out = setup("demo", "--list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == DEMO


def test_the_default_profile_adds_every_service_the_tests_start() -> None:
    for args in (("--list",), ("all", "--list"), ("--list", "all")):
        out = setup(*args)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == DEMO + TESTS


def test_an_unknown_profile_is_refused_with_the_usage_and_installs_nothing() -> None:
    out = setup("tests")
    assert out.returncode == 2
    assert "usage: scripts/setup [demo|all] [--list]" in out.stderr
    assert out.stdout == ""


def test_the_readme_commands_use_their_profiles() -> None:
    assert "scripts/setup demo\n" in (ROOT / "scripts" / "demo").read_text()
    assert "scripts/setup\n" in (ROOT / "scripts" / "test").read_text()
