"""Retention policies, continuous queries and rollup rebuilds as statements (gateway/retention.py), on a fake."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from pydantic import ValidationError

from common.influxdb import InfluxError, InfluxUnavailable
from contracts import history as h
from contracts.site import HistoryConfig
from gateway.retention import (
    HistoryMaintainer,
    HistorySetup,
    RetentionPlan,
    backfill_statements,
    cq_name,
    create_cq,
    parse_duration,
    select_into,
    shard_duration,
)
from gateway.settings import GatewaySettings
from gateway.snapshots import LateMarks

NS = 1_000_000_000
HOUR = 3600 * NS


class FakeInflux:
    """Answers SHOW statements from its state, records everything else, fails while ``down``."""

    def __init__(self) -> None:
        self.rps: dict[str, tuple[str, bool]] = {"autogen": ("0s", True)}
        self.cqs: dict[str, str] = {"someone_elses": "CREATE CONTINUOUS QUERY someone_elses ..."}
        self.statements: list[str] = []
        self.down = False
        #: (rp or "", measurement) -> time of the newest point (ns), for SELECT last()/first().
        self.times: dict[tuple[str, str], int] = {}

    def __call__(self, q: str) -> list[dict[str, Any]]:
        if self.down:
            raise InfluxUnavailable("connection refused")
        self.statements.append(q)
        if q.startswith("SHOW RETENTION POLICIES"):
            values = [[n, d, "24h0m0s", 1, default] for n, (d, default) in self.rps.items()]
            return [{"columns": ["name", "duration", "shardGroupDuration", "replicaN", "default"], "values": values}]
        if q.startswith("SHOW CONTINUOUS QUERIES"):
            return [{"name": "db", "columns": ["name", "query"], "values": [[n, t] for n, t in self.cqs.items()]}]
        if m := re.match(r'CREATE RETENTION POLICY "(\w+)" ON "db" DURATION (\d+)d', q):
            self.rps[m[1]] = (f"{int(m[2]) * 24}h0m0s", False)
        elif m := re.match(r'ALTER RETENTION POLICY "(\w+)" ON "db" DURATION (\d+)d', q):
            self.rps[m[1]] = (f"{int(m[2]) * 24}h0m0s", self.rps[m[1]][1])
        elif m := re.match(r'CREATE CONTINUOUS QUERY "(\w+)"', q):
            self.cqs[m[1]] = q
        elif m := re.match(r'DROP CONTINUOUS QUERY "(\w+)"', q):
            del self.cqs[m[1]]
        elif m := re.match(r'SELECT (last|first)\("\w+"\) FROM "db"\.("(\w+)")?\."(\w+)"', q):
            at = self.times.get((m[3] or "", m[4]))
            return [] if at is None else [{"columns": ["time", m[1]], "values": [[at, 1]]}]
        return []

    def ddl(self) -> list[str]:
        return [s for s in self.statements if not s.startswith(("SHOW", "SELECT"))]


def test_the_rollup_statement_is_the_same_text_for_the_continuous_query_and_a_backfill() -> None:
    body = select_into(h.LOT_OCCUPANCY, h.ROLLUP_5M, "db", "autogen")
    assert body == (
        'SELECT sum("free") AS "free_sum", min("free") AS "free_min", max("free") AS "free_max",'
        ' sum("occupied") AS "occupied_sum", min("occupied") AS "occupied_min", max("occupied") AS "occupied_max",'
        ' sum("unknown") AS "unknown_sum", min("unknown") AS "unknown_min", max("unknown") AS "unknown_max",'
        ' count("free") AS "samples", sum("arrivals") AS "arrivals"'
        ' INTO "db"."rollup_5m"."lot_occupancy" FROM "db"."autogen"."lot_occupancy"'
        ' GROUP BY time(5m), "site", "lot"'
    )
    cq = create_cq(h.LOT_OCCUPANCY, h.ROLLUP_5M, "db", "autogen")
    assert cq.endswith(f"RESAMPLE EVERY 5m FOR 900s BEGIN {body} END")
    backfill = backfill_statements(h.LOT_OCCUPANCY, h.ROLLUP_5M, "db", "autogen", 0, HOUR)
    assert backfill == [body.replace(" GROUP BY", f" WHERE time >= 0 AND time < {HOUR} GROUP BY")]
    footfall = select_into(h.FOOTFALL, h.ROLLUP_1H, "db", None)
    assert 'FROM "db".."footfall"' in footfall and 'GROUP BY time(1h), "site", "zone", "camera", "line"' in footfall


def test_backfills_cover_whole_buckets_in_chunks_of_a_day() -> None:
    statements = backfill_statements(h.FOOTFALL, h.ROLLUP_1H, "db", None, HOUR + 5, 49 * HOUR - 5)
    ranges = [tuple(int(x) for x in re.findall(r"time [<>]=? (\d+)", s)) for s in statements]
    assert ranges == [(HOUR, 25 * HOUR), (25 * HOUR, 49 * HOUR)]


def test_a_changed_definition_is_a_new_continuous_query_name() -> None:
    a = cq_name(h.LOT_OCCUPANCY, h.ROLLUP_5M, "db", "autogen")
    assert a == cq_name(h.LOT_OCCUPANCY, h.ROLLUP_5M, "db", "autogen")
    assert a.startswith("district_lot_occupancy_5m_")
    assert a != cq_name(h.LOT_OCCUPANCY, h.ROLLUP_5M, "db", "raw")


def test_durations_and_shards() -> None:
    assert parse_duration("720h0m0s") == 30 * 86_400 and parse_duration("0s") == 0
    assert parse_duration("1h30m0.5s") == 5400.5
    assert [shard_duration(d) for d in (1, 30, 730)] == ["1h", "1d", "7d"]


def test_the_plan_takes_the_site_then_the_gateway_settings() -> None:
    assert RetentionPlan.of("db") == RetentionPlan("db", None, 30, 730, 730)
    site = HistoryConfig(raw_days=14, rollup_days=365, rollup_5m_days=90)
    assert RetentionPlan.of("db", config=site) == RetentionPlan("db", None, 14, 90, 365)
    assert RetentionPlan.of("db", config=site, raw_days=7, rollup_days=100) == RetentionPlan("db", None, 7, 100, 100)


def test_set_up_creates_what_is_missing_alters_what_differs_and_is_idempotent() -> None:
    influx = FakeInflux()
    setup = HistorySetup(influx, RetentionPlan("db"))
    setup.ensure()
    assert setup.raw_rp == "autogen"
    ddl = influx.ddl()
    assert 'ALTER RETENTION POLICY "autogen" ON "db" DURATION 30d REPLICATION 1 SHARD DURATION 1d' in ddl
    assert 'CREATE RETENTION POLICY "rollup_5m" ON "db" DURATION 730d REPLICATION 1 SHARD DURATION 7d' in ddl
    assert sum(s.startswith("CREATE CONTINUOUS QUERY") for s in ddl) == len(h.ROLLUP_SPECS) * len(h.ROLLUPS)
    influx.statements.clear()
    setup.ensure()
    assert influx.ddl() == []  # a second start changes nothing
    # A new definition (here: the raw policy is named) replaces the gateway's queries, never anyone else's.
    influx.rps["raw"] = ("720h0m0s", False)
    HistorySetup(influx, RetentionPlan("db", raw_rp="raw")).ensure()
    assert "someone_elses" in influx.cqs
    assert all('FROM "db"."raw".' in q for n, q in influx.cqs.items() if n.startswith("district_"))
    assert len(influx.cqs) == 1 + len(h.ROLLUP_SPECS) * len(h.ROLLUPS)


@pytest.mark.parametrize(
    ("held", "plan", "altered"),
    [
        ("24h0m0s", RetentionPlan.of("db"), False),  # an operator's finite policy, nothing configured: kept
        ("0s", RetentionPlan.of("db"), True),  # InfluxDB's infinite default (nobody chose): the default 30 d
        ("24h0m0s", RetentionPlan.of("db", raw_days=30), True),  # the gateway setting says 30 d
        ("24h0m0s", RetentionPlan.of("db", config=HistoryConfig(raw_days=30)), True),  # so does the site
    ],
)
def test_an_operators_finite_raw_policy_is_kept_unless_raw_days_is_configured(
    held: str, plan: RetentionPlan, altered: bool
) -> None:
    influx = FakeInflux()
    influx.rps["autogen"] = (held, True)
    HistorySetup(influx, plan).ensure_policies()
    alters = [q for q in influx.ddl() if q.startswith('ALTER RETENTION POLICY "autogen"')]
    assert alters == (
        ['ALTER RETENTION POLICY "autogen" ON "db" DURATION 30d REPLICATION 1 SHARD DURATION 1d'] if altered else []
    )
    assert any(q.startswith('CREATE RETENTION POLICY "rollup_1h"') for q in influx.ddl())  # its own, always


def test_catch_up_rebuilds_from_the_last_rollup_bucket_or_the_oldest_raw_point() -> None:
    influx = FakeInflux()
    now = 1_000 * HOUR
    setup = HistorySetup(influx, RetentionPlan("db"), now_ns=lambda: now)
    setup.ensure()
    influx.statements.clear()
    influx.times[("rollup_5m", "lot_occupancy")] = now - 2 * HOUR
    influx.times[("autogen", "lot_occupancy")] = now - 48 * HOUR
    setup.catch_up()
    into = [s for s in influx.statements if " INTO " in s]

    def span(statements: list[str]) -> tuple[int, int]:
        bounds = [int(x) for s in statements for x in re.findall(r"time [<>]=? (\d+)", s)]
        return min(bounds), max(bounds)

    # The 5-minute rollup from its last bucket minus the resample window, to the last complete 5 minutes.
    five = [s for s in into if '"rollup_5m"."lot_occupancy"' in s]
    assert span(five) == (now - 2 * HOUR - 900 * NS, now)
    # The hourly rollup never built: from the oldest raw point, in day chunks.
    hourly = [s for s in into if '"rollup_1h"."lot_occupancy"' in s]
    assert len(hourly) == 2 and f"time >= {now - 48 * HOUR}" in hourly[0]
    # Measurements without any raw point are skipped.
    assert not any('"footfall"' in s for s in into)


def test_the_maintainer_retries_until_influxdb_answers_and_then_rebuilds_late_buckets() -> None:
    influx = FakeInflux()
    influx.down = True
    late = LateMarks()
    maintainer = HistoryMaintainer(HistorySetup(influx, RetentionPlan("db")), late, retry_initial_s=0.01)
    with pytest.raises(InfluxError):
        maintainer.step()
    assert not maintainer.ready.is_set()
    influx.down = False
    maintainer.step()
    assert maintainer.ready.is_set()
    influx.statements.clear()
    maintainer.step()
    assert influx.statements == []  # nothing late
    late.note(0)
    influx.down = True
    with pytest.raises(InfluxError):
        maintainer.step()
    influx.down = False
    maintainer.step()  # the mark survived the failure
    assert maintainer.backfills > 0 and late.take() is None


def test_the_maintainer_thread_never_dies_of_a_failure() -> None:
    influx = FakeInflux()
    influx.down = True
    maintainer = HistoryMaintainer(HistorySetup(influx, RetentionPlan("db")), retry_initial_s=0.01, retry_max_s=0.02)
    maintainer.start()
    try:
        done = threading.Event()

        def up_after_failures() -> None:
            while maintainer.failures < 3:
                done.wait(0.01)
            influx.down = False

        threading.Thread(target=up_after_failures, daemon=True).start()
        assert maintainer.ready.wait(5)
    finally:
        maintainer.stop()


def test_history_settings_are_checked() -> None:
    assert GatewaySettings(history_snapshot_s=300).history_snapshot_s == 300
    with pytest.raises(ValidationError, match="divide a day"):
        GatewaySettings(history_snapshot_s=7)
    with pytest.raises(ValidationError):
        GatewaySettings(history_raw_days=0)
