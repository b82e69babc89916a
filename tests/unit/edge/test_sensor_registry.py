"""The sensor-kind table, walked through with an example kind (docs/sensor-kinds.md).

The EV charger below is what a new kind's module (``edge/sensors/ev_charger.py``)
would hold: its config model and its driver, nothing else. The test registers it
in a copy of the table, the one line a real kind adds to ``edge.sensors.DRIVERS``,
and shows that configuration parsing and bus building pick it up with no other
change: neither the Modbus base, nor the agent, nor ``edge.config`` names a kind.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, ClassVar, Literal

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts.messages import Ident, ParkingBayState, ParkingSpotStatus, new_reading_id
from edge.config import DeviceConfig
from edge.sensors import DRIVERS, build_buses, check_table, sensor_config_type
from edge.sensors.bay_controller import ModbusBayControllerConfig
from edge.sensors.modbus import ControllerDriver, ModbusControllerConfig, SensorMessage, SerialSettings
from tests.unit.edge.test_edge_sensors import FakeController, Health

# -- what edge/sensors/ev_charger.py would hold ------------------------------------------------------

#: Not in register map v1: a real kind adds its device type and codes to contracts/fieldbus.py,
#: so the simulator serves the same map.
DEVICE_TYPE_EV_CHARGER = 3
EV_CODES: dict[int, ParkingSpotStatus] = {0: "free", 1: "occupied", 2: "unknown"}  # idle, charging, fault


class ModbusEvChargerConfig(ModbusControllerConfig):
    """An EV-charger controller: one register per charging bay of lot ``lot_id``."""

    type: Literal["modbus_ev_charger"]
    lot_id: Ident
    chargers: list[Ident]

    def point_ids(self) -> list[str]:
        return list(self.chargers)

    @property
    def group_id(self) -> str:
        return self.lot_id


class EvChargerDriver(ControllerDriver[ModbusEvChargerConfig, ParkingSpotStatus]):
    config_model: ClassVar[type[ModbusEvChargerConfig]] = ModbusEvChargerConfig
    device_type: ClassVar[int] = DEVICE_TYPE_EV_CHARGER
    kind_name: ClassVar[str] = "EV charger"

    def decode(self, code: int) -> tuple[ParkingSpotStatus, bool]:
        status = EV_CODES.get(code)
        return ("unknown", True) if status is None else (status, False)

    def unknown_state(self) -> ParkingSpotStatus:
        return "unknown"

    def message(self, point_id: str, state: ParkingSpotStatus, observed_at: datetime) -> ParkingBayState:
        return ParkingBayState(
            device_id=self.device_id,
            observed_at=observed_at,
            reading_id=new_reading_id(),
            lot_id=self.config.lot_id,
            bay_id=point_id,
            status=state,
        )


# -- the one table entry -------------------------------------------------------------------------------

TABLE: dict[str, type[ControllerDriver[Any, Any]]] = {**DRIVERS, "modbus_ev_charger": EvChargerDriver}

SENSORS = [
    {"type": "modbus_bay_controller", "port": "/dev/a", "unit": 1, "lot_id": "l", "bays": ["b1"]},
    {"type": "modbus_ev_charger", "port": "/dev/a", "unit": 2, "lot_id": "l", "chargers": ["E1", "E2"]},
]


def test_the_table_is_consistent() -> None:
    check_table(DRIVERS)
    check_table(TABLE)


def test_a_key_that_is_not_the_config_type_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'ev'.*ModbusEvChargerConfig\.type"):
        check_table({"ev": EvChargerDriver})


def test_device_config_parses_every_registered_kind() -> None:
    locker = {"type": "modbus_locker_controller", "port": "/dev/a", "unit": 3, "bank_id": "k", "compartments": ["c"]}
    cfg = DeviceConfig.model_validate({"device": {"id": "e", "site_id": "s"}, "sensors": [SENSORS[0], locker]})
    assert [type(s) for s in cfg.sensors] == [d.config_model for d in DRIVERS.values()]
    # An unregistered type is refused by the discriminator, with the known tags in the message.
    with pytest.raises(ValidationError, match="modbus_bay_controller"):
        DeviceConfig.model_validate({"device": {"id": "e", "site_id": "s"}, "sensors": SENSORS[1:]})


def test_a_new_kind_parses_and_builds_from_its_table_entry() -> None:
    configs = TypeAdapter(list[sensor_config_type(TABLE)]).validate_python(SENSORS)
    assert [type(c) for c in configs] == [ModbusBayControllerConfig, ModbusEvChargerConfig]
    assert configs[1].point_ids() == ["E1", "E2"] and configs[1].label == "/dev/a unit 2"
    # The generic config rules apply to the new kind too.
    with pytest.raises(ValidationError, match="duplicate point id"):
        TypeAdapter(sensor_config_type(TABLE)).validate_python({**SENSORS[1], "chargers": ["E1", "E1"]})

    out: list[SensorMessage] = []
    (bus,) = build_buses(
        configs, device_id="e", emit=out.extend, health=Health(), stop=threading.Event(), drivers=TABLE
    )
    assert bus.serial == SerialSettings("/dev/a", 19200, "N", 1, 1.0)
    assert [type(d) for d in bus.drivers] == [DRIVERS["modbus_bay_controller"], EvChargerDriver]
    charger = FakeController(DEVICE_TYPE_EV_CHARGER, 2)
    charger.regs[100:102] = [1, 7]
    assert bus.drivers[1].poll(charger)
    assert [(m.bay_id, m.status) for m in out if isinstance(m, ParkingBayState)] == [
        ("E1", "occupied"),
        ("E2", "unknown"),
    ]
    assert bus.drivers[1].stats["garbage_codes"] == 1
    # The device type guards against a charger wired where a bay controller is configured, and back.
    assert not bus.drivers[0].poll(charger)
    assert "device type 3, expected 1 (bay controller)" in str(bus.drivers[0]._problem)
