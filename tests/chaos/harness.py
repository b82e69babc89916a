"""Fault injection with real processes: the one harness behind ``pytest -m chaos`` and ``bench/chaos/run.py``.

A :class:`Cluster` owns one Mosquitto, one InfluxDB 1.x, the real gateway
(``district gateway`` as a subprocess) and real edge agents
(``tests/chaos/edge_driver.py`` as subprocesses), each in its own temp dir on
loopback with free ports. Faults are signals to those pids: SIGKILL and a
restart on the same port with the same data (broker persistence, InfluxDB
data dir, edge outbox, gateway client id), or SIGSTOP/SIGCONT.

Truth is the driver's ledger (every reading id it put into the edge outbox);
what counts is what InfluxDB holds once the system has settled (polled, with
a deadline, until the counts stop moving):

* stored: ledger ids present in InfluxDB; lost: ledger ids absent;
* duplicated: ids present in more than one point (storage is keyed by
  measurement + tags + timestamp, so a redelivery must overwrite itself);
* rejected: what the gateway counted (its own stats, log and dead letters).

Each scenario returns :class:`Figures`; the caller asserts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, ClassVar

from district.provision import Provisioned
from district.services import BrokerAccess, Service, broker_access, start_influxd, start_mosquitto
from tests.conftest import provision_test_broker, wait_for

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "edge_driver.py"
PYTHON = sys.executable
DISTRICT = str(Path(sys.executable).parent / "district")

SITE_ID = "chaos"
LOT = "lot-chaos"
BAYS = 20
GATEWAY_ID = "gw-chaos"
FUZZ_DEVICE = "fuzz-dev"


# -- results -----------------------------------------------------------------------------------


@dataclass
class Figures:
    scenario: str
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    rejected: int = 0
    wall_s: float = 0.0
    #: Stored ids that are in no ledger (should be none).
    unexpected: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.notes.items())
        return (
            f"chaos {self.scenario}: sent={self.sent} stored={self.stored} lost={self.lost} "
            f"duplicated={self.duplicated} rejected={self.rejected} wall={self.wall_s:.1f}s"
            + (f" {extra}" if extra else "")
        )


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """The suite's poll (``tests.conftest.wait_for``), raising TimeoutError, which the long form catches."""
    try:
        return wait_for(predicate, timeout, interval, what)
    except AssertionError as exc:
        raise TimeoutError(str(exc)) from None


# -- InfluxDB queries ------------------------------------------------------------------------------


class InfluxQuery:
    def __init__(self, url: str, db: str) -> None:
        self.url = url
        self.db = db

    def query(self, q: str, timeout: float = 30) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"db": self.db, "q": q, "epoch": "ns"})
        with urllib.request.urlopen(f"{self.url}/query?{params}", timeout=timeout) as r:
            body = json.loads(r.read())
        rows: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                if "database not found" in result["error"]:
                    return []
                raise RuntimeError(f"InfluxDB error: {result['error']}")
            for series in result.get("series", []):
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    row["_measurement"] = series.get("name")
                    row.update(series.get("tags") or {})
                    rows.append(row)
        return rows

    def count(self, measurement: str, where: str = "") -> int:
        """Points (not distinct ids) of ``measurement``; -1 if InfluxDB does not answer."""
        try:
            rows = self.query(f'SELECT count("reading_id") FROM "{measurement}" {where}', timeout=5)
        except (OSError, RuntimeError):
            return -1
        return int(rows[0]["count"]) if rows else 0

    def reading_ids(self, measurement: str, where: str = "") -> list[str]:
        return [str(r["reading_id"]) for r in self.query(f'SELECT "reading_id" FROM "{measurement}" {where}')]

    def all_reading_ids(self) -> list[tuple[str, str]]:
        """(measurement, reading_id) of every point in the database that has a reading id."""
        return [(str(r["_measurement"]), str(r["reading_id"])) for r in self.query('SELECT "reading_id" FROM /.*/')]

    def last_gateway_stats(self) -> dict[str, Any] | None:
        try:
            rows = self.query("SELECT * FROM gateway_stats ORDER BY time DESC LIMIT 1", timeout=5)
        except (OSError, RuntimeError):
            return None
        return rows[0] if rows else None


