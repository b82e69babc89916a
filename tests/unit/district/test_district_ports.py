"""district.services.port_holder / port_free on a socket this test holds."""

from __future__ import annotations

import os
import socket

from district.services import PortHolder, _short_cmdline, free_port, port_free, port_holder


def test_the_holder_of_a_listening_port_is_named() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free(port)
        holder = port_holder(port)
        assert holder is not None
        assert holder.pid == os.getpid()
        assert "pytest" in holder.cmdline or "python" in holder.cmdline
        assert holder.describe().startswith(f"pid {os.getpid()} (")
    assert port_free(port)
    assert port_holder(port) is None


def test_nobody_holds_a_free_port() -> None:
    port = free_port()
    assert port_free(port)
    assert port_holder(port) is None


def test_describe_shortens_our_own_command_lines() -> None:
    long = PortHolder(7, "district server --site " + "x" * 200)
    text = long.describe(width=40)
    assert text.startswith("pid 7 (district server --site xx") and text.endswith("…)")
    assert len(text) == len("pid 7 ()") + 40
    assert PortHolder(8, "").describe() == "pid 8"


def test_our_command_lines_read_as_district_commands() -> None:
    py = "/srv/.venv/bin/python"
    assert _short_cmdline([py, "-m", "district.cli", "server", "--port", "8000"]) == "district server --port 8000"
    assert _short_cmdline([py, "/srv/.venv/bin/district", "demo"]) == "district demo"
    assert _short_cmdline(["/srv/.venv/bin/district", "demo"]) == "district demo"
    # A path that merely ends in a folder called district is not our command.
    assert _short_cmdline([py, "-m", "pytest", "tests/unit/district"]) == f"{py} -m pytest tests/unit/district"
    assert _short_cmdline(["nginx", "-g", "daemon off;"]) == "nginx -g daemon off;"
