"""The simulated field bus end to end: a pymodbus RTU *client* on the bus path, as the edge uses it.

No broker or database here: the real parts are the pseudo-terminals, the
relay and the pymodbus server and client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from contracts.fieldbus import BAY_CLOSED, BAY_FAULT, BAY_OCCUPIED, LOCKER_OCCUPIED
from contracts.site import SiteConfig
from firmware_sim.fleet import Fault, Fleet
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.integration

SITE = SiteConfig.model_validate(
    {
        "site": {"id": "testsite", "name": "Test", "timezone": "Europe/Berlin"},
        "parking": [
            {"id": "lot-a", "name": "A", "coords": {"lat": 51.0, "lng": 13.7}, "bays": {"prefix": "A-", "count": 300}},
            {"id": "lot-b", "name": "B", "coords": {"lat": 51.0, "lng": 13.7}, "bays": ["B1", "B2", "B3"]},
        ],
        "lockers": [
            {
                "id": "bank-1",
                "name": "Bank",
                "coords": {"lat": 51.0, "lng": 13.7},
                "compartments": [{"size": "S", "count": 6, "prefix": "S"}, {"id": "XL1", "size": "XL"}],
            }
        ],
    }
)


class Client:
    """A pymodbus RTU client as the edge would hold it (19200 8N1)."""

    def __init__(self, path: Path, timeout: float = 0.5) -> None:
        self.modbus = ModbusSerialClient(port=str(path), baudrate=19200, timeout=timeout, retries=0)
        assert self.modbus.connect(), f"cannot open {path}"

    def read(self, address: int, count: int, unit: int = 1) -> list[int]:
        reply = self.modbus.read_input_registers(address, count=count, device_id=unit)
        if reply.isError():
            raise ModbusException(f"exception reply {reply}")
        return list(reply.registers)

    def header(self) -> list[int]:
        return self.read(0, 7)

    def table(self, n: int) -> list[int]:
        out: list[int] = []
        for offset in range(0, n, 125):
            out += self.read(100 + offset, min(125, n - offset))
        return out

    def close(self) -> None:
        self.modbus.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A fleet with demand frozen (speed 0): only what the test sets changes."""
    f = Fleet(SITE, tmp_path / "buses", speed=0, seed=1, data_dir=None, start_at=datetime(2025, 11, 24, 3, 0))
    f.start()
    yield f
    f.stop()


@pytest.fixture
def client(fleet: Fleet) -> Iterator[Client]:
    c = Client(fleet.get("lot-a").bus.path)
    yield c
    c.close()


def test_buses_json_lists_every_bus_for_the_edge(fleet: Fleet, tmp_path: Path) -> None:
    doc = json.loads((tmp_path / "buses" / "buses.json").read_text())
    buses = {b["name"]: b for b in doc["buses"]}
    assert set(buses) == {"lot-a", "lot-b", "bank-1"}
    assert buses["lot-a"]["kind"] == "bay_controller"
    assert buses["lot-a"]["count"] == 300
    assert buses["lot-a"]["points"] == {"prefix": "A-", "count": 300, "start": 1, "width": 3}
    assert buses["lot-b"]["points"] == ["B1", "B2", "B3"]
    assert buses["bank-1"]["kind"] == "locker_controller"
    assert buses["bank-1"]["count"] == 7
    assert buses["bank-1"]["points"][1] == {"id": "XL1", "size": "XL"}
    for bus in buses.values():
        path = Path(bus["path"])
        assert path == tmp_path / "buses" / bus["name"]
        assert os.readlink(path) == bus["tty"] and bus["unit"] == 1


def test_header_and_table_in_chunks_match_the_controller(fleet: Fleet, client: Client) -> None:
    ctrl = fleet.controller("lot-a")
    header = client.header()
    assert header[:3] == [1, 1, 300]
    assert header[3] == ctrl.change_counter
    assert header[6] == 0
    table = client.table(300)
    assert table == ctrl.points()
    assert set(table) <= {0, 1}
    # 03:00 on a Monday with the built-in shape: a few overnight cars.
    assert 0 < sum(table) < 60


def test_set_bay_reads_back_and_bumps_the_change_counter(fleet: Fleet, client: Client) -> None:
    before = client.header()[3]
    free = client.table(300).index(0)
    fleet.set_bay("lot-a", free, BAY_OCCUPIED)
    fleet.set_bay("lot-a", 299, BAY_CLOSED)
    assert client.header()[3] == (before + 2) % 65536
    assert client.read(100 + free, 1) == [BAY_OCCUPIED]
    assert client.read(100 + 299, 1) == [BAY_CLOSED]


def test_addresses_outside_the_map_get_exception_replies(client: Client) -> None:
    for address, count in ((7, 1), (50, 3), (399, 2)):
        with pytest.raises(ModbusException):
            client.read(address, count)
    assert client.header()[0] == 1, "the bus still works after exception replies"


def test_client_can_close_and_reopen(fleet: Fleet, client: Client) -> None:
    bus = fleet.get("lot-a").bus
    assert client.header()[2] == 300
    wait_for(lambda: bus.client_connected, 5, what="relay sees the client")
    client.close()
    wait_for(lambda: not bus.client_connected, 5, what="relay notices the close")
    fleet.set_bay("lot-a", 5, BAY_FAULT)  # something changes while nobody listens
    again = Client(bus.path)
    try:
        assert again.read(105, 1) == [BAY_FAULT]
        assert again.table(300) == fleet.controller("lot-a").points()
    finally:
        again.close()
    assert bus.client_opens == 2


