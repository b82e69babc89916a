"""Parking-bay controller (register map v1, device type 1): one register per bay.

Codes: 0 = free, 1 = occupied, 2 = sensor fault (-> ``unknown``),
3 = bay disabled/closed (-> ``closed``). Anything else is garbage: ``unknown``,
counted and logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from contracts.messages import ParkingBayState, ParkingSpotStatus, new_reading_id
from edge.config import ModbusBayControllerConfig
from edge.sensors.modbus import DEVICE_TYPE_BAY, ControllerDriver

BAY_CODES: dict[int, ParkingSpotStatus] = {0: "free", 1: "occupied", 2: "unknown", 3: "closed"}


def decode_bay(code: int) -> tuple[ParkingSpotStatus, bool]:
    """``(status, garbage)`` for one bay register."""
    status = BAY_CODES.get(code)
    if status is None:
        return "unknown", True
    return status, False


class BayControllerDriver(ControllerDriver[ModbusBayControllerConfig, ParkingSpotStatus]):
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
