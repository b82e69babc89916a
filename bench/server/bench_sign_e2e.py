"""Sensor change to sign event, end to end, under load: MQTT -> server live state -> display -> SSE.

    .venv/bin/python bench/server/bench_sign_e2e.py [--subscribers 1000 --rate 1000 --changes 30]

Real processes as the demo runs them: Mosquitto, InfluxDB, ``district
gateway`` and ``district server`` (Dresden site). A device-like publisher
first reports every bay of the sign's lots (so the sign trusts them), then,
while ``--subscribers`` SSE clients follow ``vms-wilsdruffer`` and an
open-loop generator polls ``GET /v1/displays/vms-wilsdruffer`` at ``--rate``
req/s, flips one bay every ``--gap`` seconds. Each flip is timed from just
before its MQTT publish to each subscriber's receipt of the next event.
Target: p99 <= 1 s. (An edge agent adds its bus poll period, 0.5-1 s, before
the publish; that is the field bus, not this path.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "district" / "sites" / "dresden.yaml"
SIGN = "vms-wilsdruffer"
sys.path[:0] = [str(REPO), str(Path(__file__).parent)]

from bench_displays import _subscriber, deliveries  # noqa: E402
from openloop import open_loop  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--changes", type=int, default=30)
    p.add_argument("--gap", type=float, default=0.5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from contracts import ParkingBayState, SiteConfig, encode, new_reading_id, topics, utcnow
    from contracts.configfile import load_model
    from district.services import free_port, start_influxd, start_mosquitto

    site = load_model(SITE, SiteConfig)
    display = site.display(SIGN)
    assert display is not None
    work = Path(tempfile.mkdtemp(prefix="bench-sign-e2e-"))
    broker = start_mosquitto(work / "mosquitto")
    influx = start_influxd(work / "influxdb")
    port = free_port()
    common = {
        "MQTT_HOST": broker.host,
        "MQTT_PORT": str(broker.port),
        "INFLUX_URL": f"http://{influx.host}:{influx.port}",
        "INFLUX_DB": "district",
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    district = [sys.executable, "-m", "district.cli"]
    logs = work / "logs"
    logs.mkdir()
    procs = [
        subprocess.Popen(
            [*district, "gateway", "--site", str(SITE)],
            env=env
            | {f"DISTRICT_GATEWAY_{k}": v for k, v in common.items()}
            | {"DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(work / "dead.jsonl")},
            stdout=(logs / "gateway.log").open("w"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [*district, "server", "--site", str(SITE), "--port", str(port)],
            env=env
            | {f"DISTRICT_SERVER_{k}": v for k, v in common.items()}
            | {"DISTRICT_SERVER_STATE_DIR": str(work / "server-state")},
            stdout=(logs / "server.log").open("w"),
            stderr=subprocess.STDOUT,
        ),
    ]
    api = f"http://127.0.0.1:{port}"
    result: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{api}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy; see {logs}")
            time.sleep(0.2)

        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sign-pub")
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        lots = [site.lot(lot_id) for lot_id in display.lots]
        state: dict[tuple[str, str], str] = {}

        def send(lot_id: str, bay_id: str, status: str) -> mqtt.MQTTMessageInfo:
            msg = ParkingBayState(
                device_id=f"edge-{lot_id}", observed_at=utcnow(), reading_id=new_reading_id(),
                lot_id=lot_id, bay_id=bay_id, status=status,  # type: ignore[arg-type]
            )  # fmt: skip
            state[(lot_id, bay_id)] = status
            return pub.publish(topics.build("district", site.site.id, msg.device_id, "parking_bay"), encode(msg), qos=1)

        infos = [
            send(lot.id, b, "occupied" if i % 3 else "free") for lot in lots if lot for i, b in enumerate(lot.bay_ids())
        ]
        for info in infos:
            info.wait_for_publish(30)

        def sign() -> dict[str, object]:
            with urllib.request.urlopen(f"{api}/v1/displays/{SIGN}", timeout=5) as r:
                body: dict[str, object] = json.loads(r.read())
                return body

        deadline = time.monotonic() + 60
        while sign().get("state") not in ("open", "low", "full"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sign never showed a number: {sign()}")
            time.sleep(0.2)
        print(f"sign shows {sign()['text']!r} from {len(infos)} bays", flush=True)

        async def run() -> tuple[dict[str, float], dict[str, float]]:
            ready = asyncio.Event()
            counter = [0]
            arrivals: list[list[float]] = []
            tasks = [
                asyncio.create_task(_subscriber(port, ready, counter, args.subscribers, arrivals))
                for _ in range(args.subscribers)
            ]
            await asyncio.wait_for(ready.wait(), 120)
            load = asyncio.create_task(
                open_loop(port, f"/v1/displays/{SIGN}", args.rate, args.changes * args.gap + 2.0)
            )
            sent: list[float] = []
            lot = lots[0]
            assert lot is not None
            for k in range(args.changes):
                await asyncio.sleep(args.gap)
                bay_id = lot.bay_ids()[k]
                t = time.perf_counter()
                send(lot.id, bay_id, "free" if state[(lot.id, bay_id)] == "occupied" else "occupied")
                sent.append(t)
            await asyncio.sleep(2.0)
            ol = (await load).summary()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            e2e = {"subscribers": args.subscribers, "changes": args.changes, **deliveries(arrivals, sent)}
            return e2e, ol

        e2e, ol = asyncio.run(run())
        print(f"sensor change -> SSE event: {json.dumps(e2e)} (target p99 <= 1000 ms)")
        print(f"meanwhile GET at {args.rate:.0f} req/s offered: {json.dumps(ol)}")
        pub.loop_stop()
        result = {"e2e": e2e, "open_loop_meanwhile": ol, "load_avg_at_end": os.getloadavg()[0]}
        print(json.dumps({"load_avg_at_end": result["load_avg_at_end"]}))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        influx.stop()
        broker.stop()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
