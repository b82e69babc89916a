"""Devices: each one's last status message, and the camera health it reports.

Status messages are ordered by arrival, not by ``observed_at``: a last will
carries its connect time, older than the heartbeat it replaces. The broker's
retained status of every device is this store's bootstrap (delivered on every
subscribe), so it reads nothing from history.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from contracts import DeviceStatus

if TYPE_CHECKING:
    from server.influx import InfluxClient


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device's last status message and when it reached us.

    ``retained``: a copy the broker kept, delivered when we subscribed (so
    ``received_at`` says nothing about when it was sent).
    """

    status: DeviceStatus
    received_at: datetime
    retained: bool = False


class DeviceStore:
    name = "devices"

    def __init__(self) -> None:
        self._devices: dict[str, DeviceRecord] = {}
        self._lock = threading.Lock()

    def apply(self, record: DeviceRecord) -> None:
        with self._lock:
            self._devices[record.status.device_id] = record

    def clear(self, device_id: str) -> bool:
        with self._lock:
            return self._devices.pop(device_id, None) is not None

    def all(self) -> dict[str, DeviceRecord]:
        with self._lock:
            return dict(self._devices)

    def camera_states(self) -> dict[str, str]:
        """Each camera's last reported health state (``ok``, ``frozen``, ``black``, ...); offline devices'
        cameras are ``disconnected``."""
        out: dict[str, str] = {}
        with self._lock:
            for record in self._devices.values():
                for cam in record.status.cameras:
                    out[cam.camera_id] = "disconnected" if record.status.state == "offline" else cam.state
        return out

    def missing(self) -> int:
        return 0

    async def load_history(self, client: InfluxClient, site_id: str, window_s: float) -> tuple[int, int]:
        return 0, 0
