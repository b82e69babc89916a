"""The server's /metrics: request metrics by route template, state read on scrape, Prometheus naming."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from server import models
from server.app import create_app
from server.live import LiveState
from server.settings import ServerSettings
from tests.unit.server.test_access import client_for
from tests.unit.server.test_displays_engine import Clock, bays, make_site


class FakeBroker:
    def health(self) -> models.BrokerHealth:
        return models.BrokerHealth(
            connected=True, last_message_age_s=1.5, messages=42, rejected={"bad_json": 2, "unknown_bay": 1}
        )


class FakeDatabase:
    def health(self) -> models.DatabaseHealth:
        return models.DatabaseHealth(reachable=True, last_check_age_s=0.5, bootstrapped=True)


def make_app(tmp_path: Path, clock: Clock, **settings: object) -> tuple[FastAPI, LiveState]:
    live = LiveState(make_site(), clock)
    s = ServerSettings(
        site_config=tmp_path / "unused.yaml",
        state_dir=tmp_path / "state",
        keys_file=tmp_path / "keys",
        **settings,  # type: ignore[arg-type]
    )
    app = create_app(s, site=live.site, live=live, connect=False)
    app.state.runtime.broker = FakeBroker()
    app.state.runtime.database = FakeDatabase()
    return app, live


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def scrape_after_traffic(tmp_path: Path) -> str:
    clock = Clock()
    app, live = make_app(tmp_path, clock)
    bays(live, clock, "ffffoooo")

    async def go() -> str:
        async with client_for(app) as c:
            for _ in range(3):
                assert (await c.get("/v1/parking/lots")).status_code == 200
            assert (await c.get("/v1/parking/lots/nope")).status_code == 404
            assert (await c.get("/v1/displays/audit")).status_code == 401
            r = await c.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            om = await c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            assert om.headers["content-type"].startswith("application/openmetrics-text")
            return r.text

    return asyncio.run(go())


def test_requests_are_counted_by_route_template_and_state_is_read_on_scrape(tmp_path: Path) -> None:
    text = scrape_after_traffic(tmp_path)
    assert value(text, "district_http_requests_total", method="GET", route="/v1/parking/lots", status="200") == 3
    # the template, not the concrete path: ids never become series
    assert value(text, "district_http_requests_total", method="GET", route="/v1/parking/lots/{lot_id}", status="404")
    assert "/v1/parking/lots/nope" not in text
    assert value(text, "district_http_requests_total", method="GET", route="unmatched", status="401") == 1
    assert value(text, "district_http_request_duration_seconds_count", method="GET", route="/v1/parking/lots") == 3
    assert value(text, "district_live_entities", store="bays") == 8
    assert value(text, "district_live_entities_configured", store="bays") == 8
    assert value(text, "district_live_entities", store="lockers") == 0
    assert value(text, "district_live_readings_total", store="bays", outcome="applied") == 8
    assert value(text, "district_broker_connected") == 1 and value(text, "district_database_reachable") == 1
    assert value(text, "district_stream_messages_total") == 42
    assert value(text, "district_stream_rejected_total", reason="bad_json") == 2
    assert value(text, "district_auth_refusals_total", reason="missing_key") == 1
    assert value(text, "district_sse_subscribers") == 0
    assert value(text, "district_display_events_total") >= 3
    assert value(text, "district_server_info", site="s1") == 1


def test_metric_names_follow_prometheus_conventions(tmp_path: Path) -> None:
    text = scrape_after_traffic(tmp_path)
    families = list(text_string_to_metric_families(text))
    ours = [f for f in families if not f.name.startswith(("process_", "python_"))]
    assert len(ours) > 15
    for family in ours:
        assert family.name.startswith("district_"), family.name
        assert not any(unit in family.name for unit in ("_ms", "milli", "_kb", "_mb", "minutes")), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            if family.type == "gauge":
                assert not sample.name.endswith("_total"), sample.name
    # nothing that looks like a key, a setting or a payload
    assert "X-API-Key" not in text and "password" not in text.lower()


def test_metrics_can_be_made_to_need_a_role(tmp_path: Path) -> None:
    from server.keys import add_key

    key = add_key(tmp_path / "keys", "prometheus", "operator")
    app, _ = make_app(tmp_path, Clock(), access="/metrics=operator")

    async def go() -> None:
        async with client_for(app) as c:
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/metrics", headers={"Authorization": f"Bearer {key}"})).status_code == 200

    asyncio.run(go())


@pytest.fixture
def exposed_names(tmp_path: Path) -> set[str]:
    """Every sample name the server and the gateway expose (histograms and counters with their suffixes)."""
    from gateway.metrics import GatewayMetrics
    from gateway.pipeline import Stats

    stats = Stats()
    stats.count_received("bad_json")
    gw = GatewayMetrics(
        client_id="gw",
        site_id="s1",
        stats=lambda: stats.snapshot(3),
        queue_bound=100,
        confirmations=lambda: 5,
        connected=lambda: True,
    )
    gw.observe_batch(10, 0.01, 0.2)
    names: set[str] = set()
    from prometheus_client import generate_latest

    for text in (scrape_after_traffic(tmp_path), generate_latest(gw.registry).decode()):
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            names.update(s.name for s in family.samples)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_the_grafana_dashboard_is_json_and_reads_only_metrics_that_exist(exposed_names: set[str]) -> None:
    import json
    import re

    dashboard = json.loads((Path(__file__).resolve().parents[3] / "deploy" / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = {m for e in exprs for m in re.findall(r"\bdistrict_[a-z_]+\b", e)}
    assert used, "the dashboard reads no district_ metric"
    assert used <= exposed_names, sorted(used - exposed_names)
    assert {"district_gateway_messages_received_total", "district_http_request_duration_seconds_bucket"} <= used
    assert len({p["id"] for p in panels}) == len(panels)
