"""Code mapping and the controller/bus logic, against a fake register reader."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.messages import LockerCompartmentState, ParkingBayState
from edge.config import DeviceConfig
from edge.sensors import DRIVERS, build_buses
from edge.sensors.bay_controller import BayControllerDriver, decode_bay
from edge.sensors.locker_controller import LockerControllerDriver, decode_locker
from edge.sensors.modbus import BusGone, NoResponse, SensorMessage, SerialSettings


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0, ("free", False)), (1, ("occupied", False)), (2, ("unknown", False)), (3, ("closed", False))]
    + [(c, ("unknown", True)) for c in (4, 255, 65535)],
)
def test_bay_codes(code: int, expected: tuple[str, bool]) -> None:
    assert decode_bay(code) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0b0000, (("free", "closed"), False)),
        (0b0001, (("occupied", "closed"), False)),
        (0b0010, (("free", "open"), False)),
        (0b0011, (("occupied", "open"), False)),
        (0b0100, (("unknown", "unknown"), False)),
        (0b0111, (("unknown", "unknown"), False)),
        (0b1000, (("out_of_service", "closed"), False)),
        (0b1011, (("out_of_service", "open"), False)),
        (0b1100, (("unknown", "unknown"), False)),
        (0b10000, (("unknown", "unknown"), True)),
        (0xFFFF, (("unknown", "unknown"), True)),
    ],
)
def test_locker_codes(code: int, expected: tuple[tuple[str, str], bool]) -> None:
    assert decode_locker(code) == expected


def test_driver_table_is_explicit() -> None:
    assert {
        "modbus_bay_controller": BayControllerDriver,
        "modbus_locker_controller": LockerControllerDriver,
    } == DRIVERS


class FakeController:
    """Register map v1 in a list; records every request."""

    def __init__(self, device_type: int, n: int) -> None:
        self.regs = [0] * (100 + n)
        self.regs[0:3] = [1, device_type, n]
        self.requests: list[tuple[int, int, int]] = []
        self.silent = False
        self.gone = False

    def set_point(self, i: int, code: int) -> None:
        self.regs[100 + i] = code
        self.regs[3] = (self.regs[3] + 1) % 65536

    def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
        if self.gone:
            raise BusGone("unplugged")
        if self.silent:
            raise NoResponse("no answer within 1 s")
        assert count <= 125
        self.requests.append((unit, address, count))
        return self.regs[address : address + count]

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Health:
    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def set_problem(self, source: str, problem: str | None) -> None:
        if problem is None:
            self.problems.pop(source, None)
        else:
            self.problems[source] = problem


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _config(sensor: dict[str, Any]) -> DeviceConfig:
    return DeviceConfig.model_validate({"device": {"id": "edge-1", "site_id": "s"}, "sensors": [sensor]})


def _bay_driver(n: int, **extra: Any) -> tuple[BayControllerDriver, list[SensorMessage], Clock, Health]:
    cfg = _config(
        {
            "type": "modbus_bay_controller",
            "port": "/dev/fake",
            "lot_id": "lot-1",
            "bays": {"prefix": "B", "count": n},
            "poll_interval_s": 1,
            "refresh_interval_s": 60,
            "unknown_after_s": 30,
            **extra,
        }
    )
    out: list[SensorMessage] = []
    clock, health = Clock(), Health()
    driver = BayControllerDriver(
        cfg.sensors[0], device_id="edge-1", emit=out.extend, health=health, clock=clock, now=lambda: NOW
    )
    return driver, out, clock, health


def test_first_read_publishes_all_then_only_changes_then_refresh() -> None:
    driver, out, clock, health = _bay_driver(300)
    bus = FakeController(1, 300)
    bus.set_point(5, 1)
    assert driver.poll(bus)
    # 300 points after the 7-register header: 3 chunks of pairwise different sizes (99, 100, 101), so a
    # late reply can never pass as the next chunk's answer on length (docs/fieldbus.md, "Line hygiene")
    assert bus.requests == [(1, 0, 7), (1, 100, 99), (1, 199, 100), (1, 299, 101)]
    assert len(out) == 300 and all(isinstance(m, ParkingBayState) for m in out)
    by_bay = {m.bay_id: m for m in out if isinstance(m, ParkingBayState)}
    assert by_bay["B006"].status == "occupied" and by_bay["B001"].status == "free"
    assert all(m.observed_at == NOW and m.device_id == "edge-1" and m.lot_id == "lot-1" for m in out)
    assert len({m.reading_id for m in out}) == 300
    out.clear()
    bus.requests.clear()

    clock.t += 1
    assert driver.poll(bus)  # counter unchanged: header only
    assert bus.requests == [(1, 0, 7)] and out == []

    clock.t += 1
    bus.set_point(5, 0)
    bus.set_point(7, 3)
    driver.poll(bus)
    assert [(m.bay_id, m.status) for m in out if isinstance(m, ParkingBayState)] == [
        ("B006", "free"),
        ("B008", "closed"),
    ]
    out.clear()

    clock.t += 60  # refresh: everything again, unchanged or not, with fresh ids
    bus.requests.clear()
    driver.poll(bus)
    assert len(out) == 300 and len(bus.requests) == 4
    assert health.problems == {}


def test_garbage_codes_are_unknown_counted_and_do_not_stop_neighbours(caplog: pytest.LogCaptureFixture) -> None:
    driver, out, clock, _ = _bay_driver(3)
    bus = FakeController(1, 3)
    bus.regs[100:103] = [1, 999, 0]
    driver.poll(bus)
    assert [m.status for m in out if isinstance(m, ParkingBayState)] == ["occupied", "unknown", "free"]
    assert driver.stats["garbage_codes"] == 1
    assert "invalid code 999" in caplog.text
    caplog.clear()
    clock.t += 1
    bus.set_point(0, 0)  # a neighbour changes; the garbage point is re-read but not re-logged
    driver.poll(bus)
    assert driver.stats["garbage_codes"] == 2
    assert "invalid code" not in caplog.text


def test_silent_controller_degrades_then_goes_unknown_then_recovers() -> None:
    driver, out, clock, health = _bay_driver(2)
    bus = FakeController(1, 2)
    bus.regs[100:102] = [1, 0]
    driver.poll(bus)
    out.clear()
    bus.silent = True
    clock.t += 1
    assert not driver.poll(bus)
    assert health.problems["/dev/fake unit 1"].startswith("/dev/fake unit 1: no answer")
    assert out == []  # not yet: a single timeout is no reason to blank the bays
    clock.t += 30
    driver.poll(bus)
    assert [m.status for m in out if isinstance(m, ParkingBayState)] == ["unknown", "unknown"]
    out.clear()
    clock.t += 1
    driver.poll(bus)
    assert out == []  # said once, not every poll
    bus.silent = False
    clock.t += 1
    assert driver.poll(bus)
    assert [m.status for m in out if isinstance(m, ParkingBayState)] == ["occupied", "free"]
    assert health.problems == {}


def test_header_checks() -> None:
    driver, out, _, health = _bay_driver(2)
    bus = FakeController(2, 2)  # a locker controller where a bay controller is configured
    assert not driver.poll(bus)
    assert "device type 2, expected 1" in health.problems["/dev/fake unit 1"]
    bus.regs[0:2] = [7, 1]
    assert not driver.poll(bus)
    assert "register map version 7" in health.problems["/dev/fake unit 1"]
    assert out == []


def test_point_count_mismatch_reads_what_exists() -> None:
    driver, out, _, health = _bay_driver(4)
    bus = FakeController(1, 2)
    bus.regs[100:102] = [1, 1]
    assert driver.poll(bus)
    assert [m.status for m in out if isinstance(m, ParkingBayState)] == ["occupied", "occupied", "unknown", "unknown"]
    assert bus.requests[-1] == (1, 100, 2)
    assert "reports 2 points, configured 4" in health.problems["/dev/fake unit 1"]


def test_wiring_fault_flag_degrades() -> None:
    driver, _, _, health = _bay_driver(1)
    bus = FakeController(1, 1)
    bus.regs[6] = 1
    assert driver.poll(bus)
    assert "wiring fault" in health.problems["/dev/fake unit 1"]


def test_locker_messages() -> None:
    cfg = _config(
        {"type": "modbus_locker_controller", "port": "/dev/fake", "bank_id": "bank", "compartments": ["C1", "C2"]}
    )
    out: list[SensorMessage] = []
    driver = LockerControllerDriver(cfg.sensors[0], device_id="edge-1", emit=out.extend, health=Health())
    bus = FakeController(2, 2)
    bus.regs[100:102] = [0b0011, 0b1000]
    driver.poll(bus)
    assert [(m.compartment_id, m.status, m.door) for m in out if isinstance(m, LockerCompartmentState)] == [
        ("C1", "occupied", "open"),
        ("C2", "out_of_service", "closed"),
    ]
    assert all(m.observed_at.tzinfo is not None and m.observed_at.utcoffset().total_seconds() == 0 for m in out)


def test_bus_reopens_with_backoff_after_the_port_vanishes() -> None:
    cfg = _config(
        {"type": "modbus_bay_controller", "port": "/dev/fake", "lot_id": "l", "bays": ["a"], "poll_interval_s": 0.01}
    )
    opened: list[SerialSettings] = []
    stop = threading.Event()
    health = Health()
    messages: list[SensorMessage] = []

    class Unpluggable(FakeController):
        def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
            regs = super().read_input_registers(unit, address, count)
            if len(opened) >= 3:
                stop.set()  # third open answered: enough
            return regs

    controller = Unpluggable(1, 1)

    def factory(settings: SerialSettings) -> FakeController:
        opened.append(settings)
        if len(opened) == 2:
            raise BusGone("cannot open /dev/fake")
        controller.gone = False
        return controller

    def emit(batch: list[SensorMessage]) -> None:
        messages.extend(batch)
        controller.gone = True  # unplug right after the first good read

    (bus,) = build_buses(cfg.sensors, device_id="e", emit=emit, health=health, stop=stop, reader_factory=factory)
    bus._backoff_min = 0.001
    worker = threading.Thread(target=bus.run)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert len(opened) == 3
    assert opened[0].port == "/dev/fake" and opened[0].baudrate == 19200
    assert messages and messages[0].device_id == "e"
    assert bus.opens == 2
    assert health.problems == {}  # recovered


def test_controllers_on_one_port_share_a_bus() -> None:
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": "e", "site_id": "s"},
            "sensors": [
                {"type": "modbus_bay_controller", "port": "/dev/a", "unit": 1, "lot_id": "l", "bays": ["x"]},
                {
                    "type": "modbus_locker_controller",
                    "port": "/dev/a",
                    "unit": 2,
                    "bank_id": "b",
                    "compartments": ["y"],
                },
                {"type": "modbus_bay_controller", "port": "/dev/b", "lot_id": "m", "bays": ["x"], "timeout_s": 2},
            ],
        }
    )
    buses = build_buses(cfg.sensors, device_id="e", emit=lambda m: None, health=Health(), stop=threading.Event())
    assert [(b.serial.port, len(b.drivers)) for b in buses] == [("/dev/a", 2), ("/dev/b", 1)]
    assert buses[1].serial.timeout_s == 2
