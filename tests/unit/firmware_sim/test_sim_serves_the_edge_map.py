"""The simulator's controllers read by the edge's drivers, in process: both sides of contracts.fieldbus.

The pty/RTU path is covered by tests/integration/test_sim_fieldbus.py; this one
needs no bus, so a drift between the simulator's register model and a driver
(an address, a device type, a code, a bit) fails fast and says which.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.fieldbus import BAY_CLOSED, LOCKER_OUT_OF_SERVICE, REGISTER_MAX, encode_bay, encode_locker
from contracts.messages import LockerCompartmentState, ParkingBayState
from edge.config import DeviceConfig
from edge.sensors import DRIVERS
from edge.sensors.modbus import BadReply, ControllerDriver, SensorMessage
from firmware_sim.controllers import BayController, Controller, LockerController


class SimReader:
    """A ``RegisterReader`` on a simulated controller: what the RTU server does, minus the wire."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
        assert unit == self.controller.unit
        regs = self.controller.read_input_registers(address, count)
        if regs is None:
            raise BadReply(f"Modbus exception reply 2 for IR {address}+{count}", reason="exception")
        return regs

    def close(self) -> None:
        pass


class Health:
    def __init__(self) -> None:
        self.problems: dict[str, str | None] = {}

    def set_problem(self, source: str, problem: str | None) -> None:
        self.problems[source] = problem


def _driver(sensor: dict[str, Any]) -> tuple[ControllerDriver[Any, Any], list[SensorMessage], Health]:
    cfg = DeviceConfig.model_validate({"device": {"id": "e", "site_id": "s"}, "sensors": [sensor]}).sensors[0]
    out: list[SensorMessage] = []
    health = Health()
    now = datetime(2024, 5, 1, tzinfo=UTC)
    driver = DRIVERS[cfg.type](cfg, device_id="e", emit=out.extend, health=health, now=lambda: now)
    return driver, out, health


BAYS = {"type": "modbus_bay_controller", "port": "/dev/sim", "lot_id": "l", "bays": {"prefix": "B", "count": 300}}
LOCKERS = {"type": "modbus_locker_controller", "port": "/dev/sim", "bank_id": "k", "compartments": ["C1", "C2", "C3"]}


def test_bay_controller_codes_reach_the_edge_as_the_states_they_mean() -> None:
    sim = BayController("lot", 300)
    sim.set(0, encode_bay(True))
    sim.stick(1)  # the simulator's sensor-fault code
    sim.pin(2, BAY_CLOSED)
    sim.set_garbage(3)
    sim.set(299, encode_bay(True))  # the last point: the table spans chunks at the right addresses
    driver, out, _ = _driver(BAYS)
    assert driver.poll(SimReader(sim))
    states = {m.bay_id: m.status for m in out if isinstance(m, ParkingBayState)}
    assert len(states) == 300
    assert [states[b] for b in ("B001", "B002", "B003", "B004", "B005", "B300")] == [
        "occupied",
        "unknown",
        "closed",
        "unknown",
        "free",
        "occupied",
    ]
    assert driver.stats["garbage_codes"] == 1
    assert sim.occupied() == 2


def test_locker_controller_bits_reach_the_edge_as_the_states_they_mean() -> None:
    sim = LockerController("bank", 3)
    sim.set(0, encode_locker(True, True))
    sim.stick(1)  # the simulator's fault bit
    sim.pin(2, LOCKER_OUT_OF_SERVICE)
    driver, out, _ = _driver(LOCKERS)
    assert driver.poll(SimReader(sim))
    assert [(m.compartment_id, m.status, m.door) for m in out if isinstance(m, LockerCompartmentState)] == [
        ("C1", "occupied", "open"),
        ("C2", "unknown", "unknown"),
        ("C3", "out_of_service", "closed"),
    ]
    sim.set_garbage(0, REGISTER_MAX)
    out.clear()
    driver.poll(SimReader(sim))
    assert [(m.compartment_id, m.status) for m in out if isinstance(m, LockerCompartmentState)] == [("C1", "unknown")]


def test_header_change_counter_and_wiring_flag_are_read_as_served() -> None:
    sim = BayController("lot", 300)
    driver, out, health = _driver(BAYS)
    reader = SimReader(sim)
    assert driver.poll(reader)
    reads = sim.reads
    assert driver.poll(reader)  # counter unchanged: the header alone
    assert sim.reads == reads + 1 and driver.stats["table_skipped"] == 1
    sim.wiring_fault = True
    sim.set(5, encode_bay(True))
    assert driver.poll(reader)
    assert "wiring fault flag set" in str(health.problems["/dev/sim unit 1"])
    assert [m.bay_id for m in out[300:] if isinstance(m, ParkingBayState)] == ["B006"]


@pytest.mark.parametrize(("sensor", "sim"), [(BAYS, LockerController("x", 300)), (LOCKERS, BayController("x", 3))])
def test_a_controller_of_the_other_device_type_is_refused(sensor: dict[str, Any], sim: Controller) -> None:
    driver, out, health = _driver(sensor)
    assert not driver.poll(SimReader(sim))
    assert out == [] and "device type" in str(health.problems["/dev/sim unit 1"])
