"""The demo's history backfill on a real InfluxDB: every point written, rolled up completely, and left as the
gateway would have it (its retention plan and continuous queries already in place, its catch-up a no-op)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from contracts.configfile import load_model
from contracts.site import SiteConfig
from district.demo import DEMO_SITE
from district.services import Service
from firmware_sim.history import backfill
from gateway.influx import InfluxWriter
from gateway.retention import HistorySetup, RetentionPlan, rows

pytestmark = pytest.mark.integration


def one(writer: InfluxWriter, q: str) -> dict[str, object]:
    found = rows(writer.execute(q))
    assert len(found) == 1, (q, found)
    return found[0]


def test_backfill_is_stored_history_as_the_gateway_keeps_it(influxd: Service) -> None:
    site = load_model(DEMO_SITE, SiteConfig)
    url, db = f"http://{influxd.host}:{influxd.port}", f"bf_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    done = backfill(url, db, site, 5, seed=3, now=now)
    assert done.points == 5 * 7 * 288 * (3 + 5)
    writer = InfluxWriter(url, db)
    try:
        # Five weeks of raw points went in, though the raw policy now keeps 30 days (written before it was set).
        assert one(writer, "SELECT count(towards) FROM footfall")["count"] == 5 * 7 * 288 * 3
        assert one(writer, "SELECT count(occupied) FROM lot_occupancy")["count"] == 5 * 7 * 288 * 5
        # The rollups hold every complete hour: their sums are the raw sums up to the last whole hour.
        end_h = int(now.timestamp()) // 3600 * 3600 * 10**9
        raw = one(writer, f"SELECT sum(towards), sum(away) FROM footfall WHERE time < {end_h}")
        hourly = one(writer, f'SELECT sum(towards), sum(away) FROM "{db}"."rollup_1h"."footfall"')
        assert (hourly["sum"], hourly["sum_1"]) == (raw["sum"], raw["sum_1"]) and raw["sum"]
        first = one(writer, f'SELECT first(samples) FROM "{db}"."rollup_5m"."lot_occupancy"')
        assert int(str(first["time"])) <= int((now - timedelta(weeks=5)).timestamp()) * 10**9 + 300 * 10**9
        # The gateway's own set-up (same plan as gateway/service.py makes from the site) finds nothing to do.
        setup = HistorySetup(writer.execute, RetentionPlan.of(db, config=site.history))
        policies = {str(r["name"]): r["duration"] for r in rows(writer.execute(f'SHOW RETENTION POLICIES ON "{db}"'))}
        setup.ensure_policies()
        assert setup.ensure_queries() == []
        assert {str(r["name"]): r["duration"] for r in rows(writer.execute(f'SHOW RETENTION POLICIES ON "{db}"'))} == (
            policies
        )
        assert policies["autogen"] == "720h0m0s"
        # Its catch-up starts at the rollups' last bucket: one statement per rolled-up measurement and interval.
        assert setup.catch_up() <= 2 * 2
    finally:
        writer.execute(f'DROP DATABASE "{db}"')
        writer.close()
