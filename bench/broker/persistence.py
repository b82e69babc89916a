"""What Mosquitto's autosave costs and keeps, measured on a real broker.

    .venv/bin/python bench/broker/persistence.py [-n 5000 50000] [--intervals none,100,1000]
                                                 [--repeats 1] [--strace] [--json FILE]

For every (n, interval) case, a fresh broker from ``district.services.start_mosquitto``
(``persistence true``; with an interval also ``autosave_on_changes true`` and
``autosave_interval N``; ``none`` is the project's no-autosave config), in a
fresh temp dir on the local disk, loopback only:

1. an MQTT v5 subscriber (clean_start=False, session expiry 1 h) subscribes at
   QoS 1 once and disconnects, so every message is queued for it;
2. one publisher sends n QoS-1 messages (a ~250-byte ``parking_bay`` JSON
   reading built with ``contracts``) with a window of 100 unacknowledged
   PUBLISHes and counts PUBACKs with a success reason code; publish msg/s is
   n / (first PUBLISH .. last PUBACK);
3. the broker's ``/proc/<pid>/io`` and CPU time are read before step 2 and
   after it (once the counters stop moving): ``wchar`` is what the broker
   passed to write(2) (the DB file, plus 4-byte PUBACKs and its log),
   ``write_bytes`` what it dirtied in the page cache (what the disk must
   take), ``cancelled_write_bytes`` what was dropped before writeback;
4. the broker is SIGKILLed and restarted on the same data dir; the subscriber
   reconnects with its session and the acknowledged messages it gets are
   counted ("survived SIGKILL").

``--strace`` attaches ``strace -f -y`` to the broker for step 2 only, tracing
just the sync and rename calls (fsync, fdatasync, sync_file_range, sync,
syncfs, rename*, and openat of the DB file to count saves). ptrace slows the
broker, so rates from a ``--strace`` run are marked and must not be compared
with runs without it.

Every process started here is stopped by pid (also on error); every wait has a
deadline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contracts import ParkingBayState, encode, new_reading_id, topics, utcnow
from district import services

log = logging.getLogger("bench.broker")

PREFIX = "district"
SUB_ID = "bench-offline-gateway"
WINDOW = 100
SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "sync", "syncfs", "msync")
RENAME_CALLS = ("rename", "renameat", "renameat2")
TRACED = (*SYNC_CALLS, *RENAME_CALLS, "openat", "open", "creat")


def messages(n: int) -> list[tuple[str, bytes, str]]:
    """n parking-bay readings of a 400-bay deck: (topic, payload, reading_id)."""
    device = "bay-sensors-north-deck-l2"
    topic = topics.build(PREFIX, "riverside-district", device, "parking_bay")
    t0 = utcnow() - timedelta(minutes=30)
    out = []
    for i in range(n):
        rid = new_reading_id()
        msg = ParkingBayState(
            device_id=device,
            observed_at=t0 + timedelta(milliseconds=5 * i),
            reading_id=rid,
            lot_id="north-deck-level-2",
            bay_id=f"ND2-{i % 400:04d}",
            status="occupied" if i % 3 else "free",
        )
        out.append((topic, encode(msg), rid))
    return out


def proc_io(pid: int) -> dict[str, int]:
    text = Path(f"/proc/{pid}/io").read_text()
    return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = WINDOW
    return props


def connect(client: mqtt.Client, svc: services.Service, timeout: float = 10.0, **kw: object) -> dict[str, object]:
    """Connect, start the network thread, wait for CONNACK; returns {'session_present': ...}."""
    ready = threading.Event()
    info: dict[str, object] = {}

    def on_connect(c: mqtt.Client, u: object, flags: mqtt.ConnectFlags, rc: object, p: object) -> None:
        info["session_present"] = flags.session_present
        info["rc"] = rc
        ready.set()

    client.on_connect = on_connect
    client.connect(svc.host, svc.port, **kw)  # type: ignore[arg-type]
    client.loop_start()
    if not ready.wait(timeout):
        client.loop_stop()
        raise RuntimeError("no CONNACK within deadline")
    if getattr(info["rc"], "is_failure", False):
        client.loop_stop()
        raise RuntimeError(f"CONNACK refused: {info['rc']}")
    return info


def close(client: mqtt.Client) -> None:
    try:
        client.disconnect()
    finally:
        client.loop_stop()


def park_subscriber(svc: services.Service) -> None:
    """Subscribe once with a persistent session, then go offline: the broker queues for it.

    clean_start must be False on this first connect too: Mosquitto 2.0.11 leaves a session
    that began with clean_start=True out of its persistence file even with a session expiry
    interval, so after a restart it is gone (measured: 0 of 1,000 delivered, session_present 0).
    """
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=SUB_ID, protocol=mqtt.MQTTv5)
    subacked = threading.Event()
    sub.on_subscribe = lambda *a: subacked.set()
    connect(sub, svc, clean_start=False, properties=session_props())
    try:
        sub.subscribe(topics.subscription(PREFIX), qos=1)
        if not subacked.wait(10):
            raise RuntimeError("no SUBACK within deadline")
    finally:
        close(sub)


def publish(svc: services.Service, msgs: list[tuple[str, bytes, str]], deadline_s: float) -> tuple[float, set[str]]:
    """Publish at QoS 1 with WINDOW in flight; returns (elapsed s, reading_ids acknowledged with success)."""
    window = threading.BoundedSemaphore(WINDOW)
    lock = threading.Lock()
    by_mid: dict[int, str] = {}
    early: dict[int, bool] = {}
    acked: set[str] = set()
    failures: list[str] = []
    done = threading.Event()
    n = len(msgs)
    settled = 0

    def on_publish(c: mqtt.Client, u: object, mid: int, rc: object, p: object) -> None:
        nonlocal settled
        ok = not getattr(rc, "is_failure", False)
        with lock:
            rid = by_mid.pop(mid, None)
            if rid is None:  # PUBACK before publish() returned the mid
                early[mid] = ok
            elif ok:
                acked.add(rid)
            else:
                failures.append(str(rc))
            settled += 1
            if settled >= n:
                done.set()
        window.release()

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(WINDOW)
    pub.max_queued_messages_set(0)
    pub.on_publish = on_publish
    connect(pub, svc)
    deadline = time.monotonic() + deadline_s
    try:
        start = time.perf_counter()
        for topic, payload, rid in msgs:
            if not window.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise RuntimeError("publish window did not open before the deadline")
            info = pub.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
            with lock:
                if info.mid in early:
                    if early.pop(info.mid):
                        acked.add(rid)
                else:
                    by_mid[info.mid] = rid
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"only {settled} of {n} PUBACKs before the deadline")
        elapsed = time.perf_counter() - start
    finally:
        close(pub)
    if failures:
        raise RuntimeError(f"{len(failures)} PUBACKs failed, first: {failures[0]} (is the subscriber's session there?)")
    return elapsed, acked


def settle_io(pid: int, quiet_s: float = 0.5, deadline_s: float = 60.0) -> dict[str, int]:
    """/proc/<pid>/io once wchar has not moved for quiet_s (a save may finish after the last PUBACK)."""
    deadline = time.monotonic() + deadline_s
    last = proc_io(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = proc_io(pid)
        if now["wchar"] == last["wchar"]:
            return now
        last = now
    return last


def drain(svc: services.Service, wanted: set[str], idle_s: float = 3.0, deadline_s: float = 300.0) -> tuple[int, bool]:
    """Reconnect the subscriber with its session; count distinct wanted readings delivered."""
    got: set[str] = set()
    last = [time.monotonic()]

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        try:
            rid = json.loads(m.payload)["reading_id"]
        except (ValueError, KeyError, TypeError):
            return
        if rid in wanted:
            got.add(rid)
        last[0] = time.monotonic()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=SUB_ID, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    props = session_props()
    props.ReceiveMaximum = 1000
    info = connect(sub, svc, clean_start=False, properties=props)
    deadline = time.monotonic() + deadline_s
    try:
        last[0] = time.monotonic()
        while time.monotonic() < deadline and len(got) < len(wanted):
            if time.monotonic() - last[0] > idle_s:
                break
            time.sleep(0.1)
    finally:
        close(sub)
    return len(got), bool(info["session_present"])


@dataclass
class StraceCounts:
    sync: dict[str, int] = field(default_factory=dict)  # "fsync mosquitto.db.new" -> count
    renames: int = 0
    db_opens: int = 0

    @property
    def fsyncs(self) -> int:
        return sum(self.sync.values())


_WRITE_OPEN = re.compile(r"O_WRONLY|O_RDWR")
_LINE = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)")


def parse_strace(text: str) -> StraceCounts:
    counts = StraceCounts()
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or "resumed>" in line:
            continue
        name, args = m.groups()
        if name in SYNC_CALLS:
            target = re.search(r"<([^>]*)>", args)
            key = f"{name} {Path(target.group(1)).name if target else '?'}"
            counts.sync[key] = counts.sync.get(key, 0) + 1
        elif name in RENAME_CALLS:
            counts.renames += 1
        elif name in ("openat", "open", "creat") and "mosquitto.db" in args and _WRITE_OPEN.search(args):
            counts.db_opens += 1
    return counts


class Strace:
    """strace -f -y attached to one pid; stopped by its own pid."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            ["strace", "-f", "-y", "-qq", "-e", "trace=" + ",".join(TRACED), "-o", str(out), "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"strace exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            status = Path(f"/proc/{pid}/status").read_text()
            if re.search(r"^TracerPid:\s+[1-9]", status, re.M):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("strace did not attach within 10 s")

    def stop(self) -> StraceCounts:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # detach cleanly
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return parse_strace(self.out.read_text() if self.out.exists() else "")


