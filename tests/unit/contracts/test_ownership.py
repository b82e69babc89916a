"""Device ownership of bays, compartments and cameras (contracts/ownership.py, issue 12)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

import contracts
from contracts import FootfallCount, LineCount, LockerCompartmentState, MessageRejected, ParkingBayState, encode
from contracts.configfile import ConfigError, load_model, parse_model
from contracts.messages import new_reading_id, utcnow
from contracts.ownership import NOT_OWNER
from contracts.site import SiteConfig
from district.check_config import main as check_config
from district.demo import DEMO_SITE

SITE = """
site: {id: s, name: S}
zones: [{id: z1, name: Z1}, {id: z2, name: Z2}]
parking:
  - {id: lot-a, name: A, coords: {lat: 1, lng: 1}, bays: [a1, a2]}
  - id: lot-b
    name: B
    coords: {lat: 1, lng: 1}
    bays: [b1, b2, b3]
    levels: [{id: up, bays: [b3]}]
lockers:
  - {id: bank, name: Bank, coords: {lat: 1, lng: 1}, compartments: [{size: S, count: 2}]}
cameras:
  - {id: cam-1, device: cam-node, lines: [{id: l1, zone: z1}]}
devices:
  - {id: dev-a, kind: bay_controller, lots: [lot-a]}
  - {id: dev-b, kind: bay_controller, lots: [lot-b]}
  - {id: dev-up, kind: bay_controller, levels: [{lot: lot-b, level: up}]}
  - {id: dev-lock, kind: locker_controller, lockers: [bank]}
  - {id: cam-node, kind: camera_node}
"""


def _site(text: str = SITE) -> SiteConfig:
    return parse_model(text, SiteConfig)


def _bay(device: str, lot: str, bay: str) -> ParkingBayState:
    return ParkingBayState(device_id=device, observed_at=utcnow(), reading_id=new_reading_id(), lot_id=lot,
                           bay_id=bay, status="free")  # fmt: skip


def _receive(site: SiteConfig, message: ParkingBayState | LockerCompartmentState | FootfallCount) -> None:
    topic = f"p/v1/{site.site.id}/{message.device_id}/{message.kind}"
    contracts.receive(topic, encode(message), prefix="p", site=site)


def _reason(site: SiteConfig, message: ParkingBayState | LockerCompartmentState | FootfallCount) -> str | None:
    try:
        _receive(site, message)
    except MessageRejected as exc:
        return exc.reason
    return None


def test_a_device_reports_only_the_bays_it_owns() -> None:
    site = _site()
    assert _reason(site, _bay("dev-a", "lot-a", "a1")) is None
    assert _reason(site, _bay("dev-a", "lot-b", "b1")) == NOT_OWNER
    assert _reason(site, _bay("dev-b", "lot-a", "a2")) == NOT_OWNER
    # A level's owner reports that level's bays, and the whole lot's owner does too.
    assert _reason(site, _bay("dev-up", "lot-b", "b3")) is None
    assert _reason(site, _bay("dev-b", "lot-b", "b3")) is None
    assert _reason(site, _bay("dev-up", "lot-b", "b1")) == NOT_OWNER
    # A device the site does not list owns nothing; an entity the site lacks is still unknown_entity.
    assert _reason(site, _bay("intruder", "lot-a", "a1")) == NOT_OWNER
    assert _reason(site, _bay("dev-a", "lot-a", "zz")) == "unknown_entity"


def test_the_rejection_names_device_entity_and_owner() -> None:
    with pytest.raises(MessageRejected) as info:
        _receive(_site(), _bay("dev-a", "lot-b", "b1"))
    assert "'dev-a'" in info.value.detail and "'b1'" in info.value.detail and "dev-b" in info.value.detail


def test_compartments_and_cameras_have_owners_too() -> None:
    site = _site()
    now = utcnow()

    def locker(device: str) -> LockerCompartmentState:
        return LockerCompartmentState(device_id=device, observed_at=now, reading_id=new_reading_id(), bank_id="bank",
                                      compartment_id="01", status="free")  # fmt: skip

    def footfall(device: str, camera: str | None, zone: str = "z1") -> FootfallCount:
        return FootfallCount(device_id=device, observed_at=now, reading_id=new_reading_id(), zone_id=zone,
                             camera_id=camera, interval_start=now - timedelta(minutes=1),
                             lines=[LineCount(line_id="l1", towards=1, away=0)])  # fmt: skip

    assert _reason(site, locker("dev-lock")) is None
    assert _reason(site, locker("dev-a")) == NOT_OWNER
    assert _reason(site, footfall("cam-node", "cam-1")) is None
    assert _reason(site, footfall("cam-node", None)) is None
    assert _reason(site, footfall("dev-a", "cam-1")) == NOT_OWNER
    assert _reason(site, footfall("dev-a", None)) == NOT_OWNER
    assert _reason(site, footfall("cam-node", "cam-9")) == NOT_OWNER
    assert _reason(site, footfall("cam-node", "cam-1", zone="z2")) == NOT_OWNER


def test_a_site_that_declares_no_ownership_is_not_checked_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    site = _site(SITE.split("cameras:")[0])
    with caplog.at_level(logging.WARNING, logger="contracts.site"):
        assert site.ownership.enforced == ()
        assert _reason(site, _bay("anyone", "lot-b", "b1")) is None
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "declares no owner for its parking bays" in warned[0] and "locker" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="contracts.site"):
        assert _site().ownership.enforced == ("bays", "compartments", "footfall")
    assert caplog.records == []


def test_ownership_is_enforced_per_kind_once_declared() -> None:
    text = SITE.split("cameras:")[0] + "devices:\n  - {id: dev-a, kind: bay_controller, lots: [lot-a]}\n"
    site = _site(text)
    assert site.ownership.enforced == ("bays",)
    # lot-b is nobody's: refused, and check-config says so.
    assert _reason(site, _bay("dev-a", "lot-b", "b1")) == NOT_OWNER
    findings = [text for _, text in site.config_findings()]
    assert any("parking lot lot-b: no device owns 3 of its bays" in f for f in findings)
    assert not any("lot-a" in f for f in findings)


def test_ownership_references_must_resolve() -> None:
    text = SITE.replace("lots: [lot-a]", "lots: [lot-x]").replace("level: up", "level: down")
    with pytest.raises(ConfigError) as info:
        _site(text.replace("lockers: [bank]", "lockers: [vault]"))
    message = "\n".join(info.value.errors)
    assert "device dev-a: unknown parking lot 'lot-x'" in message
    assert "device dev-up: parking lot lot-b has no level 'down'" in message
    assert "device dev-lock: unknown locker bank 'vault'" in message


def test_the_demo_site_gives_every_lot_and_bank_an_owner() -> None:
    site = load_model(DEMO_SITE, SiteConfig)
    assert site.ownership.enforced == ("bays", "compartments", "footfall")
    assert check_config([str(DEMO_SITE)]) == 0
    assert _reason(site, _bay("edge-dresdenaltmarkt", "dresdenaltmarkt", "AM-001")) is None
    assert _reason(site, _bay("edge-dresdenkarstadt", "dresdenaltmarkt", "AM-001")) == NOT_OWNER
