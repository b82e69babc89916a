"""The city on one box (issue 13): broker, 2 gateway workers, InfluxDB, server and the city fleet.

    .venv/bin/python bench/scale/run.py                      # 10,000 bays, 500 banks, 50 cameras; ~30 min
    .venv/bin/python bench/scale/run.py --outage-s 60 --steady-s 60 --burst-s 30   # a quick look
    .venv/bin/python bench/scale/run.py --json bench/scale/results.json

Everything as deployed: Mosquitto with TLS, passwords, client certificates and
the ACL (``district provision`` of the generated city, one identity per
device); ``district gateway`` with ``workers=2``; ``district server``; the
fleet as ``district sim --scale`` (its own processes, every device its own
MQTT connection, outbox and confirmations). Phases, one after the other:

1. reference: the API's latency with no traffic; every process's memory;
2. warm-up: all devices connected and their first full refresh stored;
3. steady state (``--steady-s``): ingest rate, sensor-to-API lag, API latency;
4. burst (``--burst-s``): every device's network cut at once for that long
   while it keeps reading (a partition of all: their outboxes fill), then all
   reconnect in the same instant; catch-up time, and the lag of *live*
   readings during catch-up (do they starve behind the replays?);
5. broker outage (``--outage-s``, real seconds; default 600): Mosquitto
   stopped, then started again on its port and data; the backlog is what the
   fleet produced in that real time at ``--speed`` (default 1: real city
   traffic); catch-up time and live lag again;
6. loss: the fleet stops producing, every outbox drains, and InfluxDB must
   hold exactly the readings the truth ledger says were produced.

Lag: the bench polls ``/v1/parking/lots`` in a loop; when a lot's
``observed_at`` (its newest reading, stamped by the device) changes, one
sample is the time the answer arrived minus that ``observed_at``. So a sample
includes up to one poll period (reported). Ratios are against the reference
measured in the same run (idle API latency, steady lag, production rate).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from contracts.configfile import load_model  # noqa: E402
from contracts.site import SiteConfig  # noqa: E402
from district.provision import GATEWAY, SERVER, provision  # noqa: E402
from district.services import broker_access, free_port, start_influxd, start_mosquitto  # noqa: E402
from firmware_sim.city.ledger import LedgerReader  # noqa: E402
from firmware_sim.city.sitegen import CityShape, write_site  # noqa: E402

#: Live lag after a reconnect is sampled over the catch-up, and at least this long after it began.
LIVE_WINDOW_S = 60.0
DISTRICT = str(Path(sys.executable).with_name("district"))


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Poller(threading.Thread):
    """Asks /v1/parking/lots in a loop; keeps latencies and lag samples with their times."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.latency: list[tuple[float, float]] = []  # (t received, seconds)
        self.lag: list[tuple[float, float, float]] = []  # (t received, lag s, observed_at POSIX)
        self.errors = 0
        self._seen: dict[str, float] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.time()
            try:
                lots = get_json(f"{self.base}/v1/parking/lots")
            except OSError:
                self.errors += 1
                time.sleep(0.2)
                continue
            t1 = time.time()
            self.latency.append((t1, t1 - t0))
            for lot in lots:
                obs = lot.get("observed_at")
                if not obs:
                    continue
                ts = datetime.fromisoformat(obs).timestamp()
                if self._seen.get(lot["id"]) != ts:
                    if lot["id"] in self._seen:
                        self.lag.append((t1, t1 - ts, ts))
                    self._seen[lot["id"]] = ts
            time.sleep(0.05)