@dataclass
class Result:
    interval: str
    n: int
    strace: bool
    rate: float
    elapsed_s: float
    acked: int
    wchar: int
    write_bytes: int
    cancelled_write_bytes: int
    db_bytes: int
    broker_cpu_s: float
    survived: int | None
    session_present: bool | None
    fsyncs: int | None
    fsync_detail: dict[str, int] | None
    renames: int | None
    saves: int | None
    payload_bytes: int
    load_before: float
    load_after: float


def run_case(n: int, interval: int | None, use_strace: bool, kill: bool, root: Path) -> Result:
    msgs = messages(n)
    work = root / f"mq-{interval or 'none'}-{n}-{time.monotonic_ns()}"
    load_before = os.getloadavg()[0]
    svc = services.start_mosquitto(work, autosave_changes=interval)
    tracer: Strace | None = None
    counts: StraceCounts | None = None
    survived: int | None = None
    present: bool | None = None
    try:
        park_subscriber(svc)
        io0, cpu0 = proc_io(svc.pid), proc_cpu_s(svc.pid)
        if use_strace:
            tracer = Strace(svc.pid, work / "strace.txt")
        elapsed, acked = publish(svc, msgs, deadline_s=max(120.0, n / 20))
        io1 = settle_io(svc.pid)
        cpu1 = proc_cpu_s(svc.pid)
        if tracer is not None:
            counts = tracer.stop()
            tracer = None
        db = work / "data" / "mosquitto.db"
        db_bytes = db.stat().st_size if db.exists() else 0
        if kill:
            svc.kill()
            svc = services.start_mosquitto(work, autosave_changes=interval)
            survived, present = drain(svc, acked)
    finally:
        if tracer is not None:
            tracer.stop()
        svc.stop()
    return Result(
        interval=str(interval) if interval else "none",
        n=n,
        strace=use_strace,
        rate=n / elapsed,
        elapsed_s=elapsed,
        acked=len(acked),
        wchar=io1["wchar"] - io0["wchar"],
        write_bytes=io1["write_bytes"] - io0["write_bytes"],
        cancelled_write_bytes=io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"],
        db_bytes=db_bytes,
        broker_cpu_s=cpu1 - cpu0,
        survived=survived,
        session_present=present,
        fsyncs=counts.fsyncs if counts else None,
        fsync_detail=counts.sync if counts else None,
        renames=counts.renames if counts else None,
        saves=counts.db_opens if counts else None,
        payload_bytes=len(msgs[0][1]),
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )


