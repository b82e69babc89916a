"""The display bridge's configuration: file, flags, and what check-config says about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.configfile import ConfigError, parse_model
from district.check_config import main as check_config
from edge.displays.config import BridgeFile
from edge.displays.main import main as bridge_main
from edge.displays.main import parse_display
from tests.conftest import REPO

GOOD = """\
display_bridge:
  api: {url: "http://127.0.0.1:8000"}
  displays:
    - {display_id: vms-a, port: /dev/ttyUSB0}
    - {display_id: vms-b, port: /dev/ttyUSB0, unit: 2, fallback_text: "---"}
"""


def test_defaults_and_ports() -> None:
    cfg = parse_model(GOOD, BridgeFile).display_bridge
    assert (cfg.write_interval_s, cfg.stale_after_s, cfg.api.poll_interval_s, cfg.api.sse) == (2.0, 60.0, 1.0, True)
    assert [d.display_id for d in cfg.ports()["/dev/ttyUSB0"]] == ["vms-a", "vms-b"]
    assert cfg.serial.settings("/dev/ttyUSB0").baudrate == 19200


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD.replace("unit: 2", "unit: 1"), "unit 1 configured 2 times"),
        (GOOD.replace("vms-b", "vms-a"), "display vms-a configured 2 times"),
        (GOOD.replace('"---"', '"Straße"'), "printable ASCII"),
        (GOOD.replace('"---"', '"' + "x" * 17 + '"'), "at most 16"),
        (GOOD.replace("http://127.0.0.1:8000", "ftp://x"), "api.url"),
        (GOOD.replace("displays:", "displayz:"), "displayz"),
        (GOOD + "  write_interval_s: 0\n", "write_interval_s"),
        (GOOD.replace("vms-a, port", "'../x', port"), "display_id"),
    ],
)
def test_mistakes_are_errors_with_a_location(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_model(text, BridgeFile, source="bridge.yaml")
    assert any(where in line and line.startswith("bridge.yaml:") for line in err.value.errors), err.value.errors


def test_the_example_file_and_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config([str(REPO / "deploy" / "display-bridge.example.yaml")]) == 0
    bad = tmp_path / "bridge.yaml"
    bad.write_text(GOOD.replace("unit: 2", "unit: 300"))
    assert check_config([str(bad)]) == 1
    assert "displays[1].unit" in capsys.readouterr().err


def test_display_flags() -> None:
    assert parse_display("vms=/dev/ttyUSB0") == {"display_id": "vms", "port": "/dev/ttyUSB0"}
    assert parse_display("vms=/tmp/b/vms@3") == {"display_id": "vms", "port": "/tmp/b/vms", "unit": "3"}
    for bad in ("vms", "=/dev/x", "vms="):
        with pytest.raises(ValueError):
            parse_display(bad)


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert bridge_main(["--api", "http://127.0.0.1:1", "--display", "vms=/dev/x@0"]) == 2
    assert "unit" in capsys.readouterr().err
    assert bridge_main(["--api", "http://127.0.0.1:1", "--display", "nonsense"]) == 2
    with pytest.raises(SystemExit):
        bridge_main([])
