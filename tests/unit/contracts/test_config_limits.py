"""Configuration limits: finite numbers (bugcase 15) and a lot reserve that fits its bays (bugcase 12).

check-config rejects both with FILE:LINE:COL; the services start on such a file
and log each finding as a warning (contracts.configfile, "findings").
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from contracts.configfile import ConfigError, load_model, parse_model
from contracts.site import SiteConfig
from district.check_config import main as check_config
from edge.config import DeviceConfig

SITE_HEAD = "site:\n  id: s\n  name: S\nparking:\n"


def lot_yaml(bays: str, extra: str = "", lot_id: str = "lot1") -> str:
    return f"  - id: {lot_id}\n    name: L\n    coords: {{lat: 51.05, lng: 13.73}}\n    bays: {bays}\n{extra}"


# ------------------------------------------------------------------ finite numbers


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (".inf", "must be a finite number, not inf"),
        (".Inf", "must be a finite number, not inf"),
        ("1.0e+999", "must be a finite number, not inf"),  # YAML float overflowing float64
        ("1e999", "must be a finite number, not inf"),  # a YAML string pydantic reads as a float
        ("inf", "must be a finite number, not inf"),
        ("'Infinity'", "must be a finite number, not inf"),
        ("-.inf", "Input should be greater than 0"),
        (".NaN", "Input should be greater than 0"),
    ],
)
def test_bugcase_15_non_finite_stale_after_s_is_located_and_rejected_by_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: str, message: str
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE_HEAD + lot_yaml("[b1, b2]", f"    stale_after_s: {token}\n"))
    assert check_config([str(path)]) == 1
    out, err = capsys.readouterr()
    assert err == f"{path}:9:20: parking[0].stale_after_s: {message}\n"
    assert out == ""


def test_non_finite_numbers_anywhere_in_the_site_are_findings() -> None:
    text = (
        SITE_HEAD
        + lot_yaml("[b1]", "    stale_after_s: .inf\n")
        + "devices:\n  - {id: d1, kind: camera_node, heartbeat_s: .inf}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_model(text, SiteConfig, source="site.yaml", strict=True)
    assert info.value.errors == [
        "site.yaml:9:20: parking[0].stale_after_s: must be a finite number, not inf",
        "site.yaml:11:46: devices[0].heartbeat_s: must be a finite number, not inf",
    ]
    # NaN fails heartbeat_s > 0 already: a plain validation error, the file cannot be loaded at all.
    with pytest.raises(ConfigError) as plain:
        parse_model(text.replace("heartbeat_s: .inf", "heartbeat_s: .nan"), SiteConfig, source="site.yaml")
    assert plain.value.errors == ["site.yaml:11:46: devices[0].heartbeat_s: Input should be greater than 0"]


@pytest.mark.parametrize(("where", "value"), [("lat", ".nan"), ("lat", ".inf"), ("lng", "-.inf")])
def test_bounded_coordinates_refuse_non_finite_values_outright(where: str, value: str) -> None:
    text = SITE_HEAD + lot_yaml("[b1]").replace(f"{where}: {13.73 if where == 'lng' else 51.05}", f"{where}: {value}")
    with pytest.raises(ConfigError) as info:
        parse_model(text, SiteConfig, source="site.yaml")
    assert any(f"parking[0].coords.{where}" in e for e in info.value.errors)


def test_non_finite_numbers_in_a_device_config_are_rejected_by_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(
        "device:\n  id: edge-1\n  site_id: s\nmqtt:\n  reconnect_max_s: .inf\noutbox:\n  path: /tmp/x.sqlite\n"
        "sensors:\n  - {type: modbus_bay_controller, port: /dev/x, lot_id: l, bays: [a], unknown_after_s: .inf}\n"
    )
    assert check_config([str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:5:20: mqtt.reconnect_max_s: must be a finite number, not inf",
        f"{path}:9:88: sensors[0].unknown_after_s: must be a finite number, not inf",
    ]


def test_services_start_on_findings_and_log_them(caplog: pytest.LogCaptureFixture) -> None:
    text = SITE_HEAD + lot_yaml("[b1, b2]", "    stale_after_s: .inf\n")
    with caplog.at_level(logging.WARNING, logger="contracts.configfile"):
        site = parse_model(text, SiteConfig, source="site.yaml")
    assert site.parking[0].stale_after_s == float("inf")
    assert [r.getMessage() for r in caplog.records] == [
        "site.yaml:9:20: parking[0].stale_after_s: must be a finite number, not inf"
        " (district check-config rejects this)"
    ]


def test_defaults_are_not_findings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = parse_model("device:\n  id: e\n  site_id: s\noutbox:\n  path: /tmp/x.sqlite\n", DeviceConfig, strict=True)
    assert cfg.device.id == "e"
    assert caplog.records == []


# ------------------------------------------------------------------ full_below


@pytest.mark.parametrize(
    ("bays", "full_below"),
    [
        ("[d1]", 5),  # bugcase 12's "tiny"
        ("[d1]", 2),
        ("[c1, c2]", 2),
        ("[c1, c2]", 3),
        ("{prefix: A, count: 10}", 10),
        ("{prefix: A, count: 10}", 400),
        ("[]", 2),
    ],
)
def test_a_reserve_that_does_not_fit_the_lot_is_rejected_with_its_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bays: str, full_below: int
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        SITE_HEAD
        + lot_yaml("[ok1, ok2, ok3]", lot_id="fine")
        + lot_yaml(bays, f"    full_below: {full_below}\n", "tiny")
    )
    assert check_config([str(path)]) == 1
    err = capsys.readouterr().err
    total = 10 if "count" in bays else bays.count(",") + 1 if bays != "[]" else 0
    assert f"{path}:13:17: parking[1].full_below: parking lot tiny: full_below {full_below} " in err
    assert f"less than the lot's {total} bay(s)" in err
    assert "fewer than full_below bays are free" in err  # says what full_below means
    assert err.count("\n") == 1  # the lot that fits is not blamed


@pytest.mark.parametrize(
    ("bays", "full_below"),
    [("[c1, c2]", 1), ("[d1]", 1), ("[]", 1), ("{prefix: A, count: 10}", 9)],
)
def test_a_reserve_that_fits_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bays: str, full_below: int
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE_HEAD + lot_yaml(bays, f"    full_below: {full_below}\n"))
    assert check_config([str(path)]) == 0, capsys.readouterr().err
    assert f"{path}: ok (SiteConfig)" in capsys.readouterr().out


@pytest.mark.parametrize("bays", ["[c1, c2]", "[d1]", "[]", "{prefix: A, count: 10}"])
def test_a_reserve_of_zero_is_rejected_with_its_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bays: str
) -> None:
    # The services treat 0 as 1 (no free bay is always full), but a file that says 0 means
    # "never full", which the lot cannot honour: check-config says so (bugcase 12 family).
    path = tmp_path / "site.yaml"
    path.write_text(SITE_HEAD + lot_yaml(bays, "    full_below: 0\n"))
    assert check_config([str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:9:17: parking[0].full_below: parking lot " in err
    assert "full_below 0 is not a reserve" in err


def test_the_default_reserve_fits_every_lot(tmp_path: Path) -> None:
    for bays in ("[]", "[d1]", "[c1, c2]"):
        path = tmp_path / "site.yaml"
        path.write_text(SITE_HEAD + lot_yaml(bays))
        assert check_config([str(path)]) == 0


def test_bugcase_12_site_loads_for_the_services_but_fails_check_config(tmp_path: Path) -> None:
    text = (
        SITE_HEAD
        + lot_yaml("[c1, c2]", "    full_below: 0\n", "noreserve")
        + lot_yaml("[d1]", "    full_below: 5\n", "tiny")
    )
    site = parse_model(text, SiteConfig)
    assert [(lot.id, lot.reserve()) for lot in site.parking] == [("noreserve", 1), ("tiny", 1)]
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_model(path, SiteConfig, strict=True)
    errors = info.value.errors
    assert len(errors) == 2
    assert "parking lot noreserve: full_below 0" in errors[0] and "parking lot tiny" in errors[1]


@pytest.mark.parametrize(
    ("total", "full_below", "reserve"),
    [(0, 0, 1), (0, 1, 1), (0, 7, 1), (1, 0, 1), (1, 1, 1), (1, 5, 1), (2, 2, 1), (10, 3, 3), (10, 10, 9), (10, 99, 9)],
)
def test_effective_reserve(total: int, full_below: int, reserve: int) -> None:
    lot = SiteConfig.model_validate(
        {
            "site": {"id": "s", "name": "S"},
            "parking": [
                {"id": "l", "name": "L", "coords": {"lat": 1, "lng": 1}, "bays": [f"b{i}" for i in range(total)]}
            ],
        }
    ).parking[0]
    assert lot.model_copy(update={"full_below": full_below}).reserve() == reserve
