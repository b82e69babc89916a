"""A burst reconnect of every device: how late does a live reading arrive behind the replays?

    .venv/bin/python bench/backpressure/run.py [-k 8] [-b 5000] [--rounds 3] [--json out.json]

Real processes on loopback: one InfluxDB 1.x for the run
(``district.services``), and per trial a fresh Mosquitto, a gateway process (``district
gateway``, product defaults, confirmations on) and K edge-agent processes
(this file with ``_edge``): each an ``EdgeAgent`` with no sensors whose
SQLite outbox holds B readings from an outage (over at most an hour, ending
an hour ago). At "go" every edge starts at once (the morning after a power
cut). ``--live-after`` seconds (default 1.0) after its connection is up,
each edge makes one *live* reading (a bay change, ``reading_id``
``live-...``) and notes when (``CLOCK_MONOTONIC``, shared by
all processes). A subscriber in this process, subscribed like the server's
``server/stream.py`` (QoS 1, every reading under the prefix), notes when
each live reading arrives. Lag = arrival - emit, per edge.

Modes, in rotating order within each round:

* ``fifo``: the edge before ``edge/pacing.py``: one cursor from the oldest
  row, unpaced (``FifoPacer`` below is the old ``_pump`` walk, patched in);
* ``first``: live readings first, the backlog unpaced (``replay_rate_per_s: null``);
* ``paced``: the product now: live readings first, the backlog at
  ``mqtt.replay_rate_per_s`` (default 200/s) per device.

Reported per mode (medians over rounds): live-reading lag p50 and max over
the K edges, the time until InfluxDB holds all K*B+K readings (catch-up),
readings not stored when the trial ended (``lost``: 0 unless the trial hit
``--deadline``, when the rest is still in outboxes and queues), and the
ratio fifo/paced of the live lag.
Every child is stopped by its pid at the end, also on error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.runtime import die_with_parent
from contracts import ParkingBayState, new_reading_id, utcnow
from contracts.storage import M_PARKING_BAY
from district import services

log = logging.getLogger("bench.backpressure")
HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
SITE = "district"
MODES = ("fifo", "first", "paced")


class FifoPacer:
    """The publisher's walk before edge/pacing.py: one cursor, oldest row first, no pacing (the reference)."""

    def __init__(self, outbox: Any, **_: Any) -> None:
        self.outbox = outbox
        self._cursor = 0

    def begin(self) -> None:
        self._cursor = 0

    def next(self, room: int) -> list[Any]:
        items = self.outbox.pending_after(self._cursor, room)
        if items:
            self._cursor = items[-1].id
        return list(items)

    def rewind(self, row: int) -> None:
        self._cursor = min(self._cursor, row - 1)


def _say(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def edge_worker(spec: dict[str, Any]) -> int:
    """One device: fill the outbox with the backlog, wait for ``go``, connect, emit one live reading."""
    import edge.mqtt
    from edge.agent import EdgeAgent, _stamper
    from edge.config import DeviceConfig
    from edge.outbox import Outbox

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if spec["mode"] == "fifo":
        edge.mqtt.ReplayPacer = FifoPacer  # type: ignore[misc,assignment]
    if spec["mode"] == "first":
        spec.setdefault("mqtt", {})["replay_rate_per_s"] = None
    device, b = str(spec["device"]), int(spec["b"])
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": device, "site_id": SITE},
            "mqtt": {
                "host": "127.0.0.1",
                "port": spec["port"],
                "topic_prefix": spec["prefix"],
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 1.0,
                **spec.get("mqtt", {}),
            },
            "outbox": {"path": spec["outbox"], "max_messages": 2 * b + 100},
            "status_interval_s": 30,
        }
    )
    agent = EdgeAgent(cfg)
    topic = agent.topic_for("parking_bay")
    t0 = utcnow() - timedelta(hours=2)
    step = min(1.0, 3600.0 / b)  # the backlog spans at most an hour, ending an hour ago (never in the future)
    with Outbox(spec["outbox"], 2 * b + 100, synchronous="normal") as box:
        for start in range(0, b, 1000):
            box.put_readings(
                [
                    (
                        topic,
                        _stamper(
                            ParkingBayState(
                                device_id=device,
                                observed_at=t0 + timedelta(seconds=i * step),
                                reading_id=new_reading_id(),
                                lot_id="lot-1",
                                bay_id=f"B{i % 100:03d}",
                                status="occupied" if i % 2 else "free",
                            )
                        ),
                    )
                    for i in range(start, min(b, start + 1000))
                ]
            )
    commands: queue.Queue[str] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("stop")

    threading.Thread(target=read_stdin, daemon=True).start()
    _say(ev="ready")
    if commands.get(timeout=spec["deadline_s"]) != "go":
        return 0
    agent.start()
    try:
        pub, box2 = agent.publisher, agent.outbox
        assert pub is not None and box2 is not None
        if not pub.connected.wait(60):
            _say(ev="error", what="not connected")
            return 1
        time.sleep(float(spec["live_after_s"]))
        live = ParkingBayState(
            device_id=device,
            observed_at=utcnow(),
            reading_id=f"live-{device}-{uuid.uuid4().hex[:8]}",
            lot_id="lot-1",
            bay_id="LIVE",
            status="occupied",
        )
        emitted = time.monotonic()
        agent.emit([live])
        _say(ev="live", t=emitted, reading_id=live.reading_id, pending=box2.pending)
        deadline = time.monotonic() + spec["deadline_s"]
        while time.monotonic() < deadline and box2.pending:
            try:
                if commands.get(timeout=0.02) == "stop":
                    break
            except queue.Empty:
                pass
        _say(ev="empty", t=time.monotonic(), pending=box2.pending, stats=dict(pub.stats))
        while commands.get() != "stop":
            pass
        return 0
    finally:
        agent.stop()


