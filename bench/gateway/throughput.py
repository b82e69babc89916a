"""Gateway throughput, end to end through real Mosquitto and InfluxDB 1.x.

    .venv/bin/python bench/gateway/throughput.py [-n 20000] [--autosave N]

Two runs in one process, same broker, same publisher, same N messages:

* reference: a bare paho subscriber (MQTT v5, QoS 1, manual ack right in
  on_message) - the most the broker and paho can move on this box;
* gateway: the real Gateway, timed from the first publish until InfluxDB
  holds all N distinct readings.

``--autosave N`` sets how many changes the broker batches per save of its
persistence file (0: never); each save rewrites the whole queue, so 1 costs
O(backlog) per message.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contracts import ParkingBayState, encode, new_reading_id, topics, utcnow
from district import services
from gateway.service import Gateway
from gateway.settings import GatewaySettings


def payloads(prefix: str, n: int) -> list[tuple[str, bytes]]:
    t0 = utcnow() - timedelta(minutes=5)
    topic = topics.build(prefix, "bench", "bays-1", "parking_bay")
    return [
        (
            topic,
            encode(
                ParkingBayState(
                    device_id="bays-1",
                    observed_at=t0 + timedelta(microseconds=10 * i),
                    reading_id=new_reading_id(),
                    lot_id="lot-1",
                    bay_id=f"B{i % 1000:04d}",
                    status="occupied" if i % 2 else "free",
                )
            ),
        )
        for i in range(n)
    ]


def publish_all(host: str, port: int, messages: list[tuple[str, bytes]]) -> float:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.monotonic_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    start = time.perf_counter()
    infos = [client.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(120)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return elapsed


def reference(mq: services.Service, n: int) -> float:
    prefix = "ref"
    msgs = payloads(prefix, n)
    done = threading.Event()
    count = 0
    first: list[float] = []

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        nonlocal count
        if not first:
            first.append(time.perf_counter())
        c.ack(m.mid, m.qos)
        count += 1
        if count >= n:
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-ref", protocol=mqtt.MQTTv5, manual_ack=True)
    sub.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 10_000
    props.SessionExpiryInterval = 3600
    sub.connect(mq.host, mq.port, clean_start=False, properties=props)
    sub.subscribe(topics.subscription(prefix), qos=1)
    sub.loop_start()
    time.sleep(0.5)  # bench only: let the SUBACK arrive
    start = time.perf_counter()
    threading.Thread(target=publish_all, args=(mq.host, mq.port, msgs), daemon=True).start()
    done.wait(600)
    elapsed = time.perf_counter() - start
    sub.disconnect()
    sub.loop_stop()
    return n / elapsed


def distinct(url: str, db: str) -> int:
    q = urllib.parse.urlencode({"db": db, "q": 'SELECT count(distinct("reading_id")) FROM parking_bay'})
    with urllib.request.urlopen(f"{url}/query?{q}", timeout=10) as r:
        body = json.loads(r.read())
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def gateway_run(mq: services.Service, ix: services.Service, n: int, **over: object) -> tuple[float, int]:
    prefix = "gw"
    url = f"http://{ix.host}:{ix.port}"
    db = f"bench{time.monotonic_ns()}"
    msgs = payloads(prefix, n)
    settings = GatewaySettings.model_validate(
        {
            "mqtt_host": mq.host,
            "mqtt_port": mq.port,
            "mqtt_client_id": f"bench-gw-{db}",
            "topic_prefix": prefix,
            "influx_url": url,
            "influx_db": db,
            **over,
        }
    )
    with Gateway(settings) as gw:
        gw.wait_ready(10)
        start = time.perf_counter()
        threading.Thread(target=publish_all, args=(mq.host, mq.port, msgs), daemon=True).start()
        while distinct(url, db) < n:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        batches = gw.stats().batches
    return n / elapsed, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument(
        "--autosave",
        type=int,
        default=services.AUTOSAVE_CHANGES,
        help="broker saves after this many changes (0: never; default: the project's setting)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        autosave = args.autosave if args.autosave > 0 else None
        mq = services.start_mosquitto(work / "mq", autosave_changes=autosave)
        ix = services.start_influxd(work / "ix")
        try:
            ref = reference(mq, args.n)
            print(f"reference  paho subscriber, manual ack: {ref:8.0f} msg/s  (n={args.n})")
            rate, batches = gateway_run(mq, ix, args.n)
            print(
                f"gateway    MQTT -> validate -> InfluxDB: {rate:8.0f} msg/s  "
                f"({rate / ref:.0%} of reference, {batches} batches)"
            )
        finally:
            mq.stop()
            ix.stop()


if __name__ == "__main__":
    main()