# -- processes ---------------------------------------------------------------------------------------


class Proc:
    """A child process with its log file; stopped by pid."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            args,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, like a crash or a power cut."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a clean stop); SIGKILL if it does not end in time."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing", self.name, self.pid, timeout)
        self.kill()

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        finally:
            self._log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class GatewayRun:
    proc: Proc

    def counts(self) -> dict[str, Any]:
        """The gateway's own counters from its log: the final line of a clean stop, else its last stats line."""
        text = self.proc.log_text()
        out: dict[str, Any] = {}
        for line in text.splitlines():
            if "stats: received=" in line or "gateway stopped: received=" in line:
                out = _parse_counts(line)
        return out


def _parse_counts(line: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for word in line.replace(",", " ").split():
        key, sep, value = word.partition("=")
        if sep and value.lstrip("-").isdigit():
            out[key] = int(value)
    if "{" in line:
        reasons = line[line.index("{") : line.index("}") + 1]
        with suppress(ValueError):
            out["reasons"] = json.loads(reasons.replace("'", '"'))
    return out


class Edge:
    """One edge agent (the driver) with its outbox, ledger and status file; restartable."""

    def __init__(self, cluster: Cluster, device_id: str, count: int, rate: float, batch: int = 200) -> None:
        self.cluster = cluster
        self.device_id = device_id
        self.count = count
        self.rate = rate
        self.batch = batch
        d = cluster.workdir / device_id
        d.mkdir(parents=True, exist_ok=True)
        self.outbox = d / "outbox.sqlite"
        self.ledger = d / "ledger.txt"
        self.status_path = d / "status.json"
        self.tag = f"{device_id}-{uuid.uuid4().hex[:6]}"
        self.runs: list[Proc] = []

    @property
    def proc(self) -> Proc:
        return self.runs[-1]

    def start(self) -> None:
        c = self.cluster
        args = [
            PYTHON,
            str(DRIVER),
            *("--access", c.access().to_json(), "--prefix", c.prefix, "--site-id", SITE_ID),
            *("--device-id", self.device_id, "--lot", LOT, "--bays", str(BAYS)),
            *("--outbox", str(self.outbox), "--ledger", str(self.ledger), "--status", str(self.status_path)),
            *("--count", str(self.count), "--rate", str(self.rate), "--batch", str(self.batch)),
            *("--t0-us", str(c.t0_us), "--tag", self.tag),
        ]
        n = len(self.runs) + 1
        self.runs.append(Proc(f"edge {self.device_id}#{n}", args, {}, c.workdir / f"{self.device_id}-{n}.log"))

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_path.read_text()))
        except (OSError, ValueError):
            return {}

    def emitted(self) -> int:
        return int(self.status().get("emitted", 0))

    def ledger_ids(self) -> list[str]:
        if not self.ledger.exists():
            return []
        return [line for line in self.ledger.read_text().split("\n") if line]

    def _check_alive(self) -> None:
        """Raise with the driver's log tail if this run's edge driver has died (a wait would only time out)."""
        if not self.proc.alive():
            raise RuntimeError(f"edge driver died:\n{self.proc.log_text()[-2000:]}")

    def wait_emitted(self, n: int, timeout: float) -> None:
        def check() -> bool:
            self._check_alive()
            return self.emitted() >= n

        wait_until(check, timeout, f"{self.device_id} to emit {n}")

    def wait_acked(self, n: int, timeout: float) -> None:
        """This run's publisher has had ``n`` PUBACKs from the broker."""

        def check() -> bool:
            self._check_alive()
            return int(self.status().get("broker_acked", 0)) >= n

        wait_until(check, timeout, f"{self.device_id} to have {n} readings acknowledged")

    def wait_handed_over(self, timeout: float) -> None:
        """Every reading emitted and acknowledged by the broker; the outbox keeps them until the gateway
        confirms it stored them (end-to-end confirmation), so ``pending`` = ``awaiting``."""

        def check() -> bool:
            self._check_alive()
            s = self.status()
            return s.get("emitted") == self.count and s.get("pending") == s.get("awaiting")

        wait_until(check, timeout, f"{self.device_id} to hand every reading to the broker", interval=0.2)

    def wait_holding(self, timeout: float) -> None:
        """Every reading emitted, and the publisher connected with nothing left in flight to the broker: what
        it published waits in the broker for the gateway, the rest in the outbox. With nobody confirming, a
        reconnected edge keeps its backlog (edge/pacing.py ``ConfirmWindow``: replays are clocked by
        confirmations) instead of piling it into the broker's queue."""

        def check() -> bool:
            self._check_alive()
            s = self.status()
            return (
                s.get("emitted") == self.count
                and bool(s.get("connected"))
                and s.get("in_flight") == 0
                and int(s.get("awaiting", 0)) > 0
            )

        wait_until(
            check, timeout, f"{self.device_id} to emit everything and hold what it does not publish", interval=0.2
        )

    def wait_drained(self, timeout: float) -> None:
        """Every reading emitted and the outbox empty (the gateway confirmed every one)."""

        def check() -> bool:
            self._check_alive()
            s = self.status()
            return s.get("emitted") == self.count and s.get("pending") == 0

        wait_until(check, timeout, f"{self.device_id} outbox to drain", interval=0.2)


