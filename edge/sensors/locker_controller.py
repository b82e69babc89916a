"""Pickup-locker controller (register map v1, device type 2): one register per compartment.

Bits: bit0 = occupied, bit1 = door open, bit2 = fault (-> ``unknown``, door
``unknown``), bit3 = out of service (-> ``out_of_service``). A value with any
higher bit set is garbage: ``unknown``, counted and logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from contracts.messages import DoorState, LockerCompartmentState, LockerStatus, new_reading_id
from edge.config import ModbusLockerControllerConfig
from edge.sensors.modbus import DEVICE_TYPE_LOCKER, ControllerDriver

OCCUPIED = 0x1
DOOR_OPEN = 0x2
FAULT = 0x4
OUT_OF_SERVICE = 0x8
VALID_BITS = OCCUPIED | DOOR_OPEN | FAULT | OUT_OF_SERVICE

LockerState = tuple[LockerStatus, DoorState]
UNKNOWN: LockerState = ("unknown", "unknown")


def decode_locker(code: int) -> tuple[LockerState, bool]:
    """``((status, door), garbage)`` for one compartment register."""
    if code & ~VALID_BITS:
        return UNKNOWN, True
    if code & FAULT:
        return UNKNOWN, False
    door: DoorState = "open" if code & DOOR_OPEN else "closed"
    if code & OUT_OF_SERVICE:
        return ("out_of_service", door), False
    return ("occupied" if code & OCCUPIED else "free", door), False


class LockerControllerDriver(ControllerDriver[ModbusLockerControllerConfig, LockerState]):
    device_type: ClassVar[int] = DEVICE_TYPE_LOCKER
    kind_name: ClassVar[str] = "locker controller"

    def decode(self, code: int) -> tuple[LockerState, bool]:
        return decode_locker(code)

    def unknown_state(self) -> LockerState:
        return UNKNOWN

    def message(self, point_id: str, state: LockerState, observed_at: datetime) -> LockerCompartmentState:
        status, door = state
        return LockerCompartmentState(
            device_id=self.device_id,
            observed_at=observed_at,
            reading_id=new_reading_id(),
            bank_id=self.config.bank_id,
            compartment_id=point_id,
            status=status,
            door=door,
        )
