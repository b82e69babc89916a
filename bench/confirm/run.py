"""What end-to-end confirmation costs: ingest throughput with and without it.

    .venv/bin/python bench/confirm/run.py [-n 20000] [-k 4] [--pairs 3] [--batch 100]

Real processes on loopback: one Mosquitto and one InfluxDB 1.x for the whole
run (district.services, same broker config throughout), and per trial a
gateway process (``district gateway``, DISTRICT_GATEWAY_* environment) and K
edge-agent processes (this file with ``_edge``), each with its own SQLite
outbox, driven through ``EdgeAgent.emit`` in batches.

Modes, compared on the same messages (N readings, N/K per device):

* A  ``mqtt.delivery: broker`` + gateway ``confirm=False`` (outbox row deleted at PUBACK);
* B  ``mqtt.delivery: stored`` + gateway ``confirm=True`` (deleted on the gateway's confirmation).

Scenarios:

* live: gateway up; from the first ``emit`` until InfluxDB holds all N
  distinct readings (``stored``), and until every outbox is empty (``empty``);
* backlog: the gateway's session exists but the gateway is stopped; the
  edges emit all N and the broker acknowledges them all; then the gateway is
  started and timed from its ``online`` status (its connection) until
  InfluxDB holds all N, and (B only: in A the outboxes emptied at PUBACK)
  until every outbox is empty.

Trials alternate A/B (live A, live B, backlog A, backlog B per pair); every
trial gets a fresh topic prefix, database, gateway client id and outboxes.
Medians over the pairs and the ratio B/A are printed as a markdown table.
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
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from common.runtime import die_with_parent
from contracts import ParkingBayState, new_reading_id, topics, utcnow
from contracts.storage import M_PARKING_BAY
from district import services

log = logging.getLogger("bench.confirm")

SITE = "district"
HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
MODES: dict[str, dict[str, Any]] = {
    "A": {"delivery": "broker", "confirm": False},
    "B": {"delivery": "stored", "confirm": True},
}
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


# ---------------------------------------------------------------------------------------------
# edge worker (a child process): one EdgeAgent with no sensors, driven over stdin/stdout
# ---------------------------------------------------------------------------------------------


def _say(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def edge_worker(spec: dict[str, Any]) -> int:
    """Commands on stdin: ``go`` (emit every reading), ``stop``. Events on stdout, one JSON a line."""
    from edge.agent import EdgeAgent
    from edge.config import DeviceConfig

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    n, batch, device = int(spec["n"]), int(spec["batch"]), str(spec["device"])
    mqtt_cfg: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": spec["port"],
        "topic_prefix": spec["prefix"],
        "delivery": spec["delivery"],
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 1.0,
        **spec.get("mqtt", {}),
    }
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": device, "site_id": SITE},
            "mqtt": mqtt_cfg,
            "outbox": {"path": spec["outbox"], "max_messages": max(100_000, 2 * n)},
            "status_interval_s": 30,
        }
    )
    t0 = utcnow() - timedelta(minutes=5)
    readings = [
        ParkingBayState(
            device_id=device,
            observed_at=t0 + timedelta(microseconds=10 * i),
            reading_id=new_reading_id(),
            lot_id="lot-1",
            bay_id=f"B{i % 1000:04d}",
            status="occupied" if i % 2 else "free",
        )
        for i in range(n)
    ]
    commands: queue.Queue[str] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("stop")  # parent gone

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    agent = EdgeAgent(cfg)
    agent.start()
    try:
        pub, box = agent.publisher, agent.outbox
        assert pub is not None and box is not None
        if not pub.connected.wait(READY_TIMEOUT_S):
            _say(ev="error", what="not connected")
            return 1
        _say(ev="ready")
        if commands.get(timeout=spec["deadline_s"]) != "go":
            return 0
        first = time.monotonic()
        for i in range(0, n, batch):
            agent.emit(readings[i : i + batch])
        _say(ev="emitted", first=first, last=time.monotonic())
        deadline = time.monotonic() + spec["deadline_s"]
        acked_seen = empty_seen = False
        while time.monotonic() < deadline:
            if not acked_seen and pub.stats["broker_acked"] >= n:
                acked_seen = True
                _say(ev="broker_acked", t=time.monotonic())
            if not empty_seen and box.pending == 0:
                empty_seen = True
                _say(ev="empty", t=time.monotonic())
            try:
                cmd = commands.get(timeout=0.005)
            except queue.Empty:
                continue
            if cmd == "stop":
                break
        _say(ev="stats", stats=dict(pub.stats), pending=box.pending, emit_errors=agent.emit_errors)
        return 0
    finally:
        agent.stop()


# ---------------------------------------------------------------------------------------------
# orchestrator
# ---------------------------------------------------------------------------------------------


class Children:
    """Every process this run started; stop_all() stops them by pid (TERM, then KILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], *, env: dict[str, str] | None = None, log_path: Path, **kw: Any) -> Any:
        with open(log_path, "ab") as err:
            proc = subprocess.Popen(
                argv,
                env=env,
                stderr=err,
                cwd=ROOT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
                **kw,
            )
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("pid %d ignored SIGTERM; killing", proc.pid)
                proc.kill()
                proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            try:
                self.stop(proc, 10)
            except Exception:
                log.exception("could not stop pid %d", proc.pid)
        self.procs = [p for p in self.procs if p.poll() is None]


