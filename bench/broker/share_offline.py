"""What Mosquitto does with shared-subscription messages while one member's session is offline.

`.venv/bin/python bench/broker/share_offline.py [-n 1000] [--members 3] [--protocol 5|3.1.1]`

A fresh Mosquitto (the project's test config, plain, loopback). ``--members`` paho clients, each with a
fixed client id and a persistent session (MQTT 5: clean_start=False, session expiry 1 h; 3.1.1:
clean_session=False), subscribe QoS 1 to ``$share/g/bench/#``. Member 1 then loses its connection the way
a SIGKILLed worker does: its socket is closed with no DISCONNECT, so the broker keeps its session. While it
is away, ``-n`` QoS 1 messages are published. Reported: how many each connected member received while
member 1 was away, how many member 1 received when it reconnected with its session (what the broker
queued for the dead member), and the overlap (messages received twice). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.mqtt_session import SessionSpec
from district.services import start_mosquitto

TOPIC = "bench/t"
FILTER = "$share/g/bench/#"


class Member:
    def __init__(self, index: int, protocol: str, host: str, port: int) -> None:
        self.spec = SessionSpec(protocol, f"share-bench-{index}", 3600)  # type: ignore[arg-type]
        self.host, self.port = host, port
        self.got: list[int] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = self._connect()

    def _connect(self) -> mqtt.Client:
        client = self.spec.client()
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self.subscribed.set()
        client.on_connect = lambda c, *a: c.subscribe(self.spec.subscription(FILTER))
        client.connect(self.host, self.port, keepalive=60, **self.spec.connect_kwargs())
        client.loop_start()
        return client

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append(int(msg.payload))

    def crash(self) -> None:
        """Close the socket with no DISCONNECT (as a SIGKILL would); the broker keeps the session."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def reconnect(self) -> None:
        self.subscribed.clear()
        self.client = self._connect()

    def count(self) -> int:
        with self.lock:
            return len(self.got)


def settle(members: list[Member], quiet_s: float = 2.0) -> None:
    """Wait until no member has received anything for ``quiet_s``."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < quiet_s:
        total = sum(m.count() for m in members)
        if total != last:
            last, since = total, time.monotonic()
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_mosquitto(Path(tmp))
        try:
            members = [Member(i + 1, args.protocol, broker.host, broker.port) for i in range(args.members)]
            for m in members:
                assert m.subscribed.wait(10)
            dead = members[0]
            dead.crash()
            time.sleep(1.0)  # the broker notices the closed socket
            pub = SessionSpec(args.protocol, "share-bench-pub", persistent=False).client()  # type: ignore[arg-type]
            pub.connect(broker.host, broker.port)
            pub.loop_start()
            infos = [pub.publish(TOPIC, str(i).encode(), qos=1) for i in range(args.n)]
            for info in infos:
                info.wait_for_publish(30)
            settle(members[1:])
            while_away = {f"member{i + 1}": m.count() for i, m in enumerate(members)}
            dead.got.clear()
            dead.reconnect()
            settle(members)
            queued_for_dead = dead.count()
            seen = [x for m in members for x in m.got]
            result = {
                "protocol": args.protocol,
                "members": args.members,
                "published": args.n,
                "received_while_member1_away": while_away,
                "member1_after_reconnect": queued_for_dead,
                "distinct_received": len(set(seen)),
                "received_twice": len(seen) - len(set(seen)),
                "lost": args.n - len(set(seen)),
            }
            print(json.dumps(result))
            pub.loop_stop()
            pub.disconnect()
            for m in members:
                m.client.loop_stop()
                m.client.disconnect()
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