class Cluster:
    """Broker, InfluxDB, gateway and edges of one scenario, in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"c{uuid.uuid4().hex[:8]}"
        self.db = "chaos"
        # Readings lie in the past (the gateway takes up to 14 days), 1 ms apart.
        self.t0_us = int((time.time() - 3600) * 1e6)
        self.broker: Service | None = None
        self.pki: Provisioned | None = None
        self.influxd: Service | None = None
        self.broker_port = 0
        self.influx_port = 0
        self.gateway_runs: list[GatewayRun] = []
        self.edges: list[Edge] = []
        self.site_path = workdir / "site.yaml"
        self.dead_letters = workdir / "dead-letters.jsonl"
        self.site_path.write_text(site_yaml([FUZZ_DEVICE]))

    # -- services
    def access(self) -> BrokerAccess:
        """How the scenario's clients reach the broker: TLS and the admin's credentials, as every test client."""
        assert self.broker is not None
        return broker_access(self.broker)

    def start_services(self) -> None:
        # The broker runs as every test broker does: TLS, passwords, ACL (district provision).
        self.pki = provision_test_broker(self.workdir / "pki")
        self.broker = start_mosquitto(self.workdir / "mosquitto", port=self.broker_port or None, pki=self.pki)
        self.broker_port = self.broker.port
        self.influxd = start_influxd(self.workdir / "influxd", port=self.influx_port or None)
        self.influx_port = self.influxd.port

    @property
    def influx(self) -> InfluxQuery:
        return InfluxQuery(f"http://127.0.0.1:{self.influx_port}", self.db)

    def kill_broker(self) -> None:
        assert self.broker is not None
        self.broker.kill()

    def restart_broker(self) -> None:
        self.broker = start_mosquitto(self.workdir / "mosquitto", port=self.broker_port, pki=self.pki)

    def kill_influxd(self) -> None:
        assert self.influxd is not None
        self.influxd.kill()

    def restart_influxd(self) -> None:
        self.influxd = start_influxd(self.workdir / "influxd", port=self.influx_port)

    def pause_influxd(self) -> None:
        assert self.influxd is not None
        os.kill(self.influxd.pid, signal.SIGSTOP)

    def resume_influxd(self) -> None:
        assert self.influxd is not None
        os.kill(self.influxd.pid, signal.SIGCONT)

    # -- gateway
    @property
    def gateway(self) -> Proc:
        return self.gateway_runs[-1].proc

    def start_gateway(self, wait_subscribed: bool = True) -> None:
        env = {
            **self.access().env("gateway"),
            "DISTRICT_GATEWAY_MQTT_CLIENT_ID": GATEWAY_ID,
            "DISTRICT_GATEWAY_MQTT_RECONNECT_MAX_S": "2",
            "DISTRICT_GATEWAY_TOPIC_PREFIX": self.prefix,
            "DISTRICT_GATEWAY_INFLUX_URL": f"http://127.0.0.1:{self.influx_port}",
            "DISTRICT_GATEWAY_INFLUX_DB": self.db,
            "DISTRICT_GATEWAY_SITE_CONFIG": str(self.site_path),
            "DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(self.dead_letters),
            "DISTRICT_GATEWAY_STATS_INTERVAL_S": "1",
            "DISTRICT_GATEWAY_RETRY_MAX_S": "2",
        }
        n = len(self.gateway_runs) + 1
        proc = Proc(f"gateway#{n}", [DISTRICT, "gateway"], env, self.workdir / f"gateway-{n}.log")
        self.gateway_runs.append(GatewayRun(proc))
        if wait_subscribed:
            self.wait_gateway_subscribed()

    def wait_gateway_subscribed(self, timeout: float = 30) -> None:
        """The gateway's own ``online`` status, published right after it subscribes, is stored.

        It reaches the gateway only through its subscription, so once InfluxDB
        holds a status newer than this call, readings published now are queued for it.
        """
        since = time.time_ns()

        def check() -> bool:
            if not self.gateway.alive():
                raise RuntimeError(f"gateway died:\n{self.gateway.log_text()[-2000:]}")
            try:
                rows = self.influx.query(
                    f"SELECT \"state\" FROM device_status WHERE device='{GATEWAY_ID}' AND time >= {since - 10**9}",
                    timeout=5,
                )
            except (OSError, RuntimeError):
                return False
            return any(r.get("state") == "online" for r in rows)

        wait_until(check, timeout, "the gateway to subscribe", interval=0.1)

    def gateway_rejected(self) -> int:
        return sum(int(run.counts().get("rejected", 0)) for run in self.gateway_runs)

    # -- edges
    def add_edge(self, device_id: str, count: int, rate: float, batch: int = 200) -> Edge:
        edge = Edge(self, device_id, count, rate, batch)
        self.edges.append(edge)
        return edge

    # -- settling and counting
    def settle(self, edges: list[Edge], timeout: float, quiet_s: float = 5.0) -> None:
        """Wait until every edge outbox is empty and InfluxDB holds all ledger readings, or stops changing."""
        deadline = time.monotonic() + timeout
        last: tuple[int, ...] = ()
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            counts = tuple(self.influx.count("parking_bay", f"WHERE device='{e.device_id}'") for e in edges)
            drained = all(e.status().get("pending") == 0 and e.emitted() == e.count for e in edges)
            now = time.monotonic()
            if counts != last:
                last, last_change = counts, now
            if drained and all(c == e.count for c, e in zip(counts, edges, strict=True)):
                return
            if drained and -1 not in counts and now - last_change >= quiet_s:
                log.warning("settled short: %s of %s", counts, [e.count for e in edges])
                return
            time.sleep(0.25)
        log.warning("settle: deadline of %.0f s passed; counting what is there", timeout)

    def figures(self, scenario: str, edges: list[Edge], started: float) -> Figures:
        fig = Figures(scenario)
        ledger: list[str] = []
        stored: list[str] = []
        for e in edges:
            ledger += e.ledger_ids()
            stored += self.influx.reading_ids("parking_bay", f"WHERE device='{e.device_id}'")
        fig.wall_s = time.monotonic() - started
        truth = set(ledger)
        per_id = Counter(stored)
        fig.sent = len(truth)
        fig.stored = len(truth & per_id.keys())
        fig.lost = len(truth - per_id.keys())
        fig.duplicated = sum(1 for n in per_id.values() if n > 1)
        fig.unexpected = len(per_id.keys() - truth)
        fig.rejected = self.gateway_rejected()
        if len(ledger) != len(truth):
            fig.notes["ledger_repeats"] = len(ledger) - len(truth)
        if fig.unexpected:
            fig.notes["unexpected"] = fig.unexpected
        if fig.lost:
            fig.notes["lost_ranges"] = lost_ranges(ledger, truth - per_id.keys())
        return fig

    # -- teardown
    def close(self) -> None:
        for e in self.edges:
            for p in e.runs:
                p.stop(15)
        for run in self.gateway_runs:
            run.proc.stop(30)
        for svc in (self.broker, self.influxd):
            if svc is not None:
                if svc.alive():
                    os.kill(svc.pid, signal.SIGCONT)
                svc.stop()


def lost_ranges(ledger: list[str], lost: set[str], most: int = 4) -> str:
    """Runs of consecutive ledger positions that were lost, e.g. ``1000-1099,1980-1999``."""
    runs: list[tuple[int, int]] = []
    for i, rid in enumerate(ledger):
        if rid in lost:
            if runs and runs[-1][1] == i - 1:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((i, i))
    text = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs[:most])
    return text + (f",+{len(runs) - most} more" if len(runs) > most else "")


@contextmanager
def cluster(workdir: Path) -> Iterator[Cluster]:
    c = Cluster(workdir)
    try:
        c.start_services()
        yield c
    finally:
        c.close()


def site_yaml(extra_devices: list[str]) -> str:
    devices = "\n".join(f"  - {{id: {d}, kind: bay_controller, heartbeat_s: 60}}" for d in extra_devices)
    return f"""site: {{id: {SITE_ID}, name: Chaos site}}
