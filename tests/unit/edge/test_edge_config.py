"""Device configuration: the example loads, bad files fail with line-located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.configfile import ConfigError, load_model, parse_model
from district import check_config
from edge.config import DeviceConfig
from edge.sensors.bay_controller import ModbusBayControllerConfig
from edge.sensors.locker_controller import ModbusLockerControllerConfig
from tests.conftest import REPO

BASE = """\
device:
  id: edge-1
  site_id: dresden
outbox:
  path: /tmp/x.sqlite
sensors:
"""


def test_example_config_loads() -> None:
    cfg = load_model(REPO / "deploy" / "edge.example.yaml", DeviceConfig)
    bay, locker = cfg.sensors
    assert isinstance(bay, ModbusBayControllerConfig)
    assert bay.point_ids()[:2] == ["AM-001", "AM-002"] and len(bay.point_ids()) == 400
    assert isinstance(locker, ModbusLockerControllerConfig)
    ids = locker.point_ids()
    assert ids[:2] == ["S01", "S02"] and ids[-1] == "L04" and len(ids) == 24
    assert cfg.client_id == "edge-dresden-edge-dresdenaltmarkt"


def test_defaults_and_plain_id_lists() -> None:
    text = BASE + (
        "  - {type: modbus_locker_controller, port: /dev/ttyS0, bank_id: b1, compartments: [A1, {id: A2, size: M}]}\n"
    )
    cfg = parse_model(text, DeviceConfig)
    s = cfg.sensors[0]
    assert s.point_ids() == ["A1", "A2"]
    assert (s.baudrate, s.parity, s.stopbits, s.unit) == (19200, "N", 1, 1)
    assert cfg.mqtt.topic_prefix == "district" and cfg.mqtt.port == 1883
    assert cfg.outbox.max_messages == 100_000


@pytest.mark.parametrize(
    ("sensor_yaml", "expected"),
    [
        ("  - {type: modbus_bay_controller, port: /dev/x, lot_id: l, bays: [a, a]}\n", "duplicate point id(s): a"),
        ("  - {type: modbus_bay_controller, port: /dev/x, lot_id: l, bays: [a], unit: 0}\n", "greater than or equal"),
        ("  - {type: modbus_bay_controller, port: /dev/x, lot_id: l, bays: [a], baudrate: 19201}\n", "baudrate"),
        ("  - {type: modbus_gizmo, port: /dev/x}\n", "modbus_gizmo"),
        (
            "  - {type: modbus_bay_controller, port: /dev/x, lot_id: l, bays: [a], poll_interval_s: 10,"
            " refresh_interval_s: 5}\n",
            "refresh_interval_s must not be shorter",
        ),
        ("  - {type: modbus_bay_controller, port: /dev/x, lot_id: 'bad id', bays: [a]}\n", "lot_id"),
    ],
)
def test_bad_sensor_is_rejected(sensor_yaml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model(BASE + sensor_yaml, DeviceConfig, source="dev.yaml")
    text = "\n".join(info.value.errors)
    assert expected in text
    assert text.startswith("dev.yaml:7:")  # the offending sensor's line


def test_controllers_sharing_a_port_must_agree() -> None:
    text = BASE + (
        "  - {type: modbus_bay_controller, port: /dev/x, unit: 1, lot_id: l, bays: [a]}\n"
        "  - {type: modbus_bay_controller, port: /dev/x, unit: 1, lot_id: l, bays: [a], baudrate: 9600}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_model(text, DeviceConfig)
    msg = "\n".join(info.value.errors)
    assert "same baudrate" in msg
    assert "unit 1 configured 2 times" in msg
    assert "read by more than one controller: l/a" in msg


def test_unknown_keys_are_errors_with_location() -> None:
    text = "device:\n  id: e\n  site_id: s\nmqtt:\n  host: h\n  prot: 1883\ncamera: []\n"
    with pytest.raises(ConfigError) as info:
        parse_model(text, DeviceConfig, source="d.yaml")
    assert "d.yaml:6:9: mqtt.prot: Extra inputs are not permitted" in info.value.errors
    assert any(e.startswith("d.yaml:7:") and "camera: Extra inputs are not permitted" in e for e in info.value.errors)


def test_bad_topic_prefix() -> None:
    with pytest.raises(ConfigError) as info:
        parse_model("device: {id: e, site_id: s}\nmqtt: {topic_prefix: 'a/#'}\n", DeviceConfig)
    assert "bad topic prefix" in info.value.errors[0]


def test_check_config_detects_device_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text((REPO / "deploy" / "edge.example.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text("device:\n  id: e\n  site_id: s\nstatus_interval_s: -1\n")
    assert check_config.main([str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "good.yaml: ok (DeviceConfig)" in out
    assert f"{bad}:4:20: status_interval_s: Input should be greater than 0" in err
