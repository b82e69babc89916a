"""A live reading made during a large replay reaches the API ahead of the replay; nothing is lost.

Real Mosquitto (TLS, passwords, ACL), InfluxDB, the gateway (its writer
process), ``district server`` as a process, and an edge agent whose outbox
holds a backlog from an outage. Asserted on order, never on wall-clock time:
when the API first shows the live reading, most of the backlog is still in
the edge's outbox (before ``edge/pacing.py`` the live reading was published
after the whole backlog). Afterwards every reading is stored once, and the
older replay of the same bay, which arrives after the live reading, does not
overwrite it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import ParkingBayState, new_reading_id, utcnow
from contracts.storage import M_PARKING_BAY
from district.services import Service
from edge.agent import EdgeAgent, _stamper
from edge.config import DeviceConfig
from edge.outbox import Outbox
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from tests.conftest import Influx, mqtt_access, wait_for
from tests.integration.test_gateway import DRESDEN, run_gateway  # noqa: F401  (fixture)
from tests.integration.test_server_main import start_server_process

pytestmark = pytest.mark.integration

DEVICE = "edge-dresdenaltmarkt"
LOT = "dresdenaltmarkt"
BACKLOG = 3000
#: Backlog readings a second: the backlog takes about 10 s to publish, the live reading goes first.
RATE = 300.0


def lot(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/parking/lots/{LOT}", timeout=5) as r:
        return dict(json.loads(r.read()))


@pytest.fixture
def server(mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path) -> Iterator[int]:
    proc, port, log = start_server_process(mosquitto, influx_db, prefix, tmp_path)
    try:

        def up() -> bool:
            try:
                return lot(port)["total"] == 400
            except OSError:
                return False

        wait_for(up, 60, what=f"the server answering (log: {log})")
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_live_reading_overtakes_the_replay_and_nothing_is_lost(
    mosquitto: Service,
    influx_db: Influx,
    prefix: str,
    tmp_path: Path,
    server: int,
    run_gateway: Callable[[GatewaySettings], Gateway],  # noqa: F811
) -> None:
    gw = run_gateway(
        GatewaySettings.model_validate(
            {
                **mqtt_access(mosquitto).settings(),
                "mqtt_client_id": f"gw-{prefix}",
                "topic_prefix": prefix,
                "influx_url": influx_db.url,
                "influx_db": influx_db.db,
                "site_config": DRESDEN,
                "history": False,
                "flush_interval_s": 0.05,
            }
        )
    )
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": DEVICE, "site_id": "dresden"},
            "mqtt": mqtt_access(mosquitto).edge_mqtt(
                topic_prefix=prefix, reconnect_min_s=0.1, reconnect_max_s=0.5, replay_rate_per_s=RATE, replay_burst=100
            ),
            "outbox": {"path": str(tmp_path / "outbox.sqlite"), "max_messages": 10 * BACKLOG},
            "status_interval_s": 30,
        }
    )
    agent = EdgeAgent(cfg)
    # The outage: every bay occupied, bay AM-001 too (its oldest reading), all from before the reconnect.
    t0 = utcnow() - timedelta(minutes=2)
    backlog = [
        ParkingBayState(
            device_id=DEVICE,
            observed_at=t0 + timedelta(milliseconds=10 * i),
            reading_id=new_reading_id(),
            lot_id=LOT,
            bay_id=f"AM-{1 + i % 400:03d}",
            status="occupied",
        )
        for i in range(BACKLOG)
    ]
    with Outbox(cfg.outbox.path, cfg.outbox.max_messages) as box:
        box.put_readings([(agent.topic_for("parking_bay"), _stamper(m)) for m in backlog])
    assert lot(server)["free"] == 0

    agent.start()
    try:
        assert agent.publisher is not None and agent.outbox is not None
        assert agent.publisher.connected.wait(30)
        live = ParkingBayState(
            device_id=DEVICE,
            observed_at=utcnow(),
            reading_id=new_reading_id(),
            lot_id=LOT,
            bay_id="AM-001",
            status="free",
        )
        agent.emit([live])
        wait_for(lambda: lot(server)["free"] == 1, 60, interval=0.02, what="the live reading in the API")
        left = agent.outbox.pending
        assert left > BACKLOG // 2, f"the live reading came after the replay ({left} of {BACKLOG} left)"

        wait_for(lambda: agent.outbox is not None and agent.outbox.pending == 0, 120, what="every reading confirmed")
        wait_for(lambda: gw.stats().acked >= BACKLOG + 1, 30, what="the gateway acknowledged all")
        assert influx_db.count(M_PARKING_BAY) == BACKLOG + 1, "each reading stored once, none lost"
        # The replayed AM-001 "occupied" (older, lower seq) arrived after the live "free" and lost to it.
        after = lot(server)
        assert after["free"] == 1 and after["occupied"] == 399
    finally:
        agent.stop()