zones:
  - {{id: z1, name: Zone 1}}
parking:
  - id: {LOT}
    name: Chaos lot
    coords: {{lat: 51.05, lng: 13.73}}
    zone: z1
    bays: {{prefix: b, count: {BAYS}, start: 1, width: 3}}
devices:
{devices}
"""


# -- scenarios -------------------------------------------------------------------------------------------
#
# Each takes a fresh work dir and sizes; returns Figures. ``timeout`` bounds every wait.


def run_broker_kill(workdir: Path, n: int, rate: float, timeout: float = 120) -> Figures:
    """Gateway away, edge publishes ``n``; the broker is SIGKILLed and restarted (same port, same
    persistence) twice while readings are queued for the gateway: mid-stream, and once the edge has
    emitted everything (after the first restart it keeps its backlog in the outbox while nobody
    confirms, and what it publishes live waits in the broker). Then the gateway comes back and drains."""
    with cluster(workdir) as c:
        started = time.monotonic()
        c.start_gateway()  # once, so the broker holds its session and subscription
        c.gateway.stop()
        edge = c.add_edge("edge-bk", n, rate=rate)
        edge.start()
        # Kill once the broker has taken half (and so has saved its state, the
        # gateway's session included, a few times): a kill within the first
        # autosave window would also drop that session, and with it everything.
        edge.wait_acked(n // 2, timeout)
        c.kill_broker()
        c.restart_broker()
        edge.wait_holding(timeout)
        c.kill_broker()
        c.restart_broker()
        c.start_gateway(wait_subscribed=False)
        c.settle([edge], timeout)
        fig = c.figures("broker-sigkill", [edge], started)
        fig.notes["broker_kills"] = 2
        return fig


def run_gateway_kill(workdir: Path, n: int, rate: float, timeout: float = 120) -> Figures:
    """SIGKILL the gateway at 1/3 and 2/3 of the stream; restart it at once (same client id)."""
    with cluster(workdir) as c:
        started = time.monotonic()
        c.start_gateway()
        edge = c.add_edge("edge-gk", n, rate=rate)
        edge.start()
        for k in (1, 2):
            edge.wait_emitted(n * k // 3, timeout)
            c.gateway.kill()
            c.start_gateway(wait_subscribed=False)
        c.settle([edge], timeout)
        fig = c.figures("gateway-sigkill-x2", [edge], started)
        fig.notes["gateway_runs"] = len(c.gateway_runs)
        return fig


def run_edge_kill(workdir: Path, n: int, rate: float, timeout: float = 120) -> Figures:
    """SIGKILL the edge agent at 1/3 and 2/3 of the stream; restart it with the same outbox and ledger."""
    with cluster(workdir) as c:
        started = time.monotonic()
        c.start_gateway()
        edge = c.add_edge("edge-ek", n, rate=rate)
        edge.start()
        for k in (1, 2):
            edge.wait_emitted(n * k // 3, timeout)
            edge.proc.kill()
            edge.start()
        c.settle([edge], timeout)
        fig = c.figures("edge-sigkill-x2", [edge], started)
        fig.notes["edge_runs"] = len(edge.runs)
        return fig


def run_influx_outage(workdir: Path, n: int, rate: float, outage_s: float, how: str, timeout: float = 180) -> Figures:
    """InfluxDB unavailable for ``outage_s`` mid-stream: ``how`` = ``sigstop`` (hangs) or ``kill`` (SIGKILL,
    then restarted on the same port and data dir)."""
    with cluster(workdir) as c:
        started = time.monotonic()
        c.start_gateway()
        edge = c.add_edge("edge-ix", n, rate=rate)
        edge.start()
        edge.wait_emitted(n // 3, timeout)
        down_at = time.monotonic()
        if how == "sigstop":
            c.pause_influxd()
        else:
            c.kill_influxd()
        # The outage itself is the fault: keep InfluxDB away for outage_s while the edge keeps emitting.
        time.sleep(outage_s)
        if how == "sigstop":
            c.resume_influxd()
        else:
            c.restart_influxd()
        down = time.monotonic() - down_at
        c.settle([edge], timeout)
        fig = c.figures(f"influx-{how}-{outage_s:.0f}s", [edge], started)
        fig.notes["influx_down_s"] = round(down, 1)
        return fig


def run_backlog(workdir: Path, n: int, timeout: float = 300) -> Figures:
    """``n`` readings queued at the broker while the gateway is away, then drained; drain time noted."""
    with cluster(workdir) as c:
        started = time.monotonic()
        c.start_gateway()
        c.gateway.stop()
        edge = c.add_edge("edge-bl", n, rate=0, batch=500)
        edge.start()
        edge.wait_handed_over(timeout)
        queued = time.monotonic()
        c.start_gateway(wait_subscribed=False)
        c.settle([edge], timeout)
        drain = time.monotonic() - queued
        fig = c.figures(f"backlog-{n}", [edge], started)
        fig.notes["drain_s"] = round(drain, 1)
        fig.notes["drain_per_s"] = round(fig.stored / drain) if drain > 0 else 0
        return fig


# -- fuzzing ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    topic: str
    payload: bytes
    category: str
    #: Matches the gateway's subscription, so the gateway must see it and count it as rejected.
    delivered: bool


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` and ``#``)."""
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, f in enumerate(f_parts):
        if f == "#":
            return True
        if i >= len(t_parts) or (f != "+" and f != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


class Fuzzer:
    """Hostile payloads on valid topics and on invalid ones under the prefix; each hostile reading id is ``hx-*``."""

    def __init__(self, prefix: str, seed: int) -> None:
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.t0 = datetime.now(UTC) - timedelta(minutes=30)
        self.n = 0
        self.valid_ids: list[str] = []

    def topic(self, kind: str = "parking_bay", site: str = SITE_ID, device: str = FUZZ_DEVICE) -> str:
        return f"{self.prefix}/v1/{site}/{device}/{kind}"

    def _bay(self, **over: Any) -> dict[str, Any]:
        self.n += 1
        doc: dict[str, Any] = {
            "schema_version": 1,
            "kind": "parking_bay",
            "device_id": FUZZ_DEVICE,
            "observed_at": _iso(self.t0 + timedelta(milliseconds=self.n)),
            "reading_id": f"hx-{self.n:07d}",
            "lot_id": LOT,
            "bay_id": f"b{self.rng.randint(1, BAYS):03d}",
            "status": self.rng.choice(["free", "occupied"]),
        }
        doc.update(over)
        return doc

    def valid(self) -> tuple[str, bytes]:
        doc = self._bay(reading_id=f"fv-{self.n + 1:07d}")
        self.valid_ids.append(doc["reading_id"])
        return self.topic(), json.dumps(doc).encode()

    def hostile(self) -> Hostile:
        name, make = self.rng.choice(self._makers)
        topic, payload = make(self)
        sub = f"{self.prefix}/#"  # the gateway's subscription: everything under the prefix
        return Hostile(topic, payload, name, matches(sub, topic))

    # each maker returns (topic, payload)
    def _not_json(self) -> tuple[str, bytes]:
        whole = json.dumps(self._bay()).encode()
        return self.topic(), self.rng.choice([whole[: self.rng.randint(0, len(whole) - 1)], b"{not json", b"\xef\xbb"])

    def _binary(self) -> tuple[str, bytes]:
        return self.topic(), self.rng.randbytes(self.rng.randint(1, 512))

    def _not_object(self) -> tuple[str, bytes]:
        return self.topic(), self.rng.choice([b"[1, 2]", b'"parking_bay"', b"null", b"42", b"true"])

    def _kind_mismatch(self) -> tuple[str, bytes]:
        doc = self._bay()
        for k in ("lot_id", "bay_id"):
            del doc[k]
        doc.update(kind="locker", bank_id="bank-1", compartment_id="c01", status="free")
        return self.topic(), json.dumps(doc).encode()

    def _unknown_kind(self) -> tuple[str, bytes]:
        return self.topic(), json.dumps(self._bay(kind=self.rng.choice(["toaster", "", "PARKING_BAY", None]))).encode()

    def _huge(self) -> tuple[str, bytes]:
        size = 1_000_000 if self.rng.random() < 0.02 else self.rng.randint(65 * 1024, 200 * 1024)
        return self.topic(), json.dumps(self._bay(pad="x" * size)).encode()

    def _non_finite(self) -> tuple[str, bytes]:
        token = self.rng.choice(["NaN", "Infinity", "-Infinity", "1e999"])
        field_name = self.rng.choice(["status", "bay_id", "schema_version", "observed_at", "lot_id", "seq"])
        doc = self._bay(**{field_name: "__X__"})
        return self.topic(), json.dumps(doc).replace('"__X__"', token).encode()

    def _bad_timestamp(self) -> tuple[str, bytes]:
        value = self.rng.choice(
            [
                "yesterday",
                "2024-05-01T12:00:00",  # naive
                "1970-01-01T00:00:00Z",  # stale
                "3000-01-01T00:00:00Z",  # future
                "2024-13-45T99:00:00Z",
                "",
                1e20,
                None,
            ]
        )
        return self.topic(), json.dumps(self._bay(observed_at=value)).encode()

    def _unknown_entity(self) -> tuple[str, bytes]:
        over = self.rng.choice([{"bay_id": "b999"}, {"lot_id": "lot-nowhere"}, {"bay_id": "zz"}])
        return self.topic(), json.dumps(self._bay(**over)).encode()

    def _device_mismatch(self) -> tuple[str, bytes]:
        return self.topic(), json.dumps(self._bay(device_id="someone-else")).encode()

    def _unknown_site(self) -> tuple[str, bytes]:
        return self.topic(site="other-site"), json.dumps(self._bay()).encode()

    def _wrong_types(self) -> tuple[str, bytes]:
        over: dict[str, Any] = self.rng.choice(
            [
                {"status": 5},
                {"status": "maybe"},
                {"lot_id": []},
                {"reading_id": "x"},
                {"reading_id": 12345678},
                {"schema_version": 2},
                {"schema_version": "one"},
                {"device_id": "bad id with spaces"},
            ]
        )
        return self.topic(), json.dumps(self._bay(**over)).encode()

    def _missing_field(self) -> tuple[str, bytes]:
        doc = self._bay()
        del doc[self.rng.choice(["device_id", "observed_at", "reading_id", "lot_id", "bay_id", "status"])]
        return self.topic(), json.dumps(doc).encode()

    def _bad_topic(self) -> tuple[str, bytes]:
        p = self.prefix
        topic = self.rng.choice(
            [
                f"{p}/v1/{SITE_ID}/{FUZZ_DEVICE}/parking_bay/extra",  # extra level
                f"{p}/v1/{SITE_ID}/parking_bay",  # missing level
                f"{p}/v1/{SITE_ID}",
                f"{p}/v2/{SITE_ID}/{FUZZ_DEVICE}/parking_bay",  # other version
                f"{p}/v1//{FUZZ_DEVICE}/parking_bay",  # empty level: delivered
                f"{p}/v1/{SITE_ID}/{FUZZ_DEVICE}/",  # empty kind: delivered
                f"{p}/v1/{SITE_ID}/{FUZZ_DEVICE}/toaster",  # unknown kind: delivered
                f"{p}/v1/si te/{FUZZ_DEVICE}/parking_bay",  # bad id: delivered
            ]
        )
        return topic, json.dumps(self._bay()).encode()

    _makers: ClassVar[tuple[tuple[str, Callable[[Fuzzer], tuple[str, bytes]]], ...]] = (
        ("not_json", _not_json),
        ("binary", _binary),
        ("not_object", _not_object),
        ("kind_mismatch", _kind_mismatch),
        ("unknown_kind", _unknown_kind),
        ("huge", _huge),
        ("non_finite", _non_finite),
        ("bad_timestamp", _bad_timestamp),
        ("unknown_entity", _unknown_entity),
        ("device_mismatch", _device_mismatch),
        ("unknown_site", _unknown_site),
        ("wrong_types", _wrong_types),
        ("missing_field", _missing_field),
        ("bad_topic", _bad_topic),
    )


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def publish_all(access: BrokerAccess, items: list[tuple[str, bytes]], timeout: float = 120) -> None:
    """A raw paho client (not an edge): QoS 1, every PUBACK awaited."""
    client = access.client(f"fuzz-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(100)
    client.connect(access.host, access.port)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1) for t, p in items]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        unacked = sum(1 for i in infos if not i.is_published())
        if unacked:
            raise RuntimeError(f"{unacked} of {len(items)} fuzz publishes not acknowledged by the broker")
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class FuzzFigures:
    figures: Figures
    hostile: int
    hostile_delivered: int
    hostile_stored: int
    valid_sent: int
    valid_stored: int
    rejected_stats: int
    rejected_log: int
    dead_letters: int
    categories: dict[str, int]
    reasons: dict[str, int]


