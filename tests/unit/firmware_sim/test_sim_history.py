"""The synthetic history generator writes the site's own entities only, and nothing when asked for 0 weeks."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from contracts.configfile import load_model, parse_model
from contracts.history import M_LOT_OCCUPANCY
from contracts.messages import FootfallCount, LineCount
from contracts.site import SiteConfig
from contracts.storage import M_FOOTFALL, to_ns, to_points
from district.demo import DEMO_SITE, Demo
from firmware_sim.demand import fallback_fraction
from firmware_sim.history import STEP, backfill, footfall_point, generate
from scripts.analytics_example import site_data

END = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
#: Nothing listens here: any attempt to write would fail.
NOWHERE = "http://127.0.0.1:9"


def entities(site: SiteConfig, weeks: int = 1, **kw: Any) -> tuple[set[tuple[str, ...]], set[str], int]:
    points = generate(site, END - timedelta(weeks=weeks), END, np.random.default_rng(1), **kw)
    assert {p.measurement for p in points} <= {M_FOOTFALL, M_LOT_OCCUPANCY}
    assert {p.tags["site"] for p in points} == {site.site.id}
    lines = {
        (p.tags["device"], p.tags["camera"], p.tags["line"], p.tags["zone"])
        for p in points
        if p.measurement == M_FOOTFALL
    }
    lots = {p.tags["lot"] for p in points if p.measurement == M_LOT_OCCUPANCY}
    return lines, lots, len(points)


def configured_lines(site: SiteConfig) -> set[tuple[str, ...]]:
    return {(cam.device, cam.id, line.id, line.zone) for cam in site.cameras for line in cam.lines}


def test_the_demo_sites_cameras_lines_and_lots_and_nothing_else() -> None:
    site = load_model(DEMO_SITE, SiteConfig)
    lines, lots, n = entities(site, targets={lot.id: fallback_fraction for lot in site.parking})
    assert lines == configured_lines(site) and len(lines) == 3
    assert lots == {lot.id for lot in site.parking}
    assert n == 7 * 288 * (3 + 5)  # one point per 5 minutes per line and per lot


def test_follows_the_site_it_is_given() -> None:
    """The analytics example's site adds a camera with a street line and a boundary line: they get footfall;
    a site without cameras gets none, and ``lots`` restricts the lots."""
    example = parse_model(yaml.safe_dump(site_data()), SiteConfig)
    lines, lots, _ = entities(example, lots=("dresdenaltmarkt",))
    assert lines == configured_lines(example) and len(lines) == 5
    assert lots == {"dresdenaltmarkt"}
    data = yaml.safe_load(Path(DEMO_SITE).read_text())
    data["cameras"] = []
    for zone in data["zones"]:
        zone.pop("street_line", None)
    lines, lots, _ = entities(parse_model(yaml.safe_dump(data), SiteConfig))
    assert lines == set() and len(lots) == 5


def test_counts_are_plausible() -> None:
    """Entries balance exits over a week (everyone leaves within 40 minutes); lots stay within their bays."""
    site = load_model(DEMO_SITE, SiteConfig)
    points = generate(site, END - timedelta(weeks=1), END, np.random.default_rng(2))
    towards = sum(int(p.fields["towards"]) for p in points if p.measurement == M_FOOTFALL)
    away = sum(int(p.fields["away"]) for p in points if p.measurement == M_FOOTFALL)
    assert towards > 10_000 and 0 <= towards - away < 100
    bays = {lot.id: lot.total for lot in site.parking}
    for p in points:
        if p.measurement == M_LOT_OCCUPANCY:
            assert 0 <= int(p.fields["occupied"]) <= bays[p.tags["lot"]]
            assert int(p.fields["free"]) + int(p.fields["occupied"]) == bays[p.tags["lot"]]
    last = max(p.time_ns for p in points)
    assert last <= int(END.timestamp()) * 10**9 and last > int((END - STEP).timestamp()) * 10**9


def test_footfall_is_stored_as_the_gateway_stores_it() -> None:
    """Same measurement, tags, fields and time as the gateway's own mapping of the camera's message."""
    at = END - STEP
    msg = FootfallCount(
        device_id="edge-cam-altmarkt", observed_at=at + STEP, reading_id=f"history-cam-altmarkt-north-{to_ns(END)}",
        zone_id="altmarkt", camera_id="cam-altmarkt-north", interval_start=at,
        lines=[LineCount(line_id="L1_road_west_x250", towards=7, away=5)],
    )  # fmt: skip
    (gateway,) = to_points(msg, site_id="dresden", received_at=END)
    ours = footfall_point(
        at, site="dresden", device="edge-cam-altmarkt", camera="cam-altmarkt-north", zone="altmarkt",
        line="L1_road_west_x250", towards=7, away=5,
    )  # fmt: skip
    assert ours.measurement == gateway.measurement and ours.tags == gateway.tags and ours.fields == gateway.fields
    assert gateway.time_ns - 999 <= ours.time_ns <= gateway.time_ns  # the gateway adds a tiebreak of 0..999 ns


def test_zero_weeks_writes_nothing(tmp_path: Path) -> None:
    """``--history-weeks 0``: no points, and the database is not even contacted."""
    site = load_model(DEMO_SITE, SiteConfig)
    done = backfill(NOWHERE, "district", site, 0)
    assert (done.weeks, done.points) == (0, 0)
    args = argparse.Namespace(site=DEMO_SITE, workdir=str(tmp_path), history_weeks=0, data_dir=None, seed=None)
    done = Demo(args)._backfill(NOWHERE)
    assert (done.weeks, done.points) == (0, 0)
