"""Parking-bay controller (register map v1, device type 1): one register per bay.

Configuration ``type: modbus_bay_controller``. Codes (``contracts.fieldbus``):
0 = free, 1 = occupied, 2 = sensor fault (-> ``unknown``), 3 = bay
disabled/closed (-> ``closed``). Anything else is garbage: ``unknown``, counted
and logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from contracts.fieldbus import DEVICE_TYPE_BAY, decode_bay
from contracts.messages import Ident, ParkingBayState, ParkingSpotStatus, new_reading_id
from contracts.site import BayRange
from edge.sensors.modbus import ControllerDriver, ModbusControllerConfig

__all__ = ["BayControllerDriver", "ModbusBayControllerConfig", "decode_bay"]


class ModbusBayControllerConfig(ModbusControllerConfig):
    """A parking-guidance bay controller (register map v1, device type 1)."""

    type: Literal["modbus_bay_controller"]
    lot_id: Ident
    #: Bay ids in register order: a list, or a ``{prefix, count, start, width}`` range.
    bays: list[Ident] | BayRange

    def point_ids(self) -> list[str]:
        return list(self.bays) if isinstance(self.bays, list) else self.bays.ids()

    @property
    def group_id(self) -> str:
        return self.lot_id


class BayControllerDriver(ControllerDriver[ModbusBayControllerConfig, ParkingSpotStatus]):
    """Publishes each bay as a :class:`~contracts.messages.ParkingBayState` of lot ``config.lot_id``."""

    config_model: ClassVar[type[ModbusBayControllerConfig]] = ModbusBayControllerConfig
    device_type: ClassVar[int] = DEVICE_TYPE_BAY
    kind_name: ClassVar[str] = "bay controller"

    def decode(self, code: int) -> tuple[ParkingSpotStatus, bool]:
        return decode_bay(code)

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