class Watch:
    """A subscriber like server/stream.py (QoS 1, every reading under the prefix); notes live readings' arrival."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-watch-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(f"{prefix}/v1/{SITE}/+/parking_bay", qos=1)
        self.client.loop_start()

    def _on_message(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        self.count += 1
        if b'"live-' in m.payload:
            # The first arrival: a re-send publishes the same reading again later.
            self.arrived.setdefault(str(json.loads(m.payload)["reading_id"]), now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Children:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], log_path: Path, **kw: Any) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as err:
            proc = subprocess.Popen(
                argv, stderr=err, cwd=ROOT, start_new_session=True, preexec_fn=die_with_parent(), **kw
            )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self.procs = []


def lines(proc: subprocess.Popen[bytes], out: queue.Queue[tuple[int, dict[str, Any]]]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        try:
            out.put((proc.pid, json.loads(raw)))
        except ValueError:
            continue


def stored(url: str, db: str) -> int:
    q = urllib.parse.urlencode({"db": db, "q": f'SELECT count(distinct("reading_id")) FROM "{M_PARKING_BAY}"'})
    try:
        with urllib.request.urlopen(f"{url}/query?{q}", timeout=10) as r:
            series = json.loads(r.read())["results"][0].get("series")
    except OSError:
        return 0
    return int(series[0]["values"][0][1]) if series else 0


def trial(mode: str, args: argparse.Namespace, ix: services.Service, work: Path) -> dict[str, Any]:
    """One trial on a broker of its own: a trial cut off at the deadline leaves thousands of readings queued
    in a dead gateway's session, which every later autosave of a shared broker would rewrite."""
    prefix = f"bp{uuid.uuid4().hex[:8]}"
    db = f"bp{uuid.uuid4().hex[:8]}"
    url = f"http://{ix.host}:{ix.port}"
    tdir = work / f"{mode}-{prefix}"
    tdir.mkdir()
    mq = services.start_mosquitto(tdir / "mosquitto")
    try:
        return _trial(mode, args, mq, url, db, prefix, tdir)
    finally:
        mq.stop()


