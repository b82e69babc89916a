"""Sensor drivers, one module per sensor kind, registered by ``type`` in :data:`DRIVERS`.

The table is explicit: a driver that fails to import fails the agent loudly
instead of being skipped. :func:`build_buses` groups the configured
controllers by serial port (several units may share one RS-485 bus) into one
:class:`~edge.sensors.modbus.ModbusBus` each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from contracts.messages import utcnow
from edge.config import SensorConfig
from edge.sensors.bay_controller import BayControllerDriver
from edge.sensors.locker_controller import LockerControllerDriver
from edge.sensors.modbus import (
    ControllerDriver,
    Emit,
    HealthSink,
    ModbusBus,
    PymodbusReader,
    ReaderFactory,
    SerialSettings,
)

DRIVERS: dict[str, type[ControllerDriver[Any, Any]]] = {
    "modbus_bay_controller": BayControllerDriver,
    "modbus_locker_controller": LockerControllerDriver,
}


def build_buses(
    sensors: Sequence[SensorConfig],
    *,
    device_id: str,
    emit: Emit,
    health: HealthSink,
    stop: threading.Event,
    reader_factory: ReaderFactory = PymodbusReader,
    now: Callable[[], datetime] = utcnow,
) -> list[ModbusBus]:
    by_port: dict[str, list[ControllerDriver[Any, Any]]] = {}
    serial: dict[str, SerialSettings] = {}
    for cfg in sensors:
        driver = DRIVERS[cfg.type](cfg, device_id=device_id, emit=emit, health=health, now=now)
        by_port.setdefault(cfg.port, []).append(driver)
        # Controllers on one port share baudrate/parity/stopbits (DeviceConfig checks);
        # the longest timeout wins.
        prev = serial.get(cfg.port)
        timeout = max(cfg.timeout_s, prev.timeout_s if prev else 0.0)
        serial[cfg.port] = SerialSettings(cfg.port, cfg.baudrate, cfg.parity, cfg.stopbits, timeout)
    return [
        ModbusBus(serial[port], drivers, health=health, stop=stop, reader_factory=reader_factory)
        for port, drivers in by_port.items()
    ]
