"""Gateway ingest vs a bare paho subscriber: live and backlog, real processes, one broker.

    .venv/bin/python bench/gateway/throughput.py                   # N=20000, 3 rounds, live + backlog
    .venv/bin/python bench/gateway/throughput.py -n 20000 --rounds 5 --json /tmp/tp.json
    .venv/bin/python bench/gateway/throughput.py --rounds 1 --profile --keep /tmp/prof   # py-spy the gateway
    .venv/bin/python bench/gateway/throughput.py --env DISTRICT_GATEWAY_WORKERS=2      # gateway settings

One Mosquitto (``district.services.start_mosquitto``, the project's default
autosave unless ``--autosave``) and one InfluxDB 1.x serve the whole run. The N messages are built
once (``ParkingBayState`` from ``--devices`` devices, each with ``epoch``/``seq``
as our edge sends them, so the gateway confirms them) and every trial
publishes exactly those bytes. Every party is its own process:

* **publisher** (``_pub``): one paho client, QoS 1, as an edge is - never in the
  consumer's process;
* **bare** (``_bare``): paho MQTT v5, persistent session, ``manual_ack``, acks
  each message right in ``on_message``; counts distinct payloads. The most the
  broker and paho can move: the reference;
* **gateway**: ``python -m district.cli gateway`` on product defaults
  (``confirm`` on), ``--workers`` intake processes, plus ``--env`` overrides.
  Done by default when InfluxDB has taken all N (``--done stored``: a pass-through
  proxy in front of influxd sees the write that completes N distinct
  ``reading_id``); ``--done confirm`` at its last confirmation covering all N
  (which waits behind the broker's work on its last acks; reported beside the
  default anyway), or ``--done poll`` when a query finds N (polled every 50 ms,
  which costs influxd CPU the bare run does not pay).

Scenarios (each consumer gets a fresh prefix, client id and database per trial):

* **live**: the consumer is connected and subscribed; the clock starts at the
  publisher's first publish and stops when the consumer has all N;
* **backlog**: the consumer connects once (creating its persistent session
  and subscription) and leaves; the publisher publishes all N and exits once
  the broker acknowledged them; then the consumer starts. The clock starts at
  its connection (bare: CONNACK; gateway: its retained ``online`` status,
  published right after it subscribes) and stops when it has all N.

Each round runs bare and gateway back to back, alternating which goes first.
Zero loss is checked in every trial (bare: N distinct payloads; gateway: N
distinct readings in InfluxDB, none extra).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import http.client
import http.server
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contracts import ParkingBayState, confirm, encode, new_reading_id, topics, utcnow
from contracts.site import SiteConfig, SiteInfo
from contracts.storage import M_PARKING_BAY
from district import services
from district.provision import provision
from district.services import BrokerAccess, broker_access, die_with_parent

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
log = logging.getLogger("bench.throughput")
SITE = "bench"
RECEIVE_MAXIMUM = 10_000  # the gateway's default, for the bare subscriber too
SESSION_EXPIRY_S = 3600


def _say(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# child processes
# ---------------------------------------------------------------------------------------------


def build_messages(n: int, devices: int) -> list[tuple[str, bytes]]:
    """(device_id, payload) x n: what every trial publishes."""
    t0 = utcnow() - timedelta(minutes=5)
    out = []
    for i in range(n):
        dev = f"bays-{i % devices + 1}"
        msg = ParkingBayState(
            device_id=dev,
            observed_at=t0 + timedelta(microseconds=10 * i),
            reading_id=new_reading_id(),
            epoch="bench-epoch",
            seq=i // devices + 1,
            lot_id="lot-1",
            bay_id=f"B{i % 1000:04d}",
            status="occupied" if i % 2 else "free",
        )
        out.append((dev, encode(msg)))
    return out


def publisher(access: BrokerAccess, prefix: str, path: str) -> int:
    msgs = [line.split(b"\t", 1) for line in Path(path).read_bytes().splitlines()]
    client = access.client(f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(access.host, access.port)
    client.loop_start()
    built = [(topics.build(prefix, SITE, dev.decode(), "parking_bay"), payload) for dev, payload in msgs]
    start = time.monotonic()
    _say(ev="start", t=start)
    infos = [client.publish(t, p, qos=1) for t, p in built]
    for info in infos:
        info.wait_for_publish(300)
    _say(ev="acked", t=time.monotonic(), n=len(infos))
    client.disconnect()
    client.loop_stop()
    return 0


def bare(access: BrokerAccess, prefix: str, client_id: str, n: int, setup_only: bool) -> int:
    """The reference: ack right in on_message, count distinct payloads until n."""
    seen: set[bytes] = set()
    total = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, u: object, flags: Any, rc: Any, props: Any) -> None:
        _say(ev="connected", t=time.monotonic(), session_present=bool(flags.session_present))
        c.subscribe(topics.everything(prefix), qos=1)

    def on_subscribe(c: mqtt.Client, u: object, mid: int, rcs: Any, props: Any) -> None:
        subscribed.set()
        _say(ev="subscribed", t=time.monotonic())

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        nonlocal total
        c.ack(m.mid, m.qos)
        total += 1
        seen.add(m.payload)
        if len(seen) >= n and not done.is_set():
            done.set()
            _say(ev="done", t=time.monotonic(), distinct=len(seen), total=total)

    sub = access.client(client_id, protocol=mqtt.MQTTv5, manual_ack=True)
    sub.on_connect = on_connect
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    sub.connect(access.host, access.port, clean_start=False, properties=props)
    sub.loop_start()
    if setup_only:
        subscribed.wait(30)
    else:
        done.wait(600)
        time.sleep(0.2)  # let the last acks out
    sub.disconnect()
    sub.loop_stop()
    return 0


# ---------------------------------------------------------------------------------------------
# orchestrator
# ---------------------------------------------------------------------------------------------


class Proc:
    """A child that reports JSON events on stdout; stopped by its pid (TERM, then KILL)."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        with open(log_path, "ab") as err:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
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
                self.events.setdefault(ev["ev"], ev)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait(self, name: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while name not in self.events:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and name not in self.events):
                    raise RuntimeError(f"pid {self.proc.pid}: no {name!r} (exit {self.proc.poll()})")
                self._cond.wait(min(left, 0.2))
            return self.events[name]

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class StatusWatch:
    """When the gateway (or each of its workers, ``{client_id}-w{i}``) says ``online`` (monotonic)."""

    def __init__(self, access: BrokerAccess, prefix: str, client_id: str) -> None:
        self.online: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._ids = (client_id, f"{client_id}-w")
        self.client = access.client(f"bench-watch-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        self.client.connect(access.host, access.port)
        self.client.subscribe(topics.status_topic(prefix, SITE, "x").replace("/x/", "/+/"), 1)
        self.client.subscribe(topics.stored_topic(prefix, SITE, "x").replace("/x/", "/+/"), 1)
        #: (device, seq) the gateway confirmed as stored, and when the count last grew.
        self.confirmed: set[tuple[str, int]] = set()
        self.confirmed_at = 0.0
        self.client.loop_start()

    def _on_message(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        device = m.topic.split("/")[-2]
        if m.topic.endswith("/" + topics.STORED):
            c = confirm.decode(bytes(m.payload))
            with self._cond:
                self.confirmed.update((c.device_id, q) for a, b in c.seqs for q in range(a, b + 1))
                self.confirmed_at = now
                self._cond.notify_all()
            return
        if not (device == self._ids[0] or device.startswith(self._ids[1])):
            return
        try:
            state = json.loads(bytes(m.payload))["state"]
        except Exception:
            return
        if state == "online" and not m.retain:
            with self._cond:
                self.online.append((now, device))
                self._cond.notify_all()

    def wait_online(self, after: float, members: int = 1, timeout: float = 60) -> float:
        """When the first of ``members`` distinct clients said online after ``after``, once all have."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seen = {}
                for t, dev in self.online:
                    if t >= after:
                        seen.setdefault(dev, t)
                if len(seen) >= members:
                    return min(seen.values())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"gateway: {len(seen)} of {members} said online")
                self._cond.wait(min(left, 0.2))

    def wait_confirmed(self, n: int, timeout: float = 600) -> float:
        """When the gateway had confirmed n readings as stored (it confirms only what InfluxDB took)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.confirmed) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"gateway confirmed {len(self.confirmed)} of {n}")
                self._cond.wait(min(left, 0.2))
            return self.confirmed_at

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class WriteWatch:
    """A pass-through HTTP proxy in front of influxd that sees when InfluxDB has taken all N readings.

    The gateway writes through it (``influx_url``). Every request is forwarded
    as is; for a ``/write`` InfluxDB answered 2xx, the proxy collects the
    ``reading_id`` of each ``parking_bay`` line per database and notes the
    moment the N-th distinct one was stored. That is the gateway's "has all
    N": the counterpart of the bare subscriber's "received all N", with no
    query load on influxd and no round trip through the broker (see the
    README: the last confirmation waits behind the broker's work on the
    gateway's last acknowledgements). The extra hop makes each write a little
    slower, so it errs against the gateway.
    """

    _ID = re.compile(rb'reading_id="([^"]+)"')

    def __init__(self, target_host: str, target_port: int) -> None:
        watch = self
        self.target = (target_host, target_port)
        self.stored: dict[str, set[bytes]] = collections.defaultdict(set)
        self.full_at: dict[tuple[str, int], float] = {}
        self.wanted: dict[str, int] = {}
        self._cond = threading.Condition()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream: http.client.HTTPConnection | None = None

            def finish(self) -> None:
                super().finish()
                if self.upstream is not None:
                    self.upstream.close()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = self.upstream or http.client.HTTPConnection(*watch.target, timeout=30)
                self.upstream = upstream  # one per gateway connection (this handler's thread), kept alive
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    resp = upstream.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException):
                    self.upstream = None
                    upstream.close()
                    self.send_error(502)
                    return
                if self.command == "POST" and self.path.startswith("/write") and 200 <= resp.status < 300 and body:
                    db = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("db", [""])[0]
                    watch.saw(db, body)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def saw(self, db: str, body: bytes) -> None:
        now = time.monotonic()
        ids = [m.group(1) for line in body.split(b"\n") if line.startswith(b"parking_bay,")
               for m in [self._ID.search(line)] if m]  # fmt: skip
        with self._cond:
            seen = self.stored[db]
            seen.update(ids)
            n = self.wanted.get(db)
            if n is not None and len(seen) >= n and (db, n) not in self.full_at:
                self.full_at[(db, n)] = now
                self._cond.notify_all()

    def expect(self, db: str, n: int) -> None:
        with self._cond:
            self.wanted[db] = n

    def wait_stored(self, db: str, n: int, timeout: float = 600) -> float:
        """When InfluxDB had answered the write that brought ``db`` to n distinct readings."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (db, n) not in self.full_at:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"InfluxDB took {len(self.stored[db])} of {n} through the proxy")
                self._cond.wait(min(left, 0.2))
            return self.full_at[(db, n)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def distinct(url: str, db: str) -> int:
    q = urllib.parse.urlencode({"db": db, "q": f'SELECT count(distinct("reading_id")) FROM "{M_PARKING_BAY}"'})
    with urllib.request.urlopen(f"{url}/query?{q}", timeout=10) as r:
        body = json.loads(r.read())
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


@dataclass
class Trial:
    who: str  # bare | gateway
    scenario: str  # live | backlog
    #: plain: the anonymous loopback broker; tls: the provisioned one (TLS, passwords, client certificates, ACL).
    seconds: float
    rate: float
    distinct: int
    extra: int  # bare: duplicates delivered; gateway: readings beyond N (must be 0)
    cpu_s: float  # consumer process CPU seconds (all its processes) over the whole trial
    #: Mosquitto + influxd CPU seconds over the same window (influxd includes the bench's count polls).
    services_cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    #: Gateway: seconds from the same start to its last confirmation (0: not measured).
    confirmed_s: float = 0.0
    transport: str = "plain"


def descendants(pid: int) -> list[int]:
    """pid and every process below it (children of any of its threads), from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
    return out