def human(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(b) < 1000 or unit == "GB":
            return f"{b:,.0f} {unit}" if unit == "B" else f"{b:,.1f} {unit}"
        b /= 1000
    return f"{b:.1f} GB"


def _span(values: list[float], fmt: str) -> str:
    """Median, and the range when there are several runs."""
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def table(results: list[Result]) -> str:
    """The summary: one row per (interval, n, strace); medians (and ranges) over repeats."""
    groups: dict[tuple[str, int, bool], list[Result]] = {}
    for r in results:
        groups.setdefault((r.interval, r.n, r.strace), []).append(r)
    ref = {(n, st): statistics.median(x.rate for x in rs) for (iv, n, st), rs in groups.items() if iv == "none"}
    rows = [
        "| interval | msgs | strace | runs | publish msg/s | ratio vs no-autosave | bytes written (write_bytes) "
        "| bytes per message | broker CPU ms | fsync count | rename count | survived SIGKILL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (iv, n, st), rs in groups.items():
        base = ref.get((n, st))
        ratio = _span([x.rate / base for x in rs], ".2f") if base else "-"
        wb = statistics.median(x.write_bytes for x in rs)
        fs = [x.fsyncs for x in rs if x.fsyncs is not None]
        rn = [x.renames for x in rs if x.renames is not None]
        sv = [x.survived for x in rs if x.survived is not None]
        surv = "-"
        if sv:
            lo, hi = min(sv), max(sv)
            surv = f"{lo:,} / {rs[0].acked:,}" if lo == hi else f"{lo:,}-{hi:,} / {rs[0].acked:,}"
        rows.append(
            f"| {iv} | {n:,} | {'yes' if st else 'no'} | {len(rs)} | {_span([x.rate for x in rs], ',.0f')} "
            f"| {ratio} | {human(wb)} | {wb / n:,.0f} | {_span([x.broker_cpu_s * 1000 for x in rs], ',.0f')} "
            f"| {_span(fs, '.0f') if fs else '-'} | {_span(rn, '.0f') if rn else '-'} | {surv} |"
        )
    return "\n".join(rows)


def details(results: list[Result]) -> str:
    rows = [
        "| interval | msgs | strace | publish msg/s | elapsed s | broker CPU s | write_bytes | wchar "
        "| cancelled_write_bytes | final DB file | saves (DB opened for write) | sync calls by target "
        "| survived | load 1-min before/after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted((r.fsync_detail or {}).items())) or "-"
        rows.append(
            f"| {r.interval} | {r.n:,} | {'yes' if r.strace else 'no'} | {r.rate:,.0f} | {r.elapsed_s:.2f} "
            f"| {r.broker_cpu_s:.2f} | {human(r.write_bytes)} | {human(r.wchar)} | {human(r.cancelled_write_bytes)} "
            f"| {human(r.db_bytes)} | {'-' if r.saves is None else r.saves} | {detail} "
            f"| {'-' if r.survived is None else f'{r.survived:,} / {r.acked:,}'} "
            f"| {r.load_before:.2f} / {r.load_after:.2f} |"
        )
    return "\n".join(rows)


def parse_intervals(text: str) -> list[int | None]:
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        out.append(None if part in ("none", "0", "off") else int(part))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, nargs="+", default=[5000], help="messages to queue (several: one case each)")
    parser.add_argument(
        "--intervals", default="none,100,1000", help="comma list of autosave_interval values; 'none' = no autosave"
    )
    parser.add_argument("--repeats", type=int, default=1, help="run every case this many times, interleaved")
    parser.add_argument("--strace", action="store_true", help="count fsync/rename with strace (slows the broker)")
    parser.add_argument("--no-kill", action="store_true", help="skip the SIGKILL + restart survival check")
    parser.add_argument("--tmp", type=Path, default=None, help="parent dir for the broker data (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.strace and services.find_binary("strace") is None:
        parser.error("--strace needs strace (apt-get install -y strace)")
    intervals = parse_intervals(args.intervals)
    results: list[Result] = []
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-broker-", dir=args.tmp) as tmp:
        for rep in range(args.repeats):
            for n in args.n:
                for interval in intervals:
                    r = run_case(n, interval, args.strace, not args.no_kill, Path(tmp))
                    log.warning(
                        "rep %d n=%d interval=%s: %.0f msg/s, %s written, survived %s",
                        rep,
                        n,
                        r.interval,
                        r.rate,
                        human(r.write_bytes),
                        r.survived,
                    )
                    results.append(r)
    print(f"# Mosquitto persistence, {started:%Y-%m-%d %H:%M} UTC, payload {results[0].payload_bytes} B")
    print(f"# {os.cpu_count()} CPUs, load average at end {os.getloadavg()}")
    print()
    print("Summary (median, range over runs in brackets):")
    print()
    print(table(results))
    print()
    print("Every run:")
    print()
    print(details(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