def test_line_noise_and_a_half_frame_from_a_dead_client_do_not_wedge_the_server(fleet: Fleet) -> None:
    bus = fleet.get("lot-a").bus
    fd = os.open(bus.path, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        os.write(fd, b"\x01\x04\x00")  # half a request, then noise, then the client dies
        os.write(fd, bytes(range(40)))
        wait_for(lambda: bus.bytes_to_server >= 43, 5, what="garbage reaches the server")
    finally:
        os.close(fd)
    client = Client(bus.path)
    try:
        answers = []
        for _ in range(3):
            try:
                answers.append(client.header()[2])
            except ModbusException:
                answers.append(None)
        assert answers[-2:] == [300, 300], answers
    finally:
        client.close()


def test_silent_controller_and_unknown_unit_time_out(fleet: Fleet, client: Client) -> None:
    fleet.inject(Fault("lot-a", "silent"))
    with pytest.raises(ModbusException):
        client.header()
    with pytest.raises(ModbusException):
        client.read(0, 7, unit=2)
    fleet.controller("lot-a").silent = False
    assert client.header()[2] == 300
    assert fleet.get("lot-a").bus.frames_silenced >= 2


def test_a_switched_off_controller_times_out_until_switched_on(fleet: Fleet, client: Client) -> None:
    before = time.monotonic()
    assert client.header()[2] == 300
    answered = fleet.last_answer("lot-a")
    assert answered is not None and answered >= before
    fleet.power_off("lot-a")
    with pytest.raises(ModbusException):
        client.header()
    assert fleet.last_answer("lot-a") == answered
    assert fleet.controller("lot-b").answers, "only that controller is off"
    fleet.power_on("lot-a")
    assert client.header()[2] == 300
    last = fleet.last_answer("lot-a")
    assert last is not None and last > answered


def test_wiring_fault_and_stuck_sensor_are_visible(fleet: Fleet, client: Client) -> None:
    fleet.inject(Fault("lot-a", "wiring"))
    fleet.inject(Fault("lot-a", "stuck", index=7))
    fleet.inject(Fault("lot-a", "garbage", index=8, value=0x1234))
    assert client.header()[6] & 1
    assert client.read(107, 2) == [BAY_FAULT, 0x1234]


def test_noisy_line_corrupts_some_frames(fleet: Fleet) -> None:
    fleet.inject(Fault("lot-a", "noise", probability=0.5))
    client = Client(fleet.get("lot-a").bus.path, timeout=0.2)
    ok = bad = 0
    for _ in range(12):
        try:
            client.header()
            ok += 1
        except ModbusException:
            bad += 1
    client.close()
    assert ok > 0 and bad > 0
    assert fleet.get("lot-a").bus.frames_corrupted > 0


def test_locker_bank_reads(fleet: Fleet) -> None:
    c = Client(fleet.get("bank-1").bus.path)
    try:
        assert c.header()[:3] == [1, 2, 7]
        fleet.set_compartment("bank-1", 6, LOCKER_OCCUPIED)
        assert c.table(7)[6] == LOCKER_OCCUPIED
    finally:
        c.close()


def test_line_timing_paces_a_full_read(client: Client) -> None:
    # 125 registers = 255 response bytes + 8 request bytes at 19200 8N1: >= 137 ms on the wire.
    t0 = time.monotonic()
    client.read(100, 125)
    assert time.monotonic() - t0 >= 0.13


def test_demand_changes_show_on_the_bus(tmp_path: Path) -> None:
    # 3 600 x real time from 09:30 on a Monday: the built-in shape fills the lot.
    f = Fleet(SITE, tmp_path / "b", speed=3600, seed=2, tick_s=0.1, start_at=datetime(2025, 11, 24, 9, 30))
    f.start()
    c = Client(f.get("lot-a").bus.path)
    try:
        first = c.header()[3]
        wait_for(lambda: c.header()[3] != first, 10, what="change counter moves")
        wait_for(lambda: sum(x == 1 for x in c.table(300)) > 150, 20, what="lot fills towards midday")
    finally:
        c.close()
        f.stop()
    assert not (tmp_path / "b" / "lot-a").exists()
    assert not (tmp_path / "b" / "buses.json").exists()
    assert f.step_errors == 0


SIM_ARGS = ["--speed", "600", "--seed", "3", "--fault", "dresdenkarstadt:stuck:3"]


def test_cli_runs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    site = REPO / "district" / "sites" / "dresden.yaml"
    bus_dir = tmp_path / "buses"
    proc = subprocess.Popen(
        [sys.executable, "-m", "district.cli", "sim", "--site", str(site), "--bus-dir", str(bus_dir), *SIM_ARGS],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: (bus_dir / "buses.json").exists() or proc.poll() is not None, 30, what="buses.json")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        buses = {b["name"]: b for b in json.loads((bus_dir / "buses.json").read_text())["buses"]}
        assert len(buses) == 6 and buses["dresdencentrumgalerie"]["count"] == 1059
        c = Client(Path(buses["dresdenkarstadt"]["path"]), timeout=1.0)
        try:
            assert c.header()[:3] == [1, 1, 265]
            assert c.read(103, 1) == [BAY_FAULT]
        finally:
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()
    assert "occupied" in out.decode()
    assert sorted(p.name for p in bus_dir.iterdir()) == []
