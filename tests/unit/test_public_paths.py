"""Import paths that tools outside the package rely on (the field reproductions in
../shared/bugcases, deployment scripts) keep working after code moves."""

from __future__ import annotations

import importlib

import pytest

PATHS = [
    ("district.services", "free_port"),
    ("district.services", "start_influxd"),
    ("district.services", "start_mosquitto"),
    ("contracts.site", "BayRange"),
    ("edge.config", "ModbusBayControllerConfig"),
    ("edge.sensors.bay_controller", "BayControllerDriver"),
    ("edge.sensors.modbus", "PymodbusReader"),
    ("edge.sensors.modbus", "SerialSettings"),
]


@pytest.mark.parametrize(("module", "name"), PATHS, ids=[f"{m}.{n}" for m, n in PATHS])
def test_public_import_path(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name)
