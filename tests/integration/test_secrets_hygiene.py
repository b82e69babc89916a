"""Secrets hygiene with the real processes (issue 12): no broker or database secret in a log, an error,
``/healthz``, ``/metrics``, the dead-letter file, or any process's command line, while the gateway,
the server and an edge agent run with their credentials and meet refusals and rejected messages."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from contracts import ParkingBayState, encode, new_reading_id, topics, utcnow
from district.provision import ADMIN
from district.services import BrokerAccess, Service, free_port
from tests.conftest import Influx, mqtt_access, wait_for
from tests.integration.test_server_main import SITE, status_of

pytestmark = pytest.mark.integration

DISTRICT = str(Path(sys.executable).with_name("district"))


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def test_no_secret_reaches_a_log_an_answer_a_dead_letter_or_the_process_list(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    access = mqtt_access(mosquitto)
    broker_password = mqtt_access(mosquitto).security().password
    assert broker_password
    influx_secret = f"influx-{secrets.token_urlsafe(16)}"  # InfluxDB 1.x without auth ignores it
    wrong = tmp_path / "wrong.pw"
    wrong_secret = f"wrong-{secrets.token_urlsafe(16)}"
    wrong.write_text(wrong_secret + "\n")
    wrong.chmod(0o600)
    dead = tmp_path / "dead.jsonl"
    metrics_port, api_port = free_port(), free_port()
    common = {"TOPIC_PREFIX": prefix, "INFLUX_URL": influx_db.url, "INFLUX_DB": influx_db.db,
              "INFLUX_USERNAME": "district", "INFLUX_PASSWORD": influx_secret}  # fmt: skip
    gateway_env = {
        **os.environ,
        **access.env("gateway"),
        **{f"DISTRICT_GATEWAY_{k}": v for k, v in common.items()},
        "DISTRICT_GATEWAY_MQTT_CLIENT_ID": f"gw-{prefix}",
        "DISTRICT_GATEWAY_SITE_CONFIG": str(SITE),
        "DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(dead),
        "DISTRICT_GATEWAY_METRICS_PORT": str(metrics_port),
        "DISTRICT_GATEWAY_HISTORY": "false",
    }
    server_env = {
        **os.environ,
        **access.env("server"),
        **{f"DISTRICT_SERVER_{k}": v for k, v in common.items()},
        "DISTRICT_SERVER_STATE_DIR": str(tmp_path / "state"),
    }
    # An edge whose password the broker refuses: what it logs about the refusal must not carry it.
    edge_cfg = tmp_path / "edge.yaml"
    edge_cfg.write_text(
        yaml.safe_dump(
            {
                "device": {"id": "edge-dresdenaltmarkt", "site_id": "dresden"},
                "mqtt": BrokerAccess(**{**vars(access), "password_file": wrong}).edge_mqtt(
                    topic_prefix=prefix, reconnect_min_s=0.2, reconnect_max_s=0.5
                ),
                "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            }
        )
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("gateway", "server", "edge")}
    argvs = {
        "gateway": [DISTRICT, "gateway", "--log-level", "DEBUG"],
        "server": [DISTRICT, "server", "--site", str(SITE), "--port", str(api_port), "--log-level", "DEBUG"],
        "edge": [DISTRICT, "edge", "--config", str(edge_cfg), "--log-level", "DEBUG"],
    }
    envs = {"gateway": gateway_env, "server": server_env, "edge": dict(os.environ)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in argvs.items():
            with open(logs[name], "wb") as out:
                procs[name] = subprocess.Popen(argv, env=envs[name], stdout=out, stderr=subprocess.STDOUT)
        api = f"http://127.0.0.1:{api_port}"
        wait_for(lambda: status_of(f"{api}/healthz") == 200, 30, what="the server healthy")
        wait_for(lambda: "connected" in logs["gateway"].read_text(), 30, what="the gateway connected")
        wait_for(lambda: logs["edge"].read_text().count("Not authorized") >= 2, 30, what="the edge refused twice")

        # Rejected messages end in the dead-letter file; a good one is stored.
        pub = access.client(f"pub-{prefix}")
        pub.connect(access.host, access.port)
        pub.loop_start()
        topic = topics.build(prefix, "dresden", "edge-dresdenaltmarkt", "parking_bay")
        good = ParkingBayState(device_id="edge-dresdenaltmarkt", observed_at=utcnow(), reading_id=new_reading_id(),
                               lot_id="dresdenaltmarkt", bay_id="AM-001", status="free")  # fmt: skip
        stray = good.model_copy(update={"lot_id": "dresdenkarstadt", "bay_id": "KA-001"})
        for payload in (b"not json", encode(stray), encode(good)):
            pub.publish(topic, payload, qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        wait_for(lambda: influx_db.count("parking_bay") == 1, 20, what="the good reading stored")
        wait_for(lambda: dead.exists() and len(dead.read_text().splitlines()) == 2, 10, what="two dead letters")
        assert {json.loads(line)["reason"] for line in dead.read_text().splitlines()} == {"not_json", "not_owner"}

        answers = {
            "/healthz": _get(f"{api}/healthz"),
            "server /metrics": _get(f"{api}/metrics"),
            "gateway /metrics": _get(f"http://127.0.0.1:{metrics_port}/metrics"),
        }
        cmdlines = {name: _cmdline(p.pid) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
    places = {
        **{f"{name} log": path.read_text(errors="replace") for name, path in logs.items()},
        **answers,
        **{f"{name} command line": text for name, text in cmdlines.items()},
        "dead-letter file": dead.read_text(),
    }
    assert "TLS (CA" in places["gateway log"] and "user district-admin" in places["gateway log"]
    for secret in (broker_password, influx_secret, wrong_secret):
        leaks = [where for where, text in places.items() if secret in text]
        assert leaks == [], f"a secret appears in: {', '.join(leaks)}"
    assert ADMIN in places["gateway log"]  # the username may be named; the password never
