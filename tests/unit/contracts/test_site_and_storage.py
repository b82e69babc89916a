"""Site configuration validation and the storage mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts import DeviceStatus, FootfallCount, LineCount, ParkingBayState, new_reading_id
from contracts.configfile import ConfigError, load_model, parse_model
from contracts.site import SiteConfig
from contracts.storage import M_FOOTFALL, M_PARKING_BAY, M_ZONE_OCCUPANCY, from_ns, point_ns, to_ns, to_points
from district.check_config import main as check_config
from gateway.influx import line_protocol

REPO = Path(__file__).resolve().parents[3]
DEMO_SITE = REPO / "district" / "sites" / "dresden.yaml"


def test_demo_site_is_valid_and_matches_parkapi_capacities() -> None:
    site = load_model(DEMO_SITE, SiteConfig)
    totals = {lot.id: lot.total for lot in site.parking}
    assert totals == {
        "dresdenaltmarkt": 400,
        "dresdenkarstadt": 265,
        "dresdenwoehrlflorentinum": 264,
        "dresdencitycenter": 350,
        "dresdencentrumgalerie": 1059,
    }
    assert len(site.lockers[0].compartment_list()) == 24


def test_config_errors_carry_file_line_and_path() -> None:
    text = "site:\n  id: s\n  name: S\n  colour: red\nparking:\n  - id: a\n    name: A\n    coords: {lat: 95, lng: 1}\n"
    with pytest.raises(ConfigError) as info:
        parse_model(text, SiteConfig, source="site.yaml")
    errors = info.value.errors
    assert "site.yaml:4:11: site.colour: Extra inputs are not permitted" in errors
    assert any(e.startswith("site.yaml:8:") and "parking[0].coords.lat" in e for e in errors)
    assert any("parking[0].bays" in e and "Field required" in e for e in errors)


def test_cross_references_are_checked() -> None:
    text = """
site: {id: s, name: S}
zones: [{id: z1, name: Z}]
parking:
  - {id: a, name: A, coords: {lat: 1, lng: 1}, bays: [b1, b1], zone: nowhere}
displays:
  - {id: d, kind: parking, coords: {lat: 1, lng: 1}, lots: [a, ghost]}
"""
    with pytest.raises(ConfigError) as info:
        parse_model(text, SiteConfig)
    message = "\n".join(info.value.errors)
    assert "duplicate bay id(s): b1" in message
    assert "unknown zone 'nowhere'" in message
    assert "unknown parking lot 'ghost'" in message


def test_yaml_syntax_errors_are_located() -> None:
    with pytest.raises(ConfigError) as info:
        parse_model("site:\n  id: [unclosed\n", SiteConfig, source="x.yaml")
    assert info.value.errors[0].startswith("x.yaml:")
    assert "not valid YAML" in info.value.errors[0]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config([str(DEMO_SITE)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("site:\n  id: s\n  name: S\n  extra: 1\n")
    assert check_config([str(bad)]) == 1
    assert f"{bad}:4:10: site.extra: Extra inputs are not permitted" in capsys.readouterr().err
    assert check_config([str(tmp_path / "missing.yaml")]) == 1


T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_points_are_keyed_at_nanosecond_precision() -> None:
    """Two readings 1 µs apart must not share an InfluxDB key."""
    a = ParkingBayState(
        device_id="d", observed_at=T0, reading_id=new_reading_id(), lot_id="l", bay_id="b", status="occupied", seq=7
    )
    b = a.model_copy(update={"observed_at": T0 + timedelta(microseconds=1), "reading_id": new_reading_id(), "seq": 8})
    pa, pb = (to_points(m, site_id="s", received_at=T0)[0] for m in (a, b))
    la, lb = line_protocol(pa), line_protocol(pb)
    assert la.startswith(f"{M_PARKING_BAY},bay=b,device=d,lot=l,site=s ")
    # observed_at in ns, plus seq % 1000 in the digits below the microsecond
    assert la.endswith(" 1795435200000000007")
    assert lb.endswith(" 1795435200000001008")
    assert "occupied=1i" in la and 'status="occupied"' in la


def test_same_reading_maps_to_the_same_point() -> None:
    """A replayed reading overwrites itself instead of adding a row."""
    m = ParkingBayState(
        device_id="d", observed_at=T0, reading_id=new_reading_id(), lot_id="l", bay_id="b", status="free"
    )
    first = line_protocol(to_points(m, site_id="s", received_at=T0)[0])
    again = line_protocol(to_points(m, site_id="s", received_at=T0)[0])
    assert first == again


def test_footfall_becomes_one_point_per_line_plus_occupancy() -> None:
    m = FootfallCount(
        device_id="c",
        observed_at=T0,
        reading_id=new_reading_id(),
        zone_id="z",
        interval_start=T0 - timedelta(seconds=60),
        occupancy=4,
        lines=[LineCount(line_id="n", towards=5, away=1), LineCount(line_id="s", towards=0, away=2)],
    )
    points = to_points(m, site_id="s", received_at=T0)
    assert [p.measurement for p in points] == [M_FOOTFALL, M_FOOTFALL, M_ZONE_OCCUPANCY]
    first = line_protocol(points[0])
    assert first.startswith(f"{M_FOOTFALL},device=c,line=n,site=s,zone=z away=1i,interval_s=60,")
    assert "towards=5i" in first
    assert line_protocol(points[1]).startswith("footfall,device=c,line=s,site=s,zone=z away=2i,")
    assert "occupancy=4i" in line_protocol(points[2])


def test_status_strings_with_quotes_are_escaped_by_the_serializer() -> None:
    m = DeviceStatus(
        device_id="d", observed_at=T0, reading_id=new_reading_id(), state="degraded", reason='bus "A" said \\ no'
    )
    line = line_protocol(to_points(m, site_id="s", received_at=T0)[0])
    assert 'reason="bus \\"A\\" said \\\\ no"' in line


def test_same_second_readings_keep_two_points_and_the_later_sorts_later() -> None:
    """Bugcase 08: a whole-second clock stamps a refresh and a change alike; both are kept."""
    free = ParkingBayState(
        device_id="d", observed_at=T0, reading_id="f" * 32, lot_id="l", bay_id="b", status="free", epoch="e1", seq=999
    )
    occupied = free.model_copy(update={"reading_id": "0" * 31 + "1", "status": "occupied", "seq": 1000})
    t_free, t_occ = (point_ns(m) for m in (free, occupied))
    assert t_free != t_occ
    # Without seq the tie-breaker is a hash of the reading id: still two keys.
    a, b = (m.model_copy(update={"seq": None, "epoch": None}) for m in (free, occupied))
    assert point_ns(a) != point_ns(b)
    assert point_ns(a) == point_ns(a.model_copy())  # a replay lands on its own key


def test_live_will_is_stored_when_it_arrived() -> None:
    """Bugcase 01: a will's observed_at is its connect time; the point goes where the broker delivered it."""
    will = DeviceStatus(
        device_id="d", observed_at=T0 - timedelta(days=15), reading_id=new_reading_id(), state="offline"
    )
    live = to_points(will, site_id="s", received_at=T0)[0]
    kept = to_points(will, site_id="s", received_at=T0, retained=True)[0]
    assert line_protocol(live).rsplit(" ", 1)[1].startswith(str(to_ns(T0))[:-3])
    assert line_protocol(kept).rsplit(" ", 1)[1].startswith(str(to_ns(will.observed_at))[:-3])
    assert from_ns(to_ns(T0) + 999) == T0
