"""Debian's real Prometheus scrapes the demo's gateway and server and answers queries about real traffic.

Also checks the shipped scrape configuration and the Grafana dashboard's
queries with ``promtool`` (from the same package). In CI (CI=true) a missing
``prometheus`` fails instead of skipping (scripts/setup installs it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from district.services import Service, ServiceError, find_binary, free_port, start_prometheus
from tests.conftest import REPO, SHARED, need


def query(prom: Service, promql: str) -> list[dict[str, Any]]:
    url = f"http://{prom.host}:{prom.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(prom: Service, promql: str) -> float | None:
    """The query's single value, or None while it has none."""
    result = query(prom, promql)
    return float(result[0]["value"][1]) if result else None


def wait_value(prom: Service, promql: str, ok: Any, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    last: float | None = None
    while time.monotonic() < deadline:
        last = scalar(prom, promql)
        if last is not None and ok(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"{promql}: last value {last} after {timeout:.0f} s\n{prom.log_tail()}")


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


@pytest.mark.e2e
def test_prometheus_scrapes_the_demo_and_reads_real_traffic_back(tmp_path: Path) -> None:
    need(
        all(find_binary(b) is not None for b in ("mosquitto", "influxd", "prometheus")),
        "mosquitto, influxdb and prometheus must be installed (scripts/setup installs them)",
    )
    data = SHARED / "data" / "parking" / "parkapi-dresden"
    need(data.is_dir(), f"ParkAPI curves not found at {data}")
    port = free_port()
    workdir = tmp_path / "demo"
    # No camera (--footage nowhere): the bays and lockers make the traffic, and the box stays free for the rest.
    argv = ["demo", "--port", str(port), "--workdir", str(workdir), "--data-dir", str(data), "--speed", "120"]
    argv += ["--seed", "7", "--summary-s", "1000", "--footage", str(tmp_path / "no-footage")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "district.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    prom: Service | None = None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            output.append(raw.decode(errors="replace"))
            if "Logs and data:" in output[-1]:
                break
        else:
            pytest.fail("demo exited before it was up:\n" + "".join(output[-40:]))
        banner = "".join(output)
        found = re.search(r"metrics \(Prometheus\): (http://\S+)/metrics\s+gateway: (http://\S+)/metrics", banner)
        assert found, banner
        server, gateway = (urllib.parse.urlsplit(u).netloc for u in found.groups())
        for target in (server, gateway):
            status, body = get(f"http://{target}/metrics")
            assert status == 200 and b"district_" in body

        try:
            prom = start_prometheus(
                tmp_path / "prometheus", {"district-gateway": [gateway], "district-server": [server]}, interval_s=1
            )
        except ServiceError as exc:
            pytest.fail(str(exc))
        # Both targets up, as Prometheus sees them.
        for job in ("district-gateway", "district-server"):
            wait_value(prom, f'up{{job="{job}"}}', lambda v: v == 1, timeout=30)
        # Real traffic: the fleet's readings went through the gateway into InfluxDB...
        received = wait_value(prom, "district_gateway_messages_received_total", lambda v: v > 0)
        wait_value(prom, "district_gateway_points_written_total", lambda v: v > 0)
        wait_value(prom, "district_gateway_batch_points_count", lambda v: v > 0)
        # ... and into the server's live state; the API's answers are counted by route template.
        bays = wait_value(prom, 'district_live_entities{store="bays"}', lambda v: v > 0)
        assert bays <= 2338
        for _ in range(3):
            assert get(f"http://{server}/v1/parking/lots")[0] == 200
        wait_value(prom, 'sum(district_http_requests_total{route="/v1/parking/lots",status="200"})', lambda v: v >= 3)
        wait_value(prom, "district_broker_connected", lambda v: v == 1)
        # Counters only grow: a later scrape reads at least what an earlier one did.
        assert wait_value(prom, "district_gateway_messages_received_total", lambda v: v >= received) >= received
        # The gateway's own answer agrees with what Prometheus stored (it only grows meanwhile).
        _, text = get(f"http://{gateway}/metrics")
        now = float(re.search(rb"^district_gateway_messages_received_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
        assert now >= received
    finally:
        if prom is not None:
            prom.stop()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_shipped_scrape_config_is_valid() -> None:
    need(find_binary("promtool") is not None, "promtool is not installed (apt-get install prometheus)")
    result = subprocess.run(
        [find_binary("promtool") or "promtool", "check", "config", str(REPO / "deploy" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {j["job_name"] for j in yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs == {"district-gateway", "district-server"}


def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    need(find_binary("promtool") is not None, "promtool is not installed (apt-get install prometheus)")
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"district:panel_query_{n}", "expr": e} for n, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [find_binary("promtool") or "promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
