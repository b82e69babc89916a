"""A camera in a device file against the site file: ``district check-config site.yaml edge.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from district.check_config import main as check_config

REPO = Path(__file__).resolve().parents[4]
SITE = REPO / "district" / "sites" / "dresden.yaml"
LINES = {
    "L1_road_west_x250": "altmarkt",
    "L2_road_centre_x430": "altmarkt",
    "L3_road_east_x650": "altmarkt",
}


def device(tmp_path: Path, *, device_id: str = "edge-cam-altmarkt", site_id: str = "dresden", **camera: Any) -> Path:
    cam: dict[str, Any] = {
        "id": "cam-altmarkt-north",
        "source": {"path": "/srv/footage.mp4"},
        "lines": [
            {"name": name, "A": [0.1 * i, 0.1], "B": [0.1 * i, 0.9], "in_side_point": [0.0, 0.5], "zone": zone}
            for i, (name, zone) in enumerate(LINES.items(), start=1)
        ],
        **camera,
    }
    doc = {"device": {"id": device_id, "site_id": site_id}, "cameras": [cam]}
    path = tmp_path / f"{device_id}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_camera_that_agrees_with_the_site_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config([str(SITE), str(device(tmp_path))]) == 0, capsys.readouterr().err


def test_a_device_file_alone_is_not_cross_checked(tmp_path: Path) -> None:
    assert check_config([str(device(tmp_path, id="cam-elsewhere"))]) == 0


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"id": "cam-elsewhere"}, "cameras[0]: camera cam-elsewhere: not in the site configuration"),
        (
            {"line_zones": {"L2_road_centre_x430": "prager-strasse"}},
            "cameras[0]: camera cam-altmarkt-north: line 'L2_road_centre_x430' leads into 'prager-strasse',"
            " site says 'altmarkt'",
        ),
        (
            {"device_id": "edge-lockers-altmarkt"},
            "cameras[0]: camera cam-altmarkt-north: the site puts it on device 'edge-cam-altmarkt',"
            " not 'edge-lockers-altmarkt'",
        ),
        ({"device_id": "edge-nowhere"}, "device.id: device 'edge-nowhere' is not in site 'dresden'"),
        ({"site_id": "leipzig"}, "device.site_id: site 'leipzig' is not among the site files given (dresden)"),
    ],
)
def test_disagreements_with_the_site_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kw: dict[str, Any], expected: str
) -> None:
    camera = {k: v for k, v in kw.items() if k not in ("device_id", "site_id")}
    if camera.get("lines", []) is None:
        camera["lines"] = []
    ids = {k: v for k, v in kw.items() if k in ("device_id", "site_id")}
    path = device(tmp_path, **ids, **camera)
    assert check_config([str(SITE), str(path)]) == 1
    out, err = capsys.readouterr()
    assert f"{path}: ok (DeviceConfig)" in out  # valid on its own; the site contradicts it
    assert f"{path}: {expected}" in err


@pytest.mark.parametrize(
    ("camera", "expected"),
    [
        ({"lines_file": "LINES", "lines": []}, "counting lines: "),
        ({"lines_file": "/nonexistent/lines.json", "lines": [], "line_zones": LINES}, "counting lines: "),
        (
            {"engine": {"detector": {"type": "detector", "model_path": "/nonexistent/yolox.onnx"}}},
            "engine.detector.model_path",
        ),
    ],
)
def test_a_device_file_alone_reports_what_would_stop_its_camera(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], camera: dict[str, Any], expected: str
) -> None:
    # A typo in the lines file (found by a new user: check-config said "ok", the camera then crash-looped).
    lines = tmp_path / "lines.json"
    lines.write_text('{"lines": [{"name": "L1_road_west_x250", "A": [0, 0], "B": [1, 1], "in_side_pont": [0, 1]}]}')
    camera = {k: (str(lines) if v == "LINES" else v) for k, v in camera.items()}
    assert check_config([str(device(tmp_path, **camera))]) == 1
    err = capsys.readouterr().err
    assert f"cameras[0]: camera cam-altmarkt-north: {expected}" in err, err
    assert check_config([str(SITE), str(device(tmp_path, **camera))]) == 1  # and with the site, the same
