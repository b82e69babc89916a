"""workers = 2: two intake processes share the ingest; a killed worker is restarted and nothing is lost.

Mosquitto keeps handing a dead member of a shared subscription its share
(queued in its persistent session), so the supervisor must bring the same
worker id back; this test kills one worker while readings arrive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from contracts import encode
from district.services import Service
from tests.conftest import Influx, mqtt_access, wait_for
from tests.integration.test_gateway import Publisher, bay, topic_of

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_two_workers_store_everything_and_a_killed_worker_comes_back(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    publisher = Publisher(mosquitto)
    env = {**os.environ, **mqtt_access(mosquitto).env("gateway"), "DISTRICT_GATEWAY_WORKERS": "2",
           "DISTRICT_GATEWAY_MQTT_CLIENT_ID": f"gw-{prefix}", "DISTRICT_GATEWAY_TOPIC_PREFIX": prefix,
           "DISTRICT_GATEWAY_INFLUX_URL": influx_db.url, "DISTRICT_GATEWAY_INFLUX_DB": influx_db.db,
           "DISTRICT_GATEWAY_SITE_ID": "dresden",
           "DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(tmp_path / "dead.jsonl")}  # fmt: skip
    district = str(Path(sys.executable).parent / "district")
    proc = subprocess.Popen(
        [district, "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        workers = wait_for(lambda: len(_children(proc.pid)) == 2 and _children(proc.pid), 20, what="two workers")
        # Both workers subscribed: each has stored its own retained "online" status.
        wait_for(lambda: influx_db.count("device_status") >= 2, 30, what="both workers online")
        first = [bay(bay_id=f"AM-{i:03d}") for i in range(200)]
        publisher.send_many([(topic_of(prefix, m.device_id, "parking_bay"), encode(m)) for m in first])
        os.kill(workers[0], signal.SIGKILL)
        second = [bay(bay_id=f"AM-{i:03d}") for i in range(200, 400)]
        publisher.send_many([(topic_of(prefix, m.device_id, "parking_bay"), encode(m)) for m in second])
        # Half of `second` went to the dead worker's session: stored only once it is back.
        wait_for(lambda: influx_db.count("parking_bay") == 400, 60, what="all 400 readings stored")
        assert len(_children(proc.pid)) == 2 and workers[0] not in _children(proc.pid)
    finally:
        publisher.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "worker 1 exited" in err