class Edge:
    """One edge-agent process and the events it reported."""

    def __init__(self, children: Children, spec: dict[str, Any], log_path: Path) -> None:
        argv = [sys.executable, str(HERE), "_edge", json.dumps(spec)]
        self.proc = children.spawn(argv, log_path=log_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.events: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events[ev["ev"]] = ev
                self._cond.notify_all()

    def wait(self, name: str, deadline: float) -> dict[str, Any]:
        with self._cond:
            while name not in self.events:
                if "error" in self.events or self.proc.poll() is not None:
                    raise RuntimeError(f"edge pid {self.proc.pid} failed before {name!r}: {self.events}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"edge pid {self.proc.pid}: no {name!r} in time")
                self._cond.wait(min(left, 0.5))
            return self.events[name]

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()


class StatusWatch:
    """Records when the gateway's retained status says online/offline, and when confirmations pass by."""

    def __init__(self, host: str, port: int, prefix: str, gateway_id: str) -> None:
        self.seen: list[tuple[float, str]] = []
        self._status_topic = topics.status_topic(prefix, SITE, gateway_id)
        #: device -> when the latest confirmation for it passed through the broker (monotonic).
        self.last_confirm: dict[str, float] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-watch-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe([(self._status_topic, 1), (f"{prefix}/v1/{SITE}/+/{topics.STORED}", 0)])
        self.client.loop_start()

    def _on_message(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if m.topic != self._status_topic:
            self.last_confirm[m.topic.split("/")[-2]] = now
            return
        try:
            state = str(json.loads(bytes(m.payload))["state"])
        except Exception:
            state = "?"
        with self._cond:
            self.seen.append((now, state))
            self._cond.notify_all()

    def wait_for(self, state: str, after: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, s in self.seen:
                    if s == state and t >= after:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"gateway status {state!r} not seen within {timeout:.0f} s")
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def distinct(url: str, db: str) -> int:
    q = urllib.parse.urlencode({"db": db, "q": f'SELECT count(distinct("reading_id")) FROM "{M_PARKING_BAY}"'})
    with urllib.request.urlopen(f"{url}/query?{q}", timeout=10) as r:
        body = json.loads(r.read())
    res = body["results"][0]
    series = res.get("series")
    return int(series[0]["values"][0][1]) if series else 0


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, ps in pids.items():
        total = 0.0
        for pid in ps:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        out[name] = total
    return out


@dataclass
class Result:
    mode: str
    scenario: str
    stored_s: float
    empty_s: float | None
    cpu_s: dict[str, float] = field(default_factory=dict)
    edge_stats: dict[str, int] = field(default_factory=dict)
    emit_s: float = 0.0
    #: When the last confirmation passed through the broker (B only), same origin as the times above.
    confirmed_s: float | None = None


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, mq: services.Service, ix: services.Service) -> None:
        self.args = args
        self.work = work
        self.mq = mq
        self.ix = ix
        self.url = f"http://{ix.host}:{ix.port}"
        self.children = Children()
        self.run_id = f"{int(time.time()) % 100000:05d}"
        self.trial = 0
        self.profilers: list[subprocess.Popen[bytes]] = []

    # -- pieces ------------------------------------------------------------------------------
    def gateway(self, mode: str, prefix: str, db: str, client_id: str, tdir: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            {
                "DISTRICT_GATEWAY_MQTT_HOST": self.mq.host,
                "DISTRICT_GATEWAY_MQTT_PORT": str(self.mq.port),
                "DISTRICT_GATEWAY_MQTT_CLIENT_ID": client_id,
                "DISTRICT_GATEWAY_TOPIC_PREFIX": prefix,
                "DISTRICT_GATEWAY_INFLUX_URL": self.url,
                "DISTRICT_GATEWAY_INFLUX_DB": db,
                "DISTRICT_GATEWAY_CONFIRM": "true" if MODES[mode]["confirm"] else "false",
                "DISTRICT_GATEWAY_SITE_ID": SITE,
            }
        )
        argv = [sys.executable, "-m", "district.cli", "gateway", "--log-level", "WARNING"]
        proc = self.children.spawn(argv, env=env, log_path=tdir / "gateway.log", stdout=subprocess.DEVNULL)
        self.profile(mode, "gateway", proc.pid, tdir)
        return proc  # type: ignore[no-any-return]

    def profile(self, mode: str, what: str, pid: int, tdir: Path) -> None:
        """With --profile: py-spy samples ``pid`` until it exits (raw collapsed stacks, --keep saves them)."""
        if mode not in self.args.profile:
            return
        out = tdir / f"{what}-{mode}.pyspy.txt"
        argv = [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-f", "raw", "-r", "100",
                "-o", str(out)]  # fmt: skip
        self.profilers.append(
            self.children.spawn(argv, log_path=tdir / f"py-spy-{what}.log", stdout=subprocess.DEVNULL)
        )

    def edges(self, mode: str, prefix: str, tdir: Path) -> list[Edge]:
        a = self.args
        per = a.n // a.k
        edges = []
        for i in range(a.k):
            spec = {
                "n": per + (1 if i < a.n % a.k else 0),
                "batch": a.batch,
                "device": f"bench-{i}",
                "port": self.mq.port,
                "prefix": prefix,
                "delivery": MODES[mode]["delivery"],
                "outbox": str(tdir / f"outbox-{i}.sqlite"),
                "deadline_s": a.deadline,
                "mqtt": {"confirm_timeout_s": a.confirm_timeout} if a.confirm_timeout else {},
            }
            edges.append(Edge(self.children, spec, tdir / f"edge-{i}.log"))
        self.profile(mode, "edge-0", edges[0].proc.pid, tdir)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for e in edges:
            e.wait("ready", deadline)
        return edges

    def wait_stored(self, db: str, deadline: float) -> float:
        while time.monotonic() < deadline:
            if distinct(self.url, db) >= self.args.n:
                return time.monotonic()
            time.sleep(self.args.poll)
        raise TimeoutError(f"InfluxDB {db}: not all {self.args.n} readings stored in time")

    def finish(self, edges: list[Edge], gw: subprocess.Popen[bytes]) -> dict[str, int]:
        totals: dict[str, int] = {}
        for e in edges:
            e.send("stop")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for e in edges:
            st = e.wait("stats", deadline)
            for k, v in st["stats"].items():
                totals[k] = totals.get(k, 0) + int(v)
            totals["left_pending"] = totals.get("left_pending", 0) + int(st["pending"])
            totals["emit_errors"] = totals.get("emit_errors", 0) + int(st["emit_errors"])
        for e in edges:
            self.children.stop(e.proc)
        self.children.stop(gw)
        for p in self.profilers:  # py-spy writes its file once its target has exited
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                self.children.stop(p)
        self.profilers.clear()
        return totals

    def _fresh(self, mode: str, scenario: str) -> tuple[str, str, str, Path]:
        self.trial += 1
        tag = f"{self.run_id}t{self.trial:02d}{mode}{scenario[0]}"
        tdir = self.work / f"trial-{self.trial:02d}-{mode}-{scenario}"
        tdir.mkdir()
        return f"bc{tag}", f"bench_{tag}", f"bench-gw-{tag}", tdir

    # -- trials ------------------------------------------------------------------------------
    def live(self, mode: str) -> Result:
        prefix, db, client_id, tdir = self._fresh(mode, "live")
        watch = StatusWatch(self.mq.host, self.mq.port, prefix, client_id)
        try:
            gw = self.gateway(mode, prefix, db, client_id, tdir)
            watch.wait_for("online", 0.0, READY_TIMEOUT_S)
            edges = self.edges(mode, prefix, tdir)
            pids = {"edges": [e.proc.pid for e in edges], "gateway": [gw.pid], "mosquitto": [self.mq.pid],
                    "influxd": [self.ix.pid]}  # fmt: skip
            cpu0 = cpu_of(pids)
            for e in edges:
                e.send("go")
            deadline = time.monotonic() + self.args.deadline
            stored_at = self.wait_stored(db, deadline)
            empty_at = max(e.wait("empty", deadline)["t"] for e in edges)
            cpu1 = cpu_of(pids)
            emitted = [e.wait("emitted", deadline) for e in edges]
            first = min(ev["first"] for ev in emitted)
            emit_s = max(ev["last"] for ev in emitted) - first
            confirmed = max(watch.last_confirm.values(), default=None)
            stats = self.finish(edges, gw)
        finally:
            watch.close()
        return Result(mode, "live", stored_at - first, empty_at - first, {k: cpu1[k] - cpu0[k] for k in cpu0},
                      stats, emit_s, None if confirmed is None else confirmed - first)  # fmt: skip

    def backlog(self, mode: str) -> Result:
        prefix, db, client_id, tdir = self._fresh(mode, "backlog")
        watch = StatusWatch(self.mq.host, self.mq.port, prefix, client_id)
        try:
            # The gateway's persistent session (its subscription) must exist so the broker queues for it.
            gw = self.gateway(mode, prefix, db, client_id, tdir)
            watch.wait_for("online", 0.0, READY_TIMEOUT_S)
            self.children.stop(gw)
            edges = self.edges(mode, prefix, tdir)
            for e in edges:
                e.send("go")
            deadline = time.monotonic() + self.args.deadline
            for e in edges:
                e.wait("broker_acked", deadline)
            if distinct(self.url, db) != 0:
                raise RuntimeError("backlog: readings were stored while the gateway was stopped")
            started = time.monotonic()
            gw = self.gateway(mode, prefix, db, client_id, tdir)
            online = watch.wait_for("online", started, READY_TIMEOUT_S)
            pids = {"edges": [e.proc.pid for e in edges], "gateway": [gw.pid], "mosquitto": [self.mq.pid],
                    "influxd": [self.ix.pid]}  # fmt: skip
            cpu0 = cpu_of(pids)
            deadline = time.monotonic() + self.args.deadline
            stored_at = self.wait_stored(db, deadline)
            empty_at = max(e.wait("empty", deadline)["t"] for e in edges)
            cpu1 = cpu_of(pids)
            confirmed = max(watch.last_confirm.values(), default=None)
            stats = self.finish(edges, gw)
        finally:
            watch.close()
        empty_s = empty_at - online if MODES[mode]["delivery"] == "stored" else None
        return Result(mode, "backlog", stored_at - online, empty_s, {k: cpu1[k] - cpu0[k] for k in cpu0}, stats,
                      confirmed_s=None if confirmed is None else confirmed - online)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(results: list[Result], n: int) -> str:
    def pick(mode: str, scenario: str) -> list[Result]:
        return [r for r in results if r.mode == mode and r.scenario == scenario]

    lines = [
        "| scenario | measure | A: broker ack, no confirm | B: end-to-end confirm | B/A time | B/A msg/s |",
        "|---|---|---|---|---|---|",
    ]
    for scenario, label in (("live", "from first emit"), ("backlog", "from gateway online")):
        a, b = pick("A", scenario), pick("B", scenario)
        for measure in ("stored", "empty"):
            ta = [getattr(r, f"{measure}_s") for r in a if getattr(r, f"{measure}_s") is not None]
            tb = [getattr(r, f"{measure}_s") for r in b if getattr(r, f"{measure}_s") is not None]
            if not tb:
                continue
            what = "all N in InfluxDB" if measure == "stored" else "every outbox empty"
            ma, mb = _med(ta), _med(tb)
            cell_a = f"{ma:.2f} s = {n / ma:,.0f} msg/s" if ta else "— (emptied at PUBACK, before the gateway ran)"
            cell_b = f"{mb:.2f} s = {n / mb:,.0f} msg/s"
            ratio_t = f"{mb / ma:.2f}" if ta else "—"
            ratio_r = f"{ma / mb:.2f}" if ta else "—"
            lines.append(f"| {scenario} | {what} ({label}) | {cell_a} | {cell_b} | {ratio_t} | {ratio_r} |")
        ta = [r.stored_s for r in a]
        tb = [r.empty_s for r in b if r.empty_s is not None]
        if ta and tb:
            ma, mb = _med(ta), _med(tb)
            lines.append(
                f"| {scenario} | done end to end: A all stored, B every outbox empty ({label}) | "
                f"{ma:.2f} s = {n / ma:,.0f} msg/s | {mb:.2f} s = {n / mb:,.0f} msg/s | {mb / ma:.2f} | {ma / mb:.2f} |"
            )
    lines += ["", "B only, after the last reading is in InfluxDB (medians, s; the stored time is polled every "
              "--poll s, so it is late by up to that much):", "",
              "| scenario | stored -> last confirmation through the broker | stored -> every outbox empty |",
              "|---|---|---|"]  # fmt: skip
    for scenario in ("live", "backlog"):
        b = [r for r in pick("B", scenario) if r.empty_s is not None and r.confirmed_s is not None]
        if b:
            lag_c = _med([r.confirmed_s - r.stored_s for r in b])  # type: ignore[operator]
            lag_e = _med([r.empty_s - r.stored_s for r in b])  # type: ignore[operator]
            lines.append(f"| {scenario} | {lag_c:.2f} | {lag_e:.2f} |")
    lines += ["", "Per trial (seconds; in run order):", "",
              "| # | mode | scenario | stored | confirmed | empty | emit | CPU s edges/gateway/broker/influx "
              "| published | resends |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, r in enumerate(results, 1):
        cpu = "/".join(f"{r.cpu_s.get(k, 0):.1f}" for k in ("edges", "gateway", "mosquitto", "influxd"))
        empty = f"{r.empty_s:.2f}" if r.empty_s is not None else "—"
        emit = f"{r.emit_s:.2f}" if r.emit_s else "—"
        conf = f"{r.confirmed_s:.2f}" if r.confirmed_s is not None else "—"
        lines.append(
            f"| {i} | {r.mode} | {r.scenario} | {r.stored_s:.2f} | {conf} | {empty} | {emit} | {cpu} | "
            f"{r.edge_stats.get('published', 0)} | {r.edge_stats.get('resends', 0)} |"
        )
    lines += ["", "Median CPU seconds per trial:", "", "| scenario | mode | edges | gateway | mosquitto | influxd |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for scenario in ("live", "backlog"):
        for mode in ("A", "B"):
            rs = pick(mode, scenario)
            cells = " | ".join(f"{_med([r.cpu_s.get(k, 0) for r in rs]):.2f}"
                               for k in ("edges", "gateway", "mosquitto", "influxd"))  # fmt: skip
            lines.append(f"| {scenario} | {mode} | {cells} |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "_edge":
        return edge_worker(json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000, help="readings per trial, over all devices (default 20000)")
    parser.add_argument("-k", type=int, default=4, help="edge agents, one process each (default 4)")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs per scenario (default 3)")
    parser.add_argument("--batch", type=int, default=100, help="readings per emit() call (default 100)")
    parser.add_argument("--order", default="AB", choices=["AB", "BA"], help="mode order within a pair (default AB)")
    parser.add_argument("--scenarios", default="live,backlog", help="comma-separated: live, backlog")
    parser.add_argument("--poll", type=float, default=0.05, help="InfluxDB count poll interval, s (default 0.05)")
    parser.add_argument("--deadline", type=float, default=600.0, help="give up a trial after this many s")
    parser.add_argument("--confirm-timeout", type=float, default=0.0, help="edge confirm_timeout_s (0: default)")
    parser.add_argument("--profile", default="", help="modes whose gateway and edge 0 py-spy samples, e.g. AB")
    parser.add_argument("--keep", type=Path, help="copy logs/profiles here (default: discarded with the temp dir)")
    parser.add_argument("--json", type=Path, help="write every trial's figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scenarios = [s for s in args.scenarios.split(",") if s]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-confirm-") as tmp:
        work = Path(tmp)
        mq = services.start_mosquitto(work / "mq")
        ix: services.Service | None = None
        bench: Bench | None = None
        try:
            ix = services.start_influxd(work / "ix")
            bench = Bench(args, work, mq, ix)
            for scenario in scenarios:
                for pair in range(args.pairs):
                    for mode in args.order:
                        r = bench.live(mode) if scenario == "live" else bench.backlog(mode)
                        results.append(r)
                        empty = f"{r.empty_s:.2f} s" if r.empty_s is not None else "—"
                        print(f"pair {pair + 1} {scenario:7s} {mode}: stored {r.stored_s:.2f} s "
                              f"({args.n / r.stored_s:,.0f} msg/s), empty {empty}, "
                              f"published {r.edge_stats.get('published')}, resends {r.edge_stats.get('resends')}",
                              flush=True)  # fmt: skip
        finally:
            if bench is not None:
                bench.children.stop_all()
            if ix is not None:
                ix.stop()
            mq.stop()
            if args.keep:
                import shutil

                shutil.copytree(work, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sqlite*"))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    print()
    print(f"N={args.n} readings, K={args.k} edge processes, emit batches of {args.batch}, "
          f"{args.pairs} pair(s), order {args.order}\n")  # fmt: skip
    print(report(results, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
