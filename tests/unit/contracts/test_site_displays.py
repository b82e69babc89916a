"""Site configuration for guidance: displays (sources, clamps, thresholds, fallback), levels, zones.

check-config rejects a display that contradicts itself (issue 9 item 6); the
reference errors (unknown lot, level, zone) fail validation outright.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.configfile import ConfigError, parse_model
from contracts.site import DISPLAY_STALE_AFTER_S, SiteConfig
from district.check_config import main as check_config

SITE = """\
site: {id: s, name: S}
zones:
  - {id: z1, name: Z1, capacity: 100}
  - {id: z2, name: Z2}
parking:
  - id: lot1
    name: L1
    coords: {lat: 51.05, lng: 13.73}
    bays: {prefix: A, count: 10}
    levels:
      - {id: P1, bays: {prefix: A, count: 4}}
      - {id: P2, bays: [A005, A006]}
  - id: lot2
    name: L2
    coords: {lat: 51.04, lng: 13.73}
    bays: [b1, b2]
displays:
"""


def display(body: str, display_id: str = "d1", kind: str = "parking") -> str:
    return f"  - id: {display_id}\n    kind: {kind}\n    coords: {{lat: 51.05, lng: 13.73}}\n{body}"


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    rc = check_config([str(path)])
    return rc, str(path)


def test_a_sane_display_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SITE + display("    lots: [lot1, lot2]\n    offset: -2\n    low_threshold: 5\n")
    text += display("    levels: [{lot: lot1, level: P2}]\n", "d2", "garage")
    rc, _ = check(tmp_path, text)
    assert rc == 0, capsys.readouterr().err
    site = parse_model(text, SiteConfig)
    d1, d2 = site.displays
    assert site.display_capacity(d1) == 12 and site.display_capacity(d2) == 2
    assert d1.stale_limit_s == DISPLAY_STALE_AFTER_S["parking"] == 300.0
    assert d2.stale_limit_s == DISPLAY_STALE_AFTER_S["garage"] == 120.0
    assert d1.shows == "spaces"


@pytest.mark.parametrize(
    ("body", "line_col", "message"),
    [
        ("    name: nothing\n", "18:5", "display d1: no source"),
        ("    lots: [lot2]\n    low_threshold: 5\n", "22:20", "low_threshold 5 is above the 2 spaces"),
        ("    lots: [lot1]\n    low_threshold: 3\n    full_threshold: 3\n", "22:20", "could never show"),
        ("    lots: [lot1]\n    full_threshold: 10\n", "22:21", "full_threshold 10 is not below the 10 spaces"),
        ("    lots: [lot1]\n    min_value: 50\n    max_value: 40\n", "22:16", "min_value 50 is above max_value 40"),
        ("    lots: [lot1]\n    zones: [z1]\n", "18:5", "sums free spaces (lots, levels) and people (zones)"),
        ("    zones: [z2]\n", "18:5", "zone z2 has no capacity"),
        ("    lots: [lot1]\n    fallback: text\n", "18:5", "fallback 'text' needs a fallback_text"),
    ],
)
def test_a_display_that_contradicts_itself_is_rejected_with_its_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, line_col: str, message: str
) -> None:
    rc, path = check(tmp_path, SITE + display(body))
    assert rc == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith(f"{path}:{line_col}: "), err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    lots: [nope]\n", "display d1: unknown parking lot 'nope'"),
        ("    levels: [{lot: lot1, level: P9}]\n", "parking lot lot1 has no level 'P9'"),
        ("    levels: [{lot: nope, level: P1}]\n", "unknown parking lot 'nope' (levels)"),
        ("    zones: [zz]\n", "unknown zone 'zz'"),
        ("    lots: [lot1]\n    low_text: WAYTOOLONGFORASIGN\n", "at most 16 characters"),
    ],
)
def test_a_display_pointing_nowhere_does_not_validate(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model(SITE + display(body), SiteConfig)
    assert message in "\n".join(info.value.errors)


def test_a_level_with_bays_outside_its_lot_does_not_validate() -> None:
    text = SITE.replace("bays: [A005, A006]", "bays: [A005, X1]") + display("    lots: [lot1]\n")
    with pytest.raises(ConfigError) as info:
        parse_model(text, SiteConfig)
    assert "parking lot lot1 level P2: bay(s) not in the lot: X1" in "\n".join(info.value.errors)


@pytest.mark.parametrize("levels", ["{moderate: 0.5, high: 0.5, very_high: 0.9}", "{moderate: 0.8, high: 0.7}"])
def test_crowd_levels_must_increase(levels: str) -> None:
    text = SITE.replace("capacity: 100}", f"capacity: 100, crowd_levels: {levels}}}") + display("    lots: [lot1]\n")
    with pytest.raises(ConfigError) as info:
        parse_model(text, SiteConfig)
    assert "crowd levels must increase" in "\n".join(info.value.errors)


def test_lot_entrances_default_to_the_lot() -> None:
    site = parse_model(SITE + display("    lots: [lot1]\n"), SiteConfig)
    lot = site.parking[0]
    assert [(c.lat, c.lng) for c in lot.entrance_coords()] == [(51.05, 13.73)]


DEVICE = """\
device: {{id: edge-1, site_id: s}}
mqtt: {{host: localhost}}
outbox: {{path: /tmp/outbox.sqlite}}
sensors:
  - {{type: modbus_bay_controller, port: /dev/ttyUSB0, lot_id: lot1, bays: {{prefix: A, count: 10}}{extra}}}
"""


@pytest.mark.parametrize(
    ("extra", "display_kind", "problem"),
    [
        ("", "garage", None),  # the default 60 s fits a garage sign's 120 s
        (", refresh_interval_s: 61", "garage", "61 s is more than half of display d1's stale limit (120 s)"),
        (", refresh_interval_s: 150", "parking", None),
        (", refresh_interval_s: 301", "parking", "301 s is more than half of display d1's stale limit (300 s)"),
    ],
)
def test_a_sensor_refreshing_slower_than_half_its_stale_limits_fails_against_the_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, display_kind: str, problem: str | None
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE + display("    lots: [lot1]\n", kind=display_kind))
    device = tmp_path / "edge.yaml"
    device.write_text(DEVICE.format(extra=extra))
    rc = check_config([str(site), str(device)])
    err = capsys.readouterr().err
    if problem is None:
        assert rc == 0, err
    else:
        assert rc == 1
        assert f"{device}: sensors[0].refresh_interval_s: {problem}" in err, err
