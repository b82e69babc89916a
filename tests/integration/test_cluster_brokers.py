"""The system, unchanged, on a 3-node clustered broker (district.cluster): RabbitMQ 3.10 with quorum
session queues, and NATS 2.9 JetStream. MQTT 3.1.1, gateway shards instead of ``$share``, a device id
with '.' and ':' in topics, and one node SIGKILLed mid-stream.

Devices start on node A, the gateway's three workers on node B, the server on node C; each client has
all three addresses and moves on after a lost connection. Node B (the gateway's, so the leader of its
session queues on RabbitMQ) dies while readings stream in: every reading a device emitted is confirmed
back to it and stored exactly once, and the server's live state catches up.

No TLS here (district.cluster says why); the Mosquitto tests keep TLS, passwords and ACLs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts import ParkingBayState, topics
from contracts.configfile import load_model
from contracts.site import SiteConfig
from district.cluster import NatsCluster, RabbitCluster
from district.services import BrokerAccess
from server.live import LiveState
from server.settings import ServerSettings
from server.stream import LiveStream
from tests.conftest import Influx, wait_for
from tests.integration.pipeline import DRESDEN, bay_readings, edge_agent, stored_ids

pytestmark = pytest.mark.integration

#: Dresden's bay controllers, one renamed so its id needs encoding in topics (contracts.topics).
DEVICES = {
    "edge.dresden:altmarkt": ("dresdenaltmarkt", "AM"),
    "edge-dresdencitycenter": ("dresdencitycenter", "CC"),
    "edge-dresdenwoehrlflorentinum": ("dresdenwoehrlflorentinum", "WF"),
}


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """One cluster for the session: it takes 20-50 s to form."""
    cluster = RabbitCluster.start(tmp_path_factory.mktemp("rabbitmq"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster.start(tmp_path_factory.mktemp("nats"))
    yield cluster
    cluster.stop()


@pytest.mark.parametrize("engine", ["rabbit_cluster", "nats_cluster"])
def test_node_sigkill_on_a_cluster_loses_no_confirmed_reading(
    engine: str, request: pytest.FixtureRequest, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    cluster: RabbitCluster | NatsCluster = request.getfixturevalue(engine)
    assert topics.build(prefix, "dresden", "edge.dresden:altmarkt", "parking_bay").endswith(
        "/dresden/edge~2Edresden:altmarkt/parking_bay"
    )
    site_file = tmp_path / "site.yaml"
    site_file.write_text(DRESDEN.read_text().replace("edge-dresdenaltmarkt", "edge.dresden:altmarkt"))
    site = load_model(site_file, SiteConfig)
    host = cluster.host
    env = {**os.environ, "DISTRICT_GATEWAY_MQTT_BROKERS": cluster.brokers(first=1),
           "DISTRICT_GATEWAY_MQTT_PROTOCOL": "3.1.1", "DISTRICT_GATEWAY_WORKERS": "3",
           "DISTRICT_GATEWAY_INGEST": "shards", "DISTRICT_GATEWAY_MQTT_CLIENT_ID": f"gw-{prefix}",
           "DISTRICT_GATEWAY_TOPIC_PREFIX": prefix, "DISTRICT_GATEWAY_SITE_CONFIG": str(site_file),
           "DISTRICT_GATEWAY_HISTORY": "false", "DISTRICT_GATEWAY_MQTT_RECONNECT_MAX_S": "2",
           "DISTRICT_GATEWAY_INFLUX_URL": influx_db.url, "DISTRICT_GATEWAY_INFLUX_DB": influx_db.db,
           "DISTRICT_GATEWAY_CONFIRM_INTERVAL_S": "0.05", "DISTRICT_GATEWAY_FLUSH_INTERVAL_S": "0.05",
           "DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(tmp_path / "dead.jsonl")}  # fmt: skip
    env = {k: v for k, v in env.items() if k not in ("DISTRICT_GATEWAY_MQTT_HOST", "DISTRICT_GATEWAY_MQTT_PORT")}
    live = LiveState(site)
    stream = LiveStream(
        ServerSettings.model_validate(
            {
                "mqtt_protocol": "3.1.1",
                "mqtt_brokers": cluster.brokers(first=2),
                "mqtt_client_id": f"srv-{prefix}",
                "topic_prefix": prefix,
                "site_config": site_file,
            }
        ),
        live,
    )
    a = cluster.nodes[0]
    access = BrokerAccess(host, a.mqtt_port)
    brokers = [f"{h}:{p}" for h, p in cluster.mqtt_addresses()]
    agents = {d: edge_agent(d, tmp_path, prefix, access, "3.1.1", brokers=brokers) for d in DEVICES}
    district = str(Path(sys.executable).parent / "district")
    gateway_log = tmp_path / "gateway.log"
    with gateway_log.open("wb") as log_file:
        proc = subprocess.Popen([district, "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    sent: list[str] = []
    last_altmarkt: dict[str, ParkingBayState] = {}
    try:
        stream.start()
        for agent in agents.values():
            agent.start()
        # Round 1: every worker's session exists and works (a reading that reached the cluster before
        # its gateway session existed is dropped by the broker and re-sent by its edge).
        for device, agent in agents.items():
            batch = bay_readings(device, 100, lot=DEVICES[device])
            agent.emit(batch)
            sent += [m.reading_id for m in batch]
        wait_for(lambda: all(ag.outbox.pending == 0 for ag in agents.values()), 90, what="round 1 confirmed")  # type: ignore[union-attr]
        # Round 2: node B, where the gateway's workers are connected, dies mid-stream.
        for device, agent in agents.items():
            batch = bay_readings(device, 1500, start=100, lot=DEVICES[device])
            agent.emit(batch)
            sent += [m.reading_id for m in batch]
            if device == "edge.dresden:altmarkt":
                last_altmarkt = {m.bay_id: m for m in batch}
        first = agents["edge.dresden:altmarkt"]
        wait_for(lambda: first.publisher.stats["confirmed"] >= 400, 60, what="round 2 under way")  # type: ignore[union-attr]
        killed_at = time.monotonic()
        cluster.kill(1)
        # A cluster survives one node (both engines need a majority); this one stays down.
        pending_at_kill = sum(ag.outbox.pending for ag in agents.values())  # type: ignore[union-attr]
        wait_for(lambda: all(ag.outbox.pending == 0 for ag in agents.values()), 180, what="every reading confirmed")  # type: ignore[union-attr]
        drained_s = time.monotonic() - killed_at
        # The server (on node C) shows each Altmarkt bay's latest reading.
        wait_for(
            lambda: all(
                (r := live.bay("dresdenaltmarkt", b)) and r.reading_id == m.reading_id for b, m in last_altmarkt.items()
            ),
            30,
            what="live state of the renamed device's bays",
        )
        resends = sum(ag.publisher.stats["resends"] for ag in agents.values())  # type: ignore[union-attr]
        connects = [ag.publisher.stats["connects"] for ag in agents.values()]  # type: ignore[union-attr]
        print(f"\n{engine} node kill: {pending_at_kill} readings pending at the kill, all confirmed "
              f"{drained_s:.1f} s after it; {resends} edge re-send rounds; edge connects {connects}")  # fmt: skip
        assert pending_at_kill > 0
    finally:
        for agent in agents.values():
            agent.stop()
        stream.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
    err = gateway_log.read_text(errors="replace")
    assert Counter(stored_ids(influx_db)) == Counter(sent)  # every one, exactly once
    assert proc.returncode == 0, err[-3000:]
    # The workers were on node B and moved: each lost its broker and carried on elsewhere.
    assert err.count("lost the broker") >= 3, err[-3000:]
