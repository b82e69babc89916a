"""The simulated count display on the real pty bus, written and read by a plain pymodbus RTU client.

No bridge here (tests/integration/test_display_bridge.py has it): this pins the wire side of the
count-display map, FC 16 / FC 06 / FC 03 and the exception replies, and ``district sim --count-display``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pymodbus.client import ModbusSerialClient

from contracts.fieldbus import (
    DEVICE_TYPE_COUNT_DISPLAY,
    DISPLAY_HEARTBEAT,
    DISPLAY_INFO_ADDRESS,
    DISPLAY_MODE,
    DISPLAY_STATUS,
    DISPLAY_STATUS_COMMS_LOST,
    DISPLAY_WRITE_COUNT,
    DisplayFrame,
)
from contracts.site import SiteConfig
from firmware_sim.fleet import Fleet
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.integration

SITE = SiteConfig.model_validate({"site": {"id": "t", "name": "T", "timezone": "Europe/Berlin"}})


class Client:
    def __init__(self, path: Path) -> None:
        self.modbus = ModbusSerialClient(port=str(path), baudrate=19200, timeout=0.5, retries=0)
        assert self.modbus.connect(), f"cannot open {path}"

    def write(self, address: int, values: list[int]) -> int | None:
        """None when accepted, else the exception code."""
        reply = self.modbus.write_registers(address, values, device_id=1)
        return int(reply.exception_code) if reply.isError() else None

    def write_one(self, address: int, value: int) -> int | None:
        reply = self.modbus.write_register(address, value, device_id=1)
        return int(reply.exception_code) if reply.isError() else None

    def read(self, address: int, count: int) -> list[int] | int:
        reply = self.modbus.read_holding_registers(address, count=count, device_id=1)
        return int(reply.exception_code) if reply.isError() else list(reply.registers)

    def close(self) -> None:
        self.modbus.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(SITE, tmp_path / "buses", speed=0, displays=["vms-a"], display_timeout_s=1.0, tick_s=0.1)
    f.start()
    yield f
    f.stop()


def test_write_read_back_and_refusals_over_the_wire(fleet: Fleet, tmp_path: Path) -> None:
    doc = json.loads((tmp_path / "buses" / "buses.json").read_text())
    assert doc["buses"] == []
    (info,) = doc["displays"]
    assert (info["name"], info["kind"], info["unit"], info["comms_timeout_s"]) == ("vms-a", "count_display", 1, 1.0)
    display = fleet.display("vms-a")
    c = Client(Path(info["path"]))
    try:
        regs = DisplayFrame(217, "217", "auto", "open", age_s=4, trust=0.9, heartbeat=1).registers()
        assert c.write(0, regs) is None
        assert display.shown().face == "217"
        assert c.read(0, DISPLAY_WRITE_COUNT) == regs
        assert c.read(DISPLAY_INFO_ADDRESS, 3) == [1, DEVICE_TYPE_COUNT_DISPLAY, 0]
        assert c.write_one(DISPLAY_MODE, 9) == 3  # unknown mode: ILLEGAL_VALUE
        assert c.write(DISPLAY_STATUS, [0]) == 2  # read-only: ILLEGAL_ADDRESS
        assert c.read(14, 1) == 2
        assert display.shown().face == "217"
        # nothing changes the heartbeat for 1 s: the sign blanks itself, and says so
        wait_for(lambda: display.shown().blank, 5, what="comms-loss blank")
        assert c.read(DISPLAY_STATUS, 1) == [DISPLAY_STATUS_COMMS_LOST]
        assert c.write_one(DISPLAY_HEARTBEAT, 2) is None
        assert display.shown().face == "217"
    finally:
        c.close()


def test_cli_runs_count_displays(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site: {id: t, name: T, timezone: Europe/Berlin}\n")
    bus_dir = tmp_path / "buses"
    args = ["sim", "--site", str(site), "--bus-dir", str(bus_dir), "--speed", "0"]
    args += ["--count-display", "vms-1", "--count-display", "vms-2", "--display-timeout", "30"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "district.cli", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: (bus_dir / "buses.json").exists() or proc.poll() is not None, 30, what="buses.json")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        displays = {d["name"]: d for d in json.loads((bus_dir / "buses.json").read_text())["displays"]}
        assert sorted(displays) == ["vms-1", "vms-2"] and displays["vms-2"]["comms_timeout_s"] == 30
        c = Client(Path(displays["vms-2"]["path"]))
        try:
            assert c.write(0, DisplayFrame(None, "FULL", "full", "full", heartbeat=5).registers()) is None
            assert c.read(DISPLAY_HEARTBEAT, 1) == [5]
        finally:
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()
    assert "display vms-2: frame 'FULL'" in out.decode()
    assert sorted(p.name for p in bus_dir.iterdir()) == []


def test_cli_refuses_a_display_name_that_is_no_id(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site: {id: t, name: T, timezone: Europe/Berlin}\n")
    args = ["sim", "--site", str(site), "--bus-dir", str(tmp_path), "--count-display", "../etc"]
    done = subprocess.run(
        [sys.executable, "-m", "district.cli", *args],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2 and b"not a valid id" in done.stderr


def test_displays_are_listed_apart_from_the_edge_buses(tmp_path: Path) -> None:
    """A display next to a fleet of lots: the edge's buses list is unchanged, the display is listed apart."""
    site = SiteConfig.model_validate(
        {
            "site": {"id": "t", "name": "T", "timezone": "Europe/Berlin"},
            "parking": [{"id": "lot-a", "name": "A", "coords": {"lat": 51.0, "lng": 13.7}, "bays": ["B1", "B2"]}],
        }
    )
    f = Fleet(site, tmp_path / "b", speed=0, displays=["vms"], start_at=datetime(2025, 11, 24, 3, 0))
    f.start()
    try:
        doc = json.loads((tmp_path / "b" / "buses.json").read_text())
        assert [b["name"] for b in doc["buses"]] == ["lot-a"]
        assert [d["name"] for d in doc["displays"]] == ["vms"]
        with pytest.raises(ValueError, match="two buses"):
            Fleet(site, tmp_path / "c", speed=0, displays=["lot-a"]).start()
    finally:
        f.stop()