def _trial(
    mode: str, args: argparse.Namespace, mq: services.Service, url: str, db: str, prefix: str, tdir: Path
) -> dict[str, Any]:
    children = Children()
    events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
    watch = Watch(mq.host, mq.port, prefix)
    try:
        env = {
            **os.environ,
            "DISTRICT_GATEWAY_MQTT_HOST": mq.host,
            "DISTRICT_GATEWAY_MQTT_PORT": str(mq.port),
            "DISTRICT_GATEWAY_MQTT_CLIENT_ID": f"gw-{prefix}",
            "DISTRICT_GATEWAY_TOPIC_PREFIX": prefix,
            "DISTRICT_GATEWAY_INFLUX_URL": url,
            "DISTRICT_GATEWAY_INFLUX_DB": db,
            "DISTRICT_GATEWAY_HISTORY": "false",
        }
        argv = [sys.executable, "-m", "district.cli", "gateway", "--log-level", "WARNING"]
        children.spawn(argv, tdir / "gateway.log", env=env, stdout=subprocess.DEVNULL)
        edges = []
        for i in range(args.k):
            spec = {
                "mode": mode,
                "device": f"dev-{i:03d}",
                "b": args.b,
                "port": mq.port,
                "prefix": prefix,
                "outbox": str(tdir / f"outbox-{i}.sqlite"),
                "deadline_s": args.deadline,
                "live_after_s": args.live_after,
                "mqtt": {"replay_rate_per_s": args.rate} if args.rate and mode == "paced" else {},
            }
            p = children.spawn(
                [sys.executable, str(HERE), "_edge", json.dumps(spec)],
                tdir / f"edge-{i}.log",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            threading.Thread(target=lines, args=(p, events), daemon=True).start()
            edges.append(p)
        ready = 0
        while ready < args.k:
            _, ev = events.get(timeout=120)
            ready += ev["ev"] == "ready"
        time.sleep(1.0)  # the gateway subscribed meanwhile (its session must exist before the flood)
        for p in edges:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        go = time.monotonic()
        live: dict[str, float] = {}
        empty: list[float] = []
        stats: list[dict[str, int]] = []
        deadline = go + args.deadline
        while len(empty) < args.k and time.monotonic() < deadline:
            _, ev = events.get(timeout=args.deadline)
            if ev["ev"] == "live":
                live[ev["reading_id"]] = ev["t"]
            elif ev["ev"] == "empty":
                empty.append(ev["t"])
                stats.append(ev["stats"])
            elif ev["ev"] == "error":
                raise RuntimeError(ev)
        total = args.k * (args.b + 1)
        while stored(url, db) < total and time.monotonic() < deadline:
            time.sleep(0.2)
        stored_at = time.monotonic()
        got = stored(url, db)
        while len(watch.arrived) < len(live) and time.monotonic() < deadline:
            time.sleep(0.05)
        lags = sorted(watch.arrived[r] - t for r, t in live.items() if r in watch.arrived)
        for p in edges:
            assert p.stdin is not None
            p.stdin.write(b"stop\n")
            p.stdin.flush()
        return {
            "mode": mode,
            "live_lag_s": [round(x, 3) for x in lags],
            "live_lag_p50_s": round(statistics.median(lags), 3) if lags else None,
            "live_lag_max_s": round(max(lags), 3) if lags else None,
            "live_seen": len(lags),
            "catch_up_s": round(stored_at - go, 2),
            "outboxes_empty_s": round(max(empty) - go, 2) if empty else None,
            "stored": got,
            # Not stored when the trial ended (at the deadline the rest is still in outboxes or queues).
            "lost": total - got,
            "resends": sum(s.get("resends", 0) for s in stats),
        }
    finally:
        watch.close()
        children.stop_all()


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "_edge":
        return edge_worker(json.loads(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", type=int, default=8, help="devices reconnecting at once")
    ap.add_argument("-b", type=int, default=5000, help="backlog readings per device")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0, help="replay_rate_per_s for paced (0: the product default)")
    ap.add_argument("--deadline", type=float, default=300.0)
    ap.add_argument("--live-after", type=float, default=1.0, help="seconds into the catch-up of the live reading")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-bp-") as tmp:
        work = Path(tmp)
        ix = services.start_influxd(work / "influxd")
        try:
            for r in range(args.rounds):
                for mode in MODES[r % 3 :] + MODES[: r % 3]:
                    res = trial(mode, args, ix, work)
                    res["round"] = r
                    print(json.dumps(res), flush=True)
                    results.append(res)
        finally:
            ix.stop()

    def med(mode: str, key: str) -> float:
        return statistics.median(float(x[key]) for x in results if x["mode"] == mode and x[key] is not None)

    summary = {
        "k": args.k,
        "backlog_per_device": args.b,
        "rounds": args.rounds,
        "load_avg": os.getloadavg(),
        **{
            f"{mode}_{key}": med(mode, key)
            for mode in MODES
            for key in ("live_lag_p50_s", "live_lag_max_s", "catch_up_s", "outboxes_empty_s")
        },
        "lost_total": sum(int(x["lost"]) for x in results),
        "ratio_live_lag_p50_fifo_to_paced": round(med("fifo", "live_lag_p50_s") / med("paced", "live_lag_p50_s"), 1),
        "ratio_live_lag_p50_fifo_to_first": round(med("fifo", "live_lag_p50_s") / med("first", "live_lag_p50_s"), 1),
        "ratio_catch_up_paced_to_fifo": round(med("paced", "catch_up_s") / med("fifo", "catch_up_s"), 2),
        "trials": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
