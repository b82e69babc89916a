"""Pickup-locker controller (register map v1, device type 2): one register per compartment.

Configuration ``type: modbus_locker_controller``. Bits (``contracts.fieldbus``):
bit0 = occupied, bit1 = door open, bit2 = fault (-> ``unknown``, door
``unknown``), bit3 = out of service (-> ``out_of_service``). A value with any
higher bit set is garbage: ``unknown``, counted and logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from contracts.fieldbus import DEVICE_TYPE_LOCKER, LOCKER_UNKNOWN, LockerState, decode_locker
from contracts.messages import Ident, LockerCompartmentState, new_reading_id
from contracts.site import Compartment, CompartmentRange
from edge.sensors.modbus import ControllerDriver, ModbusControllerConfig

__all__ = ["LockerControllerDriver", "LockerState", "ModbusLockerControllerConfig", "decode_locker"]


class ModbusLockerControllerConfig(ModbusControllerConfig):
    """A pickup-locker controller (register map v1, device type 2)."""

    type: Literal["modbus_locker_controller"]
    bank_id: Ident
    #: Compartments in register order: ids, or the site file's compartment
    #: entries (``{id, size}`` or ``{size, count, prefix, start, width}``).
    compartments: Annotated[list[Ident | Compartment | CompartmentRange], Field(min_length=1)]

    def point_ids(self) -> list[str]:
        out: list[str] = []
        for item in self.compartments:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, Compartment):
                out.append(item.id)
            else:
                out.extend(f"{item.prefix}{n:0{item.width}d}" for n in range(item.start, item.start + item.count))
        return out

    @property
    def group_id(self) -> str:
        return self.bank_id


class LockerControllerDriver(ControllerDriver[ModbusLockerControllerConfig, LockerState]):
    """Publishes each compartment as a :class:`~contracts.messages.LockerCompartmentState` of ``config.bank_id``."""

    config_model: ClassVar[type[ModbusLockerControllerConfig]] = ModbusLockerControllerConfig
    device_type: ClassVar[int] = DEVICE_TYPE_LOCKER
    kind_name: ClassVar[str] = "locker controller"

    def decode(self, code: int) -> tuple[LockerState, bool]:
        return decode_locker(code)

    def unknown_state(self) -> LockerState:
        return LOCKER_UNKNOWN

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
