"""Three gateway workers, one SIGKILLed mid-stream: every reading three edge agents emitted is confirmed
back to its edge and stored exactly once, and the two other workers carry on.

Both ways of splitting the ingest (gateway.workers): ``share`` (an MQTT 5 shared subscription, Mosquitto
only) and ``shards`` (each worker owns the topic filters of some of the site's devices; over MQTT 3.1.1,
as on RabbitMQ or NATS). The broker keeps the killed worker's persistent session, with whatever it
queued for it, until the supervisor has started the worker again (bench/broker/share_offline.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from district.services import Service
from gateway.settings import GatewaySettings
from gateway.workers import plan_shards
from tests.conftest import Influx, mqtt_access, wait_for
from tests.integration.pipeline import BAY_DEVICES, DRESDEN, bay_readings, edge_agent, stored_ids

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")]

KILLED_DEVICE = "edge-dresdenaltmarkt"


def worker_pids(supervisor: int) -> dict[str, int]:
    """Client id -> pid of each worker process of the supervisor (from /proc/PID/environ)."""
    out: dict[str, int] = {}
    for pid in map(int, Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            value = item.split(b"=", 1)[-1].decode()
            # A child that has not exec'd yet still holds the supervisor's environment.
            if item.startswith(b"DISTRICT_GATEWAY_MQTT_CLIENT_ID=") and re.search(r"-w\d+$", value):
                out[value] = pid
    return out


@pytest.mark.parametrize(("ingest", "protocol"), [("share", "5"), ("shards", "3.1.1")])
def test_sigkill_of_one_of_three_workers_loses_nothing(
    ingest: str, protocol: str, mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    access = mqtt_access(mosquitto)
    client_id = f"gw-{prefix}"
    env = {**os.environ, **access.env("gateway"), "DISTRICT_GATEWAY_WORKERS": "3",
           "DISTRICT_GATEWAY_INGEST": ingest, "DISTRICT_GATEWAY_MQTT_PROTOCOL": protocol,
           "DISTRICT_GATEWAY_MQTT_CLIENT_ID": client_id, "DISTRICT_GATEWAY_TOPIC_PREFIX": prefix,
           "DISTRICT_GATEWAY_SITE_CONFIG": str(DRESDEN), "DISTRICT_GATEWAY_HISTORY": "false",
           "DISTRICT_GATEWAY_INFLUX_URL": influx_db.url, "DISTRICT_GATEWAY_INFLUX_DB": influx_db.db,
           "DISTRICT_GATEWAY_CONFIRM_INTERVAL_S": "0.05", "DISTRICT_GATEWAY_FLUSH_INTERVAL_S": "0.05",
           "DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(tmp_path / "dead.jsonl")}  # fmt: skip
    # Which worker owns the device whose readings are in flight when it dies.
    victim = f"{client_id}-w2"
    plan = plan_shards(GatewaySettings(workers=3, ingest="shards", site_config=DRESDEN, topic_prefix=prefix))
    assert plan is not None
    if ingest == "shards":
        owner = [i for i, filters in enumerate(plan, 1) if any(f"/{KILLED_DEVICE}/" in f for f in filters)]
        victim = f"{client_id}-w{owner[0]}"
        # The three devices are spread over the three shards: the others carry on meanwhile.
        assert len({i for d in BAY_DEVICES for i, fs in enumerate(plan) if any(f"/{d}/" in f for f in fs)}) == 3
    district = str(Path(sys.executable).parent / "district")
    proc = subprocess.Popen(
        [district, "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    agents = {d: edge_agent(d, tmp_path, prefix, access, protocol) for d in BAY_DEVICES}
    sent: list[str] = []
    try:
        before = wait_for(lambda: len(w := worker_pids(proc.pid)) == 3 and w, 20, what="three workers")
        for agent in agents.values():
            agent.start()
        # Round 1 (also proves every worker is subscribed): all confirmed.
        for device, agent in agents.items():
            batch = bay_readings(device, 100)
            agent.emit(batch)
            sent += [m.reading_id for m in batch]
        wait_for(lambda: all(a.outbox.pending == 0 for a in agents.values()), 60, what="round 1 confirmed")  # type: ignore[union-attr]
        # Round 2: the victim dies while its readings stream in.
        for device, agent in agents.items():
            batch = bay_readings(device, 1500, start=100)
            agent.emit(batch)
            sent += [m.reading_id for m in batch]
        killed = agents[KILLED_DEVICE]
        wait_for(lambda: killed.publisher.stats["confirmed"] >= 400, 60, what="round 2 under way")  # type: ignore[union-attr]
        os.kill(before[victim], signal.SIGKILL)
        assert killed.outbox.pending > 0  # type: ignore[union-attr]  # it died mid-stream
        wait_for(lambda: all(a.outbox.pending == 0 for a in agents.values()), 120, what="every reading confirmed")  # type: ignore[union-attr]
        after = worker_pids(proc.pid)
        assert after[victim] != before[victim]
        assert {k: v for k, v in after.items() if k != victim} == {k: v for k, v in before.items() if k != victim}
    finally:
        for agent in agents.values():
            agent.stop()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    ids = stored_ids(influx_db)
    assert Counter(ids) == Counter(sent)  # every one, each exactly once
    assert proc.returncode == 0, err
    assert f"worker {victim.rsplit('-w', 1)[1]} exited" in err
