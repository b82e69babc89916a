"""The city fleet's pure parts: site generation, fault specs, footfall splitting, the ledger's truth ranges."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from contracts.ownership import Ownership
from contracts.site import SiteConfig
from firmware_sim.city.faults import FaultSpec, FaultSpecError, select
from firmware_sim.city.footfall import CameraFootfall, PedestrianProfile
from firmware_sim.city.ledger import Ledger, LedgerReader, free_range
from firmware_sim.city.sitegen import CityShape, city_site, lot_curve_ids

BERLIN = ZoneInfo("Europe/Berlin")


def test_the_default_city_is_issue_13s() -> None:
    site = SiteConfig.model_validate(city_site())
    assert sum(lot.total for lot in site.parking) == 10_000
    assert len(site.lockers) == 500 and sum(len(b.compartment_list()) for b in site.lockers) == 10_000
    assert len(site.cameras) == 50 and len(site.devices) == 600
    # every entity is owned, so the gateway's ownership check is on for all three kinds
    assert set(Ownership.of(site).enforced) == {"bays", "compartments", "footfall"}
    assert set(lot_curve_ids(site).values()) == {
        "dresdencentrumgalerie", "dresdenaltmarkt", "dresdenwoehrlflorentinum", "dresdencitycenter", "dresdenkarstadt",
    }  # fmt: skip


def test_uneven_bays_are_spread_over_lots() -> None:
    site = SiteConfig.model_validate(city_site(CityShape(bays=103, lots=5, banks=0, cameras=0)))
    assert [lot.total for lot in site.parking] == [21, 21, 21, 20, 20]


def test_a_shape_without_bays_is_refused() -> None:
    with pytest.raises(ValueError, match="bay per lot"):
        CityShape(bays=3, lots=5)


def test_fault_specs_parse_and_refuse_clearly() -> None:
    f = FaultSpec.parse("kind=partition,devices=lockers|dev-lot-00*,at=60,for=120")
    assert (f.kind, f.devices, f.at, f.duration) == ("partition", "lockers|dev-lot-00*", 60.0, 120.0)
    for bad, why in [
        ("kind=meteor", "kind must be one of"),
        ("kind=skew,devices=all", "needs s=SECONDS"),
        ("kind=garbage,for=3", "takes no 'for'"),
        ("kind=dropout,colour=red", "unknown key"),
        ("kind=dropout,at", "not key=value"),
        ("kind=dropout,at=soon", "could not convert"),
    ]:
        with pytest.raises(FaultSpecError, match=why):
            FaultSpec.parse(bad)


def test_device_selection_by_group_and_pattern() -> None:
    kinds = {"dev-lot-000": "bay_controller", "dev-bank-000": "locker_controller", "dev-cam-00": "camera_node"}
    assert select("lots", kinds) == ["dev-lot-000"]
    assert select("cameras|dev-bank-*", kinds) == ["dev-bank-000", "dev-cam-00"]
    assert select("all", kinds) == sorted(kinds)
    assert select("nothing-*", kinds) == []


def test_footfall_follows_the_auckland_day_and_splits_over_lines() -> None:
    profile = PedestrianProfile.load(2024, sensors=["45 Queen Street"])
    monday_noon = datetime(2026, 11, 23, 12, 0, tzinfo=BERLIN)
    monday_4am = datetime(2026, 11, 23, 4, 0, tzinfo=BERLIN)
    noon = profile.hourly("45 Queen Street", monday_noon)
    assert noon > 10 * max(1.0, profile.hourly("45 Queen Street", monday_4am))  # a city day, not a flat line
    # the expected count of half an hour is half the hour's
    half = profile.expected("45 Queen Street", monday_noon, monday_noon.replace(minute=30))
    assert half == pytest.approx(noon / 2)
    cam = CameraFootfall("cam", "45 Queen Street", ["a", "b", "c"], profile, np.random.default_rng(1))
    total = 0
    for minute in range(60):
        split = cam.interval(monday_noon.replace(minute=minute), monday_noon.replace(minute=minute, second=59))
        assert [line for line, _, _ in split] == ["a", "b", "c"]
        total += sum(t + a for _, t, a in split)
    assert total == cam.people
    assert abs(total - noon * 59 / 60) < 5 * np.sqrt(noon)  # Poisson around the hourly count


def test_free_range_over_a_window(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    for t, bay, occ in [(0, "b1", 0), (0, "b2", 1), (0, "b3", 0), (10, "b2", 0), (20, "b3", 1)]:
        ledger.bay(t, t, "lot", bay, bool(occ))
    ledger.close()
    reader = LedgerReader(tmp_path / "l.sqlite")
    changes = reader.bay_changes("lot")
    reader.close()
    assert free_range(changes, 1, 5) == (2, 2)  # b1, b3 free; b2 occupied
    assert free_range(changes, 5, 15) == (2, 3)  # b2 frees at 10
    assert free_range(changes, 15, 25) == (2, 3)  # b3 taken at 20
    assert free_range(changes, 25, 30) == (2, 2)