def cpu_seconds(pid: int) -> float:
    """user+sys of pid and all its descendants (the gateway's writer processes, its workers and theirs;
    py-spy is started apart), from /proc; 0 if gone."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Bench:
    def __init__(
        self, args: argparse.Namespace, work: Path, brokers: dict[str, services.Service], ix: services.Service
    ) -> None:
        self.args = args
        self.work = work
        #: One broker per transport: ``plain`` (anonymous) and/or ``tls`` (provisioned: TLS, passwords, ACL).
        self.brokers = brokers
        self.transport = next(iter(brokers))
        self.ix = ix
        self.url = f"http://{ix.host}:{ix.port}"
        #: The gateway writes through it (``--done stored``: when InfluxDB took all N).
        self.proxy = WriteWatch(ix.host, ix.port)
        self.n = args.n
        self.msg_file = work / "messages.tsv"
        self.msg_file.write_bytes(
            b"\n".join(dev.encode() + b"\t" + p for dev, p in build_messages(args.n, args.devices)) + b"\n"
        )
        self.trial = 0
        self.svc_cpu = 0.0
        self.svc_broker = 0.0
        self.broker_cpu = 0.0
        self.env_over = dict(kv.split("=", 1) for kv in args.env)
        #: Intake processes of the gateway (``workers`` setting), each with its own status.
        self.members = int(self.env_over.get("DISTRICT_GATEWAY_WORKERS", "1"))

    @property
    def mq(self) -> services.Service:
        """The broker of the current transport."""
        return self.brokers[self.transport]

    @property
    def access(self) -> BrokerAccess:
        """How every party reaches it: anonymous, or with the admin's TLS identity (every trial has its own
        prefix; the broker still checks every publish and delivery against the ACL)."""
        return broker_access(self.mq)

    def _fresh(self, who: str, scenario: str) -> tuple[str, str, Path]:
        self.trial += 1
        tag = f"{who[0]}{scenario[0]}{self.trial}"
        tdir = self.work / f"t{self.trial:02d}-{who}-{scenario}"
        tdir.mkdir()
        return f"tp{tag}", f"bench-{tag}", tdir

    def services_cpu(self) -> float:
        """Broker + influxd CPU seconds so far (``self.broker_cpu`` keeps the broker's alone)."""
        self.broker_cpu = cpu_seconds(self.mq.pid)
        return self.broker_cpu + cpu_seconds(self.ix.pid)

    def pub(self, prefix: str, tdir: Path) -> Proc:
        argv = [sys.executable, str(HERE), "_pub", self.access.to_json(), prefix, str(self.msg_file)]
        return Proc(argv, tdir / "pub.log")

    def bare_proc(self, prefix: str, cid: str, tdir: Path, setup: bool) -> Proc:
        argv = [sys.executable, str(HERE), "_bare", self.access.to_json(), prefix, cid, str(self.n)]
        return Proc(argv + (["--setup"] if setup else []), tdir / "bare.log")

    def gateway_proc(self, prefix: str, cid: str, db: str, tdir: Path) -> Proc:
        env = dict(os.environ)
        env.update(
            {
                **self.access.env("gateway"),
                "DISTRICT_GATEWAY_MQTT_CLIENT_ID": cid,
                "DISTRICT_GATEWAY_TOPIC_PREFIX": prefix,
                "DISTRICT_GATEWAY_INFLUX_URL": self.proxy.url,
                "DISTRICT_GATEWAY_INFLUX_DB": db,
                "DISTRICT_GATEWAY_SITE_ID": SITE,
                **self.env_over,
            }
        )
        argv = [sys.executable, "-m", "district.cli", "gateway", "--log-level", "WARNING"]
        return Proc(argv, tdir / "gateway.log", env=env)

    def profile(self, pid: int, tdir: Path, name: str) -> subprocess.Popen[bytes] | None:
        if not self.args.profile:
            return None
        out = tdir / f"{name}.pyspy.txt"
        argv = [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-f", "raw", "-r", "100",
                "--gil", "--subprocesses", "-o", str(out)]  # fmt: skip
        with open(tdir / "py-spy.log", "ab") as err:
            return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)

    def wait_done(self, db: str, watch: StatusWatch) -> tuple[float, int]:
        """When the gateway is done: InfluxDB answered the write completing N (``--done stored``, seen by
        the proxy), every reading confirmed (``confirm``), or N found by polling InfluxDB (``poll``)."""
        if self.args.done == "stored":
            return self.proxy.wait_stored(db, self.n), self.n
        if self.args.done == "confirm":
            return watch.wait_confirmed(self.n), len(watch.confirmed)
        return self.wait_stored(db)

    def wait_stored(self, db: str, timeout: float = 600) -> tuple[float, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = distinct(self.url, db)
            if count >= self.n:
                return time.monotonic(), count
            time.sleep(0.05)
        raise TimeoutError(f"InfluxDB holds {distinct(self.url, db)} of {self.n}")

    # -- bare -------------------------------------------------------------------------------

    def bare_live(self) -> Trial:
        prefix, cid, tdir = self._fresh("bare", "live")
        sub = self.bare_proc(prefix, cid, tdir, setup=False)
        try:
            sub.wait("subscribed", 30)
            cpu0 = cpu_seconds(sub.proc.pid)
            svc0 = self.services_cpu()
            broker0 = self.broker_cpu
            pub = self.pub(prefix, tdir)
            start = pub.wait("start", 60)["t"]
            done = sub.wait("done", 600)
            cpu = cpu_seconds(sub.proc.pid) - cpu0
            self.svc_cpu = self.services_cpu() - svc0
            self.svc_broker = self.broker_cpu - broker0
            pub.wait("acked", 60)
            pub.stop()
        finally:
            sub.stop()
        return self._bare_trial("live", done, start, cpu)

    def bare_backlog(self) -> Trial:
        prefix, cid, tdir = self._fresh("bare", "backlog")
        setup = self.bare_proc(prefix, cid, tdir, setup=True)
        setup.wait("subscribed", 30)
        setup.proc.wait(30)
        pub = self.pub(prefix, tdir)
        pub.wait("acked", 600)
        pub.stop()
        sub = self.bare_proc(prefix, cid, tdir, setup=False)
        try:
            ev = sub.wait("connected", 60)
            assert ev["session_present"], "the bare subscriber's session was gone"
            cpu0 = cpu_seconds(sub.proc.pid)
            svc0 = self.services_cpu()
            broker0 = self.broker_cpu
            done = sub.wait("done", 600)
            cpu = cpu_seconds(sub.proc.pid) - cpu0
            self.svc_cpu = self.services_cpu() - svc0
            self.svc_broker = self.broker_cpu - broker0
        finally:
            sub.stop()
        return self._bare_trial("backlog", done, ev["t"], cpu)

    def _bare_trial(self, scenario: str, done: dict[str, Any], start: float, cpu: float) -> Trial:
        secs = done["t"] - start
        if done["distinct"] != self.n:
            raise AssertionError(f"bare {scenario}: {done['distinct']} distinct of {self.n}")
        extra = done["total"] - done["distinct"]
        return Trial("bare", scenario, secs, self.n / secs, done["distinct"], extra, cpu, self.svc_cpu, self.svc_broker,
                     transport=self.transport)  # fmt: skip

    # -- gateway -----------------------------------------------------------------------------

    def gateway(self, scenario: str, workers: int) -> Trial:
        self.members = workers
        self.env_over["DISTRICT_GATEWAY_WORKERS"] = str(workers)
        t = self.gw_live() if scenario == "live" else self.gw_backlog()
        t.who = f"gateway w{workers}"
        return t

    def gw_live(self) -> Trial:
        prefix, cid, tdir = self._fresh("gateway", "live")
        db = f"bench_{cid.replace('-', '_')}"
        watch = StatusWatch(self.access, prefix, cid)
        self.proxy.expect(db, self.n)
        gw = self.gateway_proc(prefix, cid, db, tdir)
        prof = None
        try:
            watch.wait_online(0, self.members)
            prof = self.profile(gw.proc.pid, tdir, "gateway-live")
            if prof is not None:
                time.sleep(1.0)  # let py-spy attach
            cpu0 = cpu_seconds(gw.proc.pid)
            svc0 = self.services_cpu()
            broker0 = self.broker_cpu
            pub = self.pub(prefix, tdir)
            start = pub.wait("start", 60)["t"]
            end, count = self.wait_done(db, watch)
            cpu = cpu_seconds(gw.proc.pid) - cpu0
            self.svc_cpu = self.services_cpu() - svc0
            self.svc_broker = self.broker_cpu - broker0
            confirmed = watch.wait_confirmed(self.n)
            pub.wait("acked", 60)
            pub.stop()
        finally:
            gw.stop()
            watch.close()
        self._finish_profile(prof)
        return self._gw_trial("live", db, end - start, count, cpu, confirmed - start)

    def gw_backlog(self) -> Trial:
        prefix, cid, tdir = self._fresh("gateway", "backlog")
        db = f"bench_{cid.replace('-', '_')}"
        watch = StatusWatch(self.access, prefix, cid)
        prof = None
        try:
            setup = self.gateway_proc(prefix, cid, db, tdir)
            watch.wait_online(0, self.members)
            time.sleep(0.3)
            setup.stop()
            pub = self.pub(prefix, tdir)
            pub.wait("acked", 600)
            pub.stop()
            if distinct(self.url, db) != 0:
                raise AssertionError("gateway backlog: readings stored before the gateway ran")
            self.proxy.expect(db, self.n)
            after = time.monotonic()
            gw = self.gateway_proc(prefix, cid, db, tdir)
            try:
                prof = self.profile(gw.proc.pid, tdir, "gateway-backlog")
                start = watch.wait_online(after, 1)
                cpu0 = cpu_seconds(gw.proc.pid)
                svc0 = self.services_cpu()
                broker0 = self.broker_cpu
                end, count = self.wait_done(db, watch)
                cpu = cpu_seconds(gw.proc.pid) - cpu0
                self.svc_cpu = self.services_cpu() - svc0
                self.svc_broker = self.broker_cpu - broker0
                confirmed = watch.wait_confirmed(self.n)
            finally:
                gw.stop()
        finally:
            watch.close()
        self._finish_profile(prof)
        return self._gw_trial("backlog", db, end - start, count, cpu, confirmed - start)

    def _finish_profile(self, prof: subprocess.Popen[bytes] | None) -> None:
        if prof is None:
            return
        try:
            prof.wait(30)
        except subprocess.TimeoutExpired:
            prof.send_signal(signal.SIGINT)
            prof.wait(10)

    def _gw_trial(self, scenario: str, db: str, secs: float, count: int, cpu: float, confirmed_s: float) -> Trial:
        time.sleep(0.3)
        final = distinct(self.url, db)
        if final != self.n:
            raise AssertionError(f"gateway {scenario}: InfluxDB holds {final} distinct readings of {self.n}")
        extra = final - self.n
        return Trial(
            "gateway",
            scenario,
            secs,
            self.n / secs,
            final,
            extra,
            cpu,
            self.svc_cpu,
            self.svc_broker,
            confirmed_s,
            self.transport,
        )


def report(all_trials: list[Trial], n: int) -> str:
    out = []
    for transport in sorted({t.transport for t in all_trials}, key=lambda x: x != "plain"):
        trials = [t for t in all_trials if t.transport == transport]
        out += [f"## broker: {transport}", "", *_consumers(trials, n), ""]
    if len({t.transport for t in all_trials}) > 1:
        out += ["## the cost of TLS: the provisioned broker (TLS, passwords, client certificates, ACL) vs the plain",
                "", *_tls_cost(all_trials), ""]  # fmt: skip
    out.append("trials: " + "; ".join(f"{t.who} {t.transport} {t.scenario} {t.rate:,.0f}" for t in all_trials))
    return "\n".join(out)


def _tls_cost(trials: list[Trial]) -> list[str]:
    """Per consumer and scenario: median rate and CPU over TLS against plain, from the same run."""
    out = ["| scenario | consumer | plain | TLS | TLS/plain (rate) | CPU TLS/plain |", "|---|---|---|---|---|---|"]
    for scenario in ("live", "backlog"):
        for who in sorted({t.who for t in trials}):
            plain = [t for t in trials if (t.who, t.scenario, t.transport) == (who, scenario, "plain")]
            tls = [t for t in trials if (t.who, t.scenario, t.transport) == (who, scenario, "tls")]
            if not plain or not tls:
                continue
            pr, tr = statistics.median(t.rate for t in plain), statistics.median(t.rate for t in tls)
            pc, tc = statistics.median(t.cpu_s for t in plain), statistics.median(t.cpu_s for t in tls)
            out.append(
                f"| {scenario} | {who} | {pr:,.0f} msg/s (CPU {pc:.1f} s) | {tr:,.0f} msg/s (CPU {tc:.1f} s) "
                f"| **{tr / pr:.2f}** | {tc / pc if pc else 0:.2f} |"
            )
    return out


def _consumers(trials: list[Trial], n: int) -> list[str]:
    rounds = max(sum(1 for t in trials if t.who == "bare" and t.scenario == sc) for sc in ("live", "backlog"))
    out = [f"N={n}; medians over {rounds} rounds; CPU: the consumer's processes, user+sys", ""]
    out.append("| scenario | bare paho, manual ack | gateway | gateway/bare |")
    out.append("|---|---|---|---|")
    for scenario in ("live", "backlog"):
        b = [t for t in trials if t.scenario == scenario and t.who == "bare"]
        br = statistics.median(t.rate for t in b) if b else 0.0
        bc = statistics.median(t.cpu_s for t in b) if b else 0.0
        for who in sorted({t.who for t in trials if t.who != "bare"}):
            g = [t for t in trials if t.scenario == scenario and t.who == who]
            if not g:
                continue
            gr = statistics.median(t.rate for t in g)
            gc = statistics.median(t.cpu_s for t in g)
            ratio = f"{gr / br:.2f}" if br else "-"
            out.append(
                f"| {scenario} | {br:,.0f} msg/s (CPU {bc:.1f} s) | {who}: {gr:,.0f} msg/s (CPU {gc:.1f} s) | {ratio} |"
            )
            confirmed = [n / t.confirmed_s for t in g if t.confirmed_s > 0]
            if confirmed:
                cr = statistics.median(confirmed)
                ratio = f"{cr / br:.2f}" if br else "-"
                out.append(f"| {scenario} | (same) | {who} to its last confirmation: {cr:,.0f} msg/s | {ratio} |")
    return out


#: Where a sample's time goes: the first of these frames found in its stack. Since the hand-off
#: (gateway/handoff.py), the intake process runs paho and the acknowledgements, and the writer
#: process (``python -m gateway.processor``) validation, line protocol and the HTTP writes; each
#: sample is also counted by process.
STAGES = [
    ("startup (imports; backlog profiles start at spawn)", ("_find_and_load (",)),
    ("validate (contracts.receive: topic, pydantic, RFC 3339)", ("receive (contracts/__init__.py",)),
    ("validate rest (Classifier: received_at, items, stats)", ("Classifier.item (gateway/processor.py",)),
    ("line protocol (to_points, line_protocol)", ("message_lines (gateway/influx.py", "to_points (contracts/stor")),
    ("HTTP write to InfluxDB", ("InfluxWriter.write (gateway/influx.py",)),
    ("hand-off in (unpickle, queue)", ("serve (gateway/processor.py", "BulkQueue.")),
    ("reports out (pickle, send)", ("Writer.report (gateway/processor.py",)),
    ("queue hand-off (Queue.put/get)", ("Queue.put (queue.py", "Queue.get (queue.py")),
    ("acks (reports applied: MqttIntake.ack_raw -> paho)", ("WriterLink._apply (gateway/handoff.py", "MqttIntake.ack")),
    ("hand-off out (batches: take, pickle, send)", ("WriterLink._send_batch (gateway/handoff.py",)),
    ("confirmations (publish)", ("_send_confirmations (gateway/intake.py",)),
    ("on_message (Inbox.put_raw)", ("MqttIntake._on_message (gateway/intake.py",)),
    ("paho network loop (read, parse, send)", ("Client._loop (", "Client.loop_forever (")),
    ("writer loop rest", ("BatchWriter.run (gateway/pipeline.py",)),
]


def summarize_profile(path: Path, top: int = 20) -> str:
    """py-spy raw stacks (``--gil``: only the thread holding the GIL) -> % per stage and per function."""
    incl: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    procs: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        count = int(count_s)
        parts = stack.split(";")
        heads = [f for f in parts[:2] if f.startswith("process ")]
        proc = "writer process" if any("gateway.processor" in f for f in heads) else "intake process"
        raw = parts[len(heads) :]
        total += count
        procs[proc] += count
        for name, marks in STAGES:
            if any(m in f for f in raw for m in marks):
                stages[name] += count
                break
        else:
            stages["other (startup, threads, GC)"] += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" if " (" in f else f for f in raw]
        for f in set(frames):
            incl[f] += count
        if frames:
            own[frames[-1]] += count
    rows = [f"{path.name}: {total} samples with the GIL held (100 Hz)", "by process:"]
    rows += [f"  {c / total:6.1%}  {name}" for name, c in procs.most_common()]
    rows.append("by stage:")
    rows += [f"  {c / total:6.1%}  {name}" for name, c in stages.most_common()]
    rows.append("inclusive:")
    rows += [f"  {c / total:6.1%}  {f}" for f, c in incl.most_common(top)]
    rows.append("self:")
    rows += [f"  {c / total:6.1%}  {f}" for f, c in own.most_common(top)]
    return "\n".join(rows)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_pub":
        return publisher(BrokerAccess.from_json(sys.argv[2]), sys.argv[3], sys.argv[4])
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        a = sys.argv
        return bare(BrokerAccess.from_json(a[2]), a[3], a[4], int(a[5]), setup_only="--setup" in a)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--devices", type=int, default=4, help="devices the N readings come from")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--scenarios", default="live,backlog")
    p.add_argument("--only", choices=["bare", "gateway"], help="run one consumer only")
    p.add_argument("--workers", default="1", type=lambda v: [int(x) for x in v.split(",")],
                   help="gateway variants by worker processes, e.g. 1,2")  # fmt: skip
    p.add_argument(
        "--done",
        choices=["stored", "confirm", "poll"],
        default="stored",
        help="gateway done when InfluxDB answered the write completing N (seen by a pass-through proxy; "
        "default), at its last confirmation (which waits behind the broker's work on its last acks), or when "
        "polling InfluxDB (every 50 ms) finds N; either way InfluxDB is checked for N after",
    )
    p.add_argument(
        "--autosave",
        type=int,
        default=services.AUTOSAVE_CHANGES,
        help="broker saves after this many changes (0: never; default: the project's setting)",
    )
    p.add_argument(
        "--transport",
        default="plain",
        type=lambda v: v.split(","),
        help="plain (anonymous loopback broker), tls (a broker from `district provision`: TLS, passwords, client "
        "certificates, ACL), or plain,tls: both in the same run, each trial on both, with the TLS/plain ratio",
    )
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="gateway environment override")
    p.add_argument("--profile", action="store_true", help="py-spy the gateway (raw stacks; summary printed)")
    p.add_argument("--keep", type=Path, help="copy the work dir (logs, profiles) here")
    p.add_argument("--json", type=Path, help="write every trial here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        autosave = args.autosave if args.autosave > 0 else None
        brokers: dict[str, services.Service] = {}
        for transport in args.transport:
            pki = None
            if transport == "tls":
                site = SiteConfig(site=SiteInfo(id=SITE, name="bench"))
                pki = provision(site, work / "pki", broker_hosts=["127.0.0.1"], install_dir=None, broker_dir=None,
                                admin_topics=["#"])  # fmt: skip
            elif transport != "plain":
                p.error(f"--transport: {transport!r} is not plain or tls")
            brokers[transport] = services.start_mosquitto(work / f"mq-{transport}", autosave_changes=autosave, pki=pki)
        ix = services.start_influxd(work / "ix")
        try:
            bench = Bench(args, work, brokers, ix)
            for r in range(args.rounds):
                for scenario in args.scenarios.split(","):
                    runs = {"bare": bench.bare_live if scenario == "live" else bench.bare_backlog}
                    for w in args.workers:
                        runs[f"gateway w{w}"] = functools.partial(bench.gateway, scenario, w)
                    order = [(who, tr) for who in runs for tr in args.transport]
                    shift = r % len(order)  # alternate who (and which transport) goes first
                    for who, transport in order[shift:] + order[:shift]:
                        if args.only and not who.startswith(args.only):
                            continue
                        bench.transport = transport
                        t = runs[who]()
                        trials.append(t)
                        print(f"round {r + 1} {scenario:7s} {who:11s} {transport:5s} {t.seconds:6.2f} s "
                              f"{t.rate:8,.0f} msg/s "
                              f"distinct {t.distinct} extra {t.extra} cpu {t.cpu_s:.1f} s "
                              f"broker {t.broker_cpu_s:.1f} s "
                              f"influxd {t.services_cpu_s - t.broker_cpu_s:.1f} s"
                              + (f" confirmed {t.confirmed_s:.2f} s" if t.confirmed_s else ""), flush=True)  # fmt: skip
            print()
            print(report(trials, args.n))
            if args.profile:
                for f in sorted(work.glob("t*/*.pyspy.txt")):
                    print()
                    print(summarize_profile(f))
            if args.json:
                args.json.write_text(json.dumps([asdict(t) for t in trials], indent=1))
        finally:
            if "bench" in locals():
                bench.proxy.close()
            for mq in brokers.values():
                mq.stop()
            ix.stop()
            if args.keep:
                subprocess.run(["cp", "-r", str(work), str(args.keep)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
