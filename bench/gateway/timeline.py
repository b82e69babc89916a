"""One backlog drain, timed from inside: when messages arrive, when they are acknowledged, when the broker
has worked off the acknowledgements, and the CPU of the intake and the writer process.

    .venv/bin/python bench/gateway/timeline.py [-n 20000] [--autosave 100] [--env DISTRICT_GATEWAY_X=Y ...]

Runs its own Mosquitto and InfluxDB like throughput.py, builds the same N readings, lets a gateway create its
session, publishes N into it with the gateway away, then starts a gateway in this process (its writer
side in its own process, as always) and records:

* the time of every 1000th reading handed to the inbox (``Inbox.put_raw``) and of every report of handled
  readings (``WriterLink._apply``: stored, and acknowledged from then on);
* the size of the broker's persistence file every 10 ms (it shrinks as the broker saves after working off
  acknowledgements; ``autosave_interval 100`` saves after every 100 changes);
* when the gateway's status said ``online`` and when its last confirmation arrived (throughput.py's
  ``StatusWatch``);
* user+sys CPU of this process (the intake; it also runs the watcher) and of the writer process.

The counters are taken by wrapping two methods: a diagnostic, not a measurement of rate (throughput.py is).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from throughput import HERE, StatusWatch, build_messages  # this directory (run as a script)

from district import services
from gateway import handoff
from gateway.processor import Report
from gateway.service import Gateway
from gateway.settings import GatewaySettings


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--autosave", type=int, default=services.AUTOSAVE_CHANGES, help="0: never")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="gateway setting, e.g. BATCH_SIZE=1000")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n = args.n
    over: dict[str, Any] = {
        k.removeprefix("DISTRICT_GATEWAY_").lower(): v for k, v in (e.split("=", 1) for e in args.env)
    }
    work = Path(tempfile.mkdtemp(prefix="timeline-"))
    mq = services.start_mosquitto(work / "mq", autosave_changes=args.autosave or None)
    ix = services.start_influxd(work / "ix")
    try:
        messages = work / "messages.tsv"
        messages.write_bytes(b"\n".join(d.encode() + b"\t" + pl for d, pl in build_messages(n, 4)) + b"\n")
        settings = GatewaySettings(
            mqtt_host=mq.host, mqtt_port=mq.port, mqtt_client_id="timeline", topic_prefix="tl", site_id="bench",
            influx_url=f"http://{ix.host}:{ix.port}", influx_db="timeline", **over,
        )  # fmt: skip
        with Gateway(settings) as setup:  # creates the persistent session and its subscription
            setup.wait_ready(30)
        pub = [sys.executable, str(HERE), "_pub", mq.host, str(mq.port), "tl", str(messages)]
        subprocess.run(pub, check=True, stdout=subprocess.DEVNULL)

        events: list[tuple[float, str, int]] = []
        received = [0]
        handled = [0]
        #: Hand-off sequence numbers of the readings (not the gateway's own status and confirmations,
        #: which come back through its subscription): the inbox numbers what it takes from 0.
        readings: set[int] = set()
        put_raw, apply = handoff.Inbox.put_raw, handoff.WriterLink._apply

        def counting_put_raw(self: handoff.Inbox, *a: Any) -> bool:
            if str(a[3]).endswith("/parking_bay"):
                readings.add(self._seq)
                received[0] += 1
                if received[0] % 1000 == 0 or received[0] == 1:
                    events.append((time.monotonic(), "received", received[0]))
            return put_raw(self, *a)

        def counting_apply(self: handoff.WriterLink, report: Report) -> None:
            done = sum(1 for seq in report.handled if seq in readings)
            if done:
                handled[0] += done
                events.append((time.monotonic(), "handled", handled[0]))
            apply(self, report)

        handoff.Inbox.put_raw = counting_put_raw  # type: ignore[method-assign]
        handoff.WriterLink._apply = counting_apply  # type: ignore[method-assign]
        sizes: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            db = work / "mq" / "data" / "mosquitto.db"
            while not stop.wait(0.01):
                with contextlib.suppress(OSError):
                    sizes.append((time.monotonic(), db.stat().st_size))

        threading.Thread(target=sample, daemon=True).start()
        watch = StatusWatch(mq.host, mq.port, "tl", "timeline")
        after = time.monotonic()
        gw = Gateway(settings)
        gw.start()
        assert gw.writer_pid is not None
        me0, writer0 = cpu_s(os.getpid()), cpu_s(gw.writer_pid)
        deadline = time.monotonic() + 600
        while handled[0] < n and time.monotonic() < deadline:
            time.sleep(0.005)
        me1, writer1 = cpu_s(os.getpid()), cpu_s(gw.writer_pid)
        online = watch.wait_online(after)
        confirmed = watch.wait_confirmed(n)
        time.sleep(1.0)  # let the broker's store shrink on record
        gw.stop()
        stop.set()
        watch.close()
        first = min(t for t, kind, _ in events if kind == "received")
        last_in = max(t for t, kind, _ in events if kind == "received")
        last_ack = max(t for t, kind, _ in events if kind == "handled")
        print(
            f"N={n}, autosave {args.autosave or 'off'}, settings {over or 'defaults'}; seconds from the first message:"
        )
        print(f"  online status seen     {online - first:+.2f}")
        print(f"  last message received  {last_in - first:+.2f}")
        print(f"  last stored (acked)    {last_ack - first:+.2f}   ({n / (last_ack - first):,.0f} msg/s)")
        print(f"  last confirmation seen {confirmed - first:+.2f}   ({confirmed - last_ack:+.2f} after the last ack)")
        print(f"  CPU: intake process {me1 - me0:.2f} s (with this script's watcher), writer {writer1 - writer0:.2f} s")
        print(
            "  events:", " ".join(f"{kind[0]}{count}@{t - first:.2f}" for t, kind, count in events if count % 4000 == 0)
        )
        shown = [(round(t - first, 2), round(size / 1e6, 1)) for t, size in sizes[::10] if t >= first]
        print("  broker store (s, MB):", shown)
    finally:
        mq.stop()
        ix.stop()


if __name__ == "__main__":
    main()
