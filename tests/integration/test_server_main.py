"""``district server`` as a process: serves, reports health, stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from district.services import Service, free_port
from tests.conftest import Influx, mqtt_access, wait_for

pytestmark = pytest.mark.integration

DISTRICT = str(Path(sys.executable).with_name("district"))
SITE = Path(__file__).resolve().parents[2] / "district" / "sites" / "dresden.yaml"


def start_server_process(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path, site: Path = SITE
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """``district server`` as a child on a free port, its output in ``tmp_path/server.log``: (process, port, log)."""
    port = free_port()
    env = {
        **os.environ,
        **mqtt_access(mosquitto).env("server"),
        "DISTRICT_SERVER_TOPIC_PREFIX": prefix,
        "DISTRICT_SERVER_INFLUX_URL": influx_db.url,
        "DISTRICT_SERVER_INFLUX_DB": influx_db.db,
        "DISTRICT_SERVER_STATE_DIR": str(tmp_path / "state"),
    }
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [DISTRICT, "server", "--site", str(site), "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, port, log


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_district_server_serves_and_stops_cleanly(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path, stop_with: signal.Signals
) -> None:
    proc, port, log = start_server_process(mosquitto, influx_db, prefix, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: status_of(f"{base}/healthz") == 200 or proc.poll() is not None, timeout=30, what="healthz")
        assert proc.poll() is None, log.read_text()
        assert status_of(f"{base}/v1/parking/lots/dresdenaltmarkt") == 200
        assert status_of(f"{base}/v1/parking/lots/nowhere") == 404
        proc.send_signal(stop_with)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "MQTT subscriber stopped" in text
    assert "Traceback" not in text


def test_district_server_rejects_a_bad_site_file(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("site: {id: s, name: S}\nparking:\n  - {id: l, name: L}\n")
    out = subprocess.run([DISTRICT, "server", "--site", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{bad}:3:" in out.stderr and "coords" in out.stderr