class Sampler(threading.Thread):
    """Fleet counters (the sim's --stats file) every second, and every process tree's RSS and CPU time every 5 s."""

    def __init__(self, stats_path: Path, procs: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.stats_path = stats_path
        self.procs = procs
        self.stop = threading.Event()
        self.stats: list[dict[str, Any]] = []
        self.rss: dict[str, list[tuple[float, float]]] = {}
        #: name -> [(time, CPU seconds, user + system, of the process and its children alive then)].
        self.cpu: dict[str, list[tuple[float, float]]] = {}

    def tree_rss(self, pid: int) -> float:
        try:
            p = psutil.Process(pid)
            return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 1e6
        except psutil.Error:
            return 0.0

    def tree_cpu(self, pid: int) -> float:
        try:
            p = psutil.Process(pid)
            total = 0.0
            for c in [p, *p.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = c.cpu_times()
                    total += t.user + t.system
            return total
        except psutil.Error:
            return 0.0

    def cpu_used(self, start: float, end: float) -> dict[str, float]:
        """Core-seconds each process tree used between ``start`` and ``end`` (its samples nearest inside)."""
        out = {}
        for name, samples in self.cpu.items():
            inside = [(t, v) for t, v in samples if start <= t <= end]
            if len(inside) >= 2 and inside[-1][1] >= inside[0][1]:
                span = inside[-1][0] - inside[0][0]
                # scaled to the whole window: the samples are 5 s apart
                out[name] = round((inside[-1][1] - inside[0][1]) * (end - start) / span, 1) if span else 0.0
        return out

    def run(self) -> None:
        n = 0
        while not self.stop.wait(1.0):
            with contextlib.suppress(OSError, ValueError):
                self.stats.append(json.loads(self.stats_path.read_text()))
            n += 1
            if n % 5 == 0:
                now = time.time()
                for name, pid in list(self.procs.items()):
                    self.rss.setdefault(name, []).append((now, self.tree_rss(pid)))
                    self.cpu.setdefault(name, []).append((now, self.tree_cpu(pid)))

    def last(self) -> dict[str, Any]:
        return self.stats[-1] if self.stats else {}


def cpu_summary(sampler: Sampler, start: float, end: float) -> dict[str, Any]:
    """Core-seconds per process tree in the window, and CPU milliseconds per reading confirmed in it: where
    the box's two cores went (the simulated fleet shares them with the system it drives)."""
    used = sampler.cpu_used(start, end)
    inside = [x for x in sampler.stats if start <= x.get("t", 0) <= end and "confirmed" in x]
    confirmed = inside[-1]["confirmed"] - inside[0]["confirmed"] if len(inside) >= 2 else 0
    system = sum(v for k, v in used.items() if k != "sim")
    return {
        "core_s": used,
        "window_s": round(end - start, 1),
        "confirmed": confirmed,
        "ms_per_reading": {k: round(1000 * v / confirmed, 3) for k, v in used.items()} if confirmed else None,
        "system_ms_per_reading": round(1000 * system / confirmed, 3) if confirmed else None,
    }


def wait_for(pred: Any, timeout: float, what: str, every: float = 1.0) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time() - t0
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s: {what}")


def influx_count(url: str, db: str, measurement: str, field: str) -> int:
    q = urllib.parse.urlencode({"db": db, "q": f'SELECT count("{field}") FROM "{measurement}"'})
    body = get_json(f"{url}/query?{q}", timeout=120)
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def lag_summary(
    samples: list[tuple[float, float, float]], start: float, end: float, live_after: float | None = None
) -> dict[str, Any]:
    chosen = [lag for t, lag, obs in samples if start <= t <= end and (live_after is None or obs >= live_after)]
    return {
        "samples": len(chosen),
        "p50_s": pct(chosen, 50),
        "p99_s": pct(chosen, 99),
        "max_s": max(chosen) if chosen else None,
    }


def rate(stats: list[dict[str, Any]], start: float, end: float, key: str) -> float | None:
    inside = [s for s in stats if start <= s.get("t", 0) <= end and key in s]
    if len(inside) < 2:
        return None
    return float(inside[-1][key] - inside[0][key]) / float(inside[-1]["t"] - inside[0]["t"])


def produced_rate(stats: list[dict[str, Any]], start: float, end: float) -> float | None:
    inside = [s for s in stats if start <= s.get("t", 0) <= end]
    if len(inside) < 2:
        return None
    a, b = inside[0], inside[-1]
    return float((b["pending"] + b["confirmed"]) - (a["pending"] + a["confirmed"])) / float(b["t"] - a["t"])


def timeline(stats: list[dict[str, Any]], start: float, end: float, every: float = 5.0) -> list[dict[str, Any]]:
    """The catch-up as it went: every ``every`` s from ``start``, the devices connected, the readings pending in
    their outboxes, and the readings confirmed per second since the previous point (where the time goes)."""
    out: list[dict[str, Any]] = []
    prev: dict[str, Any] | None = None
    for s in stats:
        t = s.get("t", 0)
        if t < start or t > end or (prev is not None and t - prev["t"] < every):
            continue
        point = {"t_s": round(t - start, 1), "connected": s.get("connected"), "pending": s.get("pending")}
        if prev is not None and "confirmed" in s and "confirmed" in prev:
            point["confirmed_per_s"] = round((s["confirmed"] - prev["confirmed"]) / (t - prev["t"]), 1)
        out.append(point)
        prev = s
    return out


def catch_up(sampler: Sampler, since: float, level: float, timeout: float) -> float | None:
    """Seconds from ``since`` until the fleet's pending readings are back at ``level`` or below; None: not
    within ``timeout`` (the bench goes on and says so)."""

    def done() -> bool:
        s = sampler.last()
        return s.get("t", 0) > since + 2 and s.get("pending", 1e9) <= level and s.get("connected") == s.get("devices")

    try:
        wait_for(done, timeout, "the fleet's outboxes back at their steady level")
    except TimeoutError:
        return None
    return float(sampler.last()["t"]) - since


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--bays", type=int, default=10_000)
    ap.add_argument("--lots", type=int, default=50)
    ap.add_argument("--banks", type=int, default=500)
    ap.add_argument("--compartments", type=int, default=20)
    ap.add_argument("--cameras", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2, help="gateway worker processes (DISTRICT_GATEWAY_WORKERS)")
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (1: real traffic)")
    ap.add_argument("--refresh-s", type=float, default=60.0, help="each device's full refresh (the edge's default)")
    ap.add_argument("--steady-s", type=float, default=180.0)
    ap.add_argument("--burst-s", type=float, default=120.0, help="every device cut off this long, then all back")
    ap.add_argument("--outage-s", type=float, default=600.0, help="broker down this long (real seconds)")
    ap.add_argument("--autosave-changes", type=int, default=0, metavar="N",
                    help="Mosquitto saves its database every N changes (deploy/mosquitto.conf: 100); 0: only "
                    "on its own schedule and at shutdown (README: at city scale 100 stalls it)")  # fmt: skip
    ap.add_argument("--warm-up-timeout-s", type=float, default=600.0)
    ap.add_argument("--catch-up-timeout-s", type=float, default=300.0, help="give up waiting for a catch-up")
    ap.add_argument(
        "--sim-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the simulated fleet at nice N (0: same priority as the system under test)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, ledger)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below on SIGTERM too

    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"work dir {root}", flush=True)
    shape = CityShape(bays=args.bays, lots=args.lots, banks=args.banks, compartments_per_bank=args.compartments,
                      cameras=args.cameras)  # fmt: skip
    site_path = root / "city.yaml"
    write_site(site_path, shape)
    site = load_model(site_path, SiteConfig)
    t = time.time()
    pki = provision(site, root / "pki", broker_hosts=["127.0.0.1", "localhost"], install_dir=None, broker_dir=None)
    print(f"provisioned {len(pki.identities)} identities in {time.time() - t:.1f} s", flush=True)
    autosave = args.autosave_changes or None
    mosq = start_mosquitto(root / "mosquitto", pki=pki, autosave_changes=autosave)
    influx = start_influxd(root / "influxd")
    influx_url, db = f"http://{influx.host}:{influx.port}", "city"
    data = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
    urllib.request.urlopen(f"{influx_url}/query", data=data, timeout=10).read()
    children: list[subprocess.Popen[bytes]] = []
    logs = root / "logs"
    logs.mkdir()

    def spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(logs / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        children.append(proc)
        return proc

    result: dict[str, Any] = {
        "shape": vars(shape) | {"devices": len(site.devices)},
        "args": {k: str(v) for k, v in vars(args).items()},
        "started": datetime.now().isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg(),
    }
    try:
        gw_env = broker_access(mosq, GATEWAY).env("gateway") | {
            "DISTRICT_GATEWAY_WORKERS": str(args.workers),
            "DISTRICT_GATEWAY_SITE_CONFIG": str(site_path),
            "DISTRICT_GATEWAY_INFLUX_URL": influx_url,
            "DISTRICT_GATEWAY_INFLUX_DB": db,
            "DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(root / "dead.jsonl"),
        }
        gateway = spawn("gateway", [DISTRICT, "gateway"], gw_env)
        port = free_port()
        srv_env = broker_access(mosq, SERVER).env("server") | {
            "DISTRICT_SERVER_INFLUX_URL": influx_url,
            "DISTRICT_SERVER_INFLUX_DB": db,
            "DISTRICT_SERVER_STATE_DIR": str(root / "server-state"),
        }
        server = spawn("server", [DISTRICT, "server", "--site", str(site_path), "--host", "127.0.0.1", "--port",
                                  str(port)], srv_env)  # fmt: skip
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return bool(get_json(f"{base}/healthz", timeout=2))
            except OSError:
                return False

        wait_for(healthy, 120, "server healthz")
        # 1. reference: API latency with no traffic
        idle = []
        for _ in range(100):
            t0 = time.time()
            get_json(f"{base}/v1/parking/lots")
            idle.append(time.time() - t0)
        procs = {"mosquitto": mosq.pid, "influxd": influx.pid, "gateway": gateway.pid, "server": server.pid}
        stats_path, control = root / "stats.json", root / "control"
        control.touch()
        sim_argv = [DISTRICT, "sim", "--scale", "--site", str(site_path), "--identities",
                    str(root / "pki" / "identities"), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(mosq.port),
                    "--work-dir", str(root / "sim"), "--stats", str(stats_path), "--control", str(control),
                    "--speed", str(args.speed), "--refresh", str(args.refresh_s), "--seed", "13"]  # fmt: skip
        if args.sim_nice:
            # The fleet stands for 600 devices with CPUs of their own: at a lower priority it takes only what
            # the system under test leaves, as it would off this box (the lag it stamps still counts).
            sim_argv = ["nice", "-n", str(args.sim_nice), *sim_argv]
        sim = spawn("sim", sim_argv, {})
        procs["sim"] = sim.pid
        sampler = Sampler(stats_path, procs)
        sampler.start()
        poller = Poller(base)
        poller.start()
        ref_rss = {name: sampler.tree_rss(pid) for name, pid in procs.items()}

        # 2. warm-up
        devices = len(site.devices)

        def warmed() -> bool:
            last = sampler.last()
            return bool(last.get("connected") == devices and last.get("pending", 1e9) < 2000)

        warm = wait_for(warmed, args.warm_up_timeout_s, "all devices connected and their first refresh stored")
        print(f"warm-up {warm:.0f} s", flush=True)
        time.sleep(30)

        # 3. steady state
        s0 = time.time()
        time.sleep(args.steady_s)
        s1 = time.time()
        steady_pending = [s["pending"] for s in sampler.stats if s0 <= s.get("t", 0) <= s1]
        level = max(500.0, 2 * (pct([float(p) for p in steady_pending], 99) or 0))
        steady: dict[str, Any] = {
            "window_s": round(s1 - s0),
            "produced_per_s": produced_rate(sampler.stats, s0, s1),
            "ingest_confirmed_per_s": rate(sampler.stats, s0, s1, "confirmed"),
            "lag": lag_summary(poller.lag, s0, s1),
            "api_latency_p50_ms": 1000 * (pct([v for t, v in poller.latency if s0 <= t <= s1], 50) or 0),
            "api_latency_p99_ms": 1000 * (pct([v for t, v in poller.latency if s0 <= t <= s1], 99) or 0),
            "api_requests": sum(1 for t, _ in poller.latency if s0 <= t <= s1),
            "cpu": cpu_summary(sampler, s0, s1),
            "pending_p99": pct([float(p) for p in steady_pending], 99),
            "load_average": os.getloadavg(),
        }
        print("steady", json.dumps(steady), flush=True)

        # 4. burst: every device cut off, then all reconnect at once with a backlog
        b0 = time.time()
        with open(control, "a") as f:
            f.write(f"kind=partition,devices=all,for={args.burst_s:g}\n")
        time.sleep(args.burst_s + 1)
        b1 = b0 + args.burst_s
        backlog_b = max((s["pending"] for s in sampler.stats if b0 <= s.get("t", 0) <= b1 + 2), default=0)
        caught_b = catch_up(sampler, b1, level, args.catch_up_timeout_s)
        took_b = caught_b if caught_b is not None else time.time() - b1
        burst: dict[str, Any] = {
            "cut_s": args.burst_s,
            "backlog_readings": backlog_b,
            "catch_up_s": round(caught_b, 1) if caught_b is not None else f"not within {time.time() - b1:.0f}",
            "pending_at_end": sampler.last().get("pending"),
            "drain_confirmed_per_s": rate(sampler.stats, b1, b1 + took_b, "confirmed"),
            "live_lag_during_catch_up": lag_summary(poller.lag, b1, b1 + max(took_b, LIVE_WINDOW_S), live_after=b1),
            "replayed_samples": sum(1 for t, _, obs in poller.lag if b1 <= t <= b1 + took_b and obs < b1),
            "api_latency_p99_ms": 1000 * (pct([v for t, v in poller.latency if b1 <= t <= b1 + took_b], 99) or 0),
            "cpu": cpu_summary(sampler, b1, b1 + took_b),
        }
        print("burst", json.dumps(burst), flush=True)
        time.sleep(max(20.0, LIVE_WINDOW_S - took_b))

        # 5. broker outage
        o0 = time.time()
        mosq.stop()
        time.sleep(args.outage_s)
        backlog_o = sampler.last().get("pending", 0)
        mosq = start_mosquitto(root / "mosquitto", port=mosq.port, pki=pki, autosave_changes=autosave)
        procs["mosquitto"] = mosq.pid
        o1 = time.time()
        caught_o = catch_up(sampler, o1, level, args.catch_up_timeout_s)
        took_o = caught_o if caught_o is not None else time.time() - o1
        outage: dict[str, Any] = {
            "broker_down_s": round(o1 - o0, 1),
            "backlog_readings": backlog_o,
            "produced_during_outage_per_s": produced_rate(sampler.stats, o0, o1),
            "catch_up_s": round(caught_o, 1) if caught_o is not None else f"not within {time.time() - o1:.0f}",
            "pending_at_end": sampler.last().get("pending"),
            "drain_confirmed_per_s": rate(sampler.stats, o1, o1 + took_o, "confirmed"),
            "live_lag_during_catch_up": lag_summary(poller.lag, o1, o1 + max(took_o, LIVE_WINDOW_S), live_after=o1),
            "api_latency_p99_ms": 1000 * (pct([v for t, v in poller.latency if o1 <= t <= o1 + took_o], 99) or 0),
            "cpu": cpu_summary(sampler, o1, o1 + took_o),
            "load_average": os.getloadavg(),
            "timeline": timeline(sampler.stats, o1, o1 + took_o),
        }
        print("outage", json.dumps(outage), flush=True)
        time.sleep(max(0.0, LIVE_WINDOW_S - took_o))

        # memory under load, before the drain
        rss = {name: {"idle_mb": round(ref_rss.get(name, 0), 1),
                      "peak_mb": round(max((v for _, v in sampler.rss.get(name, [])), default=0), 1)}
               for name in procs}  # fmt: skip

        # 6. loss: stop producing, drain, count
        with open(control, "a") as f:
            f.write("pause\n")
        time.sleep(3)
        try:
            drained: float | None = wait_for(lambda: sampler.last().get("pending", 1) == 0, args.catch_up_timeout_s,
                                             "every outbox empty")  # fmt: skip
        except TimeoutError:
            drained = None
        final_pending = sampler.last().get("pending")
        sim.send_signal(signal.SIGTERM)
        sim.wait(120)
        ledger = LedgerReader(root / "sim" / "ledger.sqlite")
        produced = ledger.produced()
        lines = sum(len(c.lines) for c in site.cameras) / max(1, len(site.cameras))
        ledger.close()
        stored = {
            "parking_bay": influx_count(influx_url, db, "parking_bay", "reading_id"),
            "locker": influx_count(influx_url, db, "locker_compartment", "reading_id"),
            "footfall": round(influx_count(influx_url, db, "footfall", "towards") / lines),
        }
        # Not drained: what is still in the outboxes is not lost (yet); say how much.
        loss: dict[str, Any] = {k: produced.get(k, 0) - stored[k] for k in stored}
        if drained is None:
            loss["not_drained_pending"] = final_pending
        poller.stop.set()
        sampler.stop.set()
        final = sampler.last()
        io = psutil.Process(mosq.pid).io_counters() if mosq.alive() else None
        result |= {
            "reference": {
                "api_latency_idle_p50_ms": 1000 * (pct(idle, 50) or 0),
                "api_latency_idle_p99_ms": 1000 * (pct(idle, 99) or 0),
            },
            "warm_up_s": round(warm),
            "steady": steady,
            "burst": burst,
            "outage": outage,
            "rss": rss,
            "produced": produced,
            "stored": stored,
            "lost": loss,
            "fleet": {k: final.get(k) for k in ("connects", "connect_failures", "published", "confirmed", "resends")},
            "mosquitto_written_mb_since_restart": round(io.write_bytes / 1e6) if io is not None else None,
            "poll_period_p50_ms": 1000 * (pct([v for _, v in poller.latency], 50) or 0) + 50,
        }
        ref: dict[str, Any] = result["reference"]
        ratios = {
            "steady_ingest_vs_production": _ratio(steady["ingest_confirmed_per_s"], steady["produced_per_s"]),
            "steady_api_latency_p99_vs_idle": _ratio(steady["api_latency_p99_ms"], ref["api_latency_idle_p99_ms"]),
            "burst_live_lag_p99_vs_steady": _ratio(burst["live_lag_during_catch_up"]["p99_s"], steady["lag"]["p99_s"]),
            "outage_live_lag_p99_vs_steady": _ratio(
                outage["live_lag_during_catch_up"]["p99_s"], steady["lag"]["p99_s"]
            ),
            "outage_drain_vs_production": _ratio(outage["drain_confirmed_per_s"], steady["produced_per_s"]),
            "outage_catch_up_vs_outage": _ratio(caught_o, outage["broker_down_s"]),
        }
        result["ratios"] = ratios
        print(json.dumps(result, indent=2, default=str), flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return 0 if drained is not None and all(v == 0 for v in loss.values()) else 1
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in children:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        mosq.stop()
        influx.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


if __name__ == "__main__":
    sys.exit(main())
