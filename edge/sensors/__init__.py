"""Sensor kinds: one module per kind (its config model and driver), registered by ``type`` in :data:`DRIVERS`.

:data:`DRIVERS` is the one table of sensor kinds. It is explicit: a kind is a
line here, not a module found by scanning, and a driver that fails to import
fails the agent loudly instead of being skipped. Everything else is derived
from it: the device file's ``sensors:`` entries are parsed with
:func:`sensor_config_type` (``edge.config.SensorConfig``), and
:func:`build_buses` builds each entry's driver. How to add a kind:
docs/sensor-kinds.md.

:func:`build_buses` groups the configured controllers by serial port (several
units may share one RS-485 bus) into one :class:`~edge.sensors.modbus.ModbusBus`
each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Union, get_args

from pydantic import Field

from contracts.messages import utcnow
from edge.sensors.bay_controller import BayControllerDriver
from edge.sensors.locker_controller import LockerControllerDriver
from edge.sensors.modbus import (
    ControllerDriver,
    Emit,
    HealthSink,
    ModbusBus,
    ModbusControllerConfig,
    PymodbusReader,
    ReaderFactory,
    SerialSettings,
)

__all__ = [
    "DRIVERS",
    "ModbusBus",
    "ModbusControllerConfig",
    "PymodbusReader",
    "ReaderFactory",
    "build_buses",
    "check_table",
    "sensor_config_type",
]

#: The sensor kinds, by the ``type`` key of a ``sensors:`` entry in the device file.
DRIVERS: dict[str, type[ControllerDriver[Any, Any]]] = {
    "modbus_bay_controller": BayControllerDriver,
    "modbus_locker_controller": LockerControllerDriver,
}


def check_table(drivers: Mapping[str, type[ControllerDriver[Any, Any]]]) -> None:
    """Check that every key is exactly its driver's ``config_model.type`` literal.

    Raises ValueError naming the offending entry (a key the config parser would never produce, or two
    kinds claiming one ``type``). Run at import for :data:`DRIVERS`.
    """
    for key, driver in drivers.items():
        literal = get_args(driver.config_model.model_fields["type"].annotation)
        if literal != (key,):
            raise ValueError(f"sensor kind {key!r}: {driver.config_model.__name__}.type is {literal}, not ({key!r},)")


def sensor_config_type(drivers: Mapping[str, type[ControllerDriver[Any, Any]]] | None = None) -> Any:
    """The pydantic type of one ``sensors:`` entry: the union of the kinds' config models, by ``type``.

    ``drivers`` defaults to :data:`DRIVERS`. A ``type`` not in the table is rejected by the
    discriminator ("does not match any of the expected tags").
    """
    models = tuple(d.config_model for d in (DRIVERS if drivers is None else drivers).values())
    union = models[0] if len(models) == 1 else Union[models]  # noqa: UP007 (a union built at runtime)
    return Annotated[union, Field(discriminator="type")]


def build_buses(
    sensors: Sequence[ModbusControllerConfig],
    *,
    device_id: str,
    emit: Emit,
    health: HealthSink,
    stop: threading.Event,
    reader_factory: ReaderFactory = PymodbusReader,
    now: Callable[[], datetime] = utcnow,
    drivers: Mapping[str, type[ControllerDriver[Any, Any]]] | None = None,
) -> list[ModbusBus]:
    """One :class:`ModbusBus` per serial port, with a driver from ``drivers`` (default :data:`DRIVERS`)
    for each configured controller, by its ``type``. Raises KeyError for a ``type`` not in the table."""
    table = DRIVERS if drivers is None else drivers
    by_port: dict[str, list[ControllerDriver[Any, Any]]] = {}
    serial: dict[str, SerialSettings] = {}
    for cfg in sensors:
        driver = table[cfg.type](cfg, device_id=device_id, emit=emit, health=health, now=now)
        by_port.setdefault(cfg.port, []).append(driver)
        # Controllers on one port share baudrate/parity/stopbits (DeviceConfig checks);
        # the longest timeout wins.
        prev = serial.get(cfg.port)
        timeout = max(cfg.timeout_s, prev.timeout_s if prev else 0.0)
        serial[cfg.port] = SerialSettings(cfg.port, cfg.baudrate, cfg.parity, cfg.stopbits, timeout)
    return [
        ModbusBus(serial[port], port_drivers, health=health, stop=stop, reader_factory=reader_factory)
        for port, port_drivers in by_port.items()
    ]


check_table(DRIVERS)