def run_fuzz(
    workdir: Path, n_hostile: int, n_edge: int, rate: float, seed: int = 8, timeout: float = 120
) -> FuzzFigures:
    """``n_hostile`` hostile messages from a raw paho client, one valid reading after every 4, while a
    real edge streams ``n_edge`` readings; then count what was stored and what the gateway rejected."""
    with cluster(workdir) as c:
        started = time.monotonic()
        c.start_gateway()
        edge = c.add_edge("edge-fz", n_edge, rate=rate)
        edge.start()
        fuzz = Fuzzer(c.prefix, seed)
        items: list[tuple[str, bytes]] = []
        hostile: list[Hostile] = []
        for i in range(n_hostile):
            h = fuzz.hostile()
            hostile.append(h)
            items.append((h.topic, h.payload))
            if i % 4 == 3:
                items.append(fuzz.valid())
        publish_all(c.access(), items, timeout)
        delivered = sum(1 for h in hostile if h.delivered)

        # The gateway's own stats point (written every second) must come to count every delivered one.
        def rejected_in_stats() -> int:
            stats = c.influx.last_gateway_stats()
            return int(stats.get("rejected") or 0) if stats else 0

        try:
            wait_until(lambda: rejected_in_stats() >= delivered, timeout, "gateway stats to count the rejects")
        except TimeoutError as exc:
            log.warning("%s", exc)
        rejected_stats = rejected_in_stats()
        c.settle([edge], timeout)
        valid_stored_ids = set(c.influx.reading_ids("parking_bay", f"WHERE device='{FUZZ_DEVICE}'"))
        # Every point with a reading id, in every measurement: none may be a hostile one.
        hostile_stored = sum(1 for _, rid in c.influx.all_reading_ids() if rid.startswith("hx-"))
        fig = c.figures(f"fuzz-{n_hostile}", [edge], started)
        c.gateway.stop()  # a clean stop logs its final counters and closes the dead-letter file
        rejected_log = c.gateway_rejected()
        dead = [json.loads(line) for line in c.dead_letters.read_text().splitlines() if line.strip()]
        fig.rejected = rejected_log
        fig.sent += len(fuzz.valid_ids)
        fig.stored += len(valid_stored_ids & set(fuzz.valid_ids))
        fig.lost += len(set(fuzz.valid_ids) - valid_stored_ids)
        fig.notes.update(hostile=n_hostile, delivered=delivered, hostile_stored=hostile_stored)
        return FuzzFigures(
            figures=fig,
            hostile=n_hostile,
            hostile_delivered=delivered,
            hostile_stored=hostile_stored,
            valid_sent=len(fuzz.valid_ids),
            valid_stored=len(valid_stored_ids & set(fuzz.valid_ids)),
            rejected_stats=rejected_stats,
            rejected_log=rejected_log,
            dead_letters=len(dead),
            categories=dict(Counter(h.category for h in hostile)),
            reasons=dict(Counter(str(d.get("reason")) for d in dead)),
        )
